"""Benchmark label scoring: KV-cache expansion (prompt once, 10 answers in one pass) vs a forward per class,
for each model family's tiny model.

    .venv/bin/python bench/scoring.py            # print the table
    .venv/bin/python bench/scoring.py --write    # also update docs/benchmarks.md

Per family (`--experiments`: the tiny experiment of each), the same model with its LoRA adapter and the same
clips (the experiment's synthetic test shards), one process; reports ms/clip for each method, the speed-up
(target >= 5x for 10 classes) and the largest absolute difference of the per-class log-likelihoods (<= 1e-4).
"""

from __future__ import annotations

import argparse
import platform
import shlex
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

from benchdoc import update_section  # noqa: E402
from train_step import compose_default  # noqa: E402

from vlmchallenge.assembly import assemble, settings_from_config  # noqa: E402

TARGET_SPEEDUP, TARGET_DIFF = 5.0, 1e-4


def timed(fn, batches, repeats: int) -> tuple[float, list]:
    runs, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = [fn(b) for b in batches]
        runs.append(time.perf_counter() - start)
    return statistics.median(runs), out


def measure(experiment: str, a) -> dict:
    """Both methods on one family's tiny model: ms/clip, speed-up, largest difference, argmax agreement."""
    from hydra.core.global_hydra import GlobalHydra

    overrides = [
        f"experiment={experiment}",
        f"dataloader.eval_batch_size={a.batch}",
        "dataloader.num_workers=0",
    ]
    cfg = compose_default(a.data_dir, overrides)
    GlobalHydra.instance().clear()
    torch.manual_seed(0)
    parts = assemble(settings_from_config(cfg), "evaluate")
    datamodule, module = parts.datamodule, parts.module
    datamodule.prepare_data()
    datamodule.setup("test")
    module.configure_model()
    model = module.model.eval()
    for n, param in model.named_parameters():  # a non-trivial adapter, as after training
        if "lora_B" in n:
            torch.nn.init.normal_(param, std=0.2)
    batches, clips = [], 0
    for b in datamodule.test_dataloader():
        batches.append(b)
        clips += len(b["class_index"])
        if clips >= a.clips:
            break
    scorer = module.scorer
    scorer.score(model, batches[0])  # warm-up
    t_fast, fast = timed(lambda b: scorer.score(model, b), batches, a.repeats)
    t_naive, naive = timed(lambda b: scorer.score_naive(model, b), batches, a.repeats)
    return {
        "family": module.family.title,
        "clips": clips,
        "classes": scorer.num_classes,
        "naive_ms": t_naive / clips * 1e3,
        "fast_ms": t_fast / clips * 1e3,
        "speedup": t_naive / t_fast,
        "diff": max(float((f - n).abs().max()) for f, n in zip(fast, naive, strict=True)),
        "agree": sum(int((f.argmax(1) == n.argmax(1)).sum()) for f, n in zip(fast, naive, strict=True)),
    }


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=str(REPO / "data"))
    p.add_argument(
        "--experiments",
        nargs="+",
        default=["tiny_cpu", "tiny_qwen3vl_cpu", "tiny_qwen35_cpu", "tiny_internvl_cpu"],
    )
    p.add_argument("--clips", type=int, default=48)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--write", action="store_true")
    a = p.parse_args()
    rows = [measure(e, a) for e in a.experiments]
    cmd = " ".join([".venv/bin/python bench/scoring.py", *map(shlex.quote, sys.argv[1:])])
    lines = [
        "## Label scoring (`bench/scoring.py`)",
        "",
        f"Command: `{cmd}` ({date.today().isoformat()})",
        "",
        f"- Machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, CPU.",
        f"- Per family: its tiny model + LoRA, {rows[0]['clips']} test clips of the experiment's synthetic shards, "
        f"batches of {a.batch}, {rows[0]['classes']} classes; median of {a.repeats}. Naive: a full forward per "
        "(clip, class); KV-expand: prompt once, its cache repeated (`Cache.reorder_cache`: keys/values and the "
        "hybrid's recurrent state), all answers in one pass.",
        "",
        f"| family | naive ms/clip | KV-expand ms/clip | speed-up (>= {TARGET_SPEEDUP:g}x) | "
        f"max abs difference (<= {TARGET_DIFF:.0e}) | same argmax |",
        "|---|---:|---:|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['family']} | {r['naive_ms']:.2f} | {r['fast_ms']:.2f} | {r['speedup']:.1f}x "
            f"{verdict(r['speedup'] >= TARGET_SPEEDUP)} | {r['diff']:.1e} {verdict(r['diff'] <= TARGET_DIFF)} | "
            f"{r['agree']}/{r['clips']} {verdict(r['agree'] == r['clips'])} |"
        )
    section = "\n".join(lines)
    print(section)
    if a.write:
        update_section("scoring", section)


if __name__ == "__main__":
    main()
