"""Training throughput with 1 process vs 2 DDP processes (CPU + gloo here; GPUs + NCCL with --gpu).

    .venv/bin/python bench/ddp.py                 # print the table
    .venv/bin/python bench/ddp.py --write         # also update docs/benchmarks.md
    .venv/bin/python bench/ddp.py --gpu --devices 2 --write    # on a machine with 2 GPUs

Each configuration is a real `python -m vlmchallenge.train` run (Lightning starts the ranks) with Lightning's
`ThroughputMonitor`, which reports the rolling samples/s of the last `--window` training steps (validation
excluded); the value at the last step is taken, median of `--repeats` runs. Scaling efficiency is
(samples/s with N processes) / (N x samples/s with 1 process), at the same per-rank micro-batch.

On CPU the processes share the machine's cores, so the comparison that isolates what DDP costs (gradient
all-reduce, one process per rank) gives every process the same number of torch threads (`--threads`, default
1): 1 process x 1 thread vs 2 processes x 1 thread. The 1-process run with all cores is reported beside it.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from benchdoc import update_section  # noqa: E402

TARGET_EFFICIENCY = 0.8
# Enough data for a few dozen steps per rank; validation, test and export off: only training is timed.
DATA = [
    "data.synthetic.users=[U9001,U9002,U9003,U9004]",
    "data.synthetic.boxes_per_session=2",
    "data.splits.train=[U9001,U9002]",
    "data.splits.val=[U9003]",
    "data.splits.test=[U9004]",
]
RUN = [
    "trainer.max_epochs=1",
    "trainer.limit_val_batches=0",
    "test=false",
    "export=false",
    "optimized_metric=null",
    "logger=csv",
    "~callbacks.rich_progress_bar",
    "trainer.log_every_n_steps=1",
    "+callbacks.throughput._target_=pytorch_lightning.callbacks.ThroughputMonitor",
    "+callbacks.throughput.batch_size_fn._target_=hydra.utils.get_method",
    "+callbacks.throughput.batch_size_fn.path=vlmchallenge.models.collator.batch_size",
]


def samples_per_s(run_root: Path, world: int) -> float:
    """The last rolling samples/s ThroughputMonitor logged (global over ranks when world > 1)."""
    (metrics,) = run_root.rglob("csv/**/metrics.csv")
    key = "train/samples_per_sec" if world > 1 else "train/device/samples_per_sec"
    with open(metrics) as f:
        values = [float(r[key]) for r in csv.DictReader(f) if r.get(key)]
    if not values:
        raise RuntimeError(f"{metrics}: no {key} logged")
    return values[-1]


def run(
    devices: int,
    threads: int | None,
    steps: int,
    window: int,
    batch: int,
    workers: int,
    data_dir: str,
    gpu: bool,
) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        device = (
            ["trainer=ddp", f"trainer.devices={devices}"] if devices > 1 else ["trainer=gpu"] if gpu else []
        )
        if not gpu:
            device += ["trainer.accelerator=cpu", "trainer.precision=32"]
        cmd = [
            sys.executable,
            "-m",
            "vlmchallenge.train",
            *DATA,
            *RUN,
            *device,
            f"trainer.limit_train_batches={steps}",
            f"dataloader.batch_size={batch}",
            f"dataloader.num_workers={workers}",
            f"+callbacks.throughput.window_size={window}",
            f"paths.data_dir={data_dir}",
            f"paths.log_dir={tmp}",
        ]
        env = dict(os.environ)
        if threads:
            env["OMP_NUM_THREADS"] = str(threads)  # torch's intra-op threads per process
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{shlex.join(cmd)} failed:\n{proc.stderr[-3000:]}")
        return samples_per_s(Path(tmp), devices)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=str(REPO / "data"))
    p.add_argument("--devices", type=int, default=2)
    p.add_argument("--steps", type=int, default=40, help="training steps per rank")
    p.add_argument("--window", type=int, default=30, help="steps in the rolling average (after warm-up)")
    p.add_argument("--batch", type=int, default=4, help="micro-batch per rank")
    p.add_argument(
        "--threads", type=int, default=1, help="torch threads per process on CPU (0: torch's default)"
    )
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers per rank (0: load in the rank)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--gpu", action="store_true", help="GPUs + NCCL, bf16 (trainer=ddp defaults)")
    p.add_argument("--write", action="store_true")
    a = p.parse_args()
    if a.window >= a.steps:
        p.error("--window must be smaller than --steps (the first steps are warm-up)")
    threads = None if a.gpu or a.threads == 0 else a.threads

    def median(devices: int, thr: int | None) -> tuple[float, list[float]]:
        runs = [
            run(devices, thr, a.steps, a.window, a.batch, a.workers, a.data_dir, a.gpu)
            for _ in range(a.repeats)
        ]
        return statistics.median(runs), runs

    one, one_runs = median(1, threads)
    many, many_runs = median(a.devices, threads)
    rows = [
        (f"1 process{f' x {threads} thread' if threads else ''}", one, one_runs),
        (f"{a.devices} processes{f' x {threads} thread' if threads else ''} (DDP)", many, many_runs),
    ]
    if threads:  # what one process does with every core, for reference
        full, full_runs = median(1, None)
        rows.append(("1 process, all cores (reference)", full, full_runs))
    efficiency = many / (a.devices * one)

    import torch

    cmd = "bench/ddp.py" + "".join(f" {x}" for x in sys.argv[1:] if x != "--write")
    backend = "NCCL, GPU" if a.gpu else f"gloo, CPU ({os.cpu_count()} cores)"
    lines = [
        "## DDP scaling (`bench/ddp.py`)",
        "",
        f"Command: `.venv/bin/python {cmd} --write` ({date.today().isoformat()})",
        "",
        f"- Machine: {platform.processor() or platform.machine()}, Python {platform.python_version()}, "
        f"torch {torch.__version__}, {backend}.",
        f"- Config: default tiny Qwen2-VL + LoRA on synthetic shards (4 users x 2 boxes), micro-batch {a.batch} "
        f"per rank, {a.workers} loader workers per rank, {a.steps} steps per rank; samples/s = Lightning `ThroughputMonitor` over the last "
        f"{a.window} steps; median of {a.repeats}.",
        "",
        "| run | samples/s | runs |",
        "|---|---:|---|",
        *(f"| {name} | {value:.1f} | {', '.join(f'{r:.1f}' for r in runs)} |" for name, value, runs in rows),
        "",
        "| ratio | value | target | result |",
        "|---|---:|---:|---|",
        f"| scaling efficiency, {a.devices} vs 1 process | {efficiency:.2f} | >= {TARGET_EFFICIENCY} | "
        f"{'PASS' if efficiency >= TARGET_EFFICIENCY else 'FAIL'} |",
    ]
    section = "\n".join(lines)
    print(section)
    if a.write:
        update_section("ddp", section)


if __name__ == "__main__":
    main()
