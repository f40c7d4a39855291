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

import numpy as np

from vlmchallenge import __version__
from vlmchallenge.data import locations
from vlmchallenge.data.annotation_parser import OperationAnnotation, parse_operations_csv
from vlmchallenge.data.classes import ID_TO_CLASS, OPENPACK_OPERATIONS, class_index
from vlmchallenge.data.clip_builder import build_clips
from vlmchallenge.data.config import DEFAULT_DATA_DIR, MANIFEST_VERSION, DataConfig
from vlmchallenge.data.frame_sampler import FrameSampler, SessionFrameCache
from vlmchallenge.data.frame_source import NoUsableFrames
from vlmchallenge.data.jst_time import unix_ms_to_jst
from vlmchallenge.data.manifest import MANIFEST_NAME
from vlmchallenge.data.openpack_layout import SessionRef, discover_sessions, open_source
from vlmchallenge.data.shard_writer import (
    atomic_write_bytes,
    atomic_write_text,
    sample_key,
    write_session_shards,
    write_split_index,
)
from vlmchallenge.data.splits import SPLIT_NAMES
from vlmchallenge.data.synthetic import generate as generate_synthetic
from vlmchallenge.utils.atomic import build_lock

GROUND_TRUTH_SUFFIX = ".operations-1hz.csv"  # <split>/<USER>-<SESSION>.operations-1hz.csv


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
    out_dir: Path | str  # a URL after `verify_published`
    manifest: dict | None  # None after a subset job: the merge writes it
    sessions: list[SessionResult]
    unassigned: list[str]  # sessions whose user is in no split (reported, not silently dropped)
    seconds: float
    totals: dict = field(default_factory=dict)
    splits: dict = field(default_factory=dict)  # per split: users, sessions, nsamples, class counts, ...
    subset: str | None = None  # a subset job: what it covered; None: every session
    merged: bool = False  # written by `merge_jobs` from the done-markers


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
    atomic_write_bytes(split_dir / name, raw)
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


UPLOAD_COMMANDS = {  # how a prepared folder gets to each kind of location (docs/scaling.md §2)
    "s3": "aws s3 sync {local} {url}",
    "gs": "gsutil -m rsync -r {local} {url}",
    "http": "copy {local} into the folder the web server serves as {url}",
    "https": "copy {local} into the folder the web server serves as {url}",
}


def verify_published(cfg: DataConfig, data_dir: str | Path, t0: float) -> PrepareResult:
    """`prepare` for a shard URL: never writes there (object stores have no atomic rename, and the shards are
    made once, locally, then uploaded). The uploaded manifest must exist and carry these settings' fingerprint;
    the shards themselves are read when training streams them."""
    url = cfg.resolved_out_dir(data_dir)
    config_fp = cfg.fingerprint()
    local = cfg.local_out_dir(data_dir)
    upload = UPLOAD_COMMANDS.get(locations.scheme_of(url), "copy {local} to {url}")
    upload = upload.format(local=local, url=url)
    todo = (
        f"a shard URL is read-only: prepare these settings locally (`python -m vlmchallenge.prepare` with the "
        f"same data overrides and no data.shards.out_dir writes {local}), then upload it: {upload}"
    )
    manifest_url = locations.join(url, MANIFEST_NAME)
    try:
        manifest = locations.read_json(manifest_url, "manifest")
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{manifest_url}: no manifest, so no prepared shards there; {todo}") from e
    found = manifest.get("config_fingerprint")
    if found != config_fp:
        ours, theirs = str(Path(cfg.root).resolve()), manifest.get("source", {}).get("root")
        root_note = (
            f"; they were prepared from data.root={theirs}, these settings name {ours} (the fingerprint covers it)"
            if theirs and theirs != ours
            else ""
        )
        raise ValueError(
            f"{manifest_url}: shards made with different data settings (fingerprint {str(found)[:10]} != "
            f"{config_fp[:10]}){root_note}; {todo}; or point data.shards.out_dir at the copy of these settings"
        )
    seconds = time.perf_counter() - t0
    totals = {"sessions": 0, "clips_written": 0, "frames_decoded": 0, "seconds": seconds}
    unassigned = manifest.get("unassigned_sessions", [])
    return PrepareResult(url, manifest, [], unassigned, seconds, totals, manifest.get("splits", {}))


def reuse_without_raw_tree(cfg: DataConfig, out_dir: Path, config_fp: str, t0: float) -> PrepareResult:
    """A finished folder whose raw tree is gone (shards copied to another machine, or the raw data deleted):
    used as it is, since it holds everything training and evaluation read, the 1-Hz ground truth included.
    Nothing can be rebuilt or checked against the sources, so the settings must match the manifest's."""
    _check_out_dir(out_dir, config_fp, overwrite=False)
    manifest = json.loads((out_dir / MANIFEST_NAME).read_text())
    seconds = time.perf_counter() - t0
    totals = {"sessions": 0, "clips_written": 0, "frames_decoded": 0, "seconds": seconds}
    unassigned = manifest.get("unassigned_sessions", [])
    return PrepareResult(out_dir, manifest, [], unassigned, seconds, totals, manifest.get("splits", {}))


def plan_sessions(cfg: DataConfig) -> tuple[list[tuple[str, SessionRef]], list[str]]:
    """Every session whose user is in a split, as (split, ref) in sorted order, and the keys of the others."""
    user_split = cfg.splits.user_to_split()
    refs = discover_sessions(cfg.root)
    tasks = [(user_split[r.user], r) for r in refs if r.user in user_split]
    return tasks, [r.key for r in refs if r.user not in user_split]


def select_subset(
    cfg: DataConfig, tasks: list[tuple[str, SessionRef]], unassigned: list[str]
) -> tuple[list[tuple[str, SessionRef]], str]:
    """The tasks of a subset job (`data.sessions`, then `data.shard_of`) and a line saying what it covers."""
    chosen = tasks
    if cfg.sessions:
        by_name = {f"{r.user}/{r.session}": (split, r) for split, r in tasks}
        unknown = [s for s in cfg.sessions if s not in by_name]
        if unknown:
            no_split = [s for s in unknown if s.replace("/", "-") in unassigned]
            raise ValueError(
                f"data.sessions: {', '.join(unknown)} not among the sessions of data.splits under {cfg.root}"
                + (f" ({', '.join(no_split)}: user in no split)" if no_split else "")
                + f"; known: {', '.join(sorted(by_name))}"
            )
        chosen = [by_name[s] for s in sorted(set(cfg.sessions))]
    what = f"data.sessions ({len(chosen)})" if cfg.sessions else "all"
    if (shard := cfg.shard_slice()) is not None:
        i, n = shard
        chosen = sorted(chosen, key=lambda t: t[1].key)[i::n]  # strided: neighbouring sessions spread out
        what = f"data.shard_of={i}/{n} of {what}"
    return chosen, f"{what}: {len(chosen)} of {len(tasks)} sessions"


def prepare(
    cfg: DataConfig,
    data_dir: str | Path = DEFAULT_DATA_DIR,
    progress: Callable[[SessionResult, int], None] | None = None,
) -> PrepareResult:
    """Build (or resume, or reuse) the shards for `cfg`. Safe to call repeatedly: finished work is skipped.

    A subset job (`data.sessions` / `data.shard_of`) writes only its sessions' shards and done-markers; the
    split indexes and the manifest come from `merge_jobs` once every job has finished."""
    t0 = time.perf_counter()
    cfg.validate()
    if locations.is_remote(cfg.shards.out_dir or ""):  # a URL is read-only: check the upload, write nothing
        return verify_published(cfg, data_dir, t0)
    if cfg.is_subset and cfg.shards.overwrite:
        raise ValueError(
            "data.shards.overwrite=true deletes the whole output folder, which the other subset jobs share; "
            "clear it once before starting the jobs instead"
        )
    out_dir = cfg.resolved_out_dir(data_dir)
    if cfg.is_subset:  # the jobs of one plan write disjoint sessions into one folder at once, by design
        return _build_shards(cfg, out_dir, data_dir, progress, t0)
    with build_lock(out_dir):  # two runs on one data folder: the second reuses what the first wrote
        return _build_shards(cfg, out_dir, data_dir, progress, t0)


def _build_shards(
    cfg: DataConfig,
    out_dir: Path,
    data_dir: str | Path,
    progress: Callable[[SessionResult, int], None] | None,
    t0: float,
) -> PrepareResult:
    config_fp = cfg.fingerprint()
    finished = (out_dir / MANIFEST_NAME).is_file() and not cfg.shards.overwrite
    if finished and not cfg.is_subset and not Path(cfg.root).exists():
        return reuse_without_raw_tree(cfg, out_dir, config_fp, t0)
    if cfg.synthetic is not None:
        generate_synthetic(cfg.synthetic, cfg.root, workers=cfg.shards.workers)
    tasks, unassigned = plan_sessions(cfg)
    subset = None
    if cfg.is_subset:
        tasks, subset = select_subset(cfg, tasks, unassigned)
    _check_out_dir(out_dir, config_fp, cfg.shards.overwrite)
    out_dir.mkdir(parents=True, exist_ok=True)

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

    if subset is None:
        manifest = _write_index_and_manifest(cfg, out_dir, config_fp, results, unassigned)
        splits = manifest["splits"]
    else:  # concurrent jobs would race on these files, each listing only its own sessions
        manifest, splits = None, split_stats(results)
    seconds = time.perf_counter() - t0
    totals = {
        "sessions": len(results),
        "clips_written": sum(r.clips_written for r in results),
        "frames_decoded": sum(r.frames_decoded for r in results),
        "seconds": seconds,
    }
    return PrepareResult(out_dir, manifest, results, unassigned, seconds, totals, splits, subset)


def merge_jobs(cfg: DataConfig, data_dir: str | Path = DEFAULT_DATA_DIR) -> PrepareResult:
    """Write the split indexes and the manifest from the done-markers that subset jobs left in the output
    folder. Refuses while a session of the plan has no marker, or a marker was made with other settings, or a
    shard a marker lists is missing or of another size. The raw tree is only listed, never read."""
    t0 = time.perf_counter()
    cfg.validate()
    if cfg.is_subset:
        raise ValueError("merge=true covers every session: drop data.sessions / data.shard_of")
    if cfg.shards.overwrite:
        raise ValueError("merge=true with data.shards.overwrite=true would delete the jobs' output; drop it")
    if locations.is_remote(cfg.shards.out_dir or ""):
        raise ValueError(
            "merge=true writes into a local data.shards.out_dir: merge there, then upload the folder"
        )
    out_dir = cfg.resolved_out_dir(data_dir)
    config_fp = cfg.fingerprint()
    if not out_dir.is_dir():
        raise FileNotFoundError(f"{out_dir}: nothing to merge; run the subset jobs (data.shard_of=i/n) first")
    _check_out_dir(out_dir, config_fp, overwrite=False)
    tasks, unassigned = plan_sessions(cfg)

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
        for shard in record.get("shards", []):
            path = out_dir / split / shard["url"]
            if not path.is_file() or path.stat().st_size != shard["filesize"]:
                broken.append(str(path))
        if truth := record.get("ground_truth_1hz"):
            path = out_dir / split / truth["file"]
            if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != truth["sha256"]:
                broken.append(str(path))
        results.append(SessionResult(split, ref.key, {**record, "resumed": "complete"}, 0, 0, 0.0))
    if unfinished:
        names = ",".join(f"{r.user}/{r.session}" for r in unfinished)
        raise RuntimeError(
            f"merge: {len(unfinished)} of {len(tasks)} sessions have no done-marker in {out_dir} (a job has "
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
    results.sort(key=lambda r: (SPLIT_NAMES.index(r.split), r.key))
    manifest = _write_index_and_manifest(cfg, out_dir, config_fp, results, unassigned)
    seconds = time.perf_counter() - t0
    totals = {"sessions": len(results), "clips_written": 0, "frames_decoded": 0, "seconds": seconds}
    return PrepareResult(
        out_dir, manifest, results, unassigned, seconds, totals, manifest["splits"], merged=True
    )


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


def _write_index_and_manifest(
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
    atomic_write_text(out_dir / MANIFEST_NAME, json.dumps(manifest, indent=1, sort_keys=True))
    return manifest
