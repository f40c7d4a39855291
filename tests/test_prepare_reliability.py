"""Reliability of data preparation: damaged finished shards are rebuilt, real SIGKILLs at several points resume
to the same bytes, `verify` names damaged shards, and sessions that yield nothing say why."""

from __future__ import annotations

import dataclasses
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from rich.console import Console

import vlmchallenge.conf_schema  # noqa: F401
from tests.helpers.runs import CONF_DIR, SMALL_DATA_OVERRIDES
from vlmchallenge.conf_schema import as_dataclass
from vlmchallenge.data.annotation_parser import parse_operations_csv
from vlmchallenge.data.config import DataConfig
from vlmchallenge.data.frame_source import JpegFolderSource
from vlmchallenge.data.jst_time import unix_ms_to_jst
from vlmchallenge.data.pipeline import prepare
from vlmchallenge.data.summary import print_summary, print_verify, session_warnings, summary_dict
from vlmchallenge.data.verify import verify_shards


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- a damaged finished shard is rebuilt


@pytest.mark.drill
@pytest.mark.parametrize("damage", ["delete", "truncate"])
def test_damaged_finished_shard_is_rebuilt_to_the_same_bytes(data_cfg, damage, drill, data_dir):
    first = prepare(data_cfg, data_dir)
    reference = tree_bytes(first.out_dir)
    shards = sorted((first.out_dir / "train").glob("U9001-S0100-*.tar"))
    assert len(shards) >= 3
    victim = shards[1]
    if damage == "delete":
        victim.unlink()
    else:
        victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])

    again = prepare(data_cfg, data_dir)
    after = tree_bytes(first.out_dir)
    drill.record(
        fault=f"a finished shard {'deleted' if damage == 'delete' else 'truncated to half'}, then prepare rerun",
        injected=1,
        lost=sum(after.get(name) != data for name, data in reference.items())
        + len(set(after) - set(reference)),
        unit="files",
        check="files of the shard folder missing, different or extra against the first run's",
    )
    states = {r.key: r.record["resumed"] for r in again.sessions}
    assert states == {"U9001-S0100": "redone", "U9002-S0100": "complete", "U9003-S0100": "complete"}
    redone = summary_dict(again)["sessions"]["U9001-S0100"]
    assert victim.name in redone["redo_reason"]
    assert ("missing" if damage == "delete" else "bytes, the marker recorded") in redone["redo_reason"]
    assert any(line.startswith("redone train/U9001-S0100") for line in session_warnings(again))
    # shard 0 was intact and reused; shards 1.. were rewritten
    rewritten = sum(e["nsamples"] for e in again.sessions[0].record["shards"][1:])
    assert again.totals["clips_written"] == rewritten > 0
    assert after == reference


# ---------------------------------------------------------------- verify


@pytest.mark.drill
def test_verify_names_truncated_and_bit_flipped_shards(data_cfg, tmp_path, drill, data_dir):
    out = prepare(data_cfg, data_dir).out_dir
    clean = verify_shards(out)
    assert clean.ok and clean.checked == sum(1 for _ in out.glob("*/*.tar"))
    cmd = [sys.executable, "-m", "vlmchallenge.verify", f"shards={out}", f"paths.log_dir={tmp_path}/logs"]
    train = sorted((out / "train").glob("*.tar"))
    truncated, flipped = train[0], train[2]
    truncated.write_bytes(truncated.read_bytes()[:-700])
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit, same size: only the sha256 can tell
    flipped.write_bytes(bytes(data))

    bad = verify_shards(out)
    problems = {p.path.name: p.problem for p in bad.problems}
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    named_by_cli = [name for name in (truncated, flipped) if f"BAD {name}:" in run.stdout]
    drill.record(
        fault="one shard truncated by 700 bytes, one bit flipped in another (same size), then `verify`",
        injected=2,
        lost=max(len({truncated.name, flipped.name} - set(problems)), 2 - len(named_by_cli)),
        unit="damaged shards missed",
        check="damaged shards that `verify_shards` or the `verify` command did not name; "
        "after the remedy (delete, prepare) verify passes",
    )
    assert set(problems) == {truncated.name, flipped.name}
    assert problems[truncated.name].startswith("truncated:")
    assert problems[flipped.name].startswith("sha256 mismatch")
    assert run.returncode == 1, run.stderr[-2000:]
    assert f"BAD {truncated}: truncated" in run.stdout and f"BAD {flipped}: sha256 mismatch" in run.stdout
    assert "2 bad of" in run.stdout and "rerun `python -m vlmchallenge.prepare`" in run.stdout

    truncated.unlink()  # the remedy it names: delete the bad shards, rerun prepare
    flipped.unlink()
    prepare(data_cfg, data_dir)
    again = verify_shards(out)  # in-process: the command's exit status follows `.ok` (checked above as 1)
    console = Console(record=True, width=400)
    print_verify(again, console)
    assert again.ok and f"OK: {clean.checked} shards" in console.export_text()


# ---------------------------------------------------------------- sessions that yield 0 clips say why


def _jst(ms: int, date: bool = False) -> str:
    ms = int(ms)
    return unix_ms_to_jst(ms).strftime("%Y-%m-%d %H:%M:%S" if date else "%H:%M:%S") + f".{ms % 1000:03d}"


def test_zero_clip_sessions_name_their_reason(data_cfg, synthetic_root, tmp_path, data_dir):
    root = tmp_path / "v1.0.0"
    shutil.copytree(synthetic_root, root)
    # U9001: annotations one hour after the frames (the frames all lie before the first annotation)
    csv = root / "U9001/annotation/openpack-operations/S0100.csv"
    csv.write_text(csv.read_text().replace("2022-03-29 14:", "2022-03-29 15:"))
    # U9002: frame names that are not JST time stamps
    frames2 = root / "U9002/kinect/color-masked/frames/S0100"
    for i, p in enumerate(sorted(frames2.rglob("*.jpg"))):
        p.rename(p.with_name(f"frame_{i:05d}.jpg"))
    # U9003: no frame folder at all
    frames3 = root / "U9003/kinect/color-masked/frames/S0100"
    shutil.rmtree(frames3)

    result = prepare(dataclasses.replace(data_cfg, root=str(root)), data_dir)
    reasons = {r.key: r.record["zero_clip_reason"] for r in result.sessions}
    ts = JpegFolderSource(root / "U9001/kinect/color-masked/frames/S0100").timestamps_ms
    ann = parse_operations_csv(csv)
    assert reasons["U9001-S0100"] == (
        f"no frames inside any window: frames cover {_jst(ts[0])}-{_jst(ts[-1])} JST, "
        f"annotations {_jst(ann.segments[0].start_ms)}-{_jst(ann.segments[-1].end_ms)}"
    )
    assert reasons["U9002-S0100"].startswith("none of the ") and "frame_00000.jpg" in reasons["U9002-S0100"]
    assert "expected YYYYMMDD_HHMMSS_mmm" in reasons["U9002-S0100"]
    assert reasons["U9003-S0100"].startswith(f"frame folder missing: {frames3}")
    console = Console(record=True, width=400)
    print_summary(result, console)
    printed = console.export_text()
    for split, key in [("train", "U9001-S0100"), ("val", "U9002-S0100"), ("test", "U9003-S0100")]:
        assert f"warning: {split}/{key} yielded 0 clips: {reasons[key]}" in printed
    assert summary_dict(result)["sessions"]["U9003-S0100"]["zero_clip_reason"] == reasons["U9003-S0100"]


# ---------------------------------------------------------------- crash drill: real SIGKILLs


DRILL = [
    *SMALL_DATA_OVERRIDES,
    "data.shards.maxcount=2",  # many small shards: kill points between and inside them
    "data.shards.workers=1",
]


def _shard_count(out: Path) -> int:
    return sum(1 for _ in out.glob("*/*.tar"))


@pytest.mark.drill
def test_prepare_killed_at_three_points_resumes_byte_identical(tmp_path, drill):
    data_dir = tmp_path / "data"
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("prepare", overrides=[*DRILL, f"paths.data_dir={data_dir}"])

    def settings(out: Path) -> DataConfig:
        data = as_dataclass(DataConfig, cfg.data)
        return dataclasses.replace(data, shards=dataclasses.replace(data.shards, out_dir=str(out)))

    reference = prepare(settings(tmp_path / "reference"), data_dir)  # also generates the shared raw tree
    expected = tree_bytes(reference.out_dir)
    total = _shard_count(reference.out_dir)
    assert total >= 6
    # each run kills itself right after publishing this many shards (tests/helpers/prepare_killed.py); the last
    # point has every shard on disk, but not the last session's marker, the indexes or the manifest
    kill_after = {"first": 1, "middle": total // 2, "last": total}

    # the three runs in parallel: each CLI start imports torch (seconds), and they share no output
    runs = {}
    for name, after in kill_after.items():
        out = tmp_path / f"killed-{name}"
        cmd = [sys.executable, "-m", "tests.helpers.prepare_killed", str(after), *DRILL]
        cmd += [
            f"paths.data_dir={data_dir}",
            f"data.shards.out_dir={out}",
            f"paths.log_dir={tmp_path}/logs-{name}",
        ]
        runs[name] = (subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True), out)
    killed, lost, reused = {}, {}, {}
    for name, (proc, out) in runs.items():
        log = proc.communicate(timeout=600)[0]
        killed[name] = (proc.returncode, _shard_count(out), (out / "manifest.json").exists(), log[-2000:])
        resumed = prepare(settings(out), data_dir)
        reused[name] = reference.totals["clips_written"] - resumed.totals["clips_written"]
        after = tree_bytes(out)
        lost[name] = sum(after.get(path) != data for path, data in expected.items()) + len(
            set(after) - set(expected)
        )
    drill.record(
        fault=f"SIGKILL of `python -m vlmchallenge.prepare` from inside, right after shard {list(kill_after.values())} "
        f"of {total} was published",
        injected=sum(rc == -signal.SIGKILL for rc, *_ in killed.values()),
        lost=sum(lost.values()),
        unit="files",
        check="files of the resumed folder missing, different or extra against an uninterrupted run's",
    )
    for name, (rc, shards, manifest, log) in killed.items():
        assert rc == -signal.SIGKILL and f"fault: SIGKILL after shard {kill_after[name]} " in log, (
            name,
            rc,
            log,
        )
        assert shards == kill_after[name] and not manifest, name  # it died where it was told to
        assert reused[name] > 0, name  # finished work was kept, not redone
    assert lost == dict.fromkeys(kill_after, 0)
