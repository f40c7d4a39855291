"""Schemathesis hooks (loaded through `SCHEMATHESIS_HOOKS`): strategies for the string formats the serving schema
declares (docs/serving.md §5), so generated requests carry real, decodable media and a schema-valid `/predict`
request is one the server can answer, which `positive_data_acceptance` checks."""

from __future__ import annotations

import base64
import io
import tempfile
from pathlib import Path

import schemathesis
from hypothesis import strategies as st
from PIL import Image


def png(color: tuple[int, int, int], size=(32, 24)) -> str:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def mp4(color: tuple[int, int, int], frames: int = 4, size=(32, 24)) -> str:
    import av

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "clip.mp4"
        with av.open(str(path), "w") as out:
            stream = out.add_stream("mpeg4", rate=15)
            stream.width, stream.height, stream.pix_fmt = *size, "yuv420p"
            for _ in range(frames):
                for packet in stream.encode(av.VideoFrame.from_image(Image.new("RGB", size, color))):
                    out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)
        return base64.b64encode(path.read_bytes()).decode()


COLORS = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]
schemathesis.openapi.format("base64-image", st.sampled_from([png(c) for c in COLORS]))
schemathesis.openapi.format("base64-video", st.sampled_from([mp4(c) for c in COLORS]))
