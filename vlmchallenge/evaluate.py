"""`python -m vlmchallenge.evaluate ckpt=<checkpoint> | export_dir=<export folder>`: report.json/.md,
predictions.csv, figures and the OpenPack submission, in the run's output folder. A checkpoint carries its own
settings; overrides such as `data.root=...` still apply."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

import vlmchallenge.conf_schema  # noqa: F401
from vlmchallenge.workflows import evaluate


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
def main(cfg: DictConfig) -> float:
    return evaluate(cfg)["openpack_official"]["f1_macro"]


if __name__ == "__main__":
    main()
