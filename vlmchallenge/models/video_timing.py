"""The frame rate each clip was sampled at, told to the processor as `VideoMetadata` (docs/tiny-vlm.md §4).

Families that encode time (docs/families.md §2) read it from this metadata, and without it assume 24 fps:
- M-RoPE seconds: the processor turns the fps into `second_per_grid_ts = temporal_patch_size / fps`, so a 4-s clip
  of 8 frames read at 24 fps would be encoded as a third of a second long;
- text timestamps: the processor writes `<t seconds>` before each frame pair, t = mean of `frames_indices / fps`
  over the pair. `frames_indices` are the clip's own frames, 0..T-1, so the text counts from the clip's start.
Families without a time encoding ignore it.

A clip of T frames sampled over [start, end) has the rate T / (end - start): the rate of the sampler's own
grid of target times (as the families' reference utilities compute it), not the spacing of the nearest source frames, whose
snapping jitter would change the truncated temporal position ids between training and serving.

Where the timing comes from (`Example.meta`):
- `start_ms` / `end_ms`: the clip's span (training and evaluation shards, annotated recording windows);
- `duration_ms`: frames without timestamps (serving), taken to span one training clip (`untimed_clip_ms`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np

from vlmchallenge.data.clip_builder import ClipConfig

log = logging.getLogger(__name__)

TIMING_KEYS = "`start_ms` and `end_ms` (the clip's span, unix ms) or `duration_ms`"


def clip_duration_ms(meta: Mapping, what: str = "clip") -> float:
    """The span the clip's frames were sampled over, from its metadata; a clear error when it has none."""
    if "start_ms" in meta and "end_ms" in meta:
        duration = float(meta["end_ms"]) - float(meta["start_ms"])
        fields = f"start_ms={meta['start_ms']}, end_ms={meta['end_ms']}"
    elif "duration_ms" in meta:
        duration, fields = float(meta["duration_ms"]), f"duration_ms={meta['duration_ms']}"
    else:
        raise ValueError(
            f"{what}: metadata has no timing (keys: {sorted(meta)}); expected {TIMING_KEYS}, so the processor "
            "gets the fps the frames were sampled at instead of assuming 24 fps"
        )
    if not duration > 0:
        raise ValueError(f"{what}: {fields} gives a clip duration of {duration} ms; expected > 0")
    return duration


def sampled_fps(num_frames: int, duration_ms: float) -> float:
    return num_frames * 1000.0 / duration_ms


def video_metadata(frames: np.ndarray, meta: Mapping, what: str = "clip"):
    """`VideoMetadata` for a (T, H, W, 3) clip: the T frames as a video of their own at the sampled fps."""
    from transformers.video_utils import VideoMetadata

    t, h, w = frames.shape[:3]
    duration_ms = clip_duration_ms(meta, what)
    return VideoMetadata(
        total_num_frames=t,
        fps=sampled_fps(t, duration_ms),
        width=w,
        height=h,
        duration=duration_ms / 1000,
        frames_indices=list(range(t)),
    )


def untimed_clip_ms(clips: ClipConfig) -> int:
    """How long frames sent without timestamps are taken to last: one training clip of the export's `clips`
    settings (window mode: `window_s`). Segment clips vary in length, so that case is an approximation and
    says so."""
    if clips.mode == "window":
        return round(float(clips.window_s) * 1000)
    cap = clips.max_duration_s
    field, seconds = ("max_duration_s", cap) if cap else ("window_s", clips.window_s)
    log.warning(
        "clips.mode=segment: segment clips vary in length, so frames sent without timestamps are taken to "
        "span clips.%s=%s s for the video time encoding; send timestamped frames (annotate) for exact timing",
        field,
        seconds,
    )
    return round(float(seconds) * 1000)
