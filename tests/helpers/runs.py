"""Composing configs and running the real entry-point code paths on the tiny model."""

from __future__ import annotations

from pathlib import Path

from vlmchallenge.data.synthetic import SyntheticConfig

CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")

# The smallest synthetic tree with all three splits: 3 users x 1 box of 112x84 frames, one user per split.
SMALL_DATA_OVERRIDES = [
    "data.synthetic.users=[U9001,U9002,U9003]",
    "data.synthetic.boxes_per_session=1",
    "data.synthetic.width=112",
    "data.synthetic.height=84",
    "data.splits.train=[U9001]",
    "data.splits.val=[U9002]",
    "data.splits.test=[U9003]",
]

# The tree of the `synthetic_root` fixture (tests/conftest.py), here so that a process the tests start can build it
# without importing the training stack that conftest imports.
SMALL_SYNTHETIC = SyntheticConfig(
    users=["U9001", "U9002", "U9003"], sessions=["S0100"], boxes_per_session=1, width=112, height=64, seed=3
)

# Small enough for a few-second run: the small tree, 2-s windows every 2 s.
TINY_TRAIN_OVERRIDES = [
    *SMALL_DATA_OVERRIDES,
    "data.clips.stride_s=2.0",
    "data.sampler.max_pixels=6272",
    "data.shards.workers=1",
    "dataloader.num_workers=0",
    "dataloader.batch_size=4",
    "trainer.accelerator=cpu",  # the same behaviour on a GPU host
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=4",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "~callbacks.rich_progress_bar",
    "logger=csv",
]

# Two long synthetic operations, 2 users x 2 boxes to learn from, trained until the model tells them apart
# (test accuracy 1.0 in about 25 s on 2 cores; 3 epochs are not enough). Its export discriminates between
# clips, which the serving tests need.
TWO_CLASS_OVERRIDES = [  # on top of TINY_TRAIN_OVERRIDES (compose_train applies those first)
    "data.synthetic.users=[U9001,U9002,U9003,U9004]",
    "data.synthetic.boxes_per_session=2",
    "data.splits.train=[U9001,U9002]",
    "data.splits.val=[U9003]",
    "data.splits.test=[U9004]",
    "data.clips.stride_s=1.0",
    "data.clips.operations=[200,300]",
    "dataloader.class_balance=0",
    "trainer.max_epochs=6",
    "trainer.limit_train_batches=null",
    "trainer.limit_val_batches=null",
    "trainer.limit_test_batches=null",
    "optim.lr=5e-3",
    "optim.warmup_steps=5",
]


def data_overrides(overrides: list[str]) -> list[str]:
    """The `data.*` part of a training override list (what an evaluation of that run needs)."""
    return [o for o in overrides if o.startswith("data.")]


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


def build_run_inputs(data_dir: Path, overrides: list[str], scratch: Path) -> None:
    """What a training run with `overrides` reads first, built in this process as the run builds it (under the
    same build locks: a run that starts meanwhile waits for it and keeps it): the synthetic tree, the shards and
    the tiny model. `scratch`: a folder for the composed run's outputs."""
    from hydra.core.global_hydra import GlobalHydra

    from vlmchallenge.assembly import settings_from_config
    from vlmchallenge.data.pipeline import prepare
    from vlmchallenge.models.loader import resolve_pretrained

    try:
        settings = settings_from_config(compose_train(scratch / "run", data_dir, overrides, log_dir=scratch))
    finally:
        GlobalHydra.instance().clear()
    prepare(settings.data, data_dir)
    resolve_pretrained(settings.model)


def compose_evaluate(output_dir: Path, overrides: list[str]):
    """Compose conf/evaluate.yaml with its output folder set (no HydraConfig needed)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    import vlmchallenge.conf_schema  # noqa: F401

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("evaluate", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    return cfg
