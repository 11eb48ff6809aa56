#!/usr/bin/env bash
# Same-run comparison of the image encoder against the official Python
# predictor (random ViT weights of an official shape): runs the two in turn,
# ROUNDS times each (three encodes per run: the first, cold, is not the
# median), and prints every run's timings (encode, decode) as JSON
# lines. With CHECKPOINT (a .pth of MODEL's shape), both load it and report
# load_ms, and rsam also loads the .safetensors beside it when there is one
# (`rsam convert CHECKPOINT X.safetensors` makes it).
#   bench/compare_official.sh SAM_REPO [MODEL] [PRECISION] [THREADS] [ROUNDS] [CHECKPOINT]
# SAM_REPO is a checkout of facebookresearch/segment-anything; needs
# Debian's python3-torch and python3-torchvision (RSAM_FIXTURE_TOOLS=1
# scripts/install-deps.sh).
set -euo pipefail
repo=${1:?path to a segment-anything checkout}
model=${2:-vit_b}
prec=${3:-fp32}
threads=${4:-2}
rounds=${5:-3}
ckpt=${6:-}
here=$(cd "$(dirname "$0")/.." && pwd)
rsam_bench() {
  "$here/build/rsam" bench "$@" --precision "$prec" --threads "$threads" --repeat 3 --decode-repeat 10 --json |
    sed 's/^{/{"impl":"rsam",/'
}
for _ in $(seq "$rounds"); do
  if [ -n "$ckpt" ]; then
    rsam_bench --checkpoint "$ckpt"
    sft=${ckpt%.pth}.safetensors
    [ -f "$sft" ] && rsam_bench --checkpoint "$sft"
    /usr/bin/python3 "$here/bench/official_encoder.py" --sam-repo "$repo" --model "$model" --precision "$prec" \
      --threads "$threads" --repeat 3 --checkpoint "$ckpt"
  else
    rsam_bench --model "$model"
    /usr/bin/python3 "$here/bench/official_encoder.py" --sam-repo "$repo" --model "$model" --precision "$prec" \
      --threads "$threads" --repeat 3
  fi
done
