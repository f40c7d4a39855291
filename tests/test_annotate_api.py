"""`POST /annotate` on the in-process server: a stretch of a synthetic session sent as frames + timestamps,
or as a video file, gives the per-second timeline and segments of the annotation engine run on the same
frames on disk; limits and bad input are 422s that name the field."""

from __future__ import annotations

import base64
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from tests.test_serving import in_process, serve_cfg, wait_healthy
from vlmchallenge.data.frame_source import JpegFolderSource
from vlmchallenge.inference.annotator import RecordingAnnotator
from vlmchallenge.inference.engine import VLMInference
from vlmchallenge.inference.prediction_outputs import timeline_json

SPAN_MS = 12_000  # a 12-s stretch: a dozen windows, a few seconds of scoring on the tiny model


@pytest.fixture(scope="module")
def export_dir(two_class_run):
    return two_class_run.objects.export_dir


@pytest.fixture(scope="module")
def stretch(two_class_run):
    """The frame files and times of a 12-s stretch of the test user's session."""
    root = Path(two_class_run.cfg.data.root)
    source = JpegFolderSource(root / "U9004" / "kinect" / "color-masked" / "frames" / "S0100")
    ts = source.timestamps_ms
    start = int(ts[0]) - int(ts[0]) % 1000 + 30_000
    keep = (ts >= start) & (ts < start + SPAN_MS)
    return (
        source,
        [source.paths[i] for i in np.flatnonzero(keep)],
        ts[keep].tolist(),
        (start, start + SPAN_MS),
    )


@pytest.fixture(scope="module")
def client(export_dir):
    cfg = serve_cfg(
        export_dir,
        openai=False,  # a route is a worker process that loads the model; these tests use `/annotate` only
        **{"limits.max_recording_s": 60},
        timeout=300,  # a 12-s recording is many windows: on a loaded 2-core machine more than the default 30 s
    )
    with in_process(cfg) as (c, server):
        wait_healthy(c, server)  # pauses between polls; fails, with the workers' states, if it never is
        yield c


def b64(path) -> str:
    return base64.b64encode(Path(path).read_bytes()).decode()


def write_video(paths: list[str], times_ms: list[int], out: Path, creation: str | None) -> Path:
    """An MP4 of the frames at their own times (PTS in ms) with an optional creation_time tag."""
    with av.open(str(out), "w") as container:
        if creation:
            container.metadata["creation_time"] = creation
        stream = container.add_stream("libx264", rate=1000)
        first = Image.open(paths[0])
        stream.width, stream.height, stream.pix_fmt = first.width, first.height, "yuv420p"
        stream.codec_context.time_base = stream.time_base = __import__("fractions").Fraction(1, 1000)
        stream.options = {"crf": "0"}
        for path, t in zip(paths, times_ms, strict=True):
            frame = av.VideoFrame.from_image(Image.open(path).convert("RGB"))
            frame.pts = t - times_ms[0]
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out


def test_frames_with_timestamps_give_the_engines_timeline(client, export_dir, stretch):
    source, paths, times, _ = stretch
    r = client.post("/annotate", json={"frames": [b64(p) for p in paths], "timestamps_ms": times})
    assert r.status_code == 200, r.text
    body = r.json()
    # the engine on the session's files, over the span the request's frames cover
    engine = RecordingAnnotator(VLMInference(export_dir, device="cpu"))
    expected = timeline_json(engine.annotate(source, times[0], times[-1] + 1))
    got = body["timeline"]
    assert [row["unixtime_ms"] for row in got] == [row["unixtime_ms"] for row in expected]
    assert len(got) == SPAN_MS // 1000
    assert [row["id"] for row in got] == [row["id"] for row in expected]
    assert [row["status"] for row in got] == [row["status"] for row in expected]
    for a, b in zip(got, expected, strict=True):
        assert (a["confidence"] is None) == (b["confidence"] is None)
        if a["confidence"] is not None:
            # the server's worker process may use another number of torch threads: float sums reorder
            assert a["confidence"] == pytest.approx(b["confidence"], abs=1e-4)
    # segments cover the predicted seconds, in order, each one operation
    covered = sum(s["seconds"] for s in body["segments"])
    assert covered == sum(row["id"] is not None for row in got) and body["windows"] == covered
    assert [s["start_ms"] for s in body["segments"]] == sorted(s["start_ms"] for s in body["segments"])


def test_a_video_with_creation_time_gives_the_same_labels(client, stretch, tmp_path):
    _, paths, times, _ = stretch
    frames = client.post("/annotate", json={"frames": [b64(p) for p in paths], "timestamps_ms": times}).json()
    # creation_time is second-resolution: start the video on a whole second, the frames keep their offsets
    creation = np.datetime_as_string(np.datetime64(times[0] - times[0] % 1000, "ms"), unit="s") + "Z"
    video = write_video(paths, times, tmp_path / "clip.mp4", creation)
    origin_shift = times[0] % 1000  # what the whole-second creation_time loses; given as origin_ms instead
    r = client.post("/annotate", json={"video": b64(video), "origin_ms": times[0]})
    assert r.status_code == 200, r.text
    by_video = r.json()
    assert by_video["range"]["start_ms"] == frames["range"]["start_ms"] == times[0]  # origin_ms + PTS
    assert [row["unixtime_ms"] for row in by_video["timeline"]] == [
        row["unixtime_ms"] for row in frames["timeline"]
    ]
    same = np.mean(
        [a["id"] == b["id"] for a, b in zip(by_video["timeline"], frames["timeline"], strict=True)]
    )
    assert same >= 0.9  # lossless H.264 + YUV 4:2:0 chroma: nearly every second agrees
    # without origin_ms the creation_time tag sets the time (to the second)
    tagged = client.post("/annotate", json={"video": b64(video)})
    assert tagged.status_code == 200, tagged.text
    assert tagged.json()["range"]["start_ms"] == frames["range"]["start_ms"] - origin_shift


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "give exactly one of 'frames'"),
        ({"frames": ["AAAA"]}, "needs 'timestamps_ms'"),
        ({"frames": ["!!"], "timestamps_ms": [1]}, "frames[0]: invalid base64"),
        ({"video": "AAAA", "timestamps_ms": [1]}, "'timestamps_ms' goes with 'frames'"),
        ({"video": base64.b64encode(b"not a video").decode(), "origin_ms": 0}, "cannot read video"),
    ],
)
def test_bad_requests_are_422_naming_the_field(client, body, message):
    r = client.post("/annotate", json=body)
    assert r.status_code == 422 and message in r.text, r.text


def test_frames_and_timestamps_must_agree_and_increase(client, stretch):
    _, paths, times, _ = stretch
    frames = [b64(p) for p in paths[:3]]
    r = client.post("/annotate", json={"frames": frames, "timestamps_ms": times[:2]})
    assert r.status_code == 422 and "3 frames but 2 timestamps" in r.text
    r = client.post("/annotate", json={"frames": frames, "timestamps_ms": [times[1], times[0], times[2]]})
    assert r.status_code == 422 and "strictly increasing" in r.text
    r = client.post("/annotate", json={"frames": frames, "timestamps_ms": [-5, 0, 1]})
    assert r.status_code == 422  # pydantic: not a unix time


def test_limits_and_empty_ranges_are_422(client, stretch, tmp_path):
    _, paths, times, (start, _) = stretch
    frames = [b64(p) for p in paths[:4]]
    far = [times[0], times[1], times[2], times[0] + 120_000]  # spans 120 s; this server allows 60
    r = client.post("/annotate", json={"frames": frames, "timestamps_ms": far})
    assert r.status_code == 422 and "at most 60 s per request" in r.text
    r = client.post(
        "/annotate", json={"frames": frames, "timestamps_ms": times[:4], "start_ms": start + 600_000}
    )
    assert (
        r.status_code == 422 and "no frames in the requested range" in r.text and "its frames span" in r.text
    )
    untagged = write_video(paths[:8], times[:8], tmp_path / "untagged.mp4", None)
    r = client.post("/annotate", json={"video": b64(untagged)})
    assert r.status_code == 422 and "set origin_ms=<the time of its first frame: unix ms>" in r.text
    # the server is still healthy after all of it
    assert client.get("/health").status_code == 200
