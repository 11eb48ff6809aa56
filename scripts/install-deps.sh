#!/usr/bin/env bash
# Installs everything rsam needs from Debian's packages. Used by the README
# and by .ci/run, so the two cannot drift apart.
set -euo pipefail
PKGS=(
  build-essential cmake ninja-build pkg-config
  libtorch-dev            # LibTorch 1.13 (CPU)
  libopenblas0-pthread    # without it torch's fp32 matmul uses the reference BLAS (~30x slower)
  libopencv-dev libpng-dev nlohmann-json3-dev libcli11-dev libgtest-dev libbenchmark-dev
  libgloo-dev             # headers of the Gloo backend torch links, for multi-process training
  libicu-dev              # Unicode properties for the CLIP tokenizer (src/diffusion/tokenizer.cpp)
  mate-backgrounds        # real photographs for the synthetic scenes (rsam synth --photos auto)
  python3-dev pybind11-dev python3-numpy  # the Python module `rsam` (python/)
  python3-pytest python3-pil              # its tests (tests/python) and the Python example's PNGs
  libcpp-httplib-dev libssl-dev zlib1g-dev libbrotli-dev  # rsam serve (httplib's compiled library and its headers' deps)
  chromium chromium-driver  # rsam serve's browser test (tests/serve/browser_test.py)
)
if [ "${RSAM_FIXTURE_TOOLS:-0}" = 1 ]; then
  # Only to regenerate the reference fixtures (scripts/make_*fixtures.py; python3-regex: CLIP's tokenizer).
  PKGS+=(python3-torch python3-torchvision python3-opencv python3-regex)
fi
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
