"""One test clip's result, as the test loop hands it to the report: what was true, what the model said."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ClipPrediction:
    meta: dict  # the clip's shard metadata (key, user, session, start_ms, end_ms, frame times), as prepare wrote it
    target: int  # the true class, as an index into the prompt's class names
    pred: int | None  # the predicted class index; None: a generated answer that names no class
    probs: tuple[float, ...] | None = None  # score mode: one probability per class
    text: str | None = None  # generate mode: the answer as the model wrote it

    @property
    def key(self) -> str:
        return self.meta["key"]
