"""Where a family's processor puts the pixels of a batch's clips, and which rows of them belong to which clip.

The label scorer cuts clips out of a batch, and training logs the vision tokens per clip; both ask the family's
`VideoInputs` instead of knowing a processor's keys:
- `PatchGrid`: every clip's patches stacked in one `pixel_values_videos`, clip i owning the product of its
  `video_grid_thw` row; per-clip tensors (`video_grid_thw`, `second_per_grid_ts`) beside it.
- `FrameTiles`: every frame one square tile of `pixel_values`, clip i owning as many rows as it has frames. The
  processor keeps no count per clip, so the collator adds one (`FRAMES_PER_CLIP`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

FRAMES_PER_CLIP = "frames_per_clip"  # (B,) frames of each clip in a collated batch; not a model input


@dataclass(frozen=True)
class PatchGrid:
    merge: int  # patches merged per side into one language-model token
    pixels: str = "pixel_values_videos"
    per_clip: tuple[str, ...] = ("video_grid_thw", "second_per_grid_ts")

    def rows_per_clip(self, batch: dict) -> list[int]:
        return batch["video_grid_thw"].prod(-1).tolist()

    def vision_tokens(self, batch: dict) -> torch.Tensor:
        """(B,) language-model tokens of each clip's video."""
        return batch["video_grid_thw"].prod(-1) // self.merge**2


@dataclass(frozen=True)
class FrameTiles:
    patch: int  # px per patch side
    merge: int  # patches merged per side into one token (InternVL's pixel shuffle at ratio 1/merge)
    pixels: str = "pixel_values"
    per_clip: tuple[str, ...] = ()

    def rows_per_clip(self, batch: dict) -> list[int]:
        return batch[FRAMES_PER_CLIP].tolist()

    def vision_tokens(self, batch: dict) -> torch.Tensor:
        side = batch[self.pixels].shape[-1] // (self.patch * self.merge)
        return batch[FRAMES_PER_CLIP] * side * side


VideoInputs = PatchGrid | FrameTiles


def select_clips(layout: VideoInputs, batch: dict, rows: list[int]) -> dict:
    """The pixels and per-clip tensors of clips `rows` of a batch, in that order (text keys are the caller's)."""
    offsets = [0]
    for n in layout.rows_per_clip(batch):
        offsets.append(offsets[-1] + n)
    out = {key: batch[key][rows] for key in (*layout.per_clip, FRAMES_PER_CLIP) if key in batch}
    out[layout.pixels] = torch.cat([batch[layout.pixels][offsets[r] : offsets[r + 1]] for r in rows])
    return out
