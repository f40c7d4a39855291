#!/usr/bin/env bash
# `make gpu-check`: every check that needs CUDA, in one run on a fresh GPU machine (after `make install`).
#   DRY_RUN=1 make gpu-check    # on a CPU machine: the same steps through their CPU paths, to test this script
# Tables go into docs/benchmarks.md (--write). Steps that need more GPUs than the machine has say so and skip.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
GPUS=$($PY -c "import torch; print(torch.cuda.device_count())")
echo "gpu-check: $GPUS CUDA device(s)"
if [ "$GPUS" = 0 ] && [ -z "${DRY_RUN:-}" ]; then
    echo "gpu-check: no CUDA device; DRY_RUN=1 runs the CPU paths of the same steps" >&2
    exit 2
fi

if [ -n "${DRY_RUN:-}" ]; then
    $PY -m pytest -q -m gpu tests/test_gpu.py           # collected and skipped without CUDA
    $PY bench/vram_validate.py --smoke
    $PY bench/ddp.py --steps 12 --window 8 --repeats 1  # gloo on CPU, nothing written
    exit 0
fi

$PY -m pytest -q -m gpu                                 # bf16, CUDA QLoRA, paged AdamW, VRAM callback, FSDP
$PY bench/vram_validate.py --write                      # predicted vs measured peak
if [ "$GPUS" -ge 2 ]; then
    $PY bench/ddp.py --gpu --devices "$GPUS" --write    # DDP scaling over NCCL
else
    echo "gpu-check: bench/ddp.py --gpu needs >= 2 GPUs (NCCL refuses two ranks on one GPU); skipped"
fi
