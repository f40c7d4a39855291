"""Where runs put things: the outputs table a run prints at its end."""

from __future__ import annotations

from pathlib import Path

from pytorch_lightning.utilities import rank_zero_only
from rich.console import Console


@rank_zero_only  # a multi-process run prints its outputs once
def print_locations(items: dict[str, str | Path | None]) -> None:
    console = Console()
    console.print("[bold]Outputs")
    for name, path in items.items():
        if path:
            console.print(f"  {name:<12} {path}")
