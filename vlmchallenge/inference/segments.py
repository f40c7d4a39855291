"""Per-second labels -> merged segments, with optional smoothing (off by default).

- `median_s`: a median filter over each class's per-second probability, then the most probable class; an odd
  number of seconds (scipy.ndimage.median_filter, edges repeat the nearest second).
- `min_segment_s`: a segment shorter than this is relabelled as its longer neighbour (the earlier on a tie)
  and merged, shortest first, until none is left or a short one has no neighbour.
Both act within a stretch of consecutive predicted seconds: a gap (no frames, no window) is never bridged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vlmchallenge.evaluation.seconds import MISSING


@dataclass
class Smoothing:
    min_segment_s: int | None = None
    median_s: int | None = None

    def validate(self) -> None:
        if self.median_s is not None and (self.median_s < 1 or self.median_s % 2 == 0):
            raise ValueError(
                f"smoothing.median_s: expected an odd number of seconds >= 1, got {self.median_s}"
            )
        if self.min_segment_s is not None and self.min_segment_s < 1:
            raise ValueError(f"smoothing.min_segment_s: expected seconds >= 1, got {self.min_segment_s}")

    @property
    def enabled(self) -> bool:
        return self.min_segment_s is not None or self.median_s is not None


@dataclass
class Run:
    op_id: int
    first: int  # second index, inclusive
    stop: int  # exclusive


def stretches(ids: np.ndarray) -> list[tuple[int, int]]:
    """[first, stop) index ranges of consecutive non-MISSING seconds."""
    present = np.concatenate([[False], np.asarray(ids) != MISSING, [False]])
    edges = np.flatnonzero(np.diff(present.astype(np.int8)))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def runs_of(ids: np.ndarray) -> list[Run]:
    """Maximal runs of one id; MISSING seconds separate runs and belong to none."""
    ids = np.asarray(ids)
    out: list[Run] = []
    for first, stop in stretches(ids):
        change = np.flatnonzero(np.diff(ids[first:stop])) + 1 + first
        bounds = [first, *change.tolist(), stop]
        out += [Run(int(ids[a]), a, b) for a, b in zip(bounds, bounds[1:], strict=False)]
    return out


def median_smoothed(
    ids: np.ndarray, probabilities: np.ndarray, class_ids: list[int], seconds: int
) -> np.ndarray:
    """Per-second ids from per-class probabilities median-filtered over `seconds`, stretch by stretch."""
    out = np.asarray(ids, dtype=np.int64).copy()
    lookup = np.asarray(class_ids, dtype=np.int64)
    from scipy.ndimage import median_filter  # here: scipy costs every serve and annotate start 0.4 s

    for first, stop in stretches(out):
        block = median_filter(probabilities[first:stop], size=(seconds, 1), mode="nearest")
        out[first:stop] = lookup[block.argmax(1)]
    return out


def merge_short_runs(runs: list[Run], min_len: int) -> list[Run]:
    runs = [Run(r.op_id, r.first, r.stop) for r in runs]
    while True:
        candidates = []
        for i, r in enumerate(runs):
            if r.stop - r.first >= min_len:
                continue
            neighbours = [j for j in (i - 1, i + 1) if 0 <= j < len(runs) and _touch(runs, min(i, j))]
            if neighbours:
                candidates.append((r.stop - r.first, i, neighbours))
        if not candidates:
            return runs
        _, i, neighbours = min(candidates)
        j = max(neighbours, key=lambda n: (runs[n].stop - runs[n].first, -n))
        runs[i].op_id = runs[j].op_id
        runs = _merge_equal(runs)


def _touch(runs: list[Run], i: int) -> bool:
    return runs[i].stop == runs[i + 1].first


def _merge_equal(runs: list[Run]) -> list[Run]:
    out = [runs[0]]
    for r in runs[1:]:
        if r.op_id == out[-1].op_id and out[-1].stop == r.first:
            out[-1].stop = r.stop
        else:
            out.append(r)
    return out


def segments(
    ids: np.ndarray, probabilities: np.ndarray, class_ids: list[int], smoothing: Smoothing
) -> list[Run]:
    """The operation segments of a per-second timeline (MISSING = no prediction), smoothed as asked."""
    smoothing.validate()
    if smoothing.median_s is not None:
        ids = median_smoothed(ids, probabilities, class_ids, smoothing.median_s)
    runs = runs_of(ids)
    if smoothing.min_segment_s is not None and runs:
        runs = merge_short_runs(runs, smoothing.min_segment_s)
    return runs
