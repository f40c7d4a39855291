"""Where runs put things: the outputs table a run prints at its end."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console


def print_locations(items: dict[str, str | Path | None]) -> None:
    """The outputs table. Plain, so that commands without Lightning can print it; the training flows print it
    from rank 0 only (`workflows.print_outputs`)."""
    console = Console()
    console.print("[bold]Outputs")
    for name, path in items.items():
        if path:
            console.print(f"  {name:<12} {path}")
