"""The shard folder's manifest as a typed record: what a reader needs, or an error naming the file and the field."""

from __future__ import annotations

import json

import pytest

from vlmchallenge.data.manifest import MANIFEST_NAME, ShardManifest

SPLIT = {
    "users": ["U0201"],
    "sessions": ["U0201-S0100"],
    "nsamples": 3,
    "nshards": 1,
    "class_counts": {"Picking": 3},
    "skipped": {},
    "ground_truth_1hz": {"U0201-S0100": {"file": "train/U0201-S0100.operations-1hz.csv", "sha256": "ab"}},
    "index": "train/shardindex.json",
}


def write(tmp_path, **changes) -> None:
    manifest = {
        "manifest_version": 2,
        "config_fingerprint": "f" * 64,
        "splits": {"train": SPLIT},
        "unassigned_sessions": [],
        **changes,
    }
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(manifest))


def test_a_manifest_reads_as_typed_splits(tmp_path):
    write(tmp_path, unassigned_sessions=["U0999-S0100"])
    manifest = ShardManifest.read(tmp_path)
    train = manifest.splits["train"]
    assert (train.nsamples, train.class_counts, train.sessions) == (3, {"Picking": 3}, ["U0201-S0100"])
    assert manifest.unassigned_sessions == ["U0999-S0100"] and manifest.version == 2


def test_a_manifest_of_an_older_version_names_the_missing_field(tmp_path):
    old = {
        k: v for k, v in SPLIT.items() if k != "ground_truth_1hz"
    }  # manifest_version 1 had no copy of the truth
    write(tmp_path, manifest_version=1, splits={"train": old})
    with pytest.raises(
        ValueError, match=r"manifest.json: no field 'ground_truth_1hz' \(manifest_version 1\)"
    ):
        ShardManifest.read(tmp_path)
