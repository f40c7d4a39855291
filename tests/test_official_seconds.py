"""From clip predictions to the official 1-second grid (`report.prediction_times`, `report.session_seconds`),
on hand-made OpenPack trees whose answers are known."""

from __future__ import annotations

import csv
from itertools import groupby
from pathlib import Path

import pytest

from vlmchallenge.data.classes import ID_TO_CLASS, NULL_ID, OPERATION_IDS
from vlmchallenge.data.clip_builder import ClipConfig
from vlmchallenge.data.config import DataConfig
from vlmchallenge.data.jst_time import unix_ms_to_iso
from vlmchallenge.evaluation.clip_prediction import ClipPrediction
from vlmchallenge.evaluation.openpack_metric import evaluate_sessions
from vlmchallenge.evaluation.report import prediction_times, session_seconds

T0 = 1_648_535_112_000  # 2022-03-29 15:25:12 JST, a whole second: second i of a session starts at T0 + 1000 i
CLASS_IDS = list(OPERATION_IDS)  # class index -> OpenPack id: the 10 operations, toolkit order, no Null


def write_session(root: Path, key: str, truth: list[int]) -> None:
    """`<root>/<user>/annotation/openpack-operations-1hz/<session>.csv` with `truth[i]` at second i, plus the
    segment file `openpack-operations/<session>.csv`, by which `discover_sessions` finds a session."""
    user, session = key.split("-")
    ann = root / user / "annotation"
    (ann / "openpack-operations-1hz").mkdir(parents=True, exist_ok=True)
    (ann / "openpack-operations").mkdir(parents=True, exist_ok=True)
    with open(ann / "openpack-operations-1hz" / f"{session}.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["unixtime", "user", "session", "box", "id"])
        w.writerows([T0 + 1000 * i, user, session, 1, op] for i, op in enumerate(truth))
    with open(ann / "openpack-operations" / f"{session}.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["uuid", "user", "session", "box", "id", "operation", "start", "end", "actions"])
        i = 0
        for op, run in groupby(truth):
            n = len(list(run))
            if op != NULL_ID:  # Null seconds are gaps between segments
                start, end = unix_ms_to_iso(T0 + 1000 * i), unix_ms_to_iso(T0 + 1000 * (i + n))
                w.writerow([f"op:{i}", user, session, 1, op, ID_TO_CLASS[op].name, start, end, ""])
            i += n


def clip(start_ms: int, end_ms: int, pred: int | None, key: str = "U0001-S0100") -> ClipPrediction:
    """A clip prediction: times in ms after T0, `pred` an OpenPack id or None (an invalid generation)."""
    user, session = key.split("-")
    meta = {"user": user, "session": session, "start_ms": T0 + start_ms, "end_ms": T0 + end_ms}
    index = None if pred is None else CLASS_IDS.index(pred)
    return ClipPrediction(meta, target=0, pred=index)  # `target` is unused: the 1-Hz file is the truth


def window_in(second: int, pred: int | None, key: str = "U0001-S0100") -> ClipPrediction:
    """A 2-s window whose centre falls mid-`second` (and whose start in the second before)."""
    return clip(1000 * second - 500, 1000 * second + 1500, pred, key)


def data(root: Path, mode: str) -> DataConfig:
    return DataConfig(root=str(root), clips=ClipConfig(mode=mode))


def one_session(tmp_path: Path, truth: list[int], predictions: list[ClipPrediction], mode: str = "window"):
    write_session(tmp_path, "U0001-S0100", truth)
    (s,) = session_seconds(predictions, CLASS_IDS, data(tmp_path, mode))
    assert s.key == "U0001-S0100" and s.truth.tolist() == truth
    assert s.unixtime_ms.tolist() == [T0 + 1000 * i for i in range(len(truth))]
    return s


# ---------------------------------------------------------------- prediction_times


def test_window_prediction_time_is_its_centre():
    assert prediction_times({"start_ms": 1000, "end_ms": 3000}, "window") == [2000]
    assert prediction_times({"start_ms": 1500, "end_ms": 2601}, "window") == [2050]  # (start + end) // 2


def test_segment_prediction_times_are_its_start_and_each_whole_second_before_its_end():
    assert prediction_times({"start_ms": 1500, "end_ms": 4000}, "segment") == [1500, 2000, 3000]  # end: open
    assert prediction_times({"start_ms": 2000, "end_ms": 4001}, "segment") == [2000, 3000, 4000]
    assert prediction_times({"start_ms": 2100, "end_ms": 2900}, "segment") == [2100]  # inside one second


# ---------------------------------------------------------------- session_seconds on hand-made sessions


def test_perfect_clip_labels_score_one(tmp_path):
    # every operation in both sessions: an absent one would cap the macro at 0.9 (the toolkit's rule)
    a = [op for op in OPERATION_IDS for _ in range(2)]
    a[7:7] = [NULL_ID, NULL_ID]  # a gap; its predictions below are wrong, yet Null seconds are dropped
    b = list(reversed(OPERATION_IDS))
    write_session(tmp_path, "U0001-S0100", a)
    write_session(tmp_path, "U0002-S0200", b)
    predictions = [window_in(i, 100 if op == NULL_ID else op) for i, op in enumerate(a)]
    predictions += [window_in(i, op, "U0002-S0200") for i, op in enumerate(b)]

    sessions = session_seconds(predictions, CLASS_IDS, data(tmp_path, "window"))
    assert [s.key for s in sessions] == ["U0001-S0100", "U0002-S0200"]
    assert [s.filled for s in sessions] == [0, 0]
    assert sessions[1].prediction.tolist() == b
    scores = evaluate_sessions(sessions)
    assert {k: v["f1_macro"] for k, v in scores.items()} == {
        "U0001-S0100": 1.0,
        "U0002-S0200": 1.0,
        "all": 1.0,
    }


def test_seconds_without_a_prediction_are_forward_filled(tmp_path):
    truth = [100, 100, 200, 200, 300, 300]
    predictions = [window_in(0, 100), window_in(2, 200), window_in(5, 300)]
    s = one_session(tmp_path, truth, predictions)
    assert s.prediction.tolist() == [100, 100, 200, 200, 200, 300]  # seconds 1, 3, 4 repeat the one before
    assert s.filled == 3
    # F1 100: 1; 200: P 2/3, R 1 -> 0.8; 300: P 1, R 1/2 -> 2/3; the 7 absent operations count as 0
    scores = evaluate_sessions([s])["all"]
    assert scores["f1_macro"] == pytest.approx((1 + 0.8 + 2 / 3) / 10)
    assert scores["per_class"]["Relocate Item Label"]["precision"] == pytest.approx(2 / 3)


def test_window_prediction_holds_at_its_centre_not_its_start(tmp_path):
    truth = [100, 100, 100, 200]
    predictions = [clip(0, 2000, 100), clip(2000, 4000, 200)]  # centres in seconds 1 and 3
    s = one_session(tmp_path, truth, predictions)
    # held at their starts (seconds 0 and 2) the windows would give [100, 100, 200, 200] with 2 seconds filled
    assert s.prediction.tolist() == [100, 100, 100, 200]
    assert s.filled == 2  # second 0 (before the first centre) and second 2


def test_segment_prediction_covers_each_of_its_seconds(tmp_path):
    truth = [100, 100, 200, 200]
    # 2.5 s ends mid-second 2, where the next segment starts: the later prediction in that second wins
    predictions = [clip(0, 2500, 100), clip(2500, 4000, 200)]
    s = one_session(tmp_path, truth, predictions, mode="segment")
    assert s.prediction.tolist() == [100, 100, 200, 200]  # centres only would give [100, 100, 100, 200]
    assert s.filled == 0


def test_invalid_generations_are_skipped_and_their_seconds_forward_filled(tmp_path):
    truth = [200, 300, 300, 400]
    predictions = [window_in(0, 200), window_in(1, 300), window_in(2, None), window_in(3, 400)]
    s = one_session(tmp_path, truth, predictions)
    assert s.prediction.tolist() == [200, 300, 300, 400]
    assert s.filled == 1


def test_a_session_without_any_valid_generation_predicts_null_everywhere(tmp_path):
    write_session(tmp_path, "U0001-S0100", [100, 200])
    write_session(tmp_path, "U0002-S0200", [100, 200, 300])
    predictions = [window_in(0, 100), window_in(1, 200)]
    predictions += [window_in(i, None, "U0002-S0200") for i in range(3)]
    ok, invalid = session_seconds(predictions, CLASS_IDS, data(tmp_path, "window"))
    assert ok.prediction.tolist() == [100, 200] and ok.filled == 0
    assert invalid.prediction.tolist() == [NULL_ID] * 3
    assert invalid.filled == 3
    assert evaluate_sessions([ok, invalid])["U0002-S0200"]["f1_macro"] == 0.0  # Null on an operation: wrong


def test_a_session_without_ground_truth_is_an_error(tmp_path):
    write_session(tmp_path, "U0001-S0100", [100])
    with pytest.raises(FileNotFoundError, match="U0001-S0200: no annotation/openpack-operations-1hz"):
        session_seconds([window_in(0, 100, "U0001-S0200")], CLASS_IDS, data(tmp_path, "window"))
