#!/bin/bash
# Session 13 (2026-12-07, 2-core CPU, no GPU lent): why does no stage-II model continue its last frame? The mean
# guess by noise level and the attention at t = 1 (scripts/copy_diagnostics.py) of session 12's window models, then
# stage II trained at high noise only (train.min_t = 0.8: t ~ L(0.8, 1), the high-noise expert's regime of Wan 2.2
# A14B), 600-step schedules, one thread per run beside other jobs. Session 12's runs: ../stage2_shift/commands.sh.
set -euo pipefail
STAGE2=(--stage ar --preset miniature --model checkpoints/miniature/base --set 'data.cache="runs/miniature/cache"'
    --set train.history_frames=24 --set train.checkpoint_every=200 --steps 600 --save-dtype fp16 --no-progress)
I=runs/miniature/s12/readout16/final   # the stage-I phase readout r16 at shift 1 (../stage2_shift/commands.sh)
ENC=(--method proposed --init-from $I --set 'history.rates=["4x4x2"]' --set history.phase_readout=16)
S=runs/miniature/s13
R=docs/results/miniature_demo/search/readout/stage2_copy
python scripts/copy_diagnostics.py --history-frames 24 --out $R/window3_1200 runs/miniature/s12/window3/final
python scripts/copy_diagnostics.py --history-frames 24 --out $R/window3_shift3_800 runs/miniature/s12/window3_shift3/snap/800
OMP_NUM_THREADS=1 tinyhistory train "${STAGE2[@]}" --method no_history --init-from checkpoints/miniature/no_history \
    --set history.sliding_window=3 --set train.min_t=0.8 --out $S/window3_mint08 &
OMP_NUM_THREADS=1 tinyhistory train "${STAGE2[@]}" "${ENC[@]}" --set train.carry_lora=true \
    --set history.sliding_window=2 --set train.min_t=0.8 --set train.snapshot_every=200 --out $S/carry_win2_mint08 &
wait
python scripts/copy_diagnostics.py --history-frames 24 --out $R/window3_mint08 $S/window3_mint08/final
python scripts/copy_diagnostics.py --history-frames 24 --out $R/encoder_window2_mint08 $S/carry_win2_mint08/final
python scripts/next_second_scores.py --history-frames 24 --long-range 8 --window 3 --out $R/window3_mint08 \
    "window 3, min_t 0.8, 600=$S/window3_mint08/final"
python scripts/next_second_scores.py --history-frames 24 --long-range 8 --window 3 --out $R/encoder_window2_mint08 \
    "encoder + window 2, min_t 0.8, 600=$S/carry_win2_mint08/final"
