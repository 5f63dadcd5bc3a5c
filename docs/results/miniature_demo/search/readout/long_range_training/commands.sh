#!/bin/bash
# Session 18 (2026-12-07, 2-core CPU, no GPU lent): training for the long-range seconds (2c), a third stage-II seed of
# history noise (target 3) and a layout score for the streamed continuations. Session 16's protocol
# (../window_dropout_control/: shift 5, 1,200-step schedules scored at step 600, 24 history frames, window dropout 0.5,
# from the seed-1 stage-I model), one thread per run, 4-6 jobs side by side:
#   - train.long_range_share (new): half the steps draw their batch from the training windows whose target is a shot
#     that returns (the held-out search's test over the training part: 11 windows, listed in the run's
#     long_range_windows.json, copied here), split with the whole history before the target;
#   - train.cutaway_share (new): half the steps splice 6 frames of another window into the history, ending one block
#     (2 frames, the cue) before the target, so that the target continues a shot the older history shows;
#   - history noise 0.3 on a third stage-II seed (train.seed=2).
# The cache as in ../stage2_shift/commands.sh.
set -euo pipefail
S=runs/miniature/s15
T=runs/miniature/s18
R=docs/results/miniature_demo/search/readout/long_range_training
STAGE2_1200=(--stage ar --preset miniature --model checkpoints/miniature/base --set 'data.cache="runs/miniature/cache"'
    --set train.history_frames=24 --set train.checkpoint_every=200 --steps 1200 --save-dtype fp16 --no-progress)
ENC=(--method proposed --set 'history.rates=["4x4x2"]' --set history.phase_readout=16 --set train.carry_lora=true
    --set history.sliding_window=2 --set train.timestep_shift=5.0 --set train.snapshot_every=200)
DROPOUT=(--init-from $S/readout16_shift5_seed1/final --set train.window_dropout=0.5 --stop-after 600)
OMP_NUM_THREADS=1 tinyhistory train "${STAGE2_1200[@]}" "${ENC[@]}" "${DROPOUT[@]}" --set train.history_noise=0.3 \
    --set train.seed=2 --out $T/win2_dropout05_hnoise03_seed2 &
OMP_NUM_THREADS=1 tinyhistory train "${STAGE2_1200[@]}" "${ENC[@]}" "${DROPOUT[@]}" --set train.long_range_share=0.5 \
    --out $T/win2_dropout05_longrange05 &
OMP_NUM_THREADS=1 tinyhistory train "${STAGE2_1200[@]}" "${ENC[@]}" "${DROPOUT[@]}" --set train.cutaway_share=0.5 \
    --set train.cutaway_frames=6 --out $T/win2_dropout05_cutaway05 &
wait
cp $T/win2_dropout05_longrange05/long_range_windows.json $R/
# The streamed continuations again, with the layout score (new: eval.metrics.layout_match, 8×8 cell means to the
# closest history frame) beside the feature cosine; the same 3 starts and seed as sessions 12-17
OMP_NUM_THREADS=1 python scripts/continuation_scores.py --history-frames 24 --seconds 20 --starts 3 --out $R/continuation_layout \
    "encoder + window 2, window dropout 0.5, history noise 0.3, 600=runs/miniature/s16/win2_dropout05_hnoise03/snapshots/step_000600" \
    "encoder + window 2, window dropout 0.5, history noise 0.3, seed 1, 600=runs/miniature/s17/win2_dropout05_hnoise03_seed1/snapshots/step_000600" \
    "no history, shift 5, 600=runs/miniature/s17/none_shift5/snapshots/step_000600" \
    "encoder + window 2, window dropout 0.5, seed 1, no noise, 600=runs/miniature/s16/win2_dropout05_seed1/snapshots/step_000600"
# The long-range seconds with a 1- and a 2-frame cue, and the held-out windows with a 6-frame cut-away spliced in
# (new: --cutaway, eval.next_segment.cutaway_set), each with the whole history, none and the last 4 frames only
NS=(--history-frames 24 --long-range 8 --window 3 --long-range-cue 1 2 --long-range-recent 4 --cutaway 6)
OMP_NUM_THREADS=1 python scripts/next_second_scores.py "${NS[@]}" --long-range-only --out $R/baselines \
    "encoder + window 2, window dropout 0.5, 600=$S/win2_dropout05/snapshots/step_000600" \
    "window 3, 600=runs/miniature/s16/window3_plain/snapshots/step_000600"
# Each new run scored at step 600 (as its snapshot landed; 5-7 jobs side by side): the evenly spaced next seconds with
# the history removed, swapped and --older 4, the cued long-range seconds and the cut-away set; the seed-2 model also
# streamed 20 s
NS=(--history-frames 24 --long-range 8 --window 3 --long-range-cue 1 2 --long-range-recent 4 --cutaway 6 --older 4)
H="encoder + window 2, window dropout 0.5, history noise 0.3, seed 2, 600=$T/win2_dropout05_hnoise03_seed2/snapshots/step_000600"
OMP_NUM_THREADS=1 python scripts/continuation_scores.py --history-frames 24 --seconds 20 --starts 3 \
    --out $R/continuation_hnoise03_seed2 "$H"
OMP_NUM_THREADS=1 python scripts/next_second_scores.py "${NS[@]}" --out $R/hnoise03_seed2 "$H"
OMP_NUM_THREADS=1 python scripts/next_second_scores.py "${NS[@]}" --out $R/longrange05 \
    "encoder + window 2, window dropout 0.5, long-range share 0.5, 600=$T/win2_dropout05_longrange05/snapshots/step_000600"
OMP_NUM_THREADS=1 python scripts/next_second_scores.py "${NS[@]}" --out $R/cutaway05 \
    "encoder + window 2, window dropout 0.5, cut-away share 0.5 of 6 frames, 600=$T/win2_dropout05_cutaway05/snapshots/step_000600"
# The window alone streamed the same way, with the layout score
OMP_NUM_THREADS=1 python scripts/continuation_scores.py --history-frames 24 --seconds 20 --starts 3 \
    --out $R/continuation_layout_window3 "window 3 alone, shift 5, 600=runs/miniature/s16/window3_plain/snapshots/step_000600"
# Started at the end of session 18 (to score in session 19): cut-aways at a share of 0.2
OMP_NUM_THREADS=1 tinyhistory train "${STAGE2_1200[@]}" "${ENC[@]}" "${DROPOUT[@]}" --set train.cutaway_share=0.2 \
    --set train.cutaway_frames=6 --out $T/win2_dropout05_cutaway02
