"""Processor-based collation of decoded clips into model batches.

- `TrainCollator`: prompt + answer, right padding; labels are -100 everywhere except the answer tokens
  (class name + `<|im_end|>`), found at the end of each row and checked against the answer's own tokenisation.
- `PromptCollator`: prompt only, left padding (for scoring and batched generation).
Both run the processor inside DataLoader workers, and give it each clip's sampled fps as `video_metadata`
(from the clip's span in `Example.meta`; docs/tiny-vlm.md §4): every family's time encoding depends on it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vlmchallenge.models.families.video_inputs import FRAMES_PER_CLIP
from vlmchallenge.models.prompt import PromptBuilder
from vlmchallenge.models.video_timing import video_metadata

# the label of every position without a loss: the `ignore_index` default of transformers' `ForCausalLMLoss` and of
# `torch.nn.functional.cross_entropy`; the one definition (training/answer_loss.py reads it from here)
IGNORE_INDEX = -100


@dataclass
class Example:
    frames: np.ndarray  # (T, H, W, 3) uint8
    label: int  # index into the prompt's class list
    meta: dict  # timing for the processor: `start_ms`/`end_ms` or `duration_ms` (models/video_timing.py)


class _Base:
    def __init__(self, processor, prompt: PromptBuilder):
        self.processor = processor
        self.prompt = prompt
        self.prompt_text = prompt.prompt(processor)
        self.answer_ids = prompt.answer_token_ids(processor.tokenizer)

    def _encode(self, texts: list[str], examples: list[Example], padding_side: str) -> dict:
        enc = self.processor(
            text=texts,
            videos=[ex.frames for ex in examples],
            video_metadata=[
                video_metadata(ex.frames, ex.meta, f"clip {ex.meta.get('key', i)}")
                for i, ex in enumerate(examples)
            ],
            return_tensors="pt",
            padding=True,
            padding_side=padding_side,
        )
        batch = dict(enc)
        batch["class_index"] = torch.tensor([ex.label for ex in examples], dtype=torch.long)
        batch[FRAMES_PER_CLIP] = torch.tensor([len(ex.frames) for ex in examples], dtype=torch.long)
        batch["meta"] = [ex.meta for ex in examples]
        return batch


class TrainCollator(_Base):
    def __call__(self, examples: list[Example]) -> dict:
        texts = [self.prompt_text + self.prompt.answer(ex.label) for ex in examples]
        batch = self._encode(texts, examples, "right")
        ids, lengths = batch["input_ids"], batch["attention_mask"].sum(1)
        labels = torch.full_like(ids, IGNORE_INDEX)
        for row, ex in enumerate(examples):
            answer = torch.tensor(self.answer_ids[ex.label])
            end = int(lengths[row])
            start = end - len(answer)
            if not torch.equal(ids[row, start:end], answer):
                raise ValueError(
                    f"answer tokens for {self.prompt.class_names[ex.label]!r} differ inside the prompt "
                    "(tokenizer merges across the prompt/answer boundary); cannot mask the loss safely"
                )
            labels[row, start:end] = answer
        batch["labels"] = labels
        del batch["meta"]  # not needed to train; Lightning would walk it on every device transfer
        return batch


class PromptCollator(_Base):
    def __call__(self, examples: list[Example]) -> dict:
        return self._encode([self.prompt_text] * len(examples), examples, "left")


def batch_size(batch: dict) -> int:
    """Clips in a collated batch (e.g. `batch_size_fn` of Lightning's `ThroughputMonitor`)."""
    return int(batch["input_ids"].shape[0])
