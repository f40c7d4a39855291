"""Render synthetic OpenPack-like frames: one learnable visual signature per operation.

Each operation is a (shape, motion) pair, as in docs/learnability.md; at `easy` difficulty it also has its own
colour, which a random-initialised tiny VLM learns within minutes on CPU. `medium` keeps large objects but a random
colour (shape + motion only), `hard` uses small objects (about one merged 28 px token) and more noise.
A drifting distractor blob, per-frame noise and the burned-in timestamp band carry no label.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from vlmchallenge.data.jst_time import unix_ms_to_jst

# id -> (shape, motion); pairs share shapes or motions on purpose, so both cues matter at medium/hard.
SIGNATURES: dict[int, tuple[str, str]] = {
    100: ("square", "left_to_right"),
    200: ("square", "up"),
    300: ("disc", "left_to_right"),
    400: ("disc", "grow"),
    500: ("bar", "rotate"),
    600: ("cross", "blink"),
    700: ("triangle", "down"),
    800: ("triangle", "right_to_left"),
    900: ("ring", "diagonal"),
    1000: ("ring", "shrink"),
}
PALETTE: dict[int, tuple[int, int, int]] = {
    100: (230, 25, 75),
    200: (60, 180, 75),
    300: (255, 225, 25),
    400: (0, 130, 200),
    500: (245, 130, 48),
    600: (145, 30, 180),
    700: (70, 240, 240),
    800: (240, 50, 230),
    900: (250, 250, 250),
    1000: (210, 245, 60),  # bright: a dull colour sat inside the background range and was often missed
}


@dataclass(frozen=True)
class Difficulty:
    class_colour: bool
    half_size: tuple[float, float]  # object half-size as a fraction of frame height
    noise_sigma: float


DIFFICULTIES = {
    "easy": Difficulty(class_colour=True, half_size=(0.17, 0.22), noise_sigma=8.0),
    "medium": Difficulty(class_colour=False, half_size=(0.17, 0.22), noise_sigma=12.0),
    "hard": Difficulty(class_colour=False, half_size=(0.08, 0.10), noise_sigma=20.0),
}

MOTION_PERIOD_MS = 2000


@dataclass(frozen=True)
class ObjectSpec:
    """Per-segment randomness: fixed for the segment's whole duration, so motion is continuous."""

    op_id: int
    colour: tuple[int, int, int]
    half_size: float  # fraction of height
    phase0: float


class SceneRenderer:
    """Renders frames of one session (fixed size, background and noise tiles)."""

    def __init__(
        self, width: int, height: int, difficulty: str, rng: np.random.Generator, band_frac: float = 0.1
    ):
        if difficulty not in DIFFICULTIES:
            raise ValueError(
                f"synthetic.difficulty: expected one of {sorted(DIFFICULTIES)}, got {difficulty!r}"
            )
        self.w, self.h = width, height
        self.diff = DIFFICULTIES[difficulty]
        self.rng = rng
        self.band = max(1, round(band_frac * height))
        self.noise = rng.normal(0, self.diff.noise_sigma, size=(6, height, width, 3)).astype(np.float32)
        self.distractor_phase = rng.uniform(0, 2 * math.pi, size=2)
        self.set_style()

    def set_style(self) -> None:
        """A new background colour and distractor colour. Called per segment: with only a few sessions to train
        on, per-session styles let a model key on a session's look; per-segment styles carry no label."""
        bg = self.rng.integers(40, 110, size=3).astype(np.float32)
        self.backgrounds = [np.clip(bg + n, 0, 255).astype(np.uint8) for n in self.noise]
        self.distractor_colour = tuple(int(c) for c in self.rng.integers(0, 256, size=3))
        try:
            self.font = ImageFont.load_default(size=max(8, int(self.band * 0.7)))
        except (TypeError, OSError):  # Pillow without FreeType
            self.font = ImageFont.load_default()

    def object_for(self, op_id: int) -> ObjectSpec:
        colour = (
            PALETTE[op_id] if self.diff.class_colour else tuple(int(c) for c in self.rng.integers(0, 256, 3))
        )
        return ObjectSpec(
            op_id, colour, float(self.rng.uniform(*self.diff.half_size)), float(self.rng.uniform(0, 0.3))
        )

    def render(self, t_ms: int, obj: ObjectSpec | None, seg_start_ms: int, frame_no: int) -> Image.Image:
        image = Image.fromarray(self.backgrounds[frame_no % len(self.backgrounds)])
        draw = ImageDraw.Draw(image)
        self._draw_distractor(draw, t_ms)
        if obj is not None:
            self._draw_object(draw, obj, t_ms - seg_start_ms, t_ms)
        draw.rectangle((0, 0, self.w, self.band - 1), fill=(0, 0, 0))
        stamp = unix_ms_to_jst(t_ms).strftime("%Y-%m-%d %H:%M:%S.%f")
        draw.text(
            (2, max(0, (self.band - self.font.size) // 2) if hasattr(self.font, "size") else 1),
            stamp,
            fill=(255, 255, 255),
            font=self.font,
        )
        return image

    def _draw_distractor(self, draw: ImageDraw.ImageDraw, t_ms: int) -> None:
        s = t_ms / 7000.0
        cx = self.w * (0.5 + 0.4 * math.sin(s + self.distractor_phase[0]))
        cy = self.band + (self.h - self.band) * (0.5 + 0.4 * math.sin(0.7 * s + self.distractor_phase[1]))
        r = 0.12 * self.h
        draw.ellipse((cx - r, cy - 0.7 * r, cx + r, cy + 0.7 * r), fill=self.distractor_colour)

    def _draw_object(self, draw: ImageDraw.ImageDraw, obj: ObjectSpec, dt_ms: int, t_ms: int) -> None:
        shape, motion = SIGNATURES[obj.op_id]
        phase = (dt_ms / MOTION_PERIOD_MS + obj.phase0) % 1.0
        top, h = self.band, self.h - self.band
        half = obj.half_size * self.h
        cx, cy, angle, scale = self.w / 2, top + h / 2, 0.0, 1.0
        span_x, span_y = self.w / 2 - half * 1.2, h / 2 - half * 1.2
        if motion == "left_to_right":
            cx += (2 * phase - 1) * span_x
        elif motion == "right_to_left":
            cx -= (2 * phase - 1) * span_x
        elif motion == "up":
            cy -= (2 * phase - 1) * span_y
        elif motion == "down":
            cy += (2 * phase - 1) * span_y
        elif motion == "diagonal":
            cx += (2 * phase - 1) * span_x
            cy -= (2 * phase - 1) * span_y
        elif motion == "grow":
            scale = 0.45 + 0.75 * phase
        elif motion == "shrink":
            scale = 1.2 - 0.75 * phase
        elif motion == "rotate":
            angle = phase * math.pi
        elif motion == "blink" and (t_ms // 267) % 2:
            return
        _draw_shape(draw, shape, cx, cy, half * scale, angle, obj.colour)


def _rotated(
    points: list[tuple[float, float]], cx: float, cy: float, angle: float
) -> list[tuple[float, float]]:
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in points]


def _draw_shape(draw, shape: str, cx: float, cy: float, r: float, angle: float, colour) -> None:
    if shape == "disc":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
    elif shape == "ring":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=colour, width=max(2, int(r * 0.35)))
    elif shape == "square":
        draw.polygon(_rotated([(-r, -r), (r, -r), (r, r), (-r, r)], cx, cy, angle), fill=colour)
    elif shape == "bar":
        draw.polygon(
            _rotated(
                [(-1.4 * r, -0.3 * r), (1.4 * r, -0.3 * r), (1.4 * r, 0.3 * r), (-1.4 * r, 0.3 * r)],
                cx,
                cy,
                angle,
            ),
            fill=colour,
        )
    elif shape == "triangle":
        draw.polygon(
            _rotated([(0, -r), (0.95 * r, 0.8 * r), (-0.95 * r, 0.8 * r)], cx, cy, angle), fill=colour
        )
    elif shape == "cross":
        t = 0.33 * r
        for pts in ([(-r, -t), (r, -t), (r, t), (-r, t)], [(-t, -r), (t, -r), (t, r), (-t, r)]):
            draw.polygon(_rotated(pts, cx, cy, angle), fill=colour)
    else:  # pragma: no cover - SIGNATURES is closed
        raise ValueError(shape)
