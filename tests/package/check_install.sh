#!/usr/bin/env bash
# The package as a user gets it: `cmake --install` into a fresh prefix, the
# example project (examples/cpp) built against it with find_package(rsam)
# and by hand with pkg-config, both run; the installed CLI; then, when the
# Python module was built, `import rsam` from the prefix and the Python
# example (examples/python/segment.py). Usage: check_install.sh BUILD_DIR SOURCE_DIR [PYTHON]
set -euo pipefail
build=$1 src=$2 python=${3:-}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix
unset RSAM_MODELS  # the installed models must be found by themselves

cmake --install "$build" --prefix "$prefix" >/dev/null
"$prefix/bin/rsam" --version
ls "$prefix/share/rsam/models/rsam-tiny.safetensors" "$prefix/include/rsam/rsam.h" >/dev/null
ls "$prefix/share/rsam/models/rsam-tiny-glesam.json" \
  "$prefix/share/rsam/models/rsam-tiny-glesam/sd/unet/diffusion_pytorch_model.safetensors" >/dev/null

# find_package(rsam CONFIG)
cmake -S "$src/examples/cpp" -B "$tmp/example" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$tmp/example" >/dev/null
out=$("$tmp/example/segment")
echo "$out"
# The bundled model came from the prefix, not from the source tree.
grep -q "$prefix/share/rsam/models/rsam-tiny.safetensors" <<<"$out"

# pkg-config
pc="env PKG_CONFIG_PATH=$(dirname "$(find "$prefix" -name rsam.pc)") pkg-config"
# shellcheck disable=SC2046
c++ -std=c++17 -O1 "$src/examples/cpp/main.cpp" -o "$tmp/segment_pc" $($pc --cflags --libs rsam) \
  -Wl,-rpath,"$($pc --variable=libdir rsam)"
cmp <("$tmp/segment_pc") <(echo "$out")

if [ -n "$python" ]; then
  site=$(dirname "$(find "$prefix" -path '*/rsam/__init__.py')")
  site=$(dirname "$site")
  # From the prefix only: no build tree on the path, run from elsewhere.
  (cd "$tmp" && env -u PYTHONPATH PYTHONPATH="$site" "$python" -c \
    "import rsam, sys; assert rsam.__file__.startswith('$prefix'), rsam.__file__; print('import rsam:', rsam.__file__)")
  (cd "$tmp" && PYTHONPATH="$site" "$python" "$src/examples/python/segment.py" --out "$tmp/steps")
  ls "$tmp/steps"/1_point.png >/dev/null
fi
echo "package check: OK"
