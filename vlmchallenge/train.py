"""`python -m vlmchallenge.train`: prepare shards if missing, train, validate, test, export; returns the metric.

python -m vlmchallenge.train                                   # tiny model + synthetic data on CPU
python -m vlmchallenge.train +experiment=tiny_qlora_cpu        # 4-bit QLoRA on CPU
python -m vlmchallenge.train -m model.lora.r=4,8               # a sweep
python -m vlmchallenge.train ckpt_path=last                    # resume the newest run
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

import vlmchallenge.conf_schema  # noqa: F401  (registers the structured-config schemas)
from vlmchallenge.data.config import DataConfig
from vlmchallenge.data.datamodule import ShardDataModule
from vlmchallenge.evaluation.report import build_report
from vlmchallenge.models.collator import PromptCollator, TrainCollator
from vlmchallenge.models.config import ModelConfig, OptimConfig
from vlmchallenge.models.exporter import export_model
from vlmchallenge.models.loader import load_processor, resolve_pretrained
from vlmchallenge.models.prompt import PromptBuilder, operation_names
from vlmchallenge.models.vlm_module import VLMClassifier
from vlmchallenge.training.random_state import RandomStateCheckpoint
from vlmchallenge.utils import (
    find_latest_checkpoint,
    instantiate_callbacks,
    instantiate_loggers,
    print_locations,
)

log = logging.getLogger(__name__)


def typed(schema, node):
    """A config node as its dataclass, also for configs reloaded from a run's .hydra/config.yaml (untyped)."""
    resolved = OmegaConf.to_container(node, resolve=True)  # interpolations resolve against the whole config
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), resolved))


def build_components(cfg: DictConfig):
    """Typed configs -> processor, prompt, datamodule and module (no weights loaded yet)."""
    data: DataConfig = typed(DataConfig, cfg.data)
    model_cfg: ModelConfig = typed(ModelConfig, cfg.model)
    optim_cfg: OptimConfig = typed(OptimConfig, cfg.optim)
    data.validate()
    model_cfg.validate()
    pretrained = resolve_pretrained(model_cfg)
    processor = load_processor(pretrained, data.sampler)
    prompt = PromptBuilder(operation_names(include_null=data.clips.keep_null))
    datamodule = ShardDataModule(
        data,
        cfg.paths.data_dir,
        train_collate=TrainCollator(processor, prompt),
        eval_collate=PromptCollator(processor, prompt),
        seed=cfg.seed,
        **OmegaConf.to_container(cfg.loader),
    )
    module = VLMClassifier(model_cfg, optim_cfg, pretrained, prompt, processor.tokenizer)
    return data, model_cfg, pretrained, processor, prompt, datamodule, module


def train(cfg: DictConfig) -> tuple[dict, dict]:
    pl.seed_everything(cfg.seed, workers=True)
    data, model_cfg, pretrained, processor, prompt, datamodule, module = build_components(cfg)
    # exact resume is not optional, so its callback is not a config choice
    callbacks = [*instantiate_callbacks(cfg.get("callbacks")), RandomStateCheckpoint()]
    loggers = instantiate_loggers(cfg.get("logger"))
    trainer: pl.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers)
    for lg in loggers:
        lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path == "last":
        ckpt_path = str(
            find_latest_checkpoint(cfg.paths.log_dir, cfg.task_name, exclude=cfg.paths.output_dir)
        )
        log.info("resuming from %s", ckpt_path)

    metrics: dict = {}
    if cfg.get("train"):
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
    best = getattr(trainer.checkpoint_callback, "best_model_path", "") or None
    report_dir = None
    if cfg.get("test"):
        trainer.test(module, datamodule=datamodule, ckpt_path=best if cfg.get("train") else ckpt_path)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")})
        if not trainer.fast_dev_run:  # the evaluator's report for the test stage
            report_dir = Path(cfg.paths.output_dir) / "eval"
            report = build_report(module.test_predictions, prompt.class_names, data, report_dir)
            metrics["test/openpack_f1_macro"] = report["openpack_official"]["f1_macro"]
    export_dir = None
    if cfg.get("export") and not trainer.fast_dev_run:
        export_dir = export_model(
            module.model,
            processor,
            model_cfg,
            pretrained,
            data,
            prompt,
            Path(cfg.paths.output_dir) / "export",
        )
    print_locations(
        {
            "run dir": cfg.paths.output_dir,
            "shards": datamodule.out_dir,
            "best ckpt": best,
            "eval report": report_dir / "report.md" if report_dir else None,
            "export": export_dir,
            "tensorboard": Path(cfg.paths.output_dir) / "tensorboard" if cfg.get("logger") else None,
        }
    )
    for key in ("val/f1_macro", "val/acc", "test/f1_macro", "test/acc", "test/openpack_f1_macro"):
        if key in metrics:
            log.info("%s = %.4f", key, metrics[key])
    return metrics, {"trainer": trainer, "module": module, "datamodule": datamodule, "export_dir": export_dir}


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics, _ = train(cfg)
    metric = cfg.get("optimized_metric")
    if metric and metric not in metrics:
        raise KeyError(f"optimized_metric {metric!r} was not logged; logged: {sorted(metrics)}")
    return metrics.get(metric) if metric else None


if __name__ == "__main__":
    main()
