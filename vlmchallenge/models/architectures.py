"""Model configs for VRAM planning without downloading weights.

The presets ship as config values (architectures/*.json, each with its `_source`; docs/vram.md §2, docs/families.md); a local
folder or the tiny model's cache folder is read with `AutoConfig`; any other hub id falls back to `AutoConfig`
(a config file only, and only because the user named that id).
"""

from __future__ import annotations

import json
from pathlib import Path

from vlmchallenge.models.config import ModelConfig

ARCH_DIR = Path(__file__).with_name("architectures")


def shipped_config(hub_id: str):
    from transformers import CONFIG_MAPPING

    path = ARCH_DIR / (hub_id.replace("/", "--") + ".json")
    if not path.exists():
        return None
    values = json.loads(path.read_text())
    values.pop("_source", None)
    return CONFIG_MAPPING[values.pop("model_type")](**values)


def model_config_for(cfg: ModelConfig):
    from transformers import AutoConfig

    from vlmchallenge.models.loader import resolve_pretrained

    if cfg.tiny is None and cfg.pretrained and not Path(cfg.pretrained).is_dir():
        shipped = shipped_config(cfg.pretrained)
        if shipped is not None:
            return shipped
    path = resolve_pretrained(cfg)
    return AutoConfig.from_pretrained(path, local_files_only=Path(path).is_dir())
