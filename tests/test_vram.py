"""VRAM math: exact parameter counts, LoRA counts equal to PEFT's, the planner, the callback and the CLI."""

from __future__ import annotations

import dataclasses
import functools

import pytest
import pytorch_lightning as pl
from hydra.core.global_hydra import GlobalHydra

from tests.helpers.in_process import Finished, run_module
from tests.helpers.runs import compose_train
from vlmchallenge.models.architectures import model_config_for, shipped_config
from vlmchallenge.models.config import LoraSettings, ModelConfig
from vlmchallenge.models.families import FAMILIES, TinyModelSpec
from vlmchallenge.training.vram_math import (
    GIB,
    DoesNotFitError,
    FootprintInputs,
    architecture_from_config,
    estimate,
    lora_trainable_params,
    plan_batches,
)

# docs/vram.md §2.3 and §2.4 (all-linear LoRA on the LLM)
PRESETS = {
    "Qwen/Qwen2-VL-2B-Instruct": (2_208_985_600, 665_271_296, 9_232_384),
    "Qwen/Qwen2-VL-7B-Instruct": (8_291_375_616, 675_759_104, 20_185_088),
    "Qwen/Qwen2.5-VL-3B-Instruct": (3_754_622_976, 668_684_288, 14_966_784),
    "Qwen/Qwen2.5-VL-7B-Instruct": (8_292_166_656, 676_550_144, 20_185_088),
}
# docs/families.md §5: the released safetensors totals (Qwen3.5: less the multi-token-prediction head, which
# transformers does not build) and the vision towers with their mergers
NEW_PRESETS = {
    "Qwen/Qwen3-VL-2B-Instruct": (2_127_532_032, 406_957_056),
    "Qwen/Qwen3-VL-4B-Instruct": (4_437_815_808, 415_347_712),
    "Qwen/Qwen3-VL-8B-Instruct": (8_767_123_696, 576_388_336),
    "Qwen/Qwen3-VL-30B-A3B-Instruct": (31_070_754_032, 538_631_408),
    "Qwen/Qwen3.5-0.8B": (873_438_784 - 20_452_864, 100_592_896),
    "Qwen/Qwen3.5-2B": (2_274_069_824 - 60_828_160, 331_416_576),
    "Qwen/Qwen3.5-4B": (4_659_865_088 - 120_599_552, 333_514_240),
    "Qwen/Qwen3.5-9B": (9_653_104_368 - 243_290_624, 456_010_480),
}


@pytest.mark.parametrize("hub_id", sorted(PRESETS))
def test_exact_parameter_counts_of_the_presets(hub_id):
    total, vision, lora_r8 = PRESETS[hub_id]
    arch = architecture_from_config(shipped_config(hub_id))
    assert (arch.total, arch.vision) == (total, vision)
    assert lora_trainable_params(arch, None, 8, []) == lora_r8


@pytest.mark.parametrize("hub_id", sorted(NEW_PRESETS))
def test_exact_parameter_counts_of_the_current_family_presets(hub_id):
    total, vision = NEW_PRESETS[hub_id]
    arch = architecture_from_config(shipped_config(hub_id))
    assert (arch.total, arch.vision) == (total, vision)
    if "A3B" in hub_id:  # 128 routed experts of 3 x 2048 x 768 per layer, 8 used per token, 48 layers
        assert arch.experts == 128 * 48 * 3 * 2048 * 768
        assert arch.active == total - 120 * 48 * 3 * 2048 * 768 == 3_891_664_112
    else:
        assert (arch.experts, arch.active) == (0, total)


@pytest.mark.parametrize("modules_to_save", [[], ["lm_head"], ["merger", "lm_head", "embed_tokens"]])
def test_lora_counts_equal_what_peft_reports(shared_data_dir, modules_to_save):
    from vlmchallenge.models.adapters import apply_adapters
    from vlmchallenge.models.loader import load_base_model, resolve_pretrained

    cfg = ModelConfig(
        tiny=TinyModelSpec(),
        cache_dir=str(shared_data_dir / "models"),
        lora=LoraSettings(r=8, modules_to_save=modules_to_save),
    )
    model = apply_adapters(load_base_model(cfg, resolve_pretrained(cfg)), cfg)
    trainable, _ = model.get_nb_trainable_parameters()
    arch = architecture_from_config(model_config_for(cfg))
    assert lora_trainable_params(arch, None, 8, modules_to_save) == trainable


@functools.cache
def arch7b():
    return architecture_from_config(shipped_config("Qwen/Qwen2-VL-7B-Instruct"))


def predicted(arch, setup: FootprintInputs, micro_batch: int) -> int:
    return sum(estimate(arch, dataclasses.replace(setup, micro_batch=micro_batch)).values())


def test_terms_sum_and_respond_to_the_knobs():
    arch = arch7b()
    base = FootprintInputs(method="lora", seq_len=2048, vision_tokens=1024)
    t = estimate(arch, base)
    assert set(t) == {
        "weights",
        "trainable_state",
        "activations",
        "logits_loss",
        "vision",
        "cuda_context",
        "allocator_reserve",
    }
    assert t["weights"] == 2 * arch.total
    q = estimate(arch, FootprintInputs(**{**base.__dict__, "method": "qlora"}))
    assert q["weights"] < t["weights"]
    no_gc = estimate(arch, FootprintInputs(**{**base.__dict__, "gradient_checkpointing": False}))
    assert no_gc["activations"] > 5 * t["activations"]
    eight_bit = estimate(arch, FootprintInputs(**{**base.__dict__, "optimizer": "PagedAdamW8bit"}))
    assert eight_bit["trainable_state"] < t["trainable_state"]
    # logits cost ~1.8 MB per token of a 150k vocabulary at c=12 (vram.md §2.5), but only at the answer tokens
    assert t["logits_loss"] / (base.loss_tokens * 1024**2) == pytest.approx(1.74, rel=0.02)
    longer = estimate(arch, FootprintInputs(**{**base.__dict__, "seq_len": 4096}))
    assert longer["logits_loss"] == t["logits_loss"] < longer["activations"]
    more_answer = estimate(arch, FootprintInputs(**{**base.__dict__, "loss_tokens": 2 * base.loss_tokens}))
    assert more_answer["logits_loss"] == 2 * t["logits_loss"]


def test_plan_grows_with_the_budget_and_accumulation_is_exact():
    arch, setup = arch7b(), FootprintInputs(method="qlora", seq_len=1024, vision_tokens=512)
    micro = [plan_batches(arch, setup, int(gib * GIB), 32, 2).micro_batch for gib in (16, 24, 40, 80)]
    assert micro == sorted(micro) and micro[0] < micro[-1]
    for gib in (16, 24, 40, 80):
        p = plan_batches(arch, setup, int(gib * GIB), 32, 2)
        assert p.micro_batch * p.accumulate * p.world_size == 32
        assert p.predicted_bytes <= 0.9 * gib * GIB
    with pytest.raises(ValueError, match="not divisible by world size"):
        plan_batches(arch, setup, 80 * GIB, 30, 4)


# 7B QLoRA at 1024 tokens: ~8.7 GiB at micro-batch 1, ~0.62 GiB per extra sample (before the 10 % margin)
QLORA_7B = FootprintInputs(method="qlora", seq_len=1024, vision_tokens=512)


@pytest.mark.parametrize("world_size", [1, 2, 4, 8])
def test_plan_splits_the_global_batch_across_ranks(world_size):
    p = plan_batches(arch7b(), QLORA_7B, 30 * GIB, 24, world_size)
    assert p.world_size == world_size and p.global_batch == 24
    # per rank: micro-batch x accumulation is this rank's share, and all ranks together make the global batch
    assert p.micro_batch * p.accumulate == 24 // world_size
    assert p.micro_batch * p.accumulate * p.world_size == 24


def test_plan_on_two_ranks_still_accumulates():
    # 15 GiB fits micro-batch 8 at most; each of 2 ranks owes 12 of the 24 samples: 6 x 2 (not 6 x 4)
    p = plan_batches(arch7b(), QLORA_7B, 15 * GIB, 24, 2)
    assert (p.micro_batch, p.accumulate, p.world_size) == (6, 2, 2)


@pytest.mark.parametrize(("global_batch", "world_size"), [(24, 5), (25, 2), (6, 4)])
def test_global_batch_not_divisible_by_world_size_is_refused(global_batch, world_size):
    with pytest.raises(ValueError, match=f"global batch {global_batch} is not divisible by world size"):
        plan_batches(arch7b(), QLORA_7B, 80 * GIB, global_batch, world_size)


@pytest.mark.parametrize("budget_gib", [10, 11, 12, 13, 14, 17, 200])
def test_plan_picks_the_largest_micro_batch_that_fits(budget_gib):
    """Per rank 12 samples: admissible micro-batches are its divisors 1, 2, 3, 4, 6, 12. The budgets put the
    limit at or between divisors (10 GiB: 1; 11: 2, or 3 without the margin; 12: 4; 13: 4, past the non-divisor
    5; 14: 6; 17: 6 while 11 would fit, or 12 without the margin) and above all of them (200: 12)."""
    arch, budget, per_rank = arch7b(), budget_gib * GIB, 12
    p = plan_batches(arch, QLORA_7B, budget, 2 * per_rank, 2)
    usable = budget * (1 - 0.10)
    assert p.predicted_bytes == predicted(arch, QLORA_7B, p.micro_batch) <= usable
    assert per_rank % p.micro_batch == 0 and p.micro_batch * p.accumulate == per_rank
    larger = [b for b in range(p.micro_batch + 1, per_rank + 1) if per_rank % b == 0]
    if larger:  # the next admissible micro-batch would not have fitted
        assert predicted(arch, QLORA_7B, larger[0]) > usable
    else:
        assert p.micro_batch == per_rank


def test_error_lists_largest_terms_and_remedies():
    with pytest.raises(
        DoesNotFitError, match=r"micro-batch 1 needs .* GiB.*Largest terms: activations.*QLoRA.*checkpointing"
    ):
        plan_batches(
            arch7b(), FootprintInputs(method="lora", gradient_checkpointing=False, seq_len=4096), 12 * GIB, 8
        )


def test_vision_tokens_follow_qwen_geometry():
    tokens = FAMILIES["qwen2_vl"].geometry.tokens_per_clip
    assert tokens(8, 308, 140) == 4 * 5 * 11
    assert tokens(7, 224, 224) == 4 * 8 * 8  # odd counts repeat the last frame


@pytest.fixture
def _clear_hydra():
    yield
    GlobalHydra.instance().clear()


class BatchSizeRecorder(pl.Callback):
    """Records the size of every micro-batch the model is given (added through the `callbacks:` config)."""

    def __init__(self):
        self.sizes: list[int] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.sizes.append(int(batch["input_ids"].shape[0]))


def test_callback_sets_micro_batch_and_accumulation_before_loaders(tmp_path, shared_data_dir, _clear_hydra):
    from vlmchallenge.workflows import train

    # The tiny model is predicted at ~4.9 MiB for micro-batch 1 plus ~1.7 MiB per extra sample (CPU: no CUDA
    # context); 0.01 GiB less the 10 % margin (9.2 MiB) fits micro-batch 3 but not 4, and 3 does not divide 8,
    # so a global batch of 8 becomes 2 x 4, unlike both dataloader.batch_size (4) and Lightning's default
    # accumulation (1).
    cfg = compose_train(
        tmp_path / "train" / "runs" / "v",
        shared_data_dir,
        [
            "vram.budget_gib=0.01",
            "vram.global_batch_size=8",
            "test=false",
            "export=false",
            "trainer.limit_train_batches=8",
            "trainer.limit_val_batches=1",
            f"+callbacks.batch_sizes._target_={__name__}.BatchSizeRecorder",
        ],
        log_dir=tmp_path,
    )
    objects = train(cfg)
    trainer = objects.components.trainer
    planner = next(c for c in trainer.callbacks if type(c).__name__ == "VRAMPlanner")
    recorder = next(c for c in trainer.callbacks if type(c).__name__ == "BatchSizeRecorder")
    assert (planner.batch_plan.micro_batch, planner.batch_plan.accumulate) == (2, 4)
    assert objects.components.datamodule.batch_size == 2
    assert trainer.accumulate_grad_batches == 4
    # the train loader was built with the planned micro-batch, not dataloader.batch_size (4) ...
    assert recorder.sizes == [2] * 8
    # ... and Lightning stepped the optimizer once per 4 micro-batches
    assert trainer.global_step == 8 // 4


def test_cli_prints_a_plan_without_downloading(tmp_path):
    proc = run_module(
        "vlmchallenge.vram",
        "+experiment=qwen2vl_7b_qlora",
        "vram.budget_gib=24",
        f"vram.chart={tmp_path}/vram.png",
        f"hydra.run.dir={tmp_path}/run",
    )
    assert proc.returncode == 0, proc.output[-3000:]
    assert "plan: micro-batch" in proc.output and "global batch 16" in proc.output
    # the counts behind the table: total and vision tower of Qwen2-VL-7B (PRESETS), and what is 4-bit
    out = proc.words
    total, vision, _ = PRESETS["Qwen/Qwen2-VL-7B-Instruct"]
    for name, count in [("total", total), ("vision tower", vision), ("4-bit (NF4)", arch7b().llm_linear)]:
        assert f"{name} │ {count:,}" in out, (name, proc.output)
    assert "language model" in out and "trainable" in out
    assert (tmp_path / "vram.png").stat().st_size > 0
    assert "family: Qwen2-VL (time encoding: none; 4-bit QLoRA: allowed" in out


def run_vram(*overrides: str) -> Finished:
    return run_module("vlmchallenge.vram", *overrides, "vram.budget_gib=80")


def test_the_cli_states_each_familys_qlora_policy_and_moe_counts(tmp_path):
    """Qwen3.5 refuses 4-bit and says why; the MoE preset shows its routed experts and active parameters."""
    hybrid = run_vram("experiment=qwen35_2b_lora", f"hydra.run.dir={tmp_path}/a")
    assert hybrid.returncode == 0, hybrid.output[-3000:]
    assert "family: Qwen3.5 (time encoding: text-timestamps; 4-bit QLoRA: refused - Unsloth" in hybrid.words
    refused = run_vram(
        "experiment=qwen35_2b_lora", "model.quantization.enabled=true", f"hydra.run.dir={tmp_path}/b"
    )
    assert refused.returncode != 0
    assert "Qwen3.5 is not trained in 4-bit here" in refused.words
    moe = run_vram("experiment=qwen3vl_4b_lora", "model=qwen3vl_30b_a3b", f"hydra.run.dir={tmp_path}/c")
    assert moe.returncode == 0, moe.output[-3000:]
    total, _ = NEW_PRESETS["Qwen/Qwen3-VL-30B-A3B-Instruct"]
    assert f"total │ {total:,}" in moe.words and "active per token (MoE) │ 3,891,664,112" in moe.words


@pytest.mark.parametrize(
    ("overrides", "world", "per_rank"),
    [
        (["trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"], 8, 2),  # global 16 over 8 ranks
        (["trainer=ddp", "trainer.devices=2"], 2, 8),
        (["trainer=ddp", "trainer.devices=4", "vram.global_batch_size=null"], 4, 2),  # micro-batch 2 per rank
    ],
)
def test_the_vram_cli_plans_per_rank(overrides, world, per_rank, _clear_hydra):
    """`vlmchallenge.vram` splits the global batch over devices x nodes, as the training callback does."""
    from hydra import compose, initialize_config_dir

    import vlmchallenge.conf_schema  # noqa: F401
    from tests.helpers.runs import CONF_DIR
    from vlmchallenge.workflows import vram

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["experiment=qwen2vl_7b_qlora", "vram.budget_gib=80", *overrides])
    plan = vram(cfg)
    assert plan.world_size == world
    assert plan.micro_batch * plan.accumulate == per_rank
