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


@dataclass
class VRAMConfig:
    """The VRAM planner (callback) and `python -m vlmchallenge.vram`."""

    enabled: bool = True
    budget_gib: float | None = None  # null: the GPU's free memory (no GPU and null: no planning)
    global_batch_size: int | None = None  # null: loader.batch_size x world size
    margin: float = 0.10
    text_tokens: int = 120  # offline planning only: prompt + answer tokens (a real run reads its batches)
    source_frame_size: list[int] | None = None  # offline planning: [w, h]; null = synthetic size or 1280x720
    chart: str | None = None  # offline planning: write a stacked-bar PNG of the breakdown here


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(group="data", name="base_data", node=DataConfig)
    cs.store(group="model", name="base_model", node=ModelConfig)
    cs.store(group="optim", name="base_optim", node=OptimConfig)
    cs.store(group="loader", name="base_loader", node=LoaderConfig)
    cs.store(group="vram", name="base_vram", node=VRAMConfig)


register_configs()
