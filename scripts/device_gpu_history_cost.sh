#!/usr/bin/env bash
# Run benchmarks/gpu_history_cost.py on the project's device machine (one H200, bare, no network), inside one call of
# the device tool of at most 8 minutes. How to prepare and call it: benchmarks/gpu_history_cost.md.
#
# Expects in .whl/ (ignored by git, named in the call's `carry`): the wheels the machine lacks, listed in the .md
# (diffusers==0.42.1). Everything else the script imports is in the machine's image (torch, transformers, peft,
# accelerate, safetensors, scipy); PyAV, dlib and the MiniLM package are never imported by it.
# Writes $OUT/gpu_history_cost.json (rewritten after every measurement) and $OUT/gpu_history_cost.log.
# Usage: bash scripts/device_gpu_history_cost.sh [--budget-s S] [--skip-offload]
set -euo pipefail
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
export PYTHONPATH="$PWD/src:/tmp/site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
out="${OUT:-/tmp}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
# 400 s of measurements leave the 8-minute call room for the install, imports and building the model.
set -o pipefail
python3 benchmarks/gpu_history_cost.py --budget-s 400 --out "$out/gpu_history_cost.json" "$@" 2>&1 \
    | tee "$out/gpu_history_cost.log"
