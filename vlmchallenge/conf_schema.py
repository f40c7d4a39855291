"""Register the structured-config schemas in Hydra's ConfigStore.

Each YAML of a group lists its `base_<group>` schema first, so a typo or a wrong type fails at startup
with the offending key, before any data or model is touched. Import this before `@hydra.main` / `compose`.
"""

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore

from vlmchallenge.data.config import DataConfig
from vlmchallenge.models.config import ModelConfig, OptimConfig


@dataclass
class LoaderConfig:
    """DataLoader settings; `batch_size` is the micro-batch (the VRAM planner may overwrite it)."""

    batch_size: int = 8
    eval_batch_size: int = 32
    num_workers: int = 1
    shuffle_buffer: int = 500
    class_balance: float = (
        0.0  # 0: natural class frequencies; 1: every class equally often (rejection sampling)
    )


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(group="data", name="base_data", node=DataConfig)
    cs.store(group="model", name="base_model", node=ModelConfig)
    cs.store(group="optim", name="base_optim", node=OptimConfig)
    cs.store(group="loader", name="base_loader", node=LoaderConfig)


register_configs()
