#!/usr/bin/env python3
"""Regenerates the automatic-mask-generator fixtures (tests/data/amg/) with the
official SamAutomaticMaskGenerator on rsam-tiny's weights.

rsam-tiny (models/rsam-tiny.safetensors, config models/rsam-tiny.json) is
read by hand (safetensors is a JSON header and raw little-endian tensors) and
loaded into the official Sam built with rsam-tiny's configuration, so the
masks are meaningful. The scenes are drawn here, deterministically. The C++
tests (tests/amg) read only the files written here and need no Python.

Needs Debian's python3-torch, python3-torchvision and python3-opencv
(RSAM_FIXTURE_TOOLS=1 scripts/install-deps.sh) and a checkout of
facebookresearch/segment-anything:

    /usr/bin/python3 scripts/make_amg_fixtures.py --sam-repo /path/to/segment-anything
"""
import argparse
import json
import os
import struct
import sys
from functools import partial

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32}


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        arr = np.frombuffer(raw[base + a:base + b], dtype=DTYPES[info["dtype"]]).reshape(info["shape"])
        out[name] = arr.copy()
    return out


def build_sam(cfg, torch, modeling):
    grid = cfg["img_size"] // cfg["patch_size"]
    return modeling.Sam(
        image_encoder=modeling.ImageEncoderViT(
            depth=cfg["encoder_depth"], embed_dim=cfg["encoder_embed_dim"], img_size=cfg["img_size"],
            mlp_ratio=cfg["encoder_mlp_dim"] / cfg["encoder_embed_dim"],
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=cfg["encoder_num_heads"],
            patch_size=cfg["patch_size"], qkv_bias=True, use_rel_pos=True,
            global_attn_indexes=cfg["global_attn_indexes"], window_size=cfg["window_size"],
            out_chans=cfg["prompt_embed_dim"]),
        prompt_encoder=modeling.PromptEncoder(
            embed_dim=cfg["prompt_embed_dim"], image_embedding_size=(grid, grid),
            input_image_size=(cfg["img_size"], cfg["img_size"]), mask_in_chans=cfg["mask_in_chans"]),
        mask_decoder=modeling.MaskDecoder(
            num_multimask_outputs=cfg["num_multimask_outputs"],
            transformer=modeling.TwoWayTransformer(
                depth=cfg["decoder_depth"], embedding_dim=cfg["prompt_embed_dim"], mlp_dim=cfg["decoder_mlp_dim"],
                num_heads=cfg["decoder_num_heads"], attention_downsample_rate=cfg["attention_downsample_rate"]),
            transformer_dim=cfg["prompt_embed_dim"], iou_head_depth=cfg["iou_head_depth"],
            iou_head_hidden_dim=cfg["iou_head_hidden_dim"]),
    )


def scene(seed, w, h):
    """Flat-coloured shapes on a shaded background, a little noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.zeros((h, w, 3), np.float64)
    base = rng.uniform(60, 200, 3)
    for c in range(3):
        img[..., c] = base[c] + 30 * (xx / w) - 20 * (yy / h)
    for _ in range(5):
        col = rng.uniform(0, 255, 3)
        cx, cy = rng.uniform(0.15, 0.85) * w, rng.uniform(0.15, 0.85) * h
        rx, ry = rng.uniform(0.06, 0.2) * w, rng.uniform(0.06, 0.2) * h
        if rng.uniform() < 0.5:
            m = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1
        else:
            m = (np.abs(xx - cx) <= rx) & (np.abs(yy - cy) <= ry)
        img[m] = col
    img += rng.normal(0, 3, img.shape)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def record(ann):
    return {
        "counts": ann["segmentation"]["counts"], "size": ann["segmentation"]["size"], "area": int(ann["area"]),
        "bbox": [int(v) for v in ann["bbox"]], "predicted_iou": float(ann["predicted_iou"]),
        "point_coords": [float(v) for v in ann["point_coords"][0]],
        "stability_score": float(ann["stability_score"]), "crop_box": [int(v) for v in ann["crop_box"]],
    }


def postprocess_case(torch, amg_utils, MaskData, Gen):
    """postprocess_small_regions alone on masks with holes, islands and
    near-duplicates (ties in its 0/1 scores decide the order)."""
    rng = np.random.default_rng(7)
    h, w = 48, 64
    yy, xx = np.mgrid[0:h, 0:w]
    masks = []
    for i in range(24):
        m = np.zeros((h, w), bool)
        cx, cy, r = rng.uniform(10, 54), rng.uniform(10, 38), rng.uniform(5, 14)
        m |= (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
        if i % 3 == 0:  # a small hole
            m &= ~((xx - cx) ** 2 + (yy - cy) ** 2 <= 2.0)
        if i % 4 == 1:  # a small island
            ix, iy = int(rng.integers(0, w - 3)), int(rng.integers(0, h - 3))
            m[iy:iy + 2, ix:ix + 2] = True
        if i % 5 == 2 and masks:  # a near-duplicate of the previous mask
            m = masks[-1].copy()
            m[int(cy) % h, :3] = True
        masks.append(m)
    t = torch.as_tensor(np.stack(masks))
    rles = amg_utils.mask_to_rle_pytorch(t)
    inputs = [{"counts": list(r["counts"]), "size": list(r["size"])} for r in rles]  # it edits rles in place
    data = MaskData(rles=rles, boxes=amg_utils.batched_mask_to_box(t).numpy(),
                    ids=np.arange(len(masks)))
    out = Gen.postprocess_small_regions(data, 12, 0.7)
    return {"min_area": 12, "nms_thresh": 0.7,
            "input": inputs,
            "kept": [int(i) for i in out["ids"]],
            "output": [{"counts": r["counts"], "size": r["size"], "bbox_xyxy": [int(v) for v in b]}
                       for r, b in zip(out["rles"], out["boxes"])]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sam-repo", required=True)
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "data", "amg"))
    ap.add_argument("--only-postprocess", action="store_true",
                    help="keep the generator cases of the existing file, redo the post-processing case")
    args = ap.parse_args()
    sys.path.insert(0, args.sam_repo)
    import cv2
    import torch
    from segment_anything import SamAutomaticMaskGenerator, modeling
    from segment_anything.utils import amg as amg_utils
    from segment_anything.utils.amg import MaskData

    torch.set_num_threads(1)
    cfg = json.load(open(os.path.join(ROOT, "models", "rsam-tiny.json")))
    sam = build_sam(cfg, torch, modeling)
    sd = {k: torch.from_numpy(v) for k, v in read_safetensors(os.path.join(ROOT, "models", "rsam-tiny.safetensors")).items()}
    sam.load_state_dict(sd, strict=True)
    sam.eval()
    os.makedirs(args.out, exist_ok=True)
    out_json = os.path.join(args.out, "official_amg.json")
    if args.only_postprocess:
        fixture = json.load(open(out_json))
        fixture["postprocess"] = postprocess_case(torch, amg_utils, MaskData, SamAutomaticMaskGenerator)
        with open(out_json, "w") as f:
            json.dump(fixture, f, separators=(",", ":"))
        return

    scenes = {"scene_a": scene(1, 160, 120), "scene_b": scene(2, 112, 144)}
    for name, img in scenes.items():
        cv2.imwrite(os.path.join(args.out, name + ".png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    # Default thresholds, and looser ones (rsam-tiny's predicted IoUs are
    # modest, so the defaults keep few masks); fewer points than the default
    # 32 per side keep the C++ tests (which decode every point, as the
    # official code does) short. With crop layers and no mask surviving
    # anywhere the official code fails (box_area of an empty tensor), so the
    # crop case uses the looser thresholds.
    loose = {"pred_iou_thresh": 0.5, "stability_score_thresh": 0.8}
    cases = [
        ("defaults_a", "scene_a", {"points_per_side": 16}),
        ("defaults_b", "scene_b", {"points_per_side": 16}),
        ("loose_a", "scene_a", {"points_per_side": 16, **loose}),
        ("crops_a", "scene_a", {"crop_n_layers": 1, "points_per_side": 8, **loose}),
        ("min_area_b", "scene_b", {"points_per_side": 16, "min_mask_region_area": 40, **loose}),
    ]
    fixture = {"model": "rsam-tiny (no adapter)", "cases": []}
    for name, scene_name, kw in cases:
        gen = SamAutomaticMaskGenerator(sam, output_mode="uncompressed_rle", **kw)
        anns = gen.generate(scenes[scene_name])
        print(f"{name}: {len(anns)} masks", file=sys.stderr)
        fixture["cases"].append({"name": name, "image": scene_name + ".png", "options": kw,
                                 "records": [record(a) for a in anns]})
    fixture["postprocess"] = postprocess_case(torch, amg_utils, MaskData, SamAutomaticMaskGenerator)
    with open(out_json, "w") as f:
        json.dump(fixture, f, separators=(",", ":"))


if __name__ == "__main__":
    main()
