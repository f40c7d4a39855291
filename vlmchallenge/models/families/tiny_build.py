"""What every tiny builder shares: a byte-level BPE tokenizer trained locally on a small corpus, the M-RoPE
split of a head, seeded construction, and the atomic, locked save (docs/tiny-vlm.md §1).

Nothing is downloaded: the tokenizer is trained here, the weights are random, and the folder is then loaded
through the same `Auto*` code as a real checkpoint (`models/loader.py`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from vlmchallenge.data.classes import OPENPACK_OPERATIONS
from vlmchallenge.models.families.tiny_spec import TinyModelSpec
from vlmchallenge.utils.atomic import atomic_directory, build_lock

CHATML_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

CORPUS = """Beautiful is better than ugly. Explicit is better than implicit. Simple is better than complex.
Complex is better than complicated. Flat is better than nested. Sparse is better than dense.
Readability counts. Special cases aren't special enough to break the rules. Although practicality beats purity.
Errors should never pass silently. Unless explicitly silenced. In the face of ambiguity, refuse the temptation
to guess. There should be one-- and preferably only one --obvious way to do it. Now is better than never.
You are a helpful assistant. Which packaging operation is shown in the video? Answer with one of the options.
Options: the worker packs items into a box at the work bench, scans labels and fills out the order sheet.
"""
# what a family that writes time as text adds to its corpus, so ` seconds` is one token as in the real vocabularies
TIMESTAMP_CORPUS = (
    "<0.0 seconds> <0.2 seconds> <0.5 seconds> <1.0 seconds> <1.5 seconds> <2.7 seconds> <3.8 seconds>"
)


def corpus_lines(extra: str = "") -> list[str]:
    names = [c.name for c in OPENPACK_OPERATIONS]
    return CORPUS.splitlines() + extra.splitlines() + names * 20 + [", ".join(names)] * 5


def train_tokenizer(
    spec: TinyModelSpec,
    tokenizer_cls,
    pretokenize_regex: str,
    special: list[str],
    extra_corpus: str = "",
    **kwargs,
):
    """A `tokenizer_cls` (a tokenizers-backed Qwen-style BPE class) over a vocabulary trained on the corpus
    (plus `extra_corpus`). `special[0]` is the pad token; all of `special` are added as special tokens."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(pretokenize_regex), "isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(corpus_lines(extra_corpus), trainer)
    merges = [tuple(m) for m in json.loads(bpe.to_str())["model"]["merges"]]
    return tokenizer_cls(
        vocab=bpe.get_vocab(),
        merges=merges,
        pad_token=special[0],
        extra_special_tokens=special[1:],
        **kwargs,
    )


def mrope_section(head_dim: int, interleaved: bool) -> list[int]:
    """How a head's rotary frequency pairs are split between (time, height, width), in the proportions of the
    real checkpoints: Qwen2-VL gives time a quarter ([16, 24, 24] of 64 pairs); interleaved Qwen3-VL gives
    height and width 5/16 each ([24, 20, 20]), taking every third pair from 1 and from 2."""
    pairs = head_dim // 2
    if interleaved:
        side = pairs * 5 // 16
        return [pairs - 2 * side, side, side]
    t = pairs // 4
    h = (pairs - t) // 2
    return [t, h, pairs - t - h]


def seeded(spec: TinyModelSpec, make: Callable):
    """`make()` under the spec's seed, without moving the caller's random stream."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        return make()


def save_tiny(spec: TinyModelSpec, out_dir: Path, model, processor) -> None:
    with atomic_directory(out_dir) as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        (tmp / "tiny_spec.json").write_text(json.dumps(asdict(spec), indent=1))


def ensure_built(folder: Path, build: Callable[[Path], None]) -> Path:
    """`folder`, built on first use. Every rank of a job calls this at once: one builds under the lock, the
    others wait for it and then find the folder complete."""
    with build_lock(folder):
        if not (folder / "config.json").exists():
            build(folder)
    return folder
