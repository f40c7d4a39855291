"""When a video's first frame was captured: the one rule for `prepare` (an OpenPack session's video,
`data.video_time_origin`) and `annotate` (any video, `video_time_origin`).

A video's frames carry presentation times relative to its start, not clock times, so a frame's unix time is this
origin plus its PTS. The origin is one of:
- `creation_time`: the container's timezone-aware `creation_time` tag (what phones and most recorders write);
- `first_annotation`: the start of the session's first annotated segment, for a video cut to start there (only
  where there is an annotation: an OpenPack session);
- a time: unix ms, or ISO 8601 with an offset (`2022-03-29 14:25:22+09:00`).
"""

from __future__ import annotations

from pathlib import Path

from vlmchallenge.data.frame_source import video_creation_time_ms
from vlmchallenge.data.jst_time import iso_to_unix_ms

TIME_EXAMPLE = "unix ms, or ISO with offset, e.g. '2022-03-29 14:25:22+09:00'"


def parse_time(value, what: str) -> int | None:
    """A time given on the command line: unix ms, or ISO 8601 with an offset; None stays None."""
    if value is None:
        return None
    if isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()):
        return int(value)
    try:
        return iso_to_unix_ms(str(value))
    except ValueError as e:
        raise ValueError(f"{what}: expected {TIME_EXAMPLE}, got {value!r} ({e})") from None


def video_origin_ms(
    path: Path, origin, setting: str, first_annotation_ms: int | None = None, time_format: str = TIME_EXAMPLE
) -> int:
    """`origin` (the value of the setting named `setting`) -> the unix ms of the video's first frame.
    `first_annotation_ms`: the first annotated segment's start, where the video belongs to an annotated session.
    `time_format`: how the setting takes a time, for the message when the video has no creation_time."""
    if origin == "first_annotation":
        if first_annotation_ms is None:
            raise ValueError(
                f"{setting}=first_annotation needs an OpenPack session's annotation (kind=openpack "
                "source=video); for a plain video give creation_time or the time of its first frame"
            )
        return first_annotation_ms
    if origin != "creation_time":
        return parse_time(origin, setting)
    import av

    try:
        found = video_creation_time_ms(path)
    except av.error.FFmpegError as e:
        raise ValueError(f"{path}: cannot read video ({e})") from None
    if found is None:
        instead = (
            "first_annotation if the video starts at the first annotated segment, or the time of its first frame"
            if first_annotation_ms is not None
            else f"<the time of its first frame: {time_format}>"
        )
        raise ValueError(
            f"{path}: the video has no timezone-aware creation_time tag, so its frames have no times; set "
            f"{setting}={instead}"
        )
    return found
