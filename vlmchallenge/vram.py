"""`python -m vlmchallenge.vram experiment=<a preset of conf/experiment> vram.budget_gib=24`: the predicted peak memory,
term by term, and the micro-batch / accumulation plan; nothing is downloaded (presets ship their configs)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

import vlmchallenge.conf_schema  # noqa: F401
from vlmchallenge.utils.cli import accept_plus_experiment
from vlmchallenge.workflows import vram


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> None:
    vram(cfg)


if __name__ == "__main__":
    accept_plus_experiment()
    main()
