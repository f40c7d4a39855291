"""Serving under sustained load: memory over many requests, and status codes at high concurrency.

    .venv/bin/python bench/serve_memory.py --export outputs/train/runs/<time>/export [--write]

Memory: a real server subprocess (`python -m vlmchallenge.serve`) is sent `--requests` small `/predict`
requests (one clip of 4 small JPEG frames, 16 different clips in turn) from `--concurrency` threads; every
`--every` requests the resident memory of the server's whole process tree (main, multiprocessing manager,
uvicorn API process, inference worker) is sampled with psutil: RSS summed, and USS summed (memory unique to each
process, so pages shared after fork are not counted twice). Growth is fitted (least squares) over the samples
after `--warmup` requests and given per 1,000 requests.

Concurrency: a fresh server with `max_queue` = the concurrency answers `--burst` requests sent from that many
threads (expected: all 200), and one with a smaller `max_queue` (expected: 503s and 200s, nothing else).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import platform
import signal
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

import numpy as np
import psutil
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from benchdoc import update_section  # noqa: E402
from serve_load import start_server  # noqa: E402


def clip_bodies(n: int = 16, frames: int = 4, size=(112, 84)) -> list[bytes]:
    rng = np.random.default_rng(0)
    bodies = []
    for _ in range(n):
        encoded = []
        for _ in range(frames):
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(buf, "JPEG")
            encoded.append(base64.b64encode(buf.getvalue()).decode())
        bodies.append(json.dumps({"frames": encoded}).encode())
    return bodies


def send(base: str, body: bytes) -> tuple[int, float]:
    """(HTTP status, or 0 when no answer came; seconds)."""
    start = time.perf_counter()
    req = urllib.request.Request(base + "/predict", data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            r.read()
            code = r.status
    except urllib.error.HTTPError as e:
        code = e.code
    except Exception:
        code = 0
    return code, time.perf_counter() - start


def tree_memory(pid: int) -> tuple[float, float, int]:
    """(RSS MiB, USS MiB, processes) summed over the process and all its descendants."""
    root = psutil.Process(pid)
    rss = uss = 0
    procs = [root, *root.children(recursive=True)]
    for p in procs:
        try:
            info = p.memory_full_info()
            rss, uss = rss + info.rss, uss + info.uss
        except psutil.NoSuchProcess:
            pass
    return rss / 2**20, uss / 2**20, len(procs)


def memory_run(export: Path, requests: int, concurrency: int, every: int, warmup: int) -> dict:
    bodies = clip_bodies()
    proc, base = start_server(export, 8, 10)
    samples, codes = [], Counter()
    try:
        samples.append((0, *tree_memory(proc.pid)))
        with ThreadPoolExecutor(concurrency) as pool:
            for start in range(0, requests, every):
                batch = range(start, min(start + every, requests))
                for code, _ in pool.map(lambda i: send(base, bodies[i % len(bodies)]), batch):
                    codes[code] += 1
                samples.append((batch[-1] + 1, *tree_memory(proc.pid)))
                print(samples[-1], dict(codes), flush=True)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    after = np.array([s for s in samples if s[0] >= warmup])
    rss_slope = np.polyfit(after[:, 0], after[:, 1], 1)[0] * 1000
    uss_slope = np.polyfit(after[:, 0], after[:, 2], 1)[0] * 1000
    return {"samples": samples, "codes": codes, "rss_per_1k": rss_slope, "uss_per_1k": uss_slope}


def burst(export: Path, concurrency: int, max_queue: int, requests: int) -> dict:
    bodies = clip_bodies()
    proc, base = start_server(export, 8, 10, f"max_queue={max_queue}")
    try:
        with ThreadPoolExecutor(concurrency) as pool:
            results = list(pool.map(lambda i: send(base, bodies[i % len(bodies)]), range(requests)))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    ok = sorted(t for code, t in results if code == 200)
    return {
        "codes": Counter(code for code, _ in results),
        "p50": ok[len(ok) // 2] * 1000 if ok else float("nan"),
        "p99": ok[min(len(ok) - 1, int(0.99 * len(ok)))] * 1000 if ok else float("nan"),
    }


def codes_text(codes: Counter) -> str:
    return ", ".join(f"{n}x {c if c else 'no answer'}" for c, n in sorted(codes.items()))


def memory_section(a, mem: dict, cmd: str) -> str:
    (_, rss0, uss0, procs), (_, rss1, uss1, _) = mem["samples"][0], mem["samples"][-1]
    warm = next(s for s in mem["samples"] if s[0] >= a.warmup)
    return "\n".join(
        [
            "## Serving memory over many requests (`bench/serve_memory.py`)",
            "",
            f"Command: `{cmd}` ({date.today().isoformat()})",
            "",
            f"- Machine: {MACHINE}; each request one clip of 4 JPEG frames of 112x84 (16 different clips in turn).",
            f"- {a.requests} `/predict` requests from {a.concurrency} threads; the server's process tree "
            f"({procs} processes) sampled every {a.every} requests. Answers: {codes_text(mem['codes'])}.",
            "",
            "| memory of the process tree | at start | after warm-up | at the end | growth per 1k requests "
            "after warm-up (fit) |",
            "|---|---:|---:|---:|---:|",
            f"| RSS, summed (MiB) | {rss0:.0f} | {warm[1]:.0f} | {rss1:.0f} | {mem['rss_per_1k']:+.2f} |",
            f"| USS, summed (MiB) | {uss0:.0f} | {warm[2]:.0f} | {uss1:.0f} | {mem['uss_per_1k']:+.2f} |",
            "",
            f"Warm-up: the first {a.warmup} requests. Samples (requests, RSS MiB, USS MiB): "
            + ", ".join(f"({n}, {r:.0f}, {u:.0f})" for n, r, u, _ in mem["samples"]),
        ]
    )


def concurrency_section(a, runs: list, cmd: str) -> str:
    return "\n".join(
        [
            "## Serving at high concurrency (`bench/serve_memory.py`)",
            "",
            f"Command: `{cmd}` ({date.today().isoformat()})",
            "",
            f"- Machine: {MACHINE}; {a.burst} `/predict` requests per row (one clip of 4 JPEG frames of 112x84), "
            "each row from a fresh server.",
            "",
            "| concurrency | max_queue | answers | 5xx other than 503, or no answer | p50 ms (200s) | p99 ms (200s) |",
            "|---:|---:|---|---:|---:|---:|",
            *(
                f"| {c} | {q} | {codes_text(r['codes'])} | "
                f"{sum(n for code, n in r['codes'].items() if code >= 500 and code != 503 or code == 0)} | "
                f"{r['p50']:.0f} | {r['p99']:.0f} |"
                for c, q, r in runs
            ),
        ]
    )


MACHINE = (
    f"{platform.machine()}, {os.cpu_count()} cores (shared: load average {os.getloadavg()[0]:.0f} when it "
    "started), CPU inference, one worker; `<export>`: the two-class tiny model (`TWO_CLASS_OVERRIDES`, "
    "tests/helpers/runs.py)"
)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--export", required=True)
    p.add_argument("--requests", type=int, default=10_000, help="memory run; 0 skips it")
    p.add_argument("--concurrency", type=int, default=12)
    p.add_argument("--every", type=int, default=500, help="sample memory every this many requests")
    p.add_argument("--warmup", type=int, default=1000, help="requests before the growth fit starts")
    p.add_argument("--burst", type=int, default=640, help="requests per high-concurrency run; 0 skips them")
    p.add_argument("--small-queue", type=int, default=16)
    p.add_argument("--write", action="store_true")
    a = p.parse_args()
    export = Path(a.export)
    argv = sys.argv[1:]
    args = ["<export>" if prev == "--export" else arg for prev, arg in zip(["", *argv], argv, strict=False)]
    cmd = " ".join([".venv/bin/python bench/serve_memory.py", *args])
    if a.requests:
        section = memory_section(a, memory_run(export, a.requests, a.concurrency, a.every, a.warmup), cmd)
        print(section, flush=True)
        if a.write:
            update_section("serve_memory", section)
    if a.burst:
        runs = []
        for c, q in ((64, 64), (64, a.small_queue), (32, 64)):
            runs.append((c, q, burst(export, c, q, a.burst)))
            print(runs[-1], flush=True)
        section = concurrency_section(a, runs, cmd)
        print(section)
        if a.write:
            update_section("serve_concurrency", section)


if __name__ == "__main__":
    main()
