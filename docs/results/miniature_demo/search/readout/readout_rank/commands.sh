#!/bin/bash
# Session 16 (2026-12-07, 2-core CPU, no GPU lent): the phase readout's rank, 64 against 16, at the shift-5 protocol
# of ../stage1_seeds_r128/ (h16, 4×4×2, LoRA r32, 2,000-step schedule), seed 1 for a paired comparison with session
# 15's seed-1 r16 run (its snapshots every 500 steps). Run beside five other jobs, one thread; stopped cleanly
# (SIGTERM: checkpoint, then exit) at step 700 of the --stop-after 1000 when the session ran out: rerunning the
# same command resumes it. Scored at its 500-step snapshot against the r16 run's.
set -euo pipefail
T=runs/miniature/s16
COMMON=(--stage frame-query --preset miniature --method proposed --model checkpoints/miniature/base
    --set 'data.cache="runs/miniature/cache"' --set 'history.rates=["4x4x2"]' --set train.history_frames=16
    --set train.checkpoint_every=200 --steps 2000 --save-dtype fp16 --no-progress
    --set train.timestep_shift=5.0 --set train.snapshot_every=500)
OMP_NUM_THREADS=1 tinyhistory train "${COMMON[@]}" --set history.phase_readout=64 --set train.seed=1 --stop-after 1000 \
    --out $T/readout64_shift5_seed1
OMP_NUM_THREADS=1 python scripts/frame_query_scales.py --out docs/results/miniature_demo/search/readout/readout_rank/step500 \
    "phase readout r16, seed 1, 500 of 2000=runs/miniature/s15/readout16_shift5_seed1/snapshots/step_000500" \
    "phase readout r64, seed 1, 500 of 2000=$T/readout64_shift5_seed1/snapshots/step_000500"
# Session 17: the same command resumed the run (its --stop-after counts from the resumed step) and was stopped cleanly
# at step 1119 to give the CPU to stage-II runs; scored at its 1,000-step snapshot against the r16 run's
OMP_NUM_THREADS=1 python scripts/frame_query_scales.py --out docs/results/miniature_demo/search/readout/readout_rank/step1000 \
    "phase readout r16, seed 1, 1000 of 2000=runs/miniature/s15/readout16_shift5_seed1/snapshots/step_001000" \
    "phase readout r64, seed 1, 1000 of 2000=$T/readout64_shift5_seed1/snapshots/step_001000"
# ... resumed again and stopped cleanly at step 1,584; its 1,500-step snapshot against the r16 run's
OMP_NUM_THREADS=1 python scripts/frame_query_scales.py --out docs/results/miniature_demo/search/readout/readout_rank/step1500 \
    "phase readout r16, seed 1, 1500 of 2000=runs/miniature/s15/readout16_shift5_seed1/snapshots/step_001500" \
    "phase readout r64, seed 1, 1500 of 2000=$T/readout64_shift5_seed1/snapshots/step_001500"
# Session 18: resumed again (stopped cleanly at 1,687 to give the CPU to stage II, then resumed) to the end of its
# schedule; its 2,000-step snapshot against the r16 run's
OMP_NUM_THREADS=1 python scripts/frame_query_scales.py --out docs/results/miniature_demo/search/readout/readout_rank/step2000 \
    "phase readout r16, seed 1, 2000 of 2000=runs/miniature/s15/readout16_shift5_seed1/snapshots/step_002000" \
    "phase readout r64, seed 1, 2000 of 2000=$T/readout64_shift5_seed1/snapshots/step_002000"
