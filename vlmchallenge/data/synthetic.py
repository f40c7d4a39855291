"""Synthetic OpenPack: N users x M sessions written in the exact v1.0.0 on-disk layout, fully offline.

    python -m vlmchallenge.data.synthetic --root data/synthetic --users 4 --sessions 1

Writes `<root>/<user>/kinect/color-masked/frames/<session>/YYYY/MM/DD/HH/MM/YYYYMMDD_HHMMSS_mmm.jpg` (JST names,
~15 fps with 66/67 ms steps and a few dropped frames, burned-in timestamp band) plus both
`annotation/openpack-operations/` and `annotation/openpack-operations-1hz/` CSVs. The box structure follows the
real data (docs/openpack.md §3.1): order 100..700, 1000, 800, sometimes 900, occasional repeats, per-class mean
durations like the real ones, and small gaps. Generation is deterministic per (seed, user, session).
The whole tree is built under a temporary name and renamed, so a crash never leaves a half-written dataset.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import shutil
import uuid
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from vlmchallenge.data.classes import ID_TO_CLASS
from vlmchallenge.data.jst_time import JST, unix_ms_to_frame_relpath, unix_ms_to_iso
from vlmchallenge.data.synthetic_scene import SceneRenderer

# Real per-class mean segment durations in seconds (U0209-S0500, docs/openpack.md §3.1).
MEAN_DURATION_S = {
    100: 6.9,
    200: 8.9,
    300: 10.5,
    400: 5.3,
    500: 8.9,
    600: 3.1,
    700: 9.9,
    800: 6.3,
    900: 4.0,
    1000: 5.8,
}
MIN_DURATION_S = 1.6
FRAME_PERIOD_MS = 1000 / 15
MARKER = "synthetic.json"
log = logging.getLogger(__name__)
_UUID_NS = uuid.UUID("6f1d7c52-2b0e-4a55-9a43-0d4a7c1e8b10")


@dataclass
class SyntheticConfig:
    users: list[str] = field(default_factory=lambda: ["U9001", "U9002", "U9003", "U9004", "U9005", "U9006"])
    sessions: list[str] = field(default_factory=lambda: ["S0100"])
    boxes_per_session: int = 4
    # 4:3 and 224 px wide by default: after the crop and a 112x112 pixel budget the objects are ~32-41 px, the
    # size a random-initialised tiny VLM learns from on CPU (docs/learnability.md); real frames are 1280x720.
    width: int = 224
    height: int = 168
    difficulty: str = "easy"  # easy | medium | hard (see synthetic_scene.py)
    duration_scale: float = 1.0
    gap_probability: float = 0.08
    drop_rate: float = 0.005
    jpeg_quality: int = 85
    seed: int = 0

    def validate(self) -> None:
        if not self.users or not self.sessions:
            raise ValueError("synthetic.users and synthetic.sessions must be non-empty")
        if not (16 <= self.width <= 1280 and 16 <= self.height <= 720):
            raise ValueError(
                f"synthetic frame size must be within 16x16..1280x720, got {self.width}x{self.height}"
            )
        if self.boxes_per_session < 1 or self.duration_scale <= 0:
            raise ValueError("synthetic.boxes_per_session must be >= 1 and synthetic.duration_scale > 0")


@dataclass(frozen=True)
class _Seg:
    box: int
    op_id: int
    start_ms: int
    end_ms: int


def _box_order(rng: np.random.Generator, force_900: bool) -> list[int]:
    order = [100, 200]
    if rng.random() < 0.15:  # an operation can repeat within a box (100, 200, 100, 200)
        order += [100, 200]
    order += [300, 400, 500, 600, 700, 1000, 800]
    if rng.random() < 0.3 or force_900:  # "Put on Back Table" occurs in a minority of boxes
        order.append(900)
    return order


def plan_segments(cfg: SyntheticConfig, rng: np.random.Generator, t0_ms: int) -> list[_Seg]:
    """Boxes of operations; the last box gets a 900 if none had one, so every session holds all 10 classes
    (an absent class scores F1 0 in the official metric, which would cap small synthetic test splits)."""
    segs, t = [], t0_ms
    for box in range(1, cfg.boxes_per_session + 1):
        last_box = box == cfg.boxes_per_session
        for op in _box_order(rng, force_900=last_box and not any(s.op_id == 900 for s in segs)):
            mean = MEAN_DURATION_S[op] * cfg.duration_scale
            dur = max(MIN_DURATION_S, mean * rng.uniform(0.6, 1.4))
            end = t + round(dur * 1000)
            segs.append(_Seg(box, op, t, end))
            t = end
            if rng.random() < cfg.gap_probability:
                t += round(rng.uniform(0.3, 3.5) * 1000)
    return segs


def second_labels(segs: list[_Seg]) -> list[tuple[int, int, int]]:
    """(unixtime, box, id) per second: the operation active at the end of the slot (t+999 ms), gaps
    forward-filled; the rule inferred from the real 1-Hz files (docs/openpack.md §3.2)."""
    rows, k = [], 0
    first = segs[0].start_ms - segs[0].start_ms % 1000
    last = segs[-1].end_ms - 1
    prev = segs[0]
    for t in range(first, last - last % 1000 + 1, 1000):
        probe = t + 999
        while k < len(segs) and segs[k].end_ms <= probe:
            prev = segs[k]
            k += 1
        if k < len(segs) and segs[k].start_ms <= probe:
            prev = segs[k]
        rows.append((t, prev.box, prev.op_id))
    return rows


def _write_csvs(user_dir: Path, user: str, session: str, segs: list[_Seg]) -> None:
    ops = user_dir / "annotation" / "openpack-operations"
    hz = user_dir / "annotation" / "openpack-operations-1hz"
    ops.mkdir(parents=True, exist_ok=True)
    hz.mkdir(parents=True, exist_ok=True)
    with open(ops / f"{session}.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["uuid", "user", "session", "box", "id", "operation", "start", "end", "actions"])
        for i, s in enumerate(segs):
            op_uuid = uuid.uuid5(_UUID_NS, f"op/{user}/{session}/{i}")
            actions = ";".join(
                f"act:{uuid.uuid5(_UUID_NS, f'act/{user}/{session}/{i}/{j}')}" for j in range(2)
            )
            w.writerow(
                [
                    f"op:{op_uuid}",
                    user,
                    session,
                    s.box,
                    s.op_id,
                    ID_TO_CLASS[s.op_id].name,
                    unix_ms_to_iso(s.start_ms),
                    unix_ms_to_iso(s.end_ms),
                    actions,
                ]
            )
    with open(hz / f"{session}.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["unixtime", "user", "session", "box", "id"])
        for t, box, op in second_labels(segs):
            w.writerow([t, user, session, box, op])


def session_start_ms(cfg: SyntheticConfig, user_idx: int, session_idx: int) -> int:
    from datetime import datetime, timedelta

    base = datetime(2022, 3, 29, 14, 25, 11, 963000, tzinfo=JST)
    return int((base + timedelta(days=user_idx, hours=session_idx)).timestamp() * 1000)


def generate_session(cfg: SyntheticConfig, root: Path, user_idx: int, session_idx: int) -> int:
    """Write one session's frames and CSVs under `root`; returns the number of frames written."""
    user, session = cfg.users[user_idx], cfg.sessions[session_idx]
    rng = np.random.default_rng([cfg.seed, user_idx, session_idx])
    lead_ms = round(rng.uniform(3, 11) * 1000)  # frames start before the first annotation, as in the sample
    t_start = session_start_ms(cfg, user_idx, session_idx)
    segs = plan_segments(cfg, rng, t_start + lead_ms)
    t_end = segs[-1].end_ms + round(rng.uniform(2, 5) * 1000)
    user_dir = root / user
    _write_csvs(user_dir, user, session, segs)

    renderer = SceneRenderer(cfg.width, cfg.height, cfg.difficulty, rng)
    frames_dir = user_dir / "kinect" / "color-masked" / "frames" / session
    n_frames = round((t_end - t_start) / FRAME_PERIOD_MS)
    drops = rng.random(n_frames) < cfg.drop_rate
    k, objects, written = 0, {}, 0
    made_dirs: set[Path] = set()
    for i in range(n_frames):
        if drops[i]:
            continue
        t = t_start + round(i * FRAME_PERIOD_MS)
        while k < len(segs) and segs[k].end_ms <= t:
            k += 1
        seg = segs[k] if k < len(segs) and segs[k].start_ms <= t else None
        obj = None
        if seg is not None:
            if k not in objects:
                renderer.set_style()
                objects[k] = renderer.object_for(seg.op_id)
            obj = objects[k]
        image = renderer.render(t, obj, seg.start_ms if seg else t, i)
        path = frames_dir / unix_ms_to_frame_relpath(t)
        if path.parent not in made_dirs:
            path.parent.mkdir(parents=True, exist_ok=True)
            made_dirs.add(path.parent)
        image.save(path, format="JPEG", quality=cfg.jpeg_quality)
        written += 1
    return written


def generate(cfg: SyntheticConfig, root: str | Path, workers: int = 2, overwrite: bool = False) -> Path:
    """Generate the dataset into `root` (atomically). Reuses an existing one made with the same config and
    regenerates one made with another config (it is ours and reproducible); never touches other folders."""
    cfg.validate()
    root = Path(root)
    spec = json.dumps(asdict(cfg), sort_keys=True)
    marker = root / MARKER
    if marker.exists() and not overwrite:
        if json.loads(marker.read_text())["config"] == json.loads(spec):
            return root
        log.warning("%s was generated with other synthetic settings; regenerating it", root)
    elif root.exists() and any(root.iterdir()) and not overwrite:
        raise ValueError(
            f"{root} exists and is not a synthetic dataset made by vlmchallenge; refusing to overwrite"
        )
    tmp = root.with_name(root.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    jobs = [(u, s) for u in range(len(cfg.users)) for s in range(len(cfg.sessions))]
    try:
        if workers > 1:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                counts = list(
                    pool.map(generate_session, *zip(*[(cfg, tmp, u, s) for u, s in jobs], strict=True))
                )
        else:
            counts = [generate_session(cfg, tmp, u, s) for u, s in jobs]
        (tmp / MARKER).write_text(json.dumps({"config": json.loads(spec), "frames": sum(counts)}, indent=1))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if root.exists():
        shutil.rmtree(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(root)
    return root


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default="data/synthetic/openpack/v1.0.0")
    p.add_argument("--users", type=int, default=6, help="number of users (U9001...)")
    p.add_argument("--sessions", type=int, default=1, help="sessions per user (S0100, S0200, ...)")
    p.add_argument("--boxes", type=int, default=4, help="boxes per session")
    p.add_argument("--width", type=int, default=224)
    p.add_argument("--height", type=int, default=168)
    p.add_argument("--difficulty", choices=["easy", "medium", "hard"], default="easy")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--overwrite", action="store_true")
    a = p.parse_args(argv)
    cfg = SyntheticConfig(
        users=[f"U{9001 + i}" for i in range(a.users)],
        sessions=[f"S{(i + 1) * 100:04d}" for i in range(a.sessions)],
        boxes_per_session=a.boxes,
        width=a.width,
        height=a.height,
        difficulty=a.difficulty,
        seed=a.seed,
    )
    root = generate(cfg, a.root, workers=a.workers, overwrite=a.overwrite)
    print(f"synthetic OpenPack written to {root}")


if __name__ == "__main__":
    main()
