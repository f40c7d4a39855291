"""A prepared shard folder's `manifest.json`, read as a typed record: what training and evaluation rely on.

`prepare` writes it last (`pipeline._write_index_and_manifest`), so a folder with a manifest is complete. Readers
take the parts they need through `ShardManifest.read`, a folder or a URL (data/locations.py), and never index the
JSON by key: a manifest from an older version that lacks a field is refused here, naming the file and the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vlmchallenge.data import locations

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
