"""LitServe APIs over `VLMInference`: `POST /predict` (one clip, or many per request; dynamically batched across
concurrent requests) and an OpenAI-compatible `POST /v1/chat/completions` (the `image_url` parts of the user
message are the frames of one clip; the answer is the class name).

Bad input is a 4xx with a message, never a 5xx: request shape and types are checked by FastAPI from the
pydantic models; base64, image/video bytes, frame counts and sizes are checked in `decode_request`.
"""

import base64
import binascii
import hmac
import logging
from dataclasses import dataclass, field
from multiprocessing.synchronize import Event
from typing import Annotated

import litserve as ls
from fastapi import Header, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from vlmchallenge.inference.engine import BadInput, VLMInference, decode_image, decode_video
from vlmchallenge.serving.settings import ServeLimits
from vlmchallenge.serving.shutdown import leave_stop_signals_to_main

log = logging.getLogger(__name__)


def exactly_one_of(*groups: tuple[str, ...], optional: tuple[str, ...] = ()):
    """`json_schema_extra` for a request whose input fields are alternatives: the schema says exactly one group
    is given (`oneOf`: each group's fields `required`, but the `optional` ones; the other groups' absent), so
    `{}` or two inputs at once are schema-invalid, as the server treats them (docs/serving.md §5). Absent means
    unset: the fields are not nullable, and pydantic's `default: null` is dropped from the schema."""
    fields = {f for g in groups for f in g}

    def extra(schema: dict) -> None:
        for name in fields:
            schema["properties"][name].pop("default", None)
        schema["oneOf"] = [
            {
                "required": [f for f in g if f not in optional],
                "not": {"anyOf": [{"required": [f]} for f in sorted(fields - set(g))]},
            }
            for g in groups
        ]

    return extra


# what the server needs to decode them; docs/serving.md §5
IMAGE = {"format": "base64-image", "contentEncoding": "base64", "contentMediaType": "image/*"}
VIDEO = {"format": "base64-video", "contentEncoding": "base64", "contentMediaType": "video/*"}


class ClipIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra=exactly_one_of(("frames",), ("video",)))
    frames: list[Annotated[str, Field(json_schema_extra=IMAGE)]] = Field(
        None, min_length=1, description="base64 JPEG/PNG frames (or data: URLs), in time order, all one size"
    )
    video: str = Field(None, description="a base64 video file (mp4, mkv, ...)", json_schema_extra=VIDEO)


class PredictRequest(ClipIn):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra=exactly_one_of(("frames",), ("video",), ("clips",))
    )
    clips: list[ClipIn] = Field(None, min_length=1, description="several clips in one request")
    top_k: int | None = Field(None, ge=1, description="return only the k most probable classes")


class ClassResult(BaseModel):
    label: str
    id: int
    probabilities: dict[str, float]
    latency_ms: float


class PredictResponse(BaseModel):
    prediction: ClassResult | None = None
    predictions: list[ClassResult] | None = None


def b64bytes(text: str, what: str) -> bytes:
    if not isinstance(text, str):
        raise BadInput(f"{what}: expected a base64 string")
    if text.startswith("data:"):
        text = text.split(",", 1)[-1]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadInput(f"{what}: invalid base64") from None


class ExportBackedAPI:
    """What both APIs share: the export's inference engine per worker, API-key auth, clip decoding."""

    engine: VLMInference
    export_dir: str
    device_name: str
    limits: ServeLimits
    api_key: str | None
    # set by build_server: once the API process has answered its last request (serving/shutdown.py)
    api_done: Event | None = None

    def serve_export(
        self,
        export_dir: str,
        device: str,
        limits: ServeLimits,
        api_key: str | None,
        decode_threads: int | None,
    ) -> None:
        """What every API's constructor records (the engine itself is built per worker, in `setup`)."""
        self.export_dir, self.device_name = export_dir, device
        self.limits, self.api_key = limits, api_key
        self.decode_threads = decode_threads

    def setup(self, device) -> None:
        """LitServe calls this once per worker, with the device it assigned to that worker."""
        if self.api_done is not None:
            leave_stop_signals_to_main(self.api_done)
        log_as_the_main_process_does()
        chosen = self.device_name if self.device_name != "auto" else device
        self.engine = VLMInference(
            self.export_dir, device=None if chosen == "auto" else chosen, decode_threads=self.decode_threads
        )
        log.info(
            "%s worker ready: model on %s, %d frame-decoding threads",
            self.api_path,
            self.engine.device,
            self.engine.decode_threads,
        )

    def authorize(
        self, x_api_key: str | None = Header(None), authorization: str | None = Header(None)
    ) -> None:
        """`X-API-Key: <key>` or `Authorization: Bearer <key>` (what the OpenAI client sends)."""
        if not self.api_key:
            return
        bearer = authorization[7:] if authorization and authorization.lower().startswith("bearer ") else None
        # constant time, so response timing does not reveal how much of a guessed key was right
        expected = self.api_key.encode()
        if not any(hmac.compare_digest(expected, (sent or "").encode()) for sent in (x_api_key, bearer)):
            raise HTTPException(401, "missing or wrong API key: send X-API-Key or Authorization: Bearer")

    def _opened_clip(self, frames: list[str] | None, video: str | None, where: str) -> list:
        """One clip's input -> its images, checked and opened (a video is decoded; frames only opened)."""
        if (frames is None) == (video is None):
            raise BadInput(f"{where}: give exactly one of 'frames' (base64 images) and 'video' (base64 file)")
        if frames is not None:
            if not frames:
                raise BadInput(f"{where}: 'frames' is empty; a clip needs at least one frame")
            if len(frames) > self.limits.max_frames_per_clip:
                raise BadInput(
                    f"{where}: {len(frames)} frames; at most {self.limits.max_frames_per_clip} per clip"
                )
            return self._open_frames(frames, where)
        return decode_video(
            b64bytes(video, f"{where}.video"),
            self.limits.max_video_frames_read,
            self.limits.max_frame_pixels,
        )

    def _open_frames(self, frames: list[str], where: str) -> list:
        """base64 frames -> opened (header read, size checked, not decoded) images."""
        max_pixels = self.limits.max_frame_pixels
        return [
            decode_image(b64bytes(f, f"{where}.frames[{i}]"), f"{where}.frames[{i}]", max_pixels)
            for i, f in enumerate(frames)
        ]


def log_as_the_main_process_does() -> None:
    """An inference worker is spawned: a fresh interpreter with no logging configured, where a warning came out
    bare and an info line not at all. Give it the main process's (Hydra's) format, INFO for our own loggers.
    And no "Loading weights" progress bar: noise in a server log, and tqdm makes a multiprocessing lock for it,
    which a worker ended by a signal leaves to the resource tracker ("leaked semaphore objects" at exit)."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
        root.addHandler(handler)
        logging.getLogger("vlmchallenge").setLevel(logging.INFO)


def client_error(e: BadInput) -> HTTPException:
    """A client's mistake: a warning in the server log (not an error: nothing is wrong with the server)."""
    log.warning("rejected a request (422): %s", e)
    return HTTPException(status_code=422, detail=str(e))


def client_error_response(e: BadInput, headers: dict | None = None) -> JSONResponse:
    """`client_error` as the answer itself (FastAPI sends a returned `Response` as it is), for one request of a
    batch; the body is the one error body (serving/errors.py)."""
    error = client_error(e)
    return JSONResponse({"detail": error.detail}, status_code=error.status_code, headers=headers)


def chat_frame_urls(body: dict) -> list[str]:
    """The image_url parts of the last user message of a chat request: the raw body (checked before the request
    is queued) or the typed request as a dict (read in the worker); one parse for both."""
    messages = body.get("messages")
    users = (
        [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
        if isinstance(messages, list)
        else []
    )
    content = users[-1].get("content") if users else None
    if not isinstance(content, list) or not content:
        raise BadInput("the last user message must contain image_url parts (the frames of one clip)")
    urls = []
    for part in content:
        if isinstance(part, dict) and part.get("type") == "image_url":
            url = part.get("image_url")
            urls.append(url.get("url") if isinstance(url, dict) else url)
    if not urls:
        raise BadInput("the last user message has no image_url parts; send the clip's frames as images")
    return urls


@dataclass
class PredictJob:
    """One `/predict` request on its way through LitServe's hooks (decode_request -> batch -> predict ->
    unbatch -> encode_response): its clips opened, then decoded, then scored, or the error that answers it."""

    multi: bool  # asked with `clips` (answered with `predictions`), not one clip
    top_k: int | None
    opened: list[list] = field(default_factory=list)  # per clip: its frames, checked but not yet decoded
    clips: list = field(default_factory=list)  # per clip: the engine's prepared input
    error: BadInput | None = None  # answered as its own 422, whatever the rest of its batch does
    results: list[dict] = field(default_factory=list)  # per clip: label and probabilities
    batch_size: int = 1  # how many requests shared its batch (the X-Batch-Size header)


@dataclass
class PredictBatch:
    """The requests LitServe gathered into one dynamic batch, scored in one forward pass."""

    clips: list
    jobs: list[PredictJob]
    results: list[dict] = field(default_factory=list)


class ClipClassifierAPI(ExportBackedAPI, ls.LitAPI):
    """`POST /predict`. With dynamic batching (`max_batch_size` > 1) the chosen frames of every request in a
    batch are decoded together in the engine's thread pool, and a bad request is answered its own 422 while the
    others in its batch are answered as if alone. LitServe answers every request of a batch with the exception
    any one of them raises, so nothing here raises once a batch is formed (docs/serving.md §7)."""

    def __init__(
        self,
        export_dir: str,
        device: str,
        limits: ServeLimits,
        api_key: str | None,
        max_batch_size: int,
        batch_timeout: float,
        decode_threads: int | None,
    ):
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout, api_path="/predict")
        self.serve_export(export_dir, device, limits, api_key, decode_threads)

    def decode_request(self, request: PredictRequest) -> PredictJob:  # the annotation is the request schema
        """The request's clips checked and opened; decoded here only when unbatched (LitServe then calls
        neither `batch` nor `unbatch`), else with the rest of the batch in `batch`."""
        job = PredictJob(multi=request.clips is not None, top_k=request.top_k)
        try:
            job.opened = self._opened_request(request)
        except BadInput as e:
            job.error = e
        if self.max_batch_size > 1:
            return job
        self._decode([job])
        if job.error is not None:
            raise client_error(job.error)
        return job

    def _opened_request(self, request: PredictRequest) -> list[list]:
        if request.clips is None:
            return [self._opened_clip(request.frames, request.video, "request")]
        if request.frames is not None or request.video is not None:
            raise BadInput("give either one clip ('frames' or 'video') or 'clips', not both")
        if len(request.clips) > self.limits.max_clips_per_request:
            raise BadInput(
                f"{len(request.clips)} clips; at most {self.limits.max_clips_per_request} per request"
            )
        return [self._opened_clip(c.frames, c.video, f"clips[{i}]") for i, c in enumerate(request.clips)]

    def _decode(self, jobs: list[PredictJob]) -> None:
        """Every clip of `jobs` decoded at once: each job gets its `clips`, or the `error` of its first bad
        clip."""
        flat = [clip for job in jobs if job.error is None for clip in job.opened]
        prepared = iter(self.engine.prepare_clips(flat))
        for job in jobs:
            if job.error is not None:
                continue
            clips = [next(prepared) for _ in job.opened]
            bad = next((i for i, c in enumerate(clips) if isinstance(c, BadInput)), None)
            if bad is None:
                job.clips = clips
            else:
                job.error = BadInput(f"{f'clips[{bad}]' if job.multi else 'request'}: {clips[bad]}")

    def batch(self, inputs: list[PredictJob]) -> PredictBatch:
        self._decode(inputs)
        return PredictBatch([c for job in inputs for c in job.clips], inputs)

    def predict(self, x: PredictJob | PredictBatch) -> PredictJob | PredictBatch:
        x.results = self.engine.predict_batch(x.clips) if x.clips else []
        return x

    def unbatch(self, output: PredictBatch) -> list[PredictJob]:
        results = iter(output.results)
        for job in output.jobs:
            job.batch_size = len(output.jobs)
            if job.error is None:
                job.results = [next(results) for _ in job.clips]
        return output.jobs

    def encode_response(self, output: PredictJob) -> PredictResponse:  # the annotation is the response schema
        # how many requests shared this one's batch (dynamic batching, docs/serving.md §7)
        headers = {"X-Batch-Size": str(output.batch_size)}
        if output.error is not None:  # one bad request of a batch: its 422 as an answer, not an exception
            return client_error_response(output.error, headers)
        results = output.results
        if output.top_k:
            for r in results:
                top = sorted(r["probabilities"].items(), key=lambda kv: -kv[1])[: output.top_k]
                r["probabilities"] = dict(top)
        if output.multi:
            answer = PredictResponse(predictions=[ClassResult(**r) for r in results])
        else:
            answer = PredictResponse(prediction=ClassResult(**results[0]))
        # returned as a response (FastAPI sends it as it is), for the header; the body is what FastAPI would
        # have made of the model
        return JSONResponse(answer.model_dump(mode="json"), headers=headers)


class ChatClassifierAPI(ExportBackedAPI, ls.LitAPI):
    """OpenAI chat completions: image_url parts of the last user message are one clip; the reply is the class."""

    def __init__(
        self,
        export_dir: str,
        device: str,
        limits: ServeLimits,
        api_key: str | None,
        decode_threads: int | None,
    ):
        super().__init__(spec=ls.OpenAISpec())
        self.serve_export(export_dir, device, limits, api_key, decode_threads)

    async def authorize(
        self, request: Request, x_api_key: str | None = Header(None), authorization: str | None = Header(None)
    ) -> None:
        """API key, then the request checks LitServe's OpenAI spec lacks: it queues one job per `n`, so `n=0`
        answered 500 and a huge `n` flooded the queue (found by schemathesis)."""
        ExportBackedAPI.authorize(self, x_api_key, authorization)
        try:
            body = await request.json()
        except Exception:
            return  # not JSON: FastAPI's own validation answers 422
        if not isinstance(body, dict):
            return  # FastAPI's own validation answers 422
        n = body.get("n", 1)
        if isinstance(n, float) and n.is_integer():
            n = int(n)  # `1.0` is an integer to JSON Schema, and to pydantic
        if isinstance(n, bool) or not (isinstance(n, int) and 1 <= n <= self.limits.max_clips_per_request):
            raise client_error(
                BadInput(f"n: expected an integer in 1..{self.limits.max_clips_per_request} (answers)")
            )
        # The frames are checked here, in the API process, before the request takes a place in the queue:
        # a 4xx raised later, in the inference worker's stream, is logged by LitServe as a server ERROR
        # ("Error occurred while streaming outputs from the inference worker").
        try:
            urls = chat_frame_urls(body)
            if len(urls) > self.limits.max_frames_per_clip:
                raise BadInput(
                    f"messages[-1]: {len(urls)} frames; at most {self.limits.max_frames_per_clip} per clip"
                )
            self._open_frames([u if isinstance(u, str) else None for u in urls], "messages[-1]")
        except BadInput as e:
            raise client_error(e) from None

    def predict(self, request, context=None):
        try:
            urls = chat_frame_urls(
                request.model_dump()
            )  # the parse `authorize` checked, on the typed request
            clip = self.engine.prepare_clip(self._opened_clip(urls, None, "messages[-1]"))
            result = self.engine.predict_batch([clip])[0]
        except BadInput as e:
            raise client_error(e) from None
        yield result["label"]
