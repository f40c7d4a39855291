"""A plain video file as a session source: timestamps from PTS, labels aligned by time like JPEG frames."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from fractions import Fraction

import av
import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from vlmchallenge.data.frame_source import JpegFolderSource, VideoFileSource
from vlmchallenge.data.pipeline import prepare
from vlmchallenge.data.splits import SplitConfig


def encode_session_video(frames: JpegFolderSource, path, with_creation_time: bool = True) -> None:
    origin = int(frames.timestamps_ms[0])
    with av.open(str(path), "w") as out:
        if with_creation_time:
            out.metadata["creation_time"] = datetime.fromtimestamp(origin / 1000, UTC).isoformat()
        stream = out.add_stream("mpeg4", rate=15)
        stream.width, stream.height, stream.pix_fmt = 112, 64, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for t, p in zip(frames.timestamps_ms, frames.paths, strict=True):
            frame = av.VideoFrame.from_image(Image.open(p).convert("RGB"))
            frame.pts, frame.time_base = int(t) - origin, Fraction(1, 1000)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


@pytest.fixture(scope="module")
def session_video(synthetic_root, tmp_path_factory):
    frames = JpegFolderSource(synthetic_root / "U9001/kinect/color-masked/frames/S0100")
    path = tmp_path_factory.mktemp("videos") / "U9001-S0100.mkv"
    encode_session_video(frames, path)
    return frames, path


def test_timestamps_come_from_pts(session_video):
    frames, path = session_video
    video = VideoFileSource(path, origin_ms=int(frames.timestamps_ms[0]))
    assert np.array_equal(video.timestamps_ms, frames.timestamps_ms)
    with video.reader() as reader:
        late, early = reader.read(40), reader.read(3)  # a backwards request reopens the stream
    assert late.size == early.size == (112, 64)


def test_prepare_from_video_matches_frame_folder_labels(
    session_video, data_cfg, synthetic_root, tmp_path, data_dir
):
    _, path = session_video
    only_u1 = SplitConfig(train=["U9001"], val=[], test=[], same_person=[])
    from_frames = prepare(dataclasses.replace(data_cfg, splits=only_u1), data_dir)
    video_cfg = dataclasses.replace(
        data_cfg,
        splits=only_u1,
        source="video",
        video_pattern=str(path.parent / "{user}-{session}.mkv"),
        shards=dataclasses.replace(data_cfg.shards, out_dir=str(tmp_path / "video_shards")),
    )
    from_video = prepare(video_cfg, data_dir)

    def metas(result):
        urls = sorted(str(p) for p in (result.out_dir / "train").glob("*.tar"))
        return [
            (s["__key__"], s["json"]["label_id"], s["json"]["frame_ts_ms"])
            for s in wds.WebDataset(urls, shardshuffle=False).decode()
        ]

    assert metas(from_video) == metas(from_frames)
    assert from_video.manifest["source"]["type"] == "video"


def test_video_without_creation_time_needs_an_explicit_origin(synthetic_root, tmp_path, data_cfg, data_dir):
    frames = JpegFolderSource(synthetic_root / "U9001/kinect/color-masked/frames/S0100")
    encode_session_video(frames, tmp_path / "U9001-S0100.mkv", with_creation_time=False)
    cfg = dataclasses.replace(
        data_cfg,
        splits=SplitConfig(train=["U9001"], val=[], test=[], same_person=[]),
        source="video",
        video_pattern=str(tmp_path / "{user}-{session}.mkv"),
    )
    with pytest.raises(
        ValueError, match="no timezone-aware creation_time.*video_time_origin=first_annotation"
    ):
        prepare(cfg, data_dir)
    cfg.video_time_origin = "first_annotation"
    assert prepare(cfg, data_dir).manifest["splits"]["train"]["nsamples"] > 0
