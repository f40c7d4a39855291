"""Model families (models/families/, docs/families.md): each family's tiny model is built offline and loaded through
the same Auto* code as a checkpoint; its processor keeps our frames and encodes their time by the family's rule;
the KV-cached label scorer equals a forward per class; and no module outside the adapters names a family."""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from vlmchallenge.data.frame_sampler import SamplerConfig
from vlmchallenge.models.adapters import apply_adapters
from vlmchallenge.models.collator import IGNORE_INDEX, Example, PromptCollator, TrainCollator
from vlmchallenge.models.config import LoraSettings, ModelConfig, QuantizationSettings
from vlmchallenge.models.families import FAMILIES, TimeEncoding, TinyModelSpec
from vlmchallenge.models.label_scorer import LabelScorer
from vlmchallenge.models.loader import load_base_model, load_processor, resolve_pretrained
from vlmchallenge.models.prompt import PromptBuilder

PACKAGE = Path(__file__).resolve().parents[1] / "vlmchallenge"
FAMILY_NAMES = re.compile(r"qwen|internvl|smolvlm|gemma|llava|idefics", re.IGNORECASE)
SAMPLER = SamplerConfig(num_frames=4, min_pixels=32 * 32, max_pixels=128 * 96)


def test_no_module_outside_the_adapters_names_a_family():
    """Everything that differs by family is declared in models/families/; the rest of the package asks the
    family. A family name anywhere else (code, comment or message) fails here."""
    adapters = PACKAGE / "models" / "families"
    found = [
        f"{path.relative_to(PACKAGE.parent)}:{n}: {line.strip()}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if adapters not in path.parents
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if FAMILY_NAMES.search(line)
    ]
    assert found == []


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_fsdp_wrap_classes_are_the_models_own_unsplittable_blocks(name, built):
    """The declared wrap classes are exactly the blocks transformers itself never splits (`_no_split_modules`)
    of the family's dense and MoE model classes, so FSDP wraps every decoder layer and vision block. A class
    that leaves them to its sub-models (InternVL) is asked on the tiny model; the family may then also name the
    decoder layer of its other language models (InternVL3's Qwen2 beside InternVL3.5's Qwen3)."""
    import transformers
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    family = FAMILIES[name]
    declared = set(family.fsdp_wrap)
    own = set()
    for model_type in family.model_types:
        cls = MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES[model_type]
        own |= set(getattr(transformers, cls)._no_split_modules or ())
    if own:
        assert declared == own
        return
    model = load_base_model(ModelConfig(tiny=TinyModelSpec(family=name)), built[name])
    own = set(model._no_split_modules)
    assert own <= declared
    others = declared - own
    assert all(c.endswith("DecoderLayer") for c in others), others
    assert len(family.fsdp_wrap_paths()) == len(declared)  # each one a real class of the family's modules


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Each family's tiny model folder, built once for this module (offline)."""
    cache = tmp_path_factory.mktemp("models")
    return {
        name: resolve_pretrained(ModelConfig(tiny=TinyModelSpec(family=name), cache_dir=str(cache)))
        for name in FAMILIES
    }


def test_the_family_is_resolved_once_and_a_folder_of_another_is_refused_at_load(built):
    """assembly resolves the family before any weights load and hands it to the module; a model folder that
    holds another family when the weights do load (rebuilt in between) is refused, naming both."""
    from vlmchallenge.training.module import VLMClassifier

    cfg = ModelConfig(tiny=TinyModelSpec(), cache_dir=str(Path(built["qwen2_vl"]).parent))
    tokenizer = load_processor(built["qwen2_vl"]).tokenizer
    planned = VLMClassifier(cfg, FAMILIES["qwen2_vl"], PromptBuilder(), tokenizer)
    planned.configure_model()
    assert planned.family is FAMILIES["qwen2_vl"]
    other = VLMClassifier(cfg, FAMILIES["qwen3_vl"], PromptBuilder(), tokenizer)
    with pytest.raises(ValueError, match="holds a Qwen2-VL model; this run was planned for Qwen3-VL"):
        other.configure_model()


def clip_examples(family, labels, frames=4, seed=0, duration_ms=2000):
    """Random clips on the family's grid (96 x 128 is a multiple of both 28-ish grids' rules below)."""
    grid = family.geometry.grid_px
    h, w = 3 * grid, 4 * grid
    rng = np.random.default_rng(seed)
    return [
        Example(rng.integers(0, 255, (frames, h, w, 3), dtype=np.uint8), y, {"duration_ms": duration_ms})
        for y in labels
    ]


def sampler_for(family) -> SamplerConfig:
    grid = family.geometry.grid_px
    return SamplerConfig(num_frames=8, min_pixels=grid * grid, max_pixels=12 * grid * grid, patch_factor=grid)


class TransformersWarnings(logging.Handler):
    """transformers' own logger does not propagate to pytest's caplog; listen on it directly."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture
def transformers_warnings():
    handler = TransformersWarnings()
    logger = logging.getLogger("transformers")
    logger.addHandler(handler)
    yield handler.messages
    logger.removeHandler(handler)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_the_tiny_model_loads_as_a_checkpoint_of_its_family(built, name):
    family = FAMILIES[name]
    path = built[name]
    processor = load_processor(path, sampler_for(family))
    model = load_base_model(ModelConfig(tiny=TinyModelSpec(family=name)), path)
    assert type(model).__name__ == family.model_class
    assert type(processor).__name__ == family.processor_class
    assert model.config.model_type in family.model_types
    if name == "qwen3_5":  # a hybrid: linear attention and full attention both present
        assert set(model.config.text_config.layer_types) == {"linear_attention", "full_attention"}


@pytest.mark.parametrize("name", sorted(FAMILIES))
@pytest.mark.parametrize("frames,duration_ms", [(8, 4000), (4, 4000), (6, 2000)])
def test_one_timing_rule_the_processor_keeps_our_frames_and_encodes_their_time(
    built, name, frames, duration_ms, transformers_warnings
):
    """Render a clip through the real processor class: no frame is dropped or resized, and its time is the
    sampled fps by the family's rule. A processor that re-samples, resizes or assumes 24 fps fails here."""
    family = FAMILIES[name]
    processor = load_processor(built[name], sampler_for(family))
    prompt = PromptBuilder(template_kwargs=dict(family.chat_template_kwargs))
    (example,) = clip_examples(family, [0], frames=frames, duration_ms=duration_ms)
    batch = PromptCollator(processor, prompt)([example])
    fps = frames * 1000 / duration_ms
    geometry = family.geometry
    if geometry.keeps_sampled_size:
        t, h, w = batch["video_grid_thw"][0].tolist()
        assert (t, h * geometry.patch, w * geometry.patch) == (
            math.ceil(frames / geometry.temporal_patch),
            *example.frames.shape[1:3],
        )
    else:  # one tile per frame, every frame kept
        tile = processor.video_processor.size
        assert tuple(batch[family.video_inputs.pixels].shape) == (frames, 3, tile.height, tile.width)
    text = processor.tokenizer.decode(batch["input_ids"][0])
    stamps = [float(s) for s in re.findall(r"<(\d+\.\d) seconds>", text)]
    if family.time_encoding is TimeEncoding.TEXT_TIMESTAMPS:
        pairs = np.arange(frames + frames % 2).reshape(-1, 2)
        pairs[pairs >= frames] = frames - 1  # an odd clip repeats its last frame
        expected = [round(float(p.mean()) / fps, 1) for p in pairs]
        assert stamps == pytest.approx(expected)
    else:
        assert stamps == []
    labels = re.findall(r"Frame(\d+): <img>", text)
    expected_labels = list(range(1, frames + 1)) if family.time_encoding is TimeEncoding.FRAME_LABELS else []
    assert [int(i) for i in labels] == expected_labels
    if family.time_encoding is TimeEncoding.MROPE_SECONDS:
        assert batch["second_per_grid_ts"].tolist() == pytest.approx([family.geometry.temporal_patch / fps])
    else:
        assert "second_per_grid_ts" not in batch
    assert not [m for m in transformers_warnings if "fps" in m], transformers_warnings


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_prompt_tokens_are_the_vision_tokens_plus_the_time_text(built, name):
    """The VRAM planner's count of a clip's tokens (geometry + time text) is what the processor produces."""
    family = FAMILIES[name]
    processor = load_processor(built[name], sampler_for(family))
    prompt = PromptBuilder(template_kwargs=dict(family.chat_template_kwargs))
    (example,) = clip_examples(family, [0], frames=8, duration_ms=4000)
    with_video = PromptCollator(processor, prompt)([example])["input_ids"].shape[1]
    without = len(processor.tokenizer(prompt.prompt(processor))["input_ids"])  # the one placeholder token
    _, h, w = example.frames.shape[:3]
    config = load_base_model(ModelConfig(tiny=TinyModelSpec(family=name)), built[name]).config
    assert with_video - (without - 1) == family.clip_tokens(8, w, h, config)


def test_thinking_is_switched_off_so_the_label_follows_the_header(built):
    family = FAMILIES["qwen3_5"]
    processor = load_processor(built["qwen3_5"], sampler_for(family))
    default = PromptBuilder().prompt(processor)
    off = PromptBuilder(template_kwargs=dict(family.chat_template_kwargs)).prompt(processor)
    assert default.endswith("<|im_start|>assistant\n<think>\n")  # the template's default: thinking on
    assert off.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    prompt = PromptBuilder(template_kwargs=dict(family.chat_template_kwargs))
    batch = TrainCollator(processor, prompt)(clip_examples(family, [2, 5]))
    for row, y in enumerate([2, 5]):
        kept = batch["labels"][row] != IGNORE_INDEX
        assert processor.tokenizer.decode(batch["labels"][row][kept]) == prompt.class_names[y] + "<|im_end|>"


def test_lora_on_the_hybrid_adapts_linear_and_full_attention_but_not_the_vision_tower(built):
    cfg = ModelConfig(tiny=TinyModelSpec(family="qwen3_5"), lora=LoraSettings(r=4))
    model = apply_adapters(load_base_model(cfg, built["qwen3_5"]), cfg)
    adapted = {n.rsplit(".", 1)[0] for n, _ in model.named_modules() if n.endswith(".lora_A")}
    kinds = {n.rsplit(".", 1)[-1] for n in adapted}
    assert {
        "in_proj_qkv",
        "in_proj_z",
        "out_proj",
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "down_proj",
    } <= kinds
    assert not kinds & {"in_proj_a", "in_proj_b"}
    assert not [n for n in adapted if ".visual." in n]


def test_4bit_qlora_is_refused_where_the_family_advises_against_it_before_weights_load(built):
    cfg = ModelConfig(tiny=TinyModelSpec(family="qwen3_5"), quantization=QuantizationSettings(enabled=True))
    with pytest.raises(ValueError, match=r"Qwen3.5 is not trained in 4-bit here: Unsloth"):
        load_base_model(cfg, built["qwen3_5"])
    cfg = ModelConfig(tiny=TinyModelSpec(family="qwen3_vl"), quantization=QuantizationSettings(enabled=True))
    cfg.check_family(FAMILIES["qwen3_vl"])  # allowed


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_kv_cached_scoring_equals_a_forward_per_class(built, name):
    """One prompt forward, its cache repeated per class (keys/values, and the hybrid's convolution and
    recurrent state), then all answers at once: equal to a full forward per class within 1e-5."""
    family = FAMILIES[name]
    path = built[name]
    processor = load_processor(path, sampler_for(family))
    cfg = ModelConfig(tiny=TinyModelSpec(family=name), lora=LoraSettings(r=4, modules_to_save=["lm_head"]))
    model = apply_adapters(load_base_model(cfg, path), cfg)
    torch.manual_seed(0)
    for n, p in model.named_parameters():  # a non-trivial adapter, and scores that react to every input
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.5)
    model.eval()
    prompt = PromptBuilder(template_kwargs=dict(family.chat_template_kwargs))
    scorer = LabelScorer(processor.tokenizer, prompt)
    batch = PromptCollator(processor, prompt)(clip_examples(family, [0, 1, 2], seed=1))
    fast, slow = scorer.score(model, batch), scorer.score_naive(model, batch)
    assert fast.shape == (3, len(prompt.class_names))
    assert torch.allclose(fast, slow, atol=1e-5, rtol=0), (fast - slow).abs().max()
    assert not torch.allclose(fast[0], fast[1], atol=1e-3)  # the clips differ, so do their scores


def test_the_samplers_frame_rule_is_the_librarys():
    """`per_frame_size` (data layer) equals transformers' per-frame `smart_resize` on every size and grid tried,
    so frames the sampler cuts are kept as they are by a per-frame processor."""
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    from vlmchallenge.data.frame_sampler import per_frame_size

    rng = np.random.default_rng(0)
    for _ in range(2000):
        h, w = (int(x) for x in rng.integers(16, 2000, 2))
        grid = int(rng.choice([28, 32]))
        lo = int(rng.integers(1, 64)) * grid * grid
        hi = lo * int(rng.integers(1, 64))
        assert per_frame_size(h, w, grid, lo, hi) == smart_resize(h, w, grid, lo, hi), (h, w, grid, lo, hi)


@pytest.mark.parametrize("name", ["qwen3_vl", "qwen3_5", "internvl"])
def test_lora_dtypes_by_family(built, name):
    """The dtype census of a bf16 LoRA per family: frozen weights stay in `model.dtype`, the adapters and the
    trained copies (`modules_to_save`) are fp32, and that is what the VRAM planner counts bytes for."""
    from vlmchallenge.models.architectures import model_config_for
    from vlmchallenge.training.vram_math import FootprintInputs, architecture_from_config, parameter_bytes

    cfg = ModelConfig(
        tiny=TinyModelSpec(family=name),
        dtype="bfloat16",
        lora=LoraSettings(r=4, modules_to_save=["lm_head"]),
        cache_dir=str(Path(built[name]).parent),
    )
    model = apply_adapters(load_base_model(cfg, built[name]), cfg)
    census: dict[str, int] = {}
    for p in model.parameters():
        key = str(p.dtype).removeprefix("torch.")
        census[key] = census.get(key, 0) + p.numel() * p.element_size()
    trainable = {p.dtype for p in model.parameters() if p.requires_grad}
    frozen = {p.dtype for p in model.parameters() if not p.requires_grad}
    assert trainable == {torch.float32} and frozen == {torch.bfloat16}
    arch = architecture_from_config(model_config_for(cfg))
    setup = FootprintInputs(method="lora", dtype="bfloat16", lora_r=4, modules_to_save=["lm_head"])
    assert parameter_bytes(arch, setup) == census


def test_only_the_kernels_notice_of_bitsandbytes_is_dropped(caplog):
    """bitsandbytes' import-time notice about the optional `kernels` package (which would download a kernel from
    the Hub) is dropped; the same call failing for any other reason still shows."""
    import vlmchallenge  # noqa: F401  (installs the filter)
    from vlmchallenge.utils.library_notices import BNB_CPU_LOGGER, BNB_KERNELS_NOTICE

    logger = logging.getLogger(BNB_CPU_LOGGER)
    fmt = (
        BNB_KERNELS_NOTICE
        + ": %s. Please make sure you already `pip install kernels` and the kernels >= 0.11.1"
    )
    with caplog.at_level(logging.WARNING, logger=BNB_CPU_LOGGER):
        logger.warning(fmt, ModuleNotFoundError("No module named 'kernels'"))
        logger.warning(fmt, RuntimeError("CUDA error: out of memory"))
        logger.warning("something else entirely")
    shown = [r.getMessage() for r in caplog.records if r.name == BNB_CPU_LOGGER]
    assert len(shown) == 2 and "out of memory" in shown[0] and shown[1] == "something else entirely"


def test_the_tiny_qwen35_layers_are_one_linear_then_full_attention():
    """docs/learnability.md §5: a random tiny with one full-attention layer barely learned; one layer could not
    hold both kinds the hybrid cache needs."""
    from vlmchallenge.models.families.qwen3_5 import tiny_layer_types

    assert tiny_layer_types(3) == ["linear_attention", "full_attention", "full_attention"]
    assert tiny_layer_types(2) == ["linear_attention", "full_attention"]
    with pytest.raises(ValueError, match="at least 2 layers"):
        tiny_layer_types(1)
