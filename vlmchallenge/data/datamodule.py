"""Stream prepared WebDataset shards into the model.

- train: shards resampled with replacement (seeded per rank and worker, so every DataLoader worker on every rank
  draws its own stream), a shuffle buffer, decoding + processor collation inside the workers, fixed-size batches,
  and an epoch length computed from the shard index: exactly `ceil(samples / (world * batch))` batches per rank,
  so DDP ranks never wait on each other.
- val/test: one exact pass; shards split by rank, then by worker, so each sample is seen exactly once.
`batch_size` is read when a loader is built, so a callback (the VRAM planner) may set it first.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Iterator
from functools import partial
from itertools import islice
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import webdataset as wds

from vlmchallenge.data.config import DataConfig
from vlmchallenge.data.pipeline import MANIFEST_NAME, prepare
from vlmchallenge.data.shard_writer import INDEX_NAME
from vlmchallenge.models.collator import Example


def split_by_rank(src: Iterator, rank: int, world_size: int) -> Iterator:
    """Disjoint shard subsets per rank (explicit rank/world, so it works before and without torch.distributed)."""
    yield from islice(src, rank, None, world_size)


def class_repeat_factors(class_counts: dict[str, int], alpha: float) -> dict[int, float]:
    """Expected repeats per sample of each class so the stream's class frequencies go from n_c to
    ~n_c^(1-alpha): alpha 0 = natural distribution, 1 = balanced. OpenPack is imbalanced (e.g. "Put on Back
    Table" is ~1 % of the seconds) and the metric is macro-F1, so rare classes matter as much as common ones.
    Rare samples are repeated rather than common ones dropped: dropping still pays for reading them."""
    from vlmchallenge.data.classes import NAME_TO_CLASS

    present = {NAME_TO_CLASS[name].index: n for name, n in class_counts.items() if n > 0}
    commonest = max(present.values())
    return {idx: (commonest / n) ** alpha for idx, n in present.items()}


def balance_classes(src: Iterator[dict], repeats: dict[int, float], seed: int) -> Iterator[dict]:
    """Repeat each (not yet decoded) sample by its class factor, stochastically rounded; the shuffle buffer
    after this stage spreads the copies out."""
    rng = random.Random(seed * 100_003 + wds.utils.pytorch_worker_seed())
    for sample in src:
        factor = repeats.get(int(sample["cls"]), 1.0)
        copies = int(factor) + (rng.random() < factor - int(factor))
        for _ in range(copies):
            yield sample


def to_example(sample: dict) -> Example:
    frames = [sample[k] for k in sorted(k for k in sample if k.endswith(".jpg"))]
    meta = sample["json"]
    meta["key"] = sample["__key__"]
    return Example(np.stack(frames), int(sample["cls"]), meta)


def read_split_index(out_dir: Path, split: str) -> tuple[list[str], int]:
    path = out_dir / split / INDEX_NAME
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: no shard index; run `python -m vlmchallenge.prepare` for these settings"
        )
    index = json.loads(path.read_text())
    urls = [str(out_dir / split / s["url"]) for s in index["shardlist"]]
    return urls, sum(s["nsamples"] for s in index["shardlist"])


class ShardDataModule(pl.LightningDataModule):
    def __init__(
        self,
        data: DataConfig,
        data_dir: str = "data",
        batch_size: int = 8,
        eval_batch_size: int = 16,
        num_workers: int = 1,
        shuffle_buffer: int = 500,
        class_balance: float = 0.0,
        seed: int = 0,
        test_split: str = "test",
        train_collate: Callable | None = None,
        eval_collate: Callable | None = None,
    ):
        super().__init__()
        self.data, self.data_dir = data, data_dir
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.num_workers, self.shuffle_buffer, self.seed = num_workers, shuffle_buffer, seed
        if not 0.0 <= class_balance <= 1.0:
            raise ValueError(f"loader.class_balance: expected a value in [0, 1], got {class_balance}")
        self.class_balance = class_balance
        self.test_split = test_split  # the evaluator may point the test stage at "val"
        self.train_collate, self.eval_collate = train_collate, eval_collate
        self.rank, self.world_size = 0, 1
        self.out_dir = data.resolved_out_dir(data_dir)
        self.manifest: dict | None = None

    def prepare_data(self) -> None:
        """Build (or reuse) the shards for these data settings; runs on one process per node."""
        prepare(self.data, self.data_dir)

    def setup(self, stage: str | None = None) -> None:
        if self.trainer is not None:
            self.rank, self.world_size = self.trainer.global_rank, self.trainer.world_size
        manifest = self.out_dir / MANIFEST_NAME
        if not manifest.exists():
            raise FileNotFoundError(f"{manifest}: shards not prepared; run `python -m vlmchallenge.prepare`")
        self.manifest = json.loads(manifest.read_text())

    def num_samples(self, split: str) -> int:
        return read_split_index(self.out_dir, split)[1]

    def train_batches_per_rank(self) -> int:
        return max(1, math.ceil(self.num_samples("train") / (self.world_size * self.batch_size)))

    def peek_train_batch(self, n: int | None = None) -> dict:
        """The first `n` training samples (default: a micro-batch) collated in-process, e.g. to read the real
        sequence length before planning memory."""
        urls, _ = read_split_index(self.out_dir, "train")
        pipeline = wds.DataPipeline(
            wds.SimpleShardList(urls[:1]), wds.tarfile_to_samples(), wds.decode("rgb8"), wds.map(to_example)
        )
        examples = list(islice(iter(pipeline), n or self.batch_size))
        return self.train_collate(examples)

    def _workers(self) -> dict:
        # persistent workers keep the resampled stream's epoch counter, so each epoch draws a new sequence
        return {"num_workers": self.num_workers, "persistent_workers": self.num_workers > 0}

    def train_dataloader(self):
        urls, total = read_split_index(self.out_dir, "train")
        if total == 0:
            raise ValueError(f"{self.out_dir}/train: the train split is empty; check data.splits")
        stages = [
            wds.ResampledShards(urls, seed=self.seed + 7919 * self.rank, deterministic=True),
            wds.tarfile_to_samples(),
        ]
        if self.class_balance > 0:
            counts = self.manifest["splits"]["train"]["class_counts"]
            repeats = class_repeat_factors(counts, self.class_balance)
            stages.append(partial(balance_classes, repeats=repeats, seed=self.seed + 7919 * self.rank))
        pipeline = wds.DataPipeline(
            *stages,
            wds.shuffle(self.shuffle_buffer, initial=min(self.shuffle_buffer, 100), seed=self.seed),
            wds.decode("rgb8"),
            wds.map(to_example),
            wds.batched(self.batch_size, collation_fn=self.train_collate, partial=False),
        )
        loader = wds.WebLoader(pipeline, batch_size=None, **self._workers())
        return loader.with_epoch(self.train_batches_per_rank())

    def _eval_loader(self, split: str):
        urls, total = read_split_index(self.out_dir, split)
        if total == 0:
            raise ValueError(f"{self.out_dir}/{split}: the {split} split is empty; check data.splits")
        pipeline = wds.DataPipeline(
            wds.SimpleShardList(urls),
            partial(split_by_rank, rank=self.rank, world_size=self.world_size),
            wds.split_by_worker,
            wds.tarfile_to_samples(),
            wds.decode("rgb8"),
            wds.map(to_example),
            wds.batched(self.eval_batch_size, collation_fn=self.eval_collate, partial=True),
        )
        return wds.WebLoader(pipeline, batch_size=None, **self._workers())

    def val_dataloader(self):
        return self._eval_loader("val")

    def test_dataloader(self):
        return self._eval_loader(self.test_split)
