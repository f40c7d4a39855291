"""Human-facing output of data preparation: a progress bar and the run summary table."""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from vlmchallenge.data.classes import OPENPACK_OPERATIONS
from vlmchallenge.data.prepare_result import PrepareResult, SessionResult
from vlmchallenge.data.splits import SPLIT_NAMES
from vlmchallenge.data.verify import VerifyResult
from vlmchallenge.utils.atomic import write_text_atomically

SUBSET_KEYS = {"data.sessions", "data.shard_of"}


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


def merge_command(overrides: Sequence[str]) -> str:
    """The command that merges the jobs of a subset run: its overrides minus the subset ones, plus merge=true."""
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    kept = [o.input_line for o in parsed if o.key_or_group not in SUBSET_KEYS and o.key_or_group != "merge"]
    return shlex.join(["python", "-m", "vlmchallenge.prepare", *kept, "merge=true"])


def summary_dict(result: PrepareResult, merge_cmd: str | None = None) -> dict:
    t = result.totals
    return {
        "out_dir": str(result.out_dir),
        "mode": "merge" if result.merged else "subset" if result.subset else "all",
        "subset": result.subset,
        "indexes_written": result.manifest is not None,
        "merge_command": merge_cmd,
        "splits": {s: {k: v for k, v in result.splits[s].items() if k != "sessions"} for s in SPLIT_NAMES},
        "unassigned_sessions": result.unassigned,
        "throughput": {
            "seconds": round(t["seconds"], 3),
            "clips_written": t["clips_written"],
            "frames_decoded": t["frames_decoded"],
            "clips_per_s": round(t["clips_written"] / t["seconds"], 1) if t["seconds"] else 0.0,
            "frames_per_s": round(t["frames_decoded"] / t["seconds"], 1) if t["seconds"] else 0.0,
        },
        "sessions": {r.key: _session_entry(r) for r in result.sessions},
    }


def _session_entry(r: SessionResult) -> dict:
    entry = {"split": r.split, "state": r.record.get("resumed"), "clips": r.record["nsamples"]}
    for key in ("redo_reason", "zero_clip_reason"):  # why it was redone; why it gave nothing
        if r.record.get(key):
            entry[key] = r.record[key]
    return entry


def session_warnings(result: PrepareResult) -> list[str]:
    """One line per session that was redone (its marker listed a damaged shard) or that yielded 0 clips."""
    lines = []
    for r in result.sessions:
        if reason := r.record.get("redo_reason"):
            lines.append(f"redone {r.split}/{r.key}: its done-marker listed damaged shards ({reason})")
        if reason := r.record.get("zero_clip_reason"):
            lines.append(f"warning: {r.split}/{r.key} yielded 0 clips: {reason}")
    return lines


def print_summary(result: PrepareResult, console: Console, merge_cmd: str | None = None) -> None:
    splits = result.splits
    scope = f" (this job: {result.subset})" if result.subset else ""
    table = Table(title=f"Clips per split and class{scope}  ->  {result.out_dir}")
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
        if not splits[s]["nsamples"] and not result.subset:
            console.print(f"[yellow]warning: split '{s}' is empty")
    for line in session_warnings(result):
        console.print(line, style="yellow", markup=False, soft_wrap=True)
    if result.unassigned:
        console.print(f"[yellow]sessions of users in no split (not sharded): {', '.join(result.unassigned)}")
    if result.merged:
        console.print(
            f"merged the done-markers of {len(result.sessions)} sessions into the split indexes and manifest"
        )
        return
    tp = summary_dict(result)["throughput"]
    console.print(
        f"{tp['clips_written']} clips written, {tp['frames_decoded']} frames decoded in {tp['seconds']:.1f} s "
        f"({tp['clips_per_s']} clips/s, {tp['frames_per_s']} frames/s)"
    )
    if result.subset:
        console.print(
            "[bold]subset job: split indexes and manifest NOT written[/] (concurrent jobs would race on them). "
            "When every job has finished, merge:"
        )
        console.print(
            merge_cmd or "python -m vlmchallenge.prepare <the same data overrides> merge=true",
            markup=False,
            soft_wrap=True,
        )


def write_summary(result: PrepareResult, path: Path, merge_cmd: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(path, json.dumps(summary_dict(result, merge_cmd), indent=1))


def print_verify(result: VerifyResult, console: Console) -> None:
    """The verdict of `verify_shards`: each bad shard with what is wrong, then the remedy."""
    for p in result.problems:
        console.print(f"BAD {p.path}: {p.problem}", style="red", markup=False, soft_wrap=True)
    if result.ok:
        console.print(
            f"OK: {result.checked} shards, {result.samples} samples in {result.out_dir} match their index"
        )
        return
    console.print(
        f"{len(result.problems)} bad of {result.checked} shards in {result.out_dir}. Remedy: rerun "
        "`python -m vlmchallenge.prepare` with the same settings after deleting the bad shards (it redoes the "
        "sessions whose shards are missing)",
        markup=False,
        soft_wrap=True,
    )
