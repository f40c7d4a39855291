"""`python -m vlmchallenge.serve export_dir=...`: the LitServe server (vlmchallenge/serving/server.py)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from vlmchallenge.conf_schema import ServeCommand, as_dataclass
from vlmchallenge.serving.server import run_server


@hydra.main(version_base="1.3", config_path="../conf", config_name="serve")
def main(cfg: DictConfig) -> None:
    run_server(as_dataclass(ServeCommand, cfg))


if __name__ == "__main__":
    main()
