"""Turn per-clip predictions into the evaluation report: clip metrics, the official 1-second score, the
challenge submission, predictions.csv, report.json / report.md and the figures."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from vlmchallenge.data.classes import NAME_TO_CLASS
from vlmchallenge.data.config import DataConfig
from vlmchallenge.evaluation.clip_prediction import ClipPrediction
from vlmchallenge.evaluation.ground_truth import ground_truth_source
from vlmchallenge.evaluation.metrics import SCALAR_KEYS, compute_clip_metrics
from vlmchallenge.evaluation.openpack_metric import (
    SessionSeconds,
    evaluate_sessions,
    make_submission,
    write_submission,
)
from vlmchallenge.evaluation.plots import confusion_matrix_png, per_class_f1_png, timeline_png
from vlmchallenge.evaluation.seconds import prediction_times, score_seconds


def session_seconds(
    predictions: list[ClipPrediction],
    class_ids: list[int],
    data: DataConfig,
    shard_dir: Path | str | None = None,
) -> list[SessionSeconds]:
    """Map clip predictions onto each session's 1-Hz ground truth (`openpack-operations-1hz`): the copy in the
    shard folder `shard_dir` (local or URL), or the raw tree under `data.root` when none is named."""
    by_session: dict[str, list[ClipPrediction]] = defaultdict(list)
    for p in predictions:
        by_session[f"{p.meta['user']}-{p.meta['session']}"].append(p)
    truth = ground_truth_source(data.root, shard_dir)
    sessions = []
    for key in sorted(by_session):
        gt = truth(key)
        times, ids = [], []
        for p in by_session[key]:
            if p.pred is None:
                continue  # an invalid generation has no class; its seconds are forward-filled
            for t in prediction_times(p.meta, data.clips.mode):
                times.append(t)
                ids.append(class_ids[p.pred])
        sessions.append(score_seconds(key, np.asarray(times), np.asarray(ids), gt.unixtime_ms, gt.op_ids))
    return sessions


def clip_metric_inputs(
    predictions: list[ClipPrediction], class_names: list[str], mode: str, null_handling: str
):
    """(probs, targets) for the clip metrics. With Null among the classes (data.clips.keep_null=true),
    `null_handling=ignore` leaves clips whose truth is Null out (the official score drops Null too);
    `class` scores Null like any other class."""
    if null_handling not in ("ignore", "class"):
        raise ValueError(f"null_handling: expected 'ignore' or 'class', got {null_handling!r}")
    k = len(class_names)
    if null_handling == "ignore" and "Null" in class_names:
        null = class_names.index("Null")
        predictions = [p for p in predictions if p.target != null]
    if not predictions:
        raise ValueError(
            "no clips left to evaluate (empty split, or only Null clips with null_handling=ignore)"
        )
    targets = torch.tensor([p.target for p in predictions])
    if mode == "score":
        return torch.tensor([p.probs for p in predictions]), targets
    probs = torch.zeros(len(predictions), k)  # one-hot answer; an invalid one gets no class: wrong everywhere
    for i, p in enumerate(predictions):
        if p.pred is not None:
            probs[i, p.pred] = 1.0
    return probs, targets


def build_report(
    predictions: list[ClipPrediction],
    class_names: list[str],
    data: DataConfig,
    out_dir: str | Path,
    mode: str = "score",
    extra: dict | None = None,
    null_handling: str = "ignore",
    shard_dir: Path | str | None = None,
) -> dict:
    """`predictions`: one per clip (in score mode with `probs`, in generate mode with `text`). `shard_dir`: the
    evaluated shards, whose copy of the 1-Hz ground truth is scored against (None: the raw tree under
    `data.root`)."""
    if not predictions:
        raise ValueError("no predictions: the evaluated split is empty")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    k = len(class_names)
    class_ids = [NAME_TO_CLASS[n].id for n in class_names]
    invalid = sum(p.pred is None for p in predictions)
    probs, targets = clip_metric_inputs(predictions, class_names, mode, null_handling)
    clip = compute_clip_metrics(probs, targets, k)
    if mode != "score":
        clip.pop("map")  # needs scores, not a single answer
    sessions = session_seconds(predictions, class_ids, data, shard_dir)
    official = evaluate_sessions(sessions)
    write_submission(make_submission(sessions), out_dir, {"mode": mode, **(extra or {})})

    write_predictions_csv(predictions, class_names, mode, out_dir / "predictions.csv")
    confusion_matrix_png(clip["confusion_matrix"], class_names, out_dir / "confusion_matrix.png")
    per_class_f1_png(clip["f1_per_class"], class_names, out_dir / "per_class_f1.png", clip["f1_macro"])
    timeline_png(sessions, out_dir / "timeline.png")

    report = {
        "mode": mode,
        "null_handling": null_handling,
        "clips": len(predictions),
        "invalid_generations": invalid,
        **report_metrics(clip, targets, class_names, official),
        **(extra or {}),
    }
    (out_dir / "report.json").write_text(json.dumps(report, indent=1))
    (out_dir / "report.md").write_text(render_markdown(report))
    return report


def write_predictions_csv(
    predictions: list[ClipPrediction], class_names: list[str], mode: str, path: Path
) -> None:
    """One row per clip: its key and span, the true and predicted class, and the probabilities (score mode) or
    the generated answer (generate mode)."""
    class_ids = [NAME_TO_CLASS[n].id for n in class_names]
    answer_columns = ["p_" + n for n in class_names] if mode == "score" else ["generated"]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "key",
                "user",
                "session",
                "start_ms",
                "end_ms",
                "target_id",
                "target",
                "pred_id",
                "pred",
                *answer_columns,
            ]
        )
        for p in predictions:
            m, pred = p.meta, p.pred
            answer = [f"{x:.6f}" for x in p.probs] if mode == "score" else [p.text or ""]
            w.writerow(
                [
                    *(m.get("key", ""), m["user"], m["session"], m["start_ms"], m["end_ms"]),
                    *(class_ids[p.target], class_names[p.target]),
                    *(("", "") if pred is None else (class_ids[pred], class_names[pred])),
                    *answer,
                ]
            )


def report_metrics(clip: dict, targets: torch.Tensor, class_names: list[str], official: dict) -> dict:
    """The clip metrics (overall, per class, confusion matrix) and OpenPack's official 1-s score, as report.json
    holds them."""
    return {
        "clip_metrics": {key: clip[key] for key in SCALAR_KEYS if key in clip},
        "per_class": {
            n: {
                "precision": clip["precision_per_class"][i],
                "recall": clip["recall_per_class"][i],
                "f1": clip["f1_per_class"][i],
                "support": int((targets == i).sum()),
            }
            for i, n in enumerate(class_names)
        },
        "confusion_matrix": clip["confusion_matrix"],
        "openpack_official": {
            "f1_macro": official["all"]["f1_macro"],
            "f1_weighted": official["all"]["f1_weighted"],
            "seconds": official["all"]["seconds"],
            "filled_seconds": official["all"]["filled_seconds"],
            "per_session": {s: official[s]["f1_macro"] for s in official if s != "all"},
            "per_class": official["all"]["per_class"],
        },
    }


def render_markdown(r: dict) -> str:
    cm, off = r["clip_metrics"], r["openpack_official"]
    lines = [
        "# Evaluation report",
        "",
        f"Mode: `{r['mode']}`; {r['clips']} clips"
        + (f"; {r['invalid_generations']} invalid generations" if r["mode"] != "score" else "")
        + ".",
        "",
        "## OpenPack official score (1-second macro-F1 over the 10 operations, Null seconds dropped)",
        "",
        f"**macro-F1 {off['f1_macro']:.4f}** (weighted {off['f1_weighted']:.4f}) over {off['seconds']} seconds; "
        f"{off['filled_seconds']} seconds forward-filled.",
        "",
        "| session | macro-F1 |",
        "|---|---:|",
        *(f"| {s} | {v:.4f} |" for s, v in off["per_session"].items()),
        "",
        "## Clip metrics",
        "",
        "| metric | value |",
        "|---|---:|",
        *(f"| {k} | {v:.4f} |" for k, v in cm.items()),
        "",
        "| class | precision | recall | F1 | clips |",
        "|---|---:|---:|---:|---:|",
        *(
            f"| {n} | {v['precision']:.3f} | {v['recall']:.3f} | {v['f1']:.3f} | {v['support']} |"
            for n, v in r["per_class"].items()
        ),
        "",
        "![confusion matrix](confusion_matrix.png)",
        "![per-class F1](per_class_f1.png)",
        "![timeline](timeline.png)",
        "",
    ]
    return "\n".join(lines)
