from __future__ import annotations

import os
import subprocess
import sys

import pytest

from vlmchallenge.data.jst_time import (
    frame_stem_to_unix_ms,
    iso_to_unix_ms,
    unix_ms_to_frame_relpath,
    unix_ms_to_iso,
)


def test_known_values():
    # docs/openpack.md §2: 2022-03-29 14:25:22 JST = 1648531522000
    assert frame_stem_to_unix_ms("20220329_142522_000") == 1648531522000
    assert frame_stem_to_unix_ms("20220329_142511_963") == 1648531511963
    assert iso_to_unix_ms("2022-03-29 14:25:22.143000+09:00") == 1648531522143
    assert iso_to_unix_ms("2022-03-29T05:25:22.143+00:00") == 1648531522143


def test_round_trips():
    t = 1648531511963
    assert unix_ms_to_frame_relpath(t) == "2022/03/29/14/25/20220329_142511_963.jpg"
    assert iso_to_unix_ms(unix_ms_to_iso(t)) == t
    assert frame_stem_to_unix_ms(unix_ms_to_frame_relpath(t).rsplit("/", 1)[1][:-4]) == t


@pytest.mark.parametrize(
    "bad", ["20220329_142522", "20220329_142522_000000", "20221329_142522_000", "frame_001"]
)
def test_bad_frame_names(bad):
    with pytest.raises(ValueError, match=f"frame name '{bad}'.*expected YYYYMMDD_HHMMSS_mmm"):
        frame_stem_to_unix_ms(bad)


def test_naive_iso_is_rejected():
    with pytest.raises(ValueError, match="no timezone"):
        iso_to_unix_ms("2022-03-29 14:25:22.143000")


@pytest.mark.parametrize("tz", ["America/Los_Angeles", "UTC", "Asia/Kolkata"])
def test_conversion_does_not_depend_on_machine_timezone(tz):
    """Run the conversions in a fresh interpreter under another TZ: same unix ms and same JST names."""
    code = (
        "from vlmchallenge.data.jst_time import *;"
        "print(frame_stem_to_unix_ms('20220329_142522_000'), unix_ms_to_frame_relpath(1648531511963),"
        " unix_ms_to_iso(1648531522143))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, "TZ": tz}, capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == [
        "1648531522000",
        "2022/03/29/14/25/20220329_142511_963.jpg",
        "2022-03-29",
        "14:25:22.143000+09:00",
    ]
