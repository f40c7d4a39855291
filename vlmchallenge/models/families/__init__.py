"""The model families we fine-tune, and how a checkpoint finds its own (docs/families.md).

`family_of(config)` maps a checkpoint's `config.model_type` to its `Family`; `family_named(name)` looks one up by
the name used in configs (`model.tiny.family`). The tiny builders live with their families.
"""

from __future__ import annotations

import functools
from pathlib import Path

from vlmchallenge.models.families.base import (
    Family,
    LigerPatch,
    PixelBudget,
    QLoraPolicy,
    TimeEncoding,
    VideoGeometry,
)
from vlmchallenge.models.families.internvl import INTERNVL
from vlmchallenge.models.families.qwen2_vl import QWEN2_5_VL, QWEN2_VL
from vlmchallenge.models.families.qwen3_5 import QWEN3_5
from vlmchallenge.models.families.qwen3_vl import QWEN3_VL
from vlmchallenge.models.families.tiny_build import ensure_built
from vlmchallenge.models.families.tiny_spec import DEFAULT_TINY_FAMILY, TinyModelSpec

FAMILIES: dict[str, Family] = {f.name: f for f in (QWEN2_VL, QWEN2_5_VL, QWEN3_VL, QWEN3_5, INTERNVL)}
_BY_MODEL_TYPE = {t: f for f in FAMILIES.values() for t in f.model_types}

__all__ = [
    "DEFAULT_TINY_FAMILY",
    "FAMILIES",
    "Family",
    "LigerPatch",
    "PixelBudget",
    "QLoraPolicy",
    "TimeEncoding",
    "TinyModelSpec",
    "VideoGeometry",
    "ensure_tiny",
    "family_named",
    "family_of",
    "tiny_folder",
]


def family_named(name: str, field: str = "family") -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(
            f"{field}: unknown model family {name!r}; expected one of {sorted(FAMILIES)}"
        ) from None


def family_of(config, where: str = "the checkpoint") -> Family:
    """The family of a transformers config (its `model_type`), or a clear error naming what we support."""
    model_type = getattr(config, "model_type", None)
    if model_type not in _BY_MODEL_TYPE:
        raise ValueError(
            f"{where}: model_type {model_type!r} is not a supported family; supported model types: "
            f"{sorted(_BY_MODEL_TYPE)} (docs/families.md)"
        )
    return _BY_MODEL_TYPE[model_type]


@functools.cache
def builder_source() -> str:
    """The source of every tiny builder (this package): a change to a corpus, a template or a config rebuilds
    the tiny models instead of reusing a folder made by other code."""
    package = Path(__file__).parent
    return "".join(p.read_text() for p in sorted(package.glob("*.py")))


def tiny_folder(spec: TinyModelSpec, cache_dir: str | Path) -> Path:
    """Where the tiny model of `spec` lives: keyed by its family and a hash of the spec and the builders."""
    family = family_named(spec.family, "model.tiny.family")
    return Path(cache_dir) / f"tiny_{family.name}-{spec.fingerprint(builder_source())}"


def ensure_tiny(spec: TinyModelSpec, cache_dir: str | Path) -> Path:
    """The tiny model's folder under `cache_dir`, built on first use by its family's builder."""
    family = family_named(spec.family, "model.tiny.family")
    return ensure_built(tiny_folder(spec, cache_dir), lambda out: family.build_tiny(spec, out))
