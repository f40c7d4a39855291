"""PEFT LoRA / QLoRA on the language model, and a per-group report of what is trainable."""

from __future__ import annotations

import logging
from collections import Counter

from vlmchallenge.models.config import ModelConfig

log = logging.getLogger(__name__)


def apply_adapters(model, cfg: ModelConfig):
    """LoRA (or QLoRA on a 4-bit base) per `cfg.lora`; returns the model to train."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if cfg.quantization.enabled:
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=cfg.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    elif cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
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
    return get_peft_model(model, lora)


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
