"""Benchmark label scoring: KV-cache expansion (prompt once, 10 answers in one pass) vs a forward per class.

    .venv/bin/python bench/scoring.py            # print the table
    .venv/bin/python bench/scoring.py --write    # also update docs/benchmarks.md

Same model (the default tiny Qwen2-VL with its LoRA adapter), same clips (the default synthetic test shards),
one process; reports ms/clip for each method, the speed-up (target >= 5x for 10 classes) and the largest
absolute difference of the per-class log-likelihoods (target <= 1e-4).
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=str(REPO / "data"))
    p.add_argument("--clips", type=int, default=48)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--write", action="store_true")
    a = p.parse_args()
    cfg = compose_default(a.data_dir, [f"dataloader.eval_batch_size={a.batch}", "dataloader.num_workers=0"])
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
    diff = max(float((f - n).abs().max()) for f, n in zip(fast, naive, strict=True))
    agree = sum(int((f.argmax(1) == n.argmax(1)).sum()) for f, n in zip(fast, naive, strict=True))
    speedup = t_naive / t_fast
    cmd = " ".join([".venv/bin/python bench/scoring.py", *map(shlex.quote, sys.argv[1:])])
    section = "\n".join(
        [
            "## Label scoring (`bench/scoring.py`)",
            "",
            f"Command: `{cmd}` ({date.today().isoformat()})",
            "",
            f"- Machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, CPU.",
            f"- {clips} test clips of the default synthetic shards, batches of {a.batch}, "
            f"{scorer.num_classes} classes (answers of {scorer.lengths.min()}-{scorer.lengths.max()} tokens), "
            f"tiny Qwen2-VL + LoRA; median of {a.repeats}.",
            "",
            "| method | ms / clip |",
            "|---|---:|",
            f"| naive: a full forward per (clip, class) | {t_naive / clips * 1e3:.2f} |",
            f"| KV-expand: prompt once, cache repeated, all answers in one pass | {t_fast / clips * 1e3:.2f} |",
            "",
            "| check | value | target | result |",
            "|---|---:|---:|---|",
            f"| speed-up naive / KV-expand | {speedup:.1f}x | >= {TARGET_SPEEDUP}x | "
            f"{'PASS' if speedup >= TARGET_SPEEDUP else 'FAIL'} |",
            f"| max abs log-likelihood difference | {diff:.1e} | <= {TARGET_DIFF:.0e} | "
            f"{'PASS' if diff <= TARGET_DIFF else 'FAIL'} |",
            f"| same argmax | {agree}/{clips} | all | {'PASS' if agree == clips else 'FAIL'} |",
        ]
    )
    print(section)
    if a.write:
        update_section("scoring", section)


if __name__ == "__main__":
    main()
