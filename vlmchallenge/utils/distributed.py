"""One run directory for every rank of a multi-process run, whoever started the processes.

- Lightning (`trainer.devices=N`): rank 0 runs the script and Lightning starts ranks 1..N-1 with
  `hydra.run.dir=<rank 0's folder>` (`pytorch_lightning.strategies.launchers.subprocess_script`), so there is
  nothing to do here.
- torchrun or SLURM (`srun`, also under `hydra/launcher=slurm`): every rank starts the entry point itself and
  Hydra would name one timestamped folder per rank. Here the secondary ranks create no folder of their own
  (`secondary_rank_overrides`, before Hydra starts) and receive rank 0's (`share_run_dir`, through the process
  group that Lightning then reuses: it skips `init_process_group` when a group exists).
"""

from __future__ import annotations

import atexit
import os

import torch
import torch.distributed as dist
from lightning_fabric.plugins.environments import (
    ClusterEnvironment,
    SLURMEnvironment,
    TorchElasticEnvironment,
)
from omegaconf import DictConfig, open_dict


def external_environment() -> ClusterEnvironment | None:
    """The launcher that started this process as one rank of several (torchrun or SLURM), as Lightning detects
    it; None for a single process and for a run whose processes Lightning starts itself."""
    if TorchElasticEnvironment.detect():
        env: ClusterEnvironment = TorchElasticEnvironment()
    elif SLURMEnvironment.detect():
        env = SLURMEnvironment()
    else:
        return None
    return env if env.world_size() > 1 else None


def secondary_rank_overrides() -> list[str]:
    """Hydra overrides that keep a secondary rank from creating a run folder, logging file or `.hydra/` copy of
    its own (rank 0 writes those); empty on rank 0 and outside torchrun/SLURM."""
    env = external_environment()
    if env is None or env.global_rank() == 0:
        return []
    return ["hydra.run.dir=.", "hydra.output_subdir=null", "hydra/job_logging=disabled"]


def process_group_backend(trainer_cfg: DictConfig) -> str:
    """The backend Lightning would pick for this trainer: nccl on CUDA, gloo otherwise (unless the strategy
    names one)."""
    strategy = trainer_cfg.get("strategy")
    named = strategy.get("process_group_backend") if isinstance(strategy, DictConfig) else None
    if named:
        return str(named)
    on_cuda = (
        str(trainer_cfg.get("accelerator", "auto")) in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    )
    return "nccl" if on_cuda else "gloo"


def connect(env: ClusterEnvironment, backend: str) -> None:
    """Join the process group at the address, port and ranks Lightning's own connection would use (read from
    its public `ClusterEnvironment`), as Lightning's private `_init_dist_connection` does; Lightning then finds
    the group initialised and keeps it."""
    if backend == "nccl":
        torch.cuda.set_device(env.local_rank())
        atexit.register(_destroy_group)  # torch warns at exit about an NCCL group never destroyed
    os.environ["MASTER_ADDR"] = env.main_address
    os.environ["MASTER_PORT"] = str(env.main_port)
    dist.init_process_group(backend, rank=env.global_rank(), world_size=env.world_size())


def _destroy_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def share_run_dir(cfg: DictConfig) -> int:
    """Under torchrun or SLURM, set `cfg.paths.output_dir` (and so every path derived from it: checkpoints,
    logs, report, export) on all ranks to rank 0's; returns the world size (1: nothing to share)."""
    env = external_environment()
    if env is None:
        return 1
    if not dist.is_initialized():
        connect(env, process_group_backend(cfg.trainer))
    shared = [str(cfg.paths.output_dir)]
    dist.broadcast_object_list(shared, src=0)
    with open_dict(cfg):
        cfg.paths.output_dir = shared[0]
    return env.world_size()
