#!/usr/bin/env bash
# The miniature study, regenerated from scratch: synthetic data, the base
# rsam-tiny and its GaRA (scripts/make_rsam_tiny.sh), then every adapter
# method x seeds on the same data and steps, evaluated clean and per
# corruption with 1 point, 3 points and a box -> docs/results.md (+ chart).
# Every stage resumes after a kill (finished runs are kept).
#   REUSE_BASE=1 scripts/study.sh   # keep models/rsam-tiny*.safetensors, only run the study
#   SEEDS=3 STEPS=120 BATCH=4 SAMPLES=48 THREADS=1 scripts/study.sh
#   NPROC=2 scripts/study.sh        # runs and samples shared out over 2 processes
set -euo pipefail
cd "$(dirname "$0")/.."
W=${STUDY_DIR:-runs/study}
RSAM=${RSAM:-build/rsam}
if [ "${REUSE_BASE:-0}" = 1 ]; then
  $RSAM synth --out "$W/tiny/synth-train" --count 6000 --size 256 --seed 1 --jobs "$(nproc)"
  $RSAM synth --out "$W/tiny/synth-val" --count 300 --size 256 --seed 2 --jobs "$(nproc)"
else
  scripts/make_rsam_tiny.sh "$W/tiny"
fi
$RSAM study --checkpoint models/rsam-tiny.safetensors \
  --train "coco:$W/tiny/synth-train/annotations.json,$W/tiny/synth-train/images" \
  --val "coco:$W/tiny/synth-val/annotations.json,$W/tiny/synth-val/images" \
  --seeds "${SEEDS:-3}" --steps "${STEPS:-120}" --batch "${BATCH:-4}" --masks-per-image 4 --lr 1e-3 \
  --corruption clean,robustseg,lqseg --prompts point:1,point:3,box --max-samples "${SAMPLES:-48}" \
  --nproc "${NPROC:-1}" --threads "${THREADS:-$(( $(nproc) / ${NPROC:-1} > 0 ? $(nproc) / ${NPROC:-1} : 1 ))}" \
  --out "$W/runs" --doc docs/results.md
