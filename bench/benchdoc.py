"""Write one benchmark's section of docs/benchmarks.md, between its `<!-- bench:NAME -->` markers."""

from __future__ import annotations

from pathlib import Path

from vlmchallenge.utils.atomic import write_text_atomically

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
HEADER = (
    "# Benchmarks\n\n"
    "Each section below is produced by the command shown in it (with `--write`, which rewrites only that "
    "section); rerun the command to refresh the numbers.\n"
)


def update_section(name: str, section: str, doc: Path = DOC) -> None:
    begin, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    text = doc.read_text() if doc.exists() else HEADER
    block = f"{begin}\n{section}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    write_text_atomically(doc, text)  # a kill never leaves half a doc
    print(f"updated {doc}")
