"""Stream prepared WebDataset shards into the model.

- train: shards resampled with replacement, a shuffle buffer, decoding + processor collation inside the workers,
  fixed-size batches, and an epoch length computed from the shard index: exactly `ceil(samples / (world * batch))`
  batches per rank, so DDP ranks never wait on each other. Every random choice of epoch `e` is seeded from
  (seed, rank, worker, e) alone, so a run resumed at an epoch boundary streams exactly the batches an
  uninterrupted run would (see `TrainStream`).
- val/test: one exact pass; shards split by rank, then by worker, so each sample is seen exactly once.
`batch_size` is read when a loader is built, so a callback (the VRAM planner) may set it first.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from dataclasses import asdict
from functools import partial
from itertools import islice
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset

from vlmchallenge.data import locations
from vlmchallenge.data.classes import NAME_TO_CLASS
from vlmchallenge.data.config import DataConfig
from vlmchallenge.data.manifest import MANIFEST_NAME, ShardManifest
from vlmchallenge.data.pipeline import prepare
from vlmchallenge.data.shard_writer import INDEX_NAME
from vlmchallenge.models.collator import Example
from vlmchallenge.training.config import DataLoaderConfig
from vlmchallenge.training.shard_errors import (
    READ_KEY,
    SKIPPED_KEY,
    FailOnBadShard,
    SkipCounter,
    check_skipped,
)
from vlmchallenge.utils.input_errors import EmptySplitError


def split_by_rank(src: Iterator, rank: int, world_size: int) -> Iterator:
    """Disjoint shard subsets per rank (explicit rank/world, so it works before and without torch.distributed)."""
    yield from islice(src, rank, None, world_size)


def class_repeat_factors(class_counts: dict[str, int], alpha: float) -> dict[int, float]:
    """Expected repeats per sample of each class so the stream's class frequencies go from n_c to
    ~n_c^(1-alpha): alpha 0 = natural distribution, 1 = balanced. OpenPack is imbalanced (e.g. "Put on Back
    Table" is ~1 % of the seconds) and the metric is macro-F1, so rare classes matter as much as common ones.
    Rare samples are repeated rather than common ones dropped: dropping still pays for reading them."""
    present = {NAME_TO_CLASS[name].index: n for name, n in class_counts.items() if n > 0}
    commonest = max(present.values())
    return {idx: (commonest / n) ** alpha for idx, n in present.items()}


def balance_classes(src: Iterator[dict], repeats: dict[int, float], seed: int) -> Iterator[dict]:
    """Repeat each (not yet decoded) sample by its class factor, stochastically rounded; the shuffle buffer
    after this stage spreads the copies out."""
    rng = random.Random(seed)
    for sample in src:
        factor = repeats.get(int(sample["cls"]), 1.0)
        copies = int(factor) + (rng.random() < factor - int(factor))
        for _ in range(copies):
            yield sample


def stream_seed(seed: int, rank: int, worker: int, epoch: int) -> int:
    """One seed per (run seed, rank, DataLoader worker, epoch): the only state a training stream depends on."""
    return wds.utils.make_seed(seed, rank, worker, epoch)  # ints only: str hashes change per process


class TrainStream(IterableDataset):
    """One rank's training batches for one epoch, split across DataLoader workers.

    Each pass is rebuilt from `(seed, rank, worker, epoch)`: shard resampling, class balancing and the shuffle
    buffer are all seeded from it, and worker `w` of `W` yields the batches `w, w+W, ...` of the epoch's
    `batches` (the DataLoader interleaves workers in that order). Nothing carries over between passes, so the
    stream of epoch `e` is the same whether the process trained epochs `0..e-1` itself or resumed from a
    checkpoint taken after them. `epoch` is set by `EpochLoader` before each pass.

    An unreadable shard (truncated, flipped bits) is skipped with a warning; every batch carries, under
    `SKIPPED_KEY`, how many samples were lost since the previous one (`SkipCounter`), counted against each
    shard's `nsamples` in the index.
    """

    def __init__(
        self,
        shards: dict[str, int],
        batches: int,
        batch_size: int,
        collate: Callable,
        shuffle_buffer: int,
        repeats: dict[int, float] | None,
        seed: int,
        rank: int,
    ):
        super().__init__()
        self.shards, self.urls = shards, list(shards)
        self.batches, self.batch_size, self.collate = batches, batch_size, collate
        self.shuffle_buffer, self.repeats, self.seed, self.rank = shuffle_buffer, repeats, seed, rank
        self.epoch = 0

    def __len__(self) -> int:
        """Batches per pass: Lightning sizes the epoch, the progress bar and the LR schedule by it."""
        return self.batches

    def __iter__(self) -> Iterator:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        seed = stream_seed(self.seed, self.rank, worker, self.epoch)
        skips = SkipCounter(self.shards)
        stages = [
            wds.ResampledShards(self.urls, seed=seed, deterministic=True),
            skips.read_shards,
        ]
        if self.repeats:
            stages.append(partial(balance_classes, repeats=self.repeats, seed=seed + 1))
        pipeline = wds.DataPipeline(
            *stages,
            wds.shuffle(self.shuffle_buffer, initial=min(self.shuffle_buffer, 100), seed=seed + 2),
            wds.decode("rgb8", handler=skips.handler),
            wds.map(to_example, handler=skips.handler),
            wds.batched(self.batch_size, collation_fn=self.collate, partial=False),
            wds.map(skips.tag_batch),
        )
        return islice(iter(pipeline), len(range(worker, self.batches, workers)))


class EpochLoader(DataLoader):
    """A DataLoader over a `TrainStream` that tells the stream its epoch (from `epoch_fn`, the trainer's) before
    every pass. Workers are started per pass (not persistent) so they see that epoch, and the loader has its own
    generator so creating it never draws from the global torch RNG that LoRA dropout uses."""

    def __init__(self, stream: TrainStream, epoch_fn: Callable[[], int], num_workers: int):
        super().__init__(stream, batch_size=None, num_workers=num_workers, generator=torch.Generator())
        self.epoch_fn = epoch_fn

    def __iter__(self):
        stream: TrainStream = self.dataset
        stream.epoch = self.epoch_fn()
        self.generator.manual_seed(stream_seed(stream.seed, stream.rank, -1, stream.epoch))
        return super().__iter__()


def to_example(sample: dict) -> Example:
    frames = [sample[k] for k in sorted(k for k in sample if k.endswith(".jpg"))]
    meta = sample["json"]
    meta["key"] = sample["__key__"]
    return Example(np.stack(frames), int(sample["cls"]), meta)


def read_split_index(out_dir: Path | str, split: str) -> tuple[list[str], int]:
    """Shard URLs (or paths) and the sample count of one split (see `read_split_shards`)."""
    shards = read_split_shards(out_dir, split)
    return list(shards), sum(shards.values())


def read_split_shards(out_dir: Path | str, split: str) -> dict[str, int]:
    """Each shard's URL (or path) and sample count, from the split's wids-style index, whose `url`s are
    relative to the index's folder, so a prepared folder reads the same from disk or after an upload."""
    path = locations.join(out_dir, split, INDEX_NAME)
    try:
        index = locations.read_json(path, "shard index")
    except FileNotFoundError as e:
        raise FileNotFoundError(
            f"{path}: no shard index; run `python -m vlmchallenge.prepare` for these settings"
        ) from e
    shards = index.get("shardlist")
    if not isinstance(shards, list) or not all(
        isinstance(s, dict) and isinstance(s.get("url"), str) and isinstance(s.get("nsamples"), int)
        for s in shards
    ):
        raise ValueError(f"{path}: expected a `shardlist` of {{url: str, nsamples: int, ...}} entries")
    return {str(locations.join(out_dir, split, s["url"])): s["nsamples"] for s in shards}


def empty_split_error(split: str, out_dir, data: DataConfig, manifest: ShardManifest) -> EmptySplitError:
    """Why `split` has no samples, from the manifest, and what to change."""
    users, stats = getattr(data.splits, split), manifest.splits.get(split)
    if not users:
        why = f"data.splits.{split} is empty"
    elif stats is None or not stats.sessions:
        why = f"no session under data.root={data.root} belongs to data.splits.{split}={list(users)}"
    else:
        why = f"its sessions {stats.sessions} gave no clips (skipped: {stats.skipped})"
    unassigned = manifest.unassigned_sessions
    others = f"; sessions in no split: {', '.join(unassigned)}" if unassigned else ""
    return EmptySplitError(
        f"{locations.join(out_dir, split)}: the {split} split has no samples: {why}{others}. Put users that "
        f"have recordings under data.root into data.splits.{split} (or loosen data.clips) and run again"
    )


class ShardDataModule(pl.LightningDataModule):
    """The shards of one prepared dataset as Lightning loaders. Its hyperparameters (data and dataloader
    settings, seed, test split) are saved in every checkpoint, so a checkpoint describes its own data."""

    def __init__(
        self,
        data: DataConfig,
        dataloader: DataLoaderConfig,
        data_dir: str | Path,
        seed: int = 0,
        test_split: str = "test",
        train_collate: Callable | None = None,
        eval_collate: Callable | None = None,
    ):
        super().__init__()
        dataloader.validate()
        if data.is_subset:
            raise ValueError(
                "data.sessions / data.shard_of pick the sessions of one `prepare` job; training and evaluation "
                "read the whole merged dataset: run `python -m vlmchallenge.prepare ... merge=true` and drop them"
            )
        self.save_hyperparameters(
            {"data": asdict(data), "dataloader": asdict(dataloader), "seed": seed, "test_split": test_split},
            logger=False,
        )
        self.data, self.data_dir, self.seed, self.test_split = data, data_dir, seed, test_split
        self.batch_size, self.eval_batch_size = dataloader.batch_size, dataloader.eval_batch_size
        self.num_workers, self.shuffle_buffer = dataloader.num_workers, dataloader.shuffle_buffer
        self.class_balance = dataloader.class_balance
        self.max_skipped_fraction = data.max_skipped_fraction
        # this epoch's skipped and read training samples, summed over loader workers
        self.skipped_samples = self.read_samples = 0
        self.skipped_epoch = -1
        self.train_collate, self.eval_collate = train_collate, eval_collate
        self.rank, self.world_size = 0, 1
        self.out_dir = data.resolved_out_dir(data_dir)
        self.manifest: ShardManifest | None = None
        self.resumed_epoch = 0
        # Multi-node runs share one filesystem (they share the run folder too): one process prepares while the
        # others wait, instead of one per node writing the same shard files at once (docs/scaling.md §1.3)
        self.prepare_data_per_node = False

    def prepare_data(self) -> None:
        """Build (or reuse) the shards for these data settings; runs on one process per node. At a URL nothing
        is built: `prepare` checks that the uploaded manifest was made with these settings."""
        prepare(self.data, self.data_dir)

    def setup(self, stage: str | None = None) -> None:
        if self.trainer is not None:
            self.rank, self.world_size = self.trainer.global_rank, self.trainer.world_size
        try:
            self.manifest = ShardManifest.read(self.out_dir)
        except FileNotFoundError as e:
            raise FileNotFoundError(
                f"{locations.join(self.out_dir, MANIFEST_NAME)}: shards not prepared; run `python -m "
                "vlmchallenge.prepare`"
            ) from e
        locations.check_shard_reader(self.out_dir)
        if stage == "fit" and self.num_samples("train") == 0:
            # setup runs before configure_model: refuse before any weights load (docs/reliability-inputs.md §3)
            raise empty_split_error("train", self.out_dir, self.data, self.manifest)

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

    def train_epoch(self) -> int:
        """The epoch the next training pass belongs to. On resume Lightning builds the first pass's iterator before
        it restores its loop counters (`FitLoop.setup_data`, called early by `estimated_stepping_batches`), so
        the epoch saved in the checkpoint with this datamodule's state takes precedence then."""
        epoch = self.trainer.current_epoch if self.trainer is not None else 0
        return max(epoch, self.resumed_epoch)

    def state_dict(self) -> dict:
        # saved at an epoch's end, `processed` already counts that epoch: the resumed run starts the next one
        epoch = self.trainer.fit_loop.epoch_progress.current.processed if self.trainer is not None else 0
        return {"next_train_epoch": epoch}

    def load_state_dict(self, state: dict) -> None:
        self.resumed_epoch = int(state.get("next_train_epoch", 0))

    def on_before_batch_transfer(self, batch, dataloader_idx: int):
        """Sum the workers' skip counts of this epoch into the batch (the module logs it as
        `data/skipped_samples`) and stop once they pass `data.max_skipped_fraction` of what was read."""
        if isinstance(batch, dict) and SKIPPED_KEY in batch:
            epoch = self.trainer.current_epoch if self.trainer is not None else 0
            if epoch != self.skipped_epoch:
                self.skipped_samples = self.read_samples = 0
                self.skipped_epoch = epoch
            self.skipped_samples += int(batch[SKIPPED_KEY])
            self.read_samples += int(batch.pop(READ_KEY))
            batch[SKIPPED_KEY] = self.skipped_samples
            check_skipped(
                self.skipped_samples,
                self.read_samples,
                self.train_batches_per_rank() * self.batch_size,
                self.max_skipped_fraction,
                str(locations.join(self.out_dir, "train")),
            )
        return batch

    def train_dataloader(self):
        shards = read_split_shards(self.out_dir, "train")
        total = sum(shards.values())
        if total == 0:
            raise ValueError(f"{self.out_dir}/train: the train split is empty; check data.splits")
        repeats = None
        if self.class_balance > 0:
            counts = self.manifest.splits["train"].class_counts
            repeats = class_repeat_factors(counts, self.class_balance)
        stream = TrainStream(
            shards,
            self.train_batches_per_rank(),
            self.batch_size,
            self.train_collate,
            self.shuffle_buffer,
            repeats,
            self.seed,
            self.rank,
        )
        return EpochLoader(stream, self.train_epoch, self.num_workers)

    def _eval_loader(self, split: str):
        shards = read_split_shards(self.out_dir, split)
        urls, total = list(shards), sum(shards.values())
        if total == 0:
            raise ValueError(f"{self.out_dir}/{split}: the {split} split is empty; check data.splits")
        # evaluation never skips: a bad shard stops it, naming the shard and how to rebuild it
        fail = FailOnBadShard(shards, str(locations.join(self.out_dir, split)))
        pipeline = wds.DataPipeline(
            wds.SimpleShardList(urls),
            partial(split_by_rank, rank=self.rank, world_size=self.world_size),
            wds.split_by_worker,
            fail.read_shards,
            wds.decode("rgb8", handler=fail),
            wds.map(to_example, handler=fail),
            wds.batched(self.eval_batch_size, collation_fn=self.eval_collate, partial=True),
        )
        # its own generator: building the loader never draws from the global RNG (exact resume). A plain
        # DataLoader, not wds.WebLoader: Lightning shuts down a DataLoader's persistent workers when the stage
        # ends, but cannot reach the DataLoader inside a WebLoader, whose workers then live on until garbage
        # collection, where torch's shutdown waits 5 s (MP_STATUS_CHECK_INTERVAL) for each one
        return DataLoader(
            pipeline,
            batch_size=None,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            generator=torch.Generator().manual_seed(self.seed),
        )

    def val_dataloader(self):
        return self._eval_loader("val")

    def test_dataloader(self):
        return self._eval_loader(self.test_split)
