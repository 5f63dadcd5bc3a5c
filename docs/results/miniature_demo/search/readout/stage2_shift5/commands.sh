#!/bin/bash
# Sessions 13-14 (2026-12-07, 2-core CPU, no GPU lent): stage II at Wan's training time shift 5 (every noise level,
# ~28 % of the draws above t = 0.9 against 1.4 % at shift 1), the window alone against encoder + window 2 from the
# shift-5 stage-I model (../stage1_shift/commands.sh), carried LoRA, 1,200-step schedules, snapshots every 200.
# Started at the end of session 13 (the training commands are at the end of ../stage2_copy/commands.sh; a rerun
# resumes), continued in session 14 beside other jobs, paused twice with SIGSTOP for clean test-suite timings.
# Scored at step 600 of 1,200 (as session 12's arms were): the teacher-forced next second, with the history removed
# and swapped, and the long-range seconds.
set -euo pipefail
S=runs/miniature/s13
R=docs/results/miniature_demo/search/readout/stage2_shift5
OMP_NUM_THREADS=1 python scripts/next_second_scores.py --history-frames 24 --long-range 8 --window 3 --out $R/window3_600 \
    "window 3, shift 5, 600 of 1,200=$S/window3_shift5/snapshots/step_000600" &
OMP_NUM_THREADS=1 python scripts/next_second_scores.py --history-frames 24 --long-range 8 --window 3 \
    --out $R/encoder_window2_600 "encoder + window 2, shift 5, 600 of 1,200=$S/carry5_win2_shift5/snapshots/step_000600" &
wait
