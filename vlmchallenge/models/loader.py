"""One loader for every model: a hub id, a local checkpoint folder, or the tiny model's cache folder.

`AutoProcessor` + `AutoModelForImageTextToText` always; a tiny model is only *built* differently (by its family's
builder, `families.ensure_tiny`), never loaded differently. The checkpoint's own config names its family
(`model_family`), which says how its processor must be told to keep our frames.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from vlmchallenge.data.frame_sampler import SamplerConfig
from vlmchallenge.models.attention import resolve_attention
from vlmchallenge.models.config import ModelConfig
from vlmchallenge.models.families import Family, ensure_tiny, family_named, family_of
from vlmchallenge.models.liger import maybe_apply_liger

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_pretrained(cfg: ModelConfig) -> str:
    """The folder or hub id to load; builds the tiny model on first use."""
    cfg.validate()
    if cfg.tiny is not None:
        return str(ensure_tiny(cfg.tiny, cfg.cache_dir))
    return cfg.pretrained


def family_at(path_or_id: str) -> Family:
    """The family of a folder or hub id, from its `config.json` (for a hub id: that file only)."""
    from transformers import AutoConfig

    return family_of(AutoConfig.from_pretrained(path_or_id, local_files_only=_local(path_or_id)), path_or_id)


def model_family(cfg: ModelConfig) -> Family:
    """The family `cfg` loads, without loading weights: a tiny spec names it; a checkpoint's config does (a
    preset's shipped config, so planning downloads nothing)."""
    from vlmchallenge.models.architectures import model_config_for

    cfg.validate()
    if cfg.tiny is not None:
        return family_named(cfg.tiny.family, "model.tiny.family")
    return family_of(model_config_for(cfg), f"model.pretrained={cfg.pretrained}")


def _local(path_or_id: str) -> bool:
    return Path(path_or_id).is_dir()


def configure_video_size(processor, sampler: SamplerConfig, family: Family) -> None:
    """Make the processor keep our frames as they are: the sampler already resized them onto the family's grid.

    Without this a processor upscales frames under its default budget (docs/tiny-vlm.md §3) and the vision-token
    count silently grows, and a re-sampling one (`do_sample_frames`) drops the frames we chose and writes
    timestamps for frames we never sent (docs/families.md §2)."""
    video = processor.video_processor
    max_frames = sampler.num_frames if sampler.strategy == "uniform" else sampler.max_frames
    size = family.geometry.processor_size(sampler.min_pixels, sampler.max_pixels, max_frames)
    if size is not None:  # a tile family's processor keeps its size: the vision tower's input
        video.size = size
    if hasattr(video, "do_sample_frames"):
        video.do_sample_frames = False  # never drop frames we chose
    if hasattr(video, "cap_pixels_per_frame"):
        # the cap divides the budget by the *unpadded* frame count but checks the padded one, so an odd clip at
        # `max_pixels` would be shrunk; our budget above already bounds every frame (and this silences the notice)
        video.cap_pixels_per_frame = False


def load_processor(path_or_id: str, sampler: SamplerConfig | None = None, family: Family | None = None):
    """The processor, told to keep the sampler's frames; `family`: the one already resolved for this path."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(path_or_id, local_files_only=_local(path_or_id))
    if sampler is not None:
        configure_video_size(processor, sampler, family or family_at(path_or_id))
    return processor


def quantization_config(cfg: ModelConfig):
    from transformers import BitsAndBytesConfig

    q = cfg.quantization
    storage = {} if q.quant_storage is None else {"bnb_4bit_quant_storage": DTYPES[q.quant_storage]}
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=q.quant_type,
        bnb_4bit_use_double_quant=q.double_quant,
        bnb_4bit_compute_dtype=DTYPES[q.compute_dtype],
        llm_int8_skip_modules=list(q.skip_modules),
        **storage,  # FSDP-QLoRA (docs/scaling.md §3); unset keeps bitsandbytes' uint8
    )


def load_base_model(
    cfg: ModelConfig,
    path_or_id: str,
    device: str | torch.device = "cpu",
    quantized: bool | None = None,
    planned: Family | None = None,
):
    """The base model, 4-bit when `cfg.quantization.enabled` (unless `quantized=False`, e.g. for merging).
    `planned`: the family the run was planned for; a folder that holds another is refused before any weight
    loads (it changed between planning and loading)."""
    from transformers import AutoModelForImageTextToText

    quantized = cfg.quantization.enabled if quantized is None else quantized
    family = family_at(path_or_id)
    if planned is not None and family.name != planned.name:
        raise ValueError(
            f"{path_or_id} holds a {family.title} model; this run was planned for {planned.title}"
        )
    cfg.check_family(family)
    cfg = cfg.for_family(family)
    kwargs = dict(
        dtype=DTYPES[cfg.dtype],
        attn_implementation=resolve_attention(cfg.attn_implementation, cfg.dtype, device),
        local_files_only=_local(path_or_id),
    )
    if quantized:
        kwargs["quantization_config"] = quantization_config(cfg)
        kwargs["device_map"] = {"": str(device)}
    model = AutoModelForImageTextToText.from_pretrained(path_or_id, **kwargs)
    if quantized:
        disable_bnb_cpu_inference_repack(model)
    maybe_apply_liger(model, cfg.liger, device)
    return model


def disable_bnb_cpu_inference_repack(model) -> None:
    """bitsandbytes trap (docs/tiny-vlm.md §2, trap 2): on AVX512-BF16 CPUs an eval forward without grad
    permanently repacks 4-bit weights into an inference layout, after which the next training step fails.
    Validation runs between training steps, so never take that path."""
    import bitsandbytes as bnb

    for m in model.modules():
        if isinstance(m, bnb.nn.Linear4bit):
            m.support_avx512bf16_for_cpu = False
