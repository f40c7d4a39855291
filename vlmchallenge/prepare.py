"""`python -m vlmchallenge.prepare`: raw OpenPack (or the synthetic default) -> WebDataset shards per split."""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf
from rich.console import Console

import vlmchallenge.conf_schema  # noqa: F401  (registers the structured-config schemas)
from vlmchallenge.data.config import DataConfig
from vlmchallenge.data.pipeline import PrepareResult, prepare
from vlmchallenge.data.summary import print_summary, session_progress, write_summary


def run_prepare(
    data: DataConfig, data_dir: str | Path, output_dir: str | Path | None = None
) -> PrepareResult:
    console = Console()
    progress, update = session_progress(console)
    with progress:
        result = prepare(data, data_dir, progress=update)
    print_summary(result, console)
    if output_dir is not None:
        write_summary(result, Path(output_dir) / "prepare_summary.json")
    return result


@hydra.main(version_base="1.3", config_path="../conf", config_name="prepare")
def main(cfg: DictConfig) -> None:
    data: DataConfig = OmegaConf.to_object(cfg.data)
    run_prepare(data, cfg.paths.data_dir, cfg.paths.output_dir)


if __name__ == "__main__":
    main()
