"""Checkpoints written atomically in their own folder: a kill at any moment leaves the previous file whole.

Lightning's `TorchCheckpointIO` writes through an fsspec transaction whose local temp file lies in the system
temp folder, so its final move is a copy when that folder is on another filesystem, and a kill leaves a
checkpoint-sized orphan there (docs/reliability-training.md §2). `AtomicCheckpointIO` writes local checkpoints
to `<name>.tmp-<pid>` next to the target, fsyncs it, renames it onto the target (atomic within one filesystem)
and fsyncs the folder; remote (fsspec URL) paths keep Lightning's writer.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

import fsspec
import torch
from fsspec.implementations.local import LocalFileSystem
from lightning_fabric.plugins.io.checkpoint_io import CheckpointIO
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from vlmchallenge.utils.atomic import TEMP_MARK, is_temp_file, write_atomically

__all__ = ["TEMP_MARK", "AtomicCheckpointIO", "is_temp_file"]


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
