#!/usr/bin/env bash
# Same-run comparison of the image encoder against the official Python
# predictor (random ViT weights of an official shape): runs the two in turn,
# ROUNDS times each, and prints every run's encode time as JSON lines.
#   bench/compare_official.sh SAM_REPO [MODEL] [PRECISION] [THREADS] [ROUNDS]
# SAM_REPO is a checkout of facebookresearch/segment-anything; needs
# Debian's python3-torch and python3-torchvision (RSAM_FIXTURE_TOOLS=1
# scripts/install-deps.sh).
set -euo pipefail
repo=${1:?path to a segment-anything checkout}
model=${2:-vit_b}
prec=${3:-fp32}
threads=${4:-2}
rounds=${5:-3}
here=$(cd "$(dirname "$0")/.." && pwd)
for _ in $(seq "$rounds"); do
  "$here/build/rsam" bench --model "$model" --precision "$prec" --threads "$threads" --repeat 2 --decode-repeat 10 --json |
    sed 's/^{/{"impl":"rsam",/'
  /usr/bin/python3 "$here/bench/official_encoder.py" --sam-repo "$repo" --model "$model" --precision "$prec" \
    --threads "$threads" --repeat 2
done
