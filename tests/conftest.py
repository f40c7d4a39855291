"""Shared fixtures: a small synthetic OpenPack tree made once per test session (no downloads, no fixtures on disk)."""

from __future__ import annotations

import os

# One intra-op thread per process, for this process and every one the tests start (servers, ranks, CLIs, drills):
# the tiny models' ops are too small to gain from a second thread, and the suite's parallelism is processes
# (loader workers, ranks, servers). On a busy machine an OpenMP team whose second thread is descheduled spins at
# each barrier: measured on 2 cores beside two busy loops, tests/test_train.py took 112 s with torch's default
# threads and 50 s with one (33 s and 32 s idle). A caller's own setting wins.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import copy  # noqa: E402
from dataclasses import dataclass
from pathlib import Path

import pytest
from omegaconf import DictConfig

from tests.helpers.runs import SMALL_SYNTHETIC, TWO_CLASS_OVERRIDES, compose_train
from vlmchallenge.data.clip_builder import ClipConfig
from vlmchallenge.data.config import DataConfig
from vlmchallenge.data.frame_sampler import SamplerConfig
from vlmchallenge.data.shard_writer import ShardConfig
from vlmchallenge.data.splits import SplitConfig
from vlmchallenge.data.synthetic import generate
from vlmchallenge.workflows import TrainResult


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("openpack") / "v1.0.0"
    return generate(copy.deepcopy(SMALL_SYNTHETIC), root, workers=2)


@pytest.fixture
def data_dir(tmp_path) -> Path:
    """This test's `paths.data_dir`: the library takes it from its caller, never from a default of its own."""
    return tmp_path / "data"


@pytest.fixture
def data_cfg(synthetic_root, tmp_path) -> DataConfig:
    """Prepare settings over the shared synthetic tree, writing shards under this test's tmp dir."""
    return DataConfig(
        name="test",
        root=str(synthetic_root),
        synthetic=None,
        clips=ClipConfig(mode="window", window_s=2.0, stride_s=1.0, min_frames=4),
        sampler=SamplerConfig(num_frames=4, max_pixels=112 * 56),
        splits=SplitConfig(train=["U9001"], val=["U9002"], test=["U9003"], same_person=[]),
        shards=ShardConfig(out_dir=str(tmp_path / "shards"), maxcount=16, workers=1),
    )


# The slow tier, which `make test-fast` (the inner loop) leaves out: whole modules that train, serve or run the
# CLI; tests that need such a fixture (even through another); and the single tests of the other modules that took
# 4 s or more in a full run (`--durations=0`). Everything else runs in well under a second each.
SLOW_MODULES = {
    "test_annotate", "test_annotate_api", "test_annotate_truth", "test_ddp", "test_evaluate_export",
    "test_ground_truth_in_shards", "test_launchers", "test_loggers", "test_prepare_cli", "test_prepare_reliability",
    "test_remote_shards", "test_serving", "test_serving_faults", "test_shared_builds", "test_sweeps", "test_train",
    "test_training_crash",
}  # fmt: skip
SLOW_FIXTURES = {
    "two_class_run",
    "default_run",
    "crash_runs",
    "chain",
    "local_sweep",
    "tiny",
    "tiny_path",
    "built",
}
SLOW_TESTS = {
    "test_cli_prints_a_plan_without_downloading", "test_the_cli_states_each_familys_qlora_policy_and_moe_counts",
    "test_callback_sets_micro_batch_and_accumulation_before_loaders",
    "test_the_vram_cli_plans_per_rank", "test_cli_with_hub_unreachable_fails_after_one_attempt_before_any_data_work",
    "test_train_users_without_recordings_refuse_before_the_model_is_built", "test_deterministic_and_reused",
    "test_a_training_run_survives_a_bit_flipped_shard_logs_the_skips_and_stops_past_the_threshold",
    "test_evaluation_stops_on_a_corrupt_shard_naming_it_and_the_remedy",
    "test_a_corrupt_train_shard_is_skipped_and_counted_exactly",
    "test_train_epoch_is_exact_per_rank_and_batch_size_is_read_late",
    "test_two_ranks_two_workers_see_every_eval_sample_exactly_once",
    "test_balanced_stream_evens_out_class_frequencies", "test_each_epoch_streams_its_own_batches_whatever_came_before",
    "test_edited_session_is_rebuilt_and_the_others_reused", "test_rerun_is_byte_identical_and_skips_finished_sessions",
    "test_training_and_serving_encode_the_sampled_fps", "test_annotate_times_windows_cut_at_the_range_by_their_span",
    "test_the_scorer_passes_the_time_step_to_qwen25", "test_kv_expanded_scoring_equals_a_forward_per_class",
    "test_answer_logits_give_the_full_paths_loss_and_gradients", "test_the_printed_merge_command_merges_the_jobs",
}  # fmt: skip


def is_slow(item) -> bool:
    return (
        item.module.__name__.rsplit(".", 1)[-1] in SLOW_MODULES
        or item.originalname in SLOW_TESTS
        or bool(SLOW_FIXTURES & set(item.fixturenames))
    )


def pytest_collection_modifyitems(config, items):
    import torch

    for item in items:
        if is_slow(item):
            item.add_marker(pytest.mark.slow)
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


# ---------------------------------------------------------------- training fixtures


@pytest.fixture(scope="session")
def shared_data_dir(tmp_path_factory) -> Path:
    """One data dir (synthetic tree, shards, tiny model) shared by the short training tests."""
    return tmp_path_factory.mktemp("train_data")


@dataclass
class TrainedRun:
    cfg: DictConfig
    metrics: dict
    objects: TrainResult  # .components (trainer, module, datamodule...), .export_dir
    data_dir: Path


@pytest.fixture(scope="session")
def two_class_run(tmp_path_factory) -> TrainedRun:
    """The tiny model trained on two synthetic operations until it tells them apart, tested and exported."""
    from hydra.core.global_hydra import GlobalHydra

    from vlmchallenge.workflows import train

    root = tmp_path_factory.mktemp("two_class")
    cfg = compose_train(root / "train" / "runs" / "run", root / "data", TWO_CLASS_OVERRIDES, log_dir=root)
    try:
        result = train(cfg)
    finally:
        GlobalHydra.instance().clear()
    return TrainedRun(cfg, result.metrics, result, root / "data")


# ---------------------------------------------------------------- fault-injection drills


@pytest.fixture
def drill(request):
    """`drill.record(fault, injected, lost, unit, check)`: a row of docs/reliability.md (tests/helpers/drills.py)."""
    from tests.helpers.drills import Drill

    return Drill(request.node.nodeid)
