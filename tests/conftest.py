"""Shared fixtures: a small synthetic OpenPack tree made once per test session (no downloads, no fixtures on disk)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from vlmchallenge.data.clip_builder import ClipConfig
from vlmchallenge.data.config import DataConfig
from vlmchallenge.data.frame_sampler import SamplerConfig
from vlmchallenge.data.shard_writer import ShardConfig
from vlmchallenge.data.splits import SplitConfig
from vlmchallenge.data.synthetic import SyntheticConfig, generate

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


# ---------------------------------------------------------------- training fixtures

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")

# Small enough for a few-second run: 3 users x 1 box of 112x84 frames, 2-s windows every 2 s.
TINY_TRAIN_OVERRIDES = [
    "data.synthetic.users=[U9001,U9002,U9003]",
    "data.synthetic.boxes_per_session=1",
    "data.synthetic.width=112",
    "data.synthetic.height=84",
    "data.clips.stride_s=2.0",
    "data.sampler.max_pixels=6272",
    "data.splits.train=[U9001]",
    "data.splits.val=[U9002]",
    "data.splits.test=[U9003]",
    "data.shards.workers=1",
    "loader.num_workers=0",
    "trainer.accelerator=cpu",  # the same behaviour on a GPU host
    "loader.batch_size=4",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=4",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "~callbacks.rich_progress_bar",
    "logger=csv",
]


@pytest.fixture(scope="session")
def shared_data_dir(tmp_path_factory) -> Path:
    """One data dir (synthetic tree, shards, tiny model) shared by every training test."""
    return tmp_path_factory.mktemp("train_data")


def compose_train(out_dir: Path, data_dir: Path, overrides: list[str] = (), log_dir: Path | None = None):
    """Compose conf/train.yaml as `python -m vlmchallenge.train` would, with HydraConfig set."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    import vlmchallenge.conf_schema  # noqa: F401

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                *TINY_TRAIN_OVERRIDES,
                f"paths.data_dir={data_dir}",
                f"paths.log_dir={log_dir or out_dir.parent}",
                *overrides,
            ],
            return_hydra_config=True,
        )
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(out_dir)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    return cfg
