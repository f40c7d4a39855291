"""Attention implementation and Liger kernel selection (models/attention.py, models/liger.py): the decisions as pure
functions of the facts, and the real tiny model loaded through `load_base_model` with them."""

from __future__ import annotations

import logging

import pytest
import torch
from transformers.utils import is_flash_attn_2_available

from vlmchallenge.models.attention import choose_attention
from vlmchallenge.models.config import ModelConfig
from vlmchallenge.models.families import TinyModelSpec
from vlmchallenge.models.liger import choose_liger
from vlmchallenge.models.loader import load_base_model, resolve_pretrained

AMPERE, TURING = (8, 0), (7, 5)


@pytest.mark.parametrize(
    "requested, installed, capability, dtype, used, why",
    [
        ("sdpa", True, AMPERE, "bfloat16", "sdpa", ""),
        ("eager", False, None, "float32", "eager", ""),
        ("flash_attention_2", True, AMPERE, "bfloat16", "flash_attention_2", ""),
        ("flash_attention_2", True, (9, 0), "float16", "flash_attention_2", ""),
        ("auto", True, AMPERE, "bfloat16", "flash_attention_2", "can run"),
        ("flash_attention_2", False, AMPERE, "bfloat16", "sdpa", "flash-attn package is not installed"),
        ("auto", True, None, "bfloat16", "sdpa", "not load on a CUDA GPU"),
        ("flash_attention_2", True, TURING, "float16", "sdpa", "compute capability 7.5"),
        ("auto", True, AMPERE, "float32", "sdpa", "model.dtype=float32"),
    ],
)
def test_attention_choice(requested, installed, capability, dtype, used, why):
    choice = choose_attention(requested, installed, capability, dtype)
    assert choice.used == used
    assert (why in choice.reason) if why else choice.reason == ""
    if why and used == "sdpa":  # the one fallback line names what was asked, what is used and why
        assert choice.message.startswith(f"attention: model.attn_implementation={requested} -> using sdpa: ")


def test_unknown_attention_is_refused_with_the_field_and_the_choices():
    with pytest.raises(ValueError, match=r"model.attn_implementation: expected one of auto, sdpa.*'flash'"):
        ModelConfig(tiny=TinyModelSpec(), attn_implementation="flash").validate()


@pytest.mark.parametrize(
    "setting, installed, cuda, model_type, apply, why",
    [
        ("off", True, True, "qwen2_vl", None, ""),
        (False, True, True, "qwen2_vl", None, ""),
        ("auto", True, True, "qwen2_vl", "apply_liger_kernel_to_qwen2_vl", ""),
        (True, True, True, "qwen2_5_vl", "apply_liger_kernel_to_qwen2_5_vl", ""),
        ("on", False, True, "qwen2_vl", None, "liger-kernel package is not installed"),
        ("auto", True, False, "qwen2_vl", None, "CUDA"),
        ("on", True, True, "llava", None, "'llava' has no Liger patch"),
    ],
)
def test_liger_choice(setting, installed, cuda, model_type, apply, why):
    choice = choose_liger(setting, installed, cuda, model_type)
    assert choice.apply == apply
    assert (why in choice.reason) if why else choice.reason == ""


def test_unknown_liger_setting_is_refused():
    with pytest.raises(ValueError, match=r"model.liger: expected off, auto or on .*'fast'"):
        ModelConfig(tiny=TinyModelSpec(), liger="fast").validate()


def tiny_cfg(shared_data_dir, **model) -> ModelConfig:
    return ModelConfig(tiny=TinyModelSpec(), cache_dir=str(shared_data_dir / "models"), **model)


def test_the_default_loads_the_tiny_model_with_sdpa(shared_data_dir, caplog):
    cfg = tiny_cfg(shared_data_dir)
    assert (cfg.attn_implementation, cfg.liger) == ("sdpa", "off")
    with caplog.at_level(logging.INFO, logger="vlmchallenge.models"):
        model = load_base_model(cfg, resolve_pretrained(cfg))
    assert model.config._attn_implementation == "sdpa"
    assert not [r for r in caplog.records if r.name.startswith("vlmchallenge.models.")]  # nothing to explain


def test_auto_and_liger_on_cpu_fall_back_with_one_line_each(shared_data_dir, caplog):
    cfg = tiny_cfg(shared_data_dir, attn_implementation="auto", liger="on")
    with caplog.at_level(logging.INFO, logger="vlmchallenge.models"):
        model = load_base_model(cfg, resolve_pretrained(cfg), device="cpu")
    assert model.config._attn_implementation == "sdpa"
    ours = [r for r in caplog.records if r.name.startswith("vlmchallenge.models.")]
    assert sorted(r.name for r in ours) == ["vlmchallenge.models.attention", "vlmchallenge.models.liger"]
    attention, liger = sorted(ours, key=lambda r: r.name)
    why = (
        "the model does not load on a CUDA GPU"
        if is_flash_attn_2_available()
        else "the flash-attn package is not installed (pip install flash-attn --no-build-isolation)"
    )
    assert attention.getMessage() == f"attention: model.attn_implementation=auto -> using sdpa: {why}"
    assert liger.levelno == logging.WARNING  # asked for explicitly, so a warning
    assert liger.getMessage().startswith("liger: model.liger=on -> not applied: ")


@pytest.mark.gpu
def test_auto_on_a_gpu_uses_flash_attention_when_it_can(shared_data_dir):
    """On CUDA in bf16, `auto` gives flash-attn 2 exactly when the package is installed and the GPU is Ampere+,
    and a forward runs. (Liger stays off: it patches transformers' module-level classes for the whole process.)"""
    cfg = tiny_cfg(shared_data_dir, dtype="bfloat16", attn_implementation="auto")
    model = load_base_model(cfg, resolve_pretrained(cfg), device="cuda").to("cuda")
    can = is_flash_attn_2_available() and torch.cuda.get_device_capability() >= AMPERE
    assert model.config._attn_implementation == ("flash_attention_2" if can else "sdpa")
    ids = torch.randint(0, 100, (2, 12), device="cuda")
    logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    assert torch.isfinite(logits.float()).all()
