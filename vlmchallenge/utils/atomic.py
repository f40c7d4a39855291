"""Files and folders that appear complete or not at all, and folders built once when several processes want the
same one."""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


@contextmanager
def atomic_directory(target: str | Path) -> Iterator[Path]:
    """Build a folder under a temporary sibling name and rename it to `target` once the block succeeds. On any
    failure, a kill included, `target` is never half-written: the temporary folder is removed, or left under
    its `.tmp-<pid>` name.

    An existing `target` is replaced by two renames (old aside, new in), and only then is the old copy deleted,
    so a reader never finds `target` half-deleted. Replacing is for a builder that owns `target` (a re-export);
    builders that share one (ranks, workers, jobs) go through `build_lock` and keep a complete one."""
    target = Path(target)
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = target.with_name(f"{target.name}.old-{os.getpid()}")
    shutil.rmtree(
        old, ignore_errors=True
    )  # a leftover of a killed replace under this pid: rename onto it fails
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def build_lock(target: str | Path) -> Iterator[None]:
    """Hold an exclusive lock named after `target` (an `flock` on the sibling file `<target>.lock`) for the
    block. Processes that may build the same folder at once (the ranks of a job, parallel jobs on one data
    folder) take turns: the second finds the first's folder complete and keeps it, instead of replacing it
    while the first reads it. The lock is released by the kernel when its holder dies, a SIGKILL included."""
    lock = lock_path(target)
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def lock_path(target: str | Path) -> Path:
    """The file `build_lock` locks for `target`: its sibling `<target>.lock`."""
    return Path(target).with_name(f"{Path(target).name}.lock")


TEMP_MARK = ".tmp-"  # `last.ckpt.tmp-4242`: never matches `*.ckpt`, so no reader takes it for a checkpoint


def temp_path(target: Path) -> Path:
    return target.with_name(f"{target.name}{TEMP_MARK}{os.getpid()}")


def is_temp_file(path: Path) -> bool:
    return TEMP_MARK in path.name


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (POSIX: the directory entry lives in the folder, not the file)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(target: Path, write: Callable[[BinaryIO], None]) -> None:
    """`write(f)` into a temp file beside `target`, then flush, fsync and rename it onto `target`. On an error the
    temp file is removed; after a kill it stays behind under its temp name, and `target` is untouched."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(target)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)
