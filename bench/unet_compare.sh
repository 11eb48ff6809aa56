#!/usr/bin/env bash
# rsam's U-Net forward against diffusers' own, in the same run, on the same
# weights (issue 39's U-Net figure). For each latent width (4: Stable
# Diffusion's; 256: GleSAM's CRE-widened U-Net) the weights are written once
# (bench/diffusers_unet.py write: the config's U-Net, torch's default random
# init), then each precision is timed by `rsam bench --unet DIR` and by
# bench/diffusers_unet.py time, one process each, and the ratio printed.
#
#   bench/unet_compare.sh [CONFIG] [THREADS] [WORK] [REPEAT]
#     CONFIG   a diffusers unet/config.json (default: SD-2.1-base's)
#     THREADS  intra-op threads of both (default 2)
#     WORK     scratch folder for the weights (3.5 GB per width) and the JSON results
#     REPEAT   forwards per process (default 3); the figure is the median of
#              all but the first (which also faults the memory in)
#
# diffusers runs on Debian's torch 1.13 with glibc malloc told to keep its
# memory (MALLOC_* below): with the defaults every forward faults its
# activations in again and takes several times longer; rsam installs its
# caching CPU allocator itself. RSAM (default ./build/rsam) and PY (default
# /usr/bin/python3) may be overridden. Takes about ten minutes at two threads.
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=${1:-tests/data/diffusion/configs/sd21_base_unet.json}
THREADS=${2:-2}
WORK=${3:-/tmp/rsam-unet-compare}
REPEAT=${4:-3}
RSAM=${RSAM:-./build/rsam}
PY=${PY:-/usr/bin/python3}
export OMP_WAIT_POLICY=PASSIVE
mkdir -p "$WORK"
RESULTS="$WORK/results.jsonl"
: > "$RESULTS"

for C in 4 256; do
  DIR="$WORK/unet$C"
  "$PY" bench/diffusers_unet.py write --config "$CONFIG" --channels "$C" --out "$DIR" >&2
  for P in fp32 bf16; do
    echo "channels $C, $P: rsam" >&2
    "$RSAM" bench --unet "$DIR" --precision "$P" --threads "$THREADS" --repeat "$REPEAT" --json |
      "$PY" -c 'import json,sys; r=json.loads(sys.stdin.read()); r["implementation"]="rsam"; print(json.dumps(r))' \
      >> "$RESULTS"
    echo "channels $C, $P: diffusers" >&2
    MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=68719476736 MALLOC_TOP_PAD_=1073741824 \
      "$PY" bench/diffusers_unet.py time --unet "$DIR" --precision "$P" --threads "$THREADS" --repeat "$REPEAT" \
      >> "$RESULTS"
  done
  rm -rf "$DIR"
done

"$PY" - "$RESULTS" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def fig(r):
    f = r["forward_ms"]
    return statistics.median(f[1:] if len(f) > 1 else f) / 1e3
print("| latent | precision | diffusers s | rsam s | diffusers / rsam | peak RSS diffusers / rsam GB |")
print("|---|---|---|---|---|---|")
for c in (4, 256):
    for p in ("fp32", "bf16"):
        d = next(r for r in rows if r["implementation"] != "rsam" and r["channels"] == c and r["precision"] == p)
        s = next(r for r in rows if r["implementation"] == "rsam" and r["channels"] == c and r["precision"] == p)
        mode = f" ({d['bf16_mode']})" if p == "bf16" else ""
        print(f"| [1,{c},64,64] | {p}{mode} | {fig(d):.2f} | {fig(s):.2f} | {fig(d) / fig(s):.2f} | "
              f"{d['peak_rss_gb']:.1f} / {s['peak_rss_gb']:.1f} |")
for r in rows:
    if "autocast_error" in r:
        print(f"diffusers under torch.autocast(cpu, bf16) failed ({r['channels']} channels): {r['autocast_error']}")
        break
print(f"parameters: {sorted({r['parameters'] for r in rows})}, threads: {sorted({r['threads'] for r in rows})}")
EOF
