"""Callbacks a test adds to a real run from the command line (`+callbacks.x._target_=tests.helpers...`) to see
what each rank of a multi-process run did."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytorch_lightning as pl


class TrainBatchDigests(pl.Callback):
    """Writes `<run>/train_batches.rank<R>.json`: a digest of every training batch's video pixels, in order."""

    def __init__(self) -> None:
        self.digests: list[str] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        pixels = batch["pixel_values_videos"].detach().cpu().contiguous().numpy()
        self.digests.append(hashlib.sha1(pixels.tobytes()).hexdigest())

    def on_train_end(self, trainer, pl_module) -> None:
        out = Path(trainer.default_root_dir) / f"train_batches.rank{trainer.global_rank}.json"
        out.write_text(json.dumps(self.digests))


class ExportRecorder(pl.Callback):
    """Leaves `<run>/exported_by_rank<R>` for every rank that runs the export step. The export runs after the
    trainer has finished, where no callback hook sees it, so `workflows.export_trained` is wrapped (the real one
    still runs) in the process this callback is built in: a training subprocess, never the test process."""

    def __init__(self) -> None:
        import vlmchallenge.workflows as workflows

        real = workflows.export_trained

        def recording(parts, best_checkpoint, out_dir):
            (Path(out_dir).parent / f"exported_by_rank{parts.trainer.global_rank}").touch()
            return real(parts, best_checkpoint, out_dir)

        workflows.export_trained = recording
