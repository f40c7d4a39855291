"""Damage a shard the way real faults do: a copy cut short, a flipped bit in a member header."""

from __future__ import annotations

import tarfile
from pathlib import Path


def members(shard: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(shard) as tar:
        return tar.getmembers()


def complete_before(shard_members: list[tarfile.TarInfo], cut: int) -> list[str]:
    """Keys of the samples whose every member lies wholly before byte `cut`, in shard order."""
    keys: dict[str, bool] = {}
    for m in shard_members:
        key = m.name.split(".")[0]
        keys[key] = keys.get(key, True) and m.offset_data + m.size <= cut
    return [k for k, whole in keys.items() if whole]


def truncate(shard: Path) -> int:
    """Cut the shard in the middle of a member's data, as an interrupted copy would; returns the cut."""
    middle = members(shard)[len(members(shard)) // 2]
    cut = middle.offset_data + middle.size // 2
    shard.write_bytes(shard.read_bytes()[:cut])
    return cut


def flip_header_bit(shard: Path, sample_start: bool = False) -> int:
    """Flip one bit in the name field of a member header in the middle (its checksum then fails). With
    `sample_start`, in the first member of the middle sample: the samples before it are whole and the tar
    stream ends there quietly, so only counting the samples against the index finds the loss."""
    shard_members = members(shard)
    k = len(shard_members) // 2
    if sample_start:
        while k > 0 and shard_members[k - 1].name.split(".")[0] == shard_members[k].name.split(".")[0]:
            k -= 1
    middle = shard_members[k]
    data = bytearray(shard.read_bytes())
    data[middle.offset + 3] ^= 0x04
    shard.write_bytes(bytes(data))
    return middle.offset
