"""Frame sources for one session: the OpenPack JPEG-frame folder, or a plain video file.

Both expose the same thing: sorted frame timestamps in unix ms (the only way clips are aligned; never by
frame number) and a reader that decodes a requested frame, optionally at reduced size.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from datetime import datetime
from pathlib import Path

import numpy as np
from PIL import Image

from vlmchallenge.data.jst_time import frame_stem_to_unix_ms

FRAME_EXTENSIONS = (".jpg", ".jpeg")


class NoUsableFrames(ValueError):
    """A session whose frames cannot be used at all (folder missing, no frames, no parseable name): `prepare`
    records it as the session's reason for 0 clips and goes on with the other sessions."""


class FrameReader(ABC):
    """Decodes frames of one source; used by one worker for one session, in roughly increasing order."""

    @abstractmethod
    def read(self, index: int, min_size: tuple[int, int] | None = None) -> Image.Image:
        """Frame `index` as RGB. `min_size` (w, h) lets a reader decode smaller, never below that size."""

    def frame_size(self, index: int) -> tuple[int, int]:
        """(w, h) of a frame at full resolution; readers override this when the header alone tells."""
        return self.read(index).size

    def close(self) -> None:  # noqa: B027 - optional hook
        pass

    def __enter__(self) -> FrameReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class FrameSource(ABC):
    description: str
    timestamps_ms: np.ndarray  # int64, strictly increasing

    @abstractmethod
    def reader(self) -> FrameReader: ...

    def fingerprint_parts(self) -> list[str]:
        ts = self.timestamps_ms
        return [self.description, str(len(ts)), str(int(ts[0])) if len(ts) else "", str(int(ts.sum()))]


# ---------------------------------------------------------------- OpenPack JPEG folder


class JpegFolderSource(FrameSource):
    """`kinect/color-masked/frames/SXXXX/YYYY/MM/DD/HH/MM/YYYYMMDD_HHMMSS_mmm.jpg`, names in JST."""

    def __init__(self, frames_dir: str | Path):
        self.root = Path(frames_dir)
        if not self.root.is_dir():
            raise NoUsableFrames(
                f"frame folder missing: {self.root} (expected JPEG frames in YYYY/MM/DD/HH/MM/)"
            )
        paths = [  # plain strings: ~25k frames per session, pathlib objects were a measurable cost
            os.path.join(d, f)
            for d, _, files in os.walk(self.root)
            for f in files
            if os.path.splitext(f)[1].lower() in FRAME_EXTENSIONS
        ]
        if not paths:
            raise NoUsableFrames(f"no .jpg frames in {self.root}")
        stamped, bad = [], []
        for p in paths:
            try:
                stamped.append((frame_stem_to_unix_ms(os.path.basename(p).rsplit(".", 1)[0]), p))
            except ValueError as e:
                bad.append(f"{p}: {e}")
        if bad and not stamped:
            raise NoUsableFrames(f"none of the {len(bad)} frame names can be parsed, e.g. {min(bad)}")
        if bad:  # some parse: a mixed folder is an error, not a silent partial session
            raise ValueError(f"{len(bad)} of {len(paths)} frame names cannot be parsed, e.g. {min(bad)}")
        stamped.sort()
        for (t0, p0), (t1, p1) in zip(stamped, stamped[1:], strict=False):
            if t0 == t1:
                raise ValueError(f"{p1}: duplicate frame timestamp (same as {p0})")
        self.timestamps_ms = np.array([t for t, _ in stamped], dtype=np.int64)
        self.paths = [p for _, p in stamped]
        self.description = f"jpeg-folder:{self.root}"

    def reader(self) -> FrameReader:
        return _JpegReader(self.paths)


class _JpegReader(FrameReader):
    def __init__(self, paths: list[str]):
        self.paths = paths

    def frame_size(self, index: int) -> tuple[int, int]:
        try:
            with Image.open(self.paths[index]) as im:
                return im.size
        except OSError as e:
            raise ValueError(f"{self.paths[index]}: cannot read frame header ({e})") from None

    def read(self, index: int, min_size: tuple[int, int] | None = None) -> Image.Image:
        path = self.paths[index]
        try:
            with Image.open(path) as im:
                if min_size is not None:
                    # libjpeg DCT scaling (1/2, 1/4, 1/8): decodes far less data when the target is small.
                    im.draft("RGB", min_size)
                return im.convert("RGB")
        except OSError as e:
            raise ValueError(f"{path}: cannot decode frame ({e})") from None


# ---------------------------------------------------------------- plain video file


def video_creation_time_ms(path: str | Path) -> int | None:
    """Container `creation_time` tag as unix ms, when present and timezone-aware."""
    import av

    with av.open(str(path)) as container:
        tag = container.metadata.get("creation_time")
    if not tag:
        return None
    dt = datetime.fromisoformat(tag.replace("Z", "+00:00"))
    return None if dt.tzinfo is None else int(dt.timestamp() * 1000)


class VideoFileSource(FrameSource):
    """A video file (PyAV); frame times = `origin_ms` + presentation timestamp, read without decoding."""

    def __init__(self, path: str | Path, origin_ms: int):
        import av

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: video file not found")
        try:
            with av.open(str(self.path)) as container:
                if not container.streams.video:
                    raise ValueError(f"{self.path}: no video stream")
                stream = container.streams.video[0]
                tb = stream.time_base
                pts = [p.pts for p in container.demux(stream) if p.pts is not None and p.size > 0]
        except av.error.FFmpegError as e:
            raise ValueError(f"{self.path}: cannot read video ({e})") from None
        if not pts:
            raise ValueError(f"{self.path}: video has no frames")
        pts.sort()  # demux order is decode order; B-frames make it differ from presentation order
        self.pts = pts
        self.timestamps_ms = np.array([origin_ms + round(float(p * tb) * 1000) for p in pts], dtype=np.int64)
        if np.any(np.diff(self.timestamps_ms) <= 0):
            raise ValueError(
                f"{self.path}: frame timestamps are not strictly increasing at millisecond resolution"
            )
        self.description = f"video:{self.path}"

    def reader(self) -> FrameReader:
        return _VideoReader(self.path, self.pts)


class _VideoReader(FrameReader):
    """Sequential decoder: video frames can't be decoded independently, so decode forward once and only
    convert the requested frames; a backwards request (rare: clips come in time order) reopens the file."""

    def __init__(self, path: Path, pts: list[int]):
        self.path, self.pts = path, pts
        self._open()

    def _open(self) -> None:
        import av

        self.container = av.open(str(self.path))
        self.frames = self.container.decode(video=0)
        self.position = -1  # index of the last decoded frame
        self.pts_to_index = {p: i for i, p in enumerate(self.pts)}

    def read(self, index: int, min_size: tuple[int, int] | None = None) -> Image.Image:
        if index <= self.position:
            self.close()
            self._open()
        for frame in self.frames:
            i = self.pts_to_index.get(frame.pts, self.position + 1)
            self.position = i
            if i == index:
                return frame.to_image()
        raise ValueError(f"{self.path}: frame {index} not found while decoding")

    def close(self) -> None:
        self.container.close()
