"""Shared fixtures: a small synthetic OpenPack tree made once per test session (no downloads, no fixtures on disk)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import pytest
from omegaconf import DictConfig

from tests.helpers.runs import TWO_CLASS_OVERRIDES, compose_train
from vlmchallenge.data.clip_builder import ClipConfig
from vlmchallenge.data.config import DataConfig
from vlmchallenge.data.frame_sampler import SamplerConfig
from vlmchallenge.data.shard_writer import ShardConfig
from vlmchallenge.data.splits import SplitConfig
from vlmchallenge.data.synthetic import SyntheticConfig, generate
from vlmchallenge.workflows import TrainResult

SMALL_SYNTHETIC = SyntheticConfig(
    users=["U9001", "U9002", "U9003"], sessions=["S0100"], boxes_per_session=1, width=112, height=64, seed=3
)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("openpack") / "v1.0.0"
    return generate(copy.deepcopy(SMALL_SYNTHETIC), root, workers=2)


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


def pytest_collection_modifyitems(config, items):
    import torch

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
