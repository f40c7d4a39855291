"""The clip-level metric suite (torchmetrics): accuracy, balanced accuracy, precision/recall/F1 per class,
macro and weighted, mAP from the class probabilities, and the confusion matrix.

Macro averages follow torchmetrics/scikit-learn defaults: a class absent from both targets and predictions is
left out of the average. (OpenPack's official score counts such a class as F1 0: see `openpack_metric.py`.)
Balanced accuracy is scikit-learn's `balanced_accuracy_score`: the mean recall over the classes present in the
targets only, so a class that is merely predicted does not pull it down (unlike `recall_macro`).
"""

from __future__ import annotations

import torch
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassAveragePrecision,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
    MulticlassStatScores,
)


class MulticlassBalancedAccuracy(MulticlassStatScores):
    """scikit-learn's `balanced_accuracy_score`: mean of tp / (tp + fn) over the classes with support > 0."""

    def __init__(self, num_classes: int, **kwargs) -> None:
        super().__init__(num_classes, average="none", **kwargs)

    def compute(self) -> torch.Tensor:
        tp, _, _, fn = self._final_state()
        support = tp + fn
        present = support > 0
        return (tp[present] / support[present]).mean()


def clip_metrics(
    num_classes: int, prefix: str = "", only: tuple[str, ...] | None = None, sync_on_compute: bool = True
) -> MetricCollection:
    """Update with (scores or probabilities (N, K), targets (N,)); argmax is taken for the label metrics.
    `only` keeps a subset (training logs `acc` and `f1_macro` every validation). `sync_on_compute`: reduce the
    states over the ranks of a multi-process run in `compute()` (every rank must call it); off for metrics of
    data one process already holds in full."""
    k, kw = num_classes, {"sync_on_compute": sync_on_compute}
    factories = {
        "acc": lambda: MulticlassAccuracy(k, average="micro", **kw),
        "balanced_acc": lambda: MulticlassBalancedAccuracy(k, **kw),
        "precision_macro": lambda: MulticlassPrecision(k, average="macro", **kw),
        "recall_macro": lambda: MulticlassRecall(k, average="macro", **kw),
        "f1_macro": lambda: MulticlassF1Score(k, average="macro", **kw),
        "f1_weighted": lambda: MulticlassF1Score(k, average="weighted", **kw),
        "precision_per_class": lambda: MulticlassPrecision(k, average="none", **kw),
        "recall_per_class": lambda: MulticlassRecall(k, average="none", **kw),
        "f1_per_class": lambda: MulticlassF1Score(k, average="none", **kw),
        "map": lambda: MulticlassAveragePrecision(k, average="macro", **kw),
        "confusion_matrix": lambda: MulticlassConfusionMatrix(k, **kw),
    }
    names = only or tuple(factories)
    return MetricCollection({name: factories[name]() for name in names}, prefix=prefix)


SCALAR_KEYS = ("acc", "balanced_acc", "precision_macro", "recall_macro", "f1_macro", "f1_weighted", "map")


def check_inputs(probs: torch.Tensor, targets: torch.Tensor, num_classes: int) -> None:
    """Bad input is an error, never a wrong number."""
    if probs.ndim != 2 or probs.shape[1] != num_classes:
        raise ValueError(f"probabilities must have shape (N, {num_classes}), got {tuple(probs.shape)}")
    if targets.ndim != 1 or len(targets) != len(probs):
        raise ValueError(
            f"got {len(targets)} targets for {len(probs)} predictions; expected one target per clip"
        )
    if len(targets) == 0:
        raise ValueError("no clips to evaluate (empty test set)")
    bad = targets[(targets < 0) | (targets >= num_classes)]
    if len(bad):
        raise ValueError(f"target class index {int(bad[0])} outside 0..{num_classes - 1}")


def compute_clip_metrics(probs: torch.Tensor, targets: torch.Tensor, num_classes: int) -> dict:
    """One-shot evaluation: scalars as floats, per-class lists and the confusion matrix as nested lists. The
    inputs are complete (under DDP: every rank's predictions, gathered), so nothing is reduced over ranks."""
    check_inputs(probs, targets, num_classes)
    metrics = clip_metrics(num_classes, sync_on_compute=False)
    metrics.update(probs.float(), targets.long())
    out = {}
    for name, value in metrics.compute().items():
        out[name] = float(value) if value.ndim == 0 else value.tolist()
    return out
