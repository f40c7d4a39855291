"""Prompt, collation (loss only on answer tokens) and label scoring on the real tiny Qwen2-VL."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vlmchallenge.data.frame_sampler import SamplerConfig
from vlmchallenge.models.adapters import apply_adapters
from vlmchallenge.models.collator import IGNORE_INDEX, Example, PromptCollator, TrainCollator, vision_tokens
from vlmchallenge.models.config import LoraSettings, ModelConfig
from vlmchallenge.models.label_scorer import LabelScorer
from vlmchallenge.models.loader import load_base_model, load_processor, resolve_pretrained
from vlmchallenge.models.prompt import PromptBuilder
from vlmchallenge.models.tiny_qwen2vl import TinyModelSpec


@pytest.fixture(scope="module")
def tiny(shared_data_dir):
    cfg = ModelConfig(tiny=TinyModelSpec(), cache_dir=str(shared_data_dir / "models"))
    path = resolve_pretrained(cfg)
    processor = load_processor(path, SamplerConfig(max_pixels=112 * 84))
    return cfg, path, processor


def clips(labels, frames=4, h=84, w=112, seed=0):
    rng = np.random.default_rng(seed)
    return [
        Example(rng.integers(0, 255, (frames, h, w, 3), dtype=np.uint8), y, {"i": i})
        for i, y in enumerate(labels)
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


def test_prompt_batches_are_left_padded_and_token_counts_follow_the_sampler(tiny):
    _, _, processor = tiny
    batch = PromptCollator(processor, PromptBuilder())(clips([0, 1]))
    assert batch["attention_mask"][:, -1].all()
    # 4 frames of 84x112 (already on the 28-px grid): no upscaling -> 2 x 3 x 4 = 24 tokens per clip
    assert vision_tokens(batch["video_grid_thw"]).tolist() == [24, 24]


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
    batch = PromptCollator(processor, prompt)(clips([0, 1, 2], seed=1))
    fast, slow = scorer.score(model, batch), scorer.score_naive(model, batch)
    assert fast.shape == (3, 10)
    assert torch.allclose(fast, slow, atol=1e-4)
    assert torch.equal(fast.argmax(1), slow.argmax(1))


def test_parse_generated_text():
    p = PromptBuilder()
    assert p.parse("  scan   label<|im_end|>") == 6
    assert p.parse("Scanning") is None
