"""Shared builds happen once: two ranks that start together on an empty model cache and an empty data folder
both get the same complete tiny model, synthetic tree and shards, however their steps interleave.

Before `build_lock`, `atomic_directory` replaced a folder the other rank had just finished, with `rmtree` and
then a rename: a fresh `torchrun --nproc_per_node=2` failed 2 times in 5 (FileNotFoundError from the other
builder's rmtree, "Unrecognized model ... Should have a model_type key" from a half-replaced folder, a hang)."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from tests.helpers.rank_builds import build_like_a_rank, folder_digest
from tests.helpers.runs import SMALL_DATA_OVERRIDES
from vlmchallenge.utils.atomic import build_lock, lock_path

REPO = Path(__file__).resolve().parents[1]

STARTS = 3  # fresh starts in a row, each on empty folders
OVERRIDES = [*SMALL_DATA_OVERRIDES, "data.shards.workers=1"]


def test_two_ranks_on_empty_folders_build_once_and_agree(tmp_path):
    ctx = multiprocessing.get_context("spawn")  # real separate processes, as torchrun starts them
    with ctx.Manager() as manager, ProcessPoolExecutor(2, mp_context=ctx) as ranks:
        for start in range(STARTS):
            data_dir = tmp_path / f"start{start}" / "data"
            barrier = manager.Barrier(2)
            futures = [ranks.submit(build_like_a_rank, str(data_dir), OVERRIDES, barrier) for _ in range(2)]
            rank0, rank1 = (f.result(timeout=600) for f in futures)
            assert rank0 == rank1, f"start {start}: the ranks saw different folders"
            (model_dir,) = (data_dir / "models").glob("tiny_qwen2_vl-*[!k]")  # the folder, not its .lock
            assert rank0["model"] == folder_digest(model_dir)
            leftovers = [p.name for p in data_dir.rglob("*") if ".tmp-" in p.name or ".old-" in p.name]
            assert leftovers == [], f"start {start}: {leftovers}"


def blocked_on_lock(pid: int, lock: Path) -> bool:
    """Whether `pid` waits for an flock on `lock`: a "->" line of /proc/locks names the waiter's pid and the
    file's inode (https://man7.org/linux/man-pages/man5/proc_locks.5.html)."""
    inode = lock.stat().st_ino
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if "->" in fields and "FLOCK" in fields:
            at = fields.index("->")
            if int(fields[at + 4]) == pid and int(fields[at + 5].rsplit(":", 1)[1]) == inode:
                return True
    return False


BUILDERS = {  # a second process that wants the folder the test is building
    "tiny model": "from vlmchallenge.models.families import TinyModelSpec, ensure_tiny as build\n"
    "print(build(TinyModelSpec(), sys.argv[1]))",
    "synthetic tree": "from vlmchallenge.data.synthetic import generate\n"
    "from tests.helpers.runs import SMALL_SYNTHETIC\n"
    "print(generate(SMALL_SYNTHETIC, sys.argv[1], workers=1))",
}


@pytest.mark.parametrize("what", list(BUILDERS))
def test_a_second_builder_waits_for_the_first_and_keeps_its_folder(tmp_path, what):
    """The interleaving that broke fresh 2-rank starts, made certain: a second process asks for the folder while
    the first is building it. It must wait (seen in /proc/locks, not guessed from timing) and then keep the
    first one's folder (same inode), never build or replace it."""
    from tests.helpers.runs import SMALL_SYNTHETIC
    from vlmchallenge.data.synthetic import generate_into
    from vlmchallenge.models.families import FAMILIES, TinyModelSpec, tiny_folder

    if what == "tiny model":
        target = tmp_path / "models"  # the cache folder
        spec = TinyModelSpec()
        folder = tiny_folder(spec, target)
        build_first = lambda: FAMILIES[spec.family].build_tiny(spec, folder)  # noqa: E731
    else:
        target = folder = tmp_path / "openpack" / "v1.0.0"
        build_first = lambda: generate_into(SMALL_SYNTHETIC, folder, workers=1)  # noqa: E731
    code = "import sys\n" + BUILDERS[what]
    with build_lock(folder):
        second = subprocess.Popen(
            [sys.executable, "-c", code, str(target)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        while not blocked_on_lock(second.pid, lock_path(folder)):
            assert second.poll() is None, f"the second builder did not wait: {second.communicate()}"
            time.sleep(0.05)  # waits for a state that lasts (a blocked flock), not for a moment
        build_first()
        first_inode = folder.stat().st_ino
    out, err = second.communicate(timeout=600)
    assert second.returncode == 0, err[-3000:]
    assert Path(out.strip().splitlines()[-1]) == folder
    assert folder.stat().st_ino == first_inode  # kept, not rebuilt and swapped in
    assert not [p.name for p in folder.parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name]
