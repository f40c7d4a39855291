"""`python -m vlmchallenge.prepare`: raw OpenPack (or the synthetic default) -> WebDataset shards per split."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

import vlmchallenge.conf_schema  # noqa: F401  (registers the structured-config schemas)
from vlmchallenge.assembly import as_dataclass
from vlmchallenge.data.config import DataConfig
from vlmchallenge.workflows import run_prepare


@hydra.main(version_base="1.3", config_path="../conf", config_name="prepare")
def main(cfg: DictConfig) -> None:
    run_prepare(as_dataclass(DataConfig, cfg.data), cfg.paths.data_dir, cfg.paths.output_dir)


if __name__ == "__main__":
    main()
