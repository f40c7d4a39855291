"""Report figures: confusion matrix, per-class F1, and per-session ground-truth vs prediction timelines."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402

from vlmchallenge.data.classes import OPENPACK_OPERATIONS  # noqa: E402
from vlmchallenge.evaluation.openpack_metric import SessionSeconds  # noqa: E402


def confusion_matrix_png(matrix: list[list[int]], names: list[str], path: Path) -> None:
    m = np.asarray(matrix, dtype=float)
    norm = m / np.maximum(m.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * len(names), 0.8 + 0.55 * len(names)))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(names)):
        for j in range(len(names)):
            if m[i, j]:
                ax.text(
                    j,
                    i,
                    int(m[i, j]),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black",
                )
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Confusion matrix (counts; colour = row-normalised)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def per_class_f1_png(f1: list[float], names: list[str], path: Path, macro: float) -> None:
    fig, ax = plt.subplots(figsize=(7, 0.5 + 0.35 * len(names)))
    ax.barh(range(len(names)), f1, color="tab:blue")
    ax.axvline(macro, color="tab:red", linestyle="--", label=f"macro {macro:.3f}")
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("F1")
    ax.legend(loc="lower right")
    ax.set_title("Per-class F1 (clips)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def timeline_png(sessions: list[SessionSeconds], path: Path) -> None:
    """Two strips per session on its 1-Hz grid: ground truth above, prediction below."""
    ids = [c.id for c in OPENPACK_OPERATIONS]
    colours = plt.get_cmap("tab20")(np.linspace(0, 1, len(ids)))
    cmap = ListedColormap(colours)
    index = {op: i for i, op in enumerate(ids)}
    fig, axes = plt.subplots(len(sessions), 1, figsize=(12, 0.3 + 1.1 * len(sessions)), squeeze=False)
    for ax, s in zip(axes[:, 0], sessions, strict=True):
        strips = np.stack([[index[int(y)] for y in s.truth], [index[int(y)] for y in s.prediction]])
        ax.imshow(strips, aspect="auto", cmap=cmap, vmin=0, vmax=len(ids) - 1, interpolation="nearest")
        ax.set_yticks([0, 1], ["truth", "pred"], fontsize=8)
        ax.set_title(s.key, fontsize=9, loc="left")
        ax.set_xlabel("seconds", fontsize=8)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[i]) for i in range(len(ids))]
    fig.legend(
        handles, [f"{c.id} {c.name}" for c in OPENPACK_OPERATIONS], loc="lower center", ncol=4, fontsize=7
    )
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
