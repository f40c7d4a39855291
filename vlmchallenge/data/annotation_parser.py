"""Parse and validate OpenPack v1.0.0 operation annotations.

- `annotation/openpack-operations/SXXXX.csv`: segments `uuid,user,session,box,id,operation,start,end,actions`.
- `annotation/openpack-operations-1hz/SXXXX.csv`: one label per second `unixtime,user,session,box,id`.

Every problem raises `AnnotationError` (a ValueError) naming the file, the line and what was expected.
Segments are half-open `[start_ms, end_ms)` in unix ms, like the toolkit. Gaps between segments are
reported (the toolkit labels them Null 8100), not errors; overlaps are errors.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

from vlmchallenge.data.classes import ID_TO_CLASS, NULL_ID
from vlmchallenge.data.jst_time import iso_to_unix_ms

OPERATION_COLUMNS = ("uuid", "user", "session", "box", "id", "operation", "start", "end", "actions")
OPERATION_1HZ_COLUMNS = ("unixtime", "user", "session", "box", "id")

# OpenPack's ids: `U0209`, `S0500` (the folder names, and the user/session columns of every CSV)
USER_ID = re.compile(r"^U\d{4}$")
SESSION_ID = re.compile(r"^S\d{4}$")


class AnnotationError(ValueError):
    """A malformed annotation file; the message names file, line and the expectation."""

    def __init__(self, path: str | Path, line: int | None, message: str):
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")
        self.path, self.line, self.message = str(path), line, message

    def __reduce__(self):  # picklable, so the error crosses from a worker process intact
        return type(self), (self.path, self.line, self.message)


@dataclass(frozen=True)
class Segment:
    """One annotated operation, half-open [start_ms, end_ms)."""

    user: str
    session: str
    box: int
    op_id: int
    start_ms: int
    end_ms: int
    line: int  # line in the source CSV, for error messages downstream


@dataclass(frozen=True)
class Gap:
    """Unannotated time between two consecutive segments (Null for the toolkit)."""

    start_ms: int
    end_ms: int
    after_line: int


@dataclass(frozen=True)
class OperationAnnotation:
    path: str
    user: str
    session: str
    segments: tuple[Segment, ...]  # sorted by start
    gaps: tuple[Gap, ...]

    def label_at(self, t_ms: int) -> int:
        """Operation id active at t (half-open intervals); NULL_ID when none."""
        seg = self.segment_at(t_ms)
        return NULL_ID if seg is None else seg.op_id

    def segment_at(self, t_ms: int) -> Segment | None:
        lo, hi = 0, len(self.segments)
        while lo < hi:  # first segment with end > t
            mid = (lo + hi) // 2
            if self.segments[mid].end_ms <= t_ms:
                lo = mid + 1
            else:
                hi = mid
        if lo < len(self.segments) and self.segments[lo].start_ms <= t_ms:
            return self.segments[lo]
        return None


@dataclass(frozen=True)
class SecondLabels:
    """The 1-Hz ground truth used by the official metric: parallel tuples, unixtime at whole seconds."""

    path: str
    user: str
    session: str
    unixtime_ms: tuple[int, ...]
    op_ids: tuple[int, ...]


def _read_rows(
    path: str | Path, required: tuple[str, ...], content: bytes | None = None
) -> list[tuple[int, dict[str, str]]]:
    try:
        text = (Path(path).read_bytes() if content is None else content).decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise AnnotationError(path, None, f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    if "\x00" in text:
        raise AnnotationError(path, None, "contains NUL bytes; expected a CSV text file")
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise AnnotationError(path, 1, f"empty file; expected a header with columns {','.join(required)}")
    reader = csv.reader(lines)
    header = [h.strip() for h in next(reader)]
    missing = [c for c in required if c not in header]
    if missing:
        raise AnnotationError(
            path,
            1,
            f"missing column(s) {missing}; expected header {','.join(required)}, got {','.join(header)}",
        )
    if len(set(header)) != len(header):
        raise AnnotationError(path, 1, f"duplicate column names in header {header}")
    rows = []
    for line_no, values in enumerate(reader, start=2):
        if not values or all(not v.strip() for v in values):
            continue  # blank line (e.g. trailing newline variants)
        if len(values) != len(header):
            raise AnnotationError(path, line_no, f"expected {len(header)} fields, got {len(values)}")
        rows.append((line_no, dict(zip(header, values, strict=True))))
    if not rows:
        raise AnnotationError(path, None, "no data rows; expected at least one annotation")
    return rows


def _int_field(path: str | Path, line: int, row: dict[str, str], field: str) -> int:
    raw = row[field].strip()
    try:
        return int(raw)
    except ValueError:
        raise AnnotationError(path, line, f"field '{field}': expected an integer, got {raw!r}") from None


def _op_id(path: str | Path, line: int, row: dict[str, str], allow_null: bool) -> int:
    op_id = _int_field(path, line, row, "id")
    known = sorted(ID_TO_CLASS) if allow_null else sorted(i for i in ID_TO_CLASS if i != NULL_ID)
    if op_id not in known:
        raise AnnotationError(
            path, line, f"field 'id': unknown operation id {op_id}; expected one of {known}"
        )
    return op_id


def _user_session(
    path: str | Path, line: int, row: dict[str, str], expect: tuple[str, str] | None
) -> tuple[str, str]:
    user, session = row["user"].strip(), row["session"].strip()
    if not USER_ID.match(user):
        raise AnnotationError(
            path, line, f"field 'user': expected U followed by 4 digits (e.g. U0209), got {user!r}"
        )
    if not SESSION_ID.match(session):
        raise AnnotationError(
            path, line, f"field 'session': expected S followed by 4 digits (e.g. S0500), got {session!r}"
        )
    if expect is not None and (user, session) != expect:
        raise AnnotationError(
            path,
            line,
            f"user/session {user}/{session} differs from the file's first row {expect[0]}/{expect[1]}",
        )
    return user, session


def _timestamp(path: Path, line: int, row: dict[str, str], field: str) -> int:
    raw = row[field]
    try:
        return iso_to_unix_ms(raw)
    except ValueError as e:
        raise AnnotationError(
            path,
            line,
            f"field '{field}': expected an ISO-8601 timestamp with timezone offset "
            f"(e.g. 2022-03-29 14:25:22.143000+09:00), got {raw!r} ({e})",
        ) from None


def parse_operations_csv(path: str | Path) -> OperationAnnotation:
    """Parse `openpack-operations/SXXXX.csv` into sorted, validated half-open segments."""
    path = Path(path)
    segments: list[Segment] = []
    expect: tuple[str, str] | None = None
    for line, row in _read_rows(path, OPERATION_COLUMNS):
        expect = _user_session(path, line, row, expect)
        box = _int_field(path, line, row, "box")
        if box < 0:
            raise AnnotationError(path, line, f"field 'box': expected a non-negative box number, got {box}")
        op_id = _op_id(path, line, row, allow_null=True)
        name = row["operation"].strip()
        if name != ID_TO_CLASS[op_id].name:
            raise AnnotationError(
                path, line, f"field 'operation': id {op_id} is {ID_TO_CLASS[op_id].name!r}, got {name!r}"
            )
        start, end = _timestamp(path, line, row, "start"), _timestamp(path, line, row, "end")
        if not start < end:
            raise AnnotationError(
                path, line, f"start must be before end, got start={row['start']} end={row['end']}"
            )
        segments.append(Segment(expect[0], expect[1], box, op_id, start, end, line))

    segments.sort(key=lambda s: (s.start_ms, s.end_ms))
    gaps: list[Gap] = []
    for prev, cur in zip(segments, segments[1:], strict=False):
        if cur.start_ms < prev.end_ms:
            raise AnnotationError(
                path,
                cur.line,
                f"segment overlaps the segment on line {prev.line} by {prev.end_ms - cur.start_ms} ms; "
                "expected non-overlapping segments",
            )
        if cur.start_ms > prev.end_ms:
            gaps.append(Gap(prev.end_ms, cur.start_ms, prev.line))
    assert expect is not None
    return OperationAnnotation(str(path), expect[0], expect[1], tuple(segments), tuple(gaps))


def parse_operations_1hz_csv(path: str | Path, content: bytes | None = None) -> SecondLabels:
    """Parse `openpack-operations-1hz/SXXXX.csv`: strictly increasing whole-second unixtime, known ids.
    `content`: the file's bytes when they were read elsewhere (e.g. from a shard URL); `path` then only names
    the source in errors (a URL stays a string: `Path` would fold its `//`)."""
    path = Path(path) if content is None else str(path)
    times: list[int] = []
    ids: list[int] = []
    expect: tuple[str, str] | None = None
    for line, row in _read_rows(path, OPERATION_1HZ_COLUMNS, content):
        expect = _user_session(path, line, row, expect)
        t = _int_field(path, line, row, "unixtime")
        if t % 1000:
            raise AnnotationError(
                path, line, f"field 'unixtime': expected unix ms at a whole second, got {t}"
            )
        if times and t <= times[-1]:
            raise AnnotationError(
                path, line, f"field 'unixtime': expected strictly increasing times, got {t} after {times[-1]}"
            )
        _int_field(path, line, row, "box")
        ids.append(_op_id(path, line, row, allow_null=True))
        times.append(t)
    assert expect is not None
    return SecondLabels(str(path), expect[0], expect[1], tuple(times), tuple(ids))
