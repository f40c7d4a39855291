"""Build labelled clips of one session by timestamp alignment (never by frame number).

Modes:
- `segment`: one clip per annotated segment, optionally capped to `max_duration_s` around its centre.
- `window`: fixed `window_s` every `stride_s` over the session's frames; the label is the operation at the
  window centre (`label_rule=center`) or the one covering most of it (`majority`). Windows over gaps or outside
  the annotations are Null (8100) and kept or dropped by `keep_null`.
All intervals are half-open `[start, end)`. Clips with fewer than `min_frames` frames are skipped, with the reason.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from vlmchallenge.data.annotation_parser import OperationAnnotation
from vlmchallenge.data.classes import ID_TO_CLASS, NULL_ID


@dataclass
class ClipConfig:
    mode: str = "window"  # segment | window
    max_duration_s: float | None = None  # segment mode: cap long segments around their centre
    window_s: float = 2.0
    stride_s: float = 1.0
    label_rule: str = "center"  # center | majority
    keep_null: bool = False
    min_frames: int = 4
    # keep only clips of these operation ids (e.g. [100, 300] for a quick two-class check); null = all
    operations: list[int] | None = None

    def validate(self) -> None:
        if self.mode not in ("segment", "window"):
            raise ValueError(f"clips.mode: expected 'segment' or 'window', got {self.mode!r}")
        if self.label_rule not in ("center", "majority"):
            raise ValueError(f"clips.label_rule: expected 'center' or 'majority', got {self.label_rule!r}")
        if self.window_s <= 0 or self.stride_s <= 0:
            raise ValueError(
                f"clips.window_s and clips.stride_s must be > 0, got {self.window_s}, {self.stride_s}"
            )
        if self.max_duration_s is not None and self.max_duration_s <= 0:
            raise ValueError(f"clips.max_duration_s must be > 0 or null, got {self.max_duration_s}")
        if self.min_frames < 1:
            raise ValueError(f"clips.min_frames must be >= 1, got {self.min_frames}")
        if self.operations is not None:
            unknown = sorted(set(self.operations) - set(ID_TO_CLASS))
            if unknown or not self.operations:
                raise ValueError(
                    f"clips.operations: expected a non-empty list of OpenPack operation ids, got {self.operations}"
                )


@dataclass(frozen=True)
class Clip:
    user: str
    session: str
    box: int  # -1 when the clip is Null / has no segment
    label_id: int
    start_ms: int
    end_ms: int  # exclusive
    frame_indices: tuple[int, ...]  # indices into the session's frame source
    frame_ts_ms: tuple[int, ...]


@dataclass
class ClipBuildResult:
    clips: list[Clip]
    skipped: Counter = field(default_factory=Counter)  # reason -> count


def frames_in(timestamps_ms: np.ndarray, start_ms: int, end_ms: int) -> tuple[int, int]:
    """Index range [lo, hi) of frames with start <= t < end."""
    lo = int(np.searchsorted(timestamps_ms, start_ms, side="left"))
    hi = int(np.searchsorted(timestamps_ms, end_ms, side="left"))
    return lo, hi


def _majority_label(ann: OperationAnnotation, start: int, end: int) -> tuple[int, int]:
    """(op_id, box) covering most of [start, end); uncovered time counts as Null. Ties go to the earlier one."""
    cover: dict[int, int] = {}
    boxes: dict[int, int] = {}
    covered = 0
    for seg in ann.segments:
        if seg.end_ms <= start:
            continue
        if seg.start_ms >= end:
            break
        overlap = min(seg.end_ms, end) - max(seg.start_ms, start)
        cover[seg.op_id] = cover.get(seg.op_id, 0) + overlap
        boxes.setdefault(seg.op_id, seg.box)
        covered += overlap
    cover[NULL_ID] = cover.get(NULL_ID, 0) + (end - start - covered)
    best = max(cover.items(), key=lambda kv: kv[1])[0]  # dict order = time order, max keeps the first tie
    return best, boxes.get(best, -1)


def build_clips(ann: OperationAnnotation, timestamps_ms: np.ndarray, cfg: ClipConfig) -> ClipBuildResult:
    cfg.validate()
    result = ClipBuildResult(clips=[])

    def emit(label: int, box: int, start: int, end: int) -> None:
        lo, hi = frames_in(timestamps_ms, start, end)
        if cfg.operations is not None and label not in cfg.operations:
            result.skipped["excluded_operation"] += 1
        elif hi - lo == 0:
            result.skipped["no_frames"] += 1
        elif hi - lo < cfg.min_frames:
            result.skipped[f"fewer_than_{cfg.min_frames}_frames"] += 1
        else:
            idx = tuple(range(lo, hi))
            ts = tuple(int(t) for t in timestamps_ms[lo:hi])
            result.clips.append(Clip(ann.user, ann.session, box, label, start, end, idx, ts))

    if cfg.mode == "segment":
        cap = None if cfg.max_duration_s is None else round(cfg.max_duration_s * 1000)
        for seg in ann.segments:
            if seg.op_id == NULL_ID and not cfg.keep_null:
                result.skipped["null_label"] += 1
                continue
            start, end = seg.start_ms, seg.end_ms
            if cap is not None and end - start > cap:
                start = start + (end - start - cap) // 2
                end = start + cap
            emit(seg.op_id, seg.box, start, end)
        return result

    if len(timestamps_ms) == 0:
        return result
    window, stride = round(cfg.window_s * 1000), round(cfg.stride_s * 1000)
    first, last = int(timestamps_ms[0]), int(timestamps_ms[-1])
    # Windows on a grid anchored at the first frame; the last window still has to fit before the last frame.
    for start in range(first, last - window + 2, stride):
        end = start + window
        if cfg.label_rule == "center":
            seg = ann.segment_at(start + window // 2)
            label, box = (NULL_ID, -1) if seg is None else (seg.op_id, seg.box)
        else:
            label, box = _majority_label(ann, start, end)
        if label == NULL_ID and not cfg.keep_null:
            result.skipped["null_label"] += 1
            continue
        emit(label, box, start, end)
    return result
