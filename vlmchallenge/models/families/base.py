"""What differs between model families, declared once per family (docs/families.md).

A `Family` is looked up by the checkpoint's `config.model_type` (`families.family_of`), so a hub id or a local
folder selects its family by its own config. Everything outside `models/families/` asks the family; no other
module names one (tests/test_families.py greps for that).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from vlmchallenge.models.families.video_inputs import VideoInputs

if TYPE_CHECKING:
    from vlmchallenge.models.families.tiny_spec import TinyModelSpec


class TimeEncoding(StrEnum):
    """How a family tells the language model when each frame was taken."""

    NONE = "none"  # frame order only (temporal position ids count frame pairs)
    FRAME_LABELS = "frame-labels"  # frame order only, written as `Frame{i}:` before each frame's tokens
    MROPE_SECONDS = "mrope-seconds"  # absolute time in the temporal M-RoPE index (`second_per_grid_ts`)
    TEXT_TIMESTAMPS = "text-timestamps"  # `<t seconds>` text before each frame group; positions count groups


TIMESTAMP_TOKENS = 6  # `<0.5 seconds>` (see `Family.time_text_tokens`)
FRAME_LABEL_TOKENS = (
    6  # `Frame1: <img>...</img>\n`: `Frame`, the digit, `:`, ` `, `<img>`, `</img>`, `\n` less one
)


class PixelBudget(StrEnum):
    """What the processor's `size` (`shortest_edge` / `longest_edge`, in pixels) bounds."""

    PER_FRAME = "per-frame"  # H x W of each frame
    PER_CLIP = "per-clip"  # T x H x W over the whole clip
    TILE = (
        "tile"  # none: every frame is resized to the vision tower's square input (`vision_config.image_size`)
    )


@dataclass(frozen=True)
class VideoGeometry:
    """How many language-model tokens a clip costs: `patch` px patches over `temporal_patch` frames, merged
    `merge` x `merge` per token."""

    patch: int
    temporal_patch: int
    merge: int
    budget: PixelBudget

    @property
    def grid_px(self) -> int:
        """Frame sides must be multiples of this (one token's width in pixels)."""
        return self.patch * self.merge

    @property
    def keeps_sampled_size(self) -> bool:
        """Whether frames reach the vision tower at the size the sampler cut them (else: resized to a tile)."""
        return self.budget is not PixelBudget.TILE

    def processed_size(self, width: int, height: int, model_config) -> tuple[int, int]:
        """(width, height) of a frame as the vision tower sees it, for a sampled frame of width x height."""
        if self.keeps_sampled_size:
            return width, height
        side = model_config.vision_config.image_size
        side = side if isinstance(side, int) else side[0]
        return side, side

    def grid(self, num_frames: int, width: int, height: int) -> tuple[int, int, int]:
        """(t, h, w) patches of a clip; an odd frame count repeats the last frame."""
        return math.ceil(num_frames / self.temporal_patch), height // self.patch, width // self.patch

    def tokens_per_clip(self, num_frames: int, width: int, height: int) -> int:
        t, h, w = self.grid(num_frames, width, height)
        return t * h * w // self.merge**2

    def processor_size(self, min_pixels: int, max_pixels: int, max_frames: int) -> dict[str, int] | None:
        """The video processor's `size` that keeps frames of [min_pixels, max_pixels] per frame as they are
        (None: a tile family's processor keeps its own size, the vision tower's input).

        A per-clip budget counts T x H x W, so the bounds scale with the frames of one clip (Qwen3-VL's
        `smart_resize(num_frames, ...)`)."""
        if not self.keeps_sampled_size:
            return None
        if self.budget is PixelBudget.PER_FRAME:
            return {"shortest_edge": min_pixels, "longest_edge": max_pixels}
        frames = max_frames + max_frames % self.temporal_patch
        return {"shortest_edge": min_pixels, "longest_edge": max_pixels * frames}


@dataclass(frozen=True)
class QLoraPolicy:
    allowed: bool
    why: str


@dataclass(frozen=True)
class VramTerms:
    """Names the VRAM planner reads off a meta-device model of the family."""

    vision_prefixes: tuple[str, ...]  # the vision tower and its merger/projector: frozen, never 4-bit
    moe_experts: str | None = None  # substring of the fused routed-expert parameters (MoE), if any


@dataclass(frozen=True)
class LigerPatch:
    apply: str  # the liger_kernel.transformers function that patches the family
    extra_kernels: tuple[
        str, ...
    ] = ()  # kernels beyond RoPE/RMSNorm/SwiGLU it takes, e.g. the vision LayerNorm


@dataclass(frozen=True)
class Family:
    name: str  # a transformers `model_type`, used in config and folder names
    title: str  # how people write it
    model_types: tuple[str, ...]  # every `config.model_type` this family loads
    model_class: str  # the transformers class `AutoModelForImageTextToText` resolves to (dense)
    processor_class: str
    geometry: VideoGeometry
    time_encoding: TimeEncoding
    lora_targets: str  # PEFT `target_modules` regex: the language model's linears only
    qlora: QLoraPolicy
    fsdp_wrap: tuple[str, ...]  # decoder-layer and vision-block classes (the model's `_no_split_modules`)
    vram: VramTerms
    mrope_rows: int  # position-id rows the language model takes for text continuing a prompt (1: plain RoPE)
    video_inputs: VideoInputs  # where the processor puts each clip's pixels in a batch
    # extra `apply_chat_template` arguments, e.g. thinking off: the label must follow the assistant header
    chat_template_kwargs: dict[str, object] = field(default_factory=dict)
    example_hub_id: str = ""
    liger: LigerPatch | None = None  # Liger's Triton kernels for this family, where Liger has a patch
    build_tiny: Callable[[TinyModelSpec, Path], None] | None = None  # writes a tiny model + processor folder
    # model types of the language models inside (where their decoder-layer classes live), e.g. for FSDP
    text_model_types: tuple[str, ...] = ()

    def __str__(self) -> str:
        return self.title

    def fsdp_wrap_paths(self) -> list[str]:
        """`fsdp_wrap` as import paths (each class in the modeling module of one of the family's model types)."""
        import importlib

        paths = []
        for name in self.fsdp_wrap:
            for model_type in self.model_types + self.text_model_types:
                module = f"transformers.models.{model_type}.modeling_{model_type}"
                if hasattr(importlib.import_module(module), name):
                    paths.append(f"{module}.{name}")
                    break
            else:
                raise ValueError(
                    f"{self}: no modeling module of {self.model_types + self.text_model_types} defines {name}"
                )
        return paths

    @property
    def kept_out_of_4bit(self) -> list[str]:
        """Module prefixes QLoRA leaves in 16 bits: the vision tower (with its merger) and lm_head."""
        return [*self.vram.vision_prefixes, "lm_head"]

    def clip_tokens(self, num_frames: int, width: int, height: int, model_config) -> int:
        """Language-model tokens one clip of sampled width x height frames adds to the prompt: its vision tokens
        and the text its time encoding writes."""
        w, h = self.geometry.processed_size(width, height, model_config)
        return self.geometry.tokens_per_clip(num_frames, w, h) + self.time_text_tokens(num_frames)

    def time_text_tokens(self, num_frames: int) -> int:
        """Text tokens the time encoding adds to one clip (Qwen's pre-tokenizer gives every digit its own token):
        - text timestamps: per frame group, `<t.t seconds>` (`<`, a digit, `.`, a digit, ` seconds`, `>`; clips
          under 10 s) and the group's own `<|vision_start|>`/`<|vision_end|>` pair (transformers'
          `Qwen3VLProcessor.replace_video_token`);
        - frame labels: per frame, `Frame{i}: <img>` and `</img>` (`Frame`, the digits, `:`, ` `, and the two
          tags), the frames joined by newlines (transformers' `InternVLProcessor.replace_video_token`)."""
        if self.time_encoding is TimeEncoding.TEXT_TIMESTAMPS:
            return math.ceil(num_frames / self.geometry.temporal_patch) * (TIMESTAMP_TOKENS + 2)
        if self.time_encoding is TimeEncoding.FRAME_LABELS:
            digits = sum(len(str(i)) for i in range(1, num_frames + 1))
            return num_frames * FRAME_LABEL_TOKENS + digits - 1
        return 0
