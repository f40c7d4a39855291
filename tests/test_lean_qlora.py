"""Lean QLoRA (frozen non-4-bit parameters stay in the model dtype, trainable ones fp32; the VRAM estimate sees
the same dtypes) and logits only at the answer positions (same loss and gradients as the full-logits path)."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from tests.test_collator_and_scorer import LARGE, SMALL, TINY_SAMPLER, clips
from vlmchallenge.models.adapters import apply_adapters
from vlmchallenge.models.architectures import model_config_for
from vlmchallenge.models.collator import TrainCollator
from vlmchallenge.models.config import LoraSettings, ModelConfig, OptimConfig, QuantizationSettings
from vlmchallenge.models.families import TinyModelSpec
from vlmchallenge.models.label_scorer import PROMPT_KEYS
from vlmchallenge.models.loader import load_base_model, load_processor, model_family, resolve_pretrained
from vlmchallenge.models.prompt import PromptBuilder
from vlmchallenge.training.answer_loss import answer_forward
from vlmchallenge.training.vram_callback import footprint_inputs
from vlmchallenge.training.vram_math import architecture_from_config, parameter_bytes

TINY_SAVED = ["merger", "lm_head", "embed_tokens"]  # conf/model/tiny_qwen2vl.yaml


def qlora_cfg(shared_data_dir, dtype: str, saved=TINY_SAVED, **model) -> ModelConfig:
    return ModelConfig(
        tiny=TinyModelSpec(),
        cache_dir=str(shared_data_dir / "models"),
        dtype=dtype,
        lora=LoraSettings(modules_to_save=list(saved)),
        quantization=QuantizationSettings(enabled=True, compute_dtype=dtype),
        **model,
    )


def prepared(cfg: ModelConfig):
    return apply_adapters(load_base_model(cfg, resolve_pretrained(cfg)), cfg)


def dtype_census(model) -> dict[str, int]:
    """Bytes of the model's parameters by storage dtype; packed 4-bit weights count as `nf4`."""
    census: Counter = Counter()
    for p in model.parameters():
        kind = "nf4" if type(p).__name__ == "Params4bit" else str(p.dtype).removeprefix("torch.")
        census[kind] += p.numel() * p.element_size()
    return dict(census)


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_estimated_bytes_per_dtype_equal_the_loaded_models(shared_data_dir, dtype):
    cfg = qlora_cfg(shared_data_dir, dtype)
    model = prepared(cfg)
    arch = architecture_from_config(model_config_for(cfg))
    estimated = parameter_bytes(arch, footprint_inputs(cfg, model_family(cfg), OptimConfig(), 64, 16))
    assert dtype_census(model) == estimated
    assert set(estimated) == ({"nf4", "float32"} if dtype == "float32" else {"nf4", "bfloat16", "float32"})
    frozen = {p.dtype for n, p in model.named_parameters() if not p.requires_grad and "visual" in n}
    trainable = {p.dtype for p in model.parameters() if p.requires_grad}
    assert frozen == {getattr(torch, dtype)} and trainable == {torch.float32}


def test_checkpointing_keeps_the_input_grad_hook(shared_data_dir):
    """A frozen 4-bit base with checkpointing and frozen embeddings (as for the real presets): their output still
    requires grad (the hook) and the adapters get gradients through the checkpointed layers."""
    cfg = qlora_cfg(shared_data_dir, "float32", saved=[], gradient_checkpointing=True)
    model = prepared(cfg)
    assert model.base_model.model.is_activation_checkpointing
    assert model.get_input_embeddings()(torch.tensor([[1, 2]])).requires_grad
    batch = TrainCollator(load_processor(resolve_pretrained(cfg), TINY_SAMPLER), PromptBuilder())(
        clips([0, 2])
    )
    answer_forward(model, {k: batch[k] for k in PROMPT_KEYS if k in batch}, batch["labels"]).loss.backward()
    lora_b = [
        p for n, p in model.named_parameters() if "lora_B" in n
    ]  # B starts at 0, so A gets no gradient yet
    assert lora_b and all(p.grad is not None and p.grad.abs().sum() > 0 for p in lora_b)


def test_answer_logits_give_the_full_paths_loss_and_gradients(shared_data_dir):
    """Rows of different lengths (two frame sizes, class names of 1-3 words), right-padded: the gathered answer
    positions must be exactly the ones the full-logits loss counts."""
    cfg = ModelConfig(
        tiny=TinyModelSpec(),
        cache_dir=str(shared_data_dir / "models"),
        lora=LoraSettings(modules_to_save=TINY_SAVED, dropout=0.0),  # deterministic: one forward = another
    )
    torch.manual_seed(0)
    model = prepared(cfg)
    for n, p in model.named_parameters():  # non-zero LoRA B, so gradients reach every adapter matrix
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.02)
    processor = load_processor(resolve_pretrained(cfg), TINY_SAMPLER)
    batch = TrainCollator(processor, PromptBuilder())(clips([0, 3, 9, 1], sizes=[LARGE, SMALL, LARGE, SMALL]))
    assert batch["attention_mask"].sum(1).unique().numel() > 1  # padded rows
    inputs = {k: batch[k] for k in PROMPT_KEYS if k in batch}
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}

    def loss_and_grads(loss_fn):
        model.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in trainable.items()}

    full_loss, full_grads = loss_and_grads(
        lambda: model(**inputs, labels=batch["labels"], use_cache=False).loss
    )
    out = answer_forward(model, inputs, batch["labels"])
    assert out.logits.shape == (int((batch["labels"] != -100).sum()), processor.tokenizer.vocab_size)
    lean_loss, lean_grads = loss_and_grads(lambda: answer_forward(model, inputs, batch["labels"]).loss)
    assert torch.allclose(lean_loss, full_loss, rtol=0, atol=1e-6)
    for name, grad in full_grads.items():
        assert torch.allclose(lean_grads[name], grad, rtol=0, atol=1e-6), name
    assert sum(g.abs().sum() for g in full_grads.values()) > 0
