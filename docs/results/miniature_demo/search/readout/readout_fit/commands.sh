#!/bin/bash
# Session 16 (2026-12-07, 2-core CPU, no GPU lent): where each stage-I model's one-step mean guess comes from, on
# session 15's three shift-5 models (../stage1_seeds_r128/commands.sh rebuilds them): the coarse fit on the right
# token / the frame's mean / the history's mean (2×2 … 16×16) and the octave-by-octave band fit against the LR input.
# One thread, beside five training runs; the sampled and one-step PSNR reproduce session 15's to the last digit.
set -euo pipefail
S=runs/miniature/s15
OMP_NUM_THREADS=1 python scripts/frame_query_scales.py --out docs/results/miniature_demo/search/readout/readout_fit \
    "proposed, time shift 5, seed 1, 2000=$S/readout16_shift5_seed1/final" \
    "proposed, time shift 5, LoRA r128, 2000=$S/readout16_shift5_r128/final" \
    "Large Patchifier, time shift 5, 2000=$S/lp_readout16_shift5/final"
