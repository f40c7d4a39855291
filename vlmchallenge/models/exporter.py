"""Write one self-contained export folder from a trained module.

    <export>/                config.json, model.safetensors, processor + tokenizer files: the merged model,
                             loadable with plain `transformers` (AutoModelForImageTextToText / AutoProcessor)
    <export>/adapter/        the PEFT adapter (+ modules_to_save), loadable with plain `peft` onto the base
    <export>/label_map.json  class index -> OpenPack id and name, in the prompt's order
    <export>/vlmchallenge.json  sampler and prompt settings, base model, data fingerprint, versions

The merge always happens onto an *unquantized* base: merging into a 4-bit base is a silent no-op
(huggingface/peft#2586). The folder is built under a temporary name and renamed when complete.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from vlmchallenge import __version__
from vlmchallenge.data.classes import NAME_TO_CLASS
from vlmchallenge.data.config import DataConfig
from vlmchallenge.models.config import ModelConfig
from vlmchallenge.models.export_meta import ExportMeta
from vlmchallenge.models.families import family_of
from vlmchallenge.models.loader import configure_video_size, load_base_model
from vlmchallenge.models.prompt import PromptBuilder
from vlmchallenge.utils.atomic import atomic_directory

LABEL_MAP = "label_map.json"


def read_label_map(export_dir: str | Path) -> list[dict]:
    return json.loads((Path(export_dir) / LABEL_MAP).read_text())


def export_model(
    model,
    processor,
    model_cfg: ModelConfig,
    pretrained: str,
    data_cfg: DataConfig,
    prompt: PromptBuilder,
    out_dir,
) -> Path:
    from peft import PeftModel

    out_dir = Path(out_dir)
    with atomic_directory(out_dir) as tmp:
        if isinstance(model, PeftModel):
            model.save_pretrained(tmp / "adapter")
            base = load_base_model(model_cfg, pretrained, quantized=False)
            merged = PeftModel.from_pretrained(base, tmp / "adapter").merge_and_unload()
        else:
            merged = model
        merged.to(torch.device("cpu")).save_pretrained(tmp)
        configure_video_size(processor, data_cfg.sampler, family_of(merged.config))
        processor.save_pretrained(tmp)
        label_map = [
            {"index": i, "id": NAME_TO_CLASS[name].id, "name": name}
            for i, name in enumerate(prompt.class_names)
        ]
        (tmp / LABEL_MAP).write_text(json.dumps(label_map, indent=1))
        ExportMeta(
            vlmchallenge_version=__version__,
            base_model=pretrained,
            adapter="adapter" if isinstance(model, PeftModel) else None,
            quantized_training=model_cfg.quantization.enabled,
            sampler=data_cfg.sampler,
            clips=data_cfg.clips,
            prompt=prompt,
            data_fingerprint=data_cfg.fingerprint(),
        ).write(tmp)
        readable_by_all(tmp)
    return out_dir


def readable_by_all(folder: Path) -> None:
    """Give every file the permissions the user's umask gives a new file (0644 under the usual 022). safetensors
    writes its weight files 0600, so a server under another user (the Docker image's uid 10001, a systemd
    service account) could not read an export mounted into it, and transformers then reports the file missing."""
    umask = os.umask(0)
    os.umask(umask)
    for path in [folder, *folder.rglob("*")]:
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)
