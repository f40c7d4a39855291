"""Serving under overload and faults, on real servers (`python -m vlmchallenge.serve` in subprocesses, all five
started at once by `launch_servers`, which retries on a fresh port when the port was taken):

- past `max_queue` a 503 with Retry-After and nothing else 5xx; bad input a warning, not a server error;
- SIGTERM answers the in-flight requests, ends every process the server started, and frees the port;
- while the model loads, `/health` is 503 and a request past `timeout` a 504 (the load waits on a FIFO the test
  opens, through an audit hook in the worker: no sleep decides it);
- concurrent requests share one batch (`X-Batch-Size`), `decode_threads` reaches the worker;
- an inference worker SIGKILLed (as by the OOM killer) ends the server at once, in one line, with exit code 70.

The drills wait on the server's own count of requests in it (`X-Requests-In-Server`), never on a sleep, and
measure what was lost against the training run's answers for the same clips before asserting (docs/serving.md
§1, §8). Plus, in-process: decompression bombs and huge dimensions rejected from the header, the key compared
with `hmac.compare_digest`."""

from __future__ import annotations

import contextlib
import errno
import hmac
import json
import os
import signal
import socket
import struct
import subprocess
import time
import urllib.error
import urllib.request
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.message import Message
from pathlib import Path

import psutil
import pytest
from fastapi import HTTPException

from tests.test_serving import (
    HEALTHY_WITHIN_S,
    POLL_PAUSE_S,
    ClipCase,
    LiveServer,
    ServerSpec,
    answered_correctly,
    clip_cases,
    health_status,
    kill_server,
    launch_servers,
    wait_for_health,
)
from vlmchallenge.inference.engine import BadInput, decode_image
from vlmchallenge.serving.api import ChatClassifierAPI, ExportBackedAPI
from vlmchallenge.serving.settings import ServeLimits
from vlmchallenge.serving.supervision import EXIT_PROCESS_DIED


@pytest.fixture(scope="module")
def export_dir(two_class_run):
    return two_class_run.objects.export_dir


@pytest.fixture(scope="module")
def clips(two_class_run) -> list[ClipCase]:
    return clip_cases(two_class_run)


@dataclass
class Answer:
    # 0: the connection closed (or was refused) without an answer; -1: no answer within the client's wait
    status: int
    headers: Message | None = None
    body: dict | None = None


def post_predict(base, body, wait_s=300) -> Answer:
    req = urllib.request.Request(
        base + "/predict", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=wait_s) as r:
            return Answer(r.status, r.headers, json.loads(r.read()))
    except urllib.error.HTTPError as e:
        return Answer(e.code, e.headers, json.loads(e.read() or b"{}"))
    except urllib.error.URLError as e:
        return Answer(-1 if isinstance(e.reason, TimeoutError) else 0)
    except TimeoutError:
        return Answer(-1)
    except OSError:  # reset, or closed before an answer (http.client.RemoteDisconnected)
        return Answer(0)


def frames_of(cases: list[ClipCase]) -> dict:
    """A `/predict` body: one clip's frames, or several clips."""
    if len(cases) == 1:
        return {"frames": cases[0].frames_b64}
    return {"clips": [{"frames": c.frames_b64} for c in cases]}


def heavy_cases(clips) -> list[ClipCase]:
    """16 real clips in one request: about a second of work on 2 cores, so it is still running while the test
    acts; the training run's probabilities for them are the reference."""
    return [clips[i % len(clips)] for i in range(16)]


def correct(answer: Answer, cases: list[ClipCase]) -> bool:
    return answered_correctly(answer.status, answer.body, cases)


def refused_with_notice(answer: Answer) -> bool:
    return answer.status == 503 and answer.headers.get("Retry-After") == "1"


MAX_QUEUE = 2
# `/predict` only, the route the drills use: every route is an inference worker of its own, a process that loads
# the model (the live server in test_serving.py serves all three, and shows the chat route's bad input a warning)
ONE_ROUTE = ("api_key=null", "openai=false", "annotate=false")
DRILL_SERVER = (*ONE_ROUTE, f"max_queue={MAX_QUEUE}", "timeout=300")


@dataclass
class DrillServers:
    overload: LiveServer  # the overload test's, then stopped by the SIGTERM drill
    by_group_signal: dict[int, LiveServer]  # stopped by a signal to its process group
    loading: LiveServer  # its worker's model load waits on `gate` (LOAD_GATE)
    gate: Path
    batching: LiveServer  # answers full batches of BATCH only, then its worker is SIGKILLed


@pytest.fixture(scope="module")
def servers(export_dir, tmp_path_factory) -> DrillServers:
    """Every server this module's tests start, started at once (`launch_servers`: half the wait of starting
    them in turn on 2 cores); each test acts on its own, and each server is stopped by its test's fault.

    - overload: max_queue=2, `timeout=300`: on a busy machine a heavy request must never become a 504, which
      would make the overload test flaky;
    - one per group signal, with the same settings;
    - loading: `/predict` only, `timeout=2`; its inference worker waits on a FIFO the test opens before it
      loads the model (LOAD_GATE), so it is listening and not loaded for as long as the test needs;
    - batching: `/predict` only, answering full batches of 4 only: `batch_timeout` is 11 days, so a batch never
      leaves short. 4 concurrent requests must share one batch, and fewer wait in the inference worker,
      provably in flight, until the SIGKILL drill ends the server. `decode_threads=3`: not the default on any
      machine here.

    Every server is started with `stack_dump_env`: what_is_left asks every process for its stacks."""
    root = tmp_path_factory.mktemp("faults")
    gate = root / "gate"
    os.mkfifo(gate)
    gated = {
        **stack_dump_env(root / "gate-hooks", LOAD_GATE),
        "VLMCHALLENGE_TEST_LOAD_GATE": str(gate),
        "VLMCHALLENGE_TEST_LOAD_UNDER": str(export_dir),
    }
    batching = (*ONE_ROUTE, f"max_batch_size={BATCH}", "batch_timeout=1e6", "timeout=2e6", "decode_threads=3")
    names = ["overload", "group-SIGTERM", "group-SIGINT", "loading", "batching"]
    logs = {name: root / name / "server.log" for name in names}
    for log in logs.values():
        log.parent.mkdir()
    hooks = stack_dump_env(root / "hooks")
    specs = [
        *(ServerSpec(logs[name], DRILL_SERVER, hooks) for name in names[:3]),
        ServerSpec(logs["loading"], (*ONE_ROUTE, "timeout=2"), gated, until=(200, 503)),
        ServerSpec(logs["batching"], batching, hooks),
    ]
    started = launch_servers(export_dir, specs)
    overload, group_term, group_int, loading, batching_server = started
    yield DrillServers(
        overload, {signal.SIGTERM: group_term, signal.SIGINT: group_int}, loading, gate, batching_server
    )
    for server in started:
        kill_server(server)


@pytest.fixture(scope="module")
def server(servers) -> LiveServer:
    return servers.overload


def in_server(base) -> int:
    """The server's count of POST requests in it, which every GET answer carries (a 503 `/health` too)."""
    try:
        with urllib.request.urlopen(base + "/health", timeout=30) as r:
            return int(r.headers["X-Requests-In-Server"])
    except urllib.error.HTTPError as e:
        return int(e.headers["X-Requests-In-Server"])


def wait_in_server(base, n: int) -> None:
    """Until the server counts `n` requests in it (`X-Requests-In-Server` on a GET, which takes no place itself),
    pausing between polls, within a generous deadline."""
    deadline = time.monotonic() + HEALTHY_WITHIN_S
    while (now := in_server(base)) < n:
        assert time.monotonic() < deadline, f"{n} requests sent, only {now} ever in the server"
        time.sleep(POLL_PAUSE_S / 10)


def fill_the_queue(base, pool, clips):
    """MAX_QUEUE heavy requests, returned once the server counts them in: no sleep decides it, so the outcome
    does not depend on how busy the machine is, and no probe can take a heavy request's place."""
    heavy = [pool.submit(post_predict, base, frames_of(heavy_cases(clips))) for _ in range(MAX_QUEUE)]
    wait_in_server(base, MAX_QUEUE)
    return heavy


@pytest.mark.drill
def test_overload_gives_503_with_retry_after_and_bad_input_is_a_warning(server, clips, drill):
    light = [clips[0]]
    with ThreadPoolExecutor(2 + 8) as pool:
        heavy = fill_the_queue(server.base, pool, clips)
        burst = list(pool.map(lambda _: post_predict(server.base, frames_of(light)), range(8)))
        still_full = not any(f.done() for f in heavy)
        heavy_answers = [f.result() for f in heavy]
    sent = [(a, heavy_cases(clips)) for a in heavy_answers] + [(a, light) for a in burst]
    answered = [correct(a, cases) for a, cases in sent]
    refused = [refused_with_notice(a) for a, _ in sent]
    lost = sum(not (ok or no) for ok, no in zip(answered, refused, strict=True))
    drill.record(
        fault=f"{len(sent)} requests, {MAX_QUEUE} of them heavy, over max_queue={MAX_QUEUE}",
        injected=len(sent),
        lost=lost,
        unit="requests",
        check="each answer compared clip by clip with the training run's probabilities for the same frames; "
        "a 503 with Retry-After counts as refused with notice",
        noticed=f"{sum(refused)} refused 503 with Retry-After",
    )
    assert lost == 0, [a.status for a, _ in sent]
    assert refused[MAX_QUEUE:] == [True] * 8, [a.status for a, _ in sent]  # both heavy requests were in
    assert still_full, "the heavy requests ended before the burst did; make them heavier"
    assert answered[:MAX_QUEUE] == [True] * MAX_QUEUE, [a.status for a in heavy_answers]
    assert health_status(server.base) == 200
    assert correct(post_predict(server.base, frames_of(light)), light)  # it recovers
    bad = post_predict(server.base, {"frames": ["!!!"]})
    assert bad.status == 422 and "frames[0]: invalid base64" in str(bad.body)
    assert correct(post_predict(server.base, frames_of(light)), light)  # and after a bad request
    text = server.log.read_text()
    assert "[WARNING] - rejected a request (422): request.frames[0]: invalid base64" in text, text[-3000:]
    assert "ERROR" not in text and "Traceback" not in text, text[-3000:]


# Put on PYTHONPATH as `sitecustomize.py` (`stack_dump_env`): SIGUSR1 makes any process of the server write every
# thread's stack into the server's log, which `what_is_left` asks for when a shutdown hangs.
STACK_DUMP = "import faulthandler, signal\nfaulthandler.register(signal.SIGUSR1, all_threads=True)\n"


def stack_dump_env(folder: Path, extra: str = "") -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(STACK_DUMP + extra)
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")])),
    }


def what_is_left(server: LiveServer) -> str:
    """For a failure message: the server's processes still alive, with every thread's stack when the server was
    started with `stack_dump_env`, and the tail of its log, so a shutdown that hangs under load says where."""
    rows = []
    for p in [psutil.Process(server.proc.pid), *psutil.Process(server.proc.pid).children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            rows.append(f"{p.pid} {p.status()} {' '.join(p.cmdline())[:120]}")
            if p.status() != psutil.STATUS_ZOMBIE:
                p.send_signal(signal.SIGUSR1)
    time.sleep(3)  # the dumps are written by the processes themselves
    return "alive: " + "; ".join(rows) + "\nlog tail:\n" + server.log.read_text()[-12000:]


def no_process_left(children: list[psutil.Process]) -> list[psutil.Process]:
    _, alive = psutil.wait_procs(children, timeout=30)
    return alive


def port_is_free(port: int) -> bool:
    """It binds right away, as the next server's uvicorn would (SO_REUSEADDR, then listen)."""
    with socket.socket() as rebind:
        rebind.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            rebind.bind(("127.0.0.1", port))
            rebind.listen()
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def stop_with_requests_in_flight(server: LiveServer, stop, clips, drill, fault: str) -> None:
    """`stop()` sends the signal while MAX_QUEUE heavy requests are in the server: every one must be answered
    correctly, the main process exit 0, every child process end, and the port be free at once."""
    children = psutil.Process(server.proc.pid).children(recursive=True)
    assert len(children) >= 3  # the manager, the API (uvicorn) process, one inference worker per API
    with ThreadPoolExecutor(MAX_QUEUE) as pool:
        in_flight = fill_the_queue(server.base, pool, clips)
        stop()
        unanswered_at_signal = sum(not f.done() for f in in_flight)
        answers = [f.result() for f in in_flight]
    try:
        exit_code = server.proc.wait(timeout=90)
    except subprocess.TimeoutExpired:
        exit_code = None
    answered = [correct(a, heavy_cases(clips)) for a in answers]
    lost = sum(not ok for ok in answered)
    drill.record(
        fault=f"{fault} with {unanswered_at_signal} requests in flight",
        injected=1,
        lost=lost,
        unit="requests",
        check="each in-flight request's answer compared clip by clip with the training run's probabilities; "
        "all child processes exited; port rebound; no traceback",
    )
    assert lost == 0, [a.status for a in answers]
    assert unanswered_at_signal >= 1  # the drill did catch requests in flight
    assert exit_code == 0, f"the main process did not exit cleanly ({exit_code}); {what_is_left(server)}"
    alive = no_process_left(children)
    assert not alive, [p.info for p in alive]
    assert port_is_free(server.port)
    log = server.log.read_text()
    assert "Traceback" not in log, log[-3000:]


@pytest.mark.drill
def test_sigterm_finishes_in_flight_requests_ends_every_process_and_frees_the_port(server, clips, drill):
    stop = lambda: os.kill(server.proc.pid, signal.SIGTERM)  # noqa: E731 (the main process only, as docker stop)
    stop_with_requests_in_flight(server, stop, clips, drill, "SIGTERM to the main process")


@pytest.mark.drill
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_to_the_whole_process_group_is_a_graceful_shutdown_too(servers, clips, drill, signum):
    """Ctrl+C in a terminal (SIGINT) and systemd's default `KillMode=control-group` (SIGTERM) signal every
    process of the server at once. The inference workers and the manager used to end at once: both in-flight
    requests were lost (a 500 and a reset connection), the API process was killed after its 30 s grace, and
    LitServe's monitor logged a traceback (docs/serving.md §2)."""
    server = servers.by_group_signal[signum]
    stop_with_requests_in_flight(
        server,
        lambda: os.killpg(server.proc.pid, signum),
        clips,
        drill,
        f"{signal.Signals(signum).name} to the process group",
    )


# ---------------------------------------------------------------- while the model loads: 503, and 504 past timeout

# Added to `sitecustomize.py` (`stack_dump_env`), so every process of the server runs it at start-up; it acts only in an
# inference worker (a spawned process LitServe names "inference-worker").
LOAD_GATE = """
import os, sys
gate, under = os.environ.get("VLMCHALLENGE_TEST_LOAD_GATE"), os.environ.get("VLMCHALLENGE_TEST_LOAD_UNDER")
if gate and under:
    import multiprocessing
    waited = []

    def hook(event, args):
        # the first file the worker opens in the export (the start of the model load) waits for the gate:
        # a FIFO, whose open returns once the test opens it for writing, and whose read ends when it closes it
        if event != "open" or waited or multiprocessing.current_process().name != "inference-worker":
            return
        if isinstance(args[0], (str, bytes, os.PathLike)) and os.fsdecode(args[0]).startswith(under):
            waited.append(args[0])
            with open(gate, "rb") as f:
                f.read()

    sys.addaudithook(hook)
"""


def open_the_gate(gate, server: LiveServer) -> None:
    """Opens the FIFO for writing once the worker waits on it (it waits until then: the moment cannot pass),
    and closes it: the worker's read ends, and the model load goes on."""
    deadline = time.monotonic() + HEALTHY_WITHIN_S
    while True:
        try:
            os.close(os.open(gate, os.O_WRONLY | os.O_NONBLOCK))
            return
        except OSError as e:  # ENXIO: no reader yet
            assert e.errno == errno.ENXIO, e
        assert server.proc.poll() is None and time.monotonic() < deadline, server.log_tail()
        time.sleep(POLL_PAUSE_S)


def test_while_the_model_loads_health_is_503_and_a_request_past_timeout_504(servers, clips):
    """The README's promises, with the model load held by the test: `/health` answers 503 until the model is
    loaded (uvicorn listens while the worker loads: serving/supervision.py), a request not answered within
    `timeout` gets 504 and leaves the server's count, and once the load goes on the server is healthy and stops
    cleanly."""
    server = servers.loading
    assert health_status(server.base) == 503  # the worker cannot have loaded: the gate is closed
    late = post_predict(server.base, frames_of([clips[0]]))
    assert late.status == 504, (late.status, late.body)
    assert late.body == {"detail": "no answer within 2 s (timeout)"}
    assert in_server(server.base) == 0  # the 504 let go of its place
    assert health_status(server.base) == 503
    open_the_gate(servers.gate, server)
    assert wait_for_health(server, (200,)) == 200
    os.kill(server.proc.pid, signal.SIGTERM)
    assert server.proc.wait(timeout=90) == 0
    assert "Traceback" not in server.log.read_text(), server.log_tail()


# ---------------------------------------------------------------- one batch of 4, then an inference worker killed

BATCH = 4


@pytest.fixture(scope="module")
def batching_server(servers) -> LiveServer:
    return servers.batching


def one_batch(base, cases: list[ClipCase]) -> list[Answer]:
    with ThreadPoolExecutor(len(cases)) as pool:
        return list(pool.map(lambda c: post_predict(base, frames_of([c])), cases))


def test_concurrent_requests_share_one_batch(batching_server, clips):
    """Not only right answers: the server says each request was answered by a batch of 4 (`X-Batch-Size`)."""
    cases = [clips[0], clips[-1], clips[1], clips[-2]]  # both trained operations
    answers = one_batch(batching_server.base, cases)
    assert [a.status for a in answers] == [200] * BATCH, [a.body for a in answers]
    assert [a.headers["X-Batch-Size"] for a in answers] == [str(BATCH)] * BATCH
    assert all(correct(a, [c]) for a, c in zip(answers, cases, strict=True))


def test_decode_threads_reach_the_inference_worker(batching_server):
    """`decode_threads=3` on the command line is the worker's pool size (the worker says so once loaded)."""
    assert "/predict worker ready: model on cpu, 3 frame-decoding threads" in batching_server.log.read_text()


@pytest.mark.drill
def test_sigkill_of_an_inference_worker_ends_the_server_at_once_for_its_supervisor(
    batching_server, clips, drill
):
    """As the OOM killer would: SIGKILL of the inference worker while 3 requests are in the server, none of
    which can be answered (a batch of 4 never fills). LitServe's monitor used to log "Worker inference-worker died; shutting down" and end in a raw
    EOFError traceback; now the server logs one line naming the worker and the signal, ends its other processes,
    frees the port and exits with code 70, so that Docker, systemd or Kubernetes restarts it (docs/serving.md
    §8). The requests in flight are cut (their connections close): dropped with notice, never left hanging or
    answered wrongly."""
    server = batching_server
    cases = [clips[0], clips[-1], clips[1], clips[-2]]
    before = one_batch(server.base, cases)  # answered: the worker serves
    children = psutil.Process(server.proc.pid).children(recursive=True)
    (worker,) = [p for p in children if "spawn_main" in " ".join(p.cmdline())]  # the one inference worker
    held = cases[:3]
    with ThreadPoolExecutor(len(held)) as pool:
        in_flight = [pool.submit(post_predict, server.base, frames_of([c])) for c in held]
        wait_in_server(server.base, len(held))
        os.kill(worker.pid, signal.SIGKILL)
        try:
            exit_code = server.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            exit_code = None
        cut = [f.result() for f in in_flight]
    sent = [*zip(before, cases, strict=True), *zip(cut, held, strict=True)]
    answered = [correct(a, [c]) for a, c in sent]
    failed_visibly = [a.status == 0 or a.status >= 500 for a, _ in sent]
    lost = sum(not (ok or seen) for ok, seen in zip(answered, failed_visibly, strict=True))
    died = [line for line in server.log.read_text().splitlines() if f"pid {worker.pid}" in line]
    drill.record(
        fault=f"SIGKILL of the inference worker with {len(held)} requests in flight",
        injected=1,
        lost=lost,
        unit="requests",
        check="each answer compared with the training run's probabilities for its clip; a closed connection "
        "or a 5xx counts as dropped with notice; exit code, one log line, no process left, port rebound",
        noticed=f"{sum(failed_visibly)} in-flight requests cut (connection closed); server exit code {exit_code}",
    )
    assert lost == 0, [a.status for a, _ in sent]
    assert answered == [True] * BATCH + [False] * len(held)
    assert [a.status for a in cut] == [0] * len(held)  # cut, not answered wrongly, not left hanging
    assert exit_code == EXIT_PROCESS_DIED
    assert (
        len(died) == 1 and "inference worker 0 of /predict" in died[0] and "killed by SIGKILL" in died[0]
    ), died
    log = server.log.read_text()
    assert log.strip().splitlines()[-1] == died[0], log[-3000:]  # the last word, and nothing after it
    assert "Traceback" not in log and "leaked" not in log, log[-3000:]
    alive = no_process_left(children)
    assert not alive, [p.info for p in alive]
    assert port_is_free(server.port)


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
    api = ChatClassifierAPI("unused", "cpu", ServeLimits(), "s3cret-ké", decode_threads=None)
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
