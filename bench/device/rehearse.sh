#!/usr/bin/env bash
# The GPU check rehearsed here, on the CPU, as the lent machine would run it (docs/gpu-check.md §3):
# a Python 3.12 venv with the image's versions (bench/device/image.txt) and without this project installed,
# the wheel bundle installed the device's way (--no-index --no-deps --target), then the dry run of
# `bench/gpu_check.sh --device-image`. Catches import and API differences before a GPU minute is spent.
#   bench/device/rehearse.sh [OUT_DIR]        # default outputs/device_rehearsal; the venv: .device-venv
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=${VENV:-.device-venv}
PY312=${PY312:-python3.12}
if [ ! -x "$VENV/bin/python" ]; then
    "$PY312" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r bench/device/image.txt
fi
.venv/bin/python bench/device/bundle.py
SITE=$(mktemp -d)/site
DRY_RUN=1 PY=$VENV/bin/python SITE=$SITE bench/gpu_check.sh --device-image "${1:-outputs/device_rehearsal}"
