"""Deterministic, atomic, resumable WebDataset shards for one session, and the per-split wids-style index.

Layout: `<out>/<split>/<USER>-<SESSION>-000000.tar` (+ `<USER>-<SESSION>.done.json` when the session is complete),
`<out>/<split>/shardindex.json`. Per session so that workers never share a shard and a rerun can skip whole
sessions. Each shard is written as `*.tar.tmp-<pid>` and published (fsynced, renamed: `utils/atomic.py`) by
ShardWriter's `post` hook once closed, so a crash never leaves a half shard under a final name. On resume, what a
killed writer left under a temp name is deleted, finished shards are counted and their samples skipped
(without decoding); since sample order, encoding, tar headers (fixed mtime/owner) and shard boundaries
(maxcount/maxsize over the same bytes) are all deterministic, the result is byte-identical to an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import webdataset as wds

from vlmchallenge.utils.atomic import (
    fsync_dir,
    publish,
    remove_temp_files,
    target_of,
    temp_path,
    write_text_atomically,
)

INDEX_NAME = "shardindex.json"
TAR_MTIME = 0  # fixed so rewriting the same samples gives the same bytes


@dataclass
class ShardConfig:
    out_dir: str | None = None  # null: <paths.data_dir>/shards/<data.name>-<config fingerprint>
    maxcount: int = 200
    maxsize: int = 256_000_000  # bytes of payload per shard
    workers: int = 2
    overwrite: bool = False

    def validate(self) -> None:
        if self.maxcount < 1 or self.maxsize < 1 or self.workers < 1:
            raise ValueError("shards.maxcount, shards.maxsize and shards.workers must be >= 1")


def sample_key(user: str, session: str, clip_no: int) -> str:
    """All-digit key (WebDataset splits names at the first dot): U0209/S0500/clip 17 -> 02090500000017."""
    return f"{user[1:]}{session[1:]}{clip_no:06d}"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def count_tar_samples(path: Path) -> int:
    with tarfile.open(path) as tar:
        return len({m.name.split("/")[-1].split(".", 1)[0] for m in tar.getmembers() if m.isfile()})


def shard_entry(path: Path, nsamples: int) -> dict:
    return {
        "url": path.name,
        "nsamples": nsamples,
        "filesize": path.stat().st_size,
        "sha256": file_sha256(path),
    }


def write_session_shards(
    split_dir: Path,
    prefix: str,
    fingerprint: str,
    total_samples: int,
    make_samples: Callable[[int], Iterator[dict]],
    cfg: ShardConfig,
    extra: dict | None = None,
) -> dict:
    """Write (or resume, or skip) one session's shards; returns its done-marker record.

    `make_samples(n)` yields the session's samples from position n on, in their fixed order.
    """
    split_dir.mkdir(parents=True, exist_ok=True)
    marker = split_dir / f"{prefix}.done.json"
    complete, redo_reason = _reusable_record(split_dir, prefix, fingerprint, marker)
    if complete is not None:
        return complete
    finished = _finished_shards(split_dir, prefix)
    resumed_from = sum(e["nsamples"] for e in finished)
    entries = finished + _write_shards(split_dir, prefix, len(finished), make_samples(resumed_from), cfg)
    written = sum(e["nsamples"] for e in entries)
    if written != total_samples:
        raise RuntimeError(f"{split_dir}/{prefix}: wrote {written} samples, expected {total_samples}")
    record = {
        "prefix": prefix,
        "fingerprint": fingerprint,
        "nsamples": written,
        "shards": entries,
        **(extra or {}),
    }
    write_text_atomically(marker, json.dumps(record, indent=1, sort_keys=True))
    record["resumed"] = "redone" if redo_reason else "partial" if resumed_from else "fresh"
    record["written_now"] = written - resumed_from
    if redo_reason:
        record["redo_reason"] = redo_reason
    return record


def _reusable_record(
    split_dir: Path, prefix: str, fingerprint: str, marker: Path
) -> tuple[dict | None, str | None]:
    """(the done-marker's record, when the session is complete with these settings, else None; why a
    complete-looking session must be redone, else None). Clears what cannot be resumed from: every shard when
    the settings changed, the shards from the first damaged one on, and any half-written shard."""
    redo_reason = None
    if marker.exists():
        record = json.loads(marker.read_text())
        if record.get("fingerprint") == fingerprint:
            redo_reason = damaged_shards(split_dir, record)
            if redo_reason is None:
                return {**record, "resumed": "complete", "written_now": 0}, None
            # a listed shard is gone or of another size: keep the intact ones before it, rebuild from there
            marker.unlink()
            _drop_from_first_damaged(split_dir, prefix, record)
        else:
            marker.unlink()  # stale: inputs or settings changed; rebuild this session
            for p in split_dir.glob(f"{prefix}-*.tar"):
                p.unlink()
    # what a killed writer of this session left (shards, marker, ground truth); one worker writes a session
    remove_temp_files(split_dir, f"{prefix}-*")
    remove_temp_files(split_dir, f"{prefix}.*")
    return None, redo_reason


def _shard_path(split_dir: Path, prefix: str, k: int) -> Path:
    return split_dir / f"{prefix}-{k:06d}.tar"


def _finished_shards(split_dir: Path, prefix: str) -> list[dict]:
    """The entries of the session's shards 0, 1, ... that exist; anything past a hole is deleted."""
    finished: list[dict] = []
    while _shard_path(split_dir, prefix, len(finished)).exists():
        path = _shard_path(split_dir, prefix, len(finished))
        finished.append(shard_entry(path, count_tar_samples(path)))
    for p in split_dir.glob(f"{prefix}-*.tar"):  # anything past a hole is not trustworthy
        if p.name not in {e["url"] for e in finished}:
            p.unlink()
    return finished


def _write_shards(
    split_dir: Path, prefix: str, start_shard: int, samples: Iterator[dict], cfg: ShardConfig
) -> list[dict]:
    """`samples` into shards numbered from `start_shard`, each written under its temp name and published once
    closed; on any failure the open shard is deleted, never published. Returns the new shards' entries."""
    new_entries: list[dict] = []

    def publish_shard(tmp_name: str) -> None:
        final = target_of(Path(tmp_name))
        publish(Path(tmp_name), final)
        new_entries.append(shard_entry(final, writer.count))

    writer = None
    try:
        for sample in samples:
            if writer is None:  # created lazily: ShardWriter opens a shard at construction
                shard = temp_path(split_dir / f"{prefix}-%06d.tar")
                pattern = str(shard).replace("%", "%%").replace("%%06d", "%06d")
                writer = wds.ShardWriter(
                    pattern,
                    maxcount=cfg.maxcount,
                    maxsize=cfg.maxsize,
                    post=publish_shard,
                    start_shard=start_shard,
                    verbose=0,
                    mtime=TAR_MTIME,
                )
            writer.write(sample)
        if writer is not None:
            writer.close()
    except BaseException:
        if writer is not None and writer.tarstream is not None:
            writer.post = None  # never publish a half-written shard
            writer.tarstream.close()
            Path(writer.fname).unlink(missing_ok=True)
        raise
    if new_entries:
        fsync_dir(split_dir)  # once for this call's renames
    return new_entries


def damaged_shards(split_dir: Path, record: dict) -> str | None:
    """Why a done-marker cannot be trusted (a shard it lists is missing or of another size), or None."""
    problems = []
    for entry in record.get("shards", []):
        path = split_dir / entry["url"]
        if not path.is_file():
            problems.append(f"{entry['url']} missing")
        elif (size := path.stat().st_size) != entry["filesize"]:
            problems.append(f"{entry['url']} is {size} bytes, the marker recorded {entry['filesize']}")
    return "; ".join(problems) or None


def _drop_from_first_damaged(split_dir: Path, prefix: str, record: dict) -> None:
    """Delete the session's shards from the first damaged one on; the resume below rewrites them (deterministic
    bytes), while the intact ones before it are reused."""
    for k, entry in enumerate(record.get("shards", [])):
        path = split_dir / entry["url"]
        if not path.is_file() or path.stat().st_size != entry["filesize"]:
            keep = {e["url"] for e in record["shards"][:k]}
            for p in split_dir.glob(f"{prefix}-*.tar"):
                if p.name not in keep:
                    p.unlink()
            return


def write_split_index(split_dir: Path, split: str, records: list[dict]) -> dict:
    """wids-style `shardindex.json` (url, nsamples, filesize, sha256), shards in sorted order."""
    shards = sorted((e for r in records for e in r["shards"]), key=lambda e: e["url"])
    for e in shards:  # the index must never list a file that is not there as recorded
        path = split_dir / e["url"]
        if not path.is_file() or path.stat().st_size != e["filesize"]:
            raise RuntimeError(f"{path}: listed for {INDEX_NAME} but missing or not {e['filesize']} bytes")
    index = {"__kind__": "wids-shard-index-v1", "wids_version": 1, "name": split, "shardlist": shards}
    split_dir.mkdir(parents=True, exist_ok=True)
    remove_temp_files(split_dir, INDEX_NAME)  # written by one process: the merging one
    write_text_atomically(split_dir / INDEX_NAME, json.dumps(index, indent=1, sort_keys=True))
    return index
