#!/usr/bin/env python3
"""segment_anything's predictor_example notebook, step by step, with `import rsam`.

The notebook's code runs unchanged but for the import and the model: here
the bundled rsam-tiny (with its GaRA adapter) on a synthetic scene whose true
masks are known, so each step prints how well it did. Then what only rsam
has: the same prompt on the scene degraded with fog.

    PYTHONPATH=build/python python3 examples/python/segment.py [--out DIR]

--out writes each step's best mask as a PNG (needs Pillow).
"""
import argparse
import os

import numpy as np

import rsam


def make_scene(w=640, h=480):
    """A gradient with a red disc (the object the points ask for) and a green square."""
    y, x = np.mgrid[0:h, 0:w]
    image = np.stack([x * 200 // w + 30, y * 200 // h + 30, np.full_like(x, 120)], axis=-1).astype(np.uint8)
    disc = (x - 220) ** 2 + (y - 250) ** 2 < 110**2
    square = (x > 400) & (x < 560) & (y > 80) & (y < 240)
    image[disc] = (220, 50, 40)
    image[square] = (40, 190, 70)
    return image, disc, square


def iou(mask, truth):
    return float((mask & truth).sum() / max((mask | truth).sum(), 1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", help="folder for one PNG per step")
    args = ap.parse_args()
    saved = []

    def show(step, mask):
        if args.out:
            from PIL import Image

            os.makedirs(args.out, exist_ok=True)
            path = os.path.join(args.out, step + ".png")
            Image.fromarray(mask.astype(np.uint8) * 255).save(path)
            saved.append(path)

    image, disc, square = make_scene()

    # Selecting objects with SAM: load the model, make a predictor, set the image.
    sam = rsam.sam_model_registry["rsam_tiny"]()  # official: sam_model_registry["vit_h"](checkpoint=...)
    sam.to(device="cpu")
    predictor = rsam.SamPredictor(sam)
    predictor.set_image(image)
    print(f"rsam {rsam.__version__}: {sam}")

    # One point, three candidate masks with their predicted IoUs.
    input_point = np.array([[220, 250]])
    input_label = np.array([1])
    masks, scores, logits = predictor.predict(
        point_coords=input_point,
        point_labels=input_label,
        multimask_output=True,
    )
    print("masks", masks.shape, masks.dtype, "scores", scores.shape, "logits", logits.shape)
    for i, (mask, score) in enumerate(zip(masks, scores)):
        print(f"  mask {i + 1}: score {score:.3f}, IoU with the disc {iou(mask, disc):.3f}")
    show("1_point", masks[np.argmax(scores)])

    # Specifying a specific object with additional points, the best low-res
    # mask of the previous step as the mask input.
    input_point = np.array([[220, 250], [180, 300]])
    input_label = np.array([1, 1])
    mask_input = logits[np.argmax(scores), :, :]
    masks, _, _ = predictor.predict(
        point_coords=input_point,
        point_labels=input_label,
        mask_input=mask_input[None, :, :],
        multimask_output=False,
    )
    print(f"two points + mask input: {masks.shape}, IoU {iou(masks[0], disc):.3f}")
    show("2_two_points", masks[0])

    # A background point excludes a region.
    input_point = np.array([[220, 250], [480, 160]])
    input_label = np.array([1, 0])
    masks, _, _ = predictor.predict(
        point_coords=input_point,
        point_labels=input_label,
        mask_input=mask_input[None, :, :],
        multimask_output=False,
    )
    print(f"with a background point: IoU {iou(masks[0], disc):.3f}, on the square {iou(masks[0], square):.3f}")
    show("3_background", masks[0])

    # Specifying a specific object with a box.
    input_box = np.array([390, 70, 570, 250])
    masks, _, _ = predictor.predict(
        point_coords=None,
        point_labels=None,
        box=input_box[None, :],
        multimask_output=False,
    )
    print(f"box: IoU with the square {iou(masks[0], square):.3f}")
    show("4_box", masks[0])

    # Combining points and boxes.
    input_box = np.array([100, 130, 340, 370])
    input_point = np.array([[220, 250]])
    input_label = np.array([0])
    masks, _, _ = predictor.predict(
        point_coords=input_point,
        point_labels=input_label,
        box=input_box,
        multimask_output=False,
    )
    print(f"box + negative point: {masks.shape}")
    show("5_box_and_point", masks[0])

    # Batched prompt inputs: several boxes for one image in one decoder pass
    # (official predict_torch with transformed torch boxes; rsam takes NumPy
    # in the image's pixels).
    input_boxes = np.array([[100, 130, 340, 370], [390, 70, 570, 250]])
    masks, scores, _ = predictor.predict_batch(boxes=input_boxes, multimask_output=False)
    print(f"batched boxes: {masks.shape}, IoUs {iou(masks[0, 0], disc):.3f} {iou(masks[1, 0], square):.3f}")

    # The embedding the decoder works on.
    print("image embedding", predictor.get_image_embedding().shape)

    # rsam's own: the same click on the scene in fog, with the adapter
    # (trained for degraded images) and without it.
    foggy = rsam.degrade(image, "fog", severity=4, seed=0)
    base = rsam.load(no_adapter=True)
    for name, model in (("rsam-tiny + GaRA", sam), ("rsam-tiny alone", base)):
        p = rsam.SamPredictor(model)
        p.set_image(foggy)
        masks, scores, _ = p.predict(point_coords=np.array([[220, 250]]), point_labels=np.array([1]))
        print(f"fog, {name}: IoU with the disc {iou(masks[np.argmax(scores)], disc):.3f}")
    print(f"{len(rsam.list_corruptions())} corruptions: {', '.join(rsam.list_corruptions()[:6])}, ...")
    if saved:
        print("wrote", ", ".join(saved))


if __name__ == "__main__":
    main()
