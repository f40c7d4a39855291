"""Qwen2-VL and Qwen2.5-VL (arXiv:2409.12191, arXiv:2502.13923; transformers `models/qwen2_vl`,
`models/qwen2_5_vl`): 14-px patches merged 2x2 over frame pairs, a per-frame pixel budget, M-RoPE.

Qwen2-VL's temporal position counts frame pairs; Qwen2.5-VL scales it to absolute time through
`second_per_grid_ts = temporal_patch_size / fps` (docs/families.md §2).
"""

from __future__ import annotations

from pathlib import Path

from vlmchallenge.models.families.base import (
    Family,
    LigerPatch,
    PixelBudget,
    QLoraPolicy,
    TimeEncoding,
    VideoGeometry,
    VramTerms,
)
from vlmchallenge.models.families.tiny_build import (
    CHATML_TOKENS,
    mrope_section,
    save_tiny,
    seeded,
    train_tokenizer,
)
from vlmchallenge.models.families.tiny_spec import TinyModelSpec
from vlmchallenge.models.families.video_inputs import PatchGrid

VISION_TOKENS = ["<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]

# LoRA on the language model's linear layers only: a regex, because the vision tower (and Qwen2.5-VL's vision
# MLP) reuse the names q_proj/.../down_proj (docs/tiny-vlm.md §1)
LM_ATTENTION_AND_MLP = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"

QLORA_OK = QLoraPolicy(
    True, "4-bit NF4 QLoRA is the QLoRA paper's setting for dense decoders (arXiv:2305.14314)"
)

# The official Qwen2-VL chat template (add_vision_id numbering omitted), on one line as in the real files.
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def qwen_tokenizer(spec: TinyModelSpec, template: str, extra: list[str] = (), extra_corpus: str = ""):
    """The tiny ChatML tokenizer with Qwen2's pre-tokenizer and the vision tokens (plus `extra` special tokens,
    and `extra_corpus` text to train on)."""
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    special = CHATML_TOKENS + VISION_TOKENS + list(extra)
    tok = train_tokenizer(
        spec, Qwen2Tokenizer, PRETOKENIZE_REGEX, special, extra_corpus=extra_corpus, eos_token="<|im_end|>"
    )
    tok.chat_template = template
    return tok


def vision_token_ids(tok) -> dict[str, int]:
    return {
        "image_token_id": tok.convert_tokens_to_ids("<|image_pad|>"),
        "video_token_id": tok.convert_tokens_to_ids("<|video_pad|>"),
        "vision_start_token_id": tok.convert_tokens_to_ids("<|vision_start|>"),
        "vision_end_token_id": tok.convert_tokens_to_ids("<|vision_end|>"),
    }


def text_sizes(spec: TinyModelSpec, tok) -> dict:
    """The tiny language model's sizes and special-token ids, shared by every tiny builder's text config."""
    return dict(
        vocab_size=len(tok),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        max_position_embeddings=4096,
        **text_ids(tok),
    )


def text_ids(tok) -> dict[str, int]:
    pad, eos = tok.convert_tokens_to_ids("<|endoftext|>"), tok.convert_tokens_to_ids("<|im_end|>")
    return {"bos_token_id": pad, "eos_token_id": eos, "pad_token_id": pad}


def set_generation_ids(model, tok) -> None:
    model.generation_config.pad_token_id = tok.convert_tokens_to_ids("<|endoftext|>")
    model.generation_config.eos_token_id = tok.convert_tokens_to_ids("<|im_end|>")


def _build(spec: TinyModelSpec, out_dir: Path, version: str) -> None:
    import transformers as tf

    config_cls, model_cls, processor_cls = {
        "2": (tf.Qwen2VLConfig, tf.Qwen2VLForConditionalGeneration, tf.Qwen2VLProcessor),
        "2.5": (tf.Qwen2_5_VLConfig, tf.Qwen2_5_VLForConditionalGeneration, tf.Qwen2_5_VLProcessor),
    }[version]
    tok = qwen_tokenizer(spec, CHAT_TEMPLATE)
    vision = dict(
        depth=spec.vision_depth,
        num_heads=spec.vision_num_heads,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
    )
    if version == "2":
        vision |= dict(embed_dim=spec.vision_embed_dim, hidden_size=spec.hidden_size, mlp_ratio=2)
    else:
        vision |= dict(
            hidden_size=spec.vision_embed_dim,
            out_hidden_size=spec.hidden_size,
            intermediate_size=2 * spec.vision_embed_dim,
            fullatt_block_indexes=[spec.vision_depth - 1],
            window_size=56,
        )
    cfg = config_cls(
        text_config=dict(
            **text_sizes(spec, tok),
            rope_parameters={
                "rope_type": "default",
                "rope_theta": 1e6,
                "mrope_section": mrope_section(spec.head_dim, interleaved=False),
            },
        ),
        vision_config=vision,
        **vision_token_ids(tok),
    )
    model = seeded(spec, lambda: model_cls(cfg))
    set_generation_ids(model, tok)
    processor = processor_cls(
        image_processor=tf.Qwen2VLImageProcessor(),
        video_processor=tf.Qwen2VLVideoProcessor(cap_pixels_per_frame=True),
        tokenizer=tok,
        chat_template=CHAT_TEMPLATE,
    )
    save_tiny(spec, out_dir, model, processor)


_COMMON = dict(
    lora_targets=LM_ATTENTION_AND_MLP,
    qlora=QLORA_OK,
    vram=VramTerms(vision_prefixes=("model.visual",)),
    mrope_rows=3,
    video_inputs=PatchGrid(merge=2),
)

QWEN2_VL = Family(
    name="qwen2_vl",
    title="Qwen2-VL",
    model_types=("qwen2_vl",),
    model_class="Qwen2VLForConditionalGeneration",
    geometry=VideoGeometry(patch=14, temporal_patch=2, merge=2, budget=PixelBudget.PER_FRAME),
    time_encoding=TimeEncoding.NONE,
    fsdp_wrap=("Qwen2VLDecoderLayer", "Qwen2VLVisionBlock"),
    example_hub_id="Qwen/Qwen2-VL-2B-Instruct",
    build_tiny=lambda spec, out: _build(spec, out, "2"),
    liger=LigerPatch("apply_liger_kernel_to_qwen2_vl", extra_kernels=("layer_norm",)),
    processor_class="Qwen2VLProcessor",
    **_COMMON,
)

QWEN2_5_VL = Family(
    name="qwen2_5_vl",
    title="Qwen2.5-VL",
    model_types=("qwen2_5_vl",),
    model_class="Qwen2_5_VLForConditionalGeneration",
    geometry=VideoGeometry(patch=14, temporal_patch=2, merge=2, budget=PixelBudget.PER_FRAME),
    time_encoding=TimeEncoding.MROPE_SECONDS,
    fsdp_wrap=("Qwen2_5_VLDecoderLayer", "Qwen2_5_VLVisionBlock"),
    example_hub_id="Qwen/Qwen2.5-VL-3B-Instruct",
    build_tiny=lambda spec, out: _build(spec, out, "2.5"),
    liger=LigerPatch("apply_liger_kernel_to_qwen2_5_vl"),
    processor_class="Qwen2_5_VLProcessor",
    **_COMMON,
)
