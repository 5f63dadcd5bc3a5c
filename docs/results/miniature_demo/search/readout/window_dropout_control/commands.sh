#!/bin/bash
# Session 16 (2026-12-07, 2-core CPU, no GPU lent): session 15's window dropout (../window_dropout/) checked and
# extended, 1,200-step schedules scored at step 600 as before, one thread per run, 4-6 runs side by side:
#   - the control: window dropout 0.5 on the window-only model (its dropped steps see no history at all);
#   - the window-only model without it, retrained beside the rest (session 14's run was lost with its checkout);
#   - a second stage-II seed of the window-dropout arm (train.seed=1, the same seed-1 stage-I model);
#   - the window-dropout arm with history noise 0.3 (train.history_noise, new: every training sample's history
#     noised at σ ~ U(0, 0.3)), for the streamed continuation;
#   - the window-dropout arm from the LoRA r128 stage-I model (paused at step 90 to give the others the CPU);
#   - session 15's window-dropout run continued to the end of its schedule (paused at step 700, same reason).
# Every stage-II model is scored on the next second, with the long-range seconds with and without a 1-frame cue
# (eval.long_range, new: the history ends in the returning shot's first frame). The cache as in
# ../stage2_shift/commands.sh.
set -euo pipefail
S=runs/miniature/s15
T=runs/miniature/s16
R=docs/results/miniature_demo/search/readout/window_dropout_control
STAGE2_1200=(--stage ar --preset miniature --model checkpoints/miniature/base --set 'data.cache="runs/miniature/cache"'
    --set train.history_frames=24 --set train.checkpoint_every=200 --steps 1200 --save-dtype fp16 --no-progress)
ENC=(--method proposed --set 'history.rates=["4x4x2"]' --set history.phase_readout=16 --set train.carry_lora=true
    --set history.sliding_window=2 --set train.timestep_shift=5.0 --set train.snapshot_every=200)
WINDOW=(--method no_history --init-from checkpoints/miniature/no_history --set history.sliding_window=3
    --set train.timestep_shift=5.0 --set train.snapshot_every=200)
OMP_NUM_THREADS=1 tinyhistory train "${STAGE2_1200[@]}" "${WINDOW[@]}" --set train.window_dropout=0.5 --stop-after 600 \
    --out $T/window3_dropout05 &
OMP_NUM_THREADS=1 tinyhistory train "${STAGE2_1200[@]}" "${WINDOW[@]}" --stop-after 600 --out $T/window3_plain &
OMP_NUM_THREADS=1 tinyhistory train "${STAGE2_1200[@]}" "${ENC[@]}" --init-from $S/readout16_shift5_seed1/final \
    --set train.window_dropout=0.5 --set train.seed=1 --stop-after 600 --out $T/win2_dropout05_seed1 &
OMP_NUM_THREADS=1 tinyhistory train "${STAGE2_1200[@]}" "${ENC[@]}" --init-from $S/readout16_shift5_seed1/final \
    --set train.window_dropout=0.5 --set train.history_noise=0.3 --stop-after 600 --out $T/win2_dropout05_hnoise03 &
OMP_NUM_THREADS=1 tinyhistory train "${STAGE2_1200[@]}" "${ENC[@]}" --init-from $S/readout16_shift5_r128/final \
    --set train.window_dropout=0.5 --set train.lora_rank=128 --stop-after 600 --out $T/win2_dropout05_r128 &
OMP_NUM_THREADS=1 tinyhistory train "${STAGE2_1200[@]}" "${ENC[@]}" --init-from $S/readout16_shift5_seed1/final \
    --set train.window_dropout=0.5 --out $S/win2_dropout05 &   # resumes session 15's run at step 600
wait
# Scored at step 600 (each as its run finished; 4-6 jobs side by side): the next second, the long-range seconds
# uncued and with a 1-frame cue
NS=(--history-frames 24 --long-range 8 --window 3 --long-range-cue 0 1)
python scripts/next_second_scores.py "${NS[@]}" --out $R/window3_plain "window 3, 600=$T/window3_plain/snapshots/step_000600"
python scripts/next_second_scores.py "${NS[@]}" --out $R/window3_dropout05 \
    "window 3, window dropout 0.5, 600=$T/window3_dropout05/snapshots/step_000600"
python scripts/next_second_scores.py "${NS[@]}" --out $R/dropout05_seed0 \
    "encoder + window 2, window dropout 0.5, 600=$S/win2_dropout05/snapshots/step_000600"
python scripts/next_second_scores.py "${NS[@]}" --out $R/dropout05_seed1 \
    "encoder + window 2, window dropout 0.5, seed 1, 600=$T/win2_dropout05_seed1/snapshots/step_000600"
python scripts/next_second_scores.py "${NS[@]}" --out $R/dropout05_hnoise03 \
    "encoder + window 2, window dropout 0.5, history noise 0.3, 600=$T/win2_dropout05_hnoise03/snapshots/step_000600"
# Is it the memory? The long-range seconds again with only the last 4 history frames (the older history gone)
python scripts/next_second_scores.py "${NS[@]}" --long-range-recent 4 --long-range-only --out $R/long_range_recent \
    "window 3, 600=$T/window3_plain/snapshots/step_000600" \
    "encoder + window 2, window dropout 0.5, 600=$S/win2_dropout05/snapshots/step_000600" \
    "encoder + window 2, window dropout 0.5, seed 1, 600=$T/win2_dropout05_seed1/snapshots/step_000600" \
    "encoder + window 2, 600=$S/win2_plain/snapshots/step_000600"
# 20-s continuation of the history-noise model (the protocol of sessions 12-15)
python scripts/continuation_scores.py --out $R/continuation_hnoise03 --history-frames 24 --seconds 20 --starts 3 \
    "encoder + window 2, window dropout 0.5, history noise 0.3, 600=$T/win2_dropout05_hnoise03/snapshots/step_000600"
