"""Imports flow one way: utils -> data -> models -> evaluation -> training -> serving -> reviewing, then the top-level
assembly, workflows and entry points. Read from the source with `ast`, so nothing is imported to check."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "vlmchallenge"
# a subpackage may import from its own layer and the layers before it, never after
LAYERS = ["utils", "data", "models", "evaluation", "training", "serving", "reviewing"]


def imported_subpackages(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "vlmchallenge" and len(parts) > 1:
                found.add(parts[1])
    return found


def layer_violations(package: Path, layers: list[str]) -> list[str]:
    rank = {name: i for i, name in enumerate(layers)}
    bad = []
    for sub in layers:
        for path in sorted((package / sub).rglob("*.py")):
            for target in imported_subpackages(path):
                if target not in rank:  # a top-level module: assembly, workflows, an entry point
                    bad.append(
                        f"{path.relative_to(package)} imports vlmchallenge.{target} (above every layer)"
                    )
                elif rank[target] > rank[sub]:
                    bad.append(f"{path.relative_to(package)} imports vlmchallenge.{target} (a later layer)")
    return bad


def test_subpackages_import_only_earlier_layers():
    assert set(LAYERS) == {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert layer_violations(PACKAGE, LAYERS) == []


def test_entry_points_do_not_import_each_other():
    entry_points = {p.stem for p in PACKAGE.glob("*.py") if "\n@hydra.main(" in p.read_text()}
    assert {"prepare", "train", "evaluate", "export", "serve", "vram"} <= entry_points
    for name in entry_points:
        assert not imported_subpackages(PACKAGE / f"{name}.py") & entry_points, name


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"data/a.py": "from vlmchallenge.models.x import y"}, "data/a.py imports vlmchallenge.models"),
        ({"models/a.py": "import vlmchallenge.training.module"}, "models/a.py imports vlmchallenge.training"),
        ({"data/a.py": "from vlmchallenge.train import main"}, "above every layer"),
    ],
)
def test_the_check_finds_an_upward_import(tmp_path, files, expected):
    for sub in ("data", "models", "training"):
        (tmp_path / sub).mkdir()
    for name, text in files.items():
        (tmp_path / name).write_text(text + "\n")
    found = layer_violations(tmp_path, ["data", "models", "training"])
    assert len(found) == 1 and expected in found[0]


def test_the_data_commands_start_without_lightning_or_transformers():
    """`prepare` and `verify` need neither (docs/architecture.md): importing them would double their start;
    nor does `review` of a finished annotation (it imports the model stack only to annotate first)."""
    heavy = ("pytorch_lightning", "lightning_fabric", "transformers", "peft")
    probe = f"import sys, vlmchallenge.prepare, vlmchallenge.verify, vlmchallenge.review, vlmchallenge.reviewing.app; print(sorted(set(sys.modules) & {set(heavy)}))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
