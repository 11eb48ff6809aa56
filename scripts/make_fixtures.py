#!/usr/bin/env python3
"""Regenerates rsam's SAM parity fixtures with the official implementation.

Writes tiny random-weight SAM checkpoints (saved by torch.save exactly as the
official state_dict is: zip and legacy formats), test images, prompts, and the
official SamPredictor's outputs for them into tests/data/sam/. The C++ tests
read these files and need no Python.

Run with Debian's python3-torch/python3-torchvision (RSAM_FIXTURE_TOOLS=1
scripts/install-deps.sh) and a checkout of facebookresearch/segment-anything:

    /usr/bin/python3 scripts/make_fixtures.py --sam-repo /path/to/segment-anything
"""
import argparse
import json
import os
import sys
from functools import partial

import numpy as np


def build(cfg, torch, modeling):
    grid = cfg["img_size"] // cfg["patch_size"]
    sam = modeling.Sam(
        image_encoder=modeling.ImageEncoderViT(
            depth=cfg["encoder_depth"],
            embed_dim=cfg["encoder_embed_dim"],
            img_size=cfg["img_size"],
            mlp_ratio=cfg["encoder_mlp_dim"] / cfg["encoder_embed_dim"],
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=cfg["encoder_num_heads"],
            patch_size=cfg["patch_size"],
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=cfg["global_attn_indexes"],
            window_size=cfg["window_size"],
            out_chans=cfg["prompt_embed_dim"],
        ),
        prompt_encoder=modeling.PromptEncoder(
            embed_dim=cfg["prompt_embed_dim"],
            image_embedding_size=(grid, grid),
            input_image_size=(cfg["img_size"], cfg["img_size"]),
            mask_in_chans=cfg["mask_in_chans"],
        ),
        mask_decoder=modeling.MaskDecoder(
            num_multimask_outputs=3,
            transformer=modeling.TwoWayTransformer(
                depth=cfg["decoder_depth"],
                embedding_dim=cfg["prompt_embed_dim"],
                mlp_dim=cfg["decoder_mlp_dim"],
                num_heads=8,
            ),
            transformer_dim=cfg["prompt_embed_dim"],
            iou_head_depth=3,
            iou_head_hidden_dim=cfg["iou_head_hidden_dim"],
        ),
    )
    # Default init leaves pos_embed, rel_pos and norms trivial; randomize
    # everything so each tensor's loading and use is actually tested.
    g = torch.Generator().manual_seed(cfg["seed"])
    with torch.no_grad():
        for name, p in sam.named_parameters():
            if "norm" in name or "output_upscaling.1" in name or "neck.1" in name or "neck.3" in name \
                    or "mask_downscaling.1" in name or "mask_downscaling.4" in name:
                base = 1.0 if name.endswith("weight") else 0.0
                p.copy_(base + 0.2 * torch.randn(p.shape, generator=g))
            elif p.dim() >= 2 and "embed" not in name and "rel_pos" not in name and "token" not in name:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) * (1.5 / fan_in) ** 0.5)
            else:
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
    sam.eval()
    return sam


CONFIGS = {
    # Window 3 on a 8x8 grid: windowed blocks need padding (8 -> 9).
    "tiny_a": dict(img_size=64, patch_size=8, encoder_embed_dim=32, encoder_depth=2, encoder_num_heads=2,
                   encoder_mlp_dim=64, global_attn_indexes=[1], window_size=3, prompt_embed_dim=32,
                   mask_in_chans=8, decoder_depth=2, decoder_mlp_dim=64, iou_head_hidden_dim=32, seed=1),
    # Window 4 divides the grid; three blocks, two of them global.
    "tiny_b": dict(img_size=64, patch_size=8, encoder_embed_dim=48, encoder_depth=3, encoder_num_heads=3,
                   encoder_mlp_dim=96, global_attn_indexes=[1, 2], window_size=4, prompt_embed_dim=32,
                   mask_in_chans=8, decoder_depth=2, decoder_mlp_dim=48, iou_head_hidden_dim=24, seed=2),
}


def make_image(w, h, seed):
    """Shapes on a gradient: structure that a resize visibly changes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([(xx * 255 // max(w - 1, 1)), (yy * 255 // max(h - 1, 1)),
                    ((xx + yy) * 127 // max(w + h - 2, 1))], -1).astype(np.float64)
    for _ in range(4):
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        r = rng.uniform(0.1, 0.35) * min(w, h)
        col = rng.uniform(0, 255, 3)
        inside = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
        img[inside] = col
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sam-repo", required=True, help="checkout of facebookresearch/segment-anything")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "data", "sam"))
    args = ap.parse_args()
    sys.path.insert(0, args.sam_repo)
    import torch
    from PIL import Image
    from segment_anything import SamPredictor, modeling

    torch.set_num_threads(1)
    torch.manual_seed(0)  # the prompt encoder's Fourier matrix is drawn from the global RNG
    out = os.path.abspath(args.out)
    os.makedirs(os.path.join(out, "expected"), exist_ok=True)
    os.makedirs(os.path.join(out, "images"), exist_ok=True)

    models = {}
    for name, cfg in CONFIGS.items():
        sam = build(cfg, torch, modeling)
        models[name] = sam
        sd = sam.state_dict()  # an OrderedDict, exactly what the official .pth files hold
        torch.save(sd, os.path.join(out, name + ".pth"))
        torch.save(sd, os.path.join(out, name + "_legacy.pth"), _use_new_zipfile_serialization=False)
    # tiny_b also as a training-style wrapped checkpoint with DataParallel keys.
    wrapped = {"model": {"module." + k: v for k, v in models["tiny_b"].state_dict().items()}, "epoch": 3}
    torch.save(wrapped, os.path.join(out, "tiny_b_wrapped.pth"))

    images = {
        "square64": (64, 64, 11),    # longest side == model size: no resize
        "wide64": (64, 40, 12),      # no resize, padded
        "down150": (150, 97, 13),    # downscale (antialiased)
        "up37": (37, 50, 14),        # upscale
    }
    for name, (w, h, seed) in images.items():
        Image.fromarray(make_image(w, h, seed)).save(os.path.join(out, "images", name + ".png"))

    def prompts_for(w, h):
        return [
            dict(name="point", points=[[0.45 * w, 0.5 * h]], labels=[1], multimask=True),
            dict(name="points_neg", points=[[0.3 * w, 0.3 * h], [0.7 * w, 0.6 * h], [0.5 * w, 0.8 * h]],
                 labels=[1, 0, 1], multimask=False),
            dict(name="box", box=[0.2 * w, 0.15 * h, 0.8 * w, 0.7 * h], multimask=False),
            dict(name="box_points", box=[0.1 * w, 0.2 * h, 0.6 * w, 0.9 * h],
                 points=[[0.3 * w, 0.5 * h], [0.55 * w, 0.25 * h]], labels=[1, 0], multimask=True),
            dict(name="mask_input", points=[[0.45 * w, 0.5 * h]], labels=[1], multimask=False,
                 mask_from="point"),
        ]

    cases = []
    bf16_ious = []  # official bf16-autocast masks vs official fp32 masks
    for mname, sam in models.items():
        pred = SamPredictor(sam)
        for iname in images:
            img = np.array(Image.open(os.path.join(out, "images", iname + ".png")).convert("RGB"))
            h, w = img.shape[:2]
            with torch.autocast("cpu", dtype=torch.bfloat16):
                pred.set_image(img)
            features_bf16 = pred.features.float()
            pred.set_image(img)
            features_fp32 = pred.features
            if mname == "tiny_a":
                # The resized input exactly as the predictor feeds it (PIL bilinear).
                Image.fromarray(pred.transform.apply_image(img)).save(
                    os.path.join(out, "expected", f"resized_{iname}.png"))
            emb_file = f"{mname}_{iname}_embedding.npy"
            np.save(os.path.join(out, "expected", emb_file), pred.get_image_embedding().numpy().astype(np.float32))
            low_res_by_case = {}
            for p in prompts_for(w, h):
                kw = {}
                if "points" in p:
                    kw["point_coords"] = np.array(p["points"], dtype=np.float32)
                    kw["point_labels"] = np.array(p["labels"], dtype=np.int64)
                if "box" in p:
                    kw["box"] = np.array(p["box"], dtype=np.float32)
                mask_file = None
                if "mask_from" in p:
                    src = low_res_by_case[p["mask_from"]]
                    mask_in = src[[0]]  # the first of the multimask outputs, [1,4h,4w]
                    mask_file = f"{mname}_{iname}_{p['name']}_mask_in.npy"
                    np.save(os.path.join(out, "expected", mask_file), mask_in.astype(np.float32))
                    kw["mask_input"] = mask_in
                masks, iou, low = pred.predict(multimask_output=p["multimask"], **kw)
                if "mask_from" not in p:
                    pred.features = features_bf16
                    masks16, _, _ = pred.predict(multimask_output=p["multimask"], **kw)
                    pred.features = features_fp32
                    for a, b in zip(masks, masks16):
                        union = (a | b).sum()
                        bf16_ious.append(float((a & b).sum() / union) if union else 1.0)
                low_res_by_case[p["name"]] = low
                stem = f"{mname}_{iname}_{p['name']}"
                np.save(os.path.join(out, "expected", stem + "_masks.npy"), masks.astype(np.uint8))
                np.save(os.path.join(out, "expected", stem + "_iou.npy"), iou.astype(np.float32))
                np.save(os.path.join(out, "expected", stem + "_lowres.npy"), low.astype(np.float32))
                case = dict(model=mname, image=iname, prompt=p["name"], multimask=p["multimask"],
                            points=p.get("points", []), labels=p.get("labels", []), box=p.get("box"),
                            mask_input=mask_file, embedding=emb_file, masks=stem + "_masks.npy",
                            iou=stem + "_iou.npy", lowres=stem + "_lowres.npy")
                cases.append(case)
            # Batched prompts (predict_torch): three boxes at once.
            boxes = np.array([[0.1 * w, 0.1 * h, 0.5 * w, 0.6 * h], [0.4 * w, 0.3 * h, 0.9 * w, 0.95 * h],
                              [0.0, 0.0, w - 1.0, h - 1.0]], dtype=np.float32)
            tb = pred.transform.apply_boxes_torch(torch.as_tensor(boxes), (h, w))
            with torch.no_grad():
                m, iou, low = pred.predict_torch(None, None, boxes=tb, multimask_output=True)
            stem = f"{mname}_{iname}_batch_boxes"
            np.save(os.path.join(out, "expected", stem + "_masks.npy"), m.numpy().astype(np.uint8))
            np.save(os.path.join(out, "expected", stem + "_iou.npy"), iou.numpy().astype(np.float32))
            np.save(os.path.join(out, "expected", stem + "_lowres.npy"), low.numpy().astype(np.float32))
            cases.append(dict(model=mname, image=iname, prompt="batch_boxes", multimask=True, points=[], labels=[],
                              box=None, boxes=boxes.tolist(), mask_input=None, embedding=emb_file,
                              masks=stem + "_masks.npy", iou=stem + "_iou.npy", lowres=stem + "_lowres.npy"))
    meta = dict(generated_by="scripts/make_fixtures.py", torch=torch.__version__,
                configs={k: {kk: vv for kk, vv in v.items() if kk != "seed"} for k, v in CONFIGS.items()},
                images={k: {"width": v[0], "height": v[1]} for k, v in images.items()},
                official_bf16_vs_fp32=dict(masks=len(bf16_ious), mean_iou=float(np.mean(bf16_ious)),
                                           worst_iou=float(np.min(bf16_ious))),
                cases=cases)
    with open(os.path.join(out, "cases.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print(f"wrote {len(cases)} cases to {out}")


if __name__ == "__main__":
    main()
