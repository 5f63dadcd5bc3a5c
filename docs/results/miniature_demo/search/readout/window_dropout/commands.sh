#!/bin/bash
# Session 15 (2026-12-07, 2-core CPU, no GPU lent): stage II, encoder + window 2 at time shift 5 (session 14's arm,
# ../stage2_shift5/), with and without train.window_dropout = 0.5 (half the training steps see the encoder's tokens
# alone), both from the seed-1 shift-5 stage-I model (../stage1_seeds_r128/), carried LoRA, a 1,200-step schedule
# scored at step 600 as session 14's arms were; one thread per run. The cache as in ../stage2_shift/commands.sh.
set -euo pipefail
S=runs/miniature/s15
R=docs/results/miniature_demo/search/readout/window_dropout
STAGE2_1200=(--stage ar --preset miniature --model checkpoints/miniature/base --set 'data.cache="runs/miniature/cache"'
    --set train.history_frames=24 --set train.checkpoint_every=200 --steps 1200 --save-dtype fp16 --no-progress)
ENC=(--method proposed --init-from $S/readout16_shift5_seed1/final --set 'history.rates=["4x4x2"]'
    --set history.phase_readout=16 --set train.carry_lora=true --set history.sliding_window=2
    --set train.timestep_shift=5.0 --set train.snapshot_every=200)
OMP_NUM_THREADS=1 tinyhistory train "${STAGE2_1200[@]}" "${ENC[@]}" --set train.window_dropout=0.5 \
    --stop-after 600 --out $S/win2_dropout05 &
OMP_NUM_THREADS=1 tinyhistory train "${STAGE2_1200[@]}" "${ENC[@]}" --stop-after 600 --out $S/win2_plain &
wait
python scripts/next_second_scores.py --history-frames 24 --long-range 8 --window 3 --out $R/dropout05 \
    "encoder + window 2, window dropout 0.5, 600=$S/win2_dropout05/snapshots/step_000600"
python scripts/next_second_scores.py --history-frames 24 --long-range 8 --window 3 --out $R/plain \
    "encoder + window 2, 600=$S/win2_plain/snapshots/step_000600"
# 20-s continuations (the protocol of sessions 12-14: 3 held-out starts, 24 history frames, the caption, seed 0)
python scripts/continuation_scores.py --out $R/continuation --history-frames 24 --seconds 20 --starts 3 \
    "encoder + window 2, window dropout 0.5, 600=$S/win2_dropout05/snapshots/step_000600"
