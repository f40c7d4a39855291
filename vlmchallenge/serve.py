"""`python -m vlmchallenge.serve export_dir=...`: the LitServe server (see vlmchallenge/serving/api.py)."""

from __future__ import annotations

import json
from pathlib import Path

import hydra
import litserve as ls
from omegaconf import DictConfig

from vlmchallenge.models.exporter import EXPORT_META, LABEL_MAP
from vlmchallenge.serving.api import ChatClassifierAPI, ClipClassifierAPI, ServeLimits


def model_metadata(export_dir: Path, limits: ServeLimits) -> dict:
    """What /info shows, read from the export's files (workers load the model after the server starts)."""
    meta = json.loads((export_dir / EXPORT_META).read_text())
    return {
        "export_dir": str(export_dir),
        "base_model": meta.get("base_model"),
        "classes": json.loads((export_dir / LABEL_MAP).read_text()),
        "input": {
            "POST /predict": "JSON {frames: [base64 JPEG/PNG, ...]} or {video: base64 file} or {clips: [...]}",
            "POST /v1/chat/completions": "OpenAI chat; the user message's image_url parts are the frames of a clip",
            "frames_used_per_clip": meta["sampler"]["num_frames"],
            "max_frames_per_clip": limits.max_frames_per_clip,
            "max_clips_per_request": limits.max_clips_per_request,
        },
    }


def build_server(cfg: DictConfig) -> ls.LitServer:
    export_dir = Path(cfg.export_dir)
    if not (export_dir / EXPORT_META).exists():
        raise FileNotFoundError(
            f"{export_dir}: not a vlmchallenge export (python -m vlmchallenge.export ...)"
        )
    limits = ServeLimits(**cfg.limits)
    apis = [
        ClipClassifierAPI(
            str(export_dir), cfg.device, limits, cfg.api_key, cfg.max_batch_size, cfg.batch_timeout
        )
    ]
    if cfg.openai:
        apis.append(ChatClassifierAPI(str(export_dir), cfg.device, limits, cfg.api_key))
    accelerator = "cpu" if cfg.device == "cpu" else "auto"
    return ls.LitServer(
        apis,
        accelerator=accelerator,
        devices=1,
        workers_per_device=cfg.workers_per_device,
        timeout=cfg.timeout,
        max_payload_size=int(cfg.max_payload_mb * 1024 * 1024),
        model_metadata=model_metadata(export_dir, limits),
    )


@hydra.main(version_base="1.3", config_path="../conf", config_name="serve")
def main(cfg: DictConfig) -> None:
    server = build_server(cfg)
    server.run(
        host=cfg.host, port=cfg.port, generate_client_file=False, num_api_servers=1, log_level="warning"
    )


if __name__ == "__main__":
    main()
