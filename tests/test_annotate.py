"""Annotating whole recordings: the CLI end to end on a synthetic OpenPack session, the same session as a JPEG
folder and as a video, gaps, errors, decode-once, serving-equal probabilities, smoothing, and the per-second
path shared with the evaluator. The model is `two_class_run`'s export, which tells two operations apart."""

from __future__ import annotations

import csv
import json
import shutil
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import f1_score

from tests.helpers.in_process import run_module
from tests.helpers.runs import CONF_DIR
from vlmchallenge.data.annotation_parser import parse_operations_1hz_csv, parse_operations_csv
from vlmchallenge.data.classes import NULL_ID, OPERATION_IDS
from vlmchallenge.data.frame_source import JpegFolderSource
from vlmchallenge.data.jst_time import unix_ms_to_iso
from vlmchallenge.evaluation.openpack_metric import resample_predictions_1hz
from vlmchallenge.evaluation.seconds import MISSING, score_seconds
from vlmchallenge.inference.annotate_settings import AnnotateSettings
from vlmchallenge.inference.annotator import InMemoryFrames, RecordingAnnotator
from vlmchallenge.inference.engine import VLMInference
from vlmchallenge.inference.prediction_outputs import OUTPUT_FILES, write_outputs
from vlmchallenge.inference.recordings import RecordingOptions, open_recording
from vlmchallenge.inference.segments import Run, Smoothing, merge_short_runs, runs_of, segments

USER, SESSION = "U9004", "S0100"  # the fixture run's test user: never trained on


@pytest.fixture(scope="module")
def export_dir(two_class_run) -> Path:
    return two_class_run.objects.export_dir


@pytest.fixture(scope="module")
def root(two_class_run) -> Path:
    return Path(two_class_run.cfg.data.root)


@pytest.fixture(scope="module")
def frames(root) -> JpegFolderSource:
    return JpegFolderSource(root / USER / "kinect" / "color-masked" / "frames" / SESSION)


@pytest.fixture(scope="module")
def inference(export_dir) -> VLMInference:
    return VLMInference(export_dir, device="cpu")


@pytest.fixture(scope="module")
def annotator(inference) -> RecordingAnnotator:
    return RecordingAnnotator(inference, AnnotateSettings(batch_size=8))


def part(frames: JpegFolderSource, start_s: float, end_s: float) -> tuple[int, int]:
    """[start, end) in unix ms, seconds after the session's first frame."""
    t0 = int(frames.timestamps_ms[0])
    return t0 + round(start_s * 1000), t0 + round(end_s * 1000)


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def compose_annotate(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("annotate", overrides=overrides)


# ---------------------------------------------------------------- the command, end to end


def test_cli_annotates_an_openpack_session(export_dir, root, tmp_path):
    out = tmp_path / "out"
    cmd = [
        "vlmchallenge.annotate",
        f"export_dir={export_dir}",
        f"input={root}",
        f"user={USER}",
        f"session={SESSION}",
        f"out_dir={out}",
        "progress=false",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    done = run_module(*cmd)
    assert done.returncode == 0, done.output[-3000:]
    assert "OpenPack macro-F1 (1 s)" in done.output
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUT_FILES)  # no temporary left behind
    meta = json.loads((out / "annotate.json").read_text())
    assert meta["kind"] == "openpack" and meta["key"] == f"{USER}-{SESSION}" and meta["smoothing"] is None

    timeline = read_csv(out / "timeline.csv")
    times = [int(r["unixtime_ms"]) for r in timeline]
    assert all(t % 1000 == 0 for t in times) and np.all(np.diff(times) == 1000)
    assert times[0] <= meta["range"]["start_ms"] < times[0] + 1000 and times[-1] < meta["range"]["end_ms"]
    assert {r["status"] for r in timeline} == {"predicted"}  # no gaps in the synthetic session
    for r in timeline:
        probs = np.array([float(r[k]) for k in r if k.startswith("p_")])
        assert probs.sum() == pytest.approx(1, abs=1e-4) and float(r["confidence"]) == probs.max()

    # operations.csv parses back and its segments are the timeline's runs
    ops = parse_operations_csv(out / "operations.csv")
    assert (ops.user, ops.session) == (USER, SESSION)
    rebuilt = {t: s.op_id for s in ops.segments for t in range(s.start_ms, s.end_ms, 1000)}
    assert rebuilt == {int(r["unixtime_ms"]): int(r["id"]) for r in timeline}
    assert len(ops.segments) == meta["segments"] >= 2  # the model tells the two operations apart

    # the official score, recomputed independently from the submission and the raw 1-Hz CSV
    submission = json.loads((out / "submission.json").read_text())[f"{USER}-{SESSION}"]
    truth = {
        int(r["unixtime"]): int(r["id"])
        for r in read_csv(root / USER / "annotation" / "openpack-operations-1hz" / f"{SESSION}.csv")
    }
    assert submission["unixtime"] == sorted(truth)
    pairs = [(truth[t], p) for t, p in zip(submission["unixtime"], submission["prediction"], strict=True)]
    y_true, y_pred = zip(*[(t, p) for t, p in pairs if t != NULL_ID], strict=True)
    expected = f1_score(y_true, y_pred, labels=list(OPERATION_IDS), average="macro", zero_division=0)
    assert meta["openpack_official"]["f1_macro"] == pytest.approx(expected, abs=1e-12)
    # where the timeline has a second of its own, the submission says the same
    by_second = dict(zip(submission["unixtime"], submission["prediction"], strict=True))
    assert all(
        by_second[int(r["unixtime_ms"])] == int(r["id"])
        for r in timeline
        if int(r["unixtime_ms"]) in by_second
    )


# ---------------------------------------------------------------- the engine


def test_window_probabilities_equal_serving_predict_and_frames_decode_once(annotator, inference, frames):
    start, end = part(frames, 10, 30)
    reads: list[int] = []

    class CountingFolder(JpegFolderSource):  # the real reader, with every decode counted
        def reader(self):
            real = super().reader()
            original = real.read

            def read(index, min_size=None):
                reads.append(index)
                return original(index, min_size)

            real.read = read
            return real

    a = annotator.annotate(CountingFolder(frames.root), start, end)
    used = [i for w in a.windows for i in w.frames]
    assert len(a.windows) == len(a.timeline.unixtime_ms) == 21  # 20 s from mid-second: 21 seconds touched
    assert a.frames_decoded == len(reads)
    assert sorted(reads) == sorted(set(used)) and len(set(used)) < len(used)  # once, though windows share
    assert (
        a.frames_cached_peak < len(set(used)) / 2
    )  # ... with a cache that held fewer than half the frames used
    names = inference.prompt.class_names
    for w, probs in list(zip(a.windows, a.probabilities, strict=True))[::6]:
        served = inference.predict([Image.open(frames.paths[i]) for i in w.frames])
        np.testing.assert_allclose([served["probabilities"][n] for n in names], probs, atol=1e-5)


def test_in_memory_frames_give_the_same_windows_as_the_folder(annotator, frames):
    start, end = part(frames, 40, 52)
    lo, hi = np.searchsorted(frames.timestamps_ms, [start, end])
    images = [Image.open(p) for p in frames.paths[lo:hi]]
    memory = annotator.annotate(InMemoryFrames(images, frames.timestamps_ms[lo:hi]))
    folder = annotator.annotate(frames, start, end)
    assert memory.range_ms == folder.range_ms
    np.testing.assert_allclose(memory.probabilities, folder.probabilities, atol=1e-6)


def write_lossless_video(frames: JpegFolderSource, lo: int, hi: int, path: Path, creation_time: bool) -> None:
    """Frames [lo, hi) as FFV1 in Matroska (lossless RGB), PTS in ms from the first frame."""
    origin = int(frames.timestamps_ms[lo])
    with av.open(str(path), "w") as out:
        if creation_time:
            out.metadata["creation_time"] = datetime.fromtimestamp(origin / 1000, UTC).isoformat()
        width, height = Image.open(frames.paths[lo]).size
        stream = out.add_stream("ffv1", rate=15)
        stream.width, stream.height, stream.pix_fmt = width, height, "bgr0"
        stream.codec_context.time_base = Fraction(1, 1000)
        for t, p in zip(frames.timestamps_ms[lo:hi], frames.paths[lo:hi], strict=True):
            frame = av.VideoFrame.from_image(Image.open(p).convert("RGB"))
            frame.pts, frame.time_base = int(t) - origin, Fraction(1, 1000)
            out.mux(stream.encode(frame))
        out.mux(stream.encode())


def test_folder_and_video_give_the_same_timeline(annotator, frames, tmp_path):
    start, end = part(frames, 60, 72)
    lo, hi = (int(i) for i in np.searchsorted(frames.timestamps_ms, [start, end]))
    video = tmp_path / "session.mkv"
    write_lossless_video(frames, lo, hi, video, creation_time=True)
    recording = open_recording(RecordingOptions(str(video)))
    assert recording.kind == "video"
    from_video = annotator.annotate(recording.source)
    from_folder = annotator.annotate(open_recording(RecordingOptions(str(frames.root))).source, start, end)
    assert np.array_equal(from_video.timeline.unixtime_ms, from_folder.timeline.unixtime_ms)
    assert np.array_equal(
        from_video.timeline.ids(from_video.window_ids), from_folder.timeline.ids(from_folder.window_ids)
    )
    np.testing.assert_allclose(from_video.probabilities, from_folder.probabilities, atol=1e-5)


def test_gaps_are_marked_in_the_timeline_and_filled_in_the_submission(export_dir, root, frames, tmp_path):
    start, end = part(frames, 20, 42)
    gap_start = int(frames.timestamps_ms[0]) // 1000 * 1000 + 30_000  # 5 whole seconds without frames
    gap = (gap_start, gap_start + 5000)
    folder = tmp_path / "frames"
    for t, p in zip(frames.timestamps_ms, frames.paths, strict=True):
        if start <= t < end and not gap[0] <= t < gap[1]:
            target = folder / Path(p).relative_to(frames.root)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(p, target)
    hz = root / USER / "annotation" / "openpack-operations-1hz" / f"{SESSION}.csv"
    out = tmp_path / "out"
    from vlmchallenge.inference_workflows import annotate

    meta = annotate(
        compose_annotate(
            [
                f"export_dir={export_dir}",
                f"input={folder}",
                f"ground_truth={hz}",
                f"out_dir={out}",
                "progress=false",
            ]
        )
    )
    assert meta["kind"] == "frames" and meta["key"] == "U0000-S0000"
    timeline = read_csv(out / "timeline.csv")
    empty = [r for r in timeline if r["status"] == "no_frames"]
    assert [int(r["unixtime_ms"]) for r in empty] == list(range(*gap, 1000))
    assert all(r["id"] == r["operation"] == r["confidence"] == "" for r in empty)
    assert meta["seconds"]["no_frames"] == len(empty) == 5

    submission = json.loads((out / "submission.json").read_text())["U0000-S0000"]
    predicted = dict(zip(submission["unixtime"], submission["prediction"], strict=True))
    assert submission["unixtime"] == list(parse_operations_1hz_csv(hz).unixtime_ms)  # the ground truth's grid
    before_gap = next(int(r["id"]) for r in reversed(timeline) if int(r["unixtime_ms"]) < gap[0] and r["id"])
    assert all(predicted[int(r["unixtime_ms"])] == before_gap for r in empty)  # forward-filled
    assert meta["openpack_official"]["filled_seconds"] > len(
        empty
    )  # the gap and the seconds outside the part

    covered = {
        t
        for s in parse_operations_csv(out / "operations.csv").segments
        for t in range(s.start_ms, s.end_ms, 1000)
    }
    assert not covered & {int(r["unixtime_ms"]) for r in empty}  # operations.csv leaves the gap open


def test_smoothing_is_applied_to_operations_and_recorded(annotator, frames, tmp_path):
    a = annotator.annotate(frames)  # the whole session

    def lengths(name: str) -> list[int]:
        return [
            (s.end_ms - s.start_ms) // 1000
            for s in parse_operations_csv(tmp_path / name / "operations.csv").segments
        ]

    plain = write_outputs(a, tmp_path / "plain", USER, SESSION)
    assert plain["smoothing"] is None and len(lengths("plain")) >= 3
    floor = min(lengths("plain")) + 1  # every segment shorter than this must go
    smooth = write_outputs(a, tmp_path / "smooth", USER, SESSION, smoothing=Smoothing(min_segment_s=floor))
    assert smooth["smoothing"] == {"min_segment_s": floor, "median_s": None}
    assert min(lengths("smooth")) >= floor and sum(lengths("smooth")) == sum(lengths("plain"))
    assert smooth["segments"] < plain["segments"]
    timelines = [(tmp_path / name / "timeline.csv").read_bytes() for name in ("plain", "smooth")]
    assert timelines[0] == timelines[1]  # smoothing touches operations.csv only


# ---------------------------------------------------------------- errors


def test_a_video_without_creation_time_needs_an_origin(frames, tmp_path):
    video = tmp_path / "plain.mkv"
    write_lossless_video(frames, 0, 20, video, creation_time=False)
    with pytest.raises(ValueError, match="no timezone-aware creation_time tag.*video_time_origin="):
        open_recording(RecordingOptions(str(video)))
    origin = int(frames.timestamps_ms[0])
    given = open_recording(RecordingOptions(str(video), video_time_origin=unix_ms_to_iso(origin)))
    assert np.array_equal(given.source.timestamps_ms, frames.timestamps_ms[:20])


def test_a_range_without_frames_names_both_ranges(annotator, frames):
    first, last = int(frames.timestamps_ms[0]), int(frames.timestamps_ms[-1])
    with pytest.raises(ValueError, match="no frames in the requested range") as e:
        annotator.annotate(frames, last + 60_000, last + 120_000)
    for t in (last + 60_000, last + 120_000, first, last):
        assert unix_ms_to_iso(t) in str(e.value)


def test_unknown_or_missing_inputs_are_clear_errors(tmp_path, root):
    with pytest.raises(ValueError, match="kind: expected one of auto, openpack, frames, video, got 'webcam'"):
        open_recording(RecordingOptions(str(tmp_path), kind="webcam"))
    with pytest.raises(FileNotFoundError, match="nothing.mp4 not found"):
        open_recording(RecordingOptions(str(tmp_path / "nothing.mp4")))
    (tmp_path / "notes.txt").write_text("not a video")
    with pytest.raises(ValueError, match="notes.txt: cannot read video"):
        open_recording(RecordingOptions(str(tmp_path / "notes.txt")))
    with pytest.raises(FileNotFoundError, match="no session U9004/S0999"):
        open_recording(RecordingOptions(str(root), user=USER, session="S0999"))


# ---------------------------------------------------------------- per-second logic and segments (no model)


def test_score_seconds_follows_the_official_resampling():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 30))
        times = rng.integers(-3000, 25_000, n)
        ids = rng.choice(OPERATION_IDS, n)
        grid = np.arange(0, 20_000, 1000)
        ours = score_seconds("s", times, ids, grid, np.full(len(grid), 100))
        theirs, filled = resample_predictions_1hz(times, ids, grid)
        assert ours.prediction.tolist() == theirs.tolist() and ours.filled == filled


def test_segments_and_smoothing_on_known_timelines():
    ids = np.array([100, 100, 200, 100, 100, 100, MISSING, 300, 300, 200, 300, 300])
    spans = [(100, 0, 2), (200, 2, 3), (100, 3, 6), (300, 7, 9), (200, 9, 10), (300, 10, 12)]
    assert [(r.op_id, r.first, r.stop) for r in runs_of(ids)] == spans
    merged = merge_short_runs(runs_of(ids), 2)  # each 200 joins its neighbours; the gap is never bridged
    assert [(r.op_id, r.first, r.stop) for r in merged] == [(100, 0, 6), (300, 7, 12)]
    assert merge_short_runs([Run(500, 0, 1)], 3) == [Run(500, 0, 1)]  # nothing to merge into
    tie = merge_short_runs(runs_of(np.array([100, 100, 200, 300, 300])), 2)  # equal neighbours: the earlier
    assert [(r.op_id, r.first, r.stop) for r in tie] == [(100, 0, 3), (300, 3, 5)]
    probs = np.zeros((12, 3))
    probs[np.arange(12), [0, 0, 1, 0, 0, 0, 0, 2, 2, 1, 2, 2]] = 1
    smoothed = segments(ids, probs, [100, 200, 300], Smoothing(median_s=3))
    assert [(r.op_id, r.first, r.stop) for r in smoothed] == [(100, 0, 6), (300, 7, 12)]
    assert [(r.op_id, r.first, r.stop) for r in segments(ids, probs, [100, 200, 300], Smoothing())] == spans
