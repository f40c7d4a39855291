"""Register the structured-config schemas in Hydra's ConfigStore.

The dataclasses are the one source of every default: each YAML of a group lists its `base_<group>` schema
first and then holds only what differs, so a typo or a wrong type fails at startup with the offending key,
before any data or model is touched. Import this before `@hydra.main` / `compose`.
"""

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from vlmchallenge.data.config import DataConfig
from vlmchallenge.models.config import ModelConfig, OptimConfig
from vlmchallenge.training.config import DataLoaderConfig, VRAMConfig


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(group="data", name="base_data", node=DataConfig)
    cs.store(group="model", name="base_model", node=ModelConfig)
    cs.store(group="optim", name="base_optim", node=OptimConfig)
    cs.store(group="dataloader", name="base_dataloader", node=DataLoaderConfig)
    cs.store(group="vram", name="base_vram", node=VRAMConfig)


def as_dataclass(schema, node):
    """A config node as its dataclass: interpolations resolved, validated against the schema. Works for
    composed configs and for plain dicts (a checkpoint's hyperparameters)."""
    if OmegaConf.is_config(node):
        node = OmegaConf.to_container(node, resolve=True)  # interpolations resolve against the whole config
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), node))


register_configs()
