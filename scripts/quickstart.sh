#!/usr/bin/env bash
# A newcomer's first run: install, build, and run the main job on the bundled
# default: `rsam demo` makes a few synthetic scenes, corrupts them, segments
# their objects with the bundled rsam-tiny alone, with its GaRA adapter and
# with its GleSAM enhancer, and writes out/demo.png (an example per method and
# corruption, the mean IoUs beneath). Then the same from Python: `import rsam`
# from the build tree.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
mkdir -p out
./build/rsam demo --out out/demo.png
# Debian's python3, the one the module is built for (docs/library.md).
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
if [ -d build/python/rsam ]; then
  PYTHONPATH=build/python "$PY" -c "import rsam; print('import rsam:', rsam.__version__, len(rsam.list_corruptions()), 'corruptions')"
fi
cat <<'MSG'
Next: `cmake --install build --prefix ~/.local` (or sudo cmake --install build for /usr/local)
installs the rsam binary, librsam + include/rsam/rsam.h for find_package(rsam) or pkg-config,
the bundled models and the Python module; or try it in place:
  PYTHONPATH=build/python /usr/bin/python3 examples/python/segment.py
MSG
