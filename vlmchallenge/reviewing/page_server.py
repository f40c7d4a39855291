"""Serving the review page from the command line: on loopback by default, beyond it only with an API key."""

from __future__ import annotations

import ipaddress
import socket

from vlmchallenge.reviewing.footage import Footage
from vlmchallenge.reviewing.review_folder import ReviewFolder


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
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:  # bound before the URL is printed: port=0 picks a free one
        sock = socket.create_server((host, port), family=family)
    except OSError as e:
        raise ValueError(
            f"host={host} port={port}: cannot listen there ({e}); pass port=0 for any free port"
        ) from None
    bound = sock.getsockname()[1]
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    print(f"review {folder.path}: http://{shown}:{bound}/{'?key=<api_key>' if api_key else ''}", flush=True)
    config = uvicorn.Config(review_app(folder, footage, api_key), log_level="warning")
    uvicorn.Server(config).run(sockets=[sock])
