"""`python -m vlmchallenge.export ckpt=<checkpoint> [out_dir=...]`: one export folder (models/exporter.py).
The checkpoint alone is enough: it carries its model, data and prompt settings."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

import vlmchallenge.conf_schema  # noqa: F401
from vlmchallenge.utils.runs import print_locations
from vlmchallenge.workflows import command_line_overrides, export


@hydra.main(version_base="1.3", config_path="../conf", config_name="export")
def main(cfg: DictConfig) -> None:
    out = export(cfg.ckpt, cfg.out_dir, command_line_overrides())
    print_locations({"export": out})


if __name__ == "__main__":
    main()
