"""`python -m vlmchallenge.evaluate`: a checkpoint or an export folder -> report.json/.md, predictions.csv,
figures and the OpenPack submission, in the run's output folder."""

from __future__ import annotations

import json
from pathlib import Path

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

import vlmchallenge.conf_schema  # noqa: F401
from vlmchallenge.data.config import DataConfig
from vlmchallenge.data.datamodule import ShardDataModule
from vlmchallenge.evaluation.report import build_report
from vlmchallenge.models.collator import PromptCollator
from vlmchallenge.models.config import LoraSettings, ModelConfig, OptimConfig
from vlmchallenge.models.exporter import EXPORT_META
from vlmchallenge.models.loader import load_processor
from vlmchallenge.models.prompt import PromptBuilder
from vlmchallenge.models.vlm_module import VLMClassifier
from vlmchallenge.utils import print_locations


def module_from_export(export_dir: Path, data: DataConfig, cfg: DictConfig):
    meta_path = export_dir / EXPORT_META
    if not meta_path.exists():
        raise FileNotFoundError(
            f"{meta_path}: not an export folder of vlmchallenge (python -m vlmchallenge.export)"
        )
    meta = json.loads(meta_path.read_text())
    trained = {
        k: meta["sampler"][k] for k in ("num_frames", "max_pixels", "min_pixels", "crop_top", "strategy")
    }
    used = {k: getattr(data.sampler, k) for k in trained}
    if trained != used:
        raise ValueError(
            f"the model was trained with sampler settings {trained} but data.sampler is {used}; "
            "evaluate on shards made with the training settings"
        )
    processor = load_processor(str(export_dir), data.sampler)
    prompt = PromptBuilder(**meta["prompt"])
    model_cfg = ModelConfig(pretrained=str(export_dir), lora=LoraSettings(enabled=False))
    module = VLMClassifier(model_cfg, OptimConfig(), str(export_dir), prompt, processor.tokenizer)
    return module, processor, prompt


def evaluate(cfg: DictConfig) -> dict:
    from vlmchallenge.export import load_run_config
    from vlmchallenge.train import build_components, typed

    pl.seed_everything(cfg.seed)
    if bool(cfg.ckpt) == bool(cfg.export_dir):
        raise ValueError("set exactly one of ckpt=<checkpoint> and export_dir=<export folder>")
    if cfg.ckpt:
        run_cfg = load_run_config(Path(cfg.ckpt))
        data, _, _, processor, prompt, datamodule, module = build_components(run_cfg)
        ckpt = cfg.ckpt
    else:
        data = typed(DataConfig, cfg.data)
        module, processor, prompt = module_from_export(Path(cfg.export_dir), data, cfg)
        datamodule = ShardDataModule(
            data,
            cfg.paths.data_dir,
            eval_collate=PromptCollator(processor, prompt),
            seed=cfg.seed,
            **OmegaConf.to_container(cfg.loader),
        )
        ckpt = None
    datamodule.test_split = cfg.split
    module.eval_mode = cfg.mode
    trainer = pl.Trainer(accelerator="auto", devices=1, logger=False, enable_checkpointing=False)
    trainer.test(module, datamodule=datamodule, ckpt_path=ckpt)
    out = Path(cfg.paths.output_dir)
    report = build_report(
        module.test_predictions,
        prompt.class_names,
        data,
        out,
        cfg.mode,
        {"source": str(cfg.ckpt or cfg.export_dir), "split": cfg.split},
        cfg.null_handling,
    )
    print_locations({"report": out / "report.md", "submission": out / "submission.zip"})
    print(
        f"OpenPack macro-F1 (1 s): {report['openpack_official']['f1_macro']:.4f}; "
        f"clip macro-F1: {report['clip_metrics']['f1_macro']:.4f}"
    )
    return report


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
def main(cfg: DictConfig) -> float:
    return evaluate(cfg)["openpack_official"]["f1_macro"]


if __name__ == "__main__":
    main()
