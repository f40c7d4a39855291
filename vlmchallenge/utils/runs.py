"""Where runs put things, and how to find them again."""

from __future__ import annotations

from pathlib import Path

from pytorch_lightning.utilities import rank_zero_only
from rich.console import Console


def find_latest_checkpoint(log_dir: str | Path, task_name: str, exclude: str | Path | None = None) -> Path:
    """`ckpt_path=last`: the newest `last.ckpt` among earlier runs (and multirun jobs) of this task."""
    root = Path(log_dir) / task_name
    found = list(root.rglob("checkpoints/last.ckpt"))  # runs/<time>/ and multiruns/<time>/<job>/
    if exclude is not None:
        found = [p for p in found if Path(exclude).resolve() not in p.resolve().parents]
    if not found:
        raise FileNotFoundError(f"ckpt_path=last: no earlier checkpoints/last.ckpt under {root}")
    return max(found, key=lambda p: p.stat().st_mtime)


@rank_zero_only  # a multi-process run prints its outputs once
def print_locations(items: dict[str, str | Path | None]) -> None:
    console = Console()
    console.print("[bold]Outputs")
    for name, path in items.items():
        if path:
            console.print(f"  {name:<12} {path}")
