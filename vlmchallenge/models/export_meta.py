"""An export folder's `vlmchallenge.json`: what serving, evaluation and annotation need to use a model the way it
was trained. `export_model` writes it; everything else reads it once, through `ExportMeta.read`, into this typed
record, so no module indexes a dict by key, and the prompt is rebuilt in one place.

A file that is missing, or that lacks a field or holds an unknown one, is an error naming the file and the field.
An export is never half-read.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from vlmchallenge.data.clip_builder import ClipConfig
from vlmchallenge.data.frame_sampler import SamplerConfig
from vlmchallenge.models.prompt import PromptBuilder

EXPORT_META = "vlmchallenge.json"


@dataclass(frozen=True)
class ExportMeta:
    vlmchallenge_version: str
    base_model: str  # the hub id or local folder the adapter was trained on
    adapter: str | None  # "adapter": the PEFT adapter's subfolder; None: the model was trained in full
    quantized_training: bool
    sampler: SamplerConfig  # how frames were chosen, cropped and sized for training
    clips: ClipConfig  # how clips were cut (window, stride, min frames) for training
    prompt: PromptBuilder  # the class names in the prompt's order, the question, the chat-template arguments
    data_fingerprint: str

    def to_json(self) -> dict:
        return {
            "vlmchallenge_version": self.vlmchallenge_version,
            "base_model": self.base_model,
            "adapter": self.adapter,
            "quantized_training": self.quantized_training,
            "sampler": asdict(self.sampler),
            "clips": asdict(self.clips),
            "prompt": self.prompt.to_dict(),
            "data_fingerprint": self.data_fingerprint,
        }

    def write(self, export_dir: Path) -> None:
        (export_dir / EXPORT_META).write_text(json.dumps(self.to_json(), indent=1))

    @classmethod
    def read(cls, export_dir: str | Path) -> ExportMeta:
        path = Path(export_dir) / EXPORT_META
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: not a vlmchallenge export folder (python -m vlmchallenge.export)"
            )
        raw = json.loads(path.read_text())
        parts = {"sampler": SamplerConfig, "clips": ClipConfig, "prompt": PromptBuilder}
        try:
            typed = {name: part(**raw[name]) for name, part in parts.items()}
            return cls(**{**raw, **typed})
        except (KeyError, TypeError) as e:  # a missing field, or one this version does not know
            raise ValueError(
                f"{path}: {e}; expected the fields {', '.join(cls.__dataclass_fields__)} as "
                "`python -m vlmchallenge.export` writes them (re-export with this version)"
            ) from None
