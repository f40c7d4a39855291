"""The repository explains itself: every `docs/<name>.md [§N[.M]]` citation resolves inside the repository, and no
file points at notes outside it.

The three repository checks run the same pure scanners that the synthetic cases below feed with planted faults, so
each check is shown to fail on the fault it exists for.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# What may cite the docs (files and folders at the repository root).
CITING = (
    "vlmchallenge",
    "conf",
    "tests",
    "bench",
    "docs",
    "README.md",
    "Makefile",
    "Dockerfile",
    "pyproject.toml",
)
EXCLUDED_TOP = {".git", ".venv", "outputs", "data"}
EXCLUDED_ANYWHERE = {".git", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache", ".hypothesis"}

# `docs/<name>.md`, not as the tail of a longer path (`x/docs/...` is someone else's docs folder).
DOC_MENTION = re.compile(r"(?<![\w./-])docs/([\w.-]+?)\.md\b")
# Any `<name>.md`, bare or with `docs/`: a bare name counts for sections when docs/<name>.md exists.
ANY_MD = re.compile(r"(?<![\w.-])(?:docs/)?([\w.-]+?)\.md\b")
SECTION = re.compile(r"§\s*(\d+(?:\.\d+)*)(?:\s*[-–]\s*(\d+(?:\.\d+)*))?")
HEADING = re.compile(r"^#{1,6}\s+§?(\d+(?:\.\d+)*)\.?(?=\s|$)")
FENCE = re.compile(r"^\s*(```|~~~)")

# Paths outside the repository. Spelled in pieces so that this file does not match itself.
_SHARED = "sha" + "red"
OUTSIDE = [
    re.compile(r"\.\./" + _SHARED + r"\b"),  # a sibling folder of the checkout
    re.compile(r"(?<![\w.-])/" + "wo" + r"rk/"),  # the absolute workspace
    re.compile(r"(?<![\w-])" + _SHARED + r"/docs\b"),  # the private notes folder
]
# This file plants dangling citations in its synthetic cases on purpose; the citation scans skip it (the
# outside-path scan does not: its patterns and cases are spelled in pieces).
SELF = Path(__file__).resolve().relative_to(ROOT).as_posix()


def repo_files(root: Path, tops: tuple[str, ...] | None = None) -> dict[str, str]:
    """{relative path: text} of the repository's text files: git's tracked + untracked-but-not-ignored files when
    `root` is a git checkout, else every file; `tops` limits it to those root entries."""
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            capture_output=True,
            check=True,
        ).stdout.decode()
        rels = [p for p in out.split("\0") if p]
        if Path(root).resolve() != Path(
            subprocess.run(
                ["git", "-C", str(root), "rev-parse", "--show-toplevel"],
                capture_output=True,
                check=True,
                text=True,
            ).stdout.strip()
        ):
            raise subprocess.CalledProcessError(1, "git")  # root is inside another checkout: walk it instead
    except (OSError, subprocess.CalledProcessError):
        rels = []
        for dirpath, dirnames, filenames in os.walk(root):
            rel_dir = Path(dirpath).relative_to(root)
            dirnames[:] = [
                d
                for d in dirnames
                if d not in EXCLUDED_ANYWHERE and not (rel_dir == Path(".") and d in EXCLUDED_TOP)
            ]
            rels += [(rel_dir / f).as_posix() for f in filenames]
    texts = {}
    for rel in sorted(rels):
        parts = rel.split("/")
        if parts[0] in EXCLUDED_TOP or EXCLUDED_ANYWHERE & set(parts):
            continue
        if tops is not None and parts[0] not in tops:
            continue
        path = Path(root) / rel
        if not path.is_file():  # tracked but deleted in the working tree
            continue
        data = path.read_bytes()
        if b"\0" in data[:8192]:
            continue
        try:
            texts[rel] = data.decode("utf-8")
        except UnicodeDecodeError:
            continue
    return texts


def _lines(text: str):
    # JSON files escape the section sign.
    return enumerate(text.replace("\\u00a7", "§").replace("\\u00A7", "§").splitlines(), 1)


def doc_citations(files: dict[str, str]) -> list[tuple[str, int, str]]:
    """(file, line, name) of every `docs/<name>.md` mention."""
    return [
        (rel, n, m.group(1))
        for rel, text in files.items()
        for n, line in _lines(text)
        for m in DOC_MENTION.finditer(line)
    ]


def section_citations(files: dict[str, str], doc_names: set[str]) -> list[tuple[str, int, str, str]]:
    """(file, line, name, section) for every `§N[.M]` after a doc mention on the same line (up to the next `.md`
    mention). `§A-B` ranges yield both ends. Bare `<name>.md` counts only when `docs/<name>.md` exists."""
    out = []
    for rel, text in files.items():
        for n, line in _lines(text):
            mentions = [
                m for m in ANY_MD.finditer(line) if m.group(0).startswith("docs/") or m.group(1) in doc_names
            ]
            all_md = [m.start() for m in ANY_MD.finditer(line)]
            for m in mentions:
                stop = min([s for s in all_md if s > m.start()], default=len(line))
                for s in SECTION.finditer(line, m.end(), stop):
                    out += [(rel, n, m.group(1), sec) for sec in s.groups() if sec]
    return out


def doc_sections(text: str) -> set[str]:
    """Numbers of the Markdown headings (`## 3.`, `### 3.1 ...`), outside code fences."""
    found, fenced = set(), False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        m = None if fenced else HEADING.match(line)
        if m:
            found.add(m.group(1))
    return found


def dangling_docs(files: dict[str, str], doc_names: set[str]) -> list[str]:
    return [f"{rel}:{n}: docs/{name}.md" for rel, n, name in doc_citations(files) if name not in doc_names]


def missing_sections(files: dict[str, str], docs: dict[str, set[str]]) -> list[str]:
    return [
        f"{rel}:{n}: docs/{name}.md §{sec}"
        for rel, n, name, sec in section_citations(files, set(docs))
        if sec not in docs.get(name, set())
    ]


def outside_paths(files: dict[str, str]) -> list[str]:
    return [
        f"{rel}:{n}: {m.group(0)}"
        for rel, text in files.items()
        for n, line in _lines(text)
        for pattern in OUTSIDE
        for m in pattern.finditer(line)
    ]


def docs_of(root: Path) -> dict[str, set[str]]:
    return {p.stem: doc_sections(p.read_text(encoding="utf-8")) for p in sorted((root / "docs").glob("*.md"))}


# ---- the repository itself ----


def citing_files() -> dict[str, str]:
    return {rel: text for rel, text in repo_files(ROOT, CITING).items() if rel != SELF}


def test_every_cited_doc_exists():
    bad = dangling_docs(citing_files(), set(docs_of(ROOT)))
    assert not bad, "cited docs missing from docs/:\n" + "\n".join(bad)


def test_every_cited_section_has_a_heading():
    bad = missing_sections(citing_files(), docs_of(ROOT))
    assert not bad, "cited sections without a heading of that number:\n" + "\n".join(bad)


def test_no_file_cites_a_path_outside_the_repository():
    bad = outside_paths(repo_files(ROOT))
    assert not bad, "paths outside the repository (cite docs/ or a primary source instead):\n" + "\n".join(
        bad
    )


def test_the_scan_sees_the_citing_code():
    files = citing_files()
    assert "vlmchallenge/training/vram_math.py" in files and "docs/openpack.md" in files
    assert len(section_citations(files, set(docs_of(ROOT)))) >= 15


# ---- the checks fail on planted faults ----

DOCS = {"vram": {"1", "1.4", "2", "2.1", "2.2"}, "openpack": {"7"}}
GONE = "docs/" + "gone.md"  # split, so that repository-wide scans do not take the test string for a citation


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("see docs/vram.md §1.4", []),
        ("see docs/nonexistent.md", ["docs/nonexistent.md"]),
        ("# docs/vram.md and " + GONE + " §2", [GONE]),
        ("a path docs/vram.md.bak is not a doc", []),
    ],
)
def test_dangling_doc_is_reported(text, expected):
    bad = dangling_docs({"x.py": text}, set(DOCS))
    assert [b.split(": ", 1)[1] for b in bad] == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("docs/vram.md §1.4 and §2", []),
        ("docs/vram.md (shared reference) §1; the per-token form of §1.7", ["§1.7"]),
        ("docs/vram.md §9", ["§9"]),
        ('"_source": "docs/vram.md \\u00a72.1-2.3 (config values)"', ["§2.3"]),
        ("bare vram.md §1.5: 10-14", ["§1.5"]),
        ("docs/openpack.md §7; README.md §3 is not checked", []),
        ("QLoRA §3, no doc on this line", []),
        (GONE + " §1", ["§1"]),
    ],
)
def test_missing_section_is_reported(text, expected):
    bad = missing_sections({"x.py": text}, DOCS)
    assert [b.rsplit(" ", 1)[1] for b in bad] == expected


def test_headings_are_read_outside_code_fences():
    text = "# Title\n## 1. One\n### 1.4 Sub\n```\n# 9. a comment in code\n```\n## §2 Two\n#### 2.10 Deep\n"
    assert doc_sections(text) == {"1", "1.4", "2", "2.10"}


@pytest.mark.parametrize(
    ("text", "hits"),
    [
        ("docs in `.." + "/" + _SHARED + "/docs/learnability.md` §4", 2),
        ("/" + "wo" + "rk/" + _SHARED + "/docs/vram.md", 2),
        ("see docs/learnability.md §4", 0),
        ("shared_data_dir fixture and a /workspace/ path", 0),
    ],
)
def test_outside_path_is_reported(text, hits):
    assert len(outside_paths({"x.md": text})) == hits


def test_planted_faults_in_a_temp_copy(tmp_path):
    """A miniature repository with one fault of each kind: every check reports exactly its own."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "vram.md").write_text("# VRAM\n## 1. Formulas\n### 1.4 Logits\n")
    (tmp_path / "vlmchallenge").mkdir()
    (tmp_path / "vlmchallenge" / "m.py").write_text(
        "# docs/vram.md §1.4 fine\n# docs/vram.md §1.9 no such heading\n# docs/tiny-vlm.md missing file\n"
    )
    (tmp_path / "README.md").write_text("notes in .." + "/" + _SHARED + "/x.md\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "ignored.md").write_text("docs/ignored.md .." + "/" + _SHARED + "\n")
    files = repo_files(tmp_path, CITING)
    docs = docs_of(tmp_path)
    assert dangling_docs(files, set(docs)) == ["vlmchallenge/m.py:3: docs/tiny-vlm.md"]
    assert missing_sections(files, docs) == ["vlmchallenge/m.py:2: docs/vram.md §1.9"]
    assert outside_paths(repo_files(tmp_path)) == ["README.md:1: ../" + _SHARED]
