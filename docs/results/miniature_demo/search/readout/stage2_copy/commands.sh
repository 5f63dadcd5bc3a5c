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
# Started at the end of session 13, for the next session (1,200-step schedules, snapshots every 200; a rerun of the
# same command resumes): stage II at the training time shift 5 (keeps the low-noise steps, gives the high ones ~28 %
# of the draws above t = 0.9), the window alone against encoder + window 2 from the shift-5 stage-I model.
STAGE2_1200=(--stage ar --preset miniature --model checkpoints/miniature/base --set 'data.cache="runs/miniature/cache"'
    --set train.history_frames=24 --set train.checkpoint_every=200 --steps 1200 --save-dtype fp16 --no-progress)
OMP_NUM_THREADS=1 tinyhistory train "${STAGE2_1200[@]}" --method no_history --init-from checkpoints/miniature/no_history \
    --set history.sliding_window=3 --set train.timestep_shift=5.0 --set train.snapshot_every=200 --out $S/window3_shift5 &
OMP_NUM_THREADS=1 tinyhistory train "${STAGE2_1200[@]}" --method proposed --init-from $S/readout16_shift5/final \
    --set 'history.rates=["4x4x2"]' --set history.phase_readout=16 --set train.carry_lora=true \
    --set history.sliding_window=2 --set train.timestep_shift=5.0 --set train.snapshot_every=200 \
    --out $S/carry5_win2_shift5 &
wait
