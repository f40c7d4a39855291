"""Optional Liger (Triton) kernels, for the families that name a Liger patch (`Family.liger`; docs/tiny-vlm.md §5).

`model.liger`: off | auto | on. Where the `liger-kernel` package, a CUDA device or a supported model type is
missing, the model loads without them and one log line says why. Liger's fused linear cross-entropy stays off:
its VLM forwards (liger_kernel/transformers/model/, 0.8.5) ignore `logits_to_keep` and would
project every position onto the vocabulary, undoing the answer-only logits of training/answer_loss.py.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass

import torch

from vlmchallenge.models.families import FAMILIES, LigerPatch

log = logging.getLogger(__name__)

SETTINGS = {"off": "off", "false": "off", "auto": "auto", "on": "on", "true": "on"}
# everything but the loss: RoPE, RMSNorm, SwiGLU (plus what a family's patch adds, `LigerPatch.extra_kernels`)
KERNELS = {
    "rope": True,
    "rms_norm": True,
    "swiglu": True,
    "cross_entropy": False,
    "fused_linear_cross_entropy": False,
}


def liger_patch(model_type: str) -> LigerPatch | None:
    for family in FAMILIES.values():
        if model_type in family.model_types and family.liger is not None:
            return family.liger
    return None


def patched_types() -> list[str]:
    return [t for f in FAMILIES.values() if f.liger is not None for t in f.model_types]


@dataclass(frozen=True)
class LigerChoice:
    requested: str
    apply: str | None  # the liger_kernel.transformers function to call, or None
    reason: str = ""  # why Liger is not applied although asked for

    @property
    def message(self) -> str:
        if self.apply:
            return f"liger: {self.apply} (fused linear cross-entropy off: the loss is answer-only already)"
        return f"liger: model.liger={self.requested} -> not applied: {self.reason}"


def normalise(setting) -> str:
    key = str(setting).strip().lower()
    if key not in SETTINGS:
        raise ValueError(f"model.liger: expected off, auto or on (or true/false), got {setting!r}")
    return SETTINGS[key]


def choose_liger(setting, installed: bool, cuda: bool, model_type: str) -> LigerChoice:
    """`model_type`: the checkpoint's config.model_type; its family says which Liger patch applies, if any."""
    requested = normalise(setting)
    if requested == "off":
        return LigerChoice(requested, None)
    if not installed:
        reason = "the liger-kernel package is not installed (pip install 'vlmchallenge[liger]')"
    elif not cuda:
        reason = "the model does not load on a CUDA device (Liger's kernels are Triton, CUDA only)"
    elif (patch := liger_patch(model_type)) is None:
        reason = (
            f"model type {model_type!r} has no Liger patch here (supported: {', '.join(patched_types())})"
        )
    else:
        return LigerChoice(requested, patch.apply)
    return LigerChoice(requested, None, reason)


def maybe_apply_liger(model, setting, device: str | torch.device) -> LigerChoice:
    """Patch `model` in place with Liger's kernels when `setting` asks for them and they can run."""
    choice = choose_liger(
        setting,
        installed=importlib.util.find_spec("liger_kernel") is not None,
        cuda=torch.device(device).type == "cuda" and torch.cuda.is_available(),
        model_type=model.config.model_type,
    )
    if choice.apply:
        import liger_kernel.transformers as lk

        kernels = dict(KERNELS) | dict.fromkeys(liger_patch(model.config.model_type).extra_kernels, True)
        getattr(lk, choice.apply)(model=model, **kernels)
        log.info(choice.message)
    elif choice.requested != "off":
        (log.warning if choice.requested == "on" else log.info)(choice.message)
    return choice
