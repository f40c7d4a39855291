"""`python -m vlmchallenge.prepare`: raw OpenPack (or the synthetic default) -> WebDataset shards per split.

python -m vlmchallenge.prepare                                   # every session: shards, indexes, manifest
python -m vlmchallenge.prepare data.shard_of=0/4                 # job 0 of 4: its sessions' shards only
python -m vlmchallenge.prepare merge=true                        # then, once: indexes + manifest
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

import vlmchallenge.conf_schema  # noqa: F401  (registers the structured-config schemas)
from vlmchallenge.data_workflows import prepare


@hydra.main(version_base="1.3", config_path="../conf", config_name="prepare")
def main(cfg: DictConfig) -> None:
    prepare(cfg)


if __name__ == "__main__":
    main()
