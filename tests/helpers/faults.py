"""Test-only faults for training drills, injected from the command line: a process that SIGKILLs itself at a
training step, and one killed part-way through the bytes of a real checkpoint write.

    +callbacks.kill._target_=tests.helpers.faults.KillAtStep +callbacks.kill.step=6
    +trainer.plugins=[{_target_:tests.helpers.faults.KillDuringCheckpointWrite,name:last.ckpt,write_number:2}]

The second one is the project's `AtomicCheckpointIO` (so the real writer runs), with its stream cut: SIGKILL
cannot be caught, so nothing after it runs (no `finally`, no cleanup), as when the OOM killer or a node loss
ends a job.
"""

from __future__ import annotations

import os
import signal
from typing import Any, BinaryIO

import pytorch_lightning as pl
import torch

from vlmchallenge.training.checkpoint_io import TEMP_MARK, AtomicCheckpointIO


def kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class KillAtStep(pl.Callback):
    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            print(f"fault: SIGKILL at global step {self.step}", flush=True)
            kill_self()


class _ByteCounter:
    def __init__(self) -> None:
        self.size = 0

    def write(self, data) -> int:
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        pass


class _KillAfterBytes:
    """A file wrapper that writes through until `limit` bytes are in the file, then flushes and SIGKILLs."""

    def __init__(self, f: BinaryIO, limit: int):
        self.f, self.limit, self.written = f, limit, 0

    def write(self, data) -> int:
        room = self.limit - self.written
        if len(data) >= room:
            self.f.write(memoryview(data)[:room])
            self.f.flush()
            os.fsync(self.f.fileno())
            print(f"fault: SIGKILL after {self.limit} bytes of a checkpoint write", flush=True)
            kill_self()
        self.written += self.f.write(data)
        return len(data)

    def flush(self) -> None:
        self.f.flush()


class KillDuringCheckpointWrite(AtomicCheckpointIO):
    """SIGKILL during the `write_number`-th write of a checkpoint called `name`, after `fraction` of its bytes."""

    def __init__(self, name: str = "last.ckpt", write_number: int = 2, fraction: float = 0.5):
        super().__init__()
        self.name, self.write_number, self.fraction = name, write_number, fraction
        self.writes = 0

    def serialize(self, checkpoint: dict[str, Any], f: BinaryIO) -> None:
        if os.path.basename(f.name).rsplit(TEMP_MARK, 1)[0] == self.name:  # f is the temp file
            self.writes += 1
            if self.writes == self.write_number:
                counter = _ByteCounter()
                torch.save(checkpoint, counter)  # the size of the bytes about to be written
                f = _KillAfterBytes(f, int(counter.size * self.fraction))
        super().serialize(checkpoint, f)
