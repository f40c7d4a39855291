from __future__ import annotations

import numpy as np
import pytest

from vlmchallenge.data.annotation_parser import OperationAnnotation, Segment
from vlmchallenge.data.classes import NULL_ID
from vlmchallenge.data.clip_builder import ClipConfig, build_clips, frames_in


def ann(*segs: tuple[int, int, int]) -> OperationAnnotation:
    return OperationAnnotation(
        "x.csv",
        "U0001",
        "S0100",
        tuple(Segment("U0001", "S0100", 1, op, s, e, i + 2) for i, (op, s, e) in enumerate(segs)),
        (),
    )


def test_frames_in_is_half_open():
    ts = np.array([0, 100, 200, 300])
    assert frames_in(ts, 100, 300) == (1, 3)  # 100 and 200; 300 is the (excluded) end
    assert frames_in(ts, 101, 301) == (2, 4)


def test_segment_mode_one_clip_per_segment_half_open():
    ts = np.arange(0, 3000, 100)
    result = build_clips(ann((100, 0, 1000), (200, 1000, 2000)), ts, ClipConfig(mode="segment", min_frames=2))
    assert [c.label_id for c in result.clips] == [100, 200]
    assert result.clips[0].frame_ts_ms[-1] == 900 and result.clips[1].frame_ts_ms[0] == 1000
    assert result.clips[0].frame_indices == tuple(range(0, 10))


def test_segment_cap_is_centred():
    ts = np.arange(0, 20000, 100)
    result = build_clips(
        ann((300, 1000, 11000)), ts, ClipConfig(mode="segment", max_duration_s=4, min_frames=2)
    )
    clip = result.clips[0]
    assert (clip.start_ms, clip.end_ms) == (4000, 8000)


def test_too_few_frames_is_skipped_with_reason_and_dropped_frames_are_tolerated():
    ts = np.array([0, 100, 200, 900, 1000, 1100, 1200, 1300])  # frames 300..800 dropped
    result = build_clips(
        ann((100, 0, 300), (200, 300, 900), (300, 900, 1400)), ts, ClipConfig(mode="segment", min_frames=4)
    )
    assert [c.label_id for c in result.clips] == [300]
    assert result.skipped == {"fewer_than_4_frames": 1, "no_frames": 1}


@pytest.mark.parametrize(("rule", "expected"), [("center", [200, 300, 300]), ("majority", [100, 300, 300])])
def test_window_labels_center_vs_majority(rule, expected):
    ts = np.arange(0, 4001, 100)
    a = ann((100, 0, 900), (200, 900, 1100), (300, 1100, 4100))  # first window: 100 and 300 tie at 900 ms
    result = build_clips(
        a, ts, ClipConfig(mode="window", window_s=2, stride_s=0.5, label_rule=rule, min_frames=2)
    )
    assert [c.label_id for c in result.clips][:3] == expected
    assert result.clips[0].start_ms == 0 and result.clips[0].end_ms == 2000


def test_windows_over_gaps_and_outside_annotations_are_null():
    ts = np.arange(0, 10001, 100)
    a = ann((100, 3000, 5000), (200, 7000, 9000))  # before 3000, 5000-7000 and after 9000 unannotated
    cfg = ClipConfig(mode="window", window_s=1, stride_s=1, keep_null=True, min_frames=2)
    labels = [c.label_id for c in build_clips(a, ts, cfg).clips]
    assert labels == [NULL_ID] * 3 + [100] * 2 + [NULL_ID] * 2 + [200] * 2 + [NULL_ID]
    dropped = build_clips(
        a, ts, ClipConfig(mode="window", window_s=1, stride_s=1, keep_null=False, min_frames=2)
    )
    assert [c.label_id for c in dropped.clips] == [100, 100, 200, 200]
    assert dropped.skipped["null_label"] == 6
    assert all(c.box == -1 for c in build_clips(a, ts, cfg).clips if c.label_id == NULL_ID)


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="clips.mode"):
        build_clips(ann((100, 0, 10)), np.arange(5), ClipConfig(mode="sliding"))
