"""Report figures: confusion matrix, per-class F1, per-session ground-truth vs prediction timelines, and a
whole recording's predicted ribbon (with truth and correctness when there is ground truth)."""

from __future__ import annotations

import functools
from pathlib import Path
from types import ModuleType

import numpy as np

from vlmchallenge.data.classes import NULL_ID, OPENPACK_OPERATIONS
from vlmchallenge.evaluation.openpack_metric import SessionSeconds


@functools.cache
def pyplot() -> ModuleType:
    """matplotlib's pyplot on the file-only backend, imported at the first figure: importing it costs every
    server and CLI start 0.2 s, and most never draw."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on servers
    import matplotlib.pyplot as plt

    return plt


def confusion_matrix_png(matrix: list[list[int]], names: list[str], path: Path) -> None:
    plt = pyplot()
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
    plt = pyplot()
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
    plt = pyplot()
    from matplotlib.colors import ListedColormap  # loaded with pyplot

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


NO_PREDICTION_GREY = (0.85, 0.85, 0.85)
CORRECT_WHITE, WRONG_BLACK = (1.0, 1.0, 1.0), (0.1, 0.1, 0.1)  # unlike any class colour


def recording_timeline_png(
    unixtime_ms: np.ndarray, predicted: np.ndarray, path: Path, title: str, truth: np.ndarray | None = None
) -> None:
    """The predicted ribbon of a recording, one column per second (grey: no prediction, e.g. no frames);
    with 1-Hz ground truth (MISSING = -1 where unknown) also the truth and per-second correctness (white
    right, black wrong, grey not scored: no prediction, no truth, or Null truth)."""
    plt = pyplot()
    colours = plt.get_cmap("tab20")(np.linspace(0, 1, len(OPENPACK_OPERATIONS)))[:, :3]
    colour_of = {c.id: tuple(colours[i]) for i, c in enumerate(OPENPACK_OPERATIONS)}

    def ribbon(ids: np.ndarray) -> list[tuple]:
        return [colour_of.get(int(y), NO_PREDICTION_GREY) for y in ids]

    rows, names = [ribbon(predicted)], ["prediction"]
    if truth is not None:
        scored = (predicted >= 0) & (truth >= 0) & (truth != NULL_ID)
        right = [
            NO_PREDICTION_GREY if not s else CORRECT_WHITE if ok else WRONG_BLACK
            for s, ok in zip(scored.tolist(), (predicted == truth).tolist(), strict=True)
        ]
        rows += [ribbon(truth), right]
        names += ["truth", "correct"]
    minutes = (np.asarray(unixtime_ms) - unixtime_ms[0]) / 60_000
    fig, ax = plt.subplots(figsize=(10, 0.9 + 0.35 * len(rows)))
    ax.imshow(
        np.asarray(rows),
        aspect="auto",
        interpolation="nearest",
        extent=(0, float(minutes[-1]) + 1 / 60, len(rows) - 0.5, -0.5),
    )
    ax.set_yticks(range(len(rows)), names, fontsize=8)
    ax.set_xlabel("minutes", fontsize=8)
    ax.set_title(title, fontsize=9, loc="left")
    present = sorted(
        {int(y) for y in predicted if int(y) in colour_of}
        | ({*truth.tolist()} if truth is not None else set())
    )
    handles = [plt.Rectangle((0, 0), 1, 1, color=colour_of[i]) for i in present if i in colour_of]
    labels = [f"{c.id} {c.name}" for c in OPENPACK_OPERATIONS if c.id in present]
    handles.append(plt.Rectangle((0, 0), 1, 1, color=NO_PREDICTION_GREY))
    labels.append("no prediction / not scored")
    if truth is not None:
        handles += [
            plt.Rectangle((0, 0), 1, 1, facecolor=c, edgecolor="0.5") for c in (CORRECT_WHITE, WRONG_BLACK)
        ]
        labels += ["correct", "wrong"]
    legend_in = 0.15 + 0.2 * -(-len(labels) // 5)  # inches below the axes for the legend rows
    height = 0.9 + 0.35 * len(rows) + legend_in
    fig.set_size_inches(10, height)
    fig.legend(handles, labels, loc="lower center", ncol=5, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, legend_in / height, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)
