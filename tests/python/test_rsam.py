"""The Python module against the official predictor's fixtures (tests/data/sam,
made by scripts/make_fixtures.py with segment_anything), against the rsam CLI
(the C++ predictor) on the bundled model, and its refusals.

Run by ctest (tests/python/CMakeLists.txt) with Debian's python3 -m pytest,
PYTHONPATH pointing at the built module and RSAM_BINARY at the CLI.
"""
import json
import os
import subprocess
import threading

import numpy as np
import pytest
from PIL import Image

import rsam

DATA = os.path.join(os.environ.get("RSAM_TEST_DATA", os.path.join(os.path.dirname(__file__), "..", "data")), "sam")


def fixture(name):
    return np.load(os.path.join(DATA, "expected", name))


def image(name):
    return np.array(Image.open(os.path.join(DATA, "images", name + ".png")).convert("RGB"))


def scene(w=320, h=240):
    """Two discs on a gradient: something for the bundled model to segment."""
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([x * 255 // w, y * 255 // h, np.full_like(x, 90)], axis=-1).astype(np.uint8)
    img[(x - w // 3) ** 2 + (y - h // 2) ** 2 < (h // 5) ** 2] = (230, 40, 40)
    img[(x - 2 * w // 3) ** 2 + (y - h // 3) ** 2 < (h // 7) ** 2] = (30, 200, 60)
    return img


@pytest.fixture(scope="module")
def bundled():
    return rsam.load()


def test_official_fixture_cases():
    cases = json.load(open(os.path.join(DATA, "cases.json")))["cases"]
    models, preds = {}, {}
    for c in cases:
        key = (c["model"], c["image"])
        if key not in preds:
            if c["model"] not in models:
                models[c["model"]] = rsam.load(os.path.join(DATA, c["model"] + ".pth"))
            p = rsam.SamPredictor(models[c["model"]])
            p.set_image(image(c["image"]))
            emb = p.get_image_embedding()
            want = fixture(c["embedding"])
            assert emb.dtype == np.float32 and emb.shape == want.shape
            np.testing.assert_allclose(emb, want, atol=1e-3)
            preds[key] = p
        p = preds[key]
        if "boxes" in c:
            masks, iou, low = p.predict_batch(boxes=np.array(c["boxes"]), multimask_output=c["multimask"])
        else:
            masks, iou, low = p.predict(
                point_coords=np.array(c["points"]) if c["points"] else None,
                point_labels=np.array(c["labels"]) if c["labels"] else None,
                box=np.array(c["box"]) if c["box"] is not None else None,
                mask_input=fixture(c["mask_input"]) if c["mask_input"] else None,
                multimask_output=c["multimask"],
            )
        want_masks, want_iou, want_low = fixture(c["masks"]), fixture(c["iou"]), fixture(c["lowres"])
        assert masks.dtype == np.bool_ and masks.shape == want_masks.shape, c["prompt"]
        assert iou.dtype == np.float32 and iou.shape == want_iou.shape
        assert low.dtype == np.float32 and low.shape == want_low.shape
        np.testing.assert_allclose(low, want_low, atol=1e-3)
        np.testing.assert_allclose(iou, want_iou, atol=1e-3)
        # Pixels on a logit's zero crossing may flip (tests/model/test_parity.cpp).
        assert np.mean(masks != want_masks.astype(bool)) <= 0.01


def test_equals_the_cli_on_the_bundled_model(bundled, tmp_path):
    """The C++ predictor as the rsam binary runs it: same embedding, logits, scores."""
    img = scene()
    Image.fromarray(img).save(tmp_path / "scene.png")
    cmd = [os.environ["RSAM_BINARY"], "segment", "--image", str(tmp_path / "scene.png"), "--point", "107,120",
           "--multimask", "--json", "--precision", "fp32", "--logits-out", str(tmp_path / "low.npy"),
           "--embedding-out", str(tmp_path / "emb.npy")]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    summary = json.loads(out)
    assert summary["adapter"] == "gara" and bundled.adapter == "gara"
    assert summary["precision"] == bundled.precision == "fp32"
    p = rsam.SamPredictor(bundled)
    p.set_image(img)
    masks, iou, low = p.predict(point_coords=np.array([[107, 120]]), point_labels=np.array([1]))
    assert masks.shape == (3, 240, 320) and low.shape == (3, 256, 256)
    assert p.get_image_embedding().shape == (1, 128, 64, 64)
    np.testing.assert_allclose(p.get_image_embedding(), np.load(tmp_path / "emb.npy"), atol=1e-4)
    np.testing.assert_allclose(low, np.load(tmp_path / "low.npy"), atol=1e-4)
    np.testing.assert_allclose(iou, [m["score"] for m in summary["masks"]], atol=1e-4)
    assert [int(m.sum()) for m in masks] == [m["area"] for m in summary["masks"]]


def test_logits_batches_and_image_formats(bundled):
    img = scene()
    p = rsam.SamPredictor(bundled)
    assert not p.is_image_set
    p.set_image(img)
    assert p.is_image_set and p.original_size == (240, 320) and p.model is bundled
    pts, labels = np.array([[107.0, 120.0], [200, 60]]), np.array([1, 0])
    masks, iou, low = p.predict(pts, labels, multimask_output=False)
    logits, iou2, low2 = p.predict(pts, labels, multimask_output=False, return_logits=True)
    assert masks.shape == (1, 240, 320) and logits.dtype == np.float32
    np.testing.assert_array_equal(logits > 0, masks)
    np.testing.assert_array_equal(iou, iou2)
    # The official refinement loop: the best low-res mask back in as mask_input.
    refined, _, _ = p.predict(pts, labels, mask_input=low[np.argmax(iou)][None, :, :], multimask_output=False)
    assert refined.shape == (1, 240, 320)
    # Batched prompts [B, N, 2] equal one by one.
    bpts = np.array([[[107, 120]], [[213, 80]], [[40, 200]]], dtype=np.float32)
    bm, bi, bl = p.predict_batch(bpts, np.ones((3, 1)), multimask_output=True)
    assert bm.shape == (3, 3, 240, 320) and bi.shape == (3, 3) and bl.shape == (3, 3, 256, 256)
    for k in range(3):
        _, i1, l1 = p.predict(bpts[k], np.ones(1))
        np.testing.assert_allclose(bl[k], l1, atol=1e-4)
        np.testing.assert_allclose(bi[k], i1, atol=1e-4)
    boxes = np.array([[60, 60, 160, 180], [170, 20, 270, 120]])
    bm, bi, bl = p.predict_batch(boxes=boxes, multimask_output=False)
    assert bm.shape == (2, 1, 240, 320)
    # BGR input is reordered: the same embedding as RGB.
    emb = p.get_image_embedding()
    q = rsam.SamPredictor(bundled)
    q.set_image(np.ascontiguousarray(img[:, :, ::-1]), image_format="BGR")
    np.testing.assert_array_equal(q.get_image_embedding(), emb)
    p.reset_image()
    assert not p.is_image_set


def test_bad_inputs_raise(bundled):
    p = rsam.SamPredictor(bundled)
    with pytest.raises(rsam.Error, match="set_image"):
        p.predict(point_coords=np.array([[1, 1]]), point_labels=np.array([1]))
    with pytest.raises(rsam.Error, match="uint8"):
        p.set_image(scene().astype(np.float32))
    with pytest.raises(rsam.Error, match="HxWx3"):
        p.set_image(scene()[:, :, 0])
    with pytest.raises(rsam.Error, match="image_format"):
        p.set_image(scene(), image_format="HSV")
    p.set_image(scene())
    one = np.array([1])
    cases = [
        (dict(point_coords=np.array([[400, 10]]), point_labels=one), "outside"),
        (dict(point_coords=np.array([[-1, 10]]), point_labels=one), "outside"),
        (dict(point_coords=np.array([[np.nan, 10]]), point_labels=one), "finite"),
        (dict(point_coords=np.array([[10, 10]])), "point_labels"),
        (dict(point_coords=np.array([10, 10]), point_labels=one), "Nx2"),
        (dict(point_coords=np.array([[10, 10]]), point_labels=np.array([1, 1])), "length-1"),
        (dict(point_coords=np.array([[10, 10]]), point_labels=np.array([5])), "label"),
        (dict(point_coords=np.array([["a", "b"]]), point_labels=one), "numeric"),
        (dict(box=np.array([1, 2, 3])), "length-4"),
        (dict(box=np.array([50, 50, 10, 10])), "x0<=x1"),
        (dict(mask_input=np.zeros((1, 64, 64), np.float32)), "1x256x256"),
        (dict(), "at least one prompt"),
    ]
    for kwargs, message in cases:
        with pytest.raises(rsam.Error, match=message):
            p.predict(**kwargs)
    with pytest.raises(rsam.Error, match="batch size"):
        p.predict_batch(np.zeros((2, 1, 2)), np.ones((3, 1)))
    with pytest.raises(rsam.Error):
        rsam.load("/nonexistent/model.pth")
    with pytest.raises(rsam.Error, match="device"):
        rsam.load(os.path.join(DATA, "tiny_a.pth"), device="toaster")
    assert issubclass(rsam.Error, RuntimeError)
    try:
        rsam.load(os.path.join(DATA, "cases.json"))
    except rsam.Error as e:
        assert "\n" not in str(e)


def test_registry_and_adapters(bundled):
    tiny = os.path.join(DATA, "tiny_a.pth")
    assert rsam.sam_model_registry["default"](checkpoint=tiny).image_size == 64
    with pytest.raises(rsam.Error, match="not vit_b"):
        rsam.sam_model_registry["vit_b"](checkpoint=tiny)
    with pytest.raises(rsam.Error, match="checkpoint"):
        rsam.sam_model_registry["vit_h"]()
    base = rsam.sam_model_registry["rsam_tiny"](no_adapter=True)
    assert base.adapter == "" and bundled.adapter == "gara"
    # An adapter for another base is refused, the model unchanged.
    small = rsam.load(tiny)
    with pytest.raises(rsam.Error, match="different base"):
        small.load_adapter(bundled.checkpoint.replace("rsam-tiny.safetensors", "rsam-tiny-gara.safetensors"))
    assert small.adapter == ""
    base.load_adapter(bundled.checkpoint.replace("rsam-tiny.safetensors", "rsam-tiny-gara.safetensors"))
    assert base.adapter == "gara"
    a, b = rsam.SamPredictor(base), rsam.SamPredictor(bundled)
    a.set_image(scene())
    b.set_image(scene())
    np.testing.assert_array_equal(a.get_image_embedding(), b.get_image_embedding())
    assert base.to("cpu") is base and base.device == "cpu"


def test_degrade():
    names = rsam.list_corruptions()
    assert "fog" in names and len(names) == len(rsam.corruption_info())
    img = scene(96, 64)
    fog = rsam.degrade(img, "fog", severity=3, seed=0)
    assert fog.dtype == np.uint8 and fog.shape == img.shape and not np.array_equal(fog, img)
    np.testing.assert_array_equal(fog, rsam.degrade(img, "fog", severity=3, seed=0))
    assert not np.array_equal(rsam.degrade(img, "gauss_noise", seed=1), rsam.degrade(img, "gauss_noise", seed=2))
    with pytest.raises(rsam.Error, match="unknown corruption"):
        rsam.degrade(img, "no_such_thing")
    with pytest.raises(rsam.Error, match="severity"):
        rsam.degrade(img, "fog", severity=0)
    with pytest.raises(rsam.Error, match="uint8"):
        rsam.degrade(img.astype(np.int32), "fog")


def test_predictors_run_in_threads(bundled):
    """The GIL is released while the model runs: two predictors in two
    threads both finish with the answers a single thread gives."""
    img = scene()
    ref = rsam.SamPredictor(bundled)
    ref.set_image(img)
    want = ref.get_image_embedding()
    got = [None, None]

    def run(k):
        p = rsam.SamPredictor(bundled)
        p.set_image(img)
        got[k] = p.get_image_embedding()

    threads = [threading.Thread(target=run, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for g in got:
        np.testing.assert_allclose(g, want, atol=1e-5)


def test_automatic_mask_generator():
    """Official record format in every output mode (the numbers themselves are
    held to the C++ generator by tests/api)."""
    model = rsam.load(os.path.join(DATA, "tiny_b.pth"))
    img = image("down150")
    kwargs = dict(points_per_side=8, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    binary = rsam.SamAutomaticMaskGenerator(model, **kwargs).generate(img)
    assert binary, "nothing generated"
    for r in binary:
        assert set(r) == {"segmentation", "area", "bbox", "predicted_iou", "point_coords", "stability_score", "crop_box"}
        seg = r["segmentation"]
        assert seg.dtype == np.bool_ and seg.shape == (97, 150) and int(seg.sum()) == r["area"]
        x, y, w, h = r["bbox"]
        if r["area"]:
            ys, xs = np.nonzero(seg)
            assert (x, y, x + w, y + h) == (xs.min(), ys.min(), xs.max(), ys.max())
        assert r["crop_box"] == [0, 0, 150, 97] and len(r["point_coords"]) == 1
    rle = rsam.SamAutomaticMaskGenerator(model, output_mode="uncompressed_rle", **kwargs).generate(img)
    assert len(rle) == len(binary)
    for a, b in zip(rle, binary):
        assert a["segmentation"]["size"] == [97, 150]
        # COCO's uncompressed RLE: runs over the column-major pixels, zeros first.
        flat = np.repeat(np.arange(len(a["segmentation"]["counts"])) % 2, a["segmentation"]["counts"]).astype(bool)
        np.testing.assert_array_equal(flat.reshape(150, 97).T, b["segmentation"])
        assert a["predicted_iou"] == b["predicted_iou"]
    coco = rsam.SamAutomaticMaskGenerator(model, output_mode="coco_rle", **kwargs).generate(img)
    assert isinstance(coco[0]["segmentation"]["counts"], str)
    with pytest.raises(rsam.Error):
        rsam.SamAutomaticMaskGenerator(model, output_mode="png")
    with pytest.raises(rsam.Error):
        rsam.SamAutomaticMaskGenerator(model, points_per_side=None)
    with pytest.raises(rsam.Error, match="uint8"):
        rsam.SamAutomaticMaskGenerator(model).generate(img.astype(np.float64))


def test_enhancer():
    enhancer = os.path.join(DATA, "..", "glesam", "enhancer.json")
    plain = rsam.load(os.path.join(DATA, "tiny_a.pth"))
    model = rsam.load(os.path.join(DATA, "tiny_a.pth"), enhancer=enhancer)
    assert model.enhancer == enhancer and plain.enhancer == ""
    a, b = rsam.SamPredictor(model), rsam.SamPredictor(plain)
    a.set_image(image("square64"))
    b.set_image(image("square64"))
    assert a.get_image_embedding().shape == b.get_image_embedding().shape
    assert not np.array_equal(a.get_image_embedding(), b.get_image_embedding())
    masks, iou, low = a.predict(point_coords=np.array([[30, 30]]), point_labels=np.array([1]))
    assert masks.shape == (3, 64, 64)
    with pytest.raises(rsam.Error):
        plain.load_enhancer(os.path.join(DATA, "missing.json"))
