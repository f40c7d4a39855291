"""Run every drill (`pytest -m drill`) several times in a row while busy loops hold every core: the drills must
not depend on how fast the machine is (issue: a kill drill that polled from outside raced a fast run).

    .venv/bin/python bench/drills_under_load.py [--runs 5] [--busy 2] [--write]

Each busy loop is a Python process spinning on arithmetic. Prints one row per run (passed, failed, seconds) and,
with `--write`, the table into docs/reliability.md (section `drills-under-load`).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from benchdoc import update_section  # noqa: E402

BUSY_LOOP = "while True: pass"


def one_run(log: Path) -> tuple[int, int, int, float]:
    """(passed, failed, skipped, seconds) of one `pytest -m drill` run; its whole output goes to `log`."""
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-m", "drill", "-q", "-p", "no:cacheprovider"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    seconds = time.monotonic() - start
    tail = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    counts = {kind: int(n) for n, kind in re.findall(r"(\d+) (passed|failed|skipped|error)", tail)}
    log.write_text(proc.stdout + "\n" + proc.stderr)
    if proc.returncode != 0:
        failures = [line for line in proc.stdout.splitlines() if line.startswith(("FAILED", "ERROR", "E "))]
        print(*failures[:40], f"(whole output: {log})", sep="\n")
    return (
        counts.get("passed", 0),
        counts.get("failed", 0) + counts.get("error", 0),
        counts.get("skipped", 0),
        seconds,
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument(
        "--busy", type=int, default=os.cpu_count() or 2, help="busy-loop processes (default: cores)"
    )
    ap.add_argument("--write", action="store_true", help="write the table into docs/reliability.md")
    ap.add_argument("--logs", type=Path, default=Path("/tmp/drills-under-load"), help="each run's output")
    args = ap.parse_args()
    loops = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(args.busy)]
    rows, failed_runs = [], 0
    try:
        for run in range(1, args.runs + 1):
            args.logs.mkdir(parents=True, exist_ok=True)
            passed, failed, skipped, seconds = one_run(args.logs / f"run{run}.log")
            failed_runs += failed > 0
            rows.append(f"| {run} | {passed} | {failed} | {skipped} | {seconds:.0f} |")
            print(rows[-1], flush=True)
    finally:
        for loop in loops:
            loop.kill()
    lines = [
        f"Produced by `.venv/bin/python bench/drills_under_load.py --runs {args.runs} --busy {args.busy} --write` "
        f"on {date.today().isoformat()} ({os.cpu_count()} CPU cores, {args.busy} busy loops): "
        f"{args.runs - failed_runs} of {args.runs} runs passed every drill.",
        "",
        "| run | drills passed | failed | skipped | seconds |",
        "|---|---|---|---|---|",
        *rows,
    ]
    print("\n".join(lines))
    if args.write:
        update_section("drills-under-load", "\n".join(lines), REPO / "docs" / "reliability.md")
    return 1 if failed_runs else 0


if __name__ == "__main__":
    sys.exit(main())
