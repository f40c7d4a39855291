"""A `ModelCheckpoint` that remembers its best score when a run resumes into a new run folder.

Lightning's `ModelCheckpoint.load_state_dict` restores the best score and the ranked checkpoints only when the
saved `dirpath` equals its own. `ckpt_path=last` resumes into a fresh Hydra run folder, so a plain
`ModelCheckpoint` would forget the score to beat, keep the first validation after the resume as "best", and test
other weights than an uninterrupted run (docs/reliability-training.md §2). The earlier run's files stay where they
are: Lightning never deletes a checkpoint outside its own `dirpath` (`ModelCheckpoint._should_remove_checkpoint`).
"""

from __future__ import annotations

from typing import Any

from pytorch_lightning.callbacks import ModelCheckpoint


class ResumableModelCheckpoint(ModelCheckpoint):
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # the same metric in another folder: the scores compare, so keep them (another metric: Lightning's reset)
        if state_dict.get("monitor") == self.monitor:
            state_dict = {**state_dict, "dirpath": self.dirpath}
        super().load_state_dict(state_dict)
