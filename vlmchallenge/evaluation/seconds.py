"""From predictions at points in time to one answer per second: the one path shared by the evaluator
(`report.session_seconds`) and by whole-recording annotation (`inference/annotator.py`).

- A window's prediction holds at its centre; a segment's at its start and each whole second inside it
  (`prediction_times`).
- A prediction at `t` ms belongs to second `t - t % 1000`; the latest one in a second wins
  (`last_in_each_second`, the toolkit's `resample_prediction_1Hz`, docs/openpack.md §7).
- Seconds without a prediction of their own stay `MISSING` in a timeline; only the official score and the
  submission forward-fill them (`forward_fill`, `score_seconds`), as the toolkit's `ffill_missing_elements` does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vlmchallenge.data.classes import ID_TO_CLASS, NULL_ID
from vlmchallenge.evaluation.openpack_metric import SessionSeconds

MISSING = -1  # a second without a prediction of its own


def prediction_times(meta: dict, clip_mode: str) -> list[int]:
    """When a clip's prediction holds: a window speaks for its centre; a segment for each of its seconds."""
    start, end = int(meta["start_ms"]), int(meta["end_ms"])
    if clip_mode == "segment":
        return [start, *range(start - start % 1000 + 1000, end, 1000)]
    return [(start + end) // 2]


def seconds_grid(start_ms: int, end_ms: int) -> np.ndarray:
    """The whole seconds (unix ms) that overlap the half-open range [start, end)."""
    if end_ms <= start_ms:
        raise ValueError(f"empty time range [{start_ms}, {end_ms})")
    return np.arange(start_ms - start_ms % 1000, end_ms, 1000, dtype=np.int64)


def last_in_each_second(times_ms: np.ndarray, grid_ms: np.ndarray) -> np.ndarray:
    """For each grid second, the position (into `times_ms`) of the latest prediction inside it, or MISSING.
    Ties in time go to the later position; predictions outside the grid are dropped (cropped)."""
    times = np.asarray(times_ms, dtype=np.int64)
    grid = np.asarray(grid_ms, dtype=np.int64)
    out = np.full(len(grid), MISSING, dtype=np.int64)
    order = np.argsort(times, kind="stable")  # increasing time; equal times keep input order
    slot_of = {int(s): i for i, s in enumerate(grid.tolist())}
    for position in order.tolist():  # later assignments overwrite: the last one wins
        slot = slot_of.get(int(times[position] - times[position] % 1000))
        if slot is not None:
            out[slot] = position
    return out


def forward_fill(ids: np.ndarray, fallback: int) -> tuple[np.ndarray, int]:
    """MISSING seconds take the previous second's id; leading ones take the first id there is (`fallback`
    when there is none at all). Returns the filled ids and how many seconds were filled."""
    ids = np.asarray(ids, dtype=np.int64)
    missing = ids == MISSING
    if missing.all():
        return np.full(len(ids), fallback, dtype=np.int64), int(len(ids))
    last_seen = np.maximum.accumulate(np.where(missing, 0, np.arange(len(ids))))
    filled = ids[last_seen]
    filled[: int(np.argmax(~missing))] = ids[~missing][0]
    return filled, int(missing.sum())


def check_predicted_ids(predicted_ids: np.ndarray, key: str) -> None:
    unknown = sorted(set(np.asarray(predicted_ids).tolist()) - set(ID_TO_CLASS))
    if unknown:
        raise ValueError(
            f"{key}: unknown predicted operation id(s) {unknown}; expected ids of OPENPACK_OPERATIONS"
        )


def score_seconds(
    key: str, times_ms: np.ndarray, predicted_ids: np.ndarray, grid_ms: np.ndarray, truth: np.ndarray
) -> SessionSeconds:
    """One session on its ground truth's 1-Hz grid, by the official rules: last prediction in a second wins,
    the others forward-filled. Without any prediction (every generation invalid), Null everywhere: a Null on
    an operation second scores as an error."""
    times = np.asarray(times_ms, dtype=np.int64)
    ids = np.asarray(predicted_ids, dtype=np.int64)
    if len(times) != len(ids):
        raise ValueError(f"{key}: {len(times)} prediction times for {len(ids)} predictions")
    check_predicted_ids(ids, key)
    grid = np.asarray(grid_ms, dtype=np.int64)
    if len(times) == 0:
        pred, filled = np.full(len(grid), NULL_ID, dtype=np.int64), len(grid)
    else:
        last = last_in_each_second(times, grid)
        # nothing inside the grid: the toolkit's crop leaves nothing, we fill with the earliest prediction
        earliest = int(ids[np.argsort(times, kind="stable")[0]])
        pred, filled = forward_fill(np.where(last == MISSING, MISSING, ids[last]), earliest)
    return SessionSeconds(key, grid, np.asarray(truth, dtype=np.int64), pred, filled)


# ---------------------------------------------------------------- a recording's per-second timeline

PREDICTED, NO_FRAMES, NO_WINDOW = "predicted", "no_frames", "no_window"


@dataclass
class Timeline:
    """One row per second of a recording. `source[i]`: the position of the prediction second i holds, or
    MISSING; `status[i]`: PREDICTED, NO_FRAMES (no frame in that second) or NO_WINDOW (frames, but no
    prediction of its own: a stride over 1 s, or a window with too few frames). Nothing is filled."""

    unixtime_ms: np.ndarray
    source: np.ndarray
    status: list[str]

    def ids(self, predicted_ids: np.ndarray) -> np.ndarray:
        """Per-second operation ids, MISSING where the second holds no prediction."""
        ids = np.asarray(predicted_ids, dtype=np.int64)
        return np.where(self.source == MISSING, MISSING, ids[np.maximum(self.source, 0)])


def seconds_with_frames(grid_ms: np.ndarray, frame_ts_ms: np.ndarray) -> np.ndarray:
    """Boolean mask of the grid seconds that hold at least one frame."""
    ts = np.asarray(frame_ts_ms, dtype=np.int64)
    return np.isin(np.asarray(grid_ms, dtype=np.int64), ts - ts % 1000)


def recording_timeline(times_ms: np.ndarray, grid_ms: np.ndarray, frame_ts_ms: np.ndarray) -> Timeline:
    """Predictions at `times_ms` (window centres) -> the per-second timeline over `grid_ms`, by the same
    last-wins slotting as the official score; a second without frames is NO_FRAMES whatever a window
    spanning it said."""
    grid = np.asarray(grid_ms, dtype=np.int64)
    source = last_in_each_second(times_ms, grid)
    has_frames = seconds_with_frames(grid, frame_ts_ms)
    source[~has_frames] = MISSING
    status = [
        NO_FRAMES if not framed else PREDICTED if s != MISSING else NO_WINDOW
        for framed, s in zip(has_frames.tolist(), source.tolist(), strict=True)
    ]
    return Timeline(grid, source, status)
