"""Hydra multirun from the command line: a grid sweep and an Optuna search, each job a real tiny training run."""

from __future__ import annotations

import yaml

from tests.helpers.in_process import run_module
from tests.helpers.runs import TINY_TRAIN_OVERRIDES

FAST = [o for o in TINY_TRAIN_OVERRIDES] + [
    "export=false",
    "test=false",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
]


def run_cli(tmp_path, data_dir, *args):
    cmd = [
        "vlmchallenge.train",
        *args,
        *FAST,
        f"paths.data_dir={data_dir}",
        f"paths.log_dir={tmp_path}",
        f"hydra.sweep.dir={tmp_path}/sweep",
    ]
    proc = run_module(*cmd)
    assert proc.returncode == 0, proc.output[-4000:]
    return proc


def test_grid_sweep_runs_one_job_per_value(tmp_path, shared_data_dir):
    run_cli(tmp_path, shared_data_dir, "-m", "model.lora.r=4,8")
    jobs = sorted((tmp_path / "sweep").glob("[0-9]*"))
    assert [j.name for j in jobs] == ["0", "1"]
    ranks = [yaml.safe_load((j / ".hydra" / "overrides.yaml").read_text()) for j in jobs]
    assert ["model.lora.r=4" in r for r in ranks] == [True, False] and "model.lora.r=8" in ranks[1]
    assert all((j / "checkpoints" / "last.ckpt").exists() for j in jobs)


def test_optuna_search_runs_trials_and_reports_the_best(tmp_path, shared_data_dir):
    run_cli(
        tmp_path,
        shared_data_dir,
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.sampler.n_startup_trials=2",
    )
    result = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    assert result["name"] == "optuna" and "best_value" in result
    assert len(list((tmp_path / "sweep").glob("[0-9]*"))) == 2
