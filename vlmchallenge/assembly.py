"""The one place a run is put together: typed settings -> the `Components` of one stage.

Settings come from a composed Hydra config (`settings_from_config`), from a checkpoint alone
(`settings_from_checkpoint`: the module and datamodule saved their hyperparameters in it) or from an export
folder (`settings_from_export`). The stage is chosen when the objects are built, never by changing them
afterwards: `fit` builds a training collator, an optimizer config, the configured callbacks, loggers and trainer;
`evaluate` a test split, a test mode and a plain single-device trainer; `export` no trainer at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_info

from vlmchallenge.conf_schema import as_dataclass
from vlmchallenge.data.config import DataConfig
from vlmchallenge.models.availability import check_model_available
from vlmchallenge.models.collator import PromptCollator, TrainCollator
from vlmchallenge.models.config import LoraSettings, ModelConfig, OptimConfig
from vlmchallenge.models.export_meta import ExportMeta
from vlmchallenge.models.families import Family
from vlmchallenge.models.loader import load_processor, model_family, resolve_pretrained
from vlmchallenge.models.prompt import PromptBuilder, operation_names
from vlmchallenge.training.checkpoint_io import with_atomic_checkpoints
from vlmchallenge.training.config import DataLoaderConfig
from vlmchallenge.training.datamodule import ShardDataModule
from vlmchallenge.training.module import VLMClassifier
from vlmchallenge.training.random_state import RandomStateCheckpoint
from vlmchallenge.training.strategies import deepspeed_stage, strategy_kind
from vlmchallenge.utils.input_errors import EmptySplitError
from vlmchallenge.utils.instantiators import instantiate_callbacks, instantiate_loggers

STAGES = ("fit", "evaluate", "export")
# the config groups a checkpoint's own settings can be overridden in (`evaluate ckpt=... data.root=...`)
SETTING_GROUPS = ("data", "dataloader", "model", "optim")


@dataclass
class RunSettings:
    """The typed part of a run: what its datamodule and module are built from."""

    data: DataConfig
    model: ModelConfig
    data_dir: str | None  # `paths.data_dir`; None for a stage that reads no data (export)
    dataloader: DataLoaderConfig = field(default_factory=DataLoaderConfig)
    optim: OptimConfig | None = None
    seed: int = 0
    prompt: PromptBuilder | None = None  # null: the OpenPack operations (+ Null when clips keep it)

    def validate(self) -> None:
        self.data.validate()
        self.model.validate()
        self.dataloader.validate()

    def class_prompt(self, family: Family) -> PromptBuilder:
        """The saved prompt, or the OpenPack operations; rendered with the family's chat-template arguments."""
        prompt = self.prompt or PromptBuilder(operation_names(include_null=self.data.clips.keep_null))
        return replace(prompt, template_kwargs=dict(family.chat_template_kwargs))


def settings_from_config(cfg: DictConfig) -> RunSettings:
    return RunSettings(
        data=as_dataclass(DataConfig, cfg.data),
        model=as_dataclass(ModelConfig, cfg.model),
        dataloader=as_dataclass(DataLoaderConfig, cfg.dataloader),
        optim=as_dataclass(OptimConfig, cfg.optim) if "optim" in cfg else None,
        seed=int(cfg.seed),
        data_dir=str(cfg.paths.data_dir),
    )


def load_checkpoint(path: str | Path) -> dict:
    """A training checkpoint's contents (tensors and plain values only: `weights_only` loading)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    return torch.load(path, map_location="cpu", weights_only=True)


def settings_from_checkpoint(
    path: str | Path, data_dir: str | None, overrides: list[str] = (), ckpt: dict | None = None
) -> RunSettings:
    """A checkpoint's own settings (saved by the module and the datamodule), with `group.key=value` overrides
    of the groups in `SETTING_GROUPS` applied on top. Pass `ckpt` when the caller has loaded it already."""
    ckpt = load_checkpoint(path) if ckpt is None else ckpt
    module, datamodule = ckpt.get("hyper_parameters"), ckpt.get("datamodule_hyper_parameters")
    if not module or not datamodule:
        raise ValueError(f"{path}: no saved hyperparameters; not a vlmchallenge training checkpoint")
    saved = OmegaConf.create(
        {
            "data": datamodule["data"],
            "dataloader": datamodule["dataloader"],
            "model": module["model"],
            "optim": module["optim"],
        }
    )
    wanted = [o.lstrip("+") for o in overrides if o.lstrip("+").split(".", 1)[0] in SETTING_GROUPS]
    merged = OmegaConf.merge(saved, OmegaConf.from_dotlist(wanted))
    return RunSettings(
        data=as_dataclass(DataConfig, merged.data),
        model=as_dataclass(ModelConfig, merged.model),
        dataloader=as_dataclass(DataLoaderConfig, merged.dataloader),
        optim=as_dataclass(OptimConfig, merged.optim) if merged.optim is not None else None,
        seed=int(datamodule["seed"]),
        data_dir=data_dir,
        prompt=PromptBuilder(**module["prompt"]),
    )


SAMPLER_KEYS = ("num_frames", "max_pixels", "min_pixels", "crop_top", "strategy", "patch_factor")


def settings_from_export(export_dir: str | Path, cfg: DictConfig) -> RunSettings:
    """Evaluate an export folder on the data of `cfg` (an evaluation config: data, dataloader, seed, paths):
    the merged model, its prompt, and a check that the data is sampled as in training."""
    meta = ExportMeta.read(export_dir)
    data = as_dataclass(DataConfig, cfg.data)
    trained = {k: getattr(meta.sampler, k) for k in SAMPLER_KEYS}
    used = {k: getattr(data.sampler, k) for k in SAMPLER_KEYS}
    if trained != used:
        raise ValueError(
            f"the model was trained with sampler settings {trained} but data.sampler is {used}; "
            "evaluate on shards made with the training settings"
        )
    return RunSettings(
        data=data,
        model=ModelConfig(pretrained=str(export_dir), lora=LoraSettings(enabled=False)),
        dataloader=as_dataclass(DataLoaderConfig, cfg.dataloader),
        seed=int(cfg.seed),
        data_dir=str(cfg.paths.data_dir),
        prompt=meta.prompt,
    )


FSDP_PARAM_DTYPES = {
    "bf16": "bfloat16",
    "16": "float16",
    "32": "float32",
}  # trainer.precision prefix -> dtype


def check_strategy(settings: RunSettings, trainer: DictConfig | None) -> None:
    """Refuse strategy/model combinations that cannot train, before anything is loaded; under FSDP store 4-bit
    weights in the compute dtype (docs/scaling.md §3)."""
    strategy = trainer.get("strategy") if trainer is not None else None
    kind, q = strategy_kind(strategy), settings.model.quantization
    if kind == "deepspeed" and q.enabled and deepspeed_stage(strategy) == 3:
        raise ValueError(
            "trainer.strategy: DeepSpeed ZeRO-3 cannot partition bitsandbytes 4-bit weights "
            "(model.quantization.enabled=true; https://github.com/huggingface/peft/issues/2014). Use trainer=ddp, "
            "trainer=deepspeed_zero2, or trainer=fsdp (4-bit weights stored in the compute dtype)"
        )
    if kind != "fsdp":
        return
    if trainer.get("accelerator") == "cpu":
        raise ValueError(
            "trainer=fsdp needs CUDA devices (torch's FSDP has no CPU backend) but trainer.accelerator=cpu; "
            "use trainer=ddp on CPU"
        )
    if not q.enabled:
        return
    if q.quant_storage is None:
        q.quant_storage = q.compute_dtype
    # Lightning's FSDP precision casts every block to this dtype; a cast of the packed 4-bit storage corrupts it
    precision = str(trainer.get("precision", "32-true"))
    cast_to = FSDP_PARAM_DTYPES.get(precision.split("-")[0], q.quant_storage)
    if not q.quant_storage == q.compute_dtype == settings.model.dtype == cast_to:
        raise ValueError(
            "FSDP with a 4-bit base shards each block as one tensor of one dtype: model.dtype, "
            "model.quantization.compute_dtype, model.quantization.quant_storage and the dtype of "
            f"trainer.precision must match, got {settings.model.dtype}, {q.compute_dtype}, {q.quant_storage} "
            f"and {cast_to} ({precision})"
        )


def check_family(settings: RunSettings, family: Family, trainer: DictConfig | None = None) -> None:
    """What the model family requires of the run, checked before any weights load: its QLoRA policy, frames
    cut on its token grid (a 28-px grid under a 32-px family would be resized again by the processor), and,
    under FSDP without an explicit `trainer.strategy.wrap`, the family's blocks to wrap."""
    settings.model.check_family(family)
    strategy = trainer.get("strategy") if trainer is not None else None
    if strategy_kind(strategy) == "fsdp" and strategy.get("wrap") is None:
        strategy.wrap = family.fsdp_wrap_paths()  # the blocks transformers never splits, of this family
    grid = family.geometry.grid_px
    if family.geometry.keeps_sampled_size and settings.data.sampler.patch_factor != grid:
        raise ValueError(
            f"data.sampler.patch_factor={settings.data.sampler.patch_factor}, but {family} cuts frames into "
            f"{grid}-px tokens (patch {family.geometry.patch} x merge {family.geometry.merge}): set "
            f"data.sampler.patch_factor={grid} (and prepare shards with it)"
        )


@dataclass
class Components:
    settings: RunSettings
    stage: str
    processor: Any
    prompt: PromptBuilder
    datamodule: ShardDataModule | None  # None for export, which reads no data
    module: VLMClassifier
    callbacks: list = field(default_factory=list)
    loggers: list = field(default_factory=list)
    trainer: pl.Trainer | None = None


def stage_datamodule(
    settings: RunSettings, stage: str, processor, prompt: PromptBuilder, test_split: str
) -> ShardDataModule:
    """The shards a stage reads, batched for it (the training collator only when fitting)."""
    if settings.data_dir is None:
        raise ValueError(f"the {stage} stage reads data: its settings need a data_dir (paths.data_dir)")
    return ShardDataModule(
        settings.data,
        settings.dataloader,
        settings.data_dir,
        seed=settings.seed,
        test_split=test_split,
        train_collate=TrainCollator(processor, prompt) if stage == "fit" else None,
        eval_collate=PromptCollator(processor, prompt),
    )


def assemble(
    settings: RunSettings,
    stage: str,
    *,
    trainer: DictConfig | None = None,
    callbacks: DictConfig | None = None,
    loggers: DictConfig | None = None,
    test_split: str = "test",
    test_mode: str = "score",
) -> Components:
    """Build every object of `stage` (no weights are loaded: Lightning calls `configure_model`).

    fit: `trainer`, `callbacks` and `loggers` are the run config's nodes (no `trainer`: no trainer is built, for
    code that drives the module itself); exact resume is not optional, so the RNG-state callback is always added. evaluate: `test_split` and `test_mode` pick what the test stage does.
    """
    if stage not in STAGES:
        raise ValueError(f"stage: expected one of {STAGES}, got {stage!r}")
    settings.validate()
    if stage == "fit" and settings.optim is None:
        raise ValueError("the fit stage needs optimizer settings (optim)")
    if stage == "fit":
        check_strategy(settings, trainer)
        if not settings.data.splits.train:
            raise EmptySplitError("data.splits.train is empty: list at least one training user in it")
    # before any data work: a model that cannot be had fails now (docs/reliability-inputs.md §2)
    rank_zero_info(f"model: {check_model_available(settings.model)}")
    family = model_family(settings.model)
    check_family(settings, family, trainer)
    processor = load_processor(resolve_pretrained(settings.model), settings.data.sampler, family)
    prompt = settings.class_prompt(family)
    datamodule = (
        None if stage == "export" else stage_datamodule(settings, stage, processor, prompt, test_split)
    )
    module = VLMClassifier(
        settings.model,
        family,
        prompt,
        processor.tokenizer,
        optim=settings.optim if stage == "fit" else None,
        test_mode=test_mode,
    )
    parts = Components(settings, stage, processor, prompt, datamodule, module)
    if stage == "fit" and trainer is not None:
        parts.callbacks = [*instantiate_callbacks(callbacks), RandomStateCheckpoint()]
        parts.loggers = instantiate_loggers(loggers)
        plugins = with_atomic_checkpoints(  # docs/reliability-training.md §2
            hydra.utils.instantiate(trainer.get("plugins")), strategy_kind(trainer.get("strategy"))
        )
        parts.trainer = hydra.utils.instantiate(
            trainer, callbacks=parts.callbacks, logger=parts.loggers, plugins=plugins
        )
    elif stage == "evaluate":
        parts.trainer = pl.Trainer(accelerator="auto", devices=1, logger=False, enable_checkpointing=False)
    return parts
