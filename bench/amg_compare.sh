#!/usr/bin/env bash
# Same-run comparison of "segment everything" against the official
# SamAutomaticMaskGenerator: the same weights, the same 1024x1024 scene, the
# same thread count; encode and generation timed separately, each with a
# profile of where the time goes. Prints one JSON line per run.
#   bench/amg_compare.sh SAM_REPO [THREADS] [POINTS_PER_SIDE] [WORK_DIR]
# Models: the official ViT-B with random weights (seed 0, saved by the
# official script so rsam loads the very same ones) and rsam-tiny (no
# adapter). Needs Debian's python3-torch, python3-torchvision, python3-opencv
# (RSAM_FIXTURE_TOOLS=1 scripts/install-deps.sh) and a built rsam.
set -euo pipefail
repo=${1:?path to a segment-anything checkout}
threads=${2:-2}
pps=${3:-32}
work=${4:-$(mktemp -d)}
here=$(cd "$(dirname "$0")/.." && pwd)
py=/usr/bin/python3
scene="$work/amg_scene.png"
$py "$here/bench/official_amg.py" --sam-repo "$repo" --write-scene "$scene"
rsam_run() {  # checkpoint, model name
  "$here/build/rsam" amg --checkpoint "$1" --no-adapter --image "$scene" --points-per-side "$pps" \
    --threads "$threads" --out "$work/rsam_$2.json" --json |
    sed "s/^{/{\"impl\":\"rsam\",\"bench_model\":\"$2\",/"
}
$py "$here/bench/official_amg.py" --sam-repo "$repo" --model vit_b --image "$scene" --threads "$threads" \
  --points-per-side "$pps" --save-checkpoint "$work/vit_b_random.pth"
rsam_run "$work/vit_b_random.pth" vit_b
$py "$here/bench/official_amg.py" --sam-repo "$repo" --model rsam-tiny --image "$scene" --threads "$threads" \
  --points-per-side "$pps"
rsam_run "$here/models/rsam-tiny.safetensors" rsam-tiny
