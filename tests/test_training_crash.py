"""Training crash drills: real `python -m vlmchallenge.train` processes SIGKILLed mid-epoch and part-way through
a checkpoint write, resumed with `ckpt_path=last`, end where an uninterrupted run with the same seed ends; and
`ckpt_path=last` skips damaged checkpoints and leftover temp files (docs/reliability-training.md §2)."""

from __future__ import annotations

import csv
import logging
import os
import signal
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra

from tests.helpers.runs import TINY_TRAIN_OVERRIDES, build_run_inputs, compose_train
from vlmchallenge.assembly import assemble, settings_from_config
from vlmchallenge.training.checkpoint_io import AtomicCheckpointIO, with_atomic_checkpoints
from vlmchallenge.training.resume import checkpoint_problem, find_latest_checkpoint

REPO = Path(__file__).resolve().parents[1]
EPOCHS, STEPS_PER_EPOCH = 2, 4  # TINY_TRAIN_OVERRIDES: limit_train_batches=4
RUN = [*TINY_TRAIN_OVERRIDES, f"trainer.max_epochs={EPOCHS}", "export=false"]
KILL_STEP = 6  # two batches into epoch 1, whose start is the newest checkpoint (step 4)
KILL_MID_EPOCH = [
    "+callbacks.kill._target_=tests.helpers.faults.KillAtStep",
    f"+callbacks.kill.step={KILL_STEP}",
]
# the 2nd write of last.ckpt is the one at the end of epoch 1 (step 8), cut after half of its bytes
KILL_IN_WRITE = [
    "+trainer.plugins=[{_target_:tests.helpers.faults.KillDuringCheckpointWrite,name:last.ckpt,write_number:2}]"
]


@dataclass
class Run:
    log_dir: Path
    returncode: int
    output: str
    resumed_folder: Path | None = None  # the run folder a `ckpt_path=last` run made

    @property
    def folder(self) -> Path:
        (folder,) = (self.log_dir / "train" / "runs").iterdir()
        return folder


def start(log_dir: Path, data_dir: Path, tmpdir: Path, *overrides: str) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "vlmchallenge.train",
        *RUN,
        f"paths.data_dir={data_dir}",
        f"paths.log_dir={log_dir}",
        *overrides,
    ]
    # TMPDIR: a system temp folder of the run's own, to show that no checkpoint bytes go there. One thread per
    # run: three runs share 2 cores, and spinning OpenMP threads of oversubscribed processes crawl
    env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(tmpdir), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def finish(proc: subprocess.Popen, log_dir: Path) -> Run:
    out, _ = proc.communicate(timeout=900)  # a bound for a loaded machine; ~30 s when idle
    return Run(log_dir, proc.returncode, out)


def new_run(log_dir: Path, before: set[Path]) -> Path:
    (folder,) = set((log_dir / "train" / "runs").iterdir()) - before
    return folder


@pytest.fixture(scope="module")
def crash_runs(tmp_path_factory, shared_data_dir):
    """The uninterrupted reference run and the two runs that are killed start at once; each killed run is
    resumed with `ckpt_path=last` as soon as it has died (2 cores: the runs are mostly start-up). Each drill has
    its own log dir, so `last` can only find its own killed run."""
    root = tmp_path_factory.mktemp("crash")
    build_run_inputs(shared_data_dir, [], root / "prep")  # once, before processes that would each wait for it
    tmpdir = root / "system-tmp"
    tmpdir.mkdir()
    faults = {"mid_epoch": KILL_MID_EPOCH, "in_write": KILL_IN_WRITE}
    logs = {name: root / name for name in ("whole", *faults)}
    whole = start(logs["whole"], shared_data_dir, tmpdir)
    dying = {name: start(logs[name], shared_data_dir, tmpdir, *o) for name, o in faults.items()}
    killed, resuming, folders = {}, {}, {}
    for name, proc in dying.items():
        killed[name] = finish(proc, logs[name])
        folders[name] = killed[name].folder
        resuming[name] = start(logs[name], shared_data_dir, tmpdir, "ckpt_path=last")
    killed["whole"] = finish(whole, logs["whole"])
    assert killed["whole"].returncode == 0, killed["whole"].output[-4000:]
    resumed = {}
    for name, proc in resuming.items():
        resumed[name] = finish(proc, logs[name])
        assert resumed[name].returncode == 0, resumed[name].output[-4000:]
        resumed[name].resumed_folder = new_run(logs[name], {folders[name]})
    return killed, resumed, folders, tmpdir


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def logged_rows(run_folder: Path, from_step: int) -> list[dict]:
    """metrics.csv rows from `from_step` on (the CSV logger writes the step of each row)."""
    with open(run_folder / "csv" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    return [{k: v for k, v in r.items() if v != ""} for r in rows if int(r["step"]) >= from_step]


def weight_gap(a: dict, b: dict) -> float:
    assert a["state_dict"].keys() == b["state_dict"].keys()
    return max(float((a["state_dict"][k] - b["state_dict"][k]).abs().max()) for k in a["state_dict"])


# float32 sums on CPU threads are not always added in the same order, so even two uninterrupted runs may differ by
# an ulp (measured: 0 or 4.5e-8 on the trainable weights); tests/test_train.py uses the same bound
WEIGHT_TOLERANCE = 1e-6


def as_numbers(rows: list[dict]) -> list[dict]:
    return [{k: float(v) for k, v in r.items()} for r in rows]


def measured_loss(whole_folder: Path, resumed_folder: Path) -> tuple[int, float]:
    """(optimizer steps the resumed run lacks against the uninterrupted one, largest trainable-weight gap),
    measured before any assertion; a resumed run with no checkpoint lacks every step."""
    whole = load(whole_folder / "checkpoints" / "last.ckpt")
    resumed_path = resumed_folder / "checkpoints" / "last.ckpt"
    if not resumed_path.exists():
        return whole["global_step"], float("inf")
    resumed = load(resumed_path)
    gap = (
        weight_gap(whole, resumed)
        if whole["state_dict"].keys() == resumed["state_dict"].keys()
        else float("inf")
    )
    return whole["global_step"] - resumed["global_step"], gap


def assert_resumed_like_whole(whole_folder: Path, resumed_folder: Path, from_step: int) -> float:
    """The resumed run ends at the uninterrupted run's step and weights, and logs the same rows (validation of
    each later epoch, the test of the best checkpoint). Returns the largest weight difference."""
    whole = load(whole_folder / "checkpoints" / "last.ckpt")
    resumed = load(resumed_folder / "checkpoints" / "last.ckpt")
    assert resumed["global_step"] == whole["global_step"] == EPOCHS * STEPS_PER_EPOCH
    gap = weight_gap(whole, resumed)
    assert gap < WEIGHT_TOLERANCE, f"resumed weights differ from the uninterrupted run by up to {gap:.2e}"
    got, expected = logged_rows(resumed_folder, 0), logged_rows(whole_folder, from_step)
    assert min(int(r["step"]) for r in got) >= from_step  # the step count went on, it did not restart at 0
    assert [r.keys() for r in got] == [r.keys() for r in expected]
    assert as_numbers(got) == [pytest.approx(r, abs=1e-5) for r in as_numbers(expected)]
    assert any("test/f1_macro" in r for r in got)
    return gap


@pytest.mark.drill
def test_sigkill_mid_epoch_resumes_from_the_epoch_checkpoint_to_the_same_result(crash_runs, drill):
    killed, resumed, folders, _ = crash_runs
    folder = folders["mid_epoch"]
    lost, gap = measured_loss(killed["whole"].folder, resumed["mid_epoch"].resumed_folder)
    drill.record(
        fault=f"SIGKILL of train at global step {KILL_STEP} (mid-epoch 1 of {EPOCHS})",
        injected=int(killed["mid_epoch"].returncode == -signal.SIGKILL),
        lost=lost,
        unit="optimizer steps",
        check=f"steps the resumed run lacks against an uninterrupted run; trainable weights within {gap:.1e}; "
        "val/test rows of metrics.csv compared; 2 steps recomputed from last.ckpt (step 4)",
    )
    assert killed["mid_epoch"].returncode == -signal.SIGKILL, killed["mid_epoch"].output[-3000:]
    assert f"fault: SIGKILL at global step {KILL_STEP}" in killed["mid_epoch"].output
    newest = folder / "checkpoints" / "last.ckpt"
    assert load(newest)["global_step"] == STEPS_PER_EPOCH  # end of epoch 0; steps 5-6 were lost with the kill
    assert f"resuming from {newest}" in resumed["mid_epoch"].output
    assert_resumed_like_whole(killed["whole"].folder, resumed["mid_epoch"].resumed_folder, STEPS_PER_EPOCH)


@pytest.mark.drill
def test_sigkill_during_a_checkpoint_write_leaves_the_previous_checkpoint_whole(crash_runs, drill):
    killed, resumed, folders, tmpdir = crash_runs
    run, checkpoints = killed["in_write"], folders["in_write"] / "checkpoints"
    lost, gap = measured_loss(killed["whole"].folder, resumed["in_write"].resumed_folder)
    drill.record(
        fault="SIGKILL of train half-way through writing last.ckpt (end of epoch 1, step 8)",
        injected=int(run.returncode == -signal.SIGKILL),
        lost=lost,
        unit="optimizer steps",
        check=f"steps the resumed run lacks against an uninterrupted run; trainable weights within {gap:.1e}; "
        "previous last.ckpt intact (= epoch_000.ckpt), temp file ignored, epoch 1 recomputed",
    )
    assert run.returncode == -signal.SIGKILL, run.output[-3000:]
    assert "fault: SIGKILL after" in run.output
    last = checkpoints / "last.ckpt"
    (orphan,) = checkpoints.glob("last.ckpt.tmp-*")  # the cut write, beside its target, under its temp name
    assert 0.4 < orphan.stat().st_size / last.stat().st_size < 0.6
    with pytest.raises(zipfile.BadZipFile):
        zipfile.ZipFile(orphan)
    assert checkpoint_problem(last) is None
    previous, epoch0 = load(last), load(checkpoints / "epoch_000.ckpt")
    assert (
        previous["global_step"] == epoch0["global_step"] == STEPS_PER_EPOCH
    )  # the step-8 write never landed
    assert weight_gap(previous, epoch0) == 0.0
    big = [p for p in tmpdir.rglob("*") if p.is_file() and p.stat().st_size > 100_000]
    assert not big, f"checkpoint bytes in the system temp folder: {big}"

    out = resumed["in_write"].output
    assert f"ignoring {orphan}: temp file of a checkpoint write that was interrupted" in out
    assert f"resuming from {last}" in out
    assert not list(
        resumed["in_write"].resumed_folder.glob("checkpoints/*.tmp-*")
    )  # its own writes completed
    assert_resumed_like_whole(killed["whole"].folder, resumed["in_write"].resumed_folder, STEPS_PER_EPOCH)


# ---------------------------------------------------------------- find_latest_checkpoint, in-process


def fake_run(log_dir: Path, name: str, step: int, mtime: int) -> Path:
    """A run folder holding a torch checkpoint with a global step (what a Lightning checkpoint has)."""
    path = log_dir / "train" / "runs" / name / "checkpoints" / "last.ckpt"
    path.parent.mkdir(parents=True)
    torch.save({"global_step": step, "state_dict": {"w": torch.arange(4096.0) * step}}, path)
    os.utime(path, (mtime, mtime))
    return path


def test_find_latest_checkpoint_skips_a_damaged_newest_one_and_temp_files(tmp_path, caplog):
    older = fake_run(tmp_path, "a", step=4, mtime=1_000)
    truncated = fake_run(tmp_path, "b", step=8, mtime=2_000)
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    os.utime(truncated, (2_000, 2_000))  # damage keeps the order: truncated is newer than older
    flipped = fake_run(tmp_path, "c", step=12, mtime=3_000)
    data = bytearray(flipped.read_bytes())
    data[data.index(torch.tensor([12.0]).numpy().tobytes()) + 4 * 100] ^= 0x10  # a bit of tensor w: same size
    flipped.write_bytes(bytes(data))
    os.utime(flipped, (3_000, 3_000))
    leftover = flipped.with_name("last.ckpt.tmp-4242")
    leftover.write_bytes(b"PK\x03\x04 half a checkpoint")
    foreign = tmp_path / "train" / "runs" / "d" / "checkpoints" / "weights.ckpt"
    foreign.parent.mkdir(parents=True)
    torch.save({"w": torch.ones(3)}, foreign)  # a whole torch file, but no training state
    os.utime(foreign, (4_000, 4_000))

    with caplog.at_level(logging.WARNING, logger="vlmchallenge.training.resume"):
        assert find_latest_checkpoint(tmp_path, "train") == older
    text = caplog.text
    assert f"skipping checkpoint {truncated}: unreadable" in text
    assert f"skipping checkpoint {flipped}: member" in text and "CRC-32" in text
    assert f"skipping checkpoint {foreign}: not a Lightning training checkpoint" in text
    assert f"ignoring {leftover}: temp file" in text


def test_find_latest_checkpoint_names_every_damaged_one_when_none_is_valid(tmp_path):
    only = fake_run(tmp_path, "a", step=4, mtime=1_000)
    only.write_bytes(only.read_bytes()[:100])
    with pytest.raises(
        FileNotFoundError, match=r"none of the 1 checkpoints .* is valid: .*last.ckpt \(unreadable"
    ):
        find_latest_checkpoint(tmp_path, "train")
    with pytest.raises(FileNotFoundError, match="no earlier checkpoints"):
        find_latest_checkpoint(tmp_path / "empty", "train")


def test_find_latest_checkpoint_takes_the_last_written_not_the_longest_run(tmp_path):
    fake_run(tmp_path, "long", step=400, mtime=1_000)
    fresh = fake_run(tmp_path, "fresh", step=8, mtime=2_000)
    assert find_latest_checkpoint(tmp_path, "train") == fresh


# ---------------------------------------------------------------- the writer, in-process


def test_a_failed_write_keeps_the_old_checkpoint_and_removes_its_temp_file(tmp_path):
    target = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"global_step": 4}, target)
    with pytest.raises(AttributeError, match="Can't pickle"):  # the write fails after opening its temp file
        io.save_checkpoint({"global_step": 8, "bad": lambda: None}, target)
    assert load(target)["global_step"] == 4
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


WRITE_TWICE = """
import sys, torch
from tests.helpers.faults import KillDuringCheckpointWrite
io = KillDuringCheckpointWrite(name="last.ckpt", write_number=2)
for step in (4, 8):
    io.save_checkpoint({"global_step": step, "w": torch.full((250_000,), float(step))}, sys.argv[1])
"""


def test_writer_killed_half_way_leaves_the_previous_file_whole(tmp_path):
    """The writer alone, in a real process SIGKILLed half-way through its second write (about 3 s)."""
    target = tmp_path / "ckpts" / "last.ckpt"
    env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-c", WRITE_TWICE, str(target)], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert load(target)["global_step"] == 4 and checkpoint_problem(target) is None
    (orphan,) = target.parent.glob("last.ckpt.tmp-*")
    assert 0.4 < orphan.stat().st_size / target.stat().st_size < 0.6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpts"]  # nothing in the system temp folder


def test_remote_paths_keep_lightnings_writer():
    import fsspec

    AtomicCheckpointIO().save_checkpoint({"global_step": 3}, "memory://ckpts/last.ckpt")
    with fsspec.open("memory://ckpts/last.ckpt", "rb") as f:
        assert torch.load(f, weights_only=True)["global_step"] == 3


def test_fit_trainers_write_through_the_atomic_writer_unless_deepspeed(tmp_path, shared_data_dir):
    """Added next to the configured plugins (here the SLURM preset's), not instead of them."""
    slurm = "+trainer.plugins=[{_target_:vlmchallenge.training.strategies.slurm_environment}]"
    cfg = compose_train(tmp_path / "run", shared_data_dir, [slurm], log_dir=tmp_path)
    try:
        parts = assemble(settings_from_config(cfg), "fit", trainer=cfg.trainer, callbacks=cfg.callbacks)
    finally:
        GlobalHydra.instance().clear()
    assert type(parts.trainer.strategy.checkpoint_io) is AtomicCheckpointIO
    assert type(parts.trainer._accelerator_connector.cluster_environment).__name__ == "SLURMEnvironment"
    assert with_atomic_checkpoints([], "deepspeed") == []  # DeepSpeed's engine writes its own folders
    mine = AtomicCheckpointIO()
    assert with_atomic_checkpoints([mine], "other") == [mine]  # Lightning takes one CheckpointIO
    assert with_atomic_checkpoints(mine, "other") == [mine]  # `plugins:` may be one plugin
