"""What a fault-injection drill reports, for the table in docs/reliability.md (`bench/drills.py`).

A drill test takes the `drill` fixture and records the fault it injected, how many times, and how much data was
lost, *before* it asserts anything: `lost` is measured against a reference (an uninterrupted run, the requests
sent, the samples listed), so a drill that loses data still writes its row, with the number, and then fails.
"Lost" means lost without notice; what was dropped and reported (skipped samples, counted and logged) goes in
`noticed`. Whether the drill was survived is
the test's outcome, which `bench/drills.py` reads from pytest's JUnit XML. Outside `bench/drills.py` (no
`VLMCHALLENGE_DRILL_REPORT` in the environment) recording writes nothing.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

REPORT_ENV = "VLMCHALLENGE_DRILL_REPORT"


@dataclass
class DrillRecord:
    test: str  # pytest node id: `pytest <test>` reproduces it
    fault: str  # what was injected, e.g. "SIGKILL of prepare at 1, 53 and 105 of 106 shards"
    injected: int  # how many times
    lost: int  # data lost without notice, in `unit`s, measured before the test's assertions
    unit: str  # "files", "samples lost without notice", "requests", ...
    check: str  # how loss was measured, e.g. "files differing from an uninterrupted run's"
    noticed: str = ""  # what was dropped with notice, e.g. "102 of 160 samples skipped and counted"


class Drill:
    def __init__(self, nodeid: str):
        self.nodeid, self.records = nodeid, []

    def record(self, fault: str, injected: int, lost: int, unit: str, check: str, noticed: str = "") -> None:
        rec = DrillRecord(self.nodeid, fault, injected, int(lost), unit, check, noticed)
        self.records.append(rec)
        path = os.environ.get(REPORT_ENV)
        if path:
            with open(path, "a") as f:  # one JSON line per record; the runner reads them all at the end
                f.write(json.dumps(asdict(rec)) + "\n")
