"""`VLMInference`: load an export folder and classify clips with the training sampler, prompt and scorer.

The frames a client sends go through the same `FrameSampler` (frame choice, timestamp-band crop, resize onto
the 28-px grid) and the same prompt as training; the class comes from ranking the class names, so it is always
valid and comes with per-class probabilities.
"""

from __future__ import annotations

import io
import os
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vlmchallenge.data.classes import NAME_TO_CLASS
from vlmchallenge.data.frame_sampler import FrameSampler
from vlmchallenge.models.collator import Example, PromptCollator
from vlmchallenge.models.export_meta import ExportMeta
from vlmchallenge.models.label_scorer import LabelScorer
from vlmchallenge.models.loader import load_processor
from vlmchallenge.models.video_timing import untimed_clip_ms


class BadInput(ValueError):
    """A client error (the API turns it into a 4xx)."""


def decode_image(data: bytes, what: str, max_pixels: int | None = None) -> Image.Image:
    """Open (not yet decode) an image: the sampler decodes only the frames it picks, JPEGs at reduced size.

    `Image.open` reads only the header, so the size is checked before a single pixel is decoded: a small file
    declaring huge dimensions (a decompression bomb) is a client error, never a decode. PIL's own guard
    (`Image.MAX_IMAGE_PIXELS`: a warning above it, `DecompressionBombError` above twice it) is made an error."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise BadInput(
            f"{what}: image dimensions over {Image.MAX_IMAGE_PIXELS} pixels (a decompression bomb); "
            f"at most {max_pixels or Image.MAX_IMAGE_PIXELS} pixels per frame"
        ) from None
    except Exception:  # PIL raises many types for non-images
        raise BadInput(f"{what}: not a decodable JPEG/PNG image") from None
    check_pixels(image.width, image.height, max_pixels, what)
    return image


def check_pixels(width: int, height: int, max_pixels: int | None, what: str) -> None:
    if max_pixels is not None and width * height > max_pixels:
        raise BadInput(f"{what}: frame is {width}x{height}; at most {max_pixels} pixels per frame")


def decode_video(data: bytes, max_frames_read: int, max_pixels: int | None = None) -> list[Image.Image]:
    import av

    try:
        container = av.open(io.BytesIO(data))
    except Exception:
        raise BadInput("video: not a decodable video file") from None
    with container:
        if not container.streams.video:
            raise BadInput("video: contains no video stream")
        codec = container.streams.video[0].codec_context  # the size from the stream header, before decoding
        check_pixels(codec.width, codec.height, max_pixels, "video")
        frames = []
        try:
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


def default_decode_threads() -> int:
    """One decode thread per core this process may use, at most 8 (the default batch holds 8 clips)."""
    return max(
        1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    )


def clip_problem(images: list[Image.Image]) -> str | None:
    if not images:
        return "a clip needs at least one frame"
    sizes = {im.size for im in images}
    if len(sizes) > 1:
        return f"all frames of a clip must have the same size, got {sorted(sizes)}"
    return None


class VLMInference:
    def __init__(
        self,
        export_dir: str | Path,
        device: str | None = None,
        dtype: str | None = None,
        decode_threads: int | None = None,
    ):
        from transformers import AutoModelForImageTextToText

        self.export_dir = Path(export_dir)
        self.meta = ExportMeta.read(self.export_dir)
        self.sampler_cfg = self.meta.sampler
        self.sampler = FrameSampler(self.sampler_cfg)
        self.prompt = self.meta.prompt
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
        # frames without timestamps span one training clip, for the video time encoding (docs/tiny-vlm.md §4)
        self.untimed_clip_ms = untimed_clip_ms(self.meta.clips)
        # PIL's JPEG decode and encode and torch's resize release the GIL, so the chosen frames of a clip, and
        # of every clip in a batch, are decoded at once in threads (docs/serving.md §7)
        self.decode_threads = decode_threads or default_decode_threads()
        self.decode_pool = ThreadPoolExecutor(self.decode_threads, thread_name_prefix="frame-decode")

    def prepare_clip(self, images: list[Image.Image]) -> np.ndarray:
        """Client frames -> the training geometry: chosen evenly, band cropped, resized; (T, H, W, 3) uint8."""
        clip = self.prepare_clips([images])[0]
        if isinstance(clip, BadInput):
            raise clip
        return clip

    def prepare_clips(self, clips: list[list[Image.Image]]) -> list[np.ndarray | BadInput]:
        """Several clips at once (`prepare` of each), every chosen frame decoded in the thread pool. Per clip its
        array, or the `BadInput` that stopped it: one bad clip in a batch must not fail the others."""
        out: list[np.ndarray | BadInput | None] = [None] * len(clips)
        chosen: dict[int, list[int]] = {}
        for c, images in enumerate(clips):
            if problem := clip_problem(images):
                out[c] = BadInput(problem)
            else:
                chosen[c] = self.sampler.select_evenly(len(images))
        # each distinct frame once: a short clip picks a frame several times, and one Image must not be drafted
        # and loaded by two threads at once
        frames = list(dict.fromkeys((c, i) for c, picks in chosen.items() for i in picks))
        images = [clips[c][i] for c, i in frames]
        decoded = dict(zip(frames, self.decode_pool.map(self._decode_one, images), strict=True))
        for c, picks in chosen.items():
            failed = next((decoded[c, i] for i in picks if isinstance(decoded[c, i], BadInput)), None)
            out[c] = failed if failed is not None else np.stack([decoded[c, i] for i in picks])
        return out

    def _decode_one(self, image: Image.Image) -> np.ndarray | BadInput:
        try:
            return self.sampler.as_trained(image)
        except OSError as e:  # truncated or corrupt image data, found when a chosen frame is decoded
            return BadInput(f"a frame could not be decoded: {e}")

    def encode(self, clips: list[np.ndarray], timing: list[dict] | None = None) -> dict:
        """Prepared clips -> the model batch. `timing`: per clip `start_ms`/`end_ms` of its frames when known;
        None: frames without timestamps, taken to span one training clip."""
        timing = timing or [{"duration_ms": self.untimed_clip_ms}] * len(clips)
        batch = self.collate([Example(c, 0, t) for c, t in zip(clips, timing, strict=True)])
        return {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in batch.items()}

    @torch.inference_mode()
    def predict_batch(self, clips: list[np.ndarray], timing: list[dict] | None = None) -> list[dict]:
        """Prepared clips -> one result per clip: label, id, per-class probabilities, latency."""
        start = time.perf_counter()
        batch = self.encode(clips, timing)
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
        return self.predict_batch([self.prepare_clip(images)])[0]
