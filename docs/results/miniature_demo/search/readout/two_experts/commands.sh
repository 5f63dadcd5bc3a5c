#!/bin/bash
# Session 14 (2026-12-07, 2-core CPU, no GPU lent): two experts, as Wan 2.2 A14B samples. Session 13's stage-II
# models trained at high noise only (train.min_t = 0.8, ../stage2_copy/commands.sh) take the steps at t >= 0.8 with
# their history; the demo's no-history stage-II model (checkpoints/miniature/stage2/none, every noise level) takes
# the steps below, without history (`tinyhistory generate --low-noise ... --boundary 0.8` does the same).
# Diagnosis behind it (../stage2_copy/): the history helps the mean guess only at t >= 0.9, and a LoRA trained only
# there streams into a grid texture because it never learned the low-noise steps.
set -euo pipefail
S=runs/miniature/s13
R=docs/results/miniature_demo/search/readout/two_experts
W="window 3, min_t 0.8, no history below 0.8"
E="encoder + window 2, min_t 0.8, no history below 0.8"
NONE=checkpoints/miniature/stage2/none
OMP_NUM_THREADS=1 python scripts/continuation_scores.py --out $R/continuation --history-frames 24 --seconds 20 \
    --starts 3 "$W=$S/window3_mint08/final" "$E=$S/carry_win2_mint08/final" \
    --low-noise "$W=$NONE" --low-noise "$E=$NONE" --boundary 0.8
# the teacher-forced next second (and the long-range seconds) of the encoder model with the second expert
OMP_NUM_THREADS=1 python scripts/next_second_scores.py --history-frames 24 --long-range 8 --window 3 \
    --out $R/encoder_window2_next_second "$E=$S/carry_win2_mint08/final" --low-noise "$E=$NONE" --boundary 0.8
