"""Predict peak GPU memory of a fine-tuning step, term by term, and plan micro-batch and accumulation.

Pure functions; no GPU. Formulas and sources: docs/vram.md §1; the per-token form of §1.7:

    peak ≈ weights + trainable state + activations(b, s) + logits(b, answer tokens) + vision(b) + CUDA context
           + reserve

Parameter counts come from instantiating the architecture on the meta device (exact, no weights). Constants
marked CALIBRATE are from the literature and still need a GPU measurement (bench/vram_validate.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch

from vlmchallenge.models.families import Family, family_of

GIB = 1024**3
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
NF4_DQ_BYTES = 4.127 / 8  # 4-bit codes + 8-bit absmax per 64 + fp32 constant per 256 blocks (QLoRA §3)
NF4_CONSTANT_BYTES = NF4_DQ_BYTES - 0.5  # the constants alone: Params4bit.quant_state, not a parameter
# per trainable parameter, by optimizer class name
ADAM_STATE_BYTES = {"AdamW": 8.0, "AdamW8bit": 2 * (1 + 4 / 256), "PagedAdamW8bit": 2 * (1 + 4 / 256)}
LOGIT_BYTES = 12  # CALIBRATE: bf16 logits + fp32 upcast + saved log-softmax + fp32 grad (vram.md §1.4: 10-14)
# answer tokens per sample the loss covers (class name + <|im_end|>), when no batch was seen (vram.md §1.4)
DEFAULT_LOSS_TOKENS = 8
CUDA_CONTEXT_BYTES = int(0.5 * GIB)  # CALIBRATE: 0.3-0.8 GiB with lazy module loading (vram.md §1.6)
ALLOCATOR_RESERVE = 0.08  # CALIBRATE: reserved/allocated - 1 (vram.md §1.6: 1.05-1.15)
VISION_BLOCK_FACTOR = 12  # CALIBRATE: frozen-ViT working set per patch, in units of the ViT width


@dataclass
class Architecture:
    """What the formulas need, read off a model instantiated on the meta device."""

    total: int
    vision: int  # vision tower incl. merger
    embed: int
    lm_head: int  # 0 when tied to the embeddings
    llm_linear: int  # weights of nn.Linear layers in the language model (4-bit by default)
    hidden: int
    layers: int
    heads: int
    kv_dim: int  # num_key_value_heads * head_dim
    intermediate: int
    vocab: int
    vision_width: int
    family: Family | None = None  # whose defaults (LoRA targets, modules kept out of 4-bit) apply
    experts: int = 0  # routed-expert weights of an MoE (fused parameters, not Linears)
    active: int = 0  # parameters one token runs through: total less the routed experts it does not use
    linears: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (in, out)
    module_params: dict[str, int] = field(default_factory=dict)  # every module name -> its parameter count


def architecture_from_config(config) -> Architecture:
    """Exact counts from `AutoModelForImageTextToText.from_config(config)` built on the meta device."""
    from transformers import AutoModelForImageTextToText

    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config)
    family = family_of(config)
    params = dict(model.named_parameters())  # tied weights appear once
    total = sum(p.numel() for p in params.values())
    vision = sum(
        p.numel()
        for n, p in params.items()
        if n.startswith(tuple(p + "." for p in family.vram.vision_prefixes))
    )
    experts = 0
    if family.vram.moe_experts:
        experts = sum(p.numel() for n, p in params.items() if family.vram.moe_experts in n)
    embed = sum(p.numel() for n, p in params.items() if "embed_tokens" in n)
    lm_head = sum(p.numel() for n, p in params.items() if n.startswith("lm_head"))
    linears, llm_linear = {}, 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            linears[name] = (module.in_features, module.out_features)
            if "language_model" in name:
                llm_linear += module.weight.numel()
    module_params = {n: sum(p.numel() for p in m.parameters()) for n, m in model.named_modules() if n}
    text = config.get_text_config()
    vis = config.vision_config
    used = getattr(text, "num_experts_per_tok", 0) / getattr(text, "num_experts", 1) if experts else 0
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    return Architecture(
        total=total,
        vision=vision,
        embed=embed,
        lm_head=lm_head,
        llm_linear=llm_linear,
        hidden=text.hidden_size,
        layers=text.num_hidden_layers,
        heads=text.num_attention_heads,
        kv_dim=text.num_key_value_heads * head_dim,
        intermediate=text.intermediate_size,
        vocab=text.vocab_size,
        vision_width=getattr(vis, "embed_dim", None) or vis.hidden_size,
        family=family,
        experts=experts,
        active=total - experts + round(experts * used),
        linears=linears,
        module_params=module_params,
    )


def quantized_linears(arch: Architecture, skip_modules: list[str] | None) -> dict[str, int]:
    """name -> weight elements of each Linear bitsandbytes makes 4-bit: every one whose name no skip pattern
    matches, by transformers' own rule (`quantizers_utils.should_convert_module`)."""
    from transformers.quantizers.quantizers_utils import should_convert_module

    if skip_modules is None:
        skip_modules = arch.family.kept_out_of_4bit
    return {n: i * o for n, (i, o) in arch.linears.items() if should_convert_module(n, list(skip_modules))}


def parameter_counts(arch: Architecture, s: FootprintInputs) -> dict[str, int]:
    """The counts behind the table: what the model holds, what is 4-bit and what the optimizer updates."""
    counts = {"total": arch.total}
    if arch.experts:
        counts["routed experts (MoE)"] = arch.experts
        counts["active per token (MoE)"] = arch.active
    counts |= {
        "vision tower": arch.vision,
        "language model": arch.total - arch.vision - arch.lm_head,
        "lm_head (untied)": arch.lm_head,
    }
    if s.method == "qlora":
        counts["4-bit (NF4)"] = sum(quantized_linears(arch, s.skip_modules).values())
    counts["trainable"] = trainable_params(arch, s)
    return counts


def trainable_params(arch: Architecture, s: FootprintInputs) -> int:
    if s.method == "full":
        return arch.total
    return lora_trainable_params(arch, s.target_regex, s.lora_r, s.modules_to_save)


def parameter_bytes(arch: Architecture, s: FootprintInputs) -> dict[str, int]:
    """Bytes of every parameter the prepared model holds, by storage dtype (`nf4`: the packed 4-bit codes, as
    `Params4bit` stores them, two per byte). `models/adapters.py` keeps each frozen parameter that is not 4-bit
    in `s.dtype` and the trainable ones (LoRA, `modules_to_save` copies) in `s.trainable_dtype`."""
    out: dict[str, int] = {}

    def add(dtype: str, n: int) -> None:
        if n:
            out[dtype] = out.get(dtype, 0) + n

    if s.method == "full":
        add(s.dtype, DTYPE_BYTES[s.dtype] * arch.total)
        return out
    frozen = arch.total
    if s.method == "qlora":
        quantized = quantized_linears(arch, s.skip_modules)
        add("nf4", sum((n + 1) // 2 for n in quantized.values()))
        frozen -= sum(quantized.values())
    add(s.dtype, DTYPE_BYTES[s.dtype] * frozen)
    add(s.trainable_dtype, DTYPE_BYTES[s.trainable_dtype] * trainable_params(arch, s))
    return out


def lora_trainable_params(
    arch: Architecture, target_regex: str | None, r: int, modules_to_save: list[str]
) -> int:
    """r * (in + out) per adapted Linear (PEFT matches `target_modules` as a full-match regex; null: the
    family's), plus the trainable copies of `modules_to_save` (matched as name suffixes, like PEFT)."""
    pattern = re.compile(target_regex or arch.family.lora_targets)
    lora = sum(r * (i + o) for name, (i, o) in arch.linears.items() if pattern.fullmatch(name))
    saved = 0
    for name, count in arch.module_params.items():
        if any(name == m or name.endswith("." + m) for m in modules_to_save):
            saved += count
    return lora + saved


@dataclass
class FootprintInputs:
    method: str = "lora"  # full | lora | qlora
    dtype: str = "bfloat16"  # of the frozen base (model.dtype); 4-bit Linears aside
    trainable_dtype: str = "float32"  # of LoRA and modules_to_save (models/adapters.py `trainable_dtype`)
    skip_modules: list[str] | None = None  # not made 4-bit; null: the family's vision tower and lm_head
    lora_r: int = 16
    lora_dropout: float = 0.05
    target_regex: str | None = None  # null: the family's LoRA targets
    modules_to_save: list[str] = field(default_factory=list)
    optimizer: str = "AdamW"  # AdamW | AdamW8bit | PagedAdamW8bit (the class name)
    gradient_checkpointing: bool = True
    attn_implementation: str = "sdpa"  # sdpa | flash_attention_2 | eager
    micro_batch: int = 1
    seq_len: int = 512  # text + vision tokens as the LLM sees them
    vision_tokens: int = 256  # LLM-side vision tokens per sample (4x as many ViT patches)
    loss_tokens: int = DEFAULT_LOSS_TOKENS  # supervised tokens per sample: the only ones given logits
    cuda: bool = True


def estimate(arch: Architecture, s: FootprintInputs) -> dict[str, int]:
    """Peak memory terms in bytes; they sum to the prediction (`sum(estimate(...).values())`)."""
    if s.method not in ("full", "lora", "qlora"):
        raise ValueError(f"method: expected full, lora or qlora, got {s.method!r}")
    if s.optimizer not in ADAM_STATE_BYTES:
        raise ValueError(f"optimizer: expected one of {sorted(ADAM_STATE_BYTES)}, got {s.optimizer!r}")
    w = DTYPE_BYTES[s.dtype]
    b, seq, h, n_layers = s.micro_batch, s.seq_len, arch.hidden, arch.layers
    terms: dict[str, int] = {}

    # weights: the frozen parameters in their real dtypes (`parameter_bytes`) plus the 4-bit quantization
    # constants; a full fine-tune trains every weight in the model dtype (grads and states: trainable_state)
    trainable = trainable_params(arch, s)
    stored = parameter_bytes(arch, s)
    if s.method == "full":
        terms["weights"] = w * arch.total
    else:
        t = DTYPE_BYTES[s.trainable_dtype]
        frozen = sum(stored.values()) - t * trainable
        if s.method == "qlora":
            frozen += int(NF4_CONSTANT_BYTES * sum(quantized_linears(arch, s.skip_modules).values()))
        terms["weights"] = frozen

    # trainable parameters: their own weights (for adapters), gradients and optimizer states
    if s.method == "full":
        state = trainable * (w + (ADAM_STATE_BYTES[s.optimizer] if s.optimizer != "AdamW" else 2 * w))
    else:
        state = trainable * (t + t + ADAM_STATE_BYTES[s.optimizer])  # weight + grad in trainable_dtype
    terms["trainable_state"] = int(state)

    # decoder activations per token per layer (vram.md §1.3), in units of 2-byte activations
    scale = w / 2
    per_layer = 16 * h + 4 * arch.kv_dim + 8 * arch.intermediate
    if s.method != "full" and s.lora_dropout > 0:
        per_layer += 18 * h + 3 * arch.intermediate  # each adapted Linear saves its dropout output + mask
    eager = 6 * arch.heads * seq * seq if s.attn_implementation == "eager" else 0
    if s.gradient_checkpointing:
        act = b * seq * (2 * h * n_layers + per_layer + 6 * h) * scale + b * eager
    else:
        act = (b * seq * n_layers * per_layer + b * seq * 6 * h) * scale + b * n_layers * eager
    terms["activations"] = int(act)

    # lm_head runs only where the loss is (training/answer_loss.py): the answer tokens, not the whole sequence
    terms["logits_loss"] = int(b * min(s.loss_tokens, seq) * arch.vocab * LOGIT_BYTES)

    # frozen vision tower: transient working set of one block + the merged features handed to the LM
    patches = 4 * s.vision_tokens * b
    terms["vision"] = int(
        patches * arch.vision_width * VISION_BLOCK_FACTOR * scale + s.vision_tokens * b * h * w
    )

    allocated = sum(terms.values())
    terms["cuda_context"] = CUDA_CONTEXT_BYTES if s.cuda else 0
    terms["allocator_reserve"] = int(ALLOCATOR_RESERVE * allocated)
    return terms


@dataclass
class BatchPlan:
    micro_batch: int
    accumulate: int
    world_size: int
    global_batch: int
    predicted_bytes: int
    budget_bytes: int
    terms: dict[str, int]
    counts: dict[str, int] = field(default_factory=dict)  # parameter_counts: the numbers behind the terms


class DoesNotFitError(ValueError):
    pass


def plan_batches(
    arch: Architecture,
    setup: FootprintInputs,
    budget_bytes: int,
    global_batch: int,
    world_size: int = 1,
    margin: float = 0.10,
) -> BatchPlan:
    """Largest micro-batch that fits `budget * (1 - margin)` and divides the per-rank batch exactly."""
    if global_batch < 1 or world_size < 1:
        raise ValueError("global batch size and world size must be >= 1")
    if global_batch % world_size:
        raise ValueError(f"global batch {global_batch} is not divisible by world size {world_size}")
    per_rank = global_batch // world_size
    usable = budget_bytes * (1 - margin)

    def predict(b: int) -> dict[str, int]:
        return estimate(arch, FootprintInputs(**{**setup.__dict__, "micro_batch": b}))

    one = predict(1)
    if sum(one.values()) > usable:
        raise DoesNotFitError(explain_overflow(one, usable, setup))
    best = 1
    for b in range(2, per_rank + 1):
        if per_rank % b == 0 and sum(predict(b).values()) <= usable:
            best = b
        elif sum(predict(b).values()) > usable:
            break
    terms = predict(best)
    return BatchPlan(
        best,
        per_rank // best,
        world_size,
        global_batch,
        sum(terms.values()),
        budget_bytes,
        terms,
        parameter_counts(arch, setup),
    )


def explain_overflow(terms: dict[str, int], usable: float, setup: FootprintInputs) -> str:
    top = sorted(terms.items(), key=lambda kv: -kv[1])[:3]
    tips = []
    if setup.method != "qlora":
        tips.append("QLoRA (model.quantization.enabled=true)")
    if not setup.gradient_checkpointing:
        tips.append("gradient checkpointing (model.gradient_checkpointing=true)")
    tips += ["fewer frames or pixels (data.sampler.num_frames / data.sampler.max_pixels)", "a shorter prompt"]
    if setup.optimizer == "AdamW":
        tips.append("8-bit AdamW (optim=paged_adamw_8bit)")
    largest = ", ".join(f"{k} {v / GIB:.2f} GiB" for k, v in top)
    return (
        f"even micro-batch 1 needs {sum(terms.values()) / GIB:.2f} GiB, over the usable {usable / GIB:.2f} GiB. "
        f"Largest terms: {largest}. What would help: {'; '.join(tips)}."
    )
