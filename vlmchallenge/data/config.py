"""The data group's structured config: one dataclass tree, used as the Hydra schema and at run time."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from omegaconf import MISSING

from vlmchallenge.data import locations
from vlmchallenge.data.clip_builder import ClipConfig
from vlmchallenge.data.frame_sampler import SamplerConfig
from vlmchallenge.data.shard_writer import ShardConfig
from vlmchallenge.data.splits import SplitConfig
from vlmchallenge.data.synthetic import GENERATOR_VERSION, SyntheticConfig

MANIFEST_VERSION = 2  # 2: the 1-Hz ground truth is copied into the shard folder (docs/architecture.md)
_SESSION_NAME = re.compile(r"^U\d{4}/S\d{4}$")
_SHARD_OF = re.compile(r"^(\d+)/(\d+)$")


@dataclass
class DataConfig:
    name: str = "synthetic"
    root: str = MISSING  # OpenPack v1.0.0 root (holds U0XXX/ folders)
    source: str = "frames"  # frames (kinect/color-masked/frames) | video
    video_pattern: str = "{root}/{user}/video/{session}.mp4"
    video_time_origin: str = "creation_time"  # creation_time | first_annotation
    synthetic: SyntheticConfig | None = None  # set: generate `root` first when it is missing
    clips: ClipConfig = field(default_factory=ClipConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    splits: SplitConfig = field(default_factory=SplitConfig)
    shards: ShardConfig = field(default_factory=ShardConfig)
    # A subset job (docs/architecture.md, "Subset jobs + merge"): these sessions ("U0201/S0100"; empty: all)
    # and/or the i-th of n strided slices ("i/n") of them. Not in the fingerprint: every job shares one folder.
    sessions: list[str] = field(default_factory=list)
    shard_of: str | None = None
    # Training skips unreadable shards with a warning; past this fraction of an epoch's samples the run stops
    # (a few bad files are survivable, a broken dataset is not). Not in the fingerprint: shards don't change.
    max_skipped_fraction: float = 0.01

    @property
    def is_subset(self) -> bool:
        return bool(self.sessions) or self.shard_of is not None

    def shard_slice(self) -> tuple[int, int] | None:
        """`shard_of` as (i, n), validated; None when not set."""
        if self.shard_of is None:
            return None
        match = _SHARD_OF.match(str(self.shard_of))
        if not match or not int(match[1]) < int(match[2]):
            raise ValueError(
                f"data.shard_of: expected 'i/n' with 0 <= i < n (job i of n, 0-based, e.g. 0/4), "
                f"got {self.shard_of!r}"
            )
        return int(match[1]), int(match[2])

    def validate(self) -> None:
        if not self.root or self.root == "???":
            raise ValueError(
                "data.root is required: set data.root=/path/to/openpack/v1.0.0 (the folder holding U0XXX/)"
            )
        self.clips.validate()
        self.sampler.validate()
        self.shards.validate()
        self.splits.user_to_split()
        bad = [s for s in self.sessions if not _SESSION_NAME.match(str(s))]
        if bad:
            raise ValueError(f"data.sessions: expected entries like U0201/S0100 (user/session), got {bad}")
        self.shard_slice()
        if not 0.0 <= self.max_skipped_fraction <= 1.0:
            raise ValueError(
                f"data.max_skipped_fraction: expected a value in [0, 1], got {self.max_skipped_fraction}"
            )
        if self.synthetic is not None:
            self.synthetic.validate()

    def fingerprint(self) -> str:
        """Hash of everything that changes shard bytes (not workers, out_dir or overwrite)."""
        spec = {
            "version": MANIFEST_VERSION,
            "root": str(Path(self.root).resolve()),
            "source": self.source,
            "video": [self.video_pattern, self.video_time_origin] if self.source == "video" else None,
            "synthetic": {**asdict(self.synthetic), "generator": GENERATOR_VERSION}
            if self.synthetic
            else None,
            "clips": asdict(self.clips),
            "sampler": asdict(self.sampler),
            "splits": asdict(self.splits),
            "shards": {"maxcount": self.shards.maxcount, "maxsize": self.shards.maxsize},
        }
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()

    def local_out_dir(self, data_dir: str | Path) -> Path:
        """Where `prepare` writes these settings' shards when no `shards.out_dir` is set: one folder per
        fingerprint (`<data_dir>/shards/<name>-<10 hex>`), so other settings never share it."""
        return Path(data_dir) / "shards" / f"{self.name}-{self.fingerprint()[:10]}"

    def resolved_out_dir(self, data_dir: str | Path) -> Path | str:
        """The shard location: a local folder (`Path`), or a URL (`str`, read-only: data/locations.py)."""
        if self.shards.out_dir:
            return locations.resolve(self.shards.out_dir)
        return self.local_out_dir(data_dir)
