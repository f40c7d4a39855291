"""The wheel bundle for the lent GPU machine (bench/device/bundle.py, docs/gpu-check.md): its pins are the
versions this suite runs with, so the device serves and trains with the stack tested here; its size check
refuses a bundle that would not travel. Downloading it (45 MB from PyPI) is not part of the suite."""

from __future__ import annotations

import importlib.metadata as metadata
import importlib.util
import os
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "bench" / "device" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bundle = load("bundle")


def test_every_pin_is_the_version_pyproject_pins():
    """The device trains and serves with the versions this suite is installed with. Compared with pyproject's
    exact pins, not with whatever a fresh install resolved for the unpinned rest (that drifts with releases)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    pinned = dict(d.split(";")[0].strip().split("==") for d in project if "==" in d)
    pins = dict(p.split("==") for p in bundle.pins())
    assert {"hydra-core", "webdataset", "litserve", "bitsandbytes", "transformers", "peft"} <= set(
        pins
    ) & set(pinned)
    differ = {name: (v, pinned[name]) for name, v in pins.items() if name in pinned and pinned[name] != v}
    assert differ == {}, f"bench/device/bundle.txt against pyproject.toml (bundle, pyproject): {differ}"


def test_a_line_without_one_version_is_refused(tmp_path, monkeypatch):
    pins = tmp_path / "bundle.txt"
    pins.write_text("# comment\nhydra-core==1.3.2\nwebdataset>=1.0   # a range\n")
    monkeypatch.setattr(bundle, "PINS", pins)
    with pytest.raises(SystemExit, match=r"one version \(name==version\); got \['webdataset>=1.0'\]"):
        bundle.pins()


def test_a_bundle_past_64_mib_with_the_tree_is_refused(tmp_path, capsys):
    big = tmp_path / "big-1.0-py3-none-any.whl"
    with open(big, "wb") as f:  # sparse: its size counts, no disk is spent
        f.truncate(bundle.LIMIT_BYTES - bundle.tree_bytes() - 1)
    total = bundle.check_size(tmp_path)
    assert total == bundle.LIMIT_BYTES - 1 and "of 64 MiB" in capsys.readouterr().out
    os.truncate(big, big.stat().st_size + 2)
    with pytest.raises(SystemExit, match="over the 64 MiB limit"):
        bundle.check_size(tmp_path)


def test_the_version_step_finds_every_family_class_in_this_transformers():
    assert load("versions").family_gaps() == []


def test_a_library_older_than_the_product_needs_is_named_in_one_line(monkeypatch):
    versions = load("versions")
    assert versions.installed()[1] == []  # this suite's versions meet every minimum
    monkeypatch.setitem(versions.MINIMUM, "transformers", ("99.1.0", "a future API"))
    installed = metadata.version("transformers")
    assert versions.installed()[1] == [
        f"transformers {installed} is older than 99.1.0, which the product needs for a future API"
    ]


def test_the_bundle_carries_a_transformers_the_product_can_use():
    pins = dict(p.split("==") for p in bundle.pins())
    versions = load("versions")
    least = versions.MINIMUM["transformers"][0]
    assert versions.version_tuple(pins["transformers"]) >= versions.version_tuple(least)
