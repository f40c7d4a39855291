"""Instantiate the `callbacks:` / `logger:` dicts of `_target_` nodes (lightning-hydra-template style)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig


def _instantiate_all(cfg: DictConfig | None, what: str) -> list:
    if not cfg:
        return []
    if not isinstance(cfg, DictConfig):
        raise TypeError(f"{what} config must be a dict of named `_target_` nodes")
    return [
        hydra.utils.instantiate(node)
        for node in cfg.values()
        if isinstance(node, DictConfig) and "_target_" in node
    ]


def instantiate_callbacks(cfg: DictConfig | None) -> list:
    return _instantiate_all(cfg, "callbacks")


def instantiate_loggers(cfg: DictConfig | None) -> list:
    return _instantiate_all(cfg, "logger")
