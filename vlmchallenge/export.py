"""`python -m vlmchallenge.export ckpt=...`: a training checkpoint -> one export folder (see models/exporter.py).

The run's own `.hydra/config.yaml` (next to `checkpoints/`) says which base model, data and prompt were used.
"""

from __future__ import annotations

from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

import vlmchallenge.conf_schema  # noqa: F401
from vlmchallenge.models.exporter import export_model
from vlmchallenge.utils import print_locations


def load_run_config(ckpt: Path) -> DictConfig:
    run_dir = ckpt.resolve().parent.parent
    path = run_dir / ".hydra" / "config.yaml"
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found; expected the checkpoint inside <run dir>/checkpoints/")
    cfg = OmegaConf.load(path)
    cfg.paths.output_dir = str(run_dir)  # was ${hydra:runtime.output_dir}
    OmegaConf.resolve(cfg)
    return cfg


def export_checkpoint(ckpt: str | Path, out_dir: str | Path | None = None) -> Path:
    from vlmchallenge.train import build_components

    ckpt = Path(ckpt)
    if not ckpt.is_file():
        raise FileNotFoundError(f"{ckpt}: checkpoint not found")
    cfg = load_run_config(ckpt)
    data, model_cfg, pretrained, processor, prompt, _, module = build_components(cfg)
    module.configure_model()
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    result = module.load_state_dict(state, strict=False)
    trainable = {f"model.{n}" for n, p in module.model.named_parameters() if p.requires_grad}
    missing = sorted(trainable & set(result.missing_keys))
    if missing:
        raise ValueError(
            f"{ckpt}: lacks {len(missing)} trainable tensors (e.g. {missing[0]}); not from this run?"
        )
    target = Path(out_dir) if out_dir else ckpt.resolve().parent.parent / "export"
    return export_model(module.model, processor, model_cfg, pretrained, data, prompt, target)


@hydra.main(version_base="1.3", config_path="../conf", config_name="export")
def main(cfg: DictConfig) -> None:
    out = export_checkpoint(cfg.ckpt, cfg.out_dir)
    print_locations({"export": out})


if __name__ == "__main__":
    main()
