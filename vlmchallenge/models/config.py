"""Structured configs of the model group (with its LoRA and quantization parts) and the optimizer group."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from vlmchallenge.models.attention import choose_attention
from vlmchallenge.models.families.tiny_spec import TinyModelSpec
from vlmchallenge.models.liger import normalise as normalise_liger


@dataclass
class LoraSettings:
    enabled: bool = True
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    # a PEFT regex; null: the model family's language-model linears (models/families/, docs/families.md)
    target_modules: str | None = None
    modules_to_save: list[str] = field(default_factory=list)  # trained in full beside the adapter
    bias: str = "none"


@dataclass
class QuantizationSettings:
    """bitsandbytes 4-bit (QLoRA). The vision tower and lm_head stay 16/32-bit (skip names are full prefixes).
    Allowed only where the model family's QLoRA policy allows it (docs/families.md)."""

    enabled: bool = False
    quant_type: str = "nf4"
    double_quant: bool = True
    compute_dtype: str = "bfloat16"
    # null: the family's vision tower and lm_head (`Family.kept_out_of_4bit`)
    skip_modules: list[str] | None = None
    # the dtype the packed 4-bit weights are stored in; null: bitsandbytes' uint8. FSDP shards only float tensors
    # of one dtype per block, so under FSDP assembly sets it to the compute dtype (docs/scaling.md §3)
    quant_storage: str | None = None


@dataclass
class ModelConfig:
    name: str = "tiny"
    # A hub id (downloaded only because you named it) or a local checkpoint folder. Null with `tiny` set: the
    # tiny model is built into `cache_dir` once and loaded from there through the same Auto* loader.
    pretrained: str | None = None
    tiny: TinyModelSpec | None = None
    cache_dir: str = "data/models"
    dtype: str = "float32"  # float32 | bfloat16 | float16
    # sdpa | eager | flash_attention_2 | auto (flash-attn 2 where it can run, else sdpa; models/attention.py)
    attn_implementation: str = "sdpa"
    liger: str = "off"  # off | auto | on: Liger's Triton kernels on CUDA (models/liger.py)
    gradient_checkpointing: bool = False
    lora: LoraSettings = field(default_factory=LoraSettings)
    quantization: QuantizationSettings = field(default_factory=QuantizationSettings)

    def for_family(self, family) -> ModelConfig:
        """A copy with what this config leaves null filled from the model family (`models/families/`): the LoRA
        targets and the modules kept out of 4-bit. Each default lives with its family."""
        out = copy.deepcopy(self)
        if out.lora.target_modules is None:
            out.lora.target_modules = family.lora_targets
        if out.quantization.skip_modules is None:
            out.quantization.skip_modules = family.kept_out_of_4bit
        return out

    def check_family(self, family) -> None:
        """Refuse what the family's policy forbids, before any weights load."""
        if self.quantization.enabled and not family.qlora.allowed:
            raise ValueError(
                f"model.quantization.enabled=true: {family} is not trained in 4-bit here: {family.qlora.why}. "
                "Set model.quantization.enabled=false (bf16 LoRA)"
            )

    def validate(self) -> None:
        if (self.pretrained is None) == (self.tiny is None):
            raise ValueError("model: set exactly one of model.pretrained (hub id or folder) and model.tiny")
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"model.dtype: expected float32, bfloat16 or float16, got {self.dtype!r}")
        choose_attention(self.attn_implementation, False, None, self.dtype)  # raises on an unknown value
        normalise_liger(self.liger)
        storage = self.quantization.quant_storage
        if storage is not None and storage not in ("float32", "bfloat16", "float16"):
            raise ValueError(
                f"model.quantization.quant_storage: expected null, float32, bfloat16 or float16, got {storage!r}"
            )
        if self.quantization.enabled and not self.lora.enabled:
            raise ValueError(
                "model.quantization.enabled needs model.lora.enabled: a 4-bit base cannot be trained"
            )


def _adamw() -> dict:
    # `_partial_`: the module calls it with the trainable parameters; the hyperparameters follow the fields
    # below, so `optim.lr=1e-3` keeps working whatever the optimizer class
    return {
        "_target_": "torch.optim.AdamW",
        "_partial_": True,
        "lr": "${..lr}",
        "weight_decay": "${..weight_decay}",
        "betas": "${..betas}",
    }


@dataclass
class OptimConfig:
    """The optimizer is built by Hydra's `instantiate` from `optimizer` (any `_target_`; `optim=paged_adamw_8bit`
    selects bitsandbytes' paged 8-bit AdamW), the schedule by `transformers.get_scheduler`."""

    lr: float = 2e-3
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    optimizer: dict[str, Any] = field(default_factory=_adamw)
    scheduler: str = (
        "cosine_with_min_lr"  # any transformers.get_scheduler name: linear, constant_with_warmup...
    )
    scheduler_kwargs: dict[str, Any] = field(default_factory=lambda: {"min_lr_rate": 0.1})
    warmup_steps: int = 30
    grad_clip: float = 1.0

    @property
    def optimizer_class(self) -> str:
        """The optimizer's class name, e.g. `AdamW` or `PagedAdamW8bit` (the VRAM math sizes its state by it)."""
        return str(self.optimizer["_target_"]).rsplit(".", 1)[-1]
