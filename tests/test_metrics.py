"""Clip metrics against scikit-learn, and OpenPack's official 1-second rules built by hand."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
import torch
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    precision_score,
    recall_score,
)

from vlmchallenge.data.classes import NULL_ID, OPERATION_IDS
from vlmchallenge.evaluation.metrics import compute_clip_metrics
from vlmchallenge.evaluation.openpack_metric import (
    SessionSeconds,
    eval_operation_segmentation,
    evaluate_sessions,
    make_submission,
    resample_predictions_1hz,
    write_submission,
)


# With an absent class the argmax still predicts it now and then: sklearn warns, and balanced accuracy must
# ignore it (it has no support), unlike the macro recall.
@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("absent", [[], [3], [2, 7]])
def test_clip_metrics_match_sklearn(seed, absent):
    rng = np.random.default_rng(seed)
    k, n = 10, 300
    classes = [c for c in range(k) if c not in absent]
    y = rng.choice(classes, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += rng.uniform(0, 2.5, n)  # better than chance, not perfect
    probs = torch.tensor(logits).softmax(1)
    pred = probs.argmax(1).numpy()
    m = compute_clip_metrics(probs, torch.tensor(y), k)
    labels = sorted(set(y) | set(pred))  # sklearn's default label set = torchmetrics' macro set
    assert m["acc"] == pytest.approx(accuracy_score(y, pred), abs=1e-6)
    assert m["balanced_acc"] == pytest.approx(balanced_accuracy_score(y, pred), abs=1e-6)
    for ours, theirs in [
        ("precision_macro", precision_score),
        ("recall_macro", recall_score),
        ("f1_macro", f1_score),
    ]:
        assert m[ours] == pytest.approx(
            theirs(y, pred, labels=labels, average="macro", zero_division=0), abs=1e-6
        )
    assert m["f1_weighted"] == pytest.approx(f1_score(y, pred, average="weighted", zero_division=0), abs=1e-6)
    per = f1_score(y, pred, labels=list(range(k)), average=None, zero_division=0)
    assert np.allclose(m["f1_per_class"], per, atol=1e-6)
    aps = [average_precision_score(y == c, probs[:, c].numpy()) for c in classes]
    assert m["map"] == pytest.approx(np.mean(aps), abs=1e-6)
    assert np.array_equal(m["confusion_matrix"], confusion_matrix(y, pred, labels=list(range(k))))


@pytest.mark.filterwarnings("ignore:Average precision score")  # class 2 has no positives: AP nan
def test_balanced_accuracy_ignores_a_class_that_is_only_predicted():
    # targets hold classes 0 and 1; one clip of class 0 is predicted as class 2, which no target has
    probs = torch.eye(3)[[0, 2, 1, 1]]
    m = compute_clip_metrics(probs, torch.tensor([0, 0, 1, 1]), 3)
    assert m["balanced_acc"] == pytest.approx((1 / 2 + 2 / 2) / 2)  # recall of classes 0 and 1 only
    assert m["recall_macro"] == pytest.approx((1 / 2 + 2 / 2 + 0) / 3)  # the macro recall also counts class 2


@pytest.mark.parametrize(
    ("probs", "targets", "message"),
    [
        (torch.zeros(0, 10), torch.zeros(0, dtype=torch.long), "empty test set"),
        (torch.zeros(3, 10), torch.tensor([0, 1]), "2 targets for 3 predictions"),
        (torch.zeros(2, 10), torch.tensor([0, 12]), "target class index 12 outside 0..9"),
        (torch.zeros(2, 7), torch.tensor([0, 1]), r"shape \(N, 10\)"),
    ],
)
def test_bad_clip_inputs_raise(probs, targets, message):
    with pytest.raises(ValueError, match=message):
        compute_clip_metrics(probs, targets, 10)


# ---------------------------------------------------------------- official 1-second metric, rule by rule


def test_null_ground_truth_seconds_are_dropped_and_null_predictions_are_errors():
    truth = np.array([100, 100, 8100, 200, 200])
    pred = np.array(
        [100, 100, 300, 200, 8100]
    )  # 300 on a Null second: ignored; 8100 on a 200 second: an error
    r = eval_operation_segmentation(truth, pred)
    assert r["seconds"] == 4
    assert r["per_class"]["Picking"]["f1"] == 1.0
    assert r["per_class"]["Relocate Item Label"]["recall"] == 0.5
    assert r["per_class"]["Assemble Box"]["f1"] == 0.0  # its only prediction was on the dropped Null second


@pytest.mark.parametrize("seed", range(6))
def test_official_macro_and_weighted_match_sklearn_on_non_null_seconds(seed):
    rng = np.random.default_rng(seed)
    n = 3000
    # seeds 1, 2, 4, 5 leave 1-2 operations out entirely: the toolkit still averages over all 10 (F1 0 each)
    absent = rng.choice(OPERATION_IDS, size=seed % 3, replace=False)
    ids = np.array([c for c in (*OPERATION_IDS, NULL_ID) if c not in absent])
    truth = rng.choice(ids, n)  # ~1/10 of the seconds are Null and must be dropped
    pred = np.where(rng.random(n) < 0.6, truth, rng.choice(ids, n))  # better than chance; 8100 predicted too
    r = eval_operation_segmentation(truth, pred)

    keep = truth != NULL_ID
    assert r["seconds"] == keep.sum()
    for average in ("macro", "weighted"):
        p, rec, f1, _ = precision_recall_fscore_support(
            truth[keep], pred[keep], labels=list(OPERATION_IDS), average=average, zero_division=0
        )
        assert r[f"precision_{average}"] == pytest.approx(p, abs=1e-12)
        assert r[f"recall_{average}"] == pytest.approx(rec, abs=1e-12)
        assert r[f"f1_{average}"] == pytest.approx(f1, abs=1e-12)


def test_absent_class_counts_as_zero_in_the_macro_average():
    truth = np.array([100, 200, 300, 400, 500, 600, 700, 800, 1000])  # no 900
    r = eval_operation_segmentation(truth, truth.copy())
    assert r["f1_macro"] == pytest.approx(0.9)  # perfect, yet 9 of 10 classes (the toolkit's rule)


def test_last_prediction_in_a_second_wins_and_gaps_are_forward_filled():
    grid = np.array([0, 1000, 2000, 3000, 4000])
    times = np.array([100, 900, 1500, 4200, 999])  # 0 s: three predictions, the latest (999 ms) wins
    ids = np.array([100, 200, 300, 500, 400])
    out, filled = resample_predictions_1hz(times, ids, grid)
    assert out.tolist() == [400, 300, 300, 300, 500]
    assert filled == 2


def test_leading_seconds_take_the_first_prediction_and_outside_times_are_cropped():
    grid = np.array([10_000, 11_000, 12_000])
    out, filled = resample_predictions_1hz(np.array([11_500, 99_000]), np.array([700, 800]), grid)
    assert out.tolist() == [700, 700, 700] and filled == 2


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: resample_predictions_1hz(np.array([1, 2]), np.array([100]), np.array([0])),
            "2 prediction times",
        ),
        (
            lambda: resample_predictions_1hz(np.array([1]), np.array([150]), np.array([0])),
            "unknown predicted",
        ),
        (lambda: resample_predictions_1hz(np.array([]), np.array([]), np.array([0])), "no predictions"),
        (
            lambda: eval_operation_segmentation(np.array([100, 200]), np.array([100])),
            "2 seconds but predictions 1",
        ),
        (
            lambda: eval_operation_segmentation(np.array([8100, 8100]), np.array([100, 100])),
            "no evaluable seconds",
        ),
        (lambda: evaluate_sessions([]), "no sessions"),
    ],
)
def test_bad_official_inputs_raise(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_all_is_sessions_concatenated_and_submission_format(tmp_path):
    a = SessionSeconds("U0001-S0100", np.array([0, 1000]), np.array([100, 200]), np.array([100, 100]), 0)
    b = SessionSeconds("U0002-S0100", np.array([5000, 6000]), np.array([200, 200]), np.array([200, 200]), 1)
    r = evaluate_sessions([a, b])
    cat = eval_operation_segmentation(np.array([100, 200, 200, 200]), np.array([100, 100, 200, 200]))
    assert r["all"]["f1_macro"] == cat["f1_macro"] and r["all"]["filled_seconds"] == 1
    assert set(r) == {"U0001-S0100", "U0002-S0100", "all"}
    sub = make_submission([a, b])
    assert sub["U0001-S0100"] == {"unixtime": [0, 1000], "prediction": [100, 100]}
    json_path, zip_path = write_submission(sub, tmp_path, {"model": "tiny"})
    with zipfile.ZipFile(zip_path) as z:
        assert z.namelist() == ["submission.json"]
        assert json.loads(z.read("submission.json"))["U0002-S0100"]["prediction"] == [200, 200]
    assert json.loads(json_path.read_text())["meta"] == {"model": "tiny"}


def test_null_handling_for_clip_metrics():
    from vlmchallenge.evaluation.clip_prediction import ClipPrediction
    from vlmchallenge.evaluation.report import clip_metric_inputs

    names = ["Picking", "Relocate Item Label", "Null"]
    preds = [
        ClipPrediction({}, target=0, pred=0, probs=(0.9, 0.05, 0.05)),
        ClipPrediction({}, target=2, pred=1, probs=(0.1, 0.6, 0.3)),
        ClipPrediction({}, target=1, pred=None, probs=(0.3, 0.3, 0.4)),
    ]
    probs, targets = clip_metric_inputs(preds, names, "score", "ignore")
    assert targets.tolist() == [0, 1]
    probs, targets = clip_metric_inputs(preds, names, "score", "class")
    assert targets.tolist() == [0, 2, 1]
    one_hot, _ = clip_metric_inputs(preds, names, "generate", "class")
    assert one_hot.tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 0]]  # the invalid answer matches no class
    with pytest.raises(ValueError, match="null_handling"):
        clip_metric_inputs(preds, names, "score", "drop")
    with pytest.raises(ValueError, match="no clips left"):
        clip_metric_inputs([preds[1]], names, "score", "ignore")
