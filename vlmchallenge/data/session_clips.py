"""One session's job, run in a worker process: parse its annotations, cut clips, sample and decode their frames,
write its shards and done-marker, and copy its 1-Hz ground truth beside them."""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from vlmchallenge.data.annotation_parser import OperationAnnotation, parse_operations_csv
from vlmchallenge.data.classes import ID_TO_CLASS, class_index
from vlmchallenge.data.clip_builder import build_clips
from vlmchallenge.data.config import DataConfig
from vlmchallenge.data.frame_sampler import FrameSampler, SessionFrameCache
from vlmchallenge.data.frame_source import NoUsableFrames
from vlmchallenge.data.jst_time import unix_ms_to_jst
from vlmchallenge.data.openpack_layout import SessionRef, open_source
from vlmchallenge.data.prepare_result import SessionResult
from vlmchallenge.data.shard_writer import sample_key, write_session_shards
from vlmchallenge.utils.atomic import write_bytes_atomically

GROUND_TRUTH_SUFFIX = ".operations-1hz.csv"  # <split>/<USER>-<SESSION>.operations-1hz.csv


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


def copy_ground_truth(ref: SessionRef, split_dir: Path) -> dict | None:
    """Copy the session's 1-Hz ground truth (the official score's truth) beside its shards, bytes unchanged, so
    an evaluation needs only the shard folder. Its entry for the done-marker; None when the session has none."""
    if ref.operations_1hz_csv is None:
        return None
    raw = ref.operations_1hz_csv.read_bytes()
    name = f"{ref.key}{GROUND_TRUTH_SUFFIX}"
    split_dir.mkdir(parents=True, exist_ok=True)
    write_bytes_atomically(split_dir / name, raw)
    return {"file": name, "sha256": hashlib.sha256(raw).hexdigest()}


def process_session(
    cfg: DataConfig, ref: SessionRef, split: str, out_dir: Path, config_fp: str
) -> SessionResult:
    """Everything for one session, in a worker process: parse, align, sample, decode, write."""
    t0 = time.perf_counter()
    ann = parse_operations_csv(ref.operations_csv)
    try:
        source = open_source(ref, ann, cfg.source, cfg.root, cfg.video_pattern, cfg.video_time_origin)
        timestamps, source_fp, unusable = source.timestamps_ms, source.fingerprint_parts(), None
    except NoUsableFrames as e:  # the session yields 0 clips, with this reason; the others go on
        source, timestamps, unusable = None, np.zeros(0, dtype=np.int64), str(e)
        source_fp = [f"unusable:{e}"]
    built = build_clips(ann, timestamps, cfg.clips)
    sampler = FrameSampler(cfg.sampler)
    # written first (and on every run: a few kB), so a done-marker always has its ground truth beside it
    ground_truth = copy_ground_truth(ref, out_dir / split)
    fp = hashlib.sha256(
        "|".join(
            [
                config_fp,
                hashlib.sha256(ref.operations_csv.read_bytes()).hexdigest(),
                ground_truth["sha256"] if ground_truth else "no-1hz",  # new truth: a new marker record
                *source_fp,
            ]
        ).encode()
    ).hexdigest()
    stats = {"decoded": 0}

    def make_samples(start: int) -> Iterator[dict]:
        if start >= len(built.clips):
            return
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
        "source_frames": int(len(timestamps)),
        "zero_clip_reason": None
        if built.clips
        else unusable or zero_clip_reason(ann, timestamps, built.skipped),
        "ground_truth_1hz": ground_truth,  # relative to the split folder, like the shards' `url`
        "config_fingerprint": config_fp,  # what `merge_jobs` checks: every job used the same settings
    }
    record = write_session_shards(
        out_dir / split, ref.key, fp, len(built.clips), make_samples, cfg.shards, extra
    )
    written = record.pop("written_now")
    return SessionResult(split, ref.key, record, stats["decoded"], written, time.perf_counter() - t0)


def _jst_range(start_ms: int, end_ms: int, with_zone: bool) -> str:
    a, b = unix_ms_to_jst(start_ms), unix_ms_to_jst(end_ms)
    fmt = "%H:%M:%S" if a.date() == b.date() else "%Y-%m-%d %H:%M:%S"
    text = f"{a:{fmt}}.{start_ms % 1000:03d}-{b:{fmt}}.{end_ms % 1000:03d}"
    return text + (" JST" if with_zone else "")


def zero_clip_reason(ann: OperationAnnotation, timestamps: np.ndarray, skipped: dict) -> str:
    """Why a session with frames and annotations gave no clip, with both time ranges when they miss."""
    if not ann.segments:
        return "no annotated segments"
    first, last = ann.segments[0].start_ms, max(seg.end_ms for seg in ann.segments)
    inside = int(np.count_nonzero((timestamps >= first) & (timestamps < last)))
    if inside == 0:
        return (
            f"no frames inside any window: frames cover "
            f"{_jst_range(int(timestamps[0]), int(timestamps[-1]), with_zone=True)}, "
            f"annotations {_jst_range(first, last, with_zone=False)}"
        )
    reasons = ", ".join(f"{k}: {v}" for k, v in sorted(skipped.items())) or "none built"
    return f"{inside} frames inside the annotations, but every clip was skipped ({reasons})"
