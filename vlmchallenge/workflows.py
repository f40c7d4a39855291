"""What the model commands run, as library functions over the assembly (testable without a command line), each
named after its command.

train -> fit, test report, export; evaluate -> report of a checkpoint or an export folder; export -> an export
folder from a checkpoint alone; vram -> the VRAM plan of a config, offline. The data commands are in
`data_workflows.py`, apart, so that they start without importing Lightning or transformers; annotate is in
`inference_workflows.py`, so that it starts without Lightning.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.strategies import FSDPStrategy
from pytorch_lightning.utilities import rank_zero_info, rank_zero_only

from vlmchallenge.assembly import (
    Components,
    assemble,
    load_checkpoint,
    settings_from_checkpoint,
    settings_from_config,
    settings_from_export,
)
from vlmchallenge.conf_schema import as_dataclass
from vlmchallenge.data.frame_sampler import FrameSampler, SamplerConfig
from vlmchallenge.evaluation.report import build_report
from vlmchallenge.models.architectures import model_config_for
from vlmchallenge.models.exporter import export_model
from vlmchallenge.models.loader import model_family, resolve_pretrained
from vlmchallenge.training.resume import find_latest_checkpoint
from vlmchallenge.training.vram_callback import footprint_inputs
from vlmchallenge.training.vram_math import GIB, BatchPlan, architecture_from_config, plan_batches
from vlmchallenge.training.vram_report import breakdown_png, print_plan
from vlmchallenge.utils.distributed import share_run_dir
from vlmchallenge.utils.runs import print_locations

print_outputs = rank_zero_only(print_locations)  # a multi-process run prints its outputs once


@dataclass
class TrainResult:
    metrics: dict
    components: Components
    best_checkpoint: str | None = None
    report_dir: Path | None = None
    export_dir: Path | None = None


def resume_from(cfg: DictConfig) -> str | None:
    """`ckpt_path` as given, or for `ckpt_path=last` the newest checkpoint of an earlier run of this task."""
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path == "last":
        ckpt_path = str(
            find_latest_checkpoint(cfg.paths.log_dir, cfg.task_name, exclude=cfg.paths.output_dir)
        )
        rank_zero_info(f"resuming from {ckpt_path}")
    return ckpt_path


def test_and_report(result: TrainResult, ckpt_path: str | None, output_dir: str) -> None:
    """Test `ckpt_path` (the best checkpoint of this run), then rank 0 writes the evaluator's report of it."""
    parts = result.components
    trainer, module, datamodule = parts.trainer, parts.module, parts.datamodule
    trainer.test(module, datamodule=datamodule, ckpt_path=ckpt_path)
    result.metrics.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")})
    if not trainer.fast_dev_run and trainer.is_global_zero:
        result.report_dir = Path(output_dir) / "eval"
        report = build_report(
            module.test_predictions,
            parts.prompt.class_names,
            parts.settings.data,
            result.report_dir,
            shard_dir=datamodule.out_dir,
        )
        result.metrics["test/openpack_f1_macro"] = report["openpack_official"]["f1_macro"]


def train(cfg: DictConfig) -> TrainResult:
    """Fit (resuming when `ckpt_path` is set), test the best checkpoint into a report, export it. Every rank
    runs this; only rank 0 writes the report and the export."""
    share_run_dir(cfg)  # torchrun / SLURM: all ranks write into rank 0's run folder
    pl.seed_everything(cfg.seed, workers=True)
    parts = assemble(
        settings_from_config(cfg),
        "fit",
        trainer=cfg.trainer,
        callbacks=cfg.get("callbacks"),
        loggers=cfg.get("logger"),
    )
    trainer, module, datamodule = parts.trainer, parts.module, parts.datamodule
    for lg in parts.loggers:
        lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    ckpt_path = resume_from(cfg)
    result = TrainResult({}, parts)
    if cfg.get("train"):
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        result.metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
    result.best_checkpoint = getattr(trainer.checkpoint_callback, "best_model_path", "") or None
    if cfg.get("test"):
        test_and_report(
            result, result.best_checkpoint if cfg.get("train") else ckpt_path, cfg.paths.output_dir
        )
    if cfg.get("export") and not trainer.fast_dev_run and trainer.is_global_zero:
        result.export_dir = export_trained(
            parts, result.best_checkpoint, Path(cfg.paths.output_dir) / "export"
        )
    print_outputs(
        {
            "run dir": cfg.paths.output_dir,
            "shards": datamodule.out_dir,
            "best ckpt": result.best_checkpoint,
            "eval report": result.report_dir / "report.md" if result.report_dir else None,
            "export": result.export_dir,
            "tensorboard": Path(cfg.paths.output_dir) / "tensorboard" if cfg.get("logger") else None,
        }
    )
    for key in ("val/f1_macro", "val/acc", "test/f1_macro", "test/acc", "test/openpack_f1_macro"):
        if key in result.metrics:
            rank_zero_info(f"{key} = {result.metrics[key]:.4f}")
    return result


def export_trained(parts: Components, best_checkpoint: str | None, out_dir: Path) -> Path:
    """The export of a finished run, written by rank 0. Under FSDP each rank holds only a shard of the weights
    after fitting, so the export is rebuilt from the best checkpoint (one full, adapter-only state dict,
    docs/scaling.md §3.1) without any collective; otherwise the live module already holds the tested weights."""
    if isinstance(parts.trainer.strategy, FSDPStrategy):
        if not best_checkpoint:
            raise ValueError(
                "export under FSDP needs a checkpoint to rebuild from; enable the model checkpoint"
            )
        return export(best_checkpoint, out_dir)
    return export_components(parts, out_dir)


def export_components(parts: Components, out_dir: Path) -> Path:
    settings = parts.settings
    return export_model(
        parts.module.model,
        parts.processor,
        settings.model,
        resolve_pretrained(settings.model),
        settings.data,
        parts.prompt,
        out_dir,
    )


def command_line_overrides() -> list[str]:
    """The `key=value` overrides this process was started with (empty outside `@hydra.main`)."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def evaluate(cfg: DictConfig, overrides: list[str] | None = None) -> dict:
    """A checkpoint (its own settings, plus any `data.*`/`model.*`... overrides) or an export folder (on
    `cfg.data`) -> the report in `cfg.paths.output_dir`."""
    pl.seed_everything(cfg.seed)
    if bool(cfg.ckpt) == bool(cfg.export_dir):
        raise ValueError("set exactly one of ckpt=<checkpoint> and export_dir=<export folder>")
    if cfg.ckpt:
        overrides = command_line_overrides() if overrides is None else overrides
        settings = settings_from_checkpoint(cfg.ckpt, str(cfg.paths.data_dir), overrides)
    else:
        settings = settings_from_export(cfg.export_dir, cfg)
    parts = assemble(settings, "evaluate", test_split=cfg.split, test_mode=cfg.mode)
    parts.trainer.test(parts.module, datamodule=parts.datamodule, ckpt_path=cfg.ckpt or None)
    out = Path(cfg.paths.output_dir)
    report = build_report(
        parts.module.test_predictions,
        parts.prompt.class_names,
        settings.data,
        out,
        cfg.mode,
        {"source": str(cfg.ckpt or cfg.export_dir), "split": cfg.split},
        cfg.null_handling,
        shard_dir=parts.datamodule.out_dir,
    )
    print_outputs({"report": out / "report.md", "submission": out / "submission.zip"})
    print(
        f"OpenPack macro-F1 (1 s): {report['openpack_official']['f1_macro']:.4f}; "
        f"clip macro-F1: {report['clip_metrics']['f1_macro']:.4f}"
    )
    return report


def default_export_dir(ckpt: Path) -> Path:
    """`<run>/export` for a checkpoint in `<run>/checkpoints/`, else `<name>-export` beside the checkpoint."""
    ckpt = ckpt.resolve()
    if ckpt.parent.name == "checkpoints":
        return ckpt.parent.parent / "export"
    return ckpt.with_name(f"{ckpt.stem}-export")


def export(ckpt: str | Path, out_dir: str | Path | None = None, overrides: list[str] = ()) -> Path:
    """A training checkpoint alone (it carries its settings) -> one export folder. No data is read: the data
    settings travel only as what the export records (the sampler, the clips)."""
    ckpt = Path(ckpt)
    saved = load_checkpoint(ckpt)  # read once: settings and weights
    parts = assemble(settings_from_checkpoint(ckpt, None, overrides, saved), "export")
    module = parts.module
    module.configure_model()
    result = module.load_state_dict(saved["state_dict"], strict=False)
    trainable = {f"model.{n}" for n, p in module.model.named_parameters() if p.requires_grad}
    missing = sorted(trainable & set(result.missing_keys))
    if missing:
        raise ValueError(
            f"{ckpt}: lacks {len(missing)} trainable tensors (e.g. {missing[0]}); not from this run?"
        )
    return export_components(parts, Path(out_dir) if out_dir else default_export_dir(ckpt))


def vram(cfg: DictConfig) -> BatchPlan:
    """The predicted peak per GPU and the micro-batch / accumulation plan, without loading any weights."""
    if cfg.vram.budget_gib is None:
        raise ValueError("set vram.budget_gib=<GiB of the GPU to plan for>")
    from vlmchallenge.models.config import ModelConfig, OptimConfig

    model: ModelConfig = as_dataclass(ModelConfig, cfg.model)
    optim: OptimConfig = as_dataclass(OptimConfig, cfg.optim)
    sampler: SamplerConfig = as_dataclass(SamplerConfig, cfg.data.sampler)  # data.root is not needed to plan
    synthetic = cfg.data.get("synthetic")
    size = cfg.vram.source_frame_size or ([synthetic.width, synthetic.height] if synthetic else [1280, 720])
    w, h = FrameSampler(sampler).output_size(*size)
    family = model_family(model)
    model.check_family(family)
    config = model_config_for(model)
    clip = family.clip_tokens(sampler.num_frames, w, h, config)
    vision = family.geometry.tokens_per_clip(
        sampler.num_frames, *family.geometry.processed_size(w, h, config)
    )
    inputs = footprint_inputs(model, family, optim, cfg.vram.text_tokens + clip, vision)
    arch = architecture_from_config(config)
    devices = cfg.trainer.get("devices", 1)
    world = (devices if isinstance(devices, int) else 1) * int(cfg.trainer.get("num_nodes") or 1)
    # as the VRAMPlanner callback does: the global batch is split over the ranks, each rank plans its share
    global_batch = cfg.vram.global_batch_size or cfg.dataloader.batch_size * world
    plan = plan_batches(arch, inputs, int(cfg.vram.budget_gib * GIB), global_batch, world, cfg.vram.margin)
    print_plan(model.name, inputs, plan, family)
    if cfg.vram.chart:
        breakdown_png({f"b={plan.micro_batch}": plan.terms}, Path(cfg.vram.chart))
    return plan
