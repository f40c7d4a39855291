"""A callback that signals its own process at a given training step, the way SLURM signals a job before its
time limit; Lightning's own handler (installed for a SLURM cluster environment) does the rest."""

from __future__ import annotations

import os
import signal

import pytorch_lightning as pl


class SignalAtStep(pl.Callback):
    def __init__(self, step: int = 1, signal_name: str = "SIGUSR1"):
        self.step, self.signum = step, getattr(signal, signal_name)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)
