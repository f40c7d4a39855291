"""OpenPack's official operation score: macro-F1 over the 10 operation classes on a 1-second grid.

Rules (openpack-toolkit `codalab/operation_segmentation`, docs/openpack.md §7):
- the ground truth is the `openpack-operations-1hz` file; seconds whose ground truth is Null (8100) are dropped;
- a prediction's slot is `t - t % 1000`; the last prediction within a second wins; predictions are cropped to the
  ground-truth range and missing seconds are forward-filled (leading seconds with nothing to fill from take the
  first prediction; their count is reported);
- precision/recall/F1 per class (scikit-learn, `zero_division=0`), averaged over all 10 classes: a class absent
  from the evaluated data still counts, with F1 0; a predicted 8100 on a non-Null second is simply an error.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vlmchallenge.data.classes import ID_TO_CLASS, NULL_ID, OPERATION_IDS


@dataclass
class SessionSeconds:
    """Ground truth and predictions of one session on its 1-Hz grid."""

    key: str  # "U0209-S0500"
    unixtime_ms: np.ndarray
    truth: np.ndarray
    prediction: np.ndarray
    filled: int  # seconds with no prediction of their own


def resample_predictions_1hz(
    times_ms: np.ndarray, predicted_ids: np.ndarray, grid_ms: np.ndarray, key: str = "session"
) -> tuple[np.ndarray, int]:
    """Window predictions at arbitrary times -> one id per grid second (last wins, forward fill)."""
    times_ms, predicted_ids = np.asarray(times_ms, dtype=np.int64), np.asarray(predicted_ids, dtype=np.int64)
    if len(times_ms) != len(predicted_ids):
        raise ValueError(f"{key}: {len(times_ms)} prediction times for {len(predicted_ids)} predictions")
    if len(times_ms) == 0:
        raise ValueError(f"{key}: no predictions for a session with ground truth")
    unknown = sorted(set(predicted_ids.tolist()) - set(ID_TO_CLASS))
    if unknown:
        raise ValueError(
            f"{key}: unknown predicted operation id(s) {unknown}; expected ids of OPENPACK_OPERATIONS"
        )
    order = np.argsort(times_ms, kind="stable")  # "last" = latest in time; ties keep input order
    slots = times_ms[order] - times_ms[order] % 1000
    ids = predicted_ids[order]
    per_slot: dict[int, int] = {}
    for s, y in zip(slots.tolist(), ids.tolist(), strict=True):
        per_slot[s] = y
    out = np.empty(len(grid_ms), dtype=np.int64)
    current, filled = None, 0
    for i, t in enumerate(np.asarray(grid_ms).tolist()):
        if t in per_slot:
            current = per_slot[t]
        else:
            filled += 1
        out[i] = -1 if current is None else current
    if (out == -1).any():  # leading seconds before the first prediction
        out[out == -1] = out[out != -1][0] if (out != -1).any() else ids[0]
    return out, filled


def per_class_prf(
    truth: np.ndarray, pred: np.ndarray, labels: tuple[int, ...]
) -> dict[int, tuple[float, float, float, int]]:
    """{id: (precision, recall, F1, support)} for every id in `labels`, present or not (zero_division=0)."""
    # imported here: sklearn.metrics (with scipy) costs every CLI and server start 0.4 s, most never score
    from sklearn.metrics import precision_recall_fscore_support

    p, r, f, support = precision_recall_fscore_support(
        truth, pred, labels=list(labels), average=None, zero_division=0
    )
    return {c: (float(p[i]), float(r[i]), float(f[i]), int(support[i])) for i, c in enumerate(labels)}


def eval_operation_segmentation(
    truth_ids: np.ndarray,
    pred_ids: np.ndarray,
    labels: tuple[int, ...] = OPERATION_IDS,
    ignore_id: int = NULL_ID,
) -> dict:
    """The toolkit's `eval_operation_segmentation(..., ignore_class_id=8100)`: macro and weighted P/R/F1 over
    `labels` after dropping seconds whose ground truth is `ignore_id`."""
    truth, pred = np.asarray(truth_ids, dtype=np.int64), np.asarray(pred_ids, dtype=np.int64)
    if truth.shape != pred.shape:
        raise ValueError(f"ground truth has {len(truth)} seconds but predictions {len(pred)}")
    unknown = sorted(set(pred.tolist()) - set(ID_TO_CLASS))
    if unknown:
        raise ValueError(f"unknown predicted operation id(s) {unknown}")
    keep = truth != ignore_id
    truth, pred = truth[keep], pred[keep]
    if len(truth) == 0:
        raise ValueError("no evaluable seconds: every ground-truth second is Null (8100)")
    per = per_class_prf(truth, pred, labels)
    support = np.array([per[c][3] for c in labels], dtype=float)
    weights = support / support.sum()
    macro = [float(np.mean([per[c][i] for c in labels])) for i in range(3)]
    weighted = [
        float(np.sum([per[c][i] * w for c, w in zip(labels, weights, strict=True)])) for i in range(3)
    ]
    return {
        "f1_macro": macro[2],
        "precision_macro": macro[0],
        "recall_macro": macro[1],
        "f1_weighted": weighted[2],
        "precision_weighted": weighted[0],
        "recall_weighted": weighted[1],
        "seconds": int(len(truth)),
        "per_class": {
            ID_TO_CLASS[c].name: {
                "precision": per[c][0],
                "recall": per[c][1],
                "f1": per[c][2],
                "support": per[c][3],
            }
            for c in labels
        },
    }


def evaluate_sessions(sessions: list[SessionSeconds]) -> dict:
    """Per `USER-SESSION` scores and `all` (every session concatenated), as the toolkit's wrapper reports."""
    if not sessions:
        raise ValueError("no sessions to evaluate")
    result = {s.key: eval_operation_segmentation(s.truth, s.prediction) for s in sessions}
    result["all"] = eval_operation_segmentation(
        np.concatenate([s.truth for s in sessions]), np.concatenate([s.prediction for s in sessions])
    )
    result["all"]["filled_seconds"] = int(sum(s.filled for s in sessions))
    return result


def make_submission(sessions: list[SessionSeconds]) -> dict:
    return {
        s.key: {"unixtime": [int(t) for t in s.unixtime_ms], "prediction": [int(y) for y in s.prediction]}
        for s in sessions
    }


def write_submission(
    submission: dict, out_dir: str | Path, metadata: dict | None = None
) -> tuple[Path, Path]:
    """`submission.json` and `submission.zip` (holding `./submission.json`), the challenge format."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = dict(submission)
    if metadata:
        payload["meta"] = metadata
    text = json.dumps(payload)
    json_path, zip_path = out_dir / "submission.json", out_dir / "submission.zip"
    json_path.write_text(text)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("submission.json", text)
    zip_path.write_bytes(buf.getvalue())
    return json_path, zip_path
