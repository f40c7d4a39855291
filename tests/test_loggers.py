"""Logger presets: CSV, TensorBoard, MLflow (a local file store) and Weights & Biases (offline) are composed in
one list by `logger=many_loggers`; each writes its run under the run folder and nothing leaves the machine."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

import vlmchallenge.conf_schema  # noqa: F401
from tests.helpers.runs import CONF_DIR
from vlmchallenge.utils.instantiators import instantiate_loggers


@pytest.fixture
def many_loggers(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["logger=many_loggers", f"paths.output_dir={tmp_path}"])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
    loggers = instantiate_loggers(cfg.logger)
    yield loggers
    for lg in loggers:
        lg.finalize("success")


def test_many_loggers_log_locally_to_every_backend(many_loggers, tmp_path):
    names = sorted(type(lg).__name__ for lg in many_loggers)
    assert names == ["CSVLogger", "MLFlowLogger", "TensorBoardLogger", "WandbLogger"]
    for lg in many_loggers:
        lg.log_hyperparams({"lr": 1e-3})
        lg.log_metrics({"val/f1_macro": 0.5}, step=1)
    for lg in many_loggers:
        lg.save()
    assert (tmp_path / "csv" / "metrics.csv").read_text().count("val/f1_macro") == 1
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    mlflow = next(lg for lg in many_loggers if type(lg).__name__ == "MLFlowLogger")
    history = mlflow.experiment.get_metric_history(mlflow.run_id, "val/f1_macro")
    assert [m.value for m in history] == [0.5] and (tmp_path / "mlflow.db").is_file()
    wandb = next(lg for lg in many_loggers if type(lg).__name__ == "WandbLogger")
    assert wandb.experiment.settings.mode in ("offline", "dryrun")  # wandb names offline mode "dryrun"
    assert list(tmp_path.rglob("offline-run-*"))
