"""Real multi-process training on this machine: DDP over gloo, started by Lightning and by torchrun.

One chain of short runs (module fixture) covers what a user scaling out relies on:
2 ranks (Lightning's launcher) -> resumed on 1 rank -> resumed on 2 ranks under torchrun.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers.runs import (
    TINY_TRAIN_OVERRIDES,
    build_run_inputs,
    compose_evaluate,
    compose_train,
    data_overrides,
)

REPO = Path(__file__).resolve().parents[1]
DDP = [
    *TINY_TRAIN_OVERRIDES,
    "trainer=ddp",
    "trainer.accelerator=cpu",
    "trainer.devices=2",
    "trainer.precision=32",
    # several test shards, so both ranks have some and the split across ranks is exercised
    "data.shards.maxcount=8",
    "+callbacks.batch_digests._target_=tests.helpers.recorders.TrainBatchDigests",
]
SUMMARY_LINES = ("Outputs", "test/acc = ", "run dir ")


def run_dirs(log_dir: Path) -> list[Path]:
    return sorted((log_dir / "train" / "runs").glob("*"))


def launch(cmd: list[str], log_dir: Path, data_dir: Path, *overrides: str, meanwhile=None) -> str:
    """Runs the training command to its end and returns its output; `meanwhile()` runs here while it starts."""
    full = [*cmd, "-m", "vlmchallenge.train", *DDP, f"paths.log_dir={log_dir}", f"paths.data_dir={data_dir}"]
    full.append(
        "+callbacks.export_recorder._target_=tests.helpers.recorders.ExportRecorder"
    )  # subprocesses only
    proc = subprocess.Popen(
        [*full, *overrides], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        if meanwhile is not None:
            meanwhile()
        out, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out[-8000:]
    return out


def predictions(run: Path) -> list[dict]:
    with open(run / "eval" / "predictions.csv") as f:
        return list(csv.DictReader(f))


def split_size(data_dir: Path, split: str) -> int:
    (manifest,) = (data_dir / "shards").glob("*/manifest.json")
    return json.loads(manifest.read_text())["splits"][split]["nsamples"]


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    data_dir = root / "data"
    # the data and the tiny model are built here while rank 0 imports the stack (seconds on one core): it finds
    # them complete, or waits for them under their build locks, and keeps them (tests/test_shared_builds.py)
    build = lambda: build_run_inputs(data_dir, data_overrides(DDP), root / "prep")  # noqa: E731
    two = launch([sys.executable], root / "two", data_dir, "trainer.max_epochs=1", meanwhile=build)
    return root, data_dir, two


def test_two_ranks_score_each_test_clip_once_and_write_one_report(chain):
    root, data_dir, printed = chain  # both ranks write to the same pipe (Lightning starts rank 1 with it)
    (run,) = run_dirs(root / "two")  # one run folder for both ranks
    rows = predictions(run)
    keys = [r["key"] for r in rows]
    assert len(keys) == len(set(keys)) == split_size(data_dir, "test")
    # more than one test shard, so the ranks really did split them
    (index,) = (data_dir / "shards").glob("*/test/shardindex.json")
    assert len(json.loads(index.read_text())["shardlist"]) >= 2
    assert (run / "export" / "vlmchallenge.json").exists()
    assert [p.name for p in run.glob("exported_by_rank*")] == ["exported_by_rank0"]  # rank 1 does not export
    for line in SUMMARY_LINES:  # rank 0 prints the summary, rank 1 nothing
        assert printed.count(line) == 1, line


def test_two_rank_metrics_equal_a_one_process_evaluation(chain, tmp_path):
    from vlmchallenge.workflows import evaluate

    root, data_dir, _ = chain
    (run,) = run_dirs(root / "two")
    ddp_report = json.loads((run / "eval" / "report.json").read_text())
    (ckpt,) = (run / "checkpoints").glob("epoch_*.ckpt")
    cfg = compose_evaluate(tmp_path / "eval", [f"ckpt={ckpt}", f"paths.data_dir={data_dir}"])
    single = evaluate(cfg, overrides=data_overrides(DDP))
    for key, value in single["clip_metrics"].items():
        assert ddp_report["clip_metrics"][key] == pytest.approx(value, abs=1e-6), key
    assert ddp_report["openpack_official"]["f1_macro"] == pytest.approx(
        single["openpack_official"]["f1_macro"], abs=1e-6
    )
    one = {r["key"]: r for r in predictions(tmp_path)}  # the evaluation wrote tmp_path/eval
    for row in predictions(run):
        probs = [float(v) for k, v in row.items() if k.startswith("p_")]
        assert probs == pytest.approx(
            [float(v) for k, v in one[row["key"]].items() if k.startswith("p_")], abs=1e-5
        )


def test_the_two_ranks_train_on_different_samples(chain):
    root, _, _ = chain
    (run,) = run_dirs(root / "two")
    rank0, rank1 = (json.loads((run / f"train_batches.rank{r}.json").read_text()) for r in (0, 1))
    assert len(rank0) == len(rank1) == 4  # limit_train_batches, the same on every rank
    assert not set(rank0) & set(rank1), "a batch was drawn identically by both ranks"


def test_resume_two_ranks_on_one_then_one_on_two_under_torchrun(chain, tmp_path):
    """A 2-rank checkpoint resumes on 1 process; that run's checkpoint resumes on 2 torchrun processes, which
    share one run folder named by rank 0; only rank 0 prints, writes the report and exports."""
    from hydra.core.global_hydra import GlobalHydra

    from vlmchallenge.workflows import train

    root, data_dir, _ = chain
    (two,) = run_dirs(root / "two")
    one_dir = tmp_path / "one" / "train" / "runs" / "resumed"
    cfg = compose_train(
        one_dir,
        data_dir,
        [
            *DDP[len(TINY_TRAIN_OVERRIDES) :],
            "trainer.devices=1",
            "trainer.max_epochs=2",
            "export=false",
            f"ckpt_path={two / 'checkpoints' / 'last.ckpt'}",
        ],
        log_dir=tmp_path / "one",
    )
    try:
        resumed = train(cfg)
    finally:
        GlobalHydra.instance().clear()
    assert resumed.components.trainer.world_size == 1
    assert resumed.components.trainer.global_step == 8  # 4 steps on 2 ranks, then 4 more on 1
    one_ckpt = one_dir / "checkpoints" / "last.ckpt"
    source, one = (torch.load(p, weights_only=True) for p in (two / "checkpoints" / "last.ckpt", one_ckpt))
    assert one["epoch"] == 1
    # the optimizer went on from the 2-rank state (AdamW's per-tensor step counter 4 -> 8), not from scratch
    assert {float(s["step"]) for s in source["optimizer_states"][0]["state"].values()} == {4.0}
    assert {float(s["step"]) for s in one["optimizer_states"][0]["state"].values()} == {8.0}
    # it trained from the 2-rank weights: they moved, and its validation rows continue at epoch 1
    assert source["state_dict"].keys() == one["state_dict"].keys()
    assert any(not torch.equal(source["state_dict"][k], one["state_dict"][k]) for k in one["state_dict"])
    with open(next(one_dir.rglob("metrics.csv"))) as f:
        val_epochs = {int(r["epoch"]) for r in csv.DictReader(f) if r.get("val/f1_macro")}
    assert val_epochs == {1}

    logs = tmp_path / "torchrun-logs"
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",  # torchrun binds its own free port: no probe-then-bind race with other processes
        "--nproc_per_node=2",
        f"--log_dir={logs}",
        "--redirects=3",  # each rank's stdout/stderr in its own file
    ]
    launch(torchrun, tmp_path / "tr", data_dir, "trainer.max_epochs=3", f"ckpt_path={one_ckpt}")
    (run,) = run_dirs(tmp_path / "tr")  # not one folder per rank
    assert (
        run / "train_batches.rank1.json"
    ).exists()  # rank 1 wrote into rank 0's folder, not its working dir
    assert [p.name for p in run.glob("exported_by_rank*")] == ["exported_by_rank0"]
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 12
    assert len(predictions(run)) == split_size(data_dir, "test")
    assert (run / "export" / "vlmchallenge.json").exists()
    out = {r: "".join(p.read_text() for p in logs.rglob(f"attempt_0/{r}/std*.log")) for r in (0, 1)}
    assert out[0] and out[1]
    for line in SUMMARY_LINES:
        assert line in out[0] and line not in out[1], line
    assert not (REPO / ".hydra").exists() and not list(REPO.glob("train_ddp_process_*.log"))
    assert not list(REPO.glob("train_batches.rank*.json"))
