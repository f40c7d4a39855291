"""Prompt, collation (loss only on answer tokens) and label scoring on the real tiny Qwen2-VL."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vlmchallenge.data.frame_sampler import SamplerConfig
from vlmchallenge.models.adapters import apply_adapters
from vlmchallenge.models.collator import IGNORE_INDEX, Example, PromptCollator, TrainCollator
from vlmchallenge.models.config import LoraSettings, ModelConfig
from vlmchallenge.models.families import FAMILIES, TinyModelSpec
from vlmchallenge.models.label_scorer import LabelScorer
from vlmchallenge.models.loader import load_base_model, load_processor, resolve_pretrained
from vlmchallenge.models.prompt import PromptBuilder

# Both frame sizes used below lie on the 28-px grid inside [min_pixels, max_pixels], so the processor keeps them:
# 84x112 -> (4/2) x 3 x 4 = 24 vision tokens per 4-frame clip, 56x112 -> (4/2) x 2 x 4 = 16.
LARGE, SMALL = (84, 112), (56, 112)
TINY_SAMPLER = SamplerConfig(min_pixels=56 * 56, max_pixels=112 * 84)


@pytest.fixture(scope="module")
def tiny(shared_data_dir):
    cfg = ModelConfig(tiny=TinyModelSpec(), cache_dir=str(shared_data_dir / "models"))
    path = resolve_pretrained(cfg)
    processor = load_processor(path, TINY_SAMPLER)
    return cfg, path, processor


def clips(labels, frames=4, sizes=None, seed=0):
    """Random clips, all 84x112 unless `sizes` gives an (h, w) per clip."""
    rng = np.random.default_rng(seed)
    sizes = sizes or [LARGE] * len(labels)
    return [
        Example(rng.integers(0, 255, (frames, h, w, 3), dtype=np.uint8), y, {"i": i, "duration_ms": 2000})
        for i, (y, (h, w)) in enumerate(zip(labels, sizes, strict=True))
    ]


def test_tiny_model_reloads_through_auto_classes(tiny):
    _, path, processor = tiny
    model = load_base_model(ModelConfig(tiny=TinyModelSpec()), path)
    assert type(model).__name__ == "Qwen2VLForConditionalGeneration"
    assert type(processor).__name__ == "Qwen2VLProcessor"
    assert type(processor.tokenizer).__name__ == "Qwen2Tokenizer"
    assert sum(p.numel() for p in model.parameters()) == 230_656


def test_loss_only_on_answer_tokens(tiny):
    _, _, processor = tiny
    prompt = PromptBuilder()
    batch = TrainCollator(processor, prompt)(clips([0, 3, 9, 1]))
    for row, y in enumerate([0, 3, 9, 1]):
        kept = batch["labels"][row] != IGNORE_INDEX
        assert processor.tokenizer.decode(batch["labels"][row][kept]) == prompt.class_names[y] + "<|im_end|>"
        # the supervised span is contiguous and ends the row's real tokens; everything else is -100
        idx = kept.nonzero().flatten()
        assert idx.tolist() == list(range(int(idx[0]), int(idx[-1]) + 1))
        assert int(idx[-1]) + 1 == int(batch["attention_mask"][row].sum())
    assert batch["attention_mask"][:, 0].all()  # right padding for training


def test_answer_tokens_merged_into_the_prompt_are_refused(tiny):
    """The shipped template ends the prompt with "\\n", which this BPE never merges with what follows, so no
    class name triggers the check. A generation prompt ending in a space (`assistant: `) does: " Assemble" is
    one token, so "Assemble Box" is tokenized differently after the prompt than on its own, and the loss mask
    would be off by one token."""
    _, path, _ = tiny
    processor = load_processor(path, TINY_SAMPLER)  # an own copy: its chat template is changed
    assert "<|im_start|>assistant\n" in processor.chat_template
    processor.chat_template = processor.chat_template.replace(
        "<|im_start|>assistant\n", "<|im_start|>assistant: "
    )
    collate = TrainCollator(processor, PromptBuilder())
    assert collate.prompt_text.endswith("assistant: ")
    assert collate(clips([0]))["labels"].ne(IGNORE_INDEX).sum() == 2  # "Picking": no " Picking" token
    with pytest.raises(
        ValueError, match="'Assemble Box'.*tokenizer merges across the prompt/answer boundary"
    ):
        collate(clips([0, 2]))


def test_prompt_batches_are_left_padded_and_token_counts_follow_the_sampler(tiny):
    _, _, processor = tiny
    tok = processor.tokenizer
    batch = PromptCollator(processor, PromptBuilder())(clips([0, 1], sizes=[LARGE, SMALL]))
    # frames kept at their size (no upscaling), so the smaller clip has fewer vision tokens ...
    assert FAMILIES["qwen2_vl"].video_inputs.vision_tokens(batch).tolist() == [24, 16]
    video_pad = tok.convert_tokens_to_ids("<|video_pad|>")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert (ids == video_pad).sum(1).tolist() == [24, 16]
    # ... and its prompt is 8 tokens shorter: padded on the left, so both prompts end at the last column
    assert mask[0].all()
    assert mask[1].tolist() == [0] * 8 + [1] * (ids.shape[1] - 8)
    assert ids[1, :8].eq(tok.pad_token_id).all()
    # apart from the vision tokens, both rows hold the same prompt
    assert ids[0][ids[0] != video_pad].tolist() == ids[1, 8:][ids[1, 8:] != video_pad].tolist()


@pytest.mark.parametrize("with_lora", [False, True])
def test_kv_expanded_scoring_equals_a_forward_per_class(tiny, with_lora):
    cfg, path, processor = tiny
    torch.manual_seed(0)
    model = load_base_model(cfg, path)
    if with_lora:
        cfg = ModelConfig(tiny=TinyModelSpec(), lora=LoraSettings(modules_to_save=["lm_head"]))
        model = apply_adapters(model, cfg)
        for n, p in model.named_parameters():  # make the adapter non-trivial
            if "lora_B" in n:
                torch.nn.init.normal_(p, std=0.5)
    model.eval()
    prompt = PromptBuilder()
    scorer = LabelScorer(processor.tokenizer, prompt)
    # Mixed frame sizes: prompts of two lengths, so `score` scores two groups of rows (0, 2 and 1, 3), strips
    # the left padding of the short group and picks each clip's patches out of the concatenated patches.
    batch = PromptCollator(processor, prompt)(clips([0, 1, 2, 3], sizes=[SMALL, LARGE, SMALL, LARGE], seed=1))
    assert not batch["attention_mask"][0].all() and batch["attention_mask"][1].all()
    fast, slow = scorer.score(model, batch), scorer.score_naive(model, batch)
    assert fast.shape == (4, 10)
    assert torch.allclose(fast, slow, atol=1e-4)
    assert torch.equal(fast.argmax(1), slow.argmax(1))


def test_parse_generated_text():
    p = PromptBuilder()
    assert p.parse("  scan   label<|im_end|>") == 6
    assert p.parse("Scanning") is None
