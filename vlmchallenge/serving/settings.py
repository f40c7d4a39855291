"""Every setting of `python -m vlmchallenge.serve`, with its one default. `conf/serve.yaml` holds only what
differs from these (the API key read from the environment), Hydra checks every override against them
(`conf_schema.py` registers the schema), and the server and its APIs take them as they are: no constructor
restates a default (tests/test_configs.py checks both)."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING

from vlmchallenge.inference.annotate_settings import AnnotateSettings


@dataclass
class ServeLimits:
    """What one request may ask of the server; past a limit it is a 422 naming the limit (docs/serving.md §5)."""

    max_frames_per_clip: int = 64
    max_clips_per_request: int = 16
    max_video_frames_read: int = 600
    max_frame_pixels: int = 1920 * 1080
    max_recording_s: float = (
        1800.0  # POST /annotate: span of one recording (an OpenPack session is 20-30 min)
    )
    max_recording_frames: int = 30_000  # POST /annotate: frames (or video frames) of one recording


@dataclass
class ServeSettings:
    export_dir: str = MISSING
    host: str = "127.0.0.1"  # loopback by default; 0.0.0.0 to expose it
    port: int = 8000
    device: str = "auto"  # auto | cpu | cuda | cuda:1
    api_key: str | None = None  # set: X-API-Key or Bearer required (serve.yaml reads it from the env)
    openai: bool = True  # also serve POST /v1/chat/completions
    annotate: bool = True  # also serve POST /annotate (a whole recording -> per-second timeline + segments)
    annotate_batch_size: int = AnnotateSettings.batch_size  # windows of one recording per forward pass
    max_batch_size: int = 8  # dynamic batching across concurrent requests
    batch_timeout: float = 0.01  # seconds to wait for a batch to fill
    decode_threads: int | None = None  # frame-decoding threads per worker; None: one per core, at most 8 (§7)
    workers_per_device: int = 1
    timeout: float = 30  # seconds a request may take (queue + work), else 504; a long /annotate needs more
    max_queue: int = 64  # requests in the server at once (queued + running); past it: 503 with Retry-After
    retry_after_s: int = 1  # the Retry-After a 503 sends (HTTP: whole seconds)
    max_payload_mb: float = 64
    limits: ServeLimits = field(default_factory=ServeLimits)
