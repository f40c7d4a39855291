"""A reviewed recording written as an OpenPack session, so that `prepare data=openpack data.root=<root>` trains on
the corrections.

`<root>/<user>/<session>` names the session. Under `<root>/<user>/` it writes OpenPack's own layout
(data/openpack_layout.py):
- `kinect/color-masked/frames/<session>/YYYY/MM/DD/HH/MM/YYYYMMDD_HHMMSS_mmm.jpg`: the recording's frames in the
  annotated range, hard-linked from a JPEG source (copied when the data root is on another filesystem), or
  encoded from a video's frames;
- `annotation/openpack-operations/<session>.csv` and `annotation/openpack-operations-1hz/<session>.csv`: the
  reviewed segments (the model's when nothing was saved) and their 1-Hz labels.

The frame folder is built under a temporary name and renamed (`atomic_directory`), each CSV written atomically
and the operations CSV last: `discover_sessions` finds a session by that file, so a session is never found
with half its frames.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from vlmchallenge.data.annotation_writer import csv_bytes, write_operations_1hz_csv, write_operations_csv
from vlmchallenge.data.frame_source import JpegFolderSource
from vlmchallenge.data.jst_time import unix_ms_to_frame_relpath
from vlmchallenge.inference.recordings import check_openpack_ids
from vlmchallenge.reviewing.footage import Footage
from vlmchallenge.reviewing.review_folder import ReviewFolder
from vlmchallenge.utils.atomic import atomic_directory, write_atomically


def _link_or_copy(src: str, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another filesystem, or links not allowed
        shutil.copyfile(src, dst)


def _write_frames(footage: Footage, first_ms: int, end_ms: int, frames_dir: Path) -> int:
    source, written = footage.recording.source, 0
    with atomic_directory(frames_dir) as tmp:
        reader = None if isinstance(source, JpegFolderSource) else source.reader()
        try:
            for index, t in enumerate(footage.times_ms.tolist()):
                if not first_ms <= t < end_ms:
                    continue
                dst = tmp / unix_ms_to_frame_relpath(t)
                dst.parent.mkdir(parents=True, exist_ok=True)
                if reader is None:
                    _link_or_copy(source.paths[index], dst)
                else:
                    reader.read(index).save(dst, "JPEG", quality=95)
                written += 1
        finally:
            if reader is not None:
                reader.close()
    return written


@dataclass(frozen=True)
class ExportedSession:
    root: Path  # what `prepare data=openpack data.root=` takes
    user: str
    session: str
    frames: int
    segments: int
    reviewed: bool  # False: the model's segments, as nothing was saved


def export_session(folder: ReviewFolder, footage: Footage, target: str | Path) -> ExportedSession:
    """Write the reviewed recording as the OpenPack session `target` = `<root>/<user>/<session>`."""
    target = Path(target)
    user, session = target.parent.name, target.name
    check_openpack_ids(user, session)
    user_dir = target.parent
    rows, span = folder.segments(), folder.span
    seconds = [s.unixtime_ms for s in folder.seconds]
    frames = _write_frames(
        footage, span.first_ms, span.end_ms, user_dir / "kinect/color-masked/frames" / session
    )
    annotation = user_dir / "annotation"
    hz = csv_bytes(write_operations_1hz_csv, user, session, rows, seconds)
    write_atomically(annotation / "openpack-operations-1hz" / f"{session}.csv", lambda f: f.write(hz))
    ops = csv_bytes(write_operations_csv, user, session, rows)
    write_atomically(annotation / "openpack-operations" / f"{session}.csv", lambda f: f.write(ops))
    return ExportedSession(user_dir.parent, user, session, frames, len(rows), folder.saved)
