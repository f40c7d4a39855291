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
import shutil
from dataclasses import asdict
from pathlib import Path

import torch

from vlmchallenge import __version__
from vlmchallenge.data.classes import NAME_TO_CLASS
from vlmchallenge.data.config import DataConfig
from vlmchallenge.models.config import ModelConfig
from vlmchallenge.models.loader import configure_video_size, load_base_model
from vlmchallenge.models.prompt import PromptBuilder

EXPORT_META = "vlmchallenge.json"
LABEL_MAP = "label_map.json"


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
    tmp = out_dir.with_name(out_dir.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if isinstance(model, PeftModel):
        model.save_pretrained(tmp / "adapter")
        base = load_base_model(model_cfg, pretrained, quantized=False)
        merged = PeftModel.from_pretrained(base, tmp / "adapter").merge_and_unload()
    else:
        merged = model
    merged.to(torch.device("cpu")).save_pretrained(tmp)
    configure_video_size(processor, data_cfg.sampler)
    processor.save_pretrained(tmp)
    label_map = [
        {"index": i, "id": NAME_TO_CLASS[name].id, "name": name} for i, name in enumerate(prompt.class_names)
    ]
    (tmp / LABEL_MAP).write_text(json.dumps(label_map, indent=1))
    meta = {
        "vlmchallenge_version": __version__,
        "base_model": pretrained,
        "adapter": "adapter" if isinstance(model, PeftModel) else None,
        "quantized_training": model_cfg.quantization.enabled,
        "sampler": asdict(data_cfg.sampler),
        "clips": asdict(data_cfg.clips),
        "prompt": prompt.to_dict(),
        "data_fingerprint": data_cfg.fingerprint(),
    }
    (tmp / EXPORT_META).write_text(json.dumps(meta, indent=1))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
    return out_dir
