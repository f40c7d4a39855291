"""InternVL 3.5 in transformers' own classes (`models/internvl`; the `-HF` checkpoints, e.g.
OpenGVLab/InternVL3_5-1B-HF; InternVL3.5 report, arXiv:2508.18265): the non-Qwen family, picked because it differs
from Qwen where an adapter must generalise, and needs nothing beyond transformers (docs/families.md §7).

- Every frame is one square tile at the vision tower's input size (448 px in the checkpoints), whatever the
  frame's shape: InternViT's 14-px patches, then a pixel shuffle at ratio 0.5 that merges 2 x 2 patches into one
  token, so 256 tokens per frame. No temporal merge and no pixel budget: the sampler's size does not matter.
- The frames of a clip are one `pixel_values` row each, not a patch grid (`FrameTiles`); there is no M-RoPE, so
  text after the prompt continues at plain 1-D positions.
- Time: none beyond order. The processor writes `Frame{i}: <img>...</img>` per frame
  (`InternVLProcessor.replace_video_token`) and never reads the fps; its video processor does not re-sample by
  default (`do_sample_frames=False`).
- The language model is a Qwen3 (Qwen2 in InternVL3; Qwen3-MoE in 30B-A3B): LoRA targets its attention and
  MLP linears, as in Qwen (fused MoE experts are not `nn.Linear`s).
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
from vlmchallenge.models.families.qwen2_vl import LM_ATTENTION_AND_MLP, set_generation_ids, text_sizes
from vlmchallenge.models.families.tiny_build import CHATML_TOKENS, save_tiny, seeded, train_tokenizer
from vlmchallenge.models.families.tiny_spec import TinyModelSpec
from vlmchallenge.models.families.video_inputs import FrameTiles

GEOMETRY = VideoGeometry(patch=14, temporal_patch=1, merge=2, budget=PixelBudget.TILE)

# the tokenizer's named tokens the processor reads (`tokenizer.start_image_token`, ...), as the -HF checkpoints'
# tokenizer_config.json declares them
NAMED_TOKENS = {
    "start_image_token": "<img>",
    "end_image_token": "</img>",
    "context_image_token": "<IMG_CONTEXT>",
    "video_token": "<video>",
}
FRAME_LABEL_CORPUS = "Frame1: Frame2: Frame3: Frame4: Frame5: Frame6: Frame7: Frame8:"
TINY_TILE = 56  # px: 4 x 4 patches, 2 x 2 tokens per frame (the checkpoints: 448 px, 16 x 16 tokens)

# The -HF checkpoints' ChatML template, reduced to a video question and answer (no default system prompt)
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<IMG_CONTEXT>\n{% elif content['type'] == 'video' %}<video>\n"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tokenizer(spec: TinyModelSpec):
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    special = CHATML_TOKENS + list(NAMED_TOKENS.values())
    tok = train_tokenizer(
        spec,
        Qwen2Tokenizer,
        PRETOKENIZE_REGEX,
        special,
        extra_corpus=FRAME_LABEL_CORPUS,
        eos_token="<|im_end|>",
        **NAMED_TOKENS,
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


def tiny_config(spec: TinyModelSpec, tok):
    from transformers import InternVLConfig

    return InternVLConfig(
        vision_config=dict(
            hidden_size=spec.vision_embed_dim,
            num_hidden_layers=spec.vision_depth,
            num_attention_heads=spec.vision_num_heads,
            intermediate_size=2 * spec.vision_embed_dim,
            image_size=TINY_TILE,
            patch_size=GEOMETRY.patch,
        ),
        text_config=dict(
            model_type="qwen3",
            **text_sizes(spec, tok),
            head_dim=spec.head_dim,
            tie_word_embeddings=False,
        ),
        image_token_id=tok.convert_tokens_to_ids(NAMED_TOKENS["context_image_token"]),
        image_seq_length=tokens_per_tile(TINY_TILE),
        downsample_ratio=1 / GEOMETRY.merge,
        tie_word_embeddings=False,
    )


def tokens_per_tile(side: int) -> int:
    return (side // GEOMETRY.grid_px) ** 2


def build_tiny(spec: TinyModelSpec, out_dir: Path) -> None:
    from transformers import (
        GotOcr2ImageProcessor,
        InternVLForConditionalGeneration,
        InternVLProcessor,
        InternVLVideoProcessor,
    )

    tok = tokenizer(spec)
    cfg = tiny_config(spec, tok)
    model = seeded(spec, lambda: InternVLForConditionalGeneration(cfg))
    set_generation_ids(model, tok)
    tile = {"height": TINY_TILE, "width": TINY_TILE}
    processor = InternVLProcessor(
        image_processor=GotOcr2ImageProcessor(size=tile),
        tokenizer=tok,
        video_processor=InternVLVideoProcessor(size=tile),
        image_seq_length=tokens_per_tile(TINY_TILE),
        chat_template=CHAT_TEMPLATE,
    )
    save_tiny(spec, out_dir, model, processor)


INTERNVL = Family(
    name="internvl",
    title="InternVL 3.5",
    model_types=("internvl",),
    model_class="InternVLForConditionalGeneration",
    processor_class="InternVLProcessor",
    geometry=GEOMETRY,
    time_encoding=TimeEncoding.FRAME_LABELS,
    lora_targets=LM_ATTENTION_AND_MLP,
    qlora=QLoraPolicy(
        True,
        "a Qwen decoder in 4-bit NF4, the QLoRA paper's setting (arXiv:2305.14314); the InternViT tower and "
        "the MLP projector stay 16-bit",
    ),
    fsdp_wrap=("InternVLVisionLayer", "Qwen2DecoderLayer", "Qwen3DecoderLayer", "Qwen3MoeDecoderLayer"),
    vram=VramTerms(
        vision_prefixes=("model.vision_tower", "model.multi_modal_projector"), moe_experts="mlp.experts."
    ),
    mrope_rows=1,
    video_inputs=FrameTiles(patch=GEOMETRY.patch, merge=GEOMETRY.merge),
    example_hub_id="OpenGVLab/InternVL3_5-1B-HF",
    build_tiny=build_tiny,
    text_model_types=("qwen2", "qwen3", "qwen3_moe"),
)
