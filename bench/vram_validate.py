"""Check the VRAM prediction against the measured peak on a GPU (one short script, a few minutes on an H100).

    .venv/bin/python bench/vram_validate.py --write          # on a CUDA machine; updates docs/benchmarks.md
    .venv/bin/python bench/vram_validate.py --smoke          # CPU: the tiny model through the same code path

Grid: 2 models (Qwen2-VL-2B, Qwen2.5-VL-3B, real sizes, random weights: nothing downloaded) x LoRA/QLoRA x
2 sequence lengths x gradient checkpointing on/off; micro-batch 1, 3 training steps each (optimizer states
appear at the first step). Per row: measured `max_memory_allocated` vs the predicted allocated memory (the
estimate without CUDA context and allocator reserve), and the error. Target: every row within 10 %.
"""

from __future__ import annotations

import argparse
import gc
import shutil
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

from benchdoc import update_section  # noqa: E402

from vlmchallenge.models.adapters import apply_adapters  # noqa: E402
from vlmchallenge.models.architectures import shipped_config  # noqa: E402
from vlmchallenge.models.config import LoraSettings, ModelConfig, QuantizationSettings  # noqa: E402
from vlmchallenge.models.families import TinyModelSpec, ensure_tiny  # noqa: E402
from vlmchallenge.training.answer_loss import answer_forward  # noqa: E402
from vlmchallenge.training.vram_math import GIB, FootprintInputs, architecture_from_config, estimate  # noqa: E402

MODELS = ["Qwen/Qwen2-VL-2B-Instruct", "Qwen/Qwen2.5-VL-3B-Instruct"]


def random_checkpoint(config, folder: Path) -> Path:
    """Real-size random weights saved once, so QLoRA can quantize them through from_pretrained."""
    from transformers import AutoModelForImageTextToText

    if not (folder / "config.json").exists():
        model = AutoModelForImageTextToText.from_config(config, dtype=torch.bfloat16)
        model.save_pretrained(folder)
        del model
    return folder


def fake_batch(config, seq_len: int, vision_tokens: int, device) -> dict:
    """One clip of 2 frames (one temporal patch, grid 1 x h x w) giving `vision_tokens` LLM tokens inside
    `seq_len` tokens; loss on the last 8."""
    side = int(vision_tokens**0.5)
    grid = torch.tensor([[1, 2 * side, 2 * (vision_tokens // side)]], device=device)
    n_tokens = int(grid.prod() // 4)
    vocab = config.get_text_config().vocab_size
    ids = torch.randint(10, min(1000, vocab - 1), (1, seq_len), device=device)
    ids[0, 1] = config.vision_start_token_id
    ids[0, 2 : 2 + n_tokens] = config.video_token_id
    ids[0, 2 + n_tokens] = config.vision_end_token_id
    mm = (ids == config.video_token_id).long() * 2
    labels = torch.full_like(ids, -100)
    labels[0, -8:] = ids[0, -8:]
    patches = torch.randn(int(grid.prod()), 3 * 2 * 14 * 14, device=device, dtype=torch.bfloat16)
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "mm_token_type_ids": mm,
        "pixel_values_videos": patches,
        "video_grid_thw": grid,
        "labels": labels,
    }


def measure(path: str, cfg: ModelConfig, batch: dict, device) -> int:
    from vlmchallenge.models.loader import load_base_model

    model = apply_adapters(load_base_model(cfg, path, device=device), cfg).to(device)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(3):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            # the training path: logits at the answer positions only (VLMClassifier.forward)
            loss = answer_forward(
                model, {k: v for k, v in batch.items() if k != "labels"}, batch["labels"]
            ).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
    del model, opt, params
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return peak


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--smoke", action="store_true", help="CPU: tiny model, no measurement, checks the script runs"
    )
    p.add_argument("--seq", type=int, nargs=2, default=[1024, 2048])
    p.add_argument("--vision-tokens", type=int, default=256)
    p.add_argument("--workdir", default=None)
    p.add_argument("--write", action="store_true")
    a = p.parse_args()
    device = torch.device("cpu" if a.smoke else "cuda")
    if not a.smoke and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --smoke on CPU, or on a GPU machine")
    work = Path(a.workdir or tempfile.mkdtemp(prefix="vram_validate_"))
    rows = []
    targets = ["tiny"] if a.smoke else MODELS
    for name in targets:
        if a.smoke:
            path = str(ensure_tiny(TinyModelSpec(), work / "models"))
            from transformers import AutoConfig

            config = AutoConfig.from_pretrained(path)
        else:
            config = shipped_config(name)
            path = str(random_checkpoint(config, work / name.replace("/", "--")))
        arch = architecture_from_config(config)
        for method in ("lora", "qlora"):
            for seq in [128] if a.smoke else a.seq:
                for gc_on in (True, False):
                    vision = 16 if a.smoke else a.vision_tokens
                    cfg = ModelConfig(
                        pretrained=path,
                        dtype="bfloat16",
                        gradient_checkpointing=gc_on,
                        lora=LoraSettings(r=16, dropout=0.05),
                        quantization=QuantizationSettings(
                            enabled=method == "qlora", compute_dtype="bfloat16"
                        ),
                    )
                    setup = FootprintInputs(
                        method=method,
                        seq_len=seq,
                        vision_tokens=vision,
                        gradient_checkpointing=gc_on,
                        lora_dropout=0.05,
                        cuda=device.type == "cuda",
                    )
                    terms = estimate(arch, setup)
                    predicted = sum(terms.values()) - terms["cuda_context"] - terms["allocator_reserve"]
                    start = time.perf_counter()
                    measured = measure(path, cfg, fake_batch(config, seq, vision, device), device)
                    err = (measured / predicted - 1) if measured else float("nan")
                    rows.append(
                        (name, method, seq, gc_on, predicted, measured, err, time.perf_counter() - start)
                    )
                    print(rows[-1], flush=True)
    lines = [
        "## VRAM prediction vs measured peak (`bench/vram_validate.py`)",
        "",
        f"Command: `.venv/bin/python bench/vram_validate.py {' '.join(sys.argv[1:])}` ({date.today().isoformat()}), "
        f"{torch.cuda.get_device_name() if device.type == 'cuda' else 'CPU smoke run (no measurement)'}.",
        "",
        "| model | method | seq | GC | predicted GiB | measured GiB | error |",
        "|---|---|---:|---|---:|---:|---:|",
        *(
            f"| {m} | {meth} | {s} | {'on' if g else 'off'} | {pr / GIB:.2f} | {me / GIB:.2f} | {e:+.1%} |"
            for m, meth, s, g, pr, me, e, _ in rows
        ),
    ]
    section = "\n".join(lines)
    print(section)
    if a.write and not a.smoke:
        update_section("vram_validate", section)
    if not a.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
