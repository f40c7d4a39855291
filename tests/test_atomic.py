"""`fsync_tree`, what makes a built folder durable before `atomic_directory` publishes it: one syncfs(2) of its file
system on Linux, an fsync of each file and folder elsewhere (vlmchallenge/utils/atomic.py). What a crash of the
machine would show cannot be staged here; what each path asks of the kernel can."""

from __future__ import annotations

import ctypes
import errno
import os
import sys
from pathlib import Path

import pytest

from vlmchallenge.utils import atomic

# which file each synced descriptor is comes from /proc/self/fd
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/fd")


def small_tree(root: Path) -> Path:
    for rel in ("a.jpg", "b/c.jpg", "b/d/e.json"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x" * 100)
    return root


def test_on_linux_one_syncfs_makes_the_tree_durable_with_no_fsync_per_file(tmp_path, monkeypatch):
    assert atomic.SYNCFS is not None
    synced = []
    real = atomic.SYNCFS
    monkeypatch.setattr(
        atomic, "SYNCFS", lambda fd: synced.append(os.readlink(f"/proc/self/fd/{fd}")) or real(fd)
    )
    monkeypatch.setattr(os, "fsync", lambda fd: pytest.fail("an fsync per file"))
    tree = small_tree(tmp_path / "tree")
    atomic.fsync_tree(tree)
    assert synced == [str(tree)]


def test_a_failed_syncfs_is_an_error_naming_the_folder(tmp_path, monkeypatch):
    def failing(fd: int) -> int:
        ctypes.set_errno(errno.EIO)
        return -1

    monkeypatch.setattr(atomic, "SYNCFS", failing)
    tree = small_tree(tmp_path / "tree")
    with pytest.raises(OSError, match="syncfs: Input/output error") as e:
        atomic.fsync_tree(tree)
    assert e.value.errno == errno.EIO and e.value.filename == str(tree)


def test_without_syncfs_every_file_and_folder_is_fsynced(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic, "SYNCFS", None)
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(os.readlink(f"/proc/self/fd/{fd}")) or real(fd))
    tree = small_tree(tmp_path / "tree")
    atomic.fsync_tree(tree)
    expected = [tree, *tree.rglob("*")]
    assert sorted(synced) == sorted(str(p) for p in expected)
