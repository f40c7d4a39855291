"""Annotation against the ground truth: the per-second timeline that `annotate` writes is compared with the
session's 1-Hz ground truth (the `openpack-operations-1hz` file the official score reads), not with another
output of the same code.

The model is `two_class_run`'s export, trained on two operations only (its `clips.operations`), so it is
compared on the seconds whose truth is one of those; the sessions are the run's val and test users (not
trained on). The comparison is repeated with the timeline shifted by -5 ... +5 s: a timeline in step with the
truth agrees best unshifted, and a window placement that is off by a second moves the peak.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.helpers.runs import CONF_DIR
from vlmchallenge.evaluation.ground_truth import ground_truth_source
from vlmchallenge.evaluation.seconds import PREDICTED

pytestmark = pytest.mark.slow  # a trained model and four annotation runs

MAX_SHIFT_S = 5
# Seconds annotated beyond the compared ones on each side: the largest shift plus half a window (the export's
# windows are 2 s), so every compared second holds a whole window, not one cut at the annotated range's edge.
PAD_S = MAX_SHIFT_S + 2
# How much better the unshifted timeline must agree than any shifted one, in compared seconds. A 1-s shift
# costs one second per boundary the model sees (a known operation next to one it labels otherwise); the val
# and test sessions hold about 8 such boundaries, and the measured margin is 4 seconds.
MARGIN_SECONDS = 2


def stretches(seconds: list[int], gap_s: int) -> list[tuple[int, int]]:
    """Sorted whole seconds (unix ms) -> [first, last] runs, split where consecutive ones are > gap_s apart."""
    runs = [[seconds[0], seconds[0]]]
    for t in seconds[1:]:
        if t - runs[-1][1] > gap_s * 1000:
            runs.append([t, t])
        else:
            runs[-1][1] = t
    return [(a, b) for a, b in runs]


def annotate_stretch(
    export_dir: Path, root: Path, user: str, session: str, start_ms: int, end_ms: int, out: Path
):
    """`python -m vlmchallenge.annotate ... start=<ms> end=<ms>` in process -> {second: predicted id}."""
    from hydra import compose, initialize_config_dir

    from vlmchallenge.inference_workflows import annotate

    overrides = [
        f"export_dir={export_dir}",
        f"input={root}",
        f"user={user}",
        f"session={session}",
        f"start={start_ms}",
        f"end={end_ms}",
        f"out_dir={out}",
        "progress=false",
    ]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        annotate(compose("annotate", overrides=overrides))
    with open(out / "timeline.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return {int(r["unixtime_ms"]): int(r["id"]) for r in rows if r["status"] == PREDICTED}


@pytest.fixture(scope="module")
def curve(two_class_run, tmp_path_factory) -> dict:
    """Agreement of the annotated timeline with the 1-Hz truth at each shift, over the known seconds."""
    export_dir = Path(two_class_run.objects.export_dir)
    root = Path(two_class_run.cfg.data.root)
    known = set(json.loads((export_dir / "vlmchallenge.json").read_text())["clips"]["operations"])
    users = [*two_class_run.cfg.data.splits.val, *two_class_run.cfg.data.splits.test]
    truth_of = ground_truth_source(root, None)  # the evaluator's reader of the raw tree's 1-Hz files
    out_dir = tmp_path_factory.mktemp("truth")
    shifts = range(-MAX_SHIFT_S, MAX_SHIFT_S + 1)
    hits = dict.fromkeys(shifts, 0)
    compared = 0
    for user in users:
        for session in two_class_run.cfg.data.synthetic.sessions:
            labels = truth_of(f"{user}-{session}")
            truth = dict(zip(labels.unixtime_ms, labels.op_ids, strict=True))
            seconds = sorted(t for t, op in truth.items() if op in known)
            for first, last in stretches(seconds, gap_s=2 * PAD_S):
                out = out_dir / f"{user}-{session}-{first}"
                pred = annotate_stretch(
                    export_dir, root, user, session, first - PAD_S * 1000, last + (PAD_S + 1) * 1000, out
                )
                for t in (t for t in seconds if first <= t <= last):
                    assert all(t + s * 1000 in pred for s in shifts), f"{out}: no prediction near {t}"
                    compared += 1
                    for s in shifts:
                        hits[s] += pred[t + s * 1000] == truth[t]
    return {"compared": compared, "hits": hits, "agreement": {s: h / compared for s, h in hits.items()}}


def test_the_timeline_agrees_with_the_truth_best_unshifted(curve):
    hits, n = curve["hits"], curve["compared"]
    shown = ", ".join(f"{s:+d} s: {h}/{n}" for s, h in hits.items())
    assert n >= 40, f"too few seconds of the model's operations to compare: {n}"
    assert curve["agreement"][0] >= 0.85, f"the model misses its own operations: {shown}"
    peak = max(hits, key=lambda s: (hits[s], -abs(s)))
    assert peak == 0, (
        f"agreement peaks at a shift of {peak:+d} s, not 0: the timeline is out of step ({shown})"
    )
    closest = max(h for s, h in hits.items() if s != 0)
    assert hits[0] - closest >= MARGIN_SECONDS, (
        f"the unshifted timeline agrees only {hits[0] - closest} s better than a shifted one ({shown})"
    )
    print(f"agreement with the 1-Hz truth by shift: {shown}")
