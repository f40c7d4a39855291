"""`python -m vlmchallenge.serve export_dir=...`: the LitServe server (vlmchallenge/serving/server.py)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from vlmchallenge.serving.server import build_server


@hydra.main(version_base="1.3", config_path="../conf", config_name="serve")
def main(cfg: DictConfig) -> None:
    server = build_server(cfg)
    server.run(
        host=cfg.host, port=cfg.port, generate_client_file=False, num_api_servers=1, log_level="warning"
    )


if __name__ == "__main__":
    main()
