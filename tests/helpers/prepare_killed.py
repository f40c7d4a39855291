"""`python -m tests.helpers.prepare_killed <after> <overrides...>`: `python -m vlmchallenge.prepare` that
SIGKILLs itself at a named point: right after its `after`-th shard is published (renamed to its final name and
entered in the session's list). The kill comes from inside the process, so where it lands does not depend on
how busy the machine is; an outside poll for "N shards exist" can be overtaken by a fast run.

Only the `data.shards.workers=1` path runs sessions in this process; with a pool the hook would not reach them.
"""

from __future__ import annotations

import runpy
import sys

import vlmchallenge.data.shard_writer as shard_writer
from tests.helpers.faults import kill_self


def kill_after_published(after: int) -> None:
    record_shard = shard_writer.shard_entry
    published = 0

    def record_then_kill(path, nsamples):
        nonlocal published
        entry = record_shard(path, nsamples)
        published += 1
        if published == after:
            print(f"fault: SIGKILL after shard {after} was published ({path.name})", flush=True)
            kill_self()
        return entry

    shard_writer.shard_entry = record_then_kill


if __name__ == "__main__":
    kill_after_published(int(sys.argv[1]))
    sys.argv = ["vlmchallenge.prepare", *sys.argv[2:]]
    runpy.run_module("vlmchallenge.prepare", run_name="__main__", alter_sys=True)
