"""Qwen2-VL's video geometry: how many language-model tokens a clip costs (Qwen2-VL paper, arXiv:2409.12191
§2.1; docs/tiny-vlm.md §3). 14-px patches, frames merged in temporal pairs, 2x2 patches merged per token."""

from __future__ import annotations

import math

import torch

PATCH_SIZE = 14
TEMPORAL_PATCH = 2
SPATIAL_MERGE = 2


def video_grid(num_frames: int, width: int, height: int) -> tuple[int, int, int]:
    """(t, h, w) patches of a clip; an odd frame count repeats the last frame."""
    return math.ceil(num_frames / TEMPORAL_PATCH), height // PATCH_SIZE, width // PATCH_SIZE


def vision_tokens(video_grid_thw: torch.Tensor) -> torch.Tensor:
    """Tokens per clip from the processor's `video_grid_thw` rows."""
    return video_grid_thw.prod(-1) // SPATIAL_MERGE**2


def vision_tokens_per_clip(num_frames: int, width: int, height: int) -> int:
    return int(vision_tokens(torch.tensor(video_grid(num_frames, width, height))))
