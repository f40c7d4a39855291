"""Which frames of a clip, at what size: the one implementation used by shard writing and by serving.

- `uniform`: `num_frames` at the centres of equal sub-intervals of the clip (nearest frame by timestamp).
- `fps`: one frame every 1/`fps` s, capped at `max_frames` (spread uniformly when capped), rounded down to an
  even count because every supported family merges frames in temporal pairs.
Frames are cropped (the burned-in timestamp band at the top, `crop_top` of the height), then resized keeping
aspect onto the model family's token grid (sides multiples of `patch_factor` inside [min_pixels, max_pixels]), so
the processor never resizes again and token counts are predictable.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image

from vlmchallenge.data.frame_source import FrameReader


def per_frame_size(
    height: int, width: int, grid_px: int, min_pixels: int, max_pixels: int
) -> tuple[int, int]:
    """(h, w) keeping aspect: sides multiples of `grid_px`, area inside [min_pixels, max_pixels].

    The per-frame rule of the families' processors (transformers' `smart_resize` of the per-frame image
    processors), written here because the data layer comes before the models layer; a test holds it equal to
    the library's function over many sizes (tests/test_families.py), so a processor given the same bounds keeps
    such frames as they are."""
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"frame {width}x{height}: aspect ratio above 200 cannot be cut into tokens")
    h, w = round(height / grid_px) * grid_px, round(width / grid_px) * grid_px
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(grid_px, math.floor(height / beta / grid_px) * grid_px)
        w = max(grid_px, math.floor(width / beta / grid_px) * grid_px)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h, w = math.ceil(height * beta / grid_px) * grid_px, math.ceil(width * beta / grid_px) * grid_px
    return h, w


@dataclass
class SamplerConfig:
    strategy: str = "uniform"  # uniform | fps
    num_frames: int = 4
    fps: float = 2.0
    max_frames: int = 16
    max_pixels: int = 112 * 112
    min_pixels: int = 56 * 56
    # one token's width in pixels, patch x spatial merge: 28 or 32 by family (docs/families.md §3); training
    # checks it against the model's family before any weights load
    patch_factor: int = 28
    crop_top: float = 0.1  # fraction of the height removed at the top (OpenPack's timestamp overlay)
    jpeg_quality: int = 90

    def validate(self) -> None:
        if self.strategy not in ("uniform", "fps"):
            raise ValueError(f"sampler.strategy: expected 'uniform' or 'fps', got {self.strategy!r}")
        if self.num_frames < 1 or self.max_frames < 1:
            raise ValueError("sampler.num_frames and sampler.max_frames must be >= 1")
        if self.fps <= 0:
            raise ValueError(f"sampler.fps must be > 0, got {self.fps}")
        if not 0 <= self.crop_top < 1:
            raise ValueError(f"sampler.crop_top: expected a fraction in [0, 1), got {self.crop_top}")
        if not self.min_pixels <= self.max_pixels:
            raise ValueError("sampler.min_pixels must be <= sampler.max_pixels")
        if not 1 <= self.jpeg_quality <= 95:
            raise ValueError(f"sampler.jpeg_quality: expected 1..95, got {self.jpeg_quality}")


class FrameSampler:
    def __init__(self, cfg: SamplerConfig):
        cfg.validate()
        self.cfg = cfg
        self._sizes: dict[tuple[int, int], tuple[int, int]] = {}

    # ------------------------------------------------------------ selection (no decoding)

    def frame_count(self, duration_ms: int) -> int:
        if self.cfg.strategy == "uniform":
            return self.cfg.num_frames
        n = min(self.cfg.max_frames, max(1, math.floor(duration_ms * self.cfg.fps / 1000)))
        return max(2, n - n % 2) if self.cfg.max_frames >= 2 else 1

    def select(self, frame_ts_ms: np.ndarray | tuple[int, ...], start_ms: int, end_ms: int) -> list[int]:
        """Positions (into `frame_ts_ms`) of the frames nearest the target times of [start, end)."""
        ts = np.asarray(frame_ts_ms, dtype=np.int64)
        if len(ts) == 0:
            raise ValueError("cannot sample frames from an empty clip")
        n = self.frame_count(end_ms - start_ms)
        if len(ts) == 1:
            return [0] * n
        targets = start_ms + (np.arange(n) + 0.5) * (end_ms - start_ms) / n
        right = np.clip(np.searchsorted(ts, targets), 1, len(ts) - 1)
        left = right - 1
        nearer_left = np.abs(targets - ts[left]) <= np.abs(ts[right] - targets)
        return [int(i) for i in np.where(nearer_left, left, right)]

    def select_evenly(self, available: int) -> list[int]:
        """For frames without timestamps (serving): the same rule over frame positions."""
        return self.select(np.arange(available) * 1000, 0, available * 1000)

    # ------------------------------------------------------------ geometry

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """(w, h) after cropping the top band and resizing onto the token grid."""
        key = (width, height)
        if key not in self._sizes:
            cropped_h = height - round(self.cfg.crop_top * height)
            h, w = per_frame_size(
                cropped_h, width, self.cfg.patch_factor, self.cfg.min_pixels, self.cfg.max_pixels
            )
            self._sizes[key] = (w, h)
        return self._sizes[key]

    def draft_size(self, width: int, height: int) -> tuple[int, int]:
        """Smallest full-frame size that still covers the output after the crop (for JPEG draft decoding)."""
        w, h = self.output_size(width, height)
        return w, math.ceil(h / (1 - self.cfg.crop_top))

    def process(self, image: Image.Image, source_size: tuple[int, int] | None = None) -> np.ndarray:
        """Crop the top band and resize one frame -> uint8 (H, W, 3). `source_size` is the undrafted size.

        torchvision's antialiased bicubic is the resize transformers' fast video processors use, and several times
        faster than PIL's at these sizes (the resize was the largest cost after decoding, docs/benchmarks.md).
        """
        w_out, h_out = self.output_size(*(source_size or image.size))
        if image.mode != "RGB":
            image = image.convert("RGB")
        pixels = np.asarray(image)
        pixels = pixels[round(self.cfg.crop_top * pixels.shape[0]) :]
        if pixels.shape[:2] == (h_out, w_out):
            return np.ascontiguousarray(pixels)
        chw = torch.from_numpy(pixels.copy() if not pixels.flags.writeable else pixels).permute(2, 0, 1)
        out = TF.resize(chw, [h_out, w_out], interpolation=TF.InterpolationMode.BICUBIC, antialias=True)
        return out.permute(1, 2, 0).contiguous().numpy()

    def encode(self, pixels: np.ndarray) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="JPEG", quality=self.cfg.jpeg_quality)
        return buf.getvalue()

    def as_trained(self, image: Image.Image) -> np.ndarray:
        """One client frame -> the pixels training saw for the same file: the same DCT-scaled JPEG decode, crop
        and resize as `prepare`, then the shards' JPEG round trip. Pass an image opened but not yet loaded, so
        a JPEG can still be draft-decoded."""
        source_size = image.size
        if image.format == "JPEG":
            image.draft("RGB", self.draft_size(*source_size))
        return self.as_stored(image, source_size)

    def as_stored(self, image: Image.Image, source_size: tuple[int, int]) -> np.ndarray:
        """A frame already decoded (draft-decoded to `draft_size` when it was a JPEG) -> the pixels a shard
        holds for it: crop, resize, then the shards' JPEG round trip. `source_size` is the undrafted size."""
        with Image.open(io.BytesIO(self.encode(self.process(image, source_size)))) as stored:
            return np.asarray(stored.convert("RGB"))


class SessionFrameCache:
    """A session's frames, each decoded once (draft-decoded, then `finish`ed) though overlapping clips share them.
    The one cache of `prepare` (`finish`: cropped, resized, JPEG-encoded bytes for the shards) and of `annotate`
    (`FrameSampler.as_stored`: the pixels those bytes decode to).

    Clips arrive in time order, so the frames before the current clip's first frame are never asked for again and
    are dropped: the cache holds at most the frames of the clips that overlap the current one (`peak` says how
    many it held)."""

    def __init__(
        self,
        sampler: FrameSampler,
        reader: FrameReader,
        finish: Callable[[Image.Image, tuple[int, int]], Any] | None = None,
    ):
        self.sampler, self.reader = sampler, reader
        self.finish = finish or (lambda image, size: sampler.encode(sampler.process(image, size)))
        self.source_size: tuple[int, int] | None = None
        self._cache: dict[int, Any] = {}
        self.decoded = self.peak = 0

    def get(self, indices: list[int]) -> list:
        if indices:
            low = min(indices)
            for k in [k for k in self._cache if k < low]:
                del self._cache[k]
        out = []
        for i in indices:
            if i not in self._cache:
                self._cache[i] = self._decode(i)
            out.append(self._cache[i])
        self.peak = max(self.peak, len(self._cache))
        return out

    def _decode(self, index: int):
        if self.source_size is None:
            self.source_size = self.reader.frame_size(index)
        image = self.reader.read(index, self.sampler.draft_size(*self.source_size))
        self.decoded += 1
        return self.finish(image, self.source_size)
