#!/bin/bash
# Session 13 (2026-12-07, 2-core CPU, no GPU lent): stage I (frame query) with the phase readout r16 at Wan's training
# time shift instead of the miniature's 1 (session 9's readout16 at shift 1: 15.41 dB, ../phase_readout/), one thread
# per run beside other jobs. The cache as in ../stage2_shift/commands.sh.
set -euo pipefail
COMMON=(--stage frame-query --preset miniature --method proposed --model checkpoints/miniature/base \
    --set 'data.cache="runs/miniature/cache"' --set 'history.rates=["4x4x2"]' --set train.history_frames=16 \
    --set train.checkpoint_every=200 --steps 2000 --save-dtype fp16 --no-progress --set history.phase_readout=16)
S=runs/miniature/s13
OMP_NUM_THREADS=1 tinyhistory train "${COMMON[@]}" --set train.timestep_shift=3.0 --out $S/readout16_shift3 &
OMP_NUM_THREADS=1 tinyhistory train "${COMMON[@]}" --set train.timestep_shift=5.0 --set train.snapshot_every=500 \
    --out $S/readout16_shift5 &
wait
R=docs/results/miniature_demo/search/readout/stage1_shift
python scripts/frame_query_scales.py --out $R/shift3 "phase readout r16, time shift 3, 2000=$S/readout16_shift3/final"
python scripts/frame_query_scales.py --out $R/shift5 "phase readout r16, time shift 5, 2000=$S/readout16_shift5/final"
