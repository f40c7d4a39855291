"""The CUDA-only paths, marked `gpu` and skipped without a CUDA device: on a GPU machine `pytest -m gpu` runs
them all (bf16 training with `trainer=gpu`, 4-bit QLoRA on CUDA, bitsandbytes' paged 8-bit AdamW, and the VRAM
callback's measured-vs-predicted check)."""

from __future__ import annotations

import math

import pytest
from hydra.core.global_hydra import GlobalHydra

from tests.helpers.runs import compose_train
from vlmchallenge.workflows import train

pytestmark = pytest.mark.gpu

# value overrides beat group choices in Hydra, so the CPU pin of TINY_TRAIN_OVERRIDES is undone by value
ON_GPU = ["trainer=gpu", "trainer.accelerator=gpu", "trainer.max_epochs=1", "test=false", "export=false"]


@pytest.fixture(autouse=True)
def _clear_hydra():
    yield
    GlobalHydra.instance().clear()


def run(tmp_path, shared_data_dir, *overrides):
    cfg = compose_train(tmp_path / "run", shared_data_dir, [*ON_GPU, *overrides], log_dir=tmp_path)
    return train(cfg)


def test_bf16_training_on_one_gpu(tmp_path, shared_data_dir):
    result = run(tmp_path, shared_data_dir)
    assert result.components.trainer.precision == "bf16-mixed"
    assert next(result.components.module.model.parameters()).device.type == "cuda"
    assert math.isfinite(result.metrics["train/loss"])


def test_qlora_in_4bit_on_cuda_with_paged_8bit_adamw(tmp_path, shared_data_dir):
    import bitsandbytes as bnb

    result = run(
        tmp_path,
        shared_data_dir,
        "experiment=tiny_qlora_cpu",
        "model.quantization.compute_dtype=bfloat16",
        "optim=paged_adamw_8bit",
    )
    model = result.components.module.model
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    assert type(result.components.trainer.optimizers[0]).__name__ == "PagedAdamW8bit"
    assert math.isfinite(result.metrics["train/loss"])


def test_vram_callback_measures_the_peak_against_its_prediction(tmp_path, shared_data_dir):
    """No budget: the planner plans against the GPU's free memory, then logs the measured peak after 3 steps."""
    result = run(tmp_path, shared_data_dir, "trainer.limit_train_batches=4")
    metrics = result.metrics
    assert metrics["vram/measured_allocated_gib"] > 0
    assert metrics["vram/predicted_allocated_gib"] > 0


def test_fsdp_wraps_the_blocks_and_keeps_checkpoints_adapter_only(tmp_path, shared_data_dir):
    """`trainer=fsdp` on one GPU (torch's FSDP has no CPU backend): the decoder layers and vision blocks are
    FSDP units with activation checkpointing, and last.ckpt holds exactly the trainable tensors a plain run
    saves, so export reads it without FSDP."""
    import torch
    from torch.distributed.fsdp import FullyShardedDataParallel

    from vlmchallenge.assembly import assemble, settings_from_config
    from vlmchallenge.workflows import export

    overrides = ["trainer=fsdp", "trainer.accelerator=gpu", "trainer.devices=1"]
    cfg = compose_train(tmp_path / "run", shared_data_dir, overrides, log_dir=tmp_path)
    result = train(cfg)
    assert math.isfinite(result.metrics["train/loss"])
    assert "test/openpack_f1_macro" in result.metrics
    assert (result.export_dir / "model.safetensors").exists()  # rebuilt from the best checkpoint on rank 0
    units = FullyShardedDataParallel.fsdp_modules(result.components.trainer.strategy.model)
    wrapped = {type(getattr(u.module, "_checkpoint_wrapped_module", u.module)).__name__ for u in units}
    assert {"Qwen2VLDecoderLayer", "Qwen2VLVisionBlock"} <= wrapped
    assert any(type(u.module).__name__ == "CheckpointWrapper" for u in units)

    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    plain = assemble(settings_from_config(cfg), "export").module
    plain.configure_model()
    assert set(saved) == set(plain.state_dict())
    assert (export(ckpt, tmp_path / "export") / "model.safetensors").exists()
