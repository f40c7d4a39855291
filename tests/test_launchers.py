"""The SLURM launcher preset (what it asks SLURM for, what it gives the trainer) and a real submitit multirun on
this machine whose jobs run under SLURM's environment variables: Lightning's requeue handler writes its HPC
checkpoint into the job's run folder, and re-running the job's submission, as a requeued job does, resumes
from it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import hydra
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from tests.helpers.runs import TINY_TRAIN_OVERRIDES, build_run_inputs, compose_train

REPO = Path(__file__).resolve().parents[1]
# what srun exports to each task of a one-task job (Lightning reads these to detect SLURM)
SLURM_ENV = {
    "SLURM_NTASKS": "1",
    "SLURM_JOB_NAME": "train",
    "SLURM_JOB_ID": "4242",
    "SLURM_PROCID": "0",
    "SLURM_LOCALID": "0",
    "SLURM_NODEID": "0",
    "SLURM_NODELIST": "127.0.0.1",
}


@pytest.fixture(autouse=True)
def _clear_hydra():
    yield
    GlobalHydra.instance().clear()


def compose_slurm(tmp_path, shared_data_dir, *overrides):
    return compose_train(
        tmp_path / "run", shared_data_dir, ["hydra/launcher=slurm", *overrides], log_dir=tmp_path
    )


def test_slurm_preset_asks_for_one_task_per_gpu_and_sigusr1_before_the_limit(tmp_path, shared_data_dir):
    from submitit.slurm.slurm import SlurmExecutor, _make_sbatch_string

    cfg = compose_slurm(tmp_path, shared_data_dir, "trainer=ddp", "trainer.devices=8", "trainer.num_nodes=2")
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert (launcher["nodes"], launcher["gpus_per_node"], launcher["tasks_per_node"]) == (2, 8, 8)
    assert (launcher["timeout_min"], launcher["signal_delay_s"]) == (240, 120)
    assert cfg.trainer.num_nodes == 2 and cfg.trainer.devices == 8  # Lightning's world = SLURM's tasks

    # the sbatch file submitit writes from these parameters (its generic names mapped as the launcher does)
    names = SlurmExecutor._equivalence_dict()
    sbatch_params = {
        names.get(k, k): v
        for k, v in launcher.items()
        if v is not None and k not in ("_target_", "submitit_folder", "max_num_timeout")
    }
    text = _make_sbatch_string(command="python -m submitit.core._submit x", folder=tmp_path, **sbatch_params)
    for line in ("--nodes=2", "--ntasks-per-node=8", "--gpus-per-node=8", "--time=240", "--signal=USR1@120"):
        assert f"#SBATCH {line}" in text.splitlines(), line


@pytest.mark.parametrize("auto_requeue", [True, False])
def test_slurm_preset_gives_the_trainer_its_requeue_environment(
    tmp_path, shared_data_dir, monkeypatch, auto_requeue
):
    """The trainer uses the preset's plugin (Lightning would detect SLURM by itself, always with requeueing on:
    switching it off through the preset shows whose environment the trainer has)."""
    for key, value in SLURM_ENV.items():
        monkeypatch.setenv(key, value)
    cfg = compose_slurm(tmp_path, shared_data_dir, f"trainer.plugins.0.auto_requeue={auto_requeue}")
    trainer = hydra.utils.instantiate(cfg.trainer)
    env = trainer._accelerator_connector.cluster_environment  # what Lightning's signal connector reads
    assert type(env).__name__ == "SLURMEnvironment"
    assert env.auto_requeue is auto_requeue and env.requeue_signal == signal.SIGUSR1
    assert trainer.num_nodes == 1 and env.job_id() == 4242


def test_slurm_environment_names_a_bad_signal():
    from vlmchallenge.training.strategies import slurm_environment

    with pytest.raises(ValueError, match="requeue_signal: 'USR1' is not a signal name"):
        slurm_environment(requeue_signal="USR1")


# ---------------------------------------------------------------- a real submitit multirun

FAST = [
    *TINY_TRAIN_OVERRIDES,
    "test=false",
    "export=false",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    # what the slurm preset adds to the trainer, and SLURM's pre-timeout signal after the first step
    "+trainer.plugins=[{_target_:vlmchallenge.training.strategies.slurm_environment}]",
    "+callbacks.preempt._target_=tests.helpers.preempt.SignalAtStep",
]


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory, shared_data_dir):
    """Two jobs through `hydra/launcher=submitit_local`, with the default time-stamped sweep folder. The data
    and the tiny model are built first, as a user would before a sweep: the jobs run at once, and the second
    would wait for the first one's build (tests/test_shared_builds.py)."""
    log_dir = tmp_path_factory.mktemp("launchers")
    build_run_inputs(shared_data_dir, [], log_dir / "prep")
    cmd = [
        sys.executable,
        "-m",
        "vlmchallenge.train",
        "-m",
        "hydra/launcher=submitit_local",
        *FAST,
        f"paths.data_dir={shared_data_dir}",
        f"paths.log_dir={log_dir}",
        "optim.lr=1e-3,2e-3",
    ]
    env = {**os.environ, **SLURM_ENV}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    (sweep,) = (log_dir / "train" / "multiruns").iterdir()
    return sweep, env


def test_submitit_local_multirun_runs_both_jobs_to_their_checkpoints(local_sweep):
    sweep, _ = local_sweep
    jobs = sorted(p for p in sweep.iterdir() if p.name.isdigit())
    assert [j.name for j in jobs] == ["0", "1"]
    for job, lr in zip(jobs, ("0.001", "0.002"), strict=True):
        assert f"optim.lr={lr}" in (job / ".hydra" / "overrides.yaml").read_text()
        ckpt = torch.load(job / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
        assert ckpt["global_step"] == 2 and ckpt["hyper_parameters"]["optim"]["lr"] == float(lr)
        assert "val/f1_macro" in (job / "csv" / "metrics.csv").read_text().splitlines()[0]
        # Lightning's SIGUSR1 handler saved the state of step 1 into the run folder (its default_root_dir)
        hpc = torch.load(job / "hpc_ckpt_1.ckpt", map_location="cpu", weights_only=True)
        assert hpc["global_step"] == 1
    results = sorted(sweep.glob(".submitit/*/*_result.pkl"))
    assert len(results) == 2


def test_a_requeued_job_resumes_from_its_hpc_checkpoint(local_sweep):
    """A requeued SLURM job reruns its submitted pickle later: the pickled config keeps the resolved sweep
    time, so the job lands in the same run folder and Lightning resumes from the HPC checkpoint there."""
    sweep, env = local_sweep
    folder = next(p for p in (sweep / ".submitit").iterdir() if p.name.isdigit())
    job_id = folder.name
    env = {
        **env,
        "SUBMITIT_EXECUTOR": "local",
        "SUBMITIT_LOCAL_JOB_ID": job_id,
        "SUBMITIT_LOCAL_NTASKS": "1",
        "SUBMITIT_LOCAL_GLOBALID": "0",
        "SUBMITIT_LOCAL_LOCALID": "0",
        "SUBMITIT_LOCAL_NODEID": "0",
        "SUBMITIT_LOCAL_JOB_NUM_NODES": "1",
    }
    cmd = [sys.executable, "-u", "-m", "submitit.core._submit", str(folder)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    restored = [
        line for line in proc.stderr.splitlines() if "Restored all states from the checkpoint at" in line
    ]
    assert len(restored) == 1, proc.stderr[-4000:]
    assert restored[0].rsplit(" ", 1)[-1] in {str(sweep / n / "hpc_ckpt_1.ckpt") for n in ("0", "1")}
