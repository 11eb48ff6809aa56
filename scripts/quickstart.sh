#!/usr/bin/env bash
# A newcomer's first run: install, build, and run the main job on the bundled
# default: `rsam demo` makes a synthetic scene, corrupts it, segments one
# object with the bundled rsam-tiny with and without its GaRA adapter, and
# writes out/demo.png (side by side, with the IoUs).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
mkdir -p out
./build/rsam demo --out out/demo.png
