from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
from pathlib import Path

import pytest
import webdataset as wds

from vlmchallenge.data.annotation_parser import parse_operations_csv
from vlmchallenge.data.classes import ID_TO_CLASS, OPENPACK_OPERATIONS
from vlmchallenge.data.pipeline import prepare
from vlmchallenge.data.shard_writer import ShardConfig, write_session_shards
from vlmchallenge.data.splits import SplitConfig


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_shards_read_back_with_plain_webdataset(data_cfg, data_dir):
    result = prepare(data_cfg, data_dir)
    out = result.out_dir
    for split in ("train", "val", "test"):
        index = json.loads((out / split / "shardindex.json").read_text())
        assert index["__kind__"] == "wids-shard-index-v1"
        urls = [str(out / split / s["url"]) for s in index["shardlist"]]
        for s in index["shardlist"]:
            path = out / split / s["url"]
            assert s["filesize"] == path.stat().st_size
            assert s["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        samples = list(wds.WebDataset(urls, shardshuffle=False).decode("pil"))
        assert len(samples) == sum(s["nsamples"] for s in index["shardlist"]) > 0
        assert len(samples) == result.manifest["splits"][split]["nsamples"]
        for sample in samples[:20]:
            key = sample["__key__"]
            assert key.isdigit() and len(key) == 14
            assert {"000.jpg", "001.jpg", "002.jpg", "003.jpg", "json", "cls"} <= set(sample)
            meta = sample["json"]
            assert sample["cls"] == meta["label_index"] == OPENPACK_OPERATIONS[meta["label_index"]].index
            assert sample["000.jpg"].size == (meta["width"], meta["height"]) == (112, 56)
            assert meta["start_ms"] <= meta["frame_ts_ms"][0] <= meta["frame_ts_ms"][-1] < meta["end_ms"]
        assert len({s["__key__"] for s in samples}) == len(samples)


def test_manifest_and_index_sum_up(data_cfg, data_dir):
    result = prepare(data_cfg, data_dir)
    m = json.loads((result.out_dir / "manifest.json").read_text())
    assert m["sampler"]["num_frames"] == 4 and m["config_fingerprint"] == data_cfg.fingerprint()
    for split in ("train", "val", "test"):
        s = m["splits"][split]
        assert sum(s["class_counts"].values()) == s["nsamples"]
        assert s["class_counts"]["Null"] == 0  # keep_null is off
    assert m["splits"]["train"]["users"] == ["U9001"]
    assert m["splits"]["train"]["skipped"]["null_label"] > 0


def test_rerun_is_byte_identical_and_skips_finished_sessions(data_cfg, tmp_path, data_dir):
    first = prepare(data_cfg, data_dir)
    before = tree_bytes(first.out_dir)
    again = prepare(data_cfg, data_dir)
    assert all(r.record["resumed"] == "complete" for r in again.sessions)
    assert tree_bytes(first.out_dir) == before
    # a fresh directory with more workers gives the same bytes
    other = dataclasses.replace(
        data_cfg, shards=dataclasses.replace(data_cfg.shards, out_dir=str(tmp_path / "other"), workers=2)
    )
    assert tree_bytes(prepare(other, data_dir).out_dir) == {
        k: v for k, v in before.items() if not k.endswith("manifest.json")
    } | {"manifest.json": before["manifest.json"]}


def test_crash_after_finished_shards_resumes_to_same_bytes(data_cfg, data_dir, caplog):
    result = prepare(data_cfg, data_dir)
    reference = tree_bytes(result.out_dir)
    train = result.out_dir / "train"
    shards = sorted(train.glob("*.tar"))
    assert len(shards) >= 3
    # a kill while writing shard 2 of U9001-S0100 (pid 4242): marker gone, shard 2 half-written under its temp
    # name, later shards gone; and half-written temp files of its marker, its ground-truth copy and the manifest
    (train / "U9001-S0100.done.json").unlink()
    shards[2].rename(shards[2].with_name(shards[2].name + ".tmp-4242"))
    shards[2].with_name(shards[2].name + ".tmp-4242").write_bytes(b"partial")
    for s in shards[3:]:
        s.unlink()
    for half in ("U9001-S0100.done.json", "U9001-S0100.operations-1hz.csv", "shardindex.json"):
        (train / f"{half}.tmp-4242").write_bytes(b"{")
    (result.out_dir / "manifest.json.tmp-4242").write_bytes(b"{")
    leftovers = [*train.glob("*.tmp-4242"), result.out_dir / "manifest.json.tmp-4242"]
    with caplog.at_level(logging.INFO, logger="vlmchallenge.utils.atomic"):
        resumed = prepare(data_cfg, data_dir)
    session = next(r for r in resumed.sessions if r.key == "U9001-S0100")
    assert session.record["resumed"] == "partial"
    assert tree_bytes(result.out_dir) == reference  # the same bytes, and no temp file left
    deleted = sorted(Path(r.args[0]).name for r in caplog.records if r.name == "vlmchallenge.utils.atomic")
    assert deleted == sorted(p.name for p in leftovers), "each deleted leftover is named in the log"


def test_interrupted_write_mid_shard_resumes_to_same_bytes(tmp_path):
    """Drive the writer itself: the first run dies in the middle of shard 1 (as a kill would)."""
    samples = [{"__key__": f"{i:06d}", "txt": f"sample {i}".encode() * (i + 1)} for i in range(23)]
    cfg = ShardConfig(maxcount=8)

    def run(out: Path, crash_at: int | None = None):
        def make(start: int):
            for i in range(start, len(samples)):
                if i == crash_at:
                    raise KeyboardInterrupt("simulated crash")
                yield samples[i]

        return write_session_shards(out, "U0001-S0100", "fp", len(samples), make, cfg)

    clean = tmp_path / "clean"
    run(clean)
    crashed = tmp_path / "crashed"
    with pytest.raises(KeyboardInterrupt):
        run(crashed, crash_at=12)
    assert sorted(p.name for p in crashed.iterdir()) == ["U0001-S0100-000000.tar"]  # no half shard published
    record = run(crashed)
    assert record["resumed"] == "partial"
    assert tree_bytes(crashed) == tree_bytes(clean)
    assert [s["nsamples"] for s in record["shards"]] == [8, 8, 7]


def test_changed_settings_never_mix_with_old_shards(data_cfg, data_dir):
    prepare(data_cfg, data_dir)
    changed = dataclasses.replace(data_cfg, sampler=dataclasses.replace(data_cfg.sampler, num_frames=2))
    with pytest.raises(ValueError, match="different data settings.*overwrite=true"):
        prepare(changed, data_dir)
    changed.shards.overwrite = True
    result = prepare(changed, data_dir)
    assert result.manifest["sampler"]["num_frames"] == 2


def test_default_out_dir_is_keyed_by_settings(data_cfg, tmp_path):
    data_cfg.shards.out_dir = None
    a = data_cfg.resolved_out_dir(tmp_path)
    data_cfg.sampler.num_frames = 8
    assert data_cfg.resolved_out_dir(tmp_path) != a
    assert a.parent == tmp_path / "shards"


def clip_meta(split_dir: Path, prefix: str) -> dict[str, dict]:
    """key -> json metadata of one session's samples, read back with plain webdataset."""
    tars = sorted(str(p) for p in split_dir.glob(f"{prefix}-*.tar"))
    return {s["__key__"]: s["json"] for s in wds.WebDataset(tars, shardshuffle=False).decode()}


def centre_ms(meta: dict) -> int:
    return (meta["start_ms"] + meta["end_ms"]) // 2  # what labels a window clip (label_rule=center)


def test_edited_session_is_rebuilt_and_the_others_reused(data_cfg, synthetic_root, tmp_path, data_dir):
    """docs/architecture.md: the per-session fingerprint covers the annotation file's bytes, so an edited
    session is rebuilt on the next prepare (no overwrite needed) while the other sessions are reused."""
    root = tmp_path / "openpack"
    shutil.copytree(synthetic_root, root)  # never edit the shared tree
    # U9001 and U9002 share the train split, so a rebuild that wiped the whole split would show
    splits = SplitConfig(train=["U9001", "U9002"], val=["U9003"], test=[], same_person=[])
    cfg = dataclasses.replace(data_cfg, root=str(root), splits=splits)
    first = prepare(cfg, data_dir)
    out, before = first.out_dir, tree_bytes(first.out_dir)
    old = clip_meta(out / "train", "U9002-S0100")

    # relabel the segment under the centre of one of U9002's clips: change its id and name on that CSV line
    csv_path = root / "U9002/annotation/openpack-operations/S0100.csv"
    seg = parse_operations_csv(csv_path).segment_at(centre_ms(sorted(old.values(), key=centre_ms)[5]))
    new_id = 100 if seg.op_id != 100 else 200
    lines = csv_path.read_text().split("\n")
    fields = lines[seg.line - 1].split(",")
    assert (fields[4], fields[5]) == (str(seg.op_id), ID_TO_CLASS[seg.op_id].name)
    fields[4], fields[5] = str(new_id), ID_TO_CLASS[new_id].name
    lines[seg.line - 1] = ",".join(fields)
    csv_path.write_text("\n".join(lines))

    second = prepare(cfg, data_dir)
    status = {r.key: r.record["resumed"] for r in second.sessions}
    assert status == {"U9001-S0100": "complete", "U9002-S0100": "fresh", "U9003-S0100": "complete"}
    after = tree_bytes(out)
    # the other sessions' shards and done-markers are untouched
    others = [n for n in before if n.split("/")[-1].startswith(("U9001-", "U9003-"))]
    assert len(others) >= 4 and [n for n in others if after.get(n) != before[n]] == []
    # the rebuilt shards carry the edit: exactly the clips centred in the segment changed label
    new = clip_meta(out / "train", "U9002-S0100")
    old_labels = {k: m["label_id"] for k, m in old.items()}
    in_segment = {k for k, m in old.items() if seg.start_ms <= centre_ms(m) < seg.end_ms}
    assert in_segment
    assert {k: m["label_id"] for k, m in new.items()} == {
        k: new_id if k in in_segment else y for k, y in old_labels.items()
    }
