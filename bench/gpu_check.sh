#!/usr/bin/env bash
# Every check that needs CUDA, in one run, each step under its own time budget (docs/gpu-check.md).
#   make gpu-check                                # a GPU machine with `make install` done (.venv)
#   bench/gpu_check.sh --device-image [OUT_DIR]   # the lent GPU machine as it is: its python3, the carried .whl/
#   DRY_RUN=1 bench/gpu_check.sh [--device-image] # on a CPU: the same steps through their CPU paths
# A failing or overrunning step is reported and the others still run, so one try yields every table it can;
# the exit code is 1 when any step failed. The log, a table of steps and docs/benchmarks.md (the `--write`
# tables) go to OUT_DIR: the argument, else $OUT (the device tool's folder), else outputs/gpu_check.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

DEVICE_IMAGE=
if [ "${1:-}" = --device-image ]; then DEVICE_IMAGE=1; shift; fi
OUT_DIR=${1:-${OUT:-outputs/gpu_check}}
mkdir -p "$OUT_DIR"
LOG=$OUT_DIR/gpu_check.log
SUMMARY=$OUT_DIR/steps.md
: > "$LOG"
printf '| step | budget (s) | seconds | result |\n|---|---:|---:|---|\n' > "$SUMMARY"

if [ -n "$DEVICE_IMAGE" ]; then
    # The image has no package index: the bundle (bench/device/bundle.py) holds, as wheels, all it lacks.
    PY=${PY:-python3}
    SITE=${SITE:-/tmp/vlmchallenge-site}
    ls .whl/*.whl > /dev/null || { echo "gpu-check: no .whl/ bundle; run bench/device/bundle.py and carry .whl" | tee -a "$LOG"; exit 2; }
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl \
        2>&1 | tee -a "$LOG" || exit 2
    export PYTHONPATH=$SITE:$REPO${PYTHONPATH:+:$PYTHONPATH}
else
    PY=${PY:-.venv/bin/python}
fi
export HF_HUB_OFFLINE=1 MPLBACKEND=Agg PYTHONUNBUFFERED=1
FAILED=0

# step NAME BUDGET_S COMMAND...: runs it under `timeout` (the whole process group), logs, records the row
step() {
    local name=$1 budget=$2 start rc
    shift 2
    echo "== $name (budget ${budget} s): $*" | tee -a "$LOG"
    start=$(date +%s)
    timeout --kill-after=15 "$budget" "$@" 2>&1 | tee -a "$LOG"
    rc=${PIPESTATUS[0]}
    local seconds=$(($(date +%s) - start)) result=ok
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then result="over budget, stopped"; elif [ "$rc" != 0 ]; then result="failed (exit $rc)"; fi
    [ "$result" = ok ] || FAILED=1
    echo "== $name: $result in ${seconds} s" | tee -a "$LOG"
    printf '| %s | %s | %s | %s |\n' "$name" "$budget" "$seconds" "$result" >> "$SUMMARY"
    cp docs/benchmarks.md "$OUT_DIR/benchmarks.md"  # after every step: a later overrun keeps what came before
}

# seconds on the device; a loaded 2-core CPU may need minutes to import transformers and every family class
step versions "$([ -n "${DRY_RUN:-}" ] && echo 300 || echo 30)" $PY bench/device/versions.py
GPUS=$($PY -c "import torch; print(torch.cuda.device_count())" 2>/dev/null || echo 0)
echo "gpu-check: $GPUS CUDA device(s)" | tee -a "$LOG"
if [ "$GPUS" = 0 ] && [ -z "${DRY_RUN:-}" ]; then
    echo "gpu-check: no CUDA device; DRY_RUN=1 runs the CPU paths of the same steps" | tee -a "$LOG" >&2
    exit 2
fi

# Loader supply vs step consumption with a model of Qwen2-VL-2B's size: the tiny model's builder with the 2B
# config's dimensions (random weights, built offline, no download), bf16, checkpointing, flash-attn (and Liger,
# when liger-kernel is installed) where they can run (docs/tiny-vlm.md §5). The dry run composes the same keys
# at a size a CPU steps through.
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
    step "pytest -m gpu" 120 $PY -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py tests/test_attention.py
    step vram_validate 120 $PY bench/vram_validate.py --smoke
    step ddp 180 $PY bench/ddp.py --steps 12 --window 8 --repeats 1
    step train_step 300 $PY bench/train_step.py --data-dir $TRAIN_DATA --steps 4 --warmup 1 --loader-batches 4 \
        --repeats 1 "${CPU_SIZE[@]}"
    step annotate 300 $PY bench/annotate.py --boxes 1 --naive-seconds 10
    step serve_load 300 $PY bench/serve_load.py --export $ANNOTATE_DIR/export --frames-dir $SESSION_FRAMES \
        --concurrency 1 8 --requests 16
else
    # budgets on one H200 add up to 7.9 min with the versions step; the first run also builds the data and the models, all offline
    step "pytest -m gpu" 100 $PY -m pytest -q -p no:cacheprovider -m gpu   # bf16, CUDA QLoRA, paged AdamW, FSDP
    step vram_validate 100 $PY bench/vram_validate.py --write              # predicted vs measured peak
    step train_step 140 $PY bench/train_step.py --data-dir $TRAIN_DATA --accelerator gpu --steps 25 --warmup 5 \
        --loader-batches 30 --repeats 1 --write "${REAL_SIZE[@]}"        # model build ~1 min, 20 timed steps
    step annotate 45 $PY bench/annotate.py --device cuda --dtype float32 --boxes 3 --write  # fp32: the 1e-4 row
    step serve_load 60 $PY bench/serve_load.py --device cuda --export $ANNOTATE_DIR/export \
        --frames-dir $SESSION_FRAMES --requests 100 --write               # 2 servers x 3 concurrencies
    if [ "$GPUS" -ge 2 ]; then
        step ddp 60 $PY bench/ddp.py --gpu --devices "$GPUS" --write      # DDP scaling over NCCL
    else
        echo "gpu-check: bench/ddp.py --gpu needs >= 2 GPUs (NCCL refuses two ranks on one GPU); skipped" | tee -a "$LOG"
        printf '| ddp | - | - | skipped: needs >= 2 GPUs |\n' >> "$SUMMARY"
    fi
fi
cat "$SUMMARY" | tee -a "$LOG"
exit $FAILED
