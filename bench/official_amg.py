#!/usr/bin/env python3
"""Times the official SamAutomaticMaskGenerator, the encode (set_image) and
the generation (everything else in generate()) separately, with a profile of
where the generation time goes, for a same-run ratio against `rsam amg`
(bench/amg_compare.sh runs both).

    /usr/bin/python3 bench/official_amg.py --sam-repo PATH --model vit_b \
        --image scene.png --threads 2 [--save-checkpoint vit_b_random.pth]

--model vit_b: the official ViT-B with random weights (torch.manual_seed(0)),
saved with --save-checkpoint so rsam runs the very same weights.
--model rsam-tiny: models/rsam-tiny.safetensors in the official Sam.
--write-scene PATH writes the benchmark picture (1024x1024) and exits.
Prints one JSON line. Needs Debian's python3-torch, python3-torchvision and
python3-opencv and a checkout of facebookresearch/segment-anything.
"""
import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "scripts"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sam-repo", required=True)
    ap.add_argument("--model", default="vit_b", choices=["vit_b", "rsam-tiny"])
    ap.add_argument("--image")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--points-per-side", type=int, default=32)
    ap.add_argument("--save-checkpoint")
    ap.add_argument("--write-scene")
    args = ap.parse_args()
    sys.path.insert(0, args.sam_repo)
    import cv2
    import torch
    import make_amg_fixtures as fx

    if args.write_scene:
        cv2.imwrite(args.write_scene, cv2.cvtColor(fx.scene(11, 1024, 1024), cv2.COLOR_RGB2BGR))
        return
    import segment_anything.automatic_mask_generator as amgmod
    from segment_anything import SamAutomaticMaskGenerator, modeling, sam_model_registry

    torch.set_num_threads(args.threads)
    if args.model == "vit_b":
        torch.manual_seed(0)
        sam = sam_model_registry["vit_b"]()
        if args.save_checkpoint:
            torch.save(sam.state_dict(), args.save_checkpoint)
    else:
        cfg = json.load(open(os.path.join(fx.ROOT, "models", "rsam-tiny.json")))
        sam = fx.build_sam(cfg, torch, modeling)
        st = fx.read_safetensors(os.path.join(fx.ROOT, "models", "rsam-tiny.safetensors"))
        sam.load_state_dict({k: torch.from_numpy(v) for k, v in st.items()})
    sam.eval()
    img = cv2.cvtColor(cv2.imread(args.image), cv2.COLOR_BGR2RGB)

    prof = {}

    def timed(name, fn):
        def wrapper(*a, **k):
            t = time.perf_counter()
            r = fn(*a, **k)
            prof[name] = prof.get(name, 0.0) + (time.perf_counter() - t) * 1000
            return r
        return wrapper

    gen = SamAutomaticMaskGenerator(sam, points_per_side=args.points_per_side)
    gen.predictor.set_image = timed("encode_ms", gen.predictor.set_image)
    sam.mask_decoder.forward = timed("decode_ms", sam.mask_decoder.forward)
    sam.postprocess_masks = timed("upsample_ms", sam.postprocess_masks)
    for name in ["calculate_stability_score", "batched_mask_to_box", "is_box_near_crop_edge",
                 "mask_to_rle_pytorch", "uncrop_masks"]:
        setattr(amgmod, name, timed("masks_ms", getattr(amgmod, name)))
    amgmod.batched_nms = timed("nms_ms", amgmod.batched_nms)
    t = time.perf_counter()
    masks = gen.generate(img)
    total = (time.perf_counter() - t) * 1000
    prof["other_ms"] = total - sum(prof.values())
    print(json.dumps({"impl": "official-python", "model": args.model, "threads": args.threads,
                      "points_per_side": args.points_per_side, "masks": len(masks),
                      "encode_ms": prof["encode_ms"], "generate_ms": total - prof["encode_ms"], "profile": prof}))


if __name__ == "__main__":
    main()
