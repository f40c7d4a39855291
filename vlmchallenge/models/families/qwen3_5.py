"""Qwen3.5 (transformers `models/qwen3_5`, `models/qwen3_5_moe`): one natively multimodal family. Its video path
is Qwen3-VL's (same processor classes, 16-px patches, per-clip pixel budget, `<t seconds>` text), and its
language model is a hybrid: Gated-DeltaNet linear-attention layers beside full-attention layers, so the cache
holds convolution and recurrent state as well as keys and values (docs/families.md §1, §4).

- Thinking is on by default; the label must follow the assistant header, so every prompt passes
  `enable_thinking=False` to the chat template.
- LoRA also adapts the linear-attention projections (`in_proj_qkv`, `in_proj_z`, `out_proj`), which carry as much
  of each hybrid layer's compute as q/k/v/o do in full attention. The per-head gates `in_proj_a`/`in_proj_b`
  (out width = number of value heads) are left frozen: a rank-16 update would be as wide as the layer.
- 4-bit QLoRA is refused: Unsloth's Qwen3.5 guide advises against it (quantisation error larger than usual);
  train 16-bit LoRA instead.
"""

from __future__ import annotations

from pathlib import Path

from vlmchallenge.models.families.base import Family, QLoraPolicy, TimeEncoding, VramTerms
from vlmchallenge.models.families.qwen2_vl import qwen_tokenizer, vision_token_ids
from vlmchallenge.models.families.qwen3_vl import (
    GEOMETRY,
    save_with_processor,
    tiny_text_config,
    tiny_vision_config,
)
from vlmchallenge.models.families.tiny_build import TIMESTAMP_CORPUS
from vlmchallenge.models.families.tiny_spec import TinyModelSpec
from vlmchallenge.models.families.video_inputs import PatchGrid

LM_LINEARS = (
    r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj"
    r"|in_proj_qkv|in_proj_z|out_proj)"
)
THINKING_OFF = {"enable_thinking": False}

# Qwen3.5's generation prompt: thinking opens `<think>\n` unless `enable_thinking` is false, which closes an empty
# block (the shape of the shipped template, reduced to a video question and answer)
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n"
    "{% else %}<think>\n{% endif %}{% endif %}"
)


def tiny_layer_types(layers: int) -> list[str]:
    """One Gated-DeltaNet layer first, as the real checkpoints begin, then full attention.

    Not the real 3 linear : 1 full: in a random-initialised tiny model only full attention carries the vision
    tokens to the answer (most heads of a random Gated-DeltaNet layer keep about one token of state). With one
    full-attention layer the tiny Qwen3.5 stayed at chance for two epochs and ended at test macro-F1 0.82
    (docs/learnability.md §5). So two full-attention layers, as the Qwen2-VL and Qwen3-VL tinies have, plus the
    linear one the hybrid cache needs (all-linear would leave it without keys and values)."""
    if layers < 2:
        raise ValueError(
            f"model.tiny.num_hidden_layers: a tiny Qwen3.5 needs at least 2 layers (one linear, one full "
            f"attention); got {layers}"
        )
    return ["linear_attention"] + ["full_attention"] * (layers - 1)


def build_tiny(spec: TinyModelSpec, out_dir: Path) -> None:
    from transformers import Qwen3_5Config, Qwen3_5ForConditionalGeneration

    tok = qwen_tokenizer(spec, CHAT_TEMPLATE, extra=["<think>", "</think>"], extra_corpus=TIMESTAMP_CORPUS)
    text = tiny_text_config(spec, tok) | dict(
        layer_types=tiny_layer_types(spec.num_hidden_layers),
        linear_conv_kernel_dim=4,
        linear_key_head_dim=spec.head_dim,
        linear_value_head_dim=spec.head_dim,
        linear_num_key_heads=spec.num_key_value_heads,
        linear_num_value_heads=spec.num_attention_heads,
    )
    vision = tiny_vision_config(spec)
    vision.pop("deepstack_visual_indexes")  # Qwen3.5 has no DeepStack
    cfg = Qwen3_5Config(
        text_config=text, vision_config=vision, tie_word_embeddings=False, **vision_token_ids(tok)
    )
    save_with_processor(spec, out_dir, lambda: Qwen3_5ForConditionalGeneration(cfg), tok, CHAT_TEMPLATE)


QWEN3_5 = Family(
    name="qwen3_5",
    title="Qwen3.5",
    model_types=("qwen3_5", "qwen3_5_moe"),
    model_class="Qwen3_5ForConditionalGeneration",
    processor_class="Qwen3VLProcessor",
    geometry=GEOMETRY,
    time_encoding=TimeEncoding.TEXT_TIMESTAMPS,
    lora_targets=LM_LINEARS,
    qlora=QLoraPolicy(
        False,
        "Unsloth's Qwen3.5 fine-tuning guide advises against 4-bit QLoRA (larger quantisation error than usual); "
        "use 16-bit LoRA",
    ),
    fsdp_wrap=(
        "Qwen3_5DecoderLayer",
        "Qwen3_5VisionBlock",
        "Qwen3_5MoeDecoderLayer",
        "Qwen3_5MoeVisionBlock",
    ),
    vram=VramTerms(vision_prefixes=("model.visual",), moe_experts="mlp.experts."),
    mrope_rows=3,
    video_inputs=PatchGrid(merge=2),
    chat_template_kwargs=THINKING_OFF,
    example_hub_id="Qwen/Qwen3.5-2B",
    build_tiny=build_tiny,
)
