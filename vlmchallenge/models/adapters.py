"""PEFT LoRA / QLoRA on the language model, and a per-group report of what is trainable.

dtypes after `apply_adapters` (docs/vram.md §1.1): 4-bit Linear weights stay packed, every other frozen parameter
(vision tower, embeddings, lm_head, norms) stays in `model.dtype`, trainable parameters are fp32. PEFT's
`prepare_model_for_kbit_training` is not used: it casts every non-4-bit parameter to fp32.
"""

from __future__ import annotations

import logging
from collections import Counter

import torch

from vlmchallenge.models.config import ModelConfig
from vlmchallenge.models.families import family_of

log = logging.getLogger(__name__)


def prepare_quantized_base(model, gradient_checkpointing: bool):
    """What QLoRA needs of a 4-bit base, without PEFT's blanket fp32 upcast: freeze it and (optionally) enable
    gradient checkpointing. The frozen norms stay in the compute dtype too: their weights come from a 16-bit
    checkpoint, the families' RMSNorms already compute its statistics in fp32, and an fp32 norm weight would promote
    every activation after it to fp32 (LLaMA-Factory's `upcast_layernorm` is off by default; docs/vram.md §1.1)."""
    for p in model.parameters():
        p.requires_grad_(False)
    if gradient_checkpointing:
        enable_checkpointing(model)
    return model


def enable_checkpointing(model) -> None:
    """Non-reentrant checkpointing. transformers' `activation_checkpointing_enable` also installs the hook that
    makes the embeddings' output require grad (`enable_input_require_grads`), so a frozen base still hands the
    checkpointed layers an input that backward flows through."""
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})


def apply_adapters(model, cfg: ModelConfig):
    """LoRA (or QLoRA on a 4-bit base) per `cfg.lora`; returns the model to train."""
    from peft import LoraConfig, get_peft_model

    cfg = cfg.for_family(family_of(model.config))
    if cfg.quantization.enabled:
        model = prepare_quantized_base(model, cfg.gradient_checkpointing)
    elif cfg.gradient_checkpointing:
        enable_checkpointing(model)
    if not cfg.lora.enabled:
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    lora = LoraConfig(
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=cfg.lora.target_modules,
        modules_to_save=list(cfg.lora.modules_to_save) or None,
        bias=cfg.lora.bias,
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora)
    cast_trainable(model, trainable_dtype(cfg))
    return model


def trainable_dtype(cfg: ModelConfig) -> torch.dtype:
    """fp32 for what the optimizer updates (as LLaMA-Factory's `cast_trainable_params_to_fp32`), except under
    FSDP-QLoRA (`quant_storage` set), where every block must be one dtype (docs/scaling.md §3.3)."""
    from vlmchallenge.models.loader import DTYPES

    return DTYPES[cfg.dtype] if cfg.quantization.quant_storage is not None else torch.float32


def cast_trainable(model, dtype: torch.dtype) -> None:
    """PEFT already upcasts LoRA weights; this also covers the trainable copies of `modules_to_save`."""
    for p in model.parameters():
        if p.requires_grad and p.dtype != dtype:
            p.data = p.data.to(dtype)


def trainable_report(model) -> dict[str, int]:
    """Trainable parameter counts per top-level group (vision / merger / language model / lm_head / ...),
    logged at startup so a config that trains the wrong part is visible at once."""
    groups: Counter = Counter()
    total = 0
    for name, p in model.named_parameters():
        total += p.numel()
        if not p.requires_grad:
            continue
        if "merger" in name:
            group = "merger"
        elif "visual" in name:
            group = "vision"
        elif "lm_head" in name:
            group = "lm_head"
        elif "embed_tokens" in name:
            group = "embed_tokens"
        elif "lora_" in name:
            group = "lora"
        else:
            group = "language_model"
        groups[group] += p.numel()
    report = dict(sorted(groups.items()))
    report["trainable"] = sum(groups.values())
    report["total"] = total
    return report
