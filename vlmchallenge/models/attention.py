"""Which attention implementation to load a model with (docs/tiny-vlm.md §5).

`sdpa` (PyTorch's fused scaled-dot-product attention) works everywhere and is the default. `flash_attention_2`
needs the `flash-attn` package, an Ampere-or-newer CUDA GPU and 16-bit weights; asked for (or `auto`) where one
of those is missing, the model loads with `sdpa` and one log line says why, instead of transformers raising at
load time. The decision is a pure function of the facts so that it is testable without a GPU.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)

CHOICES = ("auto", "sdpa", "eager", "flash_attention_2")
FLASH = "flash_attention_2"
FLASH_MIN_CAPABILITY = (8, 0)  # Ampere: flash-attn 2's README lists Ampere, Ada and Hopper
FLASH_DTYPES = ("bfloat16", "float16")


@dataclass(frozen=True)
class AttentionChoice:
    requested: str
    used: str
    reason: str = ""  # why `used` differs from `requested`; empty when it does not

    @property
    def message(self) -> str:
        if not self.reason:
            return f"attention: {self.used}"
        return f"attention: model.attn_implementation={self.requested} -> using {self.used}: {self.reason}"


def flash_unusable_reason(flash_installed: bool, capability: tuple[int, int] | None, dtype: str) -> str:
    """Why flash-attn 2 cannot run here, or "" when it can."""
    if not flash_installed:
        return "the flash-attn package is not installed (pip install flash-attn --no-build-isolation)"
    if capability is None:
        return "the model does not load on a CUDA GPU"
    if tuple(capability) < FLASH_MIN_CAPABILITY:
        major, minor = capability
        return f"the GPU has compute capability {major}.{minor}; flash-attn 2 needs 8.0 (Ampere) or newer"
    if dtype not in FLASH_DTYPES:
        return f"model.dtype={dtype}; flash-attn 2 runs in bfloat16 or float16 only"
    return ""


def choose_attention(
    requested: str, flash_installed: bool, capability: tuple[int, int] | None, dtype: str
) -> AttentionChoice:
    """`auto` and `flash_attention_2` mean flash-attn 2 where it can run, else `sdpa`; the others are kept."""
    if requested not in CHOICES:
        raise ValueError(
            f"model.attn_implementation: expected one of {', '.join(CHOICES)}, got {requested!r}"
        )
    if requested in ("sdpa", "eager"):
        return AttentionChoice(requested, requested)
    reason = flash_unusable_reason(flash_installed, capability, dtype)
    if not reason:
        return AttentionChoice(requested, FLASH, "" if requested == FLASH else "flash-attn 2 can run here")
    return AttentionChoice(requested, "sdpa", reason)


def cuda_capability(device: str | torch.device) -> tuple[int, int] | None:
    """The compute capability of `device`, or None when it is not a usable CUDA device."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_capability(device)


def resolve_attention(requested: str, dtype: str, device: str | torch.device) -> str:
    """The implementation to pass to `from_pretrained`; logs the choice when it is not the one asked for."""
    from transformers.utils import is_flash_attn_2_available

    choice = choose_attention(requested, is_flash_attn_2_available(), cuda_capability(device), dtype)
    if choice.reason:
        # an explicit flash_attention_2 that cannot run is worth a warning; `auto` falling back is expected
        (log.warning if requested == FLASH and choice.used != FLASH else log.info)(choice.message)
    return choice.used
