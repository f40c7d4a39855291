"""`POST /annotate`: a whole recording (a video, or frames with their capture times) -> the per-second
timeline and the operation segments, as JSON.

The same engine as `python -m vlmchallenge.annotate` (`inference/annotator.py`: windows from the export's clip
settings, a bounded frame cache, windows scored in batches by the KV-cached label scorer), the same JSON rows as
its files (`inference/prediction_outputs.py`). One request is one recording, so requests are not batched with each
other: the batching happens over the recording's windows. Limits (duration, frames, pixels, payload) are
checked before any frame is decoded; bad input is a 422 naming the field.
"""

# no `from __future__ import annotations`: LitServe reads decode_request's annotation as the request schema
import logging
import tempfile
from pathlib import Path
from typing import Annotated

import litserve as ls
from pydantic import BaseModel, ConfigDict, Field

from vlmchallenge.data.frame_source import FrameSource, VideoFileSource
from vlmchallenge.data.jst_time import unix_ms_to_iso
from vlmchallenge.data.video_origin import video_origin_ms
from vlmchallenge.inference.annotate_settings import AnnotateSettings
from vlmchallenge.inference.annotator import InMemoryFrames, RecordingAnnotator
from vlmchallenge.inference.engine import BadInput, decode_image
from vlmchallenge.inference.prediction_outputs import (
    metadata,
    second_probabilities,
    segments_json,
    timeline_json,
)
from vlmchallenge.inference.segments import Smoothing, segments
from vlmchallenge.serving.api import (
    IMAGE,
    VIDEO,
    ExportBackedAPI,
    b64bytes,
    client_error,
    exactly_one_of,
)
from vlmchallenge.serving.settings import ServeLimits

log = logging.getLogger(__name__)


# unix ms between 1970 and 2100: anything else is a client mistake, not a time to compute with
UnixMs = Annotated[int, Field(ge=0, le=4_102_444_800_000)]


class SmoothingIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    min_segment_s: int | None = Field(None, ge=1, le=3600, description="relabel segments shorter than this")
    median_s: int | None = Field(
        None, ge=1, le=3601, description="odd median-filter width (s) over per-second probabilities"
    )


class AnnotateRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra=exactly_one_of(
            ("frames", "timestamps_ms"), ("video", "origin_ms"), optional=("origin_ms",)
        ),
    )
    frames: list[Annotated[str, Field(json_schema_extra=IMAGE)]] = Field(
        None, min_length=1, description="base64 JPEG/PNG frames (or data: URLs), in time order, all one size"
    )
    timestamps_ms: list[UnixMs] = Field(
        None, min_length=1, description="capture time of each frame, unix ms (as many as frames)"
    )
    video: str = Field(
        None, description="a base64 video file; frame times = origin + PTS", json_schema_extra=VIDEO
    )
    origin_ms: UnixMs = Field(None, description="the video's start, unix ms (default: its creation_time)")
    start_ms: UnixMs | None = Field(
        None, description="annotate from here (unix ms; default: the first frame)"
    )
    end_ms: UnixMs | None = Field(None, description="annotate up to here (unix ms, exclusive)")
    window_s: float | None = Field(None, ge=0.1, le=600, description="window length (default: the export's)")
    stride_s: float | None = Field(None, ge=0.1, le=600, description="window stride (default: the export's)")
    smoothing: SmoothingIn | None = None


class AnnotateResponse(BaseModel):
    range: dict
    windows: int
    frames_decoded: int
    realtime_factor: float
    smoothing: dict | None
    segments: list[dict]
    timeline: list[dict]


class RecordingAnnotatorAPI(ExportBackedAPI, ls.LitAPI):
    def __init__(
        self,
        export_dir: str,
        device: str,
        limits: ServeLimits,
        api_key: str | None,
        batch_size: int,
        decode_threads: int | None,
    ):
        super().__init__(api_path="/annotate")
        self.serve_export(export_dir, device, limits, api_key, decode_threads)
        self.batch_size = batch_size

    def decode_request(self, request: AnnotateRequest) -> dict:
        x = {"upload": None}  # an uploaded video's temporary file, removed once the request is answered
        try:
            smoothing = Smoothing(**(request.smoothing.model_dump() if request.smoothing else {}))
            smoothing.validate()
            x.update(
                source=self._source(request, x),
                settings=AnnotateSettings(request.window_s, request.stride_s, batch_size=self.batch_size),
                smoothing=smoothing,
                start_ms=request.start_ms,
                end_ms=request.end_ms,
            )
            return x
        except (BadInput, ValueError) as e:
            if x["upload"] is not None:
                x["upload"].close()
            raise client_error(BadInput(str(e))) from None

    def _source(self, request: AnnotateRequest, x: dict) -> FrameSource:
        if (request.frames is None) == (request.video is None):
            raise BadInput("give exactly one of 'frames' (with 'timestamps_ms') and 'video'")
        if request.frames is not None:
            if request.timestamps_ms is None:
                raise BadInput("'frames' needs 'timestamps_ms': the capture time of each frame (unix ms)")
            if request.origin_ms is not None:
                raise BadInput(
                    "'origin_ms' goes with 'video'; frames carry their own times in 'timestamps_ms'"
                )
            if len(request.frames) > self.limits.max_recording_frames:
                raise BadInput(
                    f"frames: {len(request.frames)} frames; at most {self.limits.max_recording_frames} per request"
                )
            images = [
                decode_image(b64bytes(f, f"frames[{i}]"), f"frames[{i}]", self.limits.max_frame_pixels)
                for i, f in enumerate(request.frames)
            ]
            source: FrameSource = InMemoryFrames(images, request.timestamps_ms)
            self._check_pixels(images[0].width, images[0].height)
        else:
            if request.timestamps_ms is not None:
                raise BadInput("'timestamps_ms' goes with 'frames'; a video's frame times come from its PTS")
            # closed (and so deleted) once the request is answered, in predict or on a decoding error
            x["upload"] = tempfile.NamedTemporaryFile(suffix=".video", prefix="vlmchallenge-annotate-")  # noqa: SIM115
            source = self._video(b64bytes(request.video, "video"), request.origin_ms, x["upload"])
        self._check_duration(source)
        return source

    def _video(self, data: bytes, origin_ms: int | None, file) -> VideoFileSource:
        """The same reader as a video file on disk (frame times = origin + PTS), so the upload goes to `file`."""
        file.write(data)
        file.flush()
        path = Path(file.name)
        try:  # the rule of annotate and prepare: given, else the creation_time tag (data/video_origin.py)
            given = "creation_time" if origin_ms is None else origin_ms
            origin = video_origin_ms(path, given, "origin_ms", time_format="unix ms")
            source = VideoFileSource(path, origin)
        except (ValueError, FileNotFoundError) as e:
            raise BadInput(f"video: {str(e).replace(str(path), 'the uploaded file')}") from None
        if len(source.timestamps_ms) > self.limits.max_recording_frames:
            raise BadInput(
                f"video: {len(source.timestamps_ms)} frames; at most {self.limits.max_recording_frames} per request"
            )
        return source

    def _check_pixels(self, width: int, height: int) -> None:
        if width * height > self.limits.max_frame_pixels:
            raise BadInput(
                f"frames are {width}x{height}; at most {self.limits.max_frame_pixels} pixels per frame"
            )

    def _check_duration(self, source: FrameSource) -> None:
        ts = source.timestamps_ms
        seconds = (int(ts[-1]) - int(ts[0])) / 1000
        if seconds > self.limits.max_recording_s:
            raise BadInput(
                f"the recording spans {seconds:.0f} s ({unix_ms_to_iso(int(ts[0]))} to {unix_ms_to_iso(int(ts[-1]))}); "
                f"at most {self.limits.max_recording_s:.0f} s per request"
            )

    def predict(self, x: dict) -> dict:
        annotator = RecordingAnnotator(self.engine, x["settings"])
        try:
            predicted = annotator.annotate(x["source"], x["start_ms"], x["end_ms"])
        except (BadInput, ValueError) as e:  # no frames in the requested range, undecodable frame, ...
            raise client_error(BadInput(str(e))) from None
        finally:
            if x["upload"] is not None:
                x["upload"].close()
        ids = predicted.timeline.ids(predicted.window_ids)
        runs = segments(ids, second_probabilities(predicted), predicted.class_ids, x["smoothing"])
        meta = metadata(predicted, x["smoothing"], runs, None)
        return {
            "range": meta["range"],
            "windows": meta["windows"],
            "frames_decoded": meta["frames_decoded"],
            "realtime_factor": meta["realtime_factor"],
            "smoothing": meta["smoothing"],
            "segments": segments_json(runs, predicted),
            "timeline": timeline_json(predicted),
        }

    def encode_response(self, output: dict) -> AnnotateResponse:
        return AnnotateResponse(**output)
