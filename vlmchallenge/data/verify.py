"""Check a prepared shard folder against its split indexes: every shard there, of its size, sha256 and sample count.

The index (`<split>/shardindex.json`, written by `prepare`) is the reference: a shard that is missing, truncated
or bit-flipped no longer matches it. Nothing is repaired here; the remedy is a rerun of `prepare`, which redoes
exactly the sessions whose shards are damaged (their done-markers are no longer trusted).
"""

from __future__ import annotations

import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from vlmchallenge.data.shard_writer import INDEX_NAME, count_tar_samples, file_sha256
from vlmchallenge.data.splits import SPLIT_NAMES


@dataclass
class ShardProblem:
    path: Path
    problem: str  # "missing", "truncated: ...", "sha256 mismatch ...", ...


@dataclass
class VerifyResult:
    out_dir: Path
    checked: int = 0  # shards checked
    samples: int = 0  # samples the indexes list
    problems: list[ShardProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_shard(path: Path, entry: dict) -> str | None:
    """What is wrong with one shard against its index entry (url, nsamples, filesize, sha256), or None."""
    if not path.is_file():
        return "missing"
    size = path.stat().st_size
    if size != entry["filesize"]:
        kind = "truncated" if size < entry["filesize"] else "larger than indexed"
        return f"{kind}: {size} bytes, the index says {entry['filesize']}"
    if (digest := file_sha256(path)) != entry["sha256"]:
        return f"sha256 mismatch (corrupted in place): {digest[:12]}..., the index says {entry['sha256'][:12]}..."
    try:
        n = count_tar_samples(path)
    except (tarfile.TarError, OSError) as e:
        return f"not a readable tar: {e}"
    if n != entry["nsamples"]:
        return f"{n} samples, the index says {entry['nsamples']}"
    return None


def verify_shards(out_dir: str | Path) -> VerifyResult:
    """Every shard of every split index under `out_dir`; a folder without any index is an error."""
    out_dir = Path(out_dir)
    indexes = [out_dir / split / INDEX_NAME for split in SPLIT_NAMES]
    if not any(p.is_file() for p in indexes):
        raise FileNotFoundError(
            f"{out_dir}: no {'/'.join(SPLIT_NAMES)}/{INDEX_NAME}; expected a folder written by "
            "`python -m vlmchallenge.prepare` (a subset job's folder gets its indexes from `prepare merge=true`)"
        )
    result = VerifyResult(out_dir)
    for index_path in indexes:
        if not index_path.is_file():
            result.problems.append(ShardProblem(index_path, "missing split index"))
            continue
        try:
            shardlist = json.loads(index_path.read_text())["shardlist"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            result.problems.append(ShardProblem(index_path, f"not a wids shard index ({e!r})"))
            continue
        for entry in shardlist:
            path = index_path.parent / entry["url"]
            result.checked += 1
            result.samples += entry["nsamples"]
            if problem := check_shard(path, entry):
                result.problems.append(ShardProblem(path, problem))
    return result
