"""Each family's tiny experiment, the whole default run on CPU: test macro-F1 and wall time.

    .venv/bin/python bench/families.py            # print the table
    .venv/bin/python bench/families.py --write    # also update docs/benchmarks.md

Runs `python -m vlmchallenge.train experiment=<e>` (synthetic data, train, validate, test, export) for each
experiment in `--experiments`, one after another in fresh processes with their own data folder, and reads the
test metrics the command prints. Targets (docs/families.md): test macro-F1 >= 0.90 within 10 minutes on 2 cores.
The Qwen2-VL row is the baseline, run in the same invocation on the same machine.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from benchdoc import update_section  # noqa: E402

TARGET_F1, TARGET_S = 0.90, 600
# the command logs its metrics (Lightning's rank_zero_info: stderr, after any log-format prefix)
METRIC = re.compile(r"(test/f1_macro|test/openpack_f1_macro|val/f1_macro) = ([0-9.]+)$", re.M)


def run(experiment: str, workdir: Path, extra: list[str]) -> dict:
    cmd = [
        sys.executable, "-m", "vlmchallenge.train", f"experiment={experiment}",
        f"paths.data_dir={workdir / 'data'}", f"paths.log_dir={workdir / 'logs'}", *extra,
    ]  # fmt: skip
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(f"{experiment}: exit {proc.returncode}\n{proc.stderr[-3000:]}")
    metrics = {k: float(v) for k, v in METRIC.findall(proc.stdout + proc.stderr)}
    if "test/f1_macro" not in metrics:  # a table of nan would hide it
        raise SystemExit(
            f"{experiment}: no test/f1_macro in its output\n{(proc.stdout + proc.stderr)[-3000:]}"
        )
    return {"experiment": experiment, "seconds": seconds, **metrics}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--experiments",
        nargs="+",
        default=["tiny_cpu", "tiny_qwen3vl_cpu", "tiny_qwen35_cpu", "tiny_internvl_cpu"],
    )
    p.add_argument("--write", action="store_true")
    p.add_argument("overrides", nargs="*", help="extra overrides for every run")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [run(e, Path(tmp) / e, a.overrides) for e in a.experiments]
    cmd = " ".join([".venv/bin/python bench/families.py", *map(shlex.quote, sys.argv[1:])])
    lines = [
        "## Families end to end on CPU (`bench/families.py`)",
        "",
        f"Command: `{cmd}` ({date.today().isoformat()}, {os.cpu_count()} CPU cores)",
        "",
        "The default synthetic data and training settings; each run generates its data, trains, validates, tests "
        "the best checkpoint and exports, in a fresh process (model build and data preparation included).",
        "",
        "The first row is the baseline: on a loaded machine compare the ratio to it, not the seconds.",
        "",
        f"| experiment | val macro-F1 | test macro-F1 (>= {TARGET_F1}) | OpenPack 1-s macro-F1 | wall (<= {TARGET_S} s) "
        "| wall / baseline |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        f1, s = r.get("test/f1_macro", float("nan")), r["seconds"]
        lines.append(
            f"| `{r['experiment']}` | {r.get('val/f1_macro', float('nan')):.3f} | {f1:.3f} "
            f"{'PASS' if f1 >= TARGET_F1 else 'MISS'} | {r.get('test/openpack_f1_macro', float('nan')):.3f} | "
            f"{s:.0f} {'PASS' if s <= TARGET_S else 'MISS'} | {s / rows[0]['seconds']:.2f} |"
        )
    section = "\n".join(lines)
    print(section)
    if a.write:
        update_section("families", section)


if __name__ == "__main__":
    main()
