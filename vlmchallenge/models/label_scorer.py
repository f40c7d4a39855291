"""Rank the class names as continuations of the prompt: per-class log-likelihoods, so the prediction is always
a valid class and probabilities come for free (mAP, calibration).

The prompt (video + question) is encoded once; its cache is repeated K times and the K answers are scored in
one batched pass (docs/learnability.md §3: 10-20x faster than a forward per class, equal within 1e-5).
- The cache is repeated with `Cache.reorder_cache`, which copies every layer's state row: keys and values, and
  the convolution and recurrent state of a hybrid model's linear-attention layers (docs/families.md §4).
- Answers are plain text, so under M-RoPE all position rows continue at `prompt_len + rope_delta`; under plain
  RoPE at `prompt_len` (the family says which: `Family.mrope_rows`).
"""

from __future__ import annotations

from collections import defaultdict

import torch

from vlmchallenge.models.families import family_of
from vlmchallenge.models.families.video_inputs import VideoInputs, select_clips
from vlmchallenge.models.prompt import PromptBuilder

# Every family's prompt inputs (models/families/video_inputs.py): text, then the pixels and per-clip tensors of
# grid families (`second_per_grid_ts`: the time step of M-RoPE-seconds ones; models/video_timing.py) and of tile
# families (`pixel_values`, a tile per frame). A batch holds the keys of its own family only.
TEXT_KEYS = ("input_ids", "attention_mask", "mm_token_type_ids")
PROMPT_KEYS = (*TEXT_KEYS, "pixel_values_videos", "video_grid_thw", "second_per_grid_ts", "pixel_values")


def _rope_deltas(model) -> torch.Tensor:
    for m in model.modules():  # the inner VLM model keeps them after a prompt forward; PEFT wraps it deeper
        deltas = getattr(m, "rope_deltas", None)
        if isinstance(deltas, torch.Tensor):
            return deltas
    raise RuntimeError("an M-RoPE model exposed no rope_deltas after the prompt forward")


def answer_positions(model, prompt_len: int, steps: int, rows: int, repeats: int) -> torch.Tensor:
    """Position ids of the answer tokens after a prompt of `prompt_len` (one batch row per clip and class)."""
    device = next(model.parameters()).device
    positions = (prompt_len + torch.arange(steps, device=device))[None]
    if rows == 1:
        return positions
    deltas = _rope_deltas(model).to(device).reshape(-1, 1).repeat_interleave(repeats, 0)
    return (positions + deltas)[None].expand(rows, -1, -1)


def select_rows(layout: VideoInputs, batch: dict, rows: list[int]) -> dict:
    """Rows of a prompt batch, with their video pixels; left padding removed when all rows share a length."""
    length = int(batch["attention_mask"][rows[0]].sum())
    out = {k: batch[k][rows, -length:] for k in TEXT_KEYS if k in batch}
    return out | select_clips(layout, batch, rows)


class LabelScorer:
    def __init__(self, tokenizer, prompt: PromptBuilder):
        ids = prompt.answer_token_ids(tokenizer)
        self.num_classes = len(ids)
        self.lengths = torch.tensor([len(a) for a in ids])
        pad = tokenizer.pad_token_id or 0
        self.answers = torch.tensor([a + [pad] * (int(self.lengths.max()) - len(a)) for a in ids])

    @torch.no_grad()
    def score(self, model, batch: dict) -> torch.Tensor:
        """(B, K) summed log-probabilities of each class answer given each clip's prompt."""
        lengths = batch["attention_mask"].sum(1).tolist()
        groups: dict[int, list[int]] = defaultdict(list)
        for row, n in enumerate(lengths):
            groups[n].append(row)
        out = torch.empty(len(lengths), self.num_classes)
        layout = family_of(model.config).video_inputs
        for rows in groups.values():
            out[rows] = self._score_same_length(model, select_rows(layout, batch, rows)).cpu()
        return out

    def _score_same_length(self, model, enc: dict) -> torch.Tensor:
        b, prompt_len = enc["input_ids"].shape
        k = self.num_classes
        device = enc["input_ids"].device
        out = model(**{key: enc[key] for key in PROMPT_KEYS if key in enc}, use_cache=True)
        first = out.logits[:, -1].float().log_softmax(-1).repeat_interleave(k, 0)  # (B*K, V)
        cache = out.cache if hasattr(out, "cache") else out.past_key_values
        cache.reorder_cache(torch.arange(b, device=device).repeat_interleave(k))  # row b*K + k: clip b
        answers = self.answers.to(device).repeat(b, 1)  # row b*K + k is answer k
        lengths = self.lengths.to(device).repeat(b)
        steps = answers.shape[1]
        rows = family_of(model.config).mrope_rows
        logits = (
            model(
                input_ids=answers,
                position_ids=answer_positions(model, prompt_len, steps, rows, k),
                cache=cache,
                use_cache=False,
            )
            .logits.float()
            .log_softmax(-1)
        )
        total = first.gather(1, answers[:, :1]).squeeze(1)
        if steps > 1:
            rest = logits[:, :-1].gather(-1, answers[:, 1:, None]).squeeze(-1)
            mask = torch.arange(1, steps, device=device)[None] < lengths[:, None]
            total = total + (rest * mask).sum(1)
        return total.view(b, k)

    @torch.no_grad()
    def score_naive(self, model, batch: dict) -> torch.Tensor:
        """Reference: one full forward per (clip, class). Slow; used by tests and bench/scoring.py.

        Deliberately shares no code with `score`: each row is cut out of the batch here (its own left padding
        dropped by the attention mask, its own pixel rows found by counting the rows of the clips before it)."""
        layout = family_of(model.config).video_inputs
        rows_per_clip = layout.rows_per_clip(batch)
        out = torch.empty(len(rows_per_clip), self.num_classes)
        for row in range(len(rows_per_clip)):
            real = batch["attention_mask"][row].bool()
            prompt_ids = batch["input_ids"][row][real][None]
            mm_types = batch["mm_token_type_ids"][row][real][None] if "mm_token_type_ids" in batch else None
            first = sum(rows_per_clip[:row])
            vision = {layout.pixels: batch[layout.pixels][first : first + rows_per_clip[row]]}
            vision |= {key: batch[key][row : row + 1] for key in layout.per_clip if key in batch}
            p = prompt_ids.shape[1]
            for c in range(self.num_classes):
                answer = self.answers[c, : self.lengths[c]].to(prompt_ids.device)[None]
                ids = torch.cat([prompt_ids, answer], 1)
                extra = {}
                if mm_types is not None:  # the answer is text: type 0
                    extra["mm_token_type_ids"] = torch.cat([mm_types, torch.zeros_like(answer)], 1)
                logits = model(
                    input_ids=ids,
                    attention_mask=torch.ones_like(ids),
                    **vision,
                    **extra,
                ).logits.float()
                # the token at position i is predicted by the logits at i - 1
                log_probs = logits[0, p - 1 : p - 1 + answer.shape[1]].log_softmax(-1)
                out[row, c] = log_probs.gather(-1, answer[0, :, None]).sum()
        return out


@torch.no_grad()
def generate_answers(model, tokenizer, batch: dict, prompt: PromptBuilder, max_new_tokens: int) -> list[str]:
    """Greedy generation from left-padded prompts (the deployed behaviour, for comparison with scoring)."""
    inputs = {key: batch[key] for key in PROMPT_KEYS if key in batch}
    out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    new = out[:, inputs["input_ids"].shape[1] :]
    return tokenizer.batch_decode(new, skip_special_tokens=False)
