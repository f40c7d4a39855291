"""Load-test the LitServe server on loopback: throughput and p50/p95/p99 latency at several concurrencies,
dynamic batching on vs off.

    .venv/bin/python bench/serve_load.py --export outputs/train/runs/<time>/export [--write]

For each setting a real server subprocess is started (`python -m vlmchallenge.serve`), warmed up, then sent a
fixed number of /predict requests (the same real clip) from a thread pool. Targets: batched >= 2x the
throughput of unbatched at concurrency 8; 0 errors over all requests.
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


def load(base: str, body: bytes, concurrency: int, requests: int) -> dict:
    for _ in range(4):
        one_request(base, body)  # warm-up
    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(lambda _: one_request(base, body), range(requests)))
    wall = time.perf_counter() - start
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
                table[(label, c)] = load(base, body, c, a.requests)
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
        f"- Machine: {platform.machine()}, {os.cpu_count()} cores, {a.device} inference (tiny model export), one worker; "
        f"each request one clip of {a.frames} JPEG frames (~{len(body) // 1024} KB JSON) on loopback; "
        f"{a.requests} requests per row after 4 warm-up requests; batch timeout {a.batch_timeout_ms} ms.",
        "",
        "| setting | concurrency | req/s | p50 ms | p95 ms | p99 ms | errors |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *(
            f"| {lb} | {c} | {r['rps']:.1f} | {r['p50']:.0f} | {r['p95']:.0f} | {r['p99']:.0f} | {r['errors']} |"
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
