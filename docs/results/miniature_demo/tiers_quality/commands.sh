#!/usr/bin/env bash
# Issue 24 quality table: full vs block-causal vs block-causal + tiers, equal steps, one thread per run.
set -euo pipefail
cd "$(dirname "$0")/../../../.."  # the repo root
source .venv/bin/activate
export OMP_NUM_THREADS=1
R=runs/miniature/i24  # git-ignored: a new checkout trains the six runs again (about 1.5 h on 2 busy cores)
mkdir -p $R
[ -e runs/miniature/cache ] || tinyhistory data prepare --preset miniature --input assets/bbb_128px_8fps.mp4 \
    --out runs/miniature/cache --set 'history.rates=["4x4x2","2x2x2"]'
COMMON=(--preset miniature --method proposed --model checkpoints/miniature/base
        --set 'data.cache="runs/miniature/cache"' --set train.lora_rank=32 --set train.seed=0
        --set train.checkpoint_every=200 --save-dtype fp16 --no-progress)
FULL=(--set 'history.rates=["2x2x2"]')
BC=(--set 'history.rates=["2x2x2"]' --set 'history.context_attention="block_causal"' --set history.kv_cache=true)
TIERS=(--set 'history.rates=["2x2x2","4x4x2"]' --set 'history.tiers=[1.0]' --set history.tier_move=0.25
       --set 'history.context_attention="block_causal"' --set history.kv_cache=true)
stage1() { tinyhistory train --stage frame-query "${COMMON[@]}" --set train.history_frames=16 --steps 600 "${@:2}" --out $R/$1 > $R/$1.log 2>&1; }
stage2() { tinyhistory train --stage ar "${COMMON[@]}" --init-from $R/$1/final --set train.history_frames=24 --steps 400 "${@:2}" --out $R/${1}_ar > $R/${1}_ar.log 2>&1; }
[ -e $R/full/final ] || stage1 full "${FULL[@]}" &
[ -e $R/block_causal/final ] || stage1 block_causal "${BC[@]}" &
[ -e $R/tiers/final ] || stage1 tiers "${TIERS[@]}" &
wait
[ -e $R/full_ar/final ] || stage2 full "${FULL[@]}" &
[ -e $R/block_causal_ar/final ] || stage2 block_causal "${BC[@]}" &
[ -e $R/tiers_ar/final ] || stage2 tiers "${TIERS[@]}" &
wait
D=docs/results/miniature_demo/tiers_quality
python scripts/frame_query_scales.py --recent-frames 8 --out $D/frame_query "full=$R/full/final" \
    "block-causal=$R/block_causal/final" "block-causal + tiers=$R/tiers/final"
python scripts/next_second_scores.py --history-frames 16 --out $D/next_second "full=$R/full_ar/final" \
    "block-causal=$R/block_causal_ar/final" "block-causal + tiers=$R/tiers_ar/final"
python benchmarks/history_latency.py $R/block_causal_ar/final --start-seconds 2 --segments 12 --steps 10 \
    --json $D/latency.json
