"""Checkpoints written atomically in their own folder: a kill at any moment leaves the previous file whole.

Lightning's `TorchCheckpointIO` writes through an fsspec transaction whose local temp file lies in the system
temp folder, so its final move is a copy when that folder is on another filesystem, and a kill leaves a
checkpoint-sized orphan there (docs/reliability-training.md §2). `AtomicCheckpointIO` writes local checkpoints
to `<name>.tmp-<pid>` next to the target, fsyncs it, renames it onto the target (atomic within one filesystem)
and fsyncs the folder; remote (fsspec URL) paths keep Lightning's writer.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import fsspec
import torch
from fsspec.implementations.local import LocalFileSystem
from lightning_fabric.plugins.io.checkpoint_io import CheckpointIO
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

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


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        fs, local_path = fsspec.core.url_to_fs(str(path))
        if storage_options is not None or not isinstance(fs, LocalFileSystem):
            return super().save_checkpoint(checkpoint, path, storage_options)  # Lightning's checks and writer
        write_atomically(Path(local_path), lambda f: self.serialize(checkpoint, f))

    def serialize(self, checkpoint: dict[str, Any], f: BinaryIO) -> None:
        torch.save(checkpoint, f)  # streamed into the file: no second in-memory copy of the checkpoint


def with_atomic_checkpoints(plugins: Any, strategy_kind: str) -> list:
    """The trainer's `plugins` (None, one plugin or a list, as Lightning takes them) with an `AtomicCheckpointIO`
    added, unless a `CheckpointIO` is configured already (Lightning accepts only one) or the strategy writes
    checkpoints itself (DeepSpeed's engine)."""
    if plugins is None:
        plugins = []
    # an instantiated `plugins:` list is an omegaconf ListConfig, a Sequence
    plugins = list(plugins) if isinstance(plugins, Sequence) and not isinstance(plugins, str) else [plugins]
    if strategy_kind == "deepspeed" or any(isinstance(p, CheckpointIO) for p in plugins):
        return plugins
    return [*plugins, AtomicCheckpointIO()]
