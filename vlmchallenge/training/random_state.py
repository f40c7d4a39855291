"""Save every rank's random-number state in checkpoints and restore it on resume.

Lightning checkpoints hold the weights, optimizer, scheduler and loop counters, but not the RNG state, so a
resumed run draws different LoRA-dropout masks from an uninterrupted one. This callback stores the torch (CPU
and CUDA), numpy and Python states of every rank and puts them back when training starts again, after model
building and loader creation have drawn whatever they draw. The data stream needs no saved state: its seeds are
a function of (seed, rank, worker, epoch) (`vlmchallenge.training.datamodule.TrainStream`).
"""

from __future__ import annotations

import logging
import random

import numpy as np
import pytorch_lightning as pl
import torch
import torch.distributed as dist

log = logging.getLogger(__name__)

KEY = "rng_states_per_rank"


def collect_random_states() -> dict:
    """The global states a training step draws from: torch (CPU and each CUDA device), numpy and Python. Written
    here, not taken from Lightning's private `_collect_rng_states`, which may change in any release; the keys are
    the ones Lightning uses, so checkpoints written before this change still restore. numpy's state holds an
    ndarray, which `torch.load(weights_only=True)` refuses, so it is stored as plain ints."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "torch.cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [name, keys.tolist(), pos, has_gauss, gauss],
        "python": random.getstate(),
    }


def restore_random_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    if states.get("torch.cuda"):
        torch.cuda.set_rng_state_all(states["torch.cuda"])
    name, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    version, state, gauss = states["python"]
    random.setstate((version, tuple(state), gauss))  # a checkpoint may hold the tuple as a list


class RandomStateCheckpoint(pl.Callback):
    def __init__(self) -> None:
        self._pending: dict | None = None

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module, checkpoint: dict) -> None:
        # called on every rank (only rank 0 writes the file), so each rank's state is gathered into it
        states = collect_random_states()
        if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
            gathered: list = [None] * trainer.world_size
            dist.all_gather_object(gathered, states)
            checkpoint[KEY] = gathered
        else:
            checkpoint[KEY] = [states]

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module, checkpoint: dict) -> None:
        saved = checkpoint.get(KEY)
        if saved is None:
            log.warning("checkpoint has no RNG states (older run): resuming with fresh random streams")
        elif len(saved) != trainer.world_size:
            log.warning(
                "checkpoint holds RNG states of %d ranks, this run has %d: random streams are not restored",
                len(saved),
                trainer.world_size,
            )
        else:
            self._pending = saved[trainer.global_rank]

    def on_train_start(self, trainer: pl.Trainer, pl_module) -> None:
        if self._pending is not None:
            restore_random_states(self._pending)
            self._pending = None
