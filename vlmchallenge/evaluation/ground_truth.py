"""Where the evaluator gets each session's 1-Hz ground truth (the official score's truth).

From a shard folder, local or at a URL: `prepare` copied every session's `openpack-operations-1hz` CSV there,
bytes unchanged, and listed it (file, sha256) in the manifest per split, so an evaluation needs only the shards.
From the raw OpenPack tree when no shard folder is named (hand-made trees, callers outside a prepared run).
There is no fallback from one to the other: every folder this version can read was made with the copy, since
the manifest version is in the settings fingerprint (docs/architecture.md, "Ground truth in the shard folder").
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from vlmchallenge.data import locations
from vlmchallenge.data.annotation_parser import SecondLabels, parse_operations_1hz_csv
from vlmchallenge.data.manifest import ShardManifest
from vlmchallenge.data.openpack_layout import discover_sessions


def read_shard_ground_truth(shard_dir: Path | str) -> dict[str, dict | None]:
    """Session key -> {file (relative to the manifest's folder), sha256}, or None for a session prepared without a
    1-Hz file, over every split of the manifest at `shard_dir` (a folder or URL; a session is in one split)."""
    entries: dict[str, dict | None] = {}
    for stats in ShardManifest.read(shard_dir).splits.values():
        entries.update(stats.ground_truth_1hz)
    return entries


def load_ground_truth_1hz(
    shard_dir: Path | str, key: str, entries: dict[str, dict | None] | None = None
) -> SecondLabels:
    """Session `key`'s (e.g. "U0209-S0500") 1-Hz ground truth from the shard folder or URL `shard_dir`, checked
    against the manifest's sha256. Pass `entries` (`read_shard_ground_truth`) to read the manifest once."""
    entries = read_shard_ground_truth(shard_dir) if entries is None else entries
    if key not in entries:
        raise ValueError(
            f"{key}: not a session of the shards at {shard_dir} (they hold {', '.join(sorted(entries))})"
        )
    entry = entries[key]
    if entry is None:
        raise FileNotFoundError(
            f"{key}: no 1-Hz ground truth in the shards at {shard_dir}: its raw tree had no "
            "annotation/openpack-operations-1hz file when it was prepared, so it cannot be scored"
        )
    location = locations.join(shard_dir, entry["file"])
    raw = locations.read_bytes(location, f"file: the manifest lists it as {key}'s 1-Hz ground truth")
    digest = hashlib.sha256(raw).hexdigest()
    if digest != entry["sha256"]:
        raise ValueError(
            f"{location}: sha256 {digest[:12]} differs from the manifest's {entry['sha256'][:12]} (a partial "
            "or altered copy); copy the prepared folder again"
        )
    return parse_operations_1hz_csv(location, raw)


def ground_truth_source(root: str | Path, shard_dir: Path | str | None) -> Callable[[str], SecondLabels]:
    """session key -> its 1-Hz ground truth: from the shards at `shard_dir`, or from the raw tree at `root`
    when no shard folder is named."""
    if shard_dir is not None:
        entries = read_shard_ground_truth(shard_dir)
        return lambda key: load_ground_truth_1hz(shard_dir, key, entries)
    refs = {r.key: r for r in discover_sessions(root)}

    def from_raw_tree(key: str) -> SecondLabels:
        ref = refs.get(key)
        if ref is None or ref.operations_1hz_csv is None:
            raise FileNotFoundError(f"{key}: no annotation/openpack-operations-1hz file under {root}")
        return parse_operations_1hz_csv(ref.operations_1hz_csv)

    return from_raw_tree
