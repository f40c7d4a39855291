"""Raw OpenPack (or synthetic) -> per-split WebDataset shards + index + manifest, parallel over sessions."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vlmchallenge import __version__
from vlmchallenge.data.annotation_parser import parse_operations_csv
from vlmchallenge.data.classes import ID_TO_CLASS, OPENPACK_OPERATIONS, class_index
from vlmchallenge.data.clip_builder import build_clips
from vlmchallenge.data.config import MANIFEST_VERSION, DataConfig
from vlmchallenge.data.frame_sampler import FrameSampler, SessionFrameCache
from vlmchallenge.data.openpack_layout import SessionRef, discover_sessions, open_source
from vlmchallenge.data.shard_writer import (
    atomic_write_text,
    sample_key,
    write_session_shards,
    write_split_index,
)
from vlmchallenge.data.splits import SPLIT_NAMES
from vlmchallenge.data.synthetic import generate as generate_synthetic

MANIFEST_NAME = "manifest.json"


@dataclass
class SessionResult:
    split: str
    key: str
    record: dict  # the session's done-marker: shards, class counts, skipped reasons, ...
    frames_decoded: int
    clips_written: int
    seconds: float


@dataclass
class PrepareResult:
    out_dir: Path
    manifest: dict
    sessions: list[SessionResult]
    unassigned: list[str]  # sessions whose user is in no split (reported, not silently dropped)
    seconds: float
    totals: dict = field(default_factory=dict)


def _clip_sample(clip, clip_no: int, frames: list[bytes], frame_ts: list[int], size: tuple[int, int]) -> dict:
    meta = {
        "user": clip.user,
        "session": clip.session,
        "box": clip.box,
        "clip": clip_no,
        "label_id": clip.label_id,
        "label_index": class_index(clip.label_id),
        "label_name": ID_TO_CLASS[clip.label_id].name,
        "start_ms": clip.start_ms,
        "end_ms": clip.end_ms,
        "frame_ts_ms": frame_ts,
        "source_frames": len(clip.frame_indices),
        "width": size[0],
        "height": size[1],
    }
    sample = {"__key__": sample_key(clip.user, clip.session, clip_no)}
    for i, jpg in enumerate(frames):
        sample[f"{i:03d}.jpg"] = jpg
    sample["json"] = json.dumps(meta, sort_keys=True).encode()
    sample["cls"] = str(meta["label_index"]).encode()
    return sample


def process_session(
    cfg: DataConfig, ref: SessionRef, split: str, out_dir: Path, config_fp: str
) -> SessionResult:
    """Everything for one session, in a worker process: parse, align, sample, decode, write."""
    t0 = time.perf_counter()
    ann = parse_operations_csv(ref.operations_csv)
    source = open_source(ref, ann, cfg.source, cfg.root, cfg.video_pattern, cfg.video_time_origin)
    built = build_clips(ann, source.timestamps_ms, cfg.clips)
    sampler = FrameSampler(cfg.sampler)
    fp = hashlib.sha256(
        "|".join(
            [
                config_fp,
                hashlib.sha256(ref.operations_csv.read_bytes()).hexdigest(),
                *source.fingerprint_parts(),
            ]
        ).encode()
    ).hexdigest()
    stats = {"decoded": 0}

    def make_samples(start: int) -> Iterator[dict]:
        with source.reader() as reader:
            cache = SessionFrameCache(sampler, reader)
            for clip_no in range(start, len(built.clips)):
                clip = built.clips[clip_no]
                picks = sampler.select(clip.frame_ts_ms, clip.start_ms, clip.end_ms)
                frames = cache.get([clip.frame_indices[i] for i in picks])
                size = sampler.output_size(*cache.source_size)
                yield _clip_sample(clip, clip_no, frames, [clip.frame_ts_ms[i] for i in picks], size)
            stats["decoded"] = cache.decoded

    class_counts = Counter(ID_TO_CLASS[c.label_id].name for c in built.clips)
    extra = {
        "user": ref.user,
        "session": ref.session,
        "class_counts": dict(sorted(class_counts.items())),
        "skipped": dict(sorted(built.skipped.items())),
        "gaps": len(ann.gaps),
        "source_frames": int(len(source.timestamps_ms)),
    }
    record = write_session_shards(
        out_dir / split, ref.key, fp, len(built.clips), make_samples, cfg.shards, extra
    )
    written = len(built.clips) if record["resumed"] == "fresh" else 0
    return SessionResult(split, ref.key, record, stats["decoded"], written, time.perf_counter() - t0)


def _check_out_dir(out_dir: Path, config_fp: str, overwrite: bool) -> None:
    manifest = out_dir / MANIFEST_NAME
    if not out_dir.exists():
        return
    if overwrite:
        shutil.rmtree(out_dir)
        return
    if manifest.exists():
        found = json.loads(manifest.read_text()).get("config_fingerprint")
        if found != config_fp:
            raise ValueError(
                f"{out_dir} holds shards made with different data settings (fingerprint {found[:10]} != "
                f"{config_fp[:10]}); set data.shards.overwrite=true or another data.shards.out_dir"
            )


def prepare(
    cfg: DataConfig,
    data_dir: str | Path = "data",
    progress: Callable[[SessionResult, int], None] | None = None,
) -> PrepareResult:
    """Build (or resume, or reuse) the shards for `cfg`. Safe to call repeatedly: finished work is skipped."""
    t0 = time.perf_counter()
    cfg.validate()
    if cfg.synthetic is not None:
        generate_synthetic(cfg.synthetic, cfg.root, workers=cfg.shards.workers)
    out_dir = cfg.resolved_out_dir(data_dir)
    config_fp = cfg.fingerprint()
    _check_out_dir(out_dir, config_fp, cfg.shards.overwrite)
    out_dir.mkdir(parents=True, exist_ok=True)

    user_split = cfg.splits.user_to_split()
    refs = discover_sessions(cfg.root)
    tasks = [(user_split[r.user], r) for r in refs if r.user in user_split]
    unassigned = [r.key for r in refs if r.user not in user_split]
    results: list[SessionResult] = []
    if cfg.shards.workers > 1 and len(tasks) > 1:
        with ProcessPoolExecutor(max_workers=min(cfg.shards.workers, len(tasks))) as pool:
            futures = [pool.submit(process_session, cfg, r, s, out_dir, config_fp) for s, r in tasks]
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for f in done:
                    if f.exception() is not None:
                        for p in pending:
                            p.cancel()
                        raise f.exception()
                    results.append(f.result())
                    if progress:
                        progress(results[-1], len(tasks))
    else:
        for s, r in tasks:
            results.append(process_session(cfg, r, s, out_dir, config_fp))
            if progress:
                progress(results[-1], len(tasks))
    results.sort(key=lambda r: (SPLIT_NAMES.index(r.split), r.key))

    manifest = _write_index_and_manifest(cfg, out_dir, config_fp, results, unassigned)
    seconds = time.perf_counter() - t0
    totals = {
        "sessions": len(results),
        "clips_written": sum(r.clips_written for r in results),
        "frames_decoded": sum(r.frames_decoded for r in results),
        "seconds": seconds,
    }
    return PrepareResult(out_dir, manifest, results, unassigned, seconds, totals)


def _write_index_and_manifest(
    cfg: DataConfig, out_dir: Path, config_fp: str, results: list[SessionResult], unassigned: list[str]
) -> dict:
    splits = {}
    for split in SPLIT_NAMES:
        recs = [r.record for r in results if r.split == split]
        index = write_split_index(out_dir / split, split, recs)
        counts: Counter = Counter()
        skipped: Counter = Counter()
        for rec in recs:
            counts.update(rec["class_counts"])
            skipped.update(rec["skipped"])
        splits[split] = {
            "users": sorted({rec["user"] for rec in recs}),
            "sessions": [rec["prefix"] for rec in recs],
            "nsamples": sum(s["nsamples"] for s in index["shardlist"]),
            "nshards": len(index["shardlist"]),
            "index": f"{split}/shardindex.json",
            "class_counts": {c.name: counts.get(c.name, 0) for c in OPENPACK_OPERATIONS},
            "skipped": dict(sorted(skipped.items())),
        }
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
    atomic_write_text(out_dir / MANIFEST_NAME, json.dumps(manifest, indent=1, sort_keys=True))
    return manifest
