"""An annotated recording's files, all in one folder, each written under a temporary name and renamed:

- `timeline.csv`: one row per second: `unixtime_ms,status,id,operation,confidence[,p_<class>...]`; a second
  without a prediction (status `no_frames` / `no_window`) has empty id, operation and confidence: not filled.
- `operations.csv`: merged runs (smoothed when asked) in OpenPack's `openpack-operations` format, read back by
  `parse_operations_csv`; `box` is 0 (unknown); gaps between segments are the seconds without a prediction.
- `submission.json` / `.zip`: the challenge format, by the official rules (evaluation/seconds.py): on the 1-Hz
  ground truth's grid when there is one, else on the recording's seconds; gaps forward-filled.
- `timeline.png`: the predicted ribbon (+ truth and per-second correctness with ground truth).
- `annotate.json`: input, time ranges, window settings, smoothing, model, frames decoded, wall time,
  real-time factor, and the official macro-F1 when there is ground truth.
"""

from __future__ import annotations

import csv
import json
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np

from vlmchallenge.data.annotation_parser import SecondLabels
from vlmchallenge.data.annotation_writer import OperationRow, write_operations_csv
from vlmchallenge.data.classes import ID_TO_CLASS, NULL_ID
from vlmchallenge.data.jst_time import unix_ms_to_iso
from vlmchallenge.evaluation.openpack_metric import (
    SessionSeconds,
    evaluate_sessions,
    make_submission,
    write_submission,
)
from vlmchallenge.evaluation.plots import recording_timeline_png
from vlmchallenge.evaluation.seconds import MISSING, NO_FRAMES, NO_WINDOW, PREDICTED, score_seconds
from vlmchallenge.inference.annotator import PredictedRecording
from vlmchallenge.inference.segments import Run, Smoothing, segments
from vlmchallenge.utils.atomic import publish_files

OUTPUT_FILES = (
    "timeline.csv",
    "operations.csv",
    "submission.json",
    "submission.zip",
    "timeline.png",
    "annotate.json",
)


def second_probabilities(predicted: PredictedRecording) -> np.ndarray:
    """(seconds, classes): the probabilities of the window each second holds; NaN rows where none."""
    src = predicted.timeline.source
    out = np.full((len(src), len(predicted.class_names)), np.nan)
    out[src != MISSING] = predicted.probabilities[src[src != MISSING]]
    return out


def submission_seconds(predicted: PredictedRecording, key: str, truth: SecondLabels | None) -> SessionSeconds:
    """The official per-second predictions of the recording: the window centres slotted and forward-filled
    on the ground truth's grid, or, without ground truth, on the recording's own seconds (truth all Null)."""
    if truth is not None:
        grid, truth_ids = np.asarray(truth.unixtime_ms), np.asarray(truth.op_ids)
    else:
        grid = predicted.timeline.unixtime_ms
        truth_ids = np.full(len(grid), NULL_ID)
    return score_seconds(key, predicted.centres_ms, predicted.window_ids, grid, truth_ids)


def truth_on_timeline(predicted: PredictedRecording, truth: SecondLabels) -> np.ndarray:
    """The 1-Hz ground truth on the timeline's seconds, MISSING where the file has no row."""
    by_time = dict(zip(truth.unixtime_ms, truth.op_ids, strict=True))
    return np.asarray([by_time.get(int(t), MISSING) for t in predicted.timeline.unixtime_ms], dtype=np.int64)


def write_timeline_csv(predicted: PredictedRecording, path: Path, probabilities: bool) -> None:
    ids = predicted.timeline.ids(predicted.window_ids)
    probs = second_probabilities(predicted)
    names = predicted.class_names
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(
            [
                "unixtime_ms",
                "status",
                "id",
                "operation",
                "confidence",
                *(["p_" + n for n in names] if probabilities else []),
            ]
        )
        for t, status, op, p in zip(
            predicted.timeline.unixtime_ms, predicted.timeline.status, ids, probs, strict=True
        ):
            if op == MISSING:
                w.writerow([int(t), status, "", "", "", *([""] * len(names) if probabilities else [])])
            else:
                extra = [f"{x:.6f}" for x in p] if probabilities else []
                w.writerow(
                    [int(t), status, int(op), ID_TO_CLASS[int(op)].name, f"{np.nanmax(p):.6f}", *extra]
                )


def operation_rows(runs: list[Run], predicted: PredictedRecording) -> list[OperationRow]:
    grid = predicted.timeline.unixtime_ms
    return [OperationRow(r.op_id, int(grid[r.first]), int(grid[r.stop - 1]) + 1000) for r in runs]


def segments_json(runs: list[Run], predicted: PredictedRecording) -> list[dict]:
    grid = predicted.timeline.unixtime_ms
    return [
        {
            "id": r.op_id,
            "operation": ID_TO_CLASS[r.op_id].name,
            "start_ms": int(grid[r.first]),
            "end_ms": int(grid[r.stop - 1]) + 1000,
            "seconds": r.stop - r.first,
        }
        for r in runs
    ]


def timeline_json(predicted: PredictedRecording) -> list[dict]:
    """The per-second timeline as JSON rows (what a server returns): no id where a second has no prediction."""
    ids = predicted.timeline.ids(predicted.window_ids)
    probs = second_probabilities(predicted)
    rows = []
    for t, status, op, p in zip(
        predicted.timeline.unixtime_ms, predicted.timeline.status, ids, probs, strict=True
    ):
        row = {"unixtime_ms": int(t), "status": status, "id": None, "operation": None, "confidence": None}
        if op != MISSING:
            row.update(
                id=int(op), operation=ID_TO_CLASS[int(op)].name, confidence=round(float(np.nanmax(p)), 6)
            )
        rows.append(row)
    return rows


def metadata(
    predicted: PredictedRecording, smoothing: Smoothing, runs: list[Run], official: dict | None
) -> dict:
    requested = [None if t is None else unix_ms_to_iso(t) for t in predicted.requested_ms]
    statuses = predicted.timeline.status
    return {
        "source": predicted.source,
        "requested_range": {"start": requested[0], "end": requested[1]},
        "range": {
            "start": unix_ms_to_iso(predicted.range_ms[0]),
            "end": unix_ms_to_iso(predicted.range_ms[1]),
            "start_ms": predicted.range_ms[0],
            "end_ms": predicted.range_ms[1],
            "duration_s": predicted.duration_s,
        },
        "window": asdict(predicted.settings),
        "smoothing": asdict(smoothing) if smoothing.enabled else None,
        "classes": predicted.class_names,
        "windows": len(predicted.windows),
        "skipped_windows": predicted.skipped_windows,
        "frames_in_range": predicted.frames_in_range,
        "frames_decoded": predicted.frames_decoded,
        "seconds": {s: statuses.count(s) for s in (PREDICTED, NO_FRAMES, NO_WINDOW)},
        "segments": len(runs),
        "wall_s": round(predicted.wall_s, 3),
        "realtime_factor": round(predicted.realtime_factor, 2),
        "openpack_official": official,
    }


def write_outputs(
    predicted: PredictedRecording,
    out_dir: str | Path,
    user: str,
    session: str,
    truth: SecondLabels | None = None,
    smoothing: Smoothing | None = None,
    probabilities: bool = True,
    extra: dict | None = None,
) -> dict:
    """Every output file into `out_dir`; returns the metadata written to `annotate.json`."""
    smoothing = smoothing or Smoothing()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    key = f"{user}-{session}"
    ids = predicted.timeline.ids(predicted.window_ids)
    runs = segments(ids, second_probabilities(predicted), predicted.class_ids, smoothing)
    scored = submission_seconds(predicted, key, truth)
    official = None
    if truth is not None:
        result = evaluate_sessions([scored])["all"]
        official = {
            k: result[k] for k in ("f1_macro", "f1_weighted", "seconds", "filled_seconds", "per_class")
        }
    meta = {**(extra or {}), "key": key, **metadata(predicted, smoothing, runs, official)}
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".annotate-") as tmp_name:
        tmp = Path(tmp_name)
        write_timeline_csv(predicted, tmp / "timeline.csv", probabilities)
        with open(tmp / "operations.csv", "w", newline="") as f:
            write_operations_csv(f, user, session, operation_rows(runs, predicted))
        write_submission(make_submission([scored]), tmp, {"source": predicted.source, "key": key})
        truth_ids = truth_on_timeline(predicted, truth) if truth is not None else None
        recording_timeline_png(predicted.timeline.unixtime_ms, ids, tmp / "timeline.png", key, truth_ids)
        (tmp / "annotate.json").write_text(json.dumps(meta, indent=1))
        publish_files(tmp, out_dir, OUTPUT_FILES)  # each file appears complete or not at all
    return meta
