"""Find sessions in an OpenPack v1.0.0 tree and open each one's frame source.

A session is `<root>/<USER>/annotation/openpack-operations/<SESSION>.csv`; its frames come either from
`<root>/<USER>/kinect/color-masked/frames/<SESSION>/` (the RGB release) or from a video file named by
`video_pattern` (users' own recordings), whose frame times are the container's `creation_time` or the first
annotation's start plus each frame's PTS.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from vlmchallenge.data.annotation_parser import OperationAnnotation
from vlmchallenge.data.frame_source import (
    FrameSource,
    JpegFolderSource,
    VideoFileSource,
)
from vlmchallenge.data.video_origin import video_origin_ms

_USER_DIR = re.compile(r"^U\d{4}$")
_SESSION_FILE = re.compile(r"^S\d{4}\.csv$")


@dataclass(frozen=True)
class SessionRef:
    user: str
    session: str
    operations_csv: Path
    operations_1hz_csv: Path | None
    frames_dir: Path

    @property
    def key(self) -> str:
        return f"{self.user}-{self.session}"


def discover_sessions(root: str | Path) -> list[SessionRef]:
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: OpenPack root not found; expected <root>/<USER>/annotation/...")
    refs = []
    for user_dir in sorted(p for p in root.iterdir() if p.is_dir() and _USER_DIR.match(p.name)):
        ops_dir = user_dir / "annotation" / "openpack-operations"
        if not ops_dir.is_dir():
            continue
        for csv_path in sorted(p for p in ops_dir.iterdir() if _SESSION_FILE.match(p.name)):
            session = csv_path.stem
            hz = user_dir / "annotation" / "openpack-operations-1hz" / f"{session}.csv"
            frames = user_dir / "kinect" / "color-masked" / "frames" / session
            refs.append(SessionRef(user_dir.name, session, csv_path, hz if hz.exists() else None, frames))
    if not refs:
        raise ValueError(
            f"{root}: no sessions found; expected <root>/U0XXX/annotation/openpack-operations/S0X00.csv"
        )
    return refs


def open_source(
    ref: SessionRef,
    ann: OperationAnnotation,
    source: str,
    root: str | Path,
    video_pattern: str,
    video_time_origin: str,
) -> FrameSource:
    if source == "frames":
        return JpegFolderSource(ref.frames_dir)
    if source != "video":
        raise ValueError(f"data.source: expected 'frames' or 'video', got {source!r}")
    path = Path(video_pattern.format(root=root, user=ref.user, session=ref.session))
    if not path.is_file():
        raise FileNotFoundError(f"{path}: video file not found (data.video_pattern={video_pattern!r})")
    first_annotation = ann.segments[0].start_ms if ann.segments else None
    return VideoFileSource(
        path, video_origin_ms(path, video_time_origin, "data.video_time_origin", first_annotation)
    )
