"""Imports flow one way, along the graph drawn in docs/architecture.md: `ALLOWED` is what each subpackage may
import, and it is the real graph, no more: every allowed edge is used by some import, and the drawing's arrows are
these edges. So `evaluation` imports only `data`, and neither `inference` nor `serving` imports the Lightning
layer (`training`).
Above them: `assembly`, `workflows`, `data_workflows` and the entry points. Read from the source with `ast`, so
nothing is imported to check."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "vlmchallenge"
ARCHITECTURE = PACKAGE.parent / "docs" / "architecture.md"
# subpackage -> the subpackages it may import (besides itself)
ALLOWED = {
    "utils": set(),
    "data": {"utils"},
    "models": {"utils", "data"},
    "evaluation": {"data"},
    "training": {"utils", "data", "models", "evaluation"},
    "inference": {
        "utils",
        "data",
        "models",
        "evaluation",
    },  # the offline engine and annotator: no Lightning, no HTTP
    "serving": {"data", "models", "inference"},  # the HTTP APIs in front of the engine
    "reviewing": {"utils", "data", "inference"},  # the review page: no model at all
}
LAYERS = list(ALLOWED)


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


def layer_violations(package: Path, allowed: dict[str, set[str]]) -> list[str]:
    bad = []
    for sub in allowed:
        for path in sorted((package / sub).rglob("*.py")):
            for target in imported_subpackages(path) - {sub}:
                if target not in allowed:  # a top-level module: assembly, workflows, an entry point
                    bad.append(
                        f"{path.relative_to(package)} imports vlmchallenge.{target} (above every layer)"
                    )
                elif target not in allowed[sub]:
                    bad.append(f"{path.relative_to(package)} imports vlmchallenge.{target} (not allowed)")
    return bad


def real_edges(package: Path, subpackages) -> set[tuple[str, str]]:
    return {
        (sub, target)
        for sub in subpackages
        for path in (package / sub).rglob("*.py")
        for target in imported_subpackages(path) - {sub}
    }


def test_subpackages_import_only_what_the_graph_allows():
    assert set(ALLOWED) == {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert layer_violations(PACKAGE, ALLOWED) == []


def test_the_graph_is_the_real_one_and_the_drawing_shows_it():
    allowed = {(sub, target) for sub, targets in ALLOWED.items() for target in targets}
    assert allowed - real_edges(PACKAGE, ALLOWED) == set(), "allowed, but no import uses it: remove it"
    arrows = set(re.findall(r"^\s*(\w+) --> (\w+)\s*$", ARCHITECTURE.read_text(), re.M))
    drawn = {(a, b) for a, b in arrows if a in ALLOWED and b in ALLOWED}
    assert drawn == allowed, f"docs/architecture.md draws {sorted(drawn ^ allowed)} differently"


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
        # later in any total order, yet not allowed: the servers must not need Lightning
        (
            {"serving/a.py": "from vlmchallenge.training.module import M"},
            "serving/a.py imports vlmchallenge.training",
        ),
        (
            {"evaluation/a.py": "from vlmchallenge.models import x"},
            "evaluation/a.py imports vlmchallenge.models",
        ),
        ({"models/a.py": "from vlmchallenge.models.b import c"}, None),  # within its own package
    ],
)
def test_the_check_finds_an_import_the_graph_does_not_allow(tmp_path, files, expected):
    for sub in ALLOWED:
        (tmp_path / sub).mkdir()
    for name, text in files.items():
        (tmp_path / name).write_text(text + "\n")
    found = layer_violations(tmp_path, ALLOWED)
    assert found == [] if expected is None else len(found) == 1 and expected in found[0]


# What each command's start must not import. `serve` and `annotate` run the offline engine, which needs
# transformers but not Lightning: importing it costs every start 3 to 4 s on 2 cores. `prepare` and `verify` need
# neither, nor does `review` of a finished annotation (it imports the model stack only to annotate first); importing
# them would double their start (docs/architecture.md).
START_WITHOUT = {
    "vlmchallenge.serve, vlmchallenge.annotate": (
        "pytorch_lightning",
        "lightning_fabric",
        "lightning",
        "torchmetrics",
    ),
    "vlmchallenge.prepare, vlmchallenge.verify, vlmchallenge.review, vlmchallenge.reviewing.app": (
        "pytorch_lightning",
        "lightning_fabric",
        "transformers",
        "peft",
    ),
}


def test_each_command_starts_without_the_stacks_it_does_not_need():
    """Each group of entry points imported in a fresh interpreter, the groups at once (each is seconds of
    imports on one core)."""
    probes = {
        modules: subprocess.Popen(
            [sys.executable, "-c", f"import sys, {modules}; print(sorted(set(sys.modules) & {set(heavy)}))"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for modules, heavy in START_WITHOUT.items()
    }
    for modules, probe in probes.items():
        out, err = probe.communicate(timeout=300)
        assert probe.returncode == 0, err
        assert out.strip() == "[]", f"import {modules} loaded {out}{err}"


LIGHTNING = ("pytorch_lightning", "lightning_fabric", "lightning")


def private_lightning_imports(path: Path) -> list[str]:
    """`from <Lightning module> import _name` and imports of a `_module`: names Lightning may change in any
    release without notice."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in LIGHTNING:
            private = [a.name for a in node.names if a.name.startswith("_")]
            if private or any(part.startswith("_") for part in node.module.split(".")):
                found.append(f"{path.name}:{node.lineno} {node.module} {private}")
    return found


def test_no_private_lightning_api_is_imported(tmp_path):
    used = [hit for path in sorted(PACKAGE.rglob("*.py")) for hit in private_lightning_imports(path)]
    assert not used, f"private Lightning APIs (replace them with the public pieces they use): {used}"
    # the check itself finds the import this package used to make
    probe = tmp_path / "probe.py"
    probe.write_text("from lightning_fabric.utilities.seed import _collect_rng_states\n")
    assert private_lightning_imports(probe) == [
        "probe.py:1 lightning_fabric.utilities.seed ['_collect_rng_states']"
    ]


MAX_FUNCTION_LINES = 60  # a function a reader takes in on one screen
SHORT_FUNCTION_PACKAGES = ("data", "evaluation", "inference", "serving", "reviewing")


def long_functions(path: Path, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    return [
        f"{path.name}::{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno - node.lineno + 1 > limit
    ]


def test_no_function_in_the_data_evaluation_and_serving_wings_is_over_60_lines(tmp_path):
    found = [
        hit
        for package in SHORT_FUNCTION_PACKAGES
        for path in sorted((PACKAGE / package).rglob("*.py"))
        for hit in long_functions(path)
    ]
    assert not found, f"split these into named steps: {found}"
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n" + "    x = 1\n" * MAX_FUNCTION_LINES)
    assert long_functions(probe) == [f"probe.py::f ({MAX_FUNCTION_LINES + 1} lines)"]
