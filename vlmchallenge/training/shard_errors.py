"""Unreadable shards: skipped and counted while training, a clear failure while evaluating.

Both use webdataset's own `handler=` hook: every stage that can meet a bad shard (opening it, reading its tar
stream, grouping members into samples, decoding, building an `Example`) calls the handler with the exception
and goes on (`True`) or stops. webdataset appends the shard URL to the exception's `args` when it comes from
opening or reading a shard (`url_opener`, `tar_file_expander` in webdataset/tariterators.py), which is how an
evaluation error names its shard. See docs/reliability-training.md §1.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator

import webdataset as wds

from vlmchallenge.utils.input_errors import InputError

log = logging.getLogger(__name__)

SKIPPED_KEY = "skipped_samples"  # set on each training batch: samples skipped since the previous batch
READ_KEY = "read_samples"  # and whole samples read from shards since then (the shuffle buffer reads ahead)
REBUILD_HINT = (
    "delete it and rerun `python -m vlmchallenge.prepare` with the same data settings to rebuild it "
    "(shards are deterministic, so the rebuilt file is what the index expects)"
)


def shard_url_of(exn: BaseException, known: set[str]) -> str | None:
    """The shard URL webdataset appended to an exception's args, if any."""
    for arg in reversed(getattr(exn, "args", ()) or ()):
        if isinstance(arg, str) and arg in known:
            return arg
    return None


def is_whole(sample: dict) -> bool:
    """All of a sample's members arrived: its label, its metadata, and one JPEG per frame it lists."""
    if "cls" not in sample or "json" not in sample:
        return False
    try:
        frames = len(json.loads(sample["json"])["frame_ts_ms"])
    except (ValueError, KeyError, TypeError):
        return False
    return sum(k.endswith(".jpg") for k in sample) == frames


def read_counted(
    src: Iterator[dict],
    expected: dict[str, int],
    handler: Callable[[BaseException], bool],
    on_partial: Callable[[str, dict], None],
    on_miscount: Callable[[str, int, int], None],
) -> Iterator[dict]:
    """The whole samples of each shard in `src`, read one shard at a time with webdataset's `tarfile_samples`.
    An incomplete sample goes to `on_partial(url, sample)` instead; a shard that delivered another number of
    whole samples than its index lists, to `on_miscount(url, delivered, listed)` once it ends (a flipped header
    bit ends a tar stream quietly, see `SkipCounter`). Training counts what these cost, evaluation stops."""
    for shard in src:
        url, delivered = shard["url"], 0
        for sample in wds.tarfile_samples([{"url": url}], handler=handler):
            if not is_whole(sample):
                on_partial(url, sample)
                continue
            delivered += 1
            yield sample
        listed = expected.get(url, delivered)
        if delivered != listed:
            on_miscount(url, delivered, listed)


class SkipCounter:
    """Warns about and counts what unreadable shards cost, in samples, for one DataLoader worker's pass.

    `read_shards` reads one shard at a time with webdataset's `tarfile_samples(handler=...)` and passes on only
    whole samples (`is_whole`). A shard read that delivers fewer than the `nsamples` its index lists lost the
    difference. That covers a tar stream that raises (a truncated file) and one that ends quietly: Python's
    `tarfile` treats a header with a bad checksum after the first as the end of the archive, so a flipped bit
    in a header silently drops the rest of the shard (docs/reliability-training.md §1). A sample that fails
    later on its own (`handler` on decoding or building an `Example`) costs one. Each worker holds its own
    copy; `take()` hands the count since the last call to the next batch (`tag_batch`).
    """

    def __init__(self, nsamples_by_url: dict[str, int]):
        self.expected = dict(nsamples_by_url)
        self.pending = self.pending_read = 0

    def handler(self, exn: BaseException) -> bool:
        log.warning("skipping an unreadable training sample: %r", exn)
        self.pending += 1
        return True

    def read_handler(self, exn: BaseException) -> bool:
        log.warning("unreadable training shard, skipping the rest of it: %r", exn)
        return True

    def read_shards(self, src: Iterator[dict]) -> Iterator[dict]:
        for sample in read_counted(
            src, self.expected, self.read_handler, lambda url, s: None, self.count_lost
        ):
            self.pending_read += 1
            yield sample

    def count_lost(self, url: str, delivered: int, listed: int) -> None:
        if (lost := listed - delivered) > 0:  # a partial sample is not delivered, so it is counted here
            log.warning("%s: %d of its %d training samples unreadable, skipped", url, lost, listed)
            self.pending += lost

    def take(self) -> tuple[int, int]:
        """(skipped, read) since the last call."""
        counts, self.pending, self.pending_read = (self.pending, self.pending_read), 0, 0
        return counts

    def tag_batch(self, batch):
        """The collators' batches are dicts; any other collation (e.g. a test's key list) goes untagged."""
        if isinstance(batch, dict):
            batch[SKIPPED_KEY], batch[READ_KEY] = self.take()
        return batch


class UnreadableShardError(InputError, RuntimeError):
    """An evaluation shard could not be read; evaluation never drops data silently. The entry points print the
    message (shard, what is wrong, remedy) without a traceback."""


class FailOnBadShard:
    """Evaluation's handler and shard reader: stop, naming the shard and the remedy. A shard that raises,
    delivers a partial sample, or ends before the `nsamples` of its index (a flipped header bit) all stop it."""

    def __init__(self, nsamples_by_url: dict[str, int], split_dir: str):
        self.expected, self.split_dir = dict(nsamples_by_url), split_dir

    def fail(self, where: str, what: str, cause: BaseException | None = None):
        raise UnreadableShardError(
            f"{where}: unreadable evaluation shard ({what}); evaluation never skips data: {REBUILD_HINT}"
        ) from cause

    def __call__(self, exn: BaseException) -> bool:
        if isinstance(exn, UnreadableShardError):
            raise exn
        where = shard_url_of(exn, set(self.expected)) or f"a shard under {self.split_dir}"
        first = exn.args[0] if getattr(exn, "args", None) else exn
        self.fail(where, f"{type(exn).__name__}: {first}", exn)

    def read_shards(self, src: Iterator[dict]) -> Iterator[dict]:
        return read_counted(src, self.expected, self, self.incomplete, self.miscounted)

    def incomplete(self, url: str, sample: dict) -> None:
        self.fail(url, f"sample {sample.get('__key__')} is incomplete")

    def miscounted(self, url: str, delivered: int, listed: int) -> None:
        self.fail(url, f"{delivered} samples readable, its index lists {listed}")


class TooManySkippedSamples(InputError, RuntimeError):
    """More of an epoch's training samples were unreadable than `data.max_skipped_fraction` allows."""


def check_skipped(skipped: int, read: int, epoch_samples: int, max_fraction: float, split_dir: str) -> None:
    """Stop a run that has lost more than `max_fraction` of the samples it read this epoch to unreadable shards.

    The denominator is at least an epoch's samples: early in an epoch one bad shard among thousands would
    otherwise look like most of the data. Shards are drawn with replacement, so a bad shard drawn twice costs
    twice: the count is what the epoch really lost, not how many samples are damaged on disk."""
    seen = max(epoch_samples, skipped + read)
    if skipped > max_fraction * seen:
        raise TooManySkippedSamples(
            f"{split_dir}: {skipped} of {seen} training samples read this epoch were unreadable (skipped), more "
            f"than data.max_skipped_fraction={max_fraction}; the warnings above name the shards: {REBUILD_HINT}"
        )
