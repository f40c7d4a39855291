from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vlmchallenge.data.annotation_parser import (
    AnnotationError,
    parse_operations_1hz_csv,
    parse_operations_csv,
)
from vlmchallenge.data.classes import NULL_ID

HEADER = "uuid,user,session,box,id,operation,start,end,actions"
ROWS = [
    "op:a,U0209,S0500,1,100,Picking,2022-03-29 14:25:22.143000+09:00,2022-03-29 14:25:30.304000+09:00,act:1;act:2",
    "op:b,U0209,S0500,1,200,Relocate Item Label,2022-03-29 14:25:30.304000+09:00,"
    "2022-03-29 14:25:56.039000+09:00,act:3",
    "op:c,U0209,S0500,1,300,Assemble Box,2022-03-29 14:25:57.000000+09:00,2022-03-29 14:25:59.614000+09:00,act:4",
]


def write(tmp_path: Path, lines: list[str], name: str = "S0500.csv") -> Path:
    p = tmp_path / name
    p.write_text("\n".join(lines) + "\n")
    return p


def test_parses_segments_to_unix_ms_half_open(tmp_path):
    ann = parse_operations_csv(write(tmp_path, [HEADER, *ROWS]))
    assert (ann.user, ann.session) == ("U0209", "S0500")
    first = ann.segments[0]
    assert (first.op_id, first.start_ms, first.end_ms, first.box) == (100, 1648531522143, 1648531530304, 1)
    # half-open: the shared boundary belongs to the next segment
    assert ann.label_at(1648531530304) == 200
    assert ann.label_at(1648531530303) == 100
    assert ann.label_at(first.start_ms - 1) == NULL_ID


def test_gaps_are_reported_not_errors(tmp_path):
    ann = parse_operations_csv(write(tmp_path, [HEADER, *ROWS]))
    assert len(ann.gaps) == 1
    gap = ann.gaps[0]
    assert (gap.start_ms, gap.end_ms, gap.after_line) == (1648531556039, 1648531557000, 3)
    assert ann.label_at(1648531556500) == NULL_ID


def test_rows_out_of_order_are_sorted(tmp_path):
    ann = parse_operations_csv(write(tmp_path, [HEADER, ROWS[2], ROWS[0], ROWS[1]]))
    assert [s.op_id for s in ann.segments] == [100, 200, 300]


@pytest.mark.parametrize(
    ("mutate", "line", "expect"),
    [
        (lambda r: r.replace(",100,Picking,", ",150,Picking,"), 2, "unknown operation id 150"),
        (lambda r: r.replace(",100,Picking,", ",100,Scan Label,"), 2, "id 100 is 'Picking'"),
        (lambda r: r.rsplit(",", 1)[0], 2, "expected 9 fields, got 8"),
        (
            lambda r: r.replace("2022-03-29 14:25:22.143000+09:00", "2022-03-29 14:25:22.143000"),
            2,
            "timezone",
        ),
        (lambda r: r.replace("2022-03-29 14:25:22.143000+09:00", "yesterday"), 2, "ISO-8601"),
        (
            lambda r: r.replace("2022-03-29 14:25:22.143000+09:00", "2022-03-29 14:25:31.000000+09:00"),
            2,
            "start must be before end",
        ),
        (lambda r: r.replace(",1,100,", ",one,100,"), 2, "field 'box': expected an integer"),
        (lambda r: r.replace("U0209", "user9"), 2, "field 'user'"),
        (lambda r: r.replace("S0500", "5"), 2, "field 'session'"),
    ],
)
def test_malformed_rows_name_file_line_and_expectation(tmp_path, mutate, line, expect):
    path = write(tmp_path, [HEADER, mutate(ROWS[0]), *ROWS[1:]])
    with pytest.raises(AnnotationError) as e:
        parse_operations_csv(path)
    assert f"{path}:{line}:" in str(e.value)
    assert expect in str(e.value)


def test_overlap_is_an_error_naming_both_lines(tmp_path):
    overlapping = ROWS[1].replace("2022-03-29 14:25:30.304000+09:00", "2022-03-29 14:25:29.000000+09:00")
    path = write(tmp_path, [HEADER, ROWS[0], overlapping])
    with pytest.raises(
        AnnotationError, match=r"S0500.csv:3: segment overlaps the segment on line 2 by 1304 ms"
    ):
        parse_operations_csv(path)


def test_missing_column_and_empty_files(tmp_path):
    with pytest.raises(AnnotationError, match=r":1: missing column\(s\) \['end'\]"):
        parse_operations_csv(write(tmp_path, [HEADER.replace(",end", ""), ROWS[0]]))
    with pytest.raises(AnnotationError, match="empty file"):
        parse_operations_csv(write(tmp_path, [""]))
    with pytest.raises(AnnotationError, match="no data rows"):
        parse_operations_csv(write(tmp_path, [HEADER]))


def test_mixed_sessions_in_one_file_are_rejected(tmp_path):
    with pytest.raises(AnnotationError, match="differs from the file's first row"):
        parse_operations_csv(write(tmp_path, [HEADER, ROWS[0], ROWS[1].replace("S0500", "S0400")]))


def test_1hz_file(tmp_path):
    rows = [
        "unixtime,user,session,box,id",
        "1648531522000,U0209,S0500,1,100",
        "1648531523000,U0209,S0500,1,8100",
    ]
    labels = parse_operations_1hz_csv(write(tmp_path, rows))
    assert labels.unixtime_ms == (1648531522000, 1648531523000)
    assert labels.op_ids == (100, 8100)
    with pytest.raises(AnnotationError, match=r":3: field 'unixtime': expected strictly increasing"):
        parse_operations_1hz_csv(write(tmp_path, rows[:2] + [rows[1]]))
    with pytest.raises(AnnotationError, match=r":2: field 'unixtime': expected unix ms at a whole second"):
        parse_operations_1hz_csv(write(tmp_path, [rows[0], "1648531522500,U0209,S0500,1,100"]))


VALID = "\n".join([HEADER, *ROWS]) + "\n"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    edits=st.lists(
        st.tuples(st.integers(0, len(VALID)), st.integers(0, 8), st.text(max_size=6)), min_size=1, max_size=4
    )
)
def test_fuzzed_csv_parses_or_raises_annotation_error(tmp_path, edits):
    """Random splices into a valid file: the parser either succeeds or raises a located AnnotationError."""
    text = VALID
    for pos, cut, insert in edits:
        text = text[:pos] + insert + text[pos + cut :]
    path = tmp_path / "S0500.csv"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        ann = parse_operations_csv(path)
    except AnnotationError as e:
        assert str(e).startswith(str(path))
    else:
        assert all(s.start_ms < s.end_ms for s in ann.segments)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=300))
def test_arbitrary_bytes_only_raise_annotation_error(tmp_path, data):
    path = tmp_path / "S0500.csv"
    path.write_bytes(data)
    for parse in (parse_operations_csv, parse_operations_1hz_csv):
        with pytest.raises(AnnotationError):
            parse(path)
