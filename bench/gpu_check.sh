#!/usr/bin/env bash
# `make gpu-check`: every check that needs CUDA, in one run on a fresh GPU machine (after `make install`).
#   DRY_RUN=1 make gpu-check    # on a CPU machine: the same steps through their CPU paths, to test this script
# Tables go into docs/benchmarks.md (--write; GPU rows in their own `*_gpu` sections). Steps that need more GPUs
# than the machine has say so and skip. Per-step times below are estimates for one H200 (total <= 8 min); the
# first run also generates the synthetic data, prepares shards and builds the models, all offline.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
GPUS=$($PY -c "import torch; print(torch.cuda.device_count())")
echo "gpu-check: $GPUS CUDA device(s)"
if [ "$GPUS" = 0 ] && [ -z "${DRY_RUN:-}" ]; then
    echo "gpu-check: no CUDA device; DRY_RUN=1 runs the CPU paths of the same steps" >&2
    exit 2
fi

# Loader supply vs step consumption with a model of Qwen2-VL-2B's size: the tiny model's builder with the 2B
# config's dimensions (random weights, built offline, no download), bf16, checkpointing, flash-attn (and Liger,
# when liger-kernel is installed) where they can run (docs/tiny-vlm.md §5). The dry run composes the same keys at a size a CPU steps through.
REAL_SIZE=(model.tiny.hidden_size=1536 model.tiny.intermediate_size=8960 model.tiny.num_hidden_layers=28
    model.tiny.num_attention_heads=12 model.tiny.num_key_value_heads=2 model.tiny.vision_depth=32
    model.tiny.vision_embed_dim=1280 model.tiny.vision_num_heads=16 model.dtype=bfloat16
    model.gradient_checkpointing=true model.attn_implementation=auto model.liger=auto)
CPU_SIZE=(model.tiny.hidden_size=128 model.tiny.num_hidden_layers=3 model.tiny.num_attention_heads=4
    model.gradient_checkpointing=true model.attn_implementation=auto model.liger=auto)
TRAIN_DATA=data/gpu_check  # its own synthetic tree and shards: never regenerates the shared data/
ANNOTATE_DIR=data/bench_annotate  # bench/annotate.py's session and untrained export, reused by serve_load
SESSION_FRAMES=$ANNOTATE_DIR/synthetic/openpack/v1.0.0/U9001/kinect/color-masked/frames

if [ -n "${DRY_RUN:-}" ]; then
    $PY -m pytest -q -m gpu tests/test_gpu.py tests/test_attention.py   # collected and skipped without CUDA
    $PY bench/vram_validate.py --smoke
    $PY bench/ddp.py --steps 12 --window 8 --repeats 1                   # gloo on CPU, nothing written
    $PY bench/train_step.py --data-dir $TRAIN_DATA --steps 4 --warmup 1 --loader-batches 4 --repeats 1 "${CPU_SIZE[@]}"
    $PY bench/annotate.py --boxes 1 --naive-seconds 10
    $PY bench/serve_load.py --export $ANNOTATE_DIR/export --frames-dir $SESSION_FRAMES --concurrency 1 8 \
        --requests 16
    exit 0
fi

$PY -m pytest -q -m gpu                                 # ~2 min: bf16, CUDA QLoRA, paged AdamW, VRAM callback, FSDP
$PY bench/vram_validate.py --write                      # ~2 min: predicted vs measured peak
# ~2.5 min (model build ~1 min, two loads, 20 timed steps each)
$PY bench/train_step.py --data-dir $TRAIN_DATA --accelerator gpu --steps 25 --warmup 5 --loader-batches 30 \
    --repeats 1 --write "${REAL_SIZE[@]}"
$PY bench/annotate.py --device cuda --dtype float32 --boxes 3 --write      # ~40 s; fp32: the 1e-4 equality row
$PY bench/serve_load.py --device cuda --export $ANNOTATE_DIR/export --frames-dir $SESSION_FRAMES \
    --requests 100 --write                              # ~1 min: 2 servers x 3 concurrencies x 100 requests
if [ "$GPUS" -ge 2 ]; then
    $PY bench/ddp.py --gpu --devices "$GPUS" --write    # ~1 min: DDP scaling over NCCL
else
    echo "gpu-check: bench/ddp.py --gpu needs >= 2 GPUs (NCCL refuses two ranks on one GPU); skipped"
fi
