"""What `python -m vlmchallenge.review` does: find (or make) the annotation, then serve the page or export the
session. Imports stay light: the model stack loads only when a recording must be annotated first."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

from omegaconf import DictConfig

from vlmchallenge.reviewing.footage import Footage
from vlmchallenge.reviewing.review_folder import ReviewFolder


def annotation_folder(cfg: DictConfig) -> Path:
    """`annotation=` as given, or the folder `annotate` writes for `export_dir` + `input` (run here first)."""
    if cfg.annotation is not None:
        return Path(cfg.annotation)
    if cfg.export_dir is None or cfg.input is None:
        raise ValueError(
            "review: give annotation=<a folder annotate wrote>, or export_dir=<export> input=<recording> to "
            "annotate first"
        )
    from vlmchallenge.workflows import annotate

    annotate(cfg)
    return Path(cfg.out_dir or cfg.paths.output_dir)


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
    except (OSError, ValueError):
        return False


def serve_review(folder: ReviewFolder, footage: Footage, host: str, port: int, api_key: str | None) -> None:
    import uvicorn

    from vlmchallenge.reviewing.app import review_app

    if not is_loopback(host) and not api_key:
        raise ValueError(
            f"host={host}: the review page saves files, so beyond localhost it needs api_key=<key> (or "
            "VLMCHALLENGE_API_KEY); or keep host=127.0.0.1"
        )
    sock = socket.create_server((host, port))  # bound before the URL is printed: port=0 picks a free one
    bound = sock.getsockname()[1]
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    print(f"review {folder.path}: http://{shown}:{bound}/{'?key=<api_key>' if api_key else ''}", flush=True)
    config = uvicorn.Config(review_app(folder, footage, api_key), log_level="warning")
    uvicorn.Server(config).run(sockets=[sock])


def review(cfg: DictConfig) -> None:
    folder = ReviewFolder(annotation_folder(cfg))
    footage = Footage(folder.meta["recording"])
    try:
        if cfg.export_session:
            from vlmchallenge.reviewing.session_export import export_session

            done = export_session(folder, footage, cfg.export_session)
            print(
                f"session {done['user']}/{done['session']} under {done['root']}: {done['frames']} frames, "
                f"{done['segments']} segments ({'reviewed' if done['reviewed'] else 'the model’s, not reviewed'}); "
                f"train on it: python -m vlmchallenge.prepare data=openpack data.root={done['root']}",
                flush=True,
            )
            return
        serve_review(folder, footage, cfg.host, cfg.port, cfg.api_key)
    finally:
        footage.close()
