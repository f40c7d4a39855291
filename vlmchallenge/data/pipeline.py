"""Raw OpenPack (or synthetic) -> per-split WebDataset shards + index + manifest, parallel over sessions.

This module plans and drives the run: which sessions, which subset, the output folder's checks, reusing a
finished or published folder. A session's own work is `session_clips.process_session`; the manifest is written
by `manifest.write_index_and_manifest`; subset jobs are joined by `merge.merge_jobs`."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from pathlib import Path

from vlmchallenge.data import locations
from vlmchallenge.data.config import DataConfig
from vlmchallenge.data.manifest import MANIFEST_NAME, split_stats, write_index_and_manifest
from vlmchallenge.data.openpack_layout import SessionRef, discover_sessions
from vlmchallenge.data.prepare_result import PrepareResult, SessionResult
from vlmchallenge.data.session_clips import process_session
from vlmchallenge.data.splits import SPLIT_NAMES
from vlmchallenge.data.synthetic import generate as generate_synthetic
from vlmchallenge.utils.atomic import build_lock


def check_out_dir(out_dir: Path, config_fp: str, overwrite: bool) -> None:
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
    check_out_dir(out_dir, config_fp, overwrite=False)
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
    data_dir: str | Path,
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
        return _build_shards(cfg, out_dir, progress, t0)
    with build_lock(out_dir):  # two runs on one data folder: the second reuses what the first wrote
        return _build_shards(cfg, out_dir, progress, t0)


def _build_shards(
    cfg: DataConfig,
    out_dir: Path,
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
    check_out_dir(out_dir, config_fp, cfg.shards.overwrite)
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
        manifest = write_index_and_manifest(cfg, out_dir, config_fp, results, unassigned)
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
