"""The data group's structured config: one dataclass tree, used as the Hydra schema and at run time."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from omegaconf import MISSING

from vlmchallenge.data.clip_builder import ClipConfig
from vlmchallenge.data.frame_sampler import SamplerConfig
from vlmchallenge.data.shard_writer import ShardConfig
from vlmchallenge.data.splits import SplitConfig
from vlmchallenge.data.synthetic import GENERATOR_VERSION, SyntheticConfig

MANIFEST_VERSION = 1


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

    def validate(self) -> None:
        if not self.root or self.root == "???":
            raise ValueError(
                "data.root is required: set data.root=/path/to/openpack/v1.0.0 (the folder holding U0XXX/)"
            )
        self.clips.validate()
        self.sampler.validate()
        self.shards.validate()
        self.splits.user_to_split()
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

    def resolved_out_dir(self, data_dir: str | Path) -> Path:
        if self.shards.out_dir:
            return Path(self.shards.out_dir)
        return Path(data_dir) / "shards" / f"{self.name}-{self.fingerprint()[:10]}"
