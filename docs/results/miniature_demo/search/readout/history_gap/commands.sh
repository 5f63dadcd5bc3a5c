#!/bin/bash
# Session 17 (2026-12-07, 2-core CPU, no GPU lent): two levers at session 16's protocol (../window_dropout_control/:
# shift 5, 1,200-step schedules scored at step 600, 24 history frames, from the seed-1 stage-I model), one thread per
# run, 4-5 jobs side by side:
#   - a history gap for 2c (train.history_gap, new): half the training steps lose their last 4 history frames and
#     the window, so the next second must be predicted from the older history alone;
#   - history noise (train.history_noise, session 16) on a second stage-II seed, and at σmax 0.5;
#   - the model without history at the same protocol (shift 5, 600 steps), the streamed continuation's comparator
#     (session 16 compared with the demo's stage-II model without history: shift 1, the demo's steps).
# The cache as in ../stage2_shift/commands.sh.
set -euo pipefail
S=runs/miniature/s15
T=runs/miniature/s17
R=docs/results/miniature_demo/search/readout/history_gap
STAGE2_1200=(--stage ar --preset miniature --model checkpoints/miniature/base --set 'data.cache="runs/miniature/cache"'
    --set train.history_frames=24 --set train.checkpoint_every=200 --steps 1200 --save-dtype fp16 --no-progress)
ENC=(--method proposed --set 'history.rates=["4x4x2"]' --set history.phase_readout=16 --set train.carry_lora=true
    --set history.sliding_window=2 --set train.timestep_shift=5.0 --set train.snapshot_every=200)
DROPOUT=(--init-from $S/readout16_shift5_seed1/final --set train.window_dropout=0.5 --stop-after 600)
OMP_NUM_THREADS=1 tinyhistory train "${STAGE2_1200[@]}" "${ENC[@]}" "${DROPOUT[@]}" --set train.history_gap=0.5 \
    --set train.history_gap_frames=4 --out $T/win2_dropout05_gap4 &
OMP_NUM_THREADS=1 tinyhistory train "${STAGE2_1200[@]}" "${ENC[@]}" "${DROPOUT[@]}" --set train.history_noise=0.3 \
    --set train.seed=1 --out $T/win2_dropout05_hnoise03_seed1 &
OMP_NUM_THREADS=1 tinyhistory train "${STAGE2_1200[@]}" "${ENC[@]}" "${DROPOUT[@]}" --set train.history_noise=0.5 \
    --out $T/win2_dropout05_hnoise05 &
OMP_NUM_THREADS=1 tinyhistory train "${STAGE2_1200[@]}" --method no_history --init-from checkpoints/miniature/no_history \
    --set train.timestep_shift=5.0 --set train.snapshot_every=200 --stop-after 600 --out $T/none_shift5 &
wait
# Does a model read anything but its last frames? The evenly spaced next seconds with the encoder's tokens of all but
# the last 4 history frames (no window), against the history removed (--older, new); the baselines first
OMP_NUM_THREADS=1 python scripts/next_second_scores.py --history-frames 24 --older 4 --out $R/older_baselines \
    "encoder + window 2, window dropout 0.5, 600=$S/win2_dropout05/snapshots/step_000600" \
    "encoder + window 2, window dropout 0.5, seed 1, 600=runs/miniature/s16/win2_dropout05_seed1/snapshots/step_000600" \
    "encoder + window 2, 600=$S/win2_plain/snapshots/step_000600"
# The history-gap arm: the same, the cued long-range seconds with the whole history, none, and the last 4 frames only
OMP_NUM_THREADS=1 python scripts/next_second_scores.py --history-frames 24 --older 4 --long-range 8 --window 3 \
    --long-range-cue 1 --long-range-recent 4 --out $R/gap4 \
    "encoder + window 2, window dropout 0.5, history gap 0.5 of 4 frames, 600=$T/win2_dropout05_gap4/snapshots/step_000600"
# History noise: the 20-s continuation (the protocol of sessions 12-16) and the next second with the cued long-range
# seconds; the model without history at the same protocol streamed the same way
H03="encoder + window 2, window dropout 0.5, history noise 0.3, seed 1, 600=$T/win2_dropout05_hnoise03_seed1/snapshots/step_000600"
H05="encoder + window 2, window dropout 0.5, history noise 0.5, 600=$T/win2_dropout05_hnoise05/snapshots/step_000600"
OMP_NUM_THREADS=1 python scripts/continuation_scores.py --history-frames 24 --seconds 20 --starts 3 \
    --out $R/continuation_hnoise03_seed1 "$H03"
OMP_NUM_THREADS=1 python scripts/continuation_scores.py --history-frames 24 --seconds 20 --starts 3 \
    --out $R/continuation_hnoise05 "$H05"
OMP_NUM_THREADS=1 python scripts/next_second_scores.py --history-frames 24 --long-range 8 --window 3 --long-range-cue 1 \
    --out $R/hnoise03_seed1 "$H03"
OMP_NUM_THREADS=1 python scripts/next_second_scores.py --history-frames 24 --long-range 8 --window 3 --long-range-cue 1 \
    --out $R/hnoise05 "$H05"
OMP_NUM_THREADS=1 python scripts/continuation_scores.py --out $R/continuation_none_shift5 --history-frames 24 --seconds 20 \
    --starts 3 "no history, shift 5, 600=$T/none_shift5/snapshots/step_000600"
# Paired streaming references for the table: the seed-1 window-dropout model without noise, and the window alone
OMP_NUM_THREADS=1 python scripts/continuation_scores.py --history-frames 24 --seconds 20 --starts 3 --out $R/continuation_dropout05_seed1 \
    "encoder + window 2, window dropout 0.5, seed 1, no noise, 600=runs/miniature/s16/win2_dropout05_seed1/snapshots/step_000600"
OMP_NUM_THREADS=1 python scripts/continuation_scores.py --history-frames 24 --seconds 20 --starts 3 --out $R/continuation_window3 \
    "window 3 alone, shift 5, 600=runs/miniature/s16/window3_plain/snapshots/step_000600"
