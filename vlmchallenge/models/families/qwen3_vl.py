"""Qwen3-VL (transformers `models/qwen3_vl`, `models/qwen3_vl_moe`; Qwen3-VL technical report,
arXiv:2511.21631): 16-px patches merged 2x2 over frame pairs, a pixel budget counted over the whole clip
(T x H x W), and time written into the prompt as `<t seconds>` before each frame pair (docs/families.md §2-3).

Dense and MoE checkpoints share the processor and the video path; the MoE's routed experts are fused 3-D
parameters, not `nn.Linear`s, so LoRA adapts attention (and any dense MLP) there.
"""

from __future__ import annotations

from pathlib import Path

from vlmchallenge.models.families.base import (
    Family,
    PixelBudget,
    QLoraPolicy,
    TimeEncoding,
    VideoGeometry,
    VramTerms,
)
from vlmchallenge.models.families.qwen2_vl import (
    LM_ATTENTION_AND_MLP,
    QLORA_OK,
    qwen_tokenizer,
    set_generation_ids,
    text_sizes,
    vision_token_ids,
)
from vlmchallenge.models.families.tiny_build import TIMESTAMP_CORPUS, mrope_section, save_tiny, seeded
from vlmchallenge.models.families.tiny_spec import TinyModelSpec
from vlmchallenge.models.families.video_inputs import PatchGrid

GEOMETRY = VideoGeometry(patch=16, temporal_patch=2, merge=2, budget=PixelBudget.PER_CLIP)

# Qwen3-VL Instruct's template, reduced to what a video question and answer use (no tools, no system default)
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_vision_config(spec: TinyModelSpec) -> dict:
    """A 2-block vision tower; DeepStack injects block 1's features (indexes must lie below the depth) and the
    learned position table is square (num_position_embeddings = side^2), as the real configs."""
    return dict(
        depth=spec.vision_depth,
        hidden_size=spec.vision_embed_dim,
        intermediate_size=2 * spec.vision_embed_dim,
        num_heads=spec.vision_num_heads,
        out_hidden_size=spec.hidden_size,
        num_position_embeddings=16 * 16,
        deepstack_visual_indexes=[spec.vision_depth - 1],
        patch_size=GEOMETRY.patch,
        spatial_merge_size=GEOMETRY.merge,
        temporal_patch_size=GEOMETRY.temporal_patch,
    )


def tiny_text_config(spec: TinyModelSpec, tok) -> dict:
    return dict(
        **text_sizes(spec, tok),
        head_dim=spec.head_dim,
        rope_parameters={
            "rope_type": "default",
            "rope_theta": 5e6,
            "mrope_section": mrope_section(spec.head_dim, interleaved=True),
            "mrope_interleaved": True,
        },
    )


def video_processor():
    """The video processor as the checkpoints ship it (`video_preprocessor_config.json`: re-sampling at 2 fps on,
    a 25,165,824-px budget over the clip; docs/families.md §3). The loader, not the builder, tells it to keep our
    frames, so the tiny model meets the same trap a real one does."""
    from transformers import Qwen3VLVideoProcessor

    return Qwen3VLVideoProcessor(size={"longest_edge": 25_165_824, "shortest_edge": 4096})


def build_tiny(spec: TinyModelSpec, out_dir: Path) -> None:
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    tok = qwen_tokenizer(spec, CHAT_TEMPLATE, extra_corpus=TIMESTAMP_CORPUS)
    cfg = Qwen3VLConfig(
        text_config=tiny_text_config(spec, tok),
        vision_config=tiny_vision_config(spec),
        tie_word_embeddings=False,
        **vision_token_ids(tok),
    )
    save_with_processor(spec, out_dir, lambda: Qwen3VLForConditionalGeneration(cfg), tok, CHAT_TEMPLATE)


def save_with_processor(spec: TinyModelSpec, out_dir: Path, make_model, tok, template: str) -> None:
    """Build the model under the spec's seed and save it with the Qwen3-VL processor (shared by Qwen3.5)."""
    from transformers import Qwen2VLImageProcessor, Qwen3VLProcessor

    model = seeded(spec, make_model)
    set_generation_ids(model, tok)
    processor = Qwen3VLProcessor(
        image_processor=Qwen2VLImageProcessor(patch_size=GEOMETRY.patch),
        video_processor=video_processor(),
        tokenizer=tok,
        chat_template=template,
    )
    save_tiny(spec, out_dir, model, processor)


QWEN3_VL = Family(
    name="qwen3_vl",
    title="Qwen3-VL",
    model_types=("qwen3_vl", "qwen3_vl_moe"),
    model_class="Qwen3VLForConditionalGeneration",
    processor_class="Qwen3VLProcessor",
    geometry=GEOMETRY,
    time_encoding=TimeEncoding.TEXT_TIMESTAMPS,
    lora_targets=LM_ATTENTION_AND_MLP,
    qlora=QLoraPolicy(
        QLORA_OK.allowed, QLORA_OK.why + "; Unsloth, LLaMA-Factory and ms-swift train Qwen3-VL so"
    ),
    fsdp_wrap=(
        "Qwen3VLTextDecoderLayer",
        "Qwen3VLVisionBlock",
        "Qwen3VLMoeTextDecoderLayer",
        "Qwen3VLMoeVisionBlock",
    ),
    vram=VramTerms(vision_prefixes=("model.visual",), moe_experts="mlp.experts."),
    mrope_rows=3,
    video_inputs=PatchGrid(merge=2),
    example_hub_id="Qwen/Qwen3-VL-4B-Instruct",
    build_tiny=build_tiny,
)
