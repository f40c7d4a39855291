"""Run every fault-injection drill (`pytest -m drill`) and print the table of docs/reliability.md.

    .venv/bin/python bench/drills.py [--write] [-- <extra pytest args>]

Each drill is a test marked `drill` that injects a real fault (SIGKILL, a damaged shard, SIGTERM under load,
an unreachable model hub...), measures what was lost against a reference, records it through the `drill`
fixture before asserting (tests/helpers/drills.py). This script runs them in one pytest process with a report file set, reads the
outcome of each test from pytest's JUnit XML (survived = the test passed) and joins the two. A drill that failed
before recording still gets a row, marked not survived; a skipped one (e.g. a GPU drill here) a row marked skipped. `--write` rewrites the table section of
docs/reliability.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

from benchdoc import update_section  # noqa: E402

from tests.helpers.drills import REPORT_ENV  # noqa: E402

DOC = REPO / "docs" / "reliability.md"


def junit_outcomes(path: Path) -> dict[str, str]:
    """pytest node id -> passed | failed | skipped, from a JUnit XML report."""
    outcomes = {}
    for case in ET.parse(path).iter("testcase"):
        module, name = case.get("classname", ""), case.get("name", "")
        parts = module.split(".")
        # classname is "tests.test_x" or "tests.test_x.TestClass"
        file_parts = parts[:2] if len(parts) > 1 else parts
        nodeid = "/".join(file_parts) + ".py::" + "::".join([*parts[2:], name])
        kinds = {child.tag for child in case}
        outcomes[nodeid] = (
            "failed" if kinds & {"failure", "error"} else "skipped" if "skipped" in kinds else "passed"
        )
    return outcomes


def run_drills(extra: list[str]) -> tuple[list[dict], dict[str, str], float, int]:
    with tempfile.TemporaryDirectory() as tmp:
        report, junit = Path(tmp) / "drills.jsonl", Path(tmp) / "junit.xml"
        env = {**os.environ, REPORT_ENV: str(report)}
        cmd = [sys.executable, "-m", "pytest", "-m", "drill", "-q", f"--junitxml={junit}", *extra]
        start = time.monotonic()
        rc = subprocess.run(cmd, cwd=REPO, env=env).returncode
        seconds = time.monotonic() - start
        records = [json.loads(line) for line in report.read_text().splitlines()] if report.exists() else []
        return records, junit_outcomes(junit) if junit.exists() else {}, seconds, rc


def table(records: list[dict], outcomes: dict[str, str]) -> list[str]:
    rows = [
        "| fault injected | times | survived | lost without notice | dropped with notice | how loss was measured "
        "| reproduce |",
        "|---|---|---|---|---|---|---|",
    ]
    recorded = set()
    for r in records:
        recorded.add(r["test"])
        survived = "yes" if outcomes.get(r["test"]) == "passed" else "**no**"
        lost = f"{r['lost']} {r['unit']}" if r["lost"] == 0 else f"**{r['lost']} {r['unit']}**"
        rows.append(
            f"| {r['fault']} | {r['injected']} | {survived} | {lost} | {r.get('noticed') or '-'} | {r['check']} | "
            f"`pytest '{r['test']}'` |"
        )
    for test, outcome in sorted(outcomes.items()):
        if test in recorded:
            continue
        if outcome == "skipped":
            rows.append(f"| {test.split('::')[-1]} | 0 | skipped | not measured | | | `pytest '{test}'` |")
        else:
            rows.append(
                f"| {test.split('::')[-1]} (failed before recording) | ? | **no** | ? | | | `pytest '{test}'` |"
            )
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--write", action="store_true", help="rewrite the table in docs/reliability.md")
    ap.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = ap.parse_args()
    records, outcomes, seconds, rc = run_drills(args.pytest_args)
    passed = sum(o == "passed" for o in outcomes.values())
    lines = [
        f"Produced by `.venv/bin/python bench/drills.py --write` on {date.today().isoformat()}: "
        f"{len(outcomes)} drill tests, {passed} passed, in {seconds:.0f} s "
        f"({os.cpu_count()} CPU cores, no GPU).",
        "",
        *table(records, outcomes),
    ]
    print("\n".join(lines))
    if args.write:
        update_section("drills", "\n".join(lines), DOC)
    return rc


if __name__ == "__main__":
    sys.exit(main())
