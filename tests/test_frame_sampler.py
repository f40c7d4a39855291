from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from vlmchallenge.data.frame_sampler import FrameSampler, SamplerConfig, SessionFrameCache
from vlmchallenge.data.frame_source import JpegFolderSource
from vlmchallenge.data.jst_time import unix_ms_to_frame_relpath


def test_uniform_picks_nearest_frames_at_interval_centres():
    s = FrameSampler(SamplerConfig(num_frames=4))
    ts = np.arange(0, 2000, 67)
    picks = s.select(ts, 0, 2000)
    assert len(picks) == 4 and picks == sorted(picks)
    assert [int(ts[i]) for i in picks] == [268, 737, 1273, 1742]  # nearest to 250, 750, 1250, 1750


def test_fps_mode_even_count_and_cap():
    s = FrameSampler(SamplerConfig(strategy="fps", fps=2.0, max_frames=6))
    assert s.frame_count(1500) == 2  # floor(3) -> even 2
    assert s.frame_count(2500) == 4  # 5 -> 4
    assert s.frame_count(60_000) == 6  # capped, then spread uniformly
    assert len(s.select(np.arange(0, 60_000, 67), 0, 60_000)) == 6


def test_short_clip_repeats_frames():
    s = FrameSampler(SamplerConfig(num_frames=4))
    assert s.select(np.array([10]), 0, 100) == [0, 0, 0, 0]
    assert s.select(np.array([10, 90]), 0, 100) == [0, 0, 1, 1]


@pytest.mark.parametrize(
    ("w", "h", "budget"), [(1280, 720, 224 * 224), (224, 126, 112 * 112), (640, 480, 448 * 448)]
)
def test_output_geometry_keeps_aspect_and_qwen_factor(w, h, budget):
    s = FrameSampler(SamplerConfig(max_pixels=budget, crop_top=0.1))
    ow, oh = s.output_size(w, h)
    assert ow % 28 == 0 and oh % 28 == 0
    assert ow * oh <= budget
    # aspect kept up to smart_resize's flooring to multiples of 28 (coarse at tiny sizes)
    assert abs(ow / oh - w / (h * 0.9)) / (w / (h * 0.9)) < (0.3 if budget < 50_000 else 0.12)


def test_process_crops_the_timestamp_band():
    image = Image.new("RGB", (280, 140), (200, 200, 200))
    image.paste((0, 0, 0), (0, 0, 280, 14))  # a black band, 10 % of the height
    s = FrameSampler(SamplerConfig(max_pixels=280 * 140, crop_top=0.1))
    out = s.process(image)
    assert out.shape == (112, 280, 3)
    assert out.min() > 150  # no band left


def test_cache_decodes_a_shared_frame_once_and_uses_draft(tmp_path):
    for i in range(12):
        p = tmp_path / unix_ms_to_frame_relpath(1648531511000 + i * 67)
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (1280, 720), (i * 20, 50, 50)).save(p, quality=90)
    source = JpegFolderSource(tmp_path)
    sampler = FrameSampler(SamplerConfig(num_frames=4, max_pixels=112 * 112))
    with source.reader() as reader:
        cache = SessionFrameCache(sampler, reader)
        first = cache.get([0, 2, 4, 6])
        second = cache.get([2, 4, 6, 8])  # overlapping window
        assert cache.decoded == 5
        assert first[1:] == second[:3]
        drafted = reader.read(0, sampler.draft_size(1280, 720))
    assert drafted.size[0] < 1280  # reduced-size JPEG decoding happened
    assert drafted.size[0] >= sampler.output_size(1280, 720)[0]
    assert Image.open(__import__("io").BytesIO(first[0])).size == sampler.output_size(1280, 720)


def test_serving_path_uses_the_same_rule():
    s = FrameSampler(SamplerConfig(num_frames=4, max_pixels=56 * 56, crop_top=0.0))
    frames = [Image.new("RGB", (100, 100), (i, i, i)) for i in range(10)]
    out = [s.as_trained(frames[i]) for i in s.select_evenly(len(frames))]  # what serving does per clip
    assert [int(im[0, 0, 0]) for im in out] == [1, 4, 6, 9]
    assert all(im.shape == (56, 56, 3) for im in out)
