#!/usr/bin/env bash
# Regenerates the bundled models from scratch: the synthetic data, rsam-tiny
# (pre-trained on clean scenes) and its GaRA adapter (trained on corrupted
# scenes). The committed models/ files came from exactly these commands; see
# docs/rsam-tiny.md for the times measured on a 2-core CPU.
# Usage: scripts/make_rsam_tiny.sh [WORK_DIR]   (default: runs/tiny)
set -euo pipefail
cd "$(dirname "$0")/.."
W=${1:-runs/tiny}
RSAM=${RSAM:-build/rsam}
# The shipped weights trained in bf16 on CPUs with AVX-512. Without AVX-512
# torch's bf16 is ~20x slower than fp32 (docs/performance.md): PRECISION=fp32
# there (the arithmetic then differs from the shipped weights').
PRECISION=${PRECISION:-bf16}
mkdir -p "$W"
# 6000 training and 300 held-out scenes, 256x256 (the input size of stages 1-4).
$RSAM synth --out "$W/synth-train" --count 6000 --size 256 --seed 1 --jobs "$(nproc)"
$RSAM synth --out "$W/synth-val" --count 300 --size 256 --seed 2 --jobs "$(nproc)"
TRAIN="coco:$W/synth-train/annotations.json,$W/synth-train/images"
VAL="coco:$W/synth-val/annotations.json,$W/synth-val/images"
# Stages 5-12 share one recipe (one interactive round per object, clean
# scenes); they differ in where they start, length, learning rate, warm-up,
# seed and how the CPU is used (the trailing arguments).
stage() {
  local from=$1 out=$2 steps=$3 lr=$4 warmup=$5 seed=$6
  shift 6
  $RSAM train --checkpoint "$from" --full --data "$TRAIN" --val "$VAL" --corruption none \
    --prompts points:1,points:3,box --iterative-points 1 --steps "$steps" --batch 8 --masks-per-image 6 \
    --optimizer adamw --lr "$lr" --wd 0.01 --warmup "$warmup" --precision "$PRECISION" --seed "$seed" "$@" \
    --workers 1 --save-every 50 --out "$out" --resume
}
# Stages 1-4 ran before scores learned the IoU at input resolution: they
# measure it on the mask grid (--iou-target lowres); stage 4b re-fits the head.
# Every weight from random init, clean scenes, points and boxes.
$RSAM train --init scripts/rsam-tiny-init.json --full --data "$TRAIN" --val "$VAL" --corruption none \
  --iou-target lowres --prompts points:1,points:3,box --steps 1000 --batch 8 --masks-per-image 6 \
  --optimizer adamw --lr 2e-3 --wd 0.01 --warmup 30 --seed 1 --threads 1 --workers 1 --save-every 50 --out "$W/base" --resume
# Continued: a second cosine schedule from the first stage's weights (the
# first had decayed to zero with the loss still falling).
$RSAM train --checkpoint "$W/base/model.safetensors" --full --data "$TRAIN" --val "$VAL" --corruption none \
  --iou-target lowres --prompts points:1,points:3,box --steps 2400 --batch 8 --masks-per-image 6 \
  --optimizer adamw --lr 1.5e-3 --wd 0.01 --warmup 50 --seed 2 --threads 2 --workers 1 --save-every 50 --out "$W/base2" --resume
# Stage 3: a third schedule with SAM's interactive rounds (a corrective click
# plus the last mask as mask input, twice per object), so that refinement
# clicks improve masks; bf16 autocast (~1.2x the fp32 speed here).
$RSAM train --checkpoint "$W/base2/model.safetensors" --full --data "$TRAIN" --val "$VAL" --corruption none \
  --iou-target lowres --prompts points:1,points:3,box --iterative-points 2 --steps 2600 --batch 8 --masks-per-image 6 \
  --optimizer adamw --lr 1e-3 --wd 0.01 --warmup 50 --precision "$PRECISION" --seed 3 --threads 2 --workers 1 \
  --save-every 50 --out "$W/base3" --resume
# Stage 4: a fourth schedule, same recipe (the loss was still falling).
$RSAM train --checkpoint "$W/base3/model.safetensors" --full --data "$TRAIN" --val "$VAL" --corruption none \
  --iou-target lowres --prompts points:1,points:3,box --iterative-points 2 --steps 1500 --batch 8 --masks-per-image 6 \
  --optimizer adamw --lr 8e-4 --wd 0.01 --warmup 50 --precision "$PRECISION" --seed 4 --threads 2 --workers 1 \
  --save-every 50 --out "$W/base4" --resume
# Stage 4b: only the IoU head, re-fitted to the IoU measured at input
# resolution (stages 1-4 measured it on the 64x64 mask grid, which
# under-scores small masks); every mask stays as it was.
$RSAM train --checkpoint "$W/base4/model.safetensors" --full --trainable mask_decoder.iou_prediction_head \
  --data "$TRAIN" --val "$VAL" --corruption none --prompts points:1,box --steps 1000 --batch 8 \
  --masks-per-image 6 --optimizer adamw --lr 1e-3 --wd 0.01 --warmup 30 --precision "$PRECISION" --seed 5 --threads 2 \
  --workers 1 --save-every 50 --out "$W/base4b" --resume
# Stage 5: the input re-sized from 256 to 512 pixels (a 32x32 token grid
# instead of 16x16: small objects were what the model missed), then 600
# steps to adapt to it; one interactive round to keep the step affordable.
$RSAM convert "$W/base4b/model.safetensors" "$W/base4b-512.safetensors" --img-size 512
stage "$W/base4b-512.safetensors" "$W/base5" 600 8e-4 30 6 --threads 2
# Stage 6: a further cosine schedule at 512 (stage 5's loss was still falling).
stage "$W/base5/model.safetensors" "$W/base6" 600 5e-4 20 7 --threads 2
# Stage 7: the encoder deepened from 6 to 12 blocks (each old block followed by
# a new identity block: zero output projections, so the model is unchanged),
# then an 800-step schedule. The training step barely grows: the decoder, not
# the encoder, is most of it.
$RSAM convert "$W/base6/model.safetensors" "$W/base6-deep12.safetensors" --encoder-depth 12
stage "$W/base6-deep12.safetensors" "$W/base7" 800 6e-4 30 8 --threads 2
# Stage 8: a further schedule, on two data-parallel processes (--nproc 2: the
# same batches as one process, ~1.6x the images per second on this CPU).
stage "$W/base7/model.safetensors" "$W/base8" 800 5e-4 30 9 --nproc 2
# Stage 9: a longer schedule, same recipe (1600 steps: 800-step schedules had
# stopped moving the held-out numbers, the loss had not).
stage "$W/base8/model.safetensors" "$W/base9" 1600 5e-4 30 10 --nproc 2
# Stage 10: the input re-sized again, 512 -> 768 (a 48x48 token grid, a
# 192x192 mask grid). Untrained, the 768-pixel model already scored higher
# than at 512 (1024 scored lower), then 500 steps at the new size.
$RSAM convert "$W/base9/model.safetensors" "$W/base9-768.safetensors" --img-size 768
stage "$W/base9-768.safetensors" "$W/base10" 500 5e-4 30 11 --nproc 2
# Stage 11: a second schedule at 768 (stage 10's 500 steps had bought
# everything but one point), 600 steps, same recipe.
stage "$W/base10/model.safetensors" "$W/base11" 600 5e-4 30 12 --nproc 2
# Stage 12: a third schedule at 768 (stage 11's still paid), same recipe.
stage "$W/base11/model.safetensors" "$W/base12" 600 5e-4 30 13 --nproc 2
$RSAM convert "$W/base12/model.safetensors" "$W/stage12.safetensors"
# Stage 13: the input re-sized again, 768 -> 1024 (a 64x64 token grid, a
# 256x256 mask grid), not trained at that size: untrained it already beat
# the 768-pixel model with a box (88.4 against 86.7 on 300 held-out
# objects), and a training step at 1024 costs ~4x one at 768 here.
$RSAM convert "$W/stage12.safetensors" models/rsam-tiny.safetensors --img-size 1024
# GaRA (ranks scaled to the 128-wide encoder) on Robust-Seg + LQ corruptions,
# trained on the shipped 1024-pixel weights (400 steps in bf16, ~1.5 h here;
# the adapter trained at 768 and carried over recovered less), its embedding
# held to the frozen base's embedding of the clean image (--consistency 4:
# better than without over Robust-Seg and LQ with every prompt, and cheaper on
# clean boxes; docs/rsam-tiny.md, Quality).
$RSAM train --checkpoint models/rsam-tiny.safetensors --adapter models/rsam-tiny-gara.json --data "$TRAIN" \
  --corruption robustseg,lqseg --severity random --clean-ratio 0.2 --prompts points:1,points:3,box \
  --steps 400 --batch 8 --masks-per-image 6 --optimizer adamw --lr 1e-3 --wd 1e-4 --warmup 20 --precision "$PRECISION" --seed 2 \
  --nproc 2 --workers 1 --save-every 50 --consistency 4 --out "$W/gara" --resume
# Copied under a temporary name and renamed, so that a kill never leaves a
# truncated adapter where rsam segment looks for it.
cp "$W/gara/adapter.safetensors" models/rsam-tiny-gara.safetensors.tmp
mv models/rsam-tiny-gara.safetensors.tmp models/rsam-tiny-gara.safetensors
