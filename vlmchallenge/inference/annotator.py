"""Annotate a whole recording: sliding windows over its frames, each classified by the served model.

- Windows come from the export's clip settings (`window_s`, `stride_s`, `min_frames`) unless overridden. Their
  centres sit at the end of each second (`second + 999 ms`) on the recording's 1-s grid, every `stride_s`, so
  with a 1-s stride every second holds exactly one prediction (the first and last seconds too); a window is cut
  to the annotated range and needs `min_frames` frames in it. The end, not the middle: OpenPack's 1-Hz ground
  truth labels second `t` by the operation active at `t + 999 ms` (docs/openpack.md §3.2), and the official
  resampling keeps a second's last prediction (§7). Mid-second centres made the timeline half a second early:
  shifted one second later it agreed with the truth as well as unshifted (tests/test_annotate_truth.py).
  A window whose centre second holds no frame is not scored: that second is a gap, filled only in the
  submission (evaluation/seconds.py).
- Frames are chosen by the training sampler and prepared as training stored them (`FrameSampler.as_stored`
  after the same draft decode), so a window's probabilities equal `VLMInference.predict` on its frames.
  Each window is timed by its span for the video time encoding (docs/tiny-vlm.md §4).
- Overlapping windows share frames: `prepare`'s own `SessionFrameCache` decodes each frame once. Windows come
  in time order, so it drops the frames before the current window's first and holds only the frames of the
  windows that overlap it.
- Windows are scored in batches through `VLMInference.predict_batch` (the KV-cached `LabelScorer`).

The engine takes any `FrameSource`, so a server can pass frames held in memory (`InMemoryFrames`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from vlmchallenge.data.clip_builder import frames_in
from vlmchallenge.data.frame_sampler import SessionFrameCache
from vlmchallenge.data.frame_source import FrameReader, FrameSource
from vlmchallenge.data.jst_time import unix_ms_to_iso
from vlmchallenge.evaluation.seconds import Timeline, recording_timeline, seconds_grid
from vlmchallenge.inference.annotate_settings import AnnotateSettings
from vlmchallenge.inference.engine import BadInput, VLMInference

# A second's prediction is made at its end: the instant its 1-Hz ground-truth label describes (module docstring).
SECOND_END_MS = 999
# (windows scored, windows in all, ms of the recording covered so far, frames decoded so far)
ProgressFn = Callable[[int, int, int, int], None]


class InMemoryFrames(FrameSource):
    """Frames a client sent, with their capture times (unix ms): opened, not yet decoded, so JPEGs can
    still be draft-decoded like the frame files training read."""

    def __init__(self, images: list[Image.Image], timestamps_ms: list[int] | np.ndarray):
        if not images:
            raise BadInput("frames: expected at least one frame")
        if len(images) != len(timestamps_ms):
            raise BadInput(f"frames: {len(images)} frames but {len(timestamps_ms)} timestamps")
        ts = np.asarray(timestamps_ms, dtype=np.int64)
        if np.any(np.diff(ts) <= 0):
            raise BadInput("timestamps: expected strictly increasing unix ms, one per frame")
        sizes = {im.size for im in images}
        if len(sizes) > 1:
            raise BadInput(f"frames: all frames must have the same size, got {sorted(sizes)}")
        self.images, self.timestamps_ms = images, ts
        self.size = images[0].size
        self.description = f"in-memory frames ({len(images)})"

    def reader(self) -> FrameReader:
        return _ImageListReader(self.images, self.size)


class _ImageListReader(FrameReader):
    def __init__(self, images: list[Image.Image], size: tuple[int, int]):
        self.images, self.size = images, size

    def frame_size(self, index: int) -> tuple[int, int]:
        return self.size

    def read(self, index: int, min_size: tuple[int, int] | None = None) -> Image.Image:
        image = self.images[index]
        try:
            if min_size is not None and image.format == "JPEG":
                image.draft("RGB", min_size)  # as the JPEG-folder reader does
            return image.convert("RGB")
        except OSError as e:
            raise BadInput(f"frame {index}: cannot be decoded ({e})") from None


@dataclass
class Window:
    start_ms: int  # cut to the annotated range; half-open
    end_ms: int
    centre_ms: int
    frames: list[int]  # positions into the source's frames, as the sampler chose them


@dataclass
class PredictedRecording:
    """What `RecordingAnnotator.annotate` found: scored windows and the per-second timeline. The model's labels,
    never ground truth ("annotation" in OpenPack, and in `data/`, is the human labelling; glossary in
    docs/architecture.md)."""

    source: str
    requested_ms: tuple[int | None, int | None]
    range_ms: tuple[int, int]  # the annotated span: requested range cut to the frames, half-open
    settings: AnnotateSettings
    class_names: list[str]
    class_ids: list[int]
    windows: list[Window]
    probabilities: np.ndarray  # (windows, classes)
    timeline: Timeline
    frames_in_range: int
    frames_decoded: int
    frames_cached_peak: int  # the most frames the cache held at once
    wall_s: float
    skipped_windows: dict[str, int] = field(default_factory=dict)

    @property
    def window_ids(self) -> np.ndarray:
        """The predicted operation id of every window."""
        return np.asarray(self.class_ids, dtype=np.int64)[self.probabilities.argmax(1)]

    @property
    def centres_ms(self) -> np.ndarray:
        return np.asarray([w.centre_ms for w in self.windows], dtype=np.int64)

    @property
    def duration_s(self) -> float:
        return (self.range_ms[1] - self.range_ms[0]) / 1000

    @property
    def realtime_factor(self) -> float:
        """Seconds of recording annotated per wall-clock second."""
        return self.duration_s / self.wall_s if self.wall_s > 0 else math.inf


def annotated_range(
    timestamps_ms: np.ndarray, start_ms: int | None, end_ms: int | None, description: str
) -> tuple[int, int]:
    """The requested [start, end) cut to the frames; an error naming both ranges when no frame is inside."""
    ts = np.asarray(timestamps_ms, dtype=np.int64)
    if start_ms is not None and end_ms is not None and end_ms <= start_ms:
        raise ValueError(f"start ({unix_ms_to_iso(start_ms)}) must be before end ({unix_ms_to_iso(end_ms)})")
    first, last = int(ts[0]), int(ts[-1])
    lo, hi = frames_in(ts, first if start_ms is None else start_ms, last + 1 if end_ms is None else end_ms)
    if hi <= lo:
        asked = (
            f"{'the first frame' if start_ms is None else unix_ms_to_iso(start_ms)} to "
            f"{'the last frame' if end_ms is None else unix_ms_to_iso(end_ms)}"
        )
        raise ValueError(
            f"{description}: no frames in the requested range {asked} (JST); its frames span "
            f"{unix_ms_to_iso(first)} to {unix_ms_to_iso(last)}"
        )
    return int(ts[lo]), int(ts[hi - 1]) + 1


class RecordingAnnotator:
    def __init__(self, inference: VLMInference, settings: AnnotateSettings | None = None):
        self.inference = inference
        self.settings = (settings or AnnotateSettings()).resolved(inference.meta.clips)
        self.class_names = list(inference.prompt.class_names)

    def plan(self, timestamps_ms: np.ndarray, range_ms: tuple[int, int]) -> tuple[list[Window], dict]:
        """Windows over the range, centred at the end of each second (and every stride before it within the
        second); the skipped ones counted by reason."""
        s = self.settings
        ts = np.asarray(timestamps_ms, dtype=np.int64)
        window, stride = round(s.window_s * 1000), round(s.stride_s * 1000)
        start, end = range_ms
        seconds = seconds_grid(start, end)
        framed = set((ts[(ts >= start) & (ts < end)] // 1000 * 1000).tolist())
        windows, skipped = [], {"no_frames": 0, f"fewer_than_{s.min_frames}_frames": 0}
        # the centre grid is anchored at the first second's end (`second + 999`, the instant its 1-Hz label
        # describes); with a stride that divides 1 s, every second's end is a centre
        first = int(seconds[0]) + SECOND_END_MS - (SECOND_END_MS // stride) * stride
        for centre in range(first, int(seconds[-1]) + 1000, stride):
            if centre - centre % 1000 not in framed:
                skipped["no_frames"] += 1
                continue
            w_start, w_end = max(start, centre - window // 2), min(end, centre - window // 2 + window)
            lo, hi = frames_in(ts, w_start, w_end)
            if hi - lo < s.min_frames:
                skipped[f"fewer_than_{s.min_frames}_frames"] += 1
                continue
            picks = self.inference.sampler.select(ts[lo:hi], w_start, w_end)
            windows.append(Window(w_start, w_end, centre, [lo + i for i in picks]))
        return windows, skipped

    def annotate(
        self,
        source: FrameSource,
        start_ms: int | None = None,
        end_ms: int | None = None,
        progress: ProgressFn | None = None,
    ) -> PredictedRecording:
        t0 = time.perf_counter()
        ts = source.timestamps_ms
        range_ms = annotated_range(ts, start_ms, end_ms, source.description)
        windows, skipped = self.plan(ts, range_ms)
        if not windows:
            raise ValueError(
                f"{source.description}: no window of {self.settings.window_s} s between "
                f"{unix_ms_to_iso(range_ms[0])} and {unix_ms_to_iso(range_ms[1])} holds "
                f"{self.settings.min_frames} frames"
            )
        probs = np.empty((len(windows), len(self.class_names)), dtype=np.float64)
        with source.reader() as reader:
            sampler = self.inference.sampler
            cache = SessionFrameCache(sampler, reader, finish=sampler.as_stored)
            b = self.settings.batch_size
            for first in range(0, len(windows), b):
                batch = windows[first : first + b]
                clips = [np.stack(cache.get(w.frames)) for w in batch]
                timing = [{"start_ms": w.start_ms, "end_ms": w.end_ms} for w in batch]
                for row, result in enumerate(self.inference.predict_batch(clips, timing)):
                    probs[first + row] = [result["probabilities"][n] for n in self.class_names]
                if progress is not None:
                    progress(first + len(batch), len(windows), batch[-1].end_ms - range_ms[0], cache.decoded)
            decoded, cached_peak = cache.decoded, cache.peak
        in_range = frames_in(ts, *range_ms)
        centres = np.asarray([w.centre_ms for w in windows], dtype=np.int64)
        timeline = recording_timeline(centres, seconds_grid(*range_ms), ts[in_range[0] : in_range[1]])
        return PredictedRecording(
            source=source.description,
            requested_ms=(start_ms, end_ms),
            range_ms=range_ms,
            settings=self.settings,
            class_names=self.class_names,
            class_ids=list(self.inference.class_ids),
            windows=windows,
            probabilities=probs,
            timeline=timeline,
            frames_in_range=in_range[1] - in_range[0],
            frames_decoded=decoded,
            frames_cached_peak=cached_peak,
            wall_s=time.perf_counter() - t0,
            skipped_windows={k: v for k, v in skipped.items() if v},
        )


def annotate_progress(console) -> tuple[object, ProgressFn]:
    """A rich progress bar over the windows, with the ETA and the real-time factor (recording s / wall s)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    progress = Progress(
        TextColumn("[bold]annotate"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("windows"),
        TextColumn("{task.fields[speed]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
    )
    task = progress.add_task("windows", total=None, speed="")
    t0 = time.perf_counter()

    def update(done: int, total: int, covered_ms: int, decoded: int) -> None:
        wall = max(time.perf_counter() - t0, 1e-9)
        speed = f"{covered_ms / 1000 / wall:.1f}x real time, {decoded} frames decoded"
        progress.update(task, completed=done, total=total, speed=speed)

    return progress, update
