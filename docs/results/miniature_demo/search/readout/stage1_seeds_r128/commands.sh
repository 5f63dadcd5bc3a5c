#!/bin/bash
# Session 15 (2026-12-07, 2-core CPU, no GPU lent): stage I (frame query) at time shift 5 with the phase readout r16,
# a second seed of session 13's protocol (../stage1_shift/shift5: 16.74 dB at 2,000 steps, seed 0) and LoRA rank 128
# (the paper's rank; the miniature's is 32), and the Large Patchifier on the same protocol, one thread per run, the
# three side by side. The cache as in
# ../stage2_shift/commands.sh.
set -euo pipefail
COMMON=(--stage frame-query --preset miniature --method proposed --model checkpoints/miniature/base \
    --set 'data.cache="runs/miniature/cache"' --set 'history.rates=["4x4x2"]' --set train.history_frames=16 \
    --set train.checkpoint_every=200 --steps 2000 --save-dtype fp16 --no-progress --set history.phase_readout=16 \
    --set train.timestep_shift=5.0 --set train.snapshot_every=500)
S=runs/miniature/s15
OMP_NUM_THREADS=1 tinyhistory train "${COMMON[@]}" --set train.seed=1 --out $S/readout16_shift5_seed1 &
OMP_NUM_THREADS=1 tinyhistory train "${COMMON[@]}" --set train.lora_rank=128 --out $S/readout16_shift5_r128 &
# The Large Patchifier (FramePack's packing, the comparison row) on the same protocol: time shift 5 and the
# phase readout r16 (it reads a packed 4×4×2 token just as the encoder's), seed 0 (the later --method wins).
OMP_NUM_THREADS=1 tinyhistory train "${COMMON[@]}" --method large_patchifier --out $S/lp_readout16_shift5 &
wait
R=docs/results/miniature_demo/search/readout/stage1_seeds_r128
python scripts/frame_query_scales.py --out $R/seed1_and_lp "proposed, time shift 5, seed 1, 2000=$S/readout16_shift5_seed1/final" \
    "Large Patchifier, time shift 5, 2000=$S/lp_readout16_shift5/final"
python scripts/frame_query_scales.py --out $R/r128 "proposed, time shift 5, LoRA r128, 2000=$S/readout16_shift5_r128/final" \
    "proposed, time shift 5, LoRA r128, 1500=$S/readout16_shift5_r128/snapshots/step_001500"
