#!/bin/bash
# Session 11 (2026-12-06, 2-core CPU, no GPU lent): stage II from the phase-readout stage-I model, a fresh LoRA
# (the paper) against the stage-I LoRA carried on (train.carry_lora), the encoder beside a 2-frame window against a
# 3-frame window alone (176 vs 192 context tokens at 24 frames of history), all 1,200 steps, one thread per run.
set -euo pipefail
tinyhistory data prepare --preset miniature --input assets/bbb_128px_8fps.mp4 --out runs/miniature/cache \
    --set 'history.rates=["4x4x2","2x2x2"]'
# stage I: the phase readout r16 of ../README.md (h16, 4x4x2, LoRA r32, seed 0, 2,000 steps)
COMMON=(--stage frame-query --preset miniature --method proposed --model checkpoints/miniature/base \
    --set 'data.cache="runs/miniature/cache"' --set 'history.rates=["4x4x2"]' --set train.history_frames=16 \
    --set train.checkpoint_every=200 --steps 2000 --save-dtype fp16 --no-progress)
OMP_NUM_THREADS=1 tinyhistory train "${COMMON[@]}" --set history.phase_readout=16 --out runs/miniature/s11/readout16
# stage II, 24-frame histories, 1,200 steps
STAGE2=(--stage ar --preset miniature --model checkpoints/miniature/base --set 'data.cache="runs/miniature/cache"'
    --set train.history_frames=24 --set train.checkpoint_every=200 --steps 1200 --save-dtype fp16 --no-progress)
I=runs/miniature/s11/readout16/final
ENC=(--method proposed --init-from $I --set 'history.rates=["4x4x2"]' --set history.phase_readout=16)
OMP_NUM_THREADS=1 tinyhistory train "${STAGE2[@]}" "${ENC[@]}" --out runs/miniature/s11/fresh &
OMP_NUM_THREADS=1 tinyhistory train "${STAGE2[@]}" "${ENC[@]}" --set train.carry_lora=true --out runs/miniature/s11/carry &
OMP_NUM_THREADS=1 tinyhistory train "${STAGE2[@]}" "${ENC[@]}" --set train.carry_lora=true \
    --set history.sliding_window=2 --out runs/miniature/s11/carry_win2 &
OMP_NUM_THREADS=1 tinyhistory train "${STAGE2[@]}" "${ENC[@]}" --set history.sliding_window=2 --out runs/miniature/s11/fresh_win2 &
OMP_NUM_THREADS=1 tinyhistory train "${STAGE2[@]}" --method no_history --init-from checkpoints/miniature/no_history \
    --set history.sliding_window=3 --out runs/miniature/s11/window3 &
OMP_NUM_THREADS=1 tinyhistory train "${STAGE2[@]}" --method no_history --init-from checkpoints/miniature/no_history \
    --set history.sliding_window=2 --out runs/miniature/s11/window2 &
wait
# two evaluations (one thread each); the same 16 held-out windows, noise and sampler for every model
R=docs/results/miniature_demo/search/readout/stage2_carry
OMP_NUM_THREADS=1 python scripts/next_second_scores.py --history-frames 24 --out $R/encoder \
    "fresh LoRA=runs/miniature/s11/fresh/final" "stage-I LoRA carried=runs/miniature/s11/carry/final"
OMP_NUM_THREADS=1 python scripts/next_second_scores.py --history-frames 24 --out $R/window \
    "carried + window 2=runs/miniature/s11/carry_win2/final" "window 3 alone=runs/miniature/s11/window3/final"
# (fresh_win2 was stopped at 400 steps and window2 at 800 to free the cores for the evaluations: held-out loss only)
# a second stage-II seed of the two encoder arms (the same stage-I model), each evaluated alone
OMP_NUM_THREADS=1 tinyhistory train "${STAGE2[@]}" "${ENC[@]}" --set train.seed=1 --out runs/miniature/s11/fresh_s1 &
OMP_NUM_THREADS=1 tinyhistory train "${STAGE2[@]}" "${ENC[@]}" --set train.seed=1 --set train.carry_lora=true \
    --out runs/miniature/s11/carry_s1 &
wait
OMP_NUM_THREADS=1 python scripts/next_second_scores.py --history-frames 24 --out $R/fresh_s1 \
    "fresh LoRA, seed 1=runs/miniature/s11/fresh_s1/final" &
OMP_NUM_THREADS=1 python scripts/next_second_scores.py --history-frames 24 --out $R/carry_s1 \
    "stage-I LoRA carried, seed 1=runs/miniature/s11/carry_s1/final" &
wait
