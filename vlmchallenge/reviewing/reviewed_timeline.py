"""A reviewed timeline: what the page sends back, checked before anything is written.

The page keeps segments on the annotation's whole-second grid. A saved timeline must hold: every segment inside
the annotated seconds, start < end on whole seconds, no overlaps (sorted by start), and known operation ids.
Each violation raises `ReviewError` naming the field (`segments[3].end_ms`) and what was expected, so a page
with a bug cannot write a file that `parse_operations_csv` or the toolkit would refuse.
"""

from __future__ import annotations

from dataclasses import dataclass

from vlmchallenge.data.annotation_writer import OperationRow
from vlmchallenge.data.classes import ID_TO_CLASS

SECOND_MS = 1000


class ReviewError(ValueError):
    """A reviewed timeline that cannot be saved; the message names the field."""


@dataclass(frozen=True)
class SecondsSpan:
    """The annotated seconds: [first_ms, end_ms), end_ms = the last second + 1 s."""

    first_ms: int
    end_ms: int


def _whole_ms(value, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ReviewError(f"{field}: expected unix ms as an integer, got {value!r}")
    if value % SECOND_MS:
        raise ReviewError(f"{field}: expected a whole second (unix ms divisible by 1000), got {value}")
    return value


def checked_segments(items: list, span: SecondsSpan) -> list[OperationRow]:
    """`[{"id", "start_ms", "end_ms"}, ...]` -> rows, or `ReviewError` naming the first bad field."""
    if not isinstance(items, list):
        raise ReviewError(f"segments: expected a list, got {type(items).__name__}")
    rows: list[OperationRow] = []
    for k, item in enumerate(items):
        where = f"segments[{k}]"
        if not isinstance(item, dict) or not {"id", "start_ms", "end_ms"} <= item.keys():
            raise ReviewError(f"{where}: expected an object with id, start_ms and end_ms, got {item!r}")
        start, end = (
            _whole_ms(item["start_ms"], f"{where}.start_ms"),
            _whole_ms(item["end_ms"], f"{where}.end_ms"),
        )
        if item["id"] not in ID_TO_CLASS:
            raise ReviewError(f"{where}.id: expected one of {sorted(ID_TO_CLASS)}, got {item['id']!r}")
        if not start < end:
            raise ReviewError(f"{where}: expected start_ms < end_ms, got {start} and {end}")
        if start < span.first_ms or end > span.end_ms:
            raise ReviewError(
                f"{where}: expected a segment inside the annotated seconds [{span.first_ms}, {span.end_ms}), "
                f"got [{start}, {end})"
            )
        if rows and start < rows[-1].end_ms:
            raise ReviewError(
                f"{where}.start_ms: overlaps segments[{k - 1}] (ends at {rows[-1].end_ms}); expected segments "
                f"sorted by start and not overlapping, got {start}"
            )
        rows.append(OperationRow(int(item["id"]), start, end))
    return rows
