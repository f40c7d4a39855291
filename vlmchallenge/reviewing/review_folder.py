"""An annotation folder under review: what `annotate` wrote, plus what the reviewer saved beside it.

Read: `annotate.json` (the recording and its range), `timeline.csv` (per-second status, id and confidence),
and the segments: `operations.reviewed.csv` once saved, else the model's `operations.csv`; both through the
project's own `parse_operations_csv`, so a reviewed file that the parser would refuse cannot be shown as saved.

Saved, each file written under a temporary name, fsynced and renamed (`utils/atomic.write_atomically`), in this
order: the edit log, then the 1-Hz file, then `operations.reviewed.csv` last. The reviewed CSV is what a reload
reads, so a crash mid-save leaves the previous saved state whole and at worst a log line ahead of it.
- `operations.reviewed.csv`: OpenPack's `openpack-operations` format.
- `operations.reviewed.1hz.csv`: OpenPack's `openpack-operations-1hz` format on the timeline's seconds.
- `review_edits.jsonl`: one JSON line per edit: its time, action, segment, old and new value, and the save.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from vlmchallenge.data.annotation_parser import parse_operations_csv
from vlmchallenge.data.annotation_writer import (
    OperationRow,
    csv_bytes,
    write_operations_1hz_csv,
    write_operations_csv,
)
from vlmchallenge.reviewing.footage import Footage
from vlmchallenge.reviewing.reviewed_timeline import SECOND_MS, SecondsSpan
from vlmchallenge.utils.atomic import write_atomically

REVIEWED_CSV = "operations.reviewed.csv"
REVIEWED_1HZ_CSV = "operations.reviewed.1hz.csv"
EDIT_LOG = "review_edits.jsonl"


@dataclass(frozen=True)
class Second:
    unixtime_ms: int
    status: str  # predicted | no_frames | no_window (evaluation/seconds.py)
    op_id: int | None
    confidence: float | None


def _read_timeline(path: Path) -> list[Second]:
    with open(path, newline="") as f:
        return [
            Second(
                int(r["unixtime_ms"]),
                r["status"],
                int(r["id"]) if r["id"] else None,
                float(r["confidence"]) if r["confidence"] else None,
            )
            for r in csv.DictReader(f)
        ]


class ReviewFolder:
    def __init__(self, folder: str | Path):
        self.path = Path(folder)
        missing = [
            n for n in ("annotate.json", "timeline.csv", "operations.csv") if not (self.path / n).is_file()
        ]
        if missing:
            raise FileNotFoundError(
                f"annotation={self.path}: no {', '.join(missing)}; expected a folder `python -m "
                "vlmchallenge.annotate` wrote (outputs/annotate/runs/<time>)"
            )
        self.meta = json.loads((self.path / "annotate.json").read_text())
        if "recording" not in self.meta:
            raise ValueError(
                f"{self.path / 'annotate.json'}: no 'recording' field (written by annotate since the review page "
                "came); annotate the recording again to review it"
            )
        self.seconds = _read_timeline(self.path / "timeline.csv")
        self.user, self.session = self.meta["recording"]["user"], self.meta["recording"]["session"]

    def open_footage(self) -> Footage:
        """The recording this folder annotated, opened again from annotate.json's `recording` field."""
        return Footage(self.meta["recording"], str(self.path / "annotate.json"))

    @property
    def span(self) -> SecondsSpan:
        return SecondsSpan(self.seconds[0].unixtime_ms, self.seconds[-1].unixtime_ms + SECOND_MS)

    @property
    def saved(self) -> bool:
        return (self.path / REVIEWED_CSV).is_file()

    def segments(self) -> list[OperationRow]:
        """The reviewed segments once saved, else the model's; Null is a gap, as in OpenPack's files."""
        parsed = parse_operations_csv(self.path / (REVIEWED_CSV if self.saved else "operations.csv"))
        return [OperationRow(s.op_id, s.start_ms, s.end_ms, s.box) for s in parsed.segments]

    def edits(self) -> list[dict]:
        log = self.path / EDIT_LOG
        return [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []

    def save(self, rows: list[OperationRow], edits: list[dict]) -> None:
        saved_at = datetime.now(UTC).isoformat(timespec="milliseconds")
        lines = [*self.edits(), *({**e, "saved_at": saved_at} for e in edits)]
        log = "".join(json.dumps(e) + "\n" for e in lines)
        write_atomically(self.path / EDIT_LOG, lambda f: f.write(log.encode()))
        seconds = [s.unixtime_ms for s in self.seconds]
        hz = csv_bytes(write_operations_1hz_csv, self.user, self.session, rows, seconds)
        write_atomically(self.path / REVIEWED_1HZ_CSV, lambda f: f.write(hz))
        ops = csv_bytes(write_operations_csv, self.user, self.session, rows)
        write_atomically(self.path / REVIEWED_CSV, lambda f: f.write(ops))
