"""The sliding windows of a whole-recording annotation: their settings and how they resolve against the export."""

from __future__ import annotations

from dataclasses import dataclass

from vlmchallenge.data.clip_builder import ClipConfig


@dataclass
class AnnotateSettings:
    """The windows `annotate` scores (each None: the export's clip setting) and how many per forward pass; the
    one default of each, for the annotate command, `POST /annotate` and `serve`'s `annotate_batch_size`."""

    window_s: float | None = None  # None: the export's clips.window_s
    stride_s: float | None = None
    min_frames: int | None = None
    batch_size: int = 8

    def resolved(self, export_clips: ClipConfig) -> AnnotateSettings:
        out = AnnotateSettings(
            self.window_s if self.window_s is not None else float(export_clips.window_s),
            self.stride_s if self.stride_s is not None else float(export_clips.stride_s),
            self.min_frames if self.min_frames is not None else int(export_clips.min_frames),
            self.batch_size,
        )
        if out.window_s <= 0 or out.stride_s <= 0:
            raise ValueError(f"window_s and stride_s must be > 0, got {out.window_s}, {out.stride_s}")
        if out.min_frames < 1 or out.batch_size < 1:
            raise ValueError(
                f"min_frames and batch_size must be >= 1, got {out.min_frames}, {out.batch_size}"
            )
        return out
