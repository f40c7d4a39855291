"""Write OpenPack v1.0.0 operation annotations, the files `annotation_parser` reads back unchanged.

- `openpack-operations/SXXXX.csv`: one row per operation segment, half-open `[start, end)` as ISO times in JST;
  OpenPack's files hold no Null rows (the toolkit reads a gap as Null, 8100), so Null segments are not written.
- `openpack-operations-1hz/SXXXX.csv`: one row per whole second with the operation active at its end
  (`t + 999 ms`, the toolkit's rule, docs/openpack.md §3.2); Null where no segment holds that instant.

The same writer serves the synthetic generator, `annotate` and the review page, so the three cannot disagree on
the format.
"""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TextIO

from vlmchallenge.data.annotation_parser import OPERATION_1HZ_COLUMNS, OPERATION_COLUMNS
from vlmchallenge.data.classes import ID_TO_CLASS, NULL_ID
from vlmchallenge.data.jst_time import unix_ms_to_iso

# the 1-Hz label of second t is the operation active at t + 999 ms (docs/openpack.md §3.2)
SECOND_END_MS = 999
_UUID_NS = uuid.UUID("0b6f3d2e-5c1a-4f7e-9d8b-2a4c6e8f1a3b")  # stable uuids: the same segments, the same file


@dataclass(frozen=True)
class OperationRow:
    """One operation segment, half-open [start_ms, end_ms) in unix ms."""

    op_id: int
    start_ms: int
    end_ms: int
    box: int = 0  # 0: unknown (a model does not know the box number)
    actions: tuple[str, ...] = ()


def segment_uuid(user: str, session: str, index: int, start_ms: int) -> str:
    return f"op:{uuid.uuid5(_UUID_NS, f'{user}/{session}/{index}/{start_ms}')}"


def write_operations_csv(f: TextIO, user: str, session: str, rows: Iterable[OperationRow]) -> None:
    w = csv.writer(f, lineterminator="\n")
    w.writerow(OPERATION_COLUMNS)
    for k, r in enumerate(r for r in rows if r.op_id != NULL_ID):
        w.writerow(
            [
                segment_uuid(user, session, k, r.start_ms),
                user,
                session,
                r.box,
                r.op_id,
                ID_TO_CLASS[r.op_id].name,
                unix_ms_to_iso(r.start_ms),
                unix_ms_to_iso(r.end_ms),
                ";".join(r.actions),
            ]
        )


def labels_per_second(rows: Sequence[OperationRow], seconds_ms: Iterable[int]) -> list[tuple[int, int]]:
    """(box, id) of each whole second: the segment active at its end, else (0, Null). `rows` sorted by start."""
    out, k = [], 0
    for t in seconds_ms:
        probe = t + SECOND_END_MS
        while k < len(rows) and rows[k].end_ms <= probe:
            k += 1
        active = rows[k] if k < len(rows) and rows[k].start_ms <= probe else None
        out.append((0, NULL_ID) if active is None else (active.box, active.op_id))
    return out


def write_operations_1hz_csv(
    f: TextIO, user: str, session: str, rows: Sequence[OperationRow], seconds_ms: Iterable[int]
) -> None:
    seconds_ms = list(seconds_ms)
    w = csv.writer(f, lineterminator="\n")
    w.writerow(OPERATION_1HZ_COLUMNS)
    for t, (box, op_id) in zip(seconds_ms, labels_per_second(rows, seconds_ms), strict=True):
        w.writerow([t, user, session, box, op_id])


def csv_bytes(write: Callable[..., None], *args) -> bytes:
    """What `write(f, *args)` writes, as bytes (for a writer that must hand over the whole file at once)."""
    buffer = io.StringIO()
    write(buffer, *args)
    return buffer.getvalue().encode()
