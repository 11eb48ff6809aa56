#!/usr/bin/env python3
"""fp32 against bf16 masks of `rsam segment` (docs/performance.md, --precision auto).

Runs `rsam segment` twice per prompt (--precision fp32 and bf16) on a synth
folder (`rsam synth --out DIR --count 24 --size 256 --seed 2`: the first
scenes of the held-out set), one point at the centre of each of the first two
objects' boxes per image, and prints the mean and worst IoU of the two masks.
Extra arguments go to every `rsam segment` call (e.g. --threads 1 --no-adapter).
Needs numpy and PIL (Debian's /usr/bin/python3 has both).
"""
import argparse, json, os, subprocess, tempfile

import numpy as np
from PIL import Image


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rsam", required=True)
    ap.add_argument("--synth", required=True, help="folder written by rsam synth")
    args, extra = ap.parse_known_args()
    a = json.load(open(os.path.join(args.synth, "annotations.json")))
    imgs = {i["id"]: i for i in a["images"]}
    per_img = {}
    for ann in a["annotations"]:
        per_img.setdefault(ann["image_id"], []).append(ann)
    ious = []
    with tempfile.TemporaryDirectory() as tmp:
        for iid, anns in sorted(per_img.items()):
            for ann in anns[:2]:
                x, y, w, h = ann["bbox"]
                if w < 4 or h < 4:
                    continue
                masks = []
                for prec in ("fp32", "bf16"):
                    out = os.path.join(tmp, prec + ".png")
                    subprocess.run([args.rsam, "segment", "--image",
                                    os.path.join(args.synth, "images", imgs[iid]["file_name"]),
                                    "--point", f"{x + w / 2:.1f},{y + h / 2:.1f}", "--precision", prec,
                                    "--out", out] + extra, check=True, capture_output=True)
                    masks.append(np.array(Image.open(out)) > 0)
                uni = (masks[0] | masks[1]).sum()
                ious.append(1.0 if uni == 0 else float((masks[0] & masks[1]).sum() / uni))
    print(json.dumps({"prompts": len(ious), "mean_iou": float(np.mean(ious)), "min_iou": float(np.min(ious)),
                      "below_0.99": int(sum(i < 0.99 for i in ious))}))


if __name__ == "__main__":
    main()
