"""The footage of an annotated recording, opened again from annotate.json, served frame by frame as thumbnails.

One path for every kind of recording: the page asks for the frame shown at a time, and gets a JPEG thumbnail
of the recording's own frame (an OpenPack or folder JPEG, or a decoded video frame). So a video and a frame
folder play the same way, at their real times, and only the frames the reviewer looks at are decoded.
"""

from __future__ import annotations

import functools
import io
import threading

import numpy as np

from vlmchallenge.data.annotation_parser import SecondLabels
from vlmchallenge.inference.recordings import Recording, RecordingOptions, open_recording

THUMBNAIL_WIDTH = 640  # px: sharp enough to tell the operations apart, small enough to scrub through
THUMBNAILS_CACHED = 512  # ~30 kB each: about 15 MB for the frames most recently looked at


class Footage:
    def __init__(self, recording_args: dict, annotation: str = "annotate.json"):
        try:
            self.recording: Recording = open_recording(RecordingOptions(**recording_args))
        except (OSError, ValueError) as e:  # moved, deleted or changed since it was annotated
            raise FileNotFoundError(
                f"{annotation}: the recording it annotated cannot be opened ({e}); its 'recording' field says "
                f"where it was: {recording_args}"
            ) from None
        self.times_ms: np.ndarray = np.asarray(self.recording.source.timestamps_ms, dtype=np.int64)
        self._reader = self.recording.source.reader()
        self._lock = threading.Lock()  # one decoder; the server answers frame requests from a thread pool
        self.thumbnail = functools.lru_cache(maxsize=THUMBNAILS_CACHED)(self._thumbnail)

    @property
    def ground_truth(self) -> SecondLabels | None:
        return self.recording.ground_truth

    def _thumbnail(self, index: int) -> bytes:
        if not 0 <= index < len(self.times_ms):
            raise IndexError(f"frame {index}: expected 0..{len(self.times_ms) - 1}")
        with self._lock:
            image = self._reader.read(index, (THUMBNAIL_WIDTH, THUMBNAIL_WIDTH))
        if image.width > THUMBNAIL_WIDTH:
            image = image.resize((THUMBNAIL_WIDTH, round(image.height * THUMBNAIL_WIDTH / image.width)))
        out = io.BytesIO()
        image.convert("RGB").save(out, "JPEG", quality=80)
        return out.getvalue()

    def close(self) -> None:
        self._reader.close()
