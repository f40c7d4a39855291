"""The FSDP and DeepSpeed presets: what they build, what FSDP would wrap in the tiny Qwen2-VL, and the
strategy/model combinations assembly refuses before anything loads. (torch's FSDP has no CPU backend: the
FSDP training run itself is `tests/test_gpu.py::test_fsdp_*`.)"""

from __future__ import annotations

import logging
from collections import Counter

import hydra
import pytest
from hydra.core.global_hydra import GlobalHydra

from tests.helpers.runs import compose_train
from vlmchallenge.assembly import assemble, check_family, check_strategy, settings_from_config
from vlmchallenge.models.loader import load_base_model, model_family, resolve_pretrained
from vlmchallenge.training.strategies import (
    AdapterFSDPStrategy,
    deepspeed_stage,
    resolve_classes,
    strategy_kind,
)

QWEN2VL = "transformers.models.qwen2_vl.modeling_qwen2_vl"


@pytest.fixture(autouse=True)
def _clear_hydra():
    yield
    GlobalHydra.instance().clear()


def compose(tmp_path, data_dir, *overrides):
    return compose_train(tmp_path / "run", data_dir, list(overrides), log_dir=tmp_path)


@pytest.mark.parametrize(
    ("experiment", "blocks"),
    [
        ("tiny_cpu", ("Qwen2VLDecoderLayer", "Qwen2VLVisionBlock")),
        ("tiny_qwen35_cpu", ("Qwen3_5DecoderLayer", "Qwen3_5VisionBlock")),
        ("tiny_internvl_cpu", ("Qwen3DecoderLayer", "InternVLVisionLayer")),
    ],
)
def test_fsdp_preset_wraps_and_checkpoints_the_decoder_layers_and_vision_blocks(
    tmp_path, shared_data_dir, experiment, blocks
):
    """`trainer=fsdp` leaves `wrap` to the model family: assembly fills in the family's own blocks."""
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy

    cfg = compose(tmp_path, shared_data_dir, f"experiment={experiment}", "trainer=fsdp")
    assert cfg.trainer.strategy.wrap is None
    settings = settings_from_config(cfg)
    check_family(settings, model_family(settings.model), cfg.trainer)
    strategy = hydra.utils.instantiate(cfg.trainer.strategy)
    assert isinstance(strategy, AdapterFSDPStrategy)
    assert strategy._state_dict_type == "full" and strategy.sharding_strategy.name == "FULL_SHARD"
    wrap = strategy.kwargs["auto_wrap_policy"]
    recompute = strategy._activation_checkpointing_kwargs["auto_wrap_policy"]
    assert isinstance(wrap, ModuleWrapPolicy) and isinstance(recompute, ModuleWrapPolicy)

    # the units torch's policy picks in the tiny model with its adapters: every decoder layer and vision block
    parts = assemble(settings, "export")
    parts.module.configure_model()
    tiny = parts.settings.model.tiny
    for policy in (wrap, recompute):
        picked = Counter(type(m).__name__ for m in parts.module.modules() if policy(m, recurse=False))
        assert picked == {blocks[0]: tiny.num_hidden_layers, blocks[1]: tiny.vision_depth}


def test_wrap_classes_skip_a_missing_family_and_reject_a_typo(caplog):
    with caplog.at_level(logging.WARNING):
        found = resolve_classes([f"{QWEN2VL}.Qwen2VLDecoderLayer", "transformers.models.nope.X"], "wrap")
    assert {c.__name__ for c in found} == {"Qwen2VLDecoderLayer"}
    assert "skipping transformers.models.nope.X" in caplog.text
    with pytest.raises(ValueError, match="has no class 'Qwen2VLDecoderLayr'"):
        resolve_classes([f"{QWEN2VL}.Qwen2VLDecoderLayr"], "wrap")
    with pytest.raises(ValueError, match="none of"):
        resolve_classes(["transformers.models.nope.X"], "wrap")


@pytest.mark.parametrize(
    ("strategy", "kind", "stage"),
    [
        ("ddp", "other", None),
        ("fsdp", "fsdp", None),
        ({"_target_": "vlmchallenge.training.strategies.fsdp_strategy"}, "fsdp", None),
        ("deepspeed", "deepspeed", 2),
        ("deepspeed_stage_3_offload", "deepspeed", 3),
        ({"_target_": "pytorch_lightning.strategies.DeepSpeedStrategy", "stage": 3}, "deepspeed", 3),
        (
            {
                "_target_": "pytorch_lightning.strategies.DeepSpeedStrategy",
                "config": {"zero_optimization": {"stage": 3}},
            },
            "deepspeed",
            3,
        ),
    ],
)
def test_strategy_kind_and_zero_stage_from_a_config_value(strategy, kind, stage):
    assert strategy_kind(strategy) == kind and deepspeed_stage(strategy) == stage


@pytest.mark.parametrize(
    "strategy",
    [
        ["trainer=deepspeed_zero2", "trainer.strategy.stage=3"],
        ["trainer=ddp", "trainer.strategy=deepspeed_stage_3"],
    ],
)
def test_zero3_with_a_4bit_base_is_refused_before_any_model_is_built(tmp_path, strategy):
    data_dir = tmp_path / "data"
    cfg = compose(tmp_path, data_dir, *strategy, "model.quantization.enabled=true")
    with pytest.raises(
        ValueError, match=r"ZeRO-3 cannot partition.*trainer=ddp, trainer=deepspeed_zero2, or trainer=fsdp"
    ):
        assemble(settings_from_config(cfg), "fit", trainer=cfg.trainer)
    assert not data_dir.exists()  # nothing was built or loaded


def test_zero2_with_a_4bit_base_passes_the_check(tmp_path):
    cfg = compose(tmp_path, tmp_path / "data", "trainer=deepspeed_zero2", "model.quantization.enabled=true")
    check_strategy(settings_from_config(cfg), cfg.trainer)


def test_fsdp_on_cpu_is_refused_before_any_model_is_built(tmp_path):
    data_dir = tmp_path / "data"
    cfg = compose(tmp_path, data_dir, "trainer=fsdp", "trainer.accelerator=cpu")
    with pytest.raises(ValueError, match="trainer=fsdp needs CUDA devices.*trainer.accelerator=cpu"):
        assemble(settings_from_config(cfg), "fit", trainer=cfg.trainer)
    assert not data_dir.exists()


def test_fsdp_qlora_stores_the_4bit_weights_in_the_one_dtype_of_the_model(tmp_path, shared_data_dir):
    """bitsandbytes' FSDP-QLoRA rule: quant storage = the model's dtype, so FSDP can flatten each block."""
    cfg = compose(
        tmp_path,
        shared_data_dir,
        "trainer=fsdp",
        "trainer.accelerator=gpu",  # only read by the check here; nothing is trained
        "trainer.precision=32-true",
        "experiment=tiny_qlora_cpu",
    )
    settings = settings_from_config(cfg)
    assert settings.model.quantization.quant_storage is None
    check_strategy(settings, cfg.trainer)
    assert settings.model.quantization.quant_storage == "float32"
    model = load_base_model(settings.model, resolve_pretrained(settings.model))
    assert {str(p.dtype) for p in model.parameters()} == {"torch.float32"}  # the 4-bit weights included

    cfg.trainer.precision = "bf16-mixed"  # FSDP would cast the fp32-stored 4-bit weights to bf16
    settings.model.quantization.quant_storage = None
    with pytest.raises(
        ValueError, match=r"must match, got float32, float32, float32 and bfloat16 \(bf16-mixed\)"
    ):
        check_strategy(settings, cfg.trainer)


def test_deepspeed_zero2_preset_composes_and_builds_when_deepspeed_is_installed(tmp_path):
    cfg = compose(tmp_path, tmp_path / "data", "trainer=deepspeed_zero2")
    assert cfg.trainer.strategy.stage == 2 and cfg.trainer.strategy.exclude_frozen_parameters
    assert strategy_kind(cfg.trainer.strategy) == "deepspeed"
    pytest.importorskip("deepspeed")
    strategy = hydra.utils.instantiate(cfg.trainer.strategy)
    assert strategy.config["zero_optimization"]["stage"] == 2 and strategy.exclude_frozen_parameters
