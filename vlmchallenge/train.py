"""`python -m vlmchallenge.train`: prepare shards if missing, train, validate, test, export; returns the metric.

python -m vlmchallenge.train                                   # tiny model + synthetic data on CPU
python -m vlmchallenge.train +experiment=tiny_qlora_cpu        # 4-bit QLoRA on CPU
python -m vlmchallenge.train -m model.lora.r=4,8               # a sweep
python -m vlmchallenge.train ckpt_path=last                    # resume the newest run
torchrun --nproc_per_node=2 -m vlmchallenge.train trainer=ddp trainer.devices=2   # one run folder for all ranks
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

import vlmchallenge.conf_schema  # noqa: F401  (registers the structured-config schemas)
from vlmchallenge.utils.cli import accept_plus_experiment, quiet_secondary_ranks
from vlmchallenge.workflows import train


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = train(cfg).metrics
    metric = cfg.get("optimized_metric")
    if metric and metric not in metrics:
        raise KeyError(f"optimized_metric {metric!r} was not logged; logged: {sorted(metrics)}")
    return metrics.get(metric) if metric else None


if __name__ == "__main__":
    accept_plus_experiment()
    quiet_secondary_ranks()
    main()
