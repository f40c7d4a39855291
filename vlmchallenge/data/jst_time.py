"""OpenPack time conventions: filenames and 1-Hz files are JST wall-clock; everything internal is unix ms.

Conversions never consult the machine's local timezone (the toolkit README's helper does, and is wrong
outside JST; see docs/openpack.md §2).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

JST = timezone(timedelta(hours=9), name="JST")

_FRAME_STEM = re.compile(r"^(\d{4})(\d\d)(\d\d)_(\d\d)(\d\d)(\d\d)_(\d{3})$")


def frame_stem_to_unix_ms(stem: str) -> int:
    """`20220329_142511_963` (JST wall-clock, 3-digit ms) -> unix ms."""
    m = _FRAME_STEM.match(stem)
    if m is None:
        raise ValueError(f"frame name {stem!r}: expected YYYYMMDD_HHMMSS_mmm (JST, milliseconds)")
    *fields, ms = (int(g) for g in m.groups())
    try:  # direct construction: ~30x cheaper than strptime, and sessions have ~25k frames
        dt = datetime(*fields, tzinfo=JST)
    except ValueError:
        raise ValueError(
            f"frame name {stem!r}: not a valid date/time; expected YYYYMMDD_HHMMSS_mmm (JST)"
        ) from None
    return int(dt.timestamp()) * 1000 + ms


def unix_ms_to_jst(ms: int) -> datetime:
    return datetime.fromtimestamp(ms // 1000, tz=JST) + timedelta(milliseconds=ms % 1000)


def unix_ms_to_frame_relpath(ms: int) -> str:
    """unix ms -> `YYYY/MM/DD/HH/MM/YYYYMMDD_HHMMSS_mmm.jpg`, the OpenPack frame layout."""
    dt = unix_ms_to_jst(ms)
    return f"{dt:%Y/%m/%d/%H/%M}/{dt:%Y%m%d_%H%M%S}_{ms % 1000:03d}.jpg"


def unix_ms_to_iso(ms: int) -> str:
    """unix ms -> `2022-03-29 14:25:22.143000+09:00`, the openpack-operations CSV format."""
    dt = unix_ms_to_jst(ms)
    return dt.strftime("%Y-%m-%d %H:%M:%S.%f") + "+09:00"


def iso_to_unix_ms(text: str) -> int:
    """ISO-8601 with an explicit offset -> unix ms. Naive timestamps raise: guessing a zone shifts labels by hours."""
    dt = datetime.fromisoformat(text.strip())
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError("timestamp has no timezone offset")
    delta = dt.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return delta.days * 86_400_000 + delta.seconds * 1000 + delta.microseconds // 1000
