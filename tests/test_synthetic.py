from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlmchallenge.data.annotation_parser import parse_operations_1hz_csv, parse_operations_csv
from vlmchallenge.data.classes import OPERATION_IDS
from vlmchallenge.data.frame_source import JpegFolderSource
from vlmchallenge.data.synthetic import SyntheticConfig, generate
from vlmchallenge.data.synthetic_scene import PALETTE, SceneRenderer

FRAME_PATH = re.compile(
    r"^U\d{4}/kinect/color-masked/frames/S\d{4}/(\d{4})/(\d\d)/(\d\d)/(\d\d)/(\d\d)/(\d{8})_(\d{6})_(\d{3})\.jpg$"
)


def test_exact_v1_layout(synthetic_root):
    frames = sorted(p.relative_to(synthetic_root).as_posix() for p in synthetic_root.rglob("*.jpg"))
    assert frames
    for rel in frames[:500]:
        m = FRAME_PATH.match(rel)
        assert m, rel
        y, mo, d, h, mi, ymd, hms, _ = m.groups()
        assert ymd == y + mo + d and hms[:4] == h + mi  # folder path agrees with the JST file stem
    for user in ("U9001", "U9002", "U9003"):
        assert (synthetic_root / user / "annotation/openpack-operations/S0100.csv").is_file()
        assert (synthetic_root / user / "annotation/openpack-operations-1hz/S0100.csv").is_file()


def test_frames_are_15fps_with_drops_and_cover_the_annotations(synthetic_root):
    source = JpegFolderSource(synthetic_root / "U9001/kinect/color-masked/frames/S0100")
    steps = np.diff(source.timestamps_ms)
    assert set(np.unique(steps[steps < 100])) <= {66, 67}
    ann = parse_operations_csv(synthetic_root / "U9001/annotation/openpack-operations/S0100.csv")
    assert source.timestamps_ms[0] < ann.segments[0].start_ms
    assert source.timestamps_ms[-1] > ann.segments[-1].end_ms
    with Image.open(source.paths[0]) as im:
        assert im.size == (112, 64)
        band = np.asarray(im.convert("L"))[:6]
    assert band.mean() < 100  # the dark timestamp band with light text


def test_box_structure_and_all_classes_present(synthetic_root):
    ann = parse_operations_csv(synthetic_root / "U9002/annotation/openpack-operations/S0100.csv")
    ops = [s.op_id for s in ann.segments]
    assert set(ops) == set(OPERATION_IDS)
    core = [o for o in ops if o not in (900,)]
    assert core[-3:] == [700, 1000, 800]
    durations = [(s.end_ms - s.start_ms) / 1000 for s in ann.segments]
    assert min(durations) >= 1.6


def test_1hz_labels_follow_end_of_slot_rule(synthetic_root):
    ann = parse_operations_csv(synthetic_root / "U9003/annotation/openpack-operations/S0100.csv")
    hz = parse_operations_1hz_csv(synthetic_root / "U9003/annotation/openpack-operations-1hz/S0100.csv")
    assert hz.unixtime_ms[0] <= ann.segments[0].start_ms < hz.unixtime_ms[0] + 1000
    covered = [(t, y) for t, y in zip(hz.unixtime_ms, hz.op_ids, strict=True) if ann.segment_at(t + 999)]
    assert all(ann.label_at(t + 999) == y for t, y in covered)
    assert 8100 not in hz.op_ids  # gaps are forward-filled like the real files


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def jpegs(tree: dict[str, bytes]) -> dict[str, bytes]:
    return {k: v for k, v in tree.items() if k.endswith(".jpg")}


def test_deterministic_and_reused(tmp_path):
    cfg = SyntheticConfig(users=["U9001"], boxes_per_session=1, width=64, height=48, seed=5)
    a = generate(cfg, tmp_path / "a", workers=1)
    before = tree_bytes(a)
    assert tree_bytes(generate(cfg, tmp_path / "b", workers=1)) == before  # same config, same bytes

    # Reuse vs regeneration is told apart by what survives, not by mtimes (coarse on some filesystems): a
    # regeneration builds a new tree and swaps it in, so a file we add and the frames' inodes do not survive.
    frame = next(a.rglob("*.jpg"))
    inode = frame.stat().st_ino
    sentinel = frame.parent / "added-by-test.txt"
    sentinel.write_text("not generated")
    generate(cfg, a, workers=1)  # same config: reused as is
    assert sentinel.exists() and frame.stat().st_ino == inode
    assert tree_bytes(a) == before | {sentinel.relative_to(a).as_posix(): b"not generated"}

    other = dataclasses.replace(cfg, seed=6)
    generate(other, a, workers=1)  # other settings: regenerated
    assert not sentinel.exists()
    regenerated = tree_bytes(a)
    assert regenerated == tree_bytes(generate(other, tmp_path / "c", workers=1))  # as if made afresh
    assert jpegs(regenerated) != jpegs(before)

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("not synthetic")
    with pytest.raises(ValueError, match="not a synthetic dataset"):
        generate(cfg, tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "not synthetic"


def test_difficulty_levels(tmp_path):
    rng = np.random.default_rng(0)
    easy, medium, hard = (SceneRenderer(224, 168, d, rng) for d in ("easy", "medium", "hard"))
    assert easy.object_for(300).colour == PALETTE[300]  # colour is a class cue only at easy
    assert {medium.object_for(300).colour for _ in range(5)} != {PALETTE[300]}
    assert hard.object_for(300).half_size < easy.object_for(300).half_size
    with pytest.raises(ValueError, match="difficulty"):
        generate(SyntheticConfig(users=["U9001"], boxes_per_session=1, difficulty="extreme"), tmp_path / "x")
