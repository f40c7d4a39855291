"""The training loss with logits only where the loss is: the answer tokens at the end of each sequence.

A causal LM's full forward projects every position onto the ~152k vocabulary, although the loss covers only the few
answer tokens. The VLM forwards of every supported family (models/families/) accept a boolean `(batch, seq)` `logits_to_keep` and then runs
`lm_head` on those positions alone (`modeling_utils.slice_logits_to_keep`; docs/vram.md §1.4). The loss is the
model's own `loss_function` (`ForCausalLMLoss`) given the already-shifted targets, so it equals the full path's.
"""

from __future__ import annotations

import torch

from vlmchallenge.models.collator import IGNORE_INDEX


def loss_positions(labels: torch.Tensor) -> torch.Tensor:
    """(B, S) bool: the positions whose next token is supervised (a causal LM predicts token t+1 at t)."""
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    return keep


def answer_forward(model, inputs: dict, labels: torch.Tensor):
    """The model output with `loss` (mean cross-entropy over the answer tokens) and `logits` of shape
    (answer tokens in the batch, vocab), row by row in sequence order."""
    keep = loss_positions(labels)
    out = model(**inputs, logits_to_keep=keep, use_cache=False)
    targets = labels[:, 1:][keep[:, :-1]]
    if out.logits.shape[0] != targets.shape[0]:  # a forward that ignored logits_to_keep
        raise RuntimeError(
            f"{type(model).__name__} returned logits for {tuple(out.logits.shape[:-1])} positions, expected "
            f"{targets.shape[0]} answer positions: its forward does not support a boolean logits_to_keep"
        )
    vocab = out.logits.shape[-1]
    out["loss"] = model.loss_function(logits=out.logits, labels=None, vocab_size=vocab, shift_labels=targets)
    return out
