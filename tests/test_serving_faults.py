"""Serving under overload and faults, on a real server (`python -m vlmchallenge.serve` in a subprocess):
past `max_queue` a 503 with Retry-After and nothing else 5xx; bad input a warning, not a server error; SIGTERM
answers the in-flight requests, ends every process the server started, and frees the port for a restart.
The two drills share one server (the SIGTERM drill ends it), and wait on the server's own count of requests
in it (`X-Requests-In-Server`), never on a sleep (docs/serving.md §1).
Plus, in-process: decompression bombs and huge dimensions rejected from the header, the key compared with
`hmac.compare_digest`."""

from __future__ import annotations

import contextlib
import hmac
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from fastapi import HTTPException

from tests.test_serving import chat_content, free_port, png_b64, post
from vlmchallenge.serving.api import ChatClassifierAPI, ExportBackedAPI, ServeLimits
from vlmchallenge.serving.inference import BadInput, decode_image


@pytest.fixture(scope="module")
def export_dir(two_class_run):
    return two_class_run.objects.export_dir


def launch(export_dir, log, port, *overrides):
    with open(log, "w") as f:
        proc = subprocess.Popen(
            [sys.executable, "-m", "vlmchallenge.serve", f"export_dir={export_dir}", f"port={port}"]
            + ["device=cpu", "api_key=null", f"hydra.run.dir={log.parent}", *overrides],
            stdout=f,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if status(base, "/health") == 200:
            return proc, base
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    raise RuntimeError(f"server never became healthy; log:\n{log.read_text()[-3000:]}")


def status(base, path):
    try:
        return urllib.request.urlopen(base + path, timeout=5).status
    except Exception:
        return None


def post_with_headers(base, body):
    """(status, headers); status 0 when no answer came at all (connection refused or reset)."""
    req = urllib.request.Request(
        base + "/predict", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers)
    except OSError:
        return 0, {}


def heavy_request():
    """16 clips of 4 frames: about a second of work on 2 cores, so it is still running while the test acts."""
    return {"clips": [{"frames": [png_b64((i * 13 % 255, 40, 90))] * 4} for i in range(16)]}


MAX_QUEUE = 2


@dataclass
class Server:
    proc: subprocess.Popen
    base: str
    port: int
    log: Path


@pytest.fixture(scope="module")
def server(export_dir, tmp_path_factory):
    """One server (max_queue=2) for the overload test, then stopped by the SIGTERM drill. `timeout=300`: on a
    busy machine a heavy request must never become a 504, which would make the overload test flaky."""
    log, port = tmp_path_factory.mktemp("faults") / "server.log", free_port()
    proc, base = launch(export_dir, log, port, f"max_queue={MAX_QUEUE}", "timeout=300")
    yield Server(proc, base, port, log)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=90)


def in_server(base) -> int:
    with urllib.request.urlopen(base + "/health", timeout=5) as r:
        return int(r.headers["X-Requests-In-Server"])


def fill_the_queue(base, pool):
    """MAX_QUEUE heavy requests, returned once the server counts them in (`X-Requests-In-Server` on a GET,
    which takes no place itself): no sleep decides it, so the outcome does not depend on how busy the
    machine is, and no probe can take a heavy request's place."""
    heavy = [pool.submit(post_with_headers, base, heavy_request()) for _ in range(MAX_QUEUE)]
    deadline = time.time() + 60
    while in_server(base) < MAX_QUEUE:
        assert time.time() < deadline, f"{MAX_QUEUE} heavy requests sent, never all in the server"
        time.sleep(0.01)
    assert not any(f.done() for f in heavy)
    return heavy


@pytest.mark.drill
def test_overload_gives_503_with_retry_after_and_bad_input_is_a_warning(server, drill):
    with ThreadPoolExecutor(2 + 8) as pool:
        heavy = fill_the_queue(server.base, pool)
        burst = list(pool.map(lambda _: post_with_headers(server.base, {"frames": [png_b64()]}), range(8)))
        still_full = not any(f.done() for f in heavy)
        heavy_codes = [f.result(timeout=300)[0] for f in heavy]
    results = burst
    codes = [code for code, _ in results] + heavy_codes
    assert [c for c, _ in burst] == [503] * 8, (codes, still_full)  # refused: both heavy requests were in
    assert still_full, "the heavy requests ended before the burst did; make them heavier"
    assert heavy_codes == [200] * MAX_QUEUE
    assert set(codes) <= {200, 503}, codes  # no 5xx but the 503s, and every request answered
    assert all(h.get("retry-after") == "1" for code, h in results if code == 503)
    assert status(server.base, "/health") == 200
    assert post_with_headers(server.base, {"frames": [png_b64()]})[0] == 200  # it recovers
    bad = [{"type": "image_url", "image_url": {"url": "data:image/png;base64,!!!"}}]
    code, reply = post(
        server.base, "/v1/chat/completions", {"model": "x", "messages": [{"role": "user", "content": bad}]}
    )
    assert code == 422 and "messages[-1].frames[0]: invalid base64" in str(reply)
    code, _ = post(
        server.base,
        "/v1/chat/completions",
        {"model": "x", "messages": [{"role": "user", "content": chat_content([png_b64()])}]},
    )
    assert code == 200
    text = server.log.read_text()
    assert "[WARNING] - rejected a request (422): messages[-1].frames[0]: invalid base64" in text, text[
        -3000:
    ]
    assert "ERROR" not in text and "Traceback" not in text, text[-3000:]
    drill.record(
        fault=f"{len(codes)} requests, {MAX_QUEUE} of them heavy, over max_queue={MAX_QUEUE}",
        injected=len(codes),
        lost=sum(c >= 500 and c != 503 or c == 0 for c in codes),
        unit="requests",
        check="every request answered 200 or 503 with Retry-After; the heavy ones 200; health 200 throughout",
    )


def stop_with_requests_in_flight(server: Server, stop, drill, fault: str) -> None:
    """`stop()` sends the signal while MAX_QUEUE heavy requests are in the server: every one must be answered
    200, the main process exit 0, every child process end, and the port be free at once."""
    children = psutil.Process(server.proc.pid).children(recursive=True)
    assert len(children) >= 3  # the manager, the API (uvicorn) process, one inference worker per API
    with ThreadPoolExecutor(MAX_QUEUE) as pool:
        in_flight = fill_the_queue(server.base, pool)
        stop()
        unanswered_at_signal = sum(not f.done() for f in in_flight)
        codes = [f.result(timeout=300)[0] for f in in_flight]
    assert unanswered_at_signal >= 1  # the drill did catch requests in flight
    assert codes == [200] * MAX_QUEUE, codes
    assert server.proc.wait(timeout=90) == 0, "the main process did not exit cleanly"
    _, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, [p.info for p in alive]
    # the port is free: it binds right away, as the next server's uvicorn would (SO_REUSEADDR, then listen)
    with socket.socket() as rebind:
        rebind.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        rebind.bind(("127.0.0.1", server.port))
        rebind.listen()
    log = server.log.read_text()
    assert "Traceback" not in log, log[-3000:]
    drill.record(
        fault=f"{fault} with {unanswered_at_signal} requests in flight",
        injected=1,
        lost=sum(c != 200 for c in codes),
        unit="requests",
        check="every in-flight request answered 200; all child processes exited; port rebound; no traceback",
    )


@pytest.mark.drill
def test_sigterm_finishes_in_flight_requests_ends_every_process_and_frees_the_port(server, drill):
    stop = lambda: os.kill(server.proc.pid, signal.SIGTERM)  # noqa: E731 (the main process only, as docker stop)
    stop_with_requests_in_flight(server, stop, drill, "SIGTERM to the main process")


@pytest.mark.drill
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_to_the_whole_process_group_is_a_graceful_shutdown_too(export_dir, tmp_path, drill, signum):
    """Ctrl+C in a terminal (SIGINT) and systemd's default `KillMode=control-group` (SIGTERM) signal every
    process of the server at once. The inference workers and the manager used to end at once: both in-flight
    requests were lost (a 500 and a reset connection), the API process was killed after its 30 s grace, and
    LitServe's monitor logged a traceback (docs/serving.md §2)."""
    port = free_port()
    proc, base = launch(export_dir, tmp_path / "server.log", port, f"max_queue={MAX_QUEUE}", "timeout=300")
    server = Server(proc, base, port, tmp_path / "server.log")
    try:
        stop_with_requests_in_flight(
            server,
            lambda: os.killpg(proc.pid, signum),
            drill,
            f"{signal.Signals(signum).name} to the process group",
        )
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares width x height but holds 1 byte of pixel data: a decompression bomb's shape."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0"))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("size", "message"),
    [
        ((30_000, 30_000), "decompression bomb"),  # over 2x Image.MAX_IMAGE_PIXELS: PIL's error
        ((10_000, 10_000), "decompression bomb"),  # over Image.MAX_IMAGE_PIXELS: PIL's warning, made an error
        ((1921, 1080), "frame is 1921x1080; at most 2073600 pixels per frame"),  # over our limit
    ],
)
def test_huge_image_dimensions_are_rejected_from_the_header(size, message):
    data = png_header(*size)
    with pytest.raises(BadInput, match=message):
        decode_image(data, "frames[0]", max_pixels=2073600)
    # the same header at an allowed size opens (the pixel data is never read)
    assert decode_image(png_header(1920, 1080), "frames[0]", max_pixels=2073600).size == (1920, 1080)


def test_api_key_is_compared_in_constant_time(monkeypatch):
    api = ChatClassifierAPI("unused", "cpu", ServeLimits(), api_key="s3cret-ké")
    compared = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: compared.append((a, b)) or real(a, b))
    ExportBackedAPI.authorize(api, "s3cret-ké", None)
    ExportBackedAPI.authorize(api, None, "Bearer s3cret-ké")
    for wrong in ("s3cret", "ß", None):
        with pytest.raises(HTTPException) as e:
            ExportBackedAPI.authorize(api, wrong, None)
        assert e.value.status_code == 401
    assert compared and all(a == "s3cret-ké".encode() for a, _ in compared)
