#!/usr/bin/env bash
# The miniature of the paper (preset `miniature`, issue 13), from the footage to the stage-II models, with the
# project's own commands only. Every step resumes when the script is run again (each writes RUNS/<step>/last).
#
#   1. codec:  a framewise 8x autoencoder (L1 + LPIPS) on the footage's training part
#   2. cache:  the footage's latents (learned codec) and its caption (MiniLM), once
#   3. base:   the tiny Wan DiT pretrained as a text-to-video model (no history, the whole DiT trains)
#   4. stage I: frame query on the frozen base, LoRA + encoder, for the proposed encoder, the Large Patchifier and
#               no history (same base, same steps, the demo's STAGE1_PROTOCOL: time shift 5, 16-frame histories,
#               the phase readout r16 where there is a context)
#   5. stage II: next-segment prediction (the demo's STAGE2_PROTOCOL: time shift 5, 3-s windows): the proposed
#               encoder beside the last 2 frames, going on with its stage-I LoRA, the window left out of half its
#               steps (demo_stage2.RECIPES); a 3-frame sliding window and no history, fresh LoRAs on the same base
#
# Usage: bash scripts/train_miniature.sh [RUNS_DIR]   (defaults: runs/miniature; steps from the environment)
# It publishes what the demo loads into checkpoints/miniature/ (scripts/publish_miniature.py: the codec, the base in
# fp16, the rows' LoRAs and encoders with their configs pointing at the committed codec and base).
set -euo pipefail
RUNS=${1:-runs/miniature}
CODEC_STEPS=${CODEC_STEPS:-4000}
BASE_STEPS=${BASE_STEPS:-6000}
STAGE1_STEPS=${STAGE1_STEPS:-2000}
STAGE2_STEPS=${STAGE2_STEPS:-600}
TINYHISTORY=${TINYHISTORY:-tinyhistory}
mkdir -p "$RUNS"
CODEC=(--set "codec.path=\"$RUNS/codec\"" --set "data.cache=\"$RUNS/cache\"")

"$TINYHISTORY" codec train --video assets/bbb_128px_8fps.mp4 --size 128 --fps 8 --heldout-fraction 0.2 \
  --steps "$CODEC_STEPS" --no-progress --out "$RUNS/codec"

# the cache holds the training part and the held-out tail (each window is tagged by the split)
"$TINYHISTORY" data prepare --preset miniature --input assets/bbb_128px_8fps.mp4 --out "$RUNS/cache" \
  --set "codec.path=\"$RUNS/codec\""

"$TINYHISTORY" train --stage ar --preset miniature "${CODEC[@]}" --set 'model.path=""' --set 'train.dit="full"' \
  --set 'history.method="no_history"' --set train.lora_rank=0 --set train.learning_rate=3e-4 \
  --set train.history_frames=16 --set train.batch_size=8 --steps "$BASE_STEPS" --no-progress --out "$RUNS/base"

# the committed base (fp16): every row and every stage-II model below trains on exactly these frozen weights
python scripts/publish_miniature.py codec "$RUNS/codec"
python scripts/publish_miniature.py base "$RUNS/base"
BASE=checkpoints/miniature/base

STAGE1=(--set train.timestep_shift=5.0 --set train.history_frames=16)  # reproduce/demo.py STAGE1_PROTOCOL
for method in proposed large_patchifier no_history; do
  readout=(--set history.phase_readout=16)  # STAGE1_READOUT: a per-cell read of the context; no_history has none
  [ "$method" = no_history ] && readout=()
  OMP_NUM_THREADS=1 "$TINYHISTORY" train --stage frame-query --preset miniature --method "$method" --model "$BASE" \
    "${CODEC[@]}" "${STAGE1[@]}" "${readout[@]}" --steps "$STAGE1_STEPS" --save-dtype fp16 --no-progress \
    --out "$RUNS/stage1/$method" > "$RUNS/stage1.$method.out" 2>&1 &
done
wait

# stage II (demo_stage2.RECIPES and STAGE2_PROTOCOL): the proposed model keeps training its stage-I encoder and LoRA
# beside the last 2 latent frames uncompressed, which half its steps leave out; the window sees the last 3 frames
# (192 tokens ≈ the proposed model's 48 + 128 for a 3-s history); the window and no history start fresh LoRAs
stage2() {
  local name=$1
  shift
  OMP_NUM_THREADS=1 "$TINYHISTORY" train --stage ar --preset miniature --model "$BASE" "${CODEC[@]}" "$@" \
    --set train.timestep_shift=5.0 --set train.history_frames=24 --steps "$STAGE2_STEPS" --save-dtype fp16 \
    --no-progress --out "$RUNS/stage2/$name" > "$RUNS/stage2.$name.out" 2>&1 &
}
stage2 proposed --init-from "$RUNS/stage1/proposed/final" --set history.sliding_window=2 --set train.carry_lora=true \
  --set train.window_dropout=0.5
stage2 window --method no_history --set history.sliding_window=3
stage2 none --method no_history
wait

for method in proposed large_patchifier no_history; do
  python scripts/publish_miniature.py run "$RUNS/stage1/$method" "$method"
done
for name in proposed window none; do
  python scripts/publish_miniature.py run "$RUNS/stage2/$name" "stage2/$name"
done
