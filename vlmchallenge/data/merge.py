"""Merging subset jobs (`data.shard_of=i/n` or `data.sessions=[...]`, each writing its sessions' shards and
done-markers into one folder): check every marker of the plan, then write the split indexes and the manifest.
The raw tree is only listed, never read."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from vlmchallenge.data import locations
from vlmchallenge.data.config import DataConfig
from vlmchallenge.data.manifest import write_index_and_manifest
from vlmchallenge.data.pipeline import check_out_dir, plan_sessions
from vlmchallenge.data.prepare_result import PrepareResult, SessionResult
from vlmchallenge.data.splits import SPLIT_NAMES


def merge_jobs(cfg: DataConfig, data_dir: str | Path) -> PrepareResult:
    """Write the split indexes and the manifest from the done-markers that subset jobs left in the output
    folder. Refuses while a session of the plan has no marker, or a marker was made with other settings, or a
    shard a marker lists is missing or of another size."""
    t0 = time.perf_counter()
    check_merge_settings(cfg)
    out_dir = cfg.resolved_out_dir(data_dir)
    config_fp = cfg.fingerprint()
    if not out_dir.is_dir():
        raise FileNotFoundError(f"{out_dir}: nothing to merge; run the subset jobs (data.shard_of=i/n) first")
    check_out_dir(out_dir, config_fp, overwrite=False)
    tasks, unassigned = plan_sessions(cfg)
    results = read_done_markers(out_dir, tasks, config_fp)
    manifest = write_index_and_manifest(cfg, out_dir, config_fp, results, unassigned)
    seconds = time.perf_counter() - t0
    totals = {"sessions": len(results), "clips_written": 0, "frames_decoded": 0, "seconds": seconds}
    return PrepareResult(
        out_dir, manifest, results, unassigned, seconds, totals, manifest["splits"], merged=True
    )


def check_merge_settings(cfg: DataConfig) -> None:
    cfg.validate()
    if cfg.is_subset:
        raise ValueError("merge=true covers every session: drop data.sessions / data.shard_of")
    if cfg.shards.overwrite:
        raise ValueError("merge=true with data.shards.overwrite=true would delete the jobs' output; drop it")
    if locations.is_remote(cfg.shards.out_dir or ""):
        raise ValueError(
            "merge=true writes into a local data.shards.out_dir: merge there, then upload the folder"
        )


def damaged_files(out_dir: Path, split: str, record: dict) -> list[str]:
    """The shards (by size) and the 1-Hz ground-truth copy (by sha256) a done-marker lists that are not as it
    says."""
    broken = []
    for shard in record.get("shards", []):
        path = out_dir / split / shard["url"]
        if not path.is_file() or path.stat().st_size != shard["filesize"]:
            broken.append(str(path))
    if truth := record.get("ground_truth_1hz"):
        path = out_dir / split / truth["file"]
        if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != truth["sha256"]:
            broken.append(str(path))
    return broken


def read_done_markers(out_dir: Path, tasks: list, config_fp: str) -> list[SessionResult]:
    """Every planned session's done-marker, in split and key order; refused, naming each, while any is missing,
    made with other settings, or lists damaged files."""
    results, unfinished, foreign, broken = [], [], [], []
    for split, ref in tasks:
        marker = out_dir / split / f"{ref.key}.done.json"
        if not marker.exists():
            unfinished.append(ref)
            continue
        try:
            record = json.loads(marker.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{marker}: not a done-marker (invalid JSON: {e})") from e
        if record.get("config_fingerprint") != config_fp:
            foreign.append(f"{marker} ({str(record.get('config_fingerprint'))[:10]})")
        broken += damaged_files(out_dir, split, record)
        results.append(SessionResult(split, ref.key, {**record, "resumed": "complete"}, 0, 0, 0.0))
    refuse_incomplete(out_dir, len(tasks), unfinished, foreign, broken, config_fp)
    return sorted(results, key=lambda r: (SPLIT_NAMES.index(r.split), r.key))


def refuse_incomplete(
    out_dir: Path, planned: int, unfinished: list, foreign: list[str], broken: list[str], config_fp: str
) -> None:
    if unfinished:
        names = ",".join(f"{r.user}/{r.session}" for r in unfinished)
        raise RuntimeError(
            f"merge: {len(unfinished)} of {planned} sessions have no done-marker in {out_dir} (a job has "
            f"not finished, or failed): {', '.join(r.key for r in unfinished)}; run data.sessions=[{names}] "
            "(or the jobs that own them) and merge again"
        )
    if foreign:
        raise ValueError(
            f"merge: done-markers made with other data settings (config fingerprint != {config_fp[:10]}, or none "
            f"from an older version): {', '.join(foreign)}; rerun those sessions with these settings after "
            "deleting their markers, or merge with the settings they were made with"
        )
    if broken:
        raise FileNotFoundError(
            "merge: shards (or 1-Hz ground-truth copies, checked by sha256) listed by done-markers are missing "
            f"or of another size: {', '.join(broken)}; delete "
            "those sessions' .done.json markers and rerun their jobs (finished shards are reused)"
        )
