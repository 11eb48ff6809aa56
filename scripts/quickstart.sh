#!/usr/bin/env bash
# A newcomer's first run: install, build, and segment the bundled sample
# image with the bundled checkpoint, writing out/mask.png and out/overlay.png.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
mkdir -p out
./build/rsam segment --checkpoint tests/data/sam/tiny_a.pth --image tests/data/sam/images/down150.png \
  --point 70,45 --multimask --out out/mask.png --overlay out/overlay.png
echo "wrote out/mask.png and out/overlay.png"
