#!/usr/bin/env bash
# The GleSAM miniature (issue 40, docs/glesam.md): a small U-Net prior
# pre-trained by rsam on rsam-tiny's embeddings, GleSAM's two stages on
# corrupted synthetic scenes, the two ablations (gamma 1; fresh in/out convs
# instead of CRE) and the evaluation beside no adapter and the shipped GaRA.
# These are exactly the commands of the run docs/glesam.md reports (there
# each ran with --threads 1 on one core of a shared 2-core machine).
# Usage: scripts/make_glesam_tiny.sh [WORK_DIR]   (default: runs/glesam-tiny)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
W=${1:-runs/glesam-tiny}
RSAM=${RSAM:-$ROOT/build/rsam}
CKPT=$ROOT/models/rsam-tiny.safetensors
GARA=$ROOT/models/rsam-tiny-gara.safetensors
mkdir -p "$W" && cd "$W"
# 300 training scenes (1,548 objects) and the first 50 held-out scenes of
# docs/rsam-tiny.md's synth-val (same seed), 256x256.
$RSAM synth --out synth-train --count 300 --size 256 --seed 1
$RSAM synth --out synth-val --count 50 --size 256 --seed 2
TRAIN=coco:synth-train/annotations.json,synth-train/images
VAL=coco:synth-val/annotations.json,synth-val/images
COMMON="--checkpoint $CKPT --data $TRAIN --threads 1 --workers 1 --save-every 25 --resume"
# The prior: models/glesam-tiny (config, scheduler, fixed text embedding).
$RSAM train --glesam-stage prior --init "$ROOT/models/glesam-tiny" $COMMON --embedding-cache cache \
  --steps 600 --batch 4 --optimizer adamw --lr 1e-3 --wd 0.01 --warmup 30 --seed 1 --out prior
# Stage 1 (U-Net LoRA), for the method and its two ablations.
stage1() {
  $RSAM train --enhancer "$1" --glesam-stage unet $COMMON --embedding-cache cache \
    --corruption lqseg,robustseg --severity random --steps 150 --batch 2 --optimizer adamw --lr 1e-3 \
    --wd 0.01 --warmup 10 --seed 1 --out "$2"
}
echo '{"method": "glesam", "sd": "prior", "text_embedding": "prior/text_embedding.npy", "gamma": 1, "timestep": 1}' \
  > base-g1.json
echo '{"method": "glesam", "sd": "prior", "text_embedding": "prior/text_embedding.npy", "gamma": 5, "timestep": 1, "cre": false}' \
  > base-nocre.json
stage1 prior/enhancer.json s1
# Stage 2 (the decoder on enhanced embeddings, 3 random points).
$RSAM train --enhancer s1/enhancer.json --glesam-stage decoder $COMMON --corruption lqseg,robustseg \
  --severity random --prompts points:3 --steps 100 --batch 2 --optimizer adam --lr 1e-4 --wd 1e-5 --warmup 10 \
  --seed 2 --out s2
stage1 base-g1.json s1-g1
stage1 base-nocre.json s1-nocre
evaluate() {
  $RSAM eval --checkpoint "$CKPT" --data "$VAL" --compare "$2" --corruption "$3" --prompts point:1,point:3,box \
    --max-samples "$4" --seed 0 --threads 1 --report "$1"
}
evaluate evals/lq "none,$GARA,s2/enhancer.json,$GARA+s2/enhancer.json" clean,lq1,lq2,lq3 60
evaluate evals/ablation "s1/enhancer.json,s1-g1/enhancer.json,s1-nocre/enhancer.json" clean,lq1,lq2,lq3 40
evaluate evals/robustseg "none,$GARA,s2/enhancer.json,$GARA+s2/enhancer.json" robustseg 12
G=rsam-tiny-gara
for pair in "sam enhancer" "sam $G" "sam $G+enhancer" "$G $G+enhancer"; do
  set -- $pair
  $RSAM compare evals/lq evals/lq --base-method "$1" --method "$2"
  $RSAM compare evals/robustseg evals/robustseg --base-method "$1" --method "$2"
done
for m in s1-g1/enhancer s1-nocre/enhancer; do
  $RSAM compare evals/ablation evals/ablation --base-method s1/enhancer --method $m
done
# The control: the decoder fine-tuned without enhancement (the adapter trainer's decoder_only).
$RSAM train --adapter decoder_only $COMMON --corruption lqseg,robustseg --severity random --prompts points:3 \
  --steps 100 --batch 2 --optimizer adam --lr 1e-4 --wd 1e-5 --warmup 10 --seed 2 --out ctl-decoder
evaluate evals/control ctl-decoder/adapter.safetensors clean,lq1,lq2,lq3 60
$RSAM compare evals/lq evals/control --base-method sam
$RSAM compare evals/lq evals/control --base-method enhancer
