"""The sizes of a tiny, real-architecture model built offline for tests and CPU runs (docs/tiny-vlm.md §1).

The same spec builds any family (`family`); the family's own builder maps it onto its config.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

# the family `model.tiny: {}` builds: the one the suite was made with (docs/learnability.md)
DEFAULT_TINY_FAMILY = "qwen2_vl"


@dataclass
class TinyModelSpec:
    """Sizes of the tiny model (docs/learnability.md: hidden 64 x 2 layers is the size that learns on CPU)."""

    family: str = DEFAULT_TINY_FAMILY
    vocab_size: int = 600
    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    vision_depth: int = 2
    vision_embed_dim: int = 32
    vision_num_heads: int = 2
    seed: int = 0

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def fingerprint(self, recipe: object) -> str:
        """A hash of the spec and of everything else the builder bakes in (`recipe`: the builders' source)."""
        payload = {"spec": asdict(self), "recipe": recipe, "v": 2}
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:10]
