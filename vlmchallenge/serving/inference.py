"""`VLMInference`: load an export folder and classify clips with the training sampler, prompt and scorer.

The frames a client sends go through the same `FrameSampler` (frame choice, timestamp-band crop, resize onto
the 28-px grid) and the same prompt as training; the class comes from ranking the class names, so it is always
valid and comes with per-class probabilities.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vlmchallenge.data.classes import NAME_TO_CLASS
from vlmchallenge.data.frame_sampler import FrameSampler, SamplerConfig
from vlmchallenge.models.collator import Example, PromptCollator
from vlmchallenge.models.exporter import read_export_meta
from vlmchallenge.models.label_scorer import LabelScorer
from vlmchallenge.models.loader import load_processor
from vlmchallenge.models.prompt import PromptBuilder


class BadInput(ValueError):
    """A client error (the API turns it into a 4xx)."""


def decode_image(data: bytes, what: str) -> Image.Image:
    """Open (not yet decode) an image: the sampler decodes only the frames it picks, JPEGs at reduced size."""
    try:
        return Image.open(io.BytesIO(data))
    except Exception:  # PIL raises many types for non-images
        raise BadInput(f"{what}: not a decodable JPEG/PNG image") from None


def decode_video(data: bytes, max_frames_read: int) -> list[Image.Image]:
    import av

    try:
        with av.open(io.BytesIO(data)) as container:
            frames = []
            for frame in container.decode(video=0):
                frames.append(frame.to_image())
                if len(frames) >= max_frames_read:
                    break
    except Exception:
        raise BadInput("video: not a decodable video file") from None
    if not frames:
        raise BadInput("video: contains no frames")
    return frames


def pick_device(device: str | None) -> torch.device:
    if device and device != "auto":
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class VLMInference:
    def __init__(self, export_dir: str | Path, device: str | None = None, dtype: str | None = None):
        from transformers import AutoModelForImageTextToText

        self.export_dir = Path(export_dir)
        self.meta = read_export_meta(self.export_dir)
        self.sampler_cfg = SamplerConfig(**self.meta["sampler"])
        self.sampler = FrameSampler(self.sampler_cfg)
        self.prompt = PromptBuilder(**self.meta["prompt"])
        self.device = pick_device(device)
        if dtype in (None, "auto"):
            dtype = "bfloat16" if self.device.type == "cuda" else "float32"
        self.processor = load_processor(str(self.export_dir), self.sampler_cfg)
        self.model = (
            AutoModelForImageTextToText.from_pretrained(
                self.export_dir, dtype=getattr(torch, dtype), local_files_only=True
            )
            .to(self.device)
            .eval()
        )
        self.scorer = LabelScorer(self.processor.tokenizer, self.prompt)
        self.collate = PromptCollator(self.processor, self.prompt)
        self.class_ids = [NAME_TO_CLASS[n].id for n in self.prompt.class_names]

    def prepare(self, images: list[Image.Image]) -> np.ndarray:
        """Client frames -> the training geometry: chosen evenly, band cropped, resized; (T, H, W, 3) uint8."""
        if not images:
            raise BadInput("a clip needs at least one frame")
        sizes = {im.size for im in images}
        if len(sizes) > 1:
            raise BadInput(f"all frames of a clip must have the same size, got {sorted(sizes)}")
        try:
            return np.stack(self.sampler.sample_images(images))
        except OSError as e:  # truncated or corrupt image data, found when a chosen frame is decoded
            raise BadInput(f"a frame could not be decoded: {e}") from None

    @torch.inference_mode()
    def predict_batch(self, clips: list[np.ndarray]) -> list[dict]:
        """Prepared clips -> one result per clip: label, id, per-class probabilities, latency."""
        start = time.perf_counter()
        batch = self.collate([Example(c, 0, {}) for c in clips])
        batch = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in batch.items()}
        probs = self.scorer.score(self.model, batch).softmax(1)
        latency = (time.perf_counter() - start) * 1000 / max(1, len(clips))
        out = []
        for p in probs:
            i = int(p.argmax())
            out.append(
                {
                    "label": self.prompt.class_names[i],
                    "id": self.class_ids[i],
                    "probabilities": {
                        n: round(float(x), 6) for n, x in zip(self.prompt.class_names, p, strict=True)
                    },
                    "latency_ms": round(latency, 3),
                }
            )
        return out

    def predict(self, images: list[Image.Image]) -> dict:
        return self.predict_batch([self.prepare(images)])[0]
