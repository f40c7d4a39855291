"""Load-test the LitServe server on loopback: throughput and p50/p95/p99 latency at several concurrencies,
dynamic batching on vs off.

    .venv/bin/python bench/serve_load.py --export outputs/train/runs/<time>/export [--write]

For each setting a real server subprocess is started (`python -m vlmchallenge.serve`), warmed up, then sent a
fixed number of /predict requests (the same real clip) from a thread pool. Targets: batched >= 2x the
throughput of unbatched at concurrency 8; 0 errors over all requests. Each row also gives the CPU time per
request of the server's whole process tree and of its busiest process (the inference worker), and of this
load generator, from psutil: where the time goes.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from benchdoc import update_section  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(
    export: Path, batch: int = 8, timeout_ms: float = 10, *overrides: str
) -> tuple[subprocess.Popen, str]:
    """`python -m vlmchallenge.serve` on a free port, once healthy (`overrides`: more `key=value`s)."""
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vlmchallenge.serve",
            f"export_dir={export}",
            f"port={port}",
            "device=cpu",
            f"max_batch_size={batch}",
            f"batch_timeout={timeout_ms / 1000}",
            "openai=false",
            "hydra.run.dir=/tmp/serve_load",
            *overrides,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        cwd=REPO,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 600  # model loading on a busy machine can take minutes
    while time.time() < deadline and proc.poll() is None:
        try:
            if urllib.request.urlopen(base + "/health", timeout=1).status == 200:
                return proc, base
        except Exception:
            time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGTERM)
    raise RuntimeError("server did not become healthy")


def one_request(base: str, body: bytes) -> tuple[bool, float]:
    start = time.perf_counter()
    req = urllib.request.Request(base + "/predict", data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            ok = r.status == 200 and "prediction" in json.loads(r.read())
    except Exception:
        ok = False
    return ok, time.perf_counter() - start


def cpu_seconds(pid: int) -> dict[int, float]:
    """User + system CPU seconds of `pid` and each of its descendants."""
    out = {}
    root = psutil.Process(pid)
    for p in [root, *root.children(recursive=True)]:
        try:
            t = p.cpu_times()
            out[p.pid] = t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return out


def load(base: str, body: bytes, concurrency: int, requests: int, server_pid: int) -> dict:
    for _ in range(4):
        one_request(base, body)  # warm-up
    server_before, client_before = cpu_seconds(server_pid), time.process_time()
    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(lambda _: one_request(base, body), range(requests)))
    wall = time.perf_counter() - start
    client_cpu = time.process_time() - client_before
    server_after = cpu_seconds(server_pid)
    per_process = [t - server_before.get(pid, 0.0) for pid, t in server_after.items()]
    lat = sorted(t for _, t in results)

    def pct(q: float) -> float:
        return lat[min(len(lat) - 1, int(q * len(lat)))] * 1000

    return {
        "rps": requests / wall,
        "p50": pct(0.50),
        "p95": pct(0.95),
        "p99": pct(0.99),
        "errors": sum(not ok for ok, _ in results),
        "requests": requests,
        "server_cpu_ms": sum(per_process) * 1000 / requests,
        "busiest_cpu_ms": max(per_process) * 1000 / requests,
        "client_cpu_ms": client_cpu * 1000 / requests,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--export", required=True)
    p.add_argument(
        "--frames-dir", default=str(REPO / "data/synthetic/openpack/v1.0.0/U9008/kinect/color-masked/frames")
    )
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--requests", type=int, default=200, help="per (setting, concurrency)")
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--batch-timeout-ms", type=float, default=10)
    p.add_argument("--device", default="cpu", help="the server's device: cpu | cuda | auto")
    p.add_argument("--write", action="store_true")
    a = p.parse_args()
    paths = sorted(Path(a.frames_dir).rglob("*.jpg"))[200 : 200 + a.frames]
    body = json.dumps({"frames": [base64.b64encode(q.read_bytes()).decode() for q in paths]}).encode()
    table = {}
    for label, batch in (("batching off", 1), (f"batching on (max {a.max_batch})", a.max_batch)):
        proc, base = start_server(Path(a.export), batch, a.batch_timeout_ms, f"device={a.device}")
        try:
            for c in a.concurrency:
                table[(label, c)] = load(base, body, c, a.requests, proc.pid)
                print(label, c, table[(label, c)], flush=True)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
    off8, on8 = table[("batching off", 8)]["rps"], table[(f"batching on (max {a.max_batch})", 8)]["rps"]
    errors = sum(r["errors"] for r in table.values())
    total = sum(r["requests"] for r in table.values())
    cmd = " ".join([".venv/bin/python bench/serve_load.py", *sys.argv[1:]])
    lines = [
        "## Serving load (`bench/serve_load.py`)" + (" on the GPU" if a.device != "cpu" else ""),
        "",
        f"Command: `{cmd}` ({date.today().isoformat()})",
        "",
        f"- Machine: {platform.machine()}, {os.cpu_count()} cores, {a.device} inference (tiny model export), one worker "
        f"(frame decoding in its default thread pool); each request one clip of {a.frames} JPEG frames "
        f"(~{len(body) // 1024} KB JSON) on loopback; {a.requests} requests per row after 4 warm-up requests; "
        f"batch timeout {a.batch_timeout_ms} ms.",
        "- CPU ms/req: CPU time per request of the server's process tree, of its busiest process (the inference "
        "worker), and of this load generator (psutil, https://psutil.readthedocs.io/en/latest/#psutil.Process.cpu_times).",
        "",
        "| setting | concurrency | req/s | p50 ms | p95 ms | p99 ms | errors | server CPU ms/req | worker CPU ms/req "
        "| client CPU ms/req |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *(
            f"| {lb} | {c} | {r['rps']:.1f} | {r['p50']:.0f} | {r['p95']:.0f} | {r['p99']:.0f} | {r['errors']} "
            f"| {r['server_cpu_ms']:.1f} | {r['busiest_cpu_ms']:.1f} | {r['client_cpu_ms']:.1f} |"
            for (lb, c), r in table.items()
        ),
        "",
        "| check | value | target | result |",
        "|---|---:|---:|---|",
        f"| batched / unbatched throughput at concurrency 8 | {on8 / off8:.2f}x | >= 2x | "
        f"{'PASS' if on8 / off8 >= 2 else 'FAIL'} |",
        f"| errors over {total} requests | {errors} | 0 | {'PASS' if errors == 0 else 'FAIL'} |",
    ]
    section = "\n".join(lines)
    print(section)
    if a.write:
        update_section("serve_load_gpu" if a.device != "cpu" else "serve_load", section)


if __name__ == "__main__":
    main()
