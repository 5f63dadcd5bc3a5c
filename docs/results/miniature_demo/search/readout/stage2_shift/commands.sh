#!/bin/bash
# Session 12 (2026-12-06, 2-core CPU, no GPU lent): stage II at 24 frames of history, one thread per run.
# 1. the phase readout restricted to the encoder's tokens (db35253) beside a 2-frame window, against the window alone;
# 2. the training time shift (train.timestep_shift 3, Wan's range, instead of the miniature's 1) for both.
set -euo pipefail
tinyhistory data prepare --preset miniature --input assets/bbb_128px_8fps.mp4 --out runs/miniature/cache \
    --set 'history.rates=["4x4x2","2x2x2"]'
COMMON=(--stage frame-query --preset miniature --method proposed --model checkpoints/miniature/base \
    --set 'data.cache="runs/miniature/cache"' --set 'history.rates=["4x4x2"]' --set train.history_frames=16 \
    --set train.checkpoint_every=200 --steps 2000 --save-dtype fp16 --no-progress)
STAGE2=(--stage ar --preset miniature --model checkpoints/miniature/base --set 'data.cache="runs/miniature/cache"'
    --set train.history_frames=24 --set train.checkpoint_every=200 --steps 1200 --save-dtype fp16 --no-progress)
I=runs/miniature/s12/readout16/final
ENC=(--method proposed --init-from $I --set 'history.rates=["4x4x2"]' --set history.phase_readout=16)
# stage I: the phase readout r16 (h16, 4x4x2, LoRA r32, seed 0, 2,000 steps), as in ../stage2_carry/commands.sh
OMP_NUM_THREADS=1 tinyhistory train "${COMMON[@]}" --set history.phase_readout=16 --out runs/miniature/s12/readout16 &
# the window alone, the miniature's time shift 1 and shift 3 (1,200-step schedules; scored at 800 steps)
OMP_NUM_THREADS=1 tinyhistory train "${STAGE2[@]}" --method no_history --init-from checkpoints/miniature/no_history \
    --set history.sliding_window=3 --out runs/miniature/s12/window3 &
OMP_NUM_THREADS=1 tinyhistory train "${STAGE2[@]}" --method no_history --init-from checkpoints/miniature/no_history \
    --set history.sliding_window=3 --set train.timestep_shift=3.0 --out runs/miniature/s12/window3_shift3 &
wait
# encoder + 2-frame window, stage-I LoRA carried, the readout on the encoder's tokens only; shift 1 and 3, the same
# 1,200-step schedule stopped at 800 (checkpointed; rerunning resumes)
OMP_NUM_THREADS=1 tinyhistory train "${STAGE2[@]}" "${ENC[@]}" --set train.carry_lora=true \
    --set history.sliding_window=2 --stop-after 800 --out runs/miniature/s12/carry_win2 &
OMP_NUM_THREADS=1 tinyhistory train "${STAGE2[@]}" "${ENC[@]}" --set train.carry_lora=true \
    --set history.sliding_window=2 --set train.timestep_shift=3.0 --stop-after 800 --out runs/miniature/s12/carry_win2_shift3 &
wait
# checkpoints at 800 steps were copied from OUT/last as they were written (OUT/snap/800)
R=docs/results/miniature_demo/search/readout/stage2_shift
# OUT/snap/600 got the run's train_log.jsonl up to step 600 (runs/miniature/s12/snaplog.py) so the scripts report
# the step; the window pair was scored before that (its table says "None": both are the 600-step checkpoints)
S=runs/miniature/s12
python scripts/next_second_scores.py --history-frames 24 --long-range 8 --window 3 --out $R/window3 \
    "window 3, shift 1=$S/window3/snap/600" "window 3, shift 3=$S/window3_shift3/snap/600"
python scripts/next_second_scores.py --history-frames 24 --long-range 8 --window 3 --out $R/encoder_window_shift1 \
    "encoder + window 2, shift 1=$S/carry_win2/snap/600" &
python scripts/next_second_scores.py --history-frames 24 --long-range 8 --window 3 --out $R/encoder_window_shift3 \
    "encoder + window 2, shift 3=$S/carry_win2_shift3/snap/600" &
python scripts/continuation_scores.py --out $R/continuation --history-frames 24 --seconds 20 --starts 3 \
    "encoder + window 2, shift 1=$S/carry_win2/snap/600" "window 3, shift 1=$S/window3/snap/600" \
    "no history (the demo's)=checkpoints/miniature/stage2/none"
wait
