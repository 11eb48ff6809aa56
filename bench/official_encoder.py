#!/usr/bin/env python3
"""Times the official SamPredictor.set_image (the image encoder) and predict
(one point, three masks) on random weights of an official shape, or on a
checkpoint whose load is then timed too, for a same-run ratio against
`rsam bench`.

    /usr/bin/python3 bench/official_encoder.py --sam-repo PATH --model vit_b \
        --precision fp32 --threads 2 --repeat 3 [--checkpoint sam_vit_b.pth]

Prints one JSON line like `rsam bench --json`. Needs Debian's python3-torch
and python3-torchvision and a checkout of facebookresearch/segment-anything.
"""
import argparse
import json
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sam-repo", required=True)
    ap.add_argument("--model", default="vit_b")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--checkpoint", help="a .pth the official builder loads (load_ms is its time)")
    args = ap.parse_args()
    sys.path.insert(0, args.sam_repo)
    import numpy as np
    import torch
    from segment_anything import SamPredictor, sam_model_registry

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    t = time.perf_counter()
    sam = sam_model_registry[args.model](checkpoint=args.checkpoint)
    load_ms = (time.perf_counter() - t) * 1000
    pred = SamPredictor(sam)
    img = (np.arange(1024 * 1024 * 3, dtype=np.uint64) * 2654435761 >> 24).astype(np.uint8).reshape(1024, 1024, 3)
    enc = []
    for _ in range(args.repeat):
        t = time.perf_counter()
        if args.precision == "bf16":
            with torch.autocast("cpu", dtype=torch.bfloat16):
                pred.set_image(img)
        else:
            pred.set_image(img)
        enc.append((time.perf_counter() - t) * 1000)
    dec = []
    for _ in range(20):
        t = time.perf_counter()
        pred.predict(point_coords=np.array([[512.0, 512.0]]), point_labels=np.array([1]), multimask_output=True)
        dec.append((time.perf_counter() - t) * 1000)
    out = {"impl": "official-python", "model": args.model, "precision": args.precision,
           "threads": args.threads, "encode_ms": enc, "decode_ms": dec,
           "encode_median_ms": sorted(enc)[len(enc) // 2],
           "decode_median_ms": sorted(dec)[len(dec) // 2]}
    if args.checkpoint:
        out["checkpoint"] = args.checkpoint
        out["load_ms"] = load_ms
    print(json.dumps(out))


if __name__ == "__main__":
    main()
