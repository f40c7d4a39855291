"""Streaming loaders: exact eval passes across simulated ranks x workers, exact train epochs per rank."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import webdataset as wds

from vlmchallenge.data.pipeline import prepare
from vlmchallenge.training.config import DataLoaderConfig
from vlmchallenge.training.datamodule import ShardDataModule


def keys_only(examples):
    return [ex.meta["key"] for ex in examples]


@pytest.fixture
def prepared(data_cfg, data_dir):
    data_cfg = dataclasses.replace(data_cfg, shards=dataclasses.replace(data_cfg.shards, maxcount=5))
    prepare(data_cfg, data_dir)
    return data_cfg


def make_dm(cfg, data_dir, **kw):
    seed = kw.pop("seed", 0)
    loader = DataLoaderConfig(**{"class_balance": 0.0, **kw})
    dm = ShardDataModule(cfg, loader, data_dir, seed=seed, train_collate=keys_only, eval_collate=keys_only)
    dm.setup("fit")
    return dm


def eval_keys(dm: ShardDataModule, split: str) -> list[str]:
    """The sample keys of one evaluation pass. The loader lives only in this frame, so its persistent workers
    end when it returns: the test's own frame ends up in a reference cycle (through the WebDataset read below),
    and workers freed by garbage collection cost 5 s each (torch's MP_STATUS_CHECK_INTERVAL)."""
    loader = dm.val_dataloader() if split == "val" else dm.test_dataloader()
    return [k for batch in loader for k in batch]


@pytest.mark.parametrize("split", ["val", "test"])
def test_two_ranks_two_workers_see_every_eval_sample_exactly_once(prepared, split, data_dir):
    per_rank: list[list[str]] = []
    for rank in range(2):
        dm = make_dm(prepared, data_dir, num_workers=2, eval_batch_size=3)
        dm.rank, dm.world_size = rank, 2
        per_rank.append(eval_keys(dm, split))
    # what is really on disk, read without the datamodule (nor its index)
    tars = sorted(str(p) for p in (Path(prepared.shards.out_dir) / split).glob("*.tar"))
    on_disk = [s["__key__"] for s in wds.WebDataset(tars, shardshuffle=False)]
    assert len(tars) >= 4  # enough shards for 2 ranks x 2 workers to each get some
    assert all(per_rank), "each rank gets a share"
    assert not set(per_rank[0]) & set(per_rank[1]), "ranks share no sample"
    seen = per_rank[0] + per_rank[1]
    assert len(seen) == len(set(seen)), "no sample twice (e.g. by two workers of one rank)"
    assert sorted(seen) == sorted(on_disk)


def test_train_epoch_is_exact_per_rank_and_batch_size_is_read_late(prepared, data_dir):
    dm = make_dm(prepared, data_dir, num_workers=2, batch_size=4)
    dm.rank, dm.world_size = 1, 2
    dm.batch_size = 3  # e.g. set by the VRAM planner after construction
    batches = list(dm.train_dataloader())
    n = dm.num_samples("train")
    assert len(batches) == -(-n // (2 * 3))
    assert all(len(b) == 3 for b in batches)


def test_ranks_stream_different_training_batches(prepared, data_dir):
    """The rank is part of the train stream's seed. Checked in one process: under real DDP webdataset's
    `ResampledShards` also mixes in the torch.distributed rank, which would hide a stream seeded without it."""

    def keys(rank):
        dm = make_dm(prepared, data_dir, num_workers=0, batch_size=4)
        dm.rank, dm.world_size = rank, 2
        return [k for b in dm.train_dataloader() for k in b]

    assert keys(0) != keys(1)


def test_train_stream_is_reproducible_for_a_seed(prepared, data_dir):
    a = [
        k
        for b in make_dm(prepared, data_dir, num_workers=0, batch_size=4, seed=1).train_dataloader()
        for k in b
    ]
    b = [
        k
        for b in make_dm(prepared, data_dir, num_workers=0, batch_size=4, seed=1).train_dataloader()
        for k in b
    ]
    c = [
        k
        for b in make_dm(prepared, data_dir, num_workers=0, batch_size=4, seed=2).train_dataloader()
        for k in b
    ]
    assert a == b != c


def test_each_epoch_streams_its_own_batches_whatever_came_before(prepared, data_dir):
    """Epoch e's stream is a function of (seed, rank, worker, e) only: a new epoch draws new batches, and a fresh
    datamodule told to resume at epoch 1 (from a checkpoint's state) streams exactly what a long-lived one does."""

    def keys(dm):
        return [k for batch in dm.train_dataloader() for k in batch]

    long_lived = make_dm(prepared, data_dir, num_workers=2, batch_size=4)
    epoch0 = keys(long_lived)
    long_lived.load_state_dict({"next_train_epoch": 1})
    epoch1 = keys(long_lived)
    resumed = make_dm(prepared, data_dir, num_workers=2, batch_size=4)
    resumed.load_state_dict({"next_train_epoch": 1})
    assert epoch1 != epoch0
    assert keys(resumed) == epoch1


def test_examples_carry_frames_label_and_metadata(data_cfg, data_dir):
    prepare(data_cfg, data_dir)
    dm = ShardDataModule(
        data_cfg, DataLoaderConfig(num_workers=0, eval_batch_size=2), data_dir, eval_collate=lambda xs: xs
    )
    dm.setup("test")
    ex = next(iter(dm.test_dataloader()))[0]
    assert ex.frames.shape == (4, 56, 112, 3) and ex.frames.dtype.name == "uint8"
    assert ex.label == ex.meta["label_index"] and ex.meta["user"] == "U9003"
    assert torch.is_tensor(torch.from_numpy(ex.frames))


def test_missing_shards_give_a_clear_error(data_cfg, data_dir):
    dm = ShardDataModule(data_cfg, DataLoaderConfig(), data_dir)
    with pytest.raises(FileNotFoundError, match="run `python -m vlmchallenge.prepare`"):
        dm.setup("fit")


def test_class_balance_repeat_factors():
    from vlmchallenge.training.datamodule import class_repeat_factors

    full = class_repeat_factors({"Picking": 400, "Put on Back Table": 25, "Null": 0}, alpha=1.0)
    assert full == {0: 1.0, 8: 16.0}
    half = class_repeat_factors({"Picking": 400, "Put on Back Table": 25}, alpha=0.5)
    assert half[0] == 1.0 and half[8] == pytest.approx(4.0)
    assert class_repeat_factors({"Picking": 400, "Put on Back Table": 25}, alpha=0.0) == {0: 1.0, 8: 1.0}


def test_balanced_stream_evens_out_class_frequencies(prepared, data_dir):
    from collections import Counter

    def labels(balance):
        loader = DataLoaderConfig(num_workers=0, batch_size=4, class_balance=balance)
        dm = ShardDataModule(
            prepared, loader, data_dir, seed=3, train_collate=lambda xs: [x.label for x in xs]
        )
        dm.setup("fit")
        counts = Counter()
        for epoch in range(12):  # resampling shards with replacement is noisy: average over epochs
            dm.load_state_dict({"next_train_epoch": epoch})
            counts.update(y for b in dm.train_dataloader() for y in b)
        return counts

    natural, balanced = labels(0.0), labels(1.0)
    spread = lambda c: max(c.values()) / min(c.values())  # noqa: E731
    assert spread(balanced) < spread(natural)
    with pytest.raises(ValueError, match="class_balance"):
        ShardDataModule(prepared, DataLoaderConfig(class_balance=2.0), data_dir)


def test_one_process_prepares_for_all_nodes(prepared, data_dir):
    """Multi-node ranks share the shard folder; Lightning must call `prepare_data` on global rank 0 only."""
    assert make_dm(prepared, data_dir).prepare_data_per_node is False
