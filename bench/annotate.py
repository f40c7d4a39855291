"""Benchmark whole-recording annotation: seconds of video annotated per wall-clock second, on a synthetic
10-minute OpenPack session, for the annotate engine against a naive loop.

    .venv/bin/python bench/annotate.py            # print the table
    .venv/bin/python bench/annotate.py --write    # also update docs/benchmarks.md

- new: `RecordingAnnotator` (each frame decoded once through a bounded cache, windows scored in batches with
  the KV-cached label scorer);
- naive: the same windows, each one's frames decoded separately (`VLMInference.prepare` on freshly opened
  files) and scored alone with a full forward per class (`LabelScorer.score_naive`), over the first
  `--naive-seconds` of the session (its rate does not depend on the length).
The model is the default tiny Qwen2-VL exported untrained (speed does not depend on the weights), with the
default sampler (4 frames, 112x84) and 2-s windows every 1 s. Target: new >= 3x naive.
"""

from __future__ import annotations

import argparse
import platform
import shlex
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

from benchdoc import update_section  # noqa: E402
from train_step import compose_default  # noqa: E402

from vlmchallenge.assembly import assemble, settings_from_config  # noqa: E402
from vlmchallenge.data.frame_source import JpegFolderSource  # noqa: E402
from vlmchallenge.data.synthetic import SyntheticConfig, generate  # noqa: E402
from vlmchallenge.inference.annotate_settings import AnnotateSettings  # noqa: E402
from vlmchallenge.inference.annotator import RecordingAnnotator  # noqa: E402
from vlmchallenge.inference.engine import VLMInference  # noqa: E402
from vlmchallenge.models.collator import Example  # noqa: E402
from vlmchallenge.workflows import export_components  # noqa: E402

TARGET_SPEEDUP = 3.0


def untrained_export(data_dir: Path, out_dir: Path) -> Path:
    if (out_dir / "vlmchallenge.json").exists():
        return out_dir
    cfg = compose_default(str(data_dir), [])
    parts = assemble(settings_from_config(cfg), "export")
    parts.module.configure_model()
    return export_components(parts, out_dir)


def naive_rate(inference: VLMInference, frames: JpegFolderSource, windows) -> tuple[float, float, np.ndarray]:
    """(seconds of video per wall second, wall seconds, probabilities) of the per-window, per-class loop."""
    start = time.perf_counter()
    out = []
    for w in windows:
        clip = inference.prepare_clip(
            [Image.open(frames.paths[i]) for i in w.frames]
        )  # decoded again per window
        batch = inference.collate([Example(clip, 0, {"start_ms": w.start_ms, "end_ms": w.end_ms})])
        out.append(inference.scorer.score_naive(inference.model, batch).softmax(1)[0].float().cpu().numpy())
    wall = time.perf_counter() - start
    covered = (windows[-1].end_ms - windows[0].start_ms) / 1000
    return covered / wall, wall, np.stack(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=str(REPO / "data" / "bench_annotate"))
    p.add_argument("--boxes", type=int, default=9, help="boxes in the session (9: about 10 minutes)")
    p.add_argument("--naive-seconds", type=float, default=120)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--device", default="cpu", help="cpu | cuda")
    p.add_argument(
        "--dtype", default=None, help="the engine's dtype; default: bfloat16 on CUDA, else float32"
    )
    p.add_argument("--write", action="store_true")
    a = p.parse_args()
    torch.manual_seed(0)
    data_dir = Path(a.data_dir)
    synthetic = SyntheticConfig(users=["U9001"], sessions=["S0100"], boxes_per_session=a.boxes)
    root = generate(synthetic, data_dir / "synthetic" / "openpack" / "v1.0.0", workers=1)
    frames = JpegFolderSource(root / "U9001" / "kinect" / "color-masked" / "frames" / "S0100")
    inference = VLMInference(untrained_export(data_dir, data_dir / "export"), device=a.device, dtype=a.dtype)
    annotator = RecordingAnnotator(inference, AnnotateSettings(batch_size=a.batch))
    t0 = int(frames.timestamps_ms[0])
    annotator.annotate(frames, t0, t0 + 10_000)  # warm-up
    result = annotator.annotate(frames)
    new_rate = result.realtime_factor
    head = [w for w in result.windows if w.centre_ms < t0 + a.naive_seconds * 1000]
    slow_rate, slow_wall, slow_probs = naive_rate(inference, frames, head)
    diff = float(np.abs(slow_probs - result.probabilities[: len(head)]).max())
    speedup = new_rate / slow_rate
    used = sum(len(w.frames) for w in result.windows)
    cmd = " ".join([".venv/bin/python bench/annotate.py", *map(shlex.quote, sys.argv[1:])])
    section = "\n".join(
        [
            "## Whole-recording annotation (`bench/annotate.py`)"
            + (" on the GPU" if inference.device.type == "cuda" else ""),
            "",
            f"Command: `{cmd}` ({date.today().isoformat()})",
            "",
            f"- Machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
            f"{inference.device} ({str(inference.model.dtype).removeprefix('torch.')}).",
            f"- One synthetic session of {result.duration_s / 60:.1f} min ({len(frames.timestamps_ms)} frames, "
            f"{frames.timestamps_ms.size / result.duration_s:.1f} fps, {Image.open(frames.paths[0]).size[0]}x"
            f"{Image.open(frames.paths[0]).size[1]}), tiny Qwen2-VL (untrained export), "
            f"{result.settings.window_s:g}-s windows every {result.settings.stride_s:g} s, "
            f"{inference.sampler_cfg.num_frames} frames per window.",
            f"- new: {len(result.windows)} windows, {result.frames_decoded} frames decoded for {used} frame uses, "
            f"batches of {a.batch}; naive: the first {len(head)} windows ({slow_wall:.1f} s wall).",
            "",
            "| method | video s / wall s |",
            "|---|---:|",
            f"| naive: frames decoded per window, a forward per (window, class) | {slow_rate:.1f} |",
            f"| annotate: decode once (bounded cache), batched KV-cached scoring | {new_rate:.1f} |",
            "",
            "| check | value | target | result |",
            "|---|---:|---:|---|",
            f"| speed-up annotate / naive | {speedup:.1f}x | >= {TARGET_SPEEDUP}x | "
            f"{'PASS' if speedup >= TARGET_SPEEDUP else 'FAIL'} |",
            f"| max abs probability difference (same windows) | {diff:.1e} | <= 1e-04 | "
            f"{'PASS' if diff <= 1e-4 else 'FAIL'} |",
        ]
    )
    print(section)
    if a.write:
        update_section("annotate_gpu" if inference.device.type == "cuda" else "annotate", section)


if __name__ == "__main__":
    main()
