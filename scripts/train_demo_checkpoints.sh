#!/usr/bin/env bash
# Train the three stage-I checkpoints that `tinyhistory demo` ships, for the same number of steps each.
# Usage: bash scripts/train_demo_checkpoints.sh [STEPS] [RUNS_DIR]
# Runs the three methods side by side, one thread each (equal progress, so a cut-off leaves equal step counts in
# RUNS_DIR/<method>/last; running the script again resumes each). Then copy RUNS_DIR/<method>/final (fp16) to
# checkpoints/tiny/<method>/ together with its train_log.jsonl.
set -euo pipefail
STEPS=${1:-3000}
RUNS=${2:-runs/stage1}
TINYHISTORY=${TINYHISTORY:-tinyhistory}
for method in proposed large_patchifier no_history; do
  OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 "$TINYHISTORY" train --stage frame-query --preset tiny --method "$method" \
    --steps "$STEPS" --save-dtype fp16 --no-progress --out "$RUNS/$method" > "$RUNS.$method.out" 2>&1 &
done
wait
