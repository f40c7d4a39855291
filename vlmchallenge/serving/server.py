"""The LitServe server over an export folder: `/predict`, the OpenAI-compatible chat endpoint, `/info`."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from multiprocessing.synchronize import Event
from pathlib import Path

from vlmchallenge.models.export_meta import ExportMeta
from vlmchallenge.models.exporter import read_label_map
from vlmchallenge.serving.admission import AdmissionControl
from vlmchallenge.serving.annotate_api import RecordingAnnotatorAPI
from vlmchallenge.serving.api import ChatClassifierAPI, ClipClassifierAPI
from vlmchallenge.serving.errors import use_one_error_shape
from vlmchallenge.serving.openapi import tell_the_truth
from vlmchallenge.serving.settings import ServeLimits, ServeSettings
from vlmchallenge.serving.shutdown import ApiServerDone, api_done_event, sigterm_as_keyboard_interrupt
from vlmchallenge.serving.supervision import FailFastLitServer


def model_metadata(export_dir: Path, limits: ServeLimits) -> dict:
    """What /info shows, read from the export's files (workers load the model after the server starts)."""
    meta = ExportMeta.read(export_dir)
    return {
        "export_dir": str(export_dir),
        "base_model": meta.base_model,
        "classes": read_label_map(export_dir),
        "input": {
            "POST /predict": "JSON {frames: [base64 JPEG/PNG, ...]} or {video: base64 file} or {clips: [...]}",
            "POST /v1/chat/completions": "OpenAI chat; the user message's image_url parts are the frames of a clip",
            "POST /annotate": "JSON {frames: [...], timestamps_ms: [...]} or {video: base64 file, origin_ms?} -> "
            "per-second timeline + segments",
            "max_recording_s": limits.max_recording_s,
            "frames_used_per_clip": meta.sampler.num_frames,
            "max_frames_per_clip": limits.max_frames_per_clip,
            "max_clips_per_request": limits.max_clips_per_request,
        },
    }


def route_apis(settings: ServeSettings, export_dir: Path) -> list:
    """One LitAPI per route served: `/predict` always, chat and `/annotate` as the settings say. Each route is
    an inference worker of its own, a process that loads the model."""
    limits = settings.limits
    decode_threads = settings.decode_threads
    apis = [
        ClipClassifierAPI(
            str(export_dir),
            settings.device,
            limits,
            settings.api_key,
            settings.max_batch_size,
            settings.batch_timeout,
            decode_threads,
        )
    ]
    if settings.openai:
        apis.append(
            ChatClassifierAPI(str(export_dir), settings.device, limits, settings.api_key, decode_threads)
        )
    if settings.annotate:
        apis.append(
            RecordingAnnotatorAPI(
                str(export_dir),
                settings.device,
                limits,
                settings.api_key,
                settings.annotate_batch_size,
                decode_threads,
            )
        )
    return apis


def build_server(settings: ServeSettings, api_done: Event | None = None) -> FailFastLitServer:
    """`api_done`: set when the API process has answered its last request (serving/shutdown.py)."""
    api_done = api_done or api_done_event()
    export_dir = Path(settings.export_dir)
    ExportMeta.read(export_dir)  # a clear error now, not in every worker later
    apis = route_apis(settings, export_dir)
    for api in apis:
        api.api_done = api_done
    accelerator = "cpu" if settings.device == "cpu" else "auto"
    # listens while the workers load; a process that dies ends it (serving/supervision.py)
    server = FailFastLitServer(
        apis,
        api_done=api_done,
        accelerator=accelerator,
        devices=1,
        workers_per_device=settings.workers_per_device,
        timeout=settings.timeout,
        max_payload_size=int(settings.max_payload_mb * 1024 * 1024),
        model_metadata=model_metadata(export_dir, settings.limits),
        callbacks=[ApiServerDone(api_done)],
        middlewares=[
            (
                AdmissionControl,
                {
                    "max_queue": settings.max_queue,
                    "timeout_s": settings.timeout if settings.timeout and settings.timeout > 0 else None,
                    "retry_after_s": settings.retry_after_s,
                },
            )
        ],
    )
    use_one_error_shape(server.app)
    tell_the_truth(server.app, settings.limits, title="vlmchallenge", version=package_version())
    return server


def package_version() -> str:
    try:
        return version("vlmchallenge")
    except PackageNotFoundError:
        return "0+unknown"


def run_server(settings: ServeSettings) -> None:
    """Serve until Ctrl+C or SIGTERM, to the main process or its whole group; either way in-flight requests are
    answered and every process exits. If one of the server's processes dies instead (an inference worker killed
    by the OOM killer), one line says which and why, and the process exits with code 70 at once
    (serving/supervision.py)."""
    api_done = api_done_event()
    server = build_server(settings, api_done)
    with sigterm_as_keyboard_interrupt(api_done):
        server.run(
            host=settings.host,
            port=settings.port,
            generate_client_file=False,
            num_api_servers=1,
            log_level="warning",
        )
