"""What `annotate` reads: an OpenPack session, a folder of OpenPack-named JPEG frames, or a video file, each
opened as a `FrameSource` with unix-ms frame times, plus the session's 1-Hz ground truth when there is one."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from omegaconf import MISSING

from vlmchallenge.data.annotation_parser import (
    SESSION_ID,
    USER_ID,
    SecondLabels,
    parse_operations_1hz_csv,
    parse_operations_csv,
)
from vlmchallenge.data.frame_source import (
    FrameSource,
    JpegFolderSource,
    VideoFileSource,
)
from vlmchallenge.data.openpack_layout import discover_sessions, open_source
from vlmchallenge.data.video_origin import video_origin_ms

KINDS = ("auto", "openpack", "frames", "video")
DEFAULT_USER, DEFAULT_SESSION = (
    "U0000",
    "S0000",
)  # ids written for a recording that is not an OpenPack session


@dataclass
class Recording:
    kind: str
    source: FrameSource
    user: str
    session: str
    ground_truth: SecondLabels | None

    @property
    def key(self) -> str:
        return f"{self.user}-{self.session}"


@dataclass
class RecordingOptions:
    """How `annotate` opens a recording: its settings, each with its one default (the annotate and review
    commands take them as they are, conf_schema.py)."""

    input: str = MISSING  # an OpenPack root (with user + session), a JPEG frame folder, or a video file
    # auto | openpack | frames | video (auto: openpack with user + session, else a folder: frames, a file: video)
    kind: str = "auto"
    user: str | None = None  # openpack: the session; other inputs: the ids written (default U0000/S0000)
    session: str | None = None
    source: str = "frames"  # openpack sessions, as in prepare: frames | video (video_pattern)
    video_pattern: str = "{root}/{user}/video/{session}.mp4"
    # creation_time | first_annotation (openpack) | the first frame's time: unix ms or ISO with offset
    video_time_origin: Any = "creation_time"
    ground_truth: str | None = None  # a 1-Hz CSV to score against; an OpenPack session brings its own

    @classmethod
    def of(cls, cfg) -> RecordingOptions:
        """These settings picked out of a command's config (annotate's or review's)."""
        return cls(**{f.name: cfg[f.name] for f in fields(cls)})


def reopen_args(options: RecordingOptions, recording: Recording) -> dict:
    """The `RecordingOptions` that open `recording` again from anywhere (annotate.json's `recording`: the
    review page finds the footage and the ground truth with them)."""
    again = replace(
        options,
        input=str(Path(options.input).resolve()),
        kind=recording.kind,
        user=recording.user,
        session=recording.session,
        ground_truth=options.ground_truth and str(Path(options.ground_truth).resolve()),
    )
    return asdict(again)


def check_openpack_ids(user: str, session: str) -> None:
    if not USER_ID.match(user) or not SESSION_ID.match(session):
        raise ValueError(
            f"user/session: expected OpenPack ids like U0209 and S0500 (operations.csv and the submission carry "
            f"them), got {user!r}/{session!r}"
        )


def open_recording(options: RecordingOptions) -> Recording:
    """`kind=openpack`: `input` is an OpenPack v1.0.0 root, `user`/`session` the session (frames or a video
    as `source`/`video_pattern`/`video_time_origin` say, like prepare); `frames`: a JPEG folder named by JST
    ms; `video`: a file whose frame times are `video_time_origin` (its creation_time, or a time) + PTS.
    `auto` picks openpack when user and session are given, else frames for a folder and video for a file."""
    kind, user, session, ground_truth = options.kind, options.user, options.session, options.ground_truth
    path = Path(options.input)
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {', '.join(KINDS)}, got {kind!r}")
    if not path.exists():
        raise FileNotFoundError(
            f"input: {path} not found; expected an OpenPack root, a JPEG folder or a video"
        )
    if kind == "auto":
        kind = "openpack" if user and session else "frames" if path.is_dir() else "video"
    truth = parse_operations_1hz_csv(ground_truth) if ground_truth else None
    if kind == "openpack":
        if not (user and session):
            raise ValueError("kind=openpack: set user=U0XXX and session=S0X00 (the session to annotate)")
        refs = {(r.user, r.session): r for r in discover_sessions(path)}
        ref = refs.get((user, session))
        if ref is None:
            raise FileNotFoundError(
                f"{path}: no session {user}/{session}; expected {path}/{user}/annotation/openpack-operations/"
                f"{session}.csv (found {', '.join(f'{u}/{s}' for u, s in sorted(refs))})"
            )
        ann = parse_operations_csv(ref.operations_csv)
        frames = open_source(
            ref, ann, options.source, path, options.video_pattern, str(options.video_time_origin)
        )
        if truth is None and ref.operations_1hz_csv is not None:
            truth = parse_operations_1hz_csv(ref.operations_1hz_csv)
        return Recording(kind, frames, user, session, truth)
    user, session = user or DEFAULT_USER, session or DEFAULT_SESSION
    check_openpack_ids(user, session)
    if kind == "frames":
        return Recording(kind, JpegFolderSource(path), user, session, truth)
    if not path.is_file():
        raise ValueError(f"kind=video: {path} is a folder; expected a video file")
    return Recording(
        kind,
        VideoFileSource(path, video_origin_ms(path, options.video_time_origin, "video_time_origin")),
        user,
        session,
        truth,
    )
