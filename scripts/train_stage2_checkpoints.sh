#!/usr/bin/env bash
# Train the three stage-II checkpoints that `tinyhistory demo` ships, from the committed stage-I ones, for the same
# number of steps each (the preset's [stage2] defaults: 12-s windows, 1-s targets, LoRA rank 16 on the DiT):
#   proposed  ← checkpoints/tiny/proposed     (the encoder keeps training)
#   window    ← checkpoints/tiny/no_history   + the last 3 latent frames uncompressed (192 tokens, ≈ the
#                                               proposed encoder's 176 tokens for an 11-s history)
#   none      ← checkpoints/tiny/no_history   (text only)
# Usage: bash scripts/train_stage2_checkpoints.sh [STEPS] [RUNS_DIR]; rerunning resumes each run.
# Then copy RUNS_DIR/<name>/final (fp16) to checkpoints/tiny/stage2/<name>/ with its train_log.jsonl.
set -euo pipefail
STEPS=${1:-1500}
RUNS=${2:-runs/stage2}
TINYHISTORY=${TINYHISTORY:-tinyhistory}
mkdir -p "$RUNS"
run() {
  local name=$1; shift
  OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 nice -n 5 "$TINYHISTORY" train --stage ar --preset tiny --steps "$STEPS" \
    --save-dtype fp16 --no-progress --out "$RUNS/$name" "$@" > "$RUNS/$name.out" 2>&1 &
}
run proposed --init-from checkpoints/tiny/proposed
run window --init-from checkpoints/tiny/no_history --set history.sliding_window=3
run none --init-from checkpoints/tiny/no_history
wait
