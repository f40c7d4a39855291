"""A prepared shard folder's `manifest.json`, read as a typed record: what training and evaluation rely on.

`prepare` and the merge of subset jobs write it last (`write_index_and_manifest`, below), so a folder with a manifest is complete. Readers
take the parts they need through `ShardManifest.read`, a folder or a URL (data/locations.py), and never index the
JSON by key: a manifest from an older version that lacks a field is refused here, naming the file and the field.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from vlmchallenge import __version__
from vlmchallenge.data import locations
from vlmchallenge.data.classes import OPENPACK_OPERATIONS
from vlmchallenge.data.config import MANIFEST_VERSION, DataConfig
from vlmchallenge.data.prepare_result import SessionResult
from vlmchallenge.data.shard_writer import write_split_index
from vlmchallenge.data.splits import SPLIT_NAMES
from vlmchallenge.utils.atomic import remove_temp_files, write_text_atomically

MANIFEST_NAME = "manifest.json"


@dataclass(frozen=True)
class SplitStats:
    users: list[str]
    sessions: list[str]  # session keys, e.g. "U0209-S0500"
    nsamples: int
    class_counts: dict[str, int]  # class name -> clips
    skipped: dict[str, int]  # why clips were not made -> how many
    # session key -> {file (relative to the manifest's folder), sha256}; None: the raw tree had no 1-Hz file
    ground_truth_1hz: dict[str, dict | None]


@dataclass(frozen=True)
class ShardManifest:
    location: str  # where it was read from, for messages
    version: int
    config_fingerprint: str
    splits: dict[str, SplitStats]
    unassigned_sessions: list[str]  # sessions whose user is in no split

    @classmethod
    def read(cls, shard_dir: Path | str) -> ShardManifest:
        location = locations.join(shard_dir, MANIFEST_NAME)
        return cls.from_json(locations.read_json(location, "manifest"), str(location))

    @classmethod
    def from_json(cls, raw: dict, location: str) -> ShardManifest:
        try:
            splits = {
                name: SplitStats(
                    s["users"],
                    s["sessions"],
                    s["nsamples"],
                    s["class_counts"],
                    s["skipped"],
                    s["ground_truth_1hz"],
                )
                for name, s in raw["splits"].items()
            }
            return cls(
                location,
                raw["manifest_version"],
                raw["config_fingerprint"],
                splits,
                raw["unassigned_sessions"],
            )
        except KeyError as e:
            raise ValueError(
                f"{location}: no field {e} (manifest_version {raw.get('manifest_version')}); prepare the shards "
                "again with this version"
            ) from None


def _from_manifest(split: str, entry: dict | None) -> dict | None:
    """A done-marker's ground-truth entry with its file relative to the manifest's folder instead."""
    return None if entry is None else {**entry, "file": f"{split}/{entry['file']}"}


def split_stats(results: list[SessionResult]) -> dict:
    """Per split: users, sessions, sample and shard counts, class counts and skipped clips of these sessions."""
    splits = {}
    for split in SPLIT_NAMES:
        recs = [r.record for r in results if r.split == split]
        counts: Counter = Counter()
        skipped: Counter = Counter()
        for rec in recs:
            counts.update(rec["class_counts"])
            skipped.update(rec["skipped"])
        splits[split] = {
            "users": sorted({rec["user"] for rec in recs}),
            "sessions": [rec["prefix"] for rec in recs],
            "nsamples": sum(e["nsamples"] for rec in recs for e in rec["shards"]),
            "nshards": sum(len(rec["shards"]) for rec in recs),
            "class_counts": {c.name: counts.get(c.name, 0) for c in OPENPACK_OPERATIONS},
            "skipped": dict(sorted(skipped.items())),
            # session -> its 1-Hz ground truth, relative to the manifest's folder (null: the raw tree had none)
            "ground_truth_1hz": {
                rec["prefix"]: _from_manifest(split, rec["ground_truth_1hz"]) for rec in recs
            },
        }
    return splits


def write_index_and_manifest(
    cfg: DataConfig, out_dir: Path, config_fp: str, results: list[SessionResult], unassigned: list[str]
) -> dict:
    splits = split_stats(results)
    for split in SPLIT_NAMES:
        write_split_index(out_dir / split, split, [r.record for r in results if r.split == split])
        splits[split]["index"] = f"{split}/shardindex.json"
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "vlmchallenge_version": __version__,
        "config_fingerprint": config_fp,
        "source": {"name": cfg.name, "root": str(Path(cfg.root).resolve()), "type": cfg.source},
        "classes": [{"index": c.index, "id": c.id, "name": c.name} for c in OPENPACK_OPERATIONS],
        "clips": asdict(cfg.clips),
        "sampler": asdict(cfg.sampler),
        "shards": {"maxcount": cfg.shards.maxcount, "maxsize": cfg.shards.maxsize},
        "splits": splits,
        "unassigned_sessions": unassigned,
    }
    remove_temp_files(out_dir, MANIFEST_NAME)  # a killed run's; one process writes the manifest
    write_text_atomically(out_dir / MANIFEST_NAME, json.dumps(manifest, indent=1, sort_keys=True))
    return manifest
