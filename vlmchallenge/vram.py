"""`python -m vlmchallenge.vram +experiment=qwen2vl_7b_qlora vram.budget_gib=24`: the predicted peak memory,
term by term, and the micro-batch / accumulation plan; nothing is downloaded (presets ship their configs)."""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

import vlmchallenge.conf_schema  # noqa: F401
from vlmchallenge.data.frame_sampler import FrameSampler, SamplerConfig
from vlmchallenge.models.config import ModelConfig, OptimConfig
from vlmchallenge.training.architectures import model_config_for
from vlmchallenge.training.vram_callback import setup_from_configs
from vlmchallenge.training.vram_math import (
    GIB,
    Plan,
    Setup,
    architecture_from_config,
    plan,
    vision_tokens_per_clip,
)
from vlmchallenge.training.vram_report import breakdown_png


def offline_setup(cfg: DictConfig) -> tuple[ModelConfig, Setup]:
    from vlmchallenge.train import typed

    model: ModelConfig = typed(ModelConfig, cfg.model)
    optim: OptimConfig = typed(OptimConfig, cfg.optim)
    sampler: SamplerConfig = typed(SamplerConfig, cfg.data.sampler)  # data.root is not needed to plan
    synthetic = cfg.data.get("synthetic")
    size = cfg.vram.source_frame_size or ([synthetic.width, synthetic.height] if synthetic else [1280, 720])
    w, h = FrameSampler(sampler).output_size(*size)
    vision = vision_tokens_per_clip(sampler.num_frames, w, h)
    return model, setup_from_configs(model, optim, vision + cfg.vram.text_tokens, vision)


def print_plan(name: str, setup: Setup, p: Plan) -> None:
    table = Table(
        title=f"{name}: predicted peak per GPU (micro-batch {p.micro_batch}, seq {setup.seq_len} tokens = "
        f"{setup.vision_tokens} vision + text)"
    )
    table.add_column("term")
    table.add_column("GiB", justify="right")
    table.add_column("share", justify="right")
    for k, v in p.terms.items():
        table.add_row(k, f"{v / GIB:.3f}", f"{100 * v / p.predicted_bytes:.0f}%")
    table.add_row(
        "[bold]total", f"[bold]{p.predicted_bytes / GIB:.3f}", f"of {p.budget_bytes / GIB:.1f} GiB budget"
    )
    console = Console()
    console.print(table)
    console.print(
        f"plan: micro-batch {p.micro_batch} x accumulation {p.accumulate} x world {p.world_size} = "
        f"global batch {p.global_batch} ({setup.method}, {setup.optimizer}, checkpointing "
        f"{'on' if setup.gradient_checkpointing else 'off'})"
    )


def run(cfg: DictConfig) -> Plan:
    if cfg.vram.budget_gib is None:
        raise ValueError("set vram.budget_gib=<GiB of the GPU to plan for>")
    model, setup = offline_setup(cfg)
    arch = architecture_from_config(model_config_for(model))
    global_batch = cfg.vram.global_batch_size or cfg.loader.batch_size
    world = cfg.trainer.get("devices", 1) if isinstance(cfg.trainer.get("devices", 1), int) else 1
    p = plan(arch, setup, int(cfg.vram.budget_gib * GIB), global_batch * world, world, cfg.vram.margin)
    print_plan(model.name, setup, p)
    if cfg.vram.chart:
        breakdown_png({f"b={p.micro_batch}": p.terms}, Path(cfg.vram.chart))
    return p


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
