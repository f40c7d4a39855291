"""Register the structured-config schemas in Hydra's ConfigStore.

Each YAML of a group lists its `base_<group>` schema first, so a typo or a wrong type fails at startup
with the offending key, before any data or model is touched. Import this before `@hydra.main` / `compose`.
"""

from hydra.core.config_store import ConfigStore

from vlmchallenge.data.config import DataConfig


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(group="data", name="base_data", node=DataConfig)


register_configs()
