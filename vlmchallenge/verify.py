"""`python -m vlmchallenge.verify [shards=<folder>]`: every shard against its split index (size, sha256, sample
count). Names the bad shards and exits 1 when any is bad, 0 otherwise."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

import vlmchallenge.conf_schema  # noqa: F401  (registers the structured-config schemas)
from vlmchallenge.data_workflows import verify


@hydra.main(version_base="1.3", config_path="../conf", config_name="verify")
def main(cfg: DictConfig) -> None:
    if not verify(cfg).ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
