"""Benchmark the training step and the data loader at the default config (tiny Qwen2-VL, synthetic shards).

    .venv/bin/python bench/train_step.py            # print the tables
    .venv/bin/python bench/train_step.py --write    # also update docs/benchmarks.md

1. Lightning overhead: the same model, the same fixed batch and the same optimizer + schedule, timed per step
   (a) inside `Trainer.fit` and (b) in a bare PyTorch loop. Ratio (a)/(b), target <= 1.10.
2. Data supply: samples/s of the real train loader (shards -> decode -> processor collation, in its workers)
   against samples/s the training step consumes. Ratio loader/step, target >= 5, so the accelerator never waits.
Both in one process, each median of --repeats runs, after warm-up steps.
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

import pytorch_lightning as pl
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

from benchdoc import update_section  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import open_dict  # noqa: E402

from vlmchallenge.assembly import assemble, settings_from_config  # noqa: E402

TARGET_OVERHEAD, TARGET_SUPPLY = 1.10, 5.0


def compose_default(data_dir: str, overrides: list[str]):
    import vlmchallenge.conf_schema  # noqa: F401

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.data_dir={data_dir}", *overrides])
    with open_dict(cfg):
        cfg.paths.output_dir = str(REPO / "outputs" / "bench")
    return cfg


class StepTimer(pl.Callback):
    """Wall time of training steps after `warmup` steps (optimizer step included)."""

    def __init__(self, warmup: int):
        self.warmup, self.start, self.end = warmup, None, None

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if batch_idx == self.warmup:
            sync(module.device)
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        sync(module.device)  # CUDA runs asynchronously: wait for the step, not just its launch
        self.end = time.perf_counter()


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def lightning_step_time(cfg, batch, steps: int, warmup: int, accelerator: str = "cpu") -> float:
    module = assemble(settings_from_config(cfg), "fit").module
    timer = StepTimer(warmup)
    trainer = pl.Trainer(
        accelerator=accelerator,
        devices=1,
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        gradient_clip_val=cfg.optim.grad_clip,
        callbacks=[timer],
    )
    loader = torch.utils.data.DataLoader([batch] * steps, batch_size=None, collate_fn=lambda b: b)
    trainer.fit(module, train_dataloaders=loader)
    return (timer.end - timer.start) / (steps - warmup)


def bare_step_time(cfg, batch, steps: int, warmup: int, device: str = "cpu") -> float:
    module = assemble(settings_from_config(cfg), "fit").module
    module.to(device)  # before configure_model, so a 4-bit base loads onto `device` (as under Lightning)
    module.configure_model()
    model = module.model.to(device)
    batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    keys = (
        "input_ids",
        "attention_mask",
        "mm_token_type_ids",
        "pixel_values_videos",
        "video_grid_thw",
        "labels",
    )
    start = None
    for step in range(steps):
        if step == warmup:
            start = time.perf_counter()
        loss = model(**{k: batch[k] for k in keys}, use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if step == warmup - 1:
            sync(device)
    sync(device)
    return (time.perf_counter() - start) / (steps - warmup)


def loader_samples_per_s(datamodule, batches: int) -> float:
    loader = datamodule.train_dataloader()
    it = iter(loader)
    next(it)  # worker start-up is not throughput
    start, n = time.perf_counter(), 0
    for _ in range(batches):
        n += len(next(it)["class_index"])
    return n / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=str(REPO / "data"))
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--loader-batches", type=int, default=60)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--accelerator", default="cpu", choices=["cpu", "gpu"], help="where the steps run")
    p.add_argument("--write", action="store_true")
    p.add_argument(
        "overrides", nargs="*", help="Hydra overrides of conf/train.yaml, e.g. dataloader.num_workers=2"
    )
    a = p.parse_args()
    cfg = compose_default(a.data_dir, a.overrides)
    pl.seed_everything(0)
    datamodule = assemble(settings_from_config(cfg), "fit").datamodule
    datamodule.prepare_data()
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    bs = len(batch["class_index"])

    light, bare, supply = [], [], []
    for _ in range(a.repeats):
        bare.append(
            bare_step_time(cfg, batch, a.steps, a.warmup, "cuda" if a.accelerator == "gpu" else "cpu")
        )
        light.append(lightning_step_time(cfg, batch, a.steps, a.warmup, a.accelerator))
        supply.append(loader_samples_per_s(datamodule, a.loader_batches))
    t_light, t_bare, s_loader = statistics.median(light), statistics.median(bare), statistics.median(supply)
    s_step = bs / t_light
    overhead, ratio = t_light / t_bare, s_loader / s_step
    cmd = " ".join([".venv/bin/python bench/train_step.py", *map(shlex.quote, sys.argv[1:])])
    lines = [
        "## Training step and data supply (`bench/train_step.py`)"
        + (" on the GPU" if a.accelerator == "gpu" else ""),
        "",
        f"Command: `{cmd}` ({date.today().isoformat()})",
        "",
        f"- Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"Python {platform.python_version()}, torch {torch.__version__}, "
        + (torch.cuda.get_device_name() if a.accelerator == "gpu" else "CPU")
        + ".",
        f"- Config: `conf/train.yaml` {' '.join(a.overrides) or 'as is'} (LoRA + modules_to_save, synthetic "
        "shards), "
        f"micro-batch {bs}, sequence {batch['input_ids'].shape[1]} tokens, loader workers "
        f"{cfg.dataloader.num_workers}; {a.steps} steps after {a.warmup} warm-up, median of {a.repeats}.",
        "",
        "| measurement | value | runs |",
        "|---|---:|---|",
        f"| bare PyTorch step (fwd+bwd+clip+AdamW) | {t_bare * 1e3:.1f} ms | "
        + ", ".join(f"{x * 1e3:.1f}" for x in bare)
        + " |",
        f"| Lightning `Trainer.fit` step | {t_light * 1e3:.1f} ms | "
        + ", ".join(f"{x * 1e3:.1f}" for x in light)
        + " |",
        f"| train loader supply | {s_loader:.0f} samples/s | " + ", ".join(f"{x:.0f}" for x in supply) + " |",
        f"| training step consumption | {s_step:.0f} samples/s | |",
        "",
        "| ratio | value | target | result |",
        "|---|---:|---:|---|",
        f"| Lightning / bare step | {overhead:.3f}x | <= {TARGET_OVERHEAD}x | "
        f"{'PASS' if overhead <= TARGET_OVERHEAD else 'FAIL'} |",
        f"| loader / step samples per s | {ratio:.1f}x | >= {TARGET_SUPPLY}x | "
        f"{'PASS' if ratio >= TARGET_SUPPLY else 'FAIL'} |",
    ]
    section = "\n".join(lines)
    print(section)
    if a.write:
        update_section("train_step_gpu" if a.accelerator == "gpu" else "train_step", section)


if __name__ == "__main__":
    main()
