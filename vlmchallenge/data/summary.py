"""Human-facing output of data preparation: a progress bar and the run summary table."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from vlmchallenge.data.classes import OPENPACK_OPERATIONS
from vlmchallenge.data.pipeline import PrepareResult, SessionResult
from vlmchallenge.data.splits import SPLIT_NAMES


def session_progress(console: Console) -> tuple[Progress, callable]:
    progress = Progress(
        TextColumn("[bold]prepare"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("sessions"),
        TextColumn("{task.fields[last]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
    task = progress.add_task("sessions", total=None, last="")

    def update(result: SessionResult, total: int) -> None:
        state = result.record.get("resumed", "fresh")
        progress.update(
            task,
            total=total,
            advance=1,
            last=f"{result.split}/{result.key}: {result.record['nsamples']} clips ({state})",
        )

    return progress, update


def summary_dict(result: PrepareResult) -> dict:
    t = result.totals
    return {
        "out_dir": str(result.out_dir),
        "splits": {
            s: {k: v for k, v in result.manifest["splits"][s].items() if k != "sessions"} for s in SPLIT_NAMES
        },
        "unassigned_sessions": result.unassigned,
        "throughput": {
            "seconds": round(t["seconds"], 3),
            "clips_written": t["clips_written"],
            "frames_decoded": t["frames_decoded"],
            "clips_per_s": round(t["clips_written"] / t["seconds"], 1) if t["seconds"] else 0.0,
            "frames_per_s": round(t["frames_decoded"] / t["seconds"], 1) if t["seconds"] else 0.0,
        },
        "sessions": {
            r.key: {"split": r.split, "state": r.record.get("resumed"), "clips": r.record["nsamples"]}
            for r in result.sessions
        },
    }


def print_summary(result: PrepareResult, console: Console) -> None:
    splits = result.manifest["splits"]
    table = Table(title=f"Clips per split and class  ->  {result.out_dir}")
    table.add_column("class")
    for s in SPLIT_NAMES:
        table.add_column(s, justify="right")
    for c in OPENPACK_OPERATIONS:
        table.add_row(f"{c.id} {c.name}", *(str(splits[s]["class_counts"][c.name]) for s in SPLIT_NAMES))
    table.add_row("[bold]total", *(f"[bold]{splits[s]['nsamples']}" for s in SPLIT_NAMES))
    table.add_row("shards", *(str(splits[s]["nshards"]) for s in SPLIT_NAMES))
    table.add_row("users", *(",".join(splits[s]["users"]) for s in SPLIT_NAMES))
    console.print(table)
    for s in SPLIT_NAMES:
        if splits[s]["skipped"]:
            reasons = ", ".join(f"{k}: {v}" for k, v in splits[s]["skipped"].items())
            console.print(f"skipped clips in {s}: {reasons}")
        if not splits[s]["nsamples"]:
            console.print(f"[yellow]warning: split '{s}' is empty")
    if result.unassigned:
        console.print(f"[yellow]sessions of users in no split (not sharded): {', '.join(result.unassigned)}")
    tp = summary_dict(result)["throughput"]
    console.print(
        f"{tp['clips_written']} clips written, {tp['frames_decoded']} frames decoded in {tp['seconds']:.1f} s "
        f"({tp['clips_per_s']} clips/s, {tp['frames_per_s']} frames/s)"
    )


def write_summary(result: PrepareResult, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary_dict(result), indent=1))
