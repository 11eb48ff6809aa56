#!/usr/bin/python3
"""Writes tests/data/coco/: a tiny COCO/LVIS instances file, three small PNG
images, the masks pycocotools gives for each annotation (expected/<id>.png,
0/255) and expected.json (the compressed RLE string of every annotation and of
many random polygons, plus decoded counts of hand-picked RLE strings).

The reference is pycocotools' C core, common/maskApi.c. pycocotools itself is
not packaged for Debian, so this script compiles maskApi.c (a checkout of
cocodataset/cocoapi, BSD licence; not vendored here) into a temporary shared
library and calls it through ctypes in exactly the sequence pycocotools'
COCO.annToMask does (frPyObjects -> rleFrPoly/rleFrBbox/uncompressed RLE,
merge, rleDecode in Fortran order). If pycocotools is importable, every result
is also cross-checked against it.

  /usr/bin/python3 scripts/make_data_fixtures.py --maskapi COCOAPI/common/maskApi.c

Needs numpy and PIL (Debian: python3-numpy, python3-pil) and a C compiler. The
tests never run Python; rerun this only to change the fixtures."""

import argparse
import ctypes
import json
import os
import random
import shutil
import subprocess
import tempfile

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "data", "coco")


class RLE(ctypes.Structure):
    _fields_ = [("h", ctypes.c_ulong), ("w", ctypes.c_ulong), ("m", ctypes.c_ulong),
                ("cnts", ctypes.POINTER(ctypes.c_uint))]


class MaskApi:
    """maskApi.c through ctypes; RLEs are handled as (h, w, counts list)."""

    def __init__(self, source):
        self.tmp = tempfile.mkdtemp()
        lib = os.path.join(self.tmp, "maskapi.so")
        subprocess.check_call(["cc", "-O1", "-shared", "-fPIC", "-o", lib, source,
                               "-I", os.path.dirname(source), "-lm"])
        self.c = ctypes.CDLL(lib)
        self.c.rleToString.restype = ctypes.c_void_p

    def _mk(self, h, w, counts):
        r = RLE()
        arr = (ctypes.c_uint * max(len(counts), 1))(*counts)
        self.c.rleInit(ctypes.byref(r), ctypes.c_ulong(h), ctypes.c_ulong(w),
                       ctypes.c_ulong(len(counts)), arr)
        return r

    @staticmethod
    def _out(r):
        return (r.h, r.w, [r.cnts[i] for i in range(r.m)])

    def fr_poly(self, xy, h, w):
        r = RLE()
        arr = (ctypes.c_double * max(len(xy), 1))(*xy)
        self.c.rleFrPoly(ctypes.byref(r), arr, ctypes.c_ulong(len(xy) // 2),
                         ctypes.c_ulong(h), ctypes.c_ulong(w))
        return self._out(r)

    def fr_bbox(self, bb, h, w):
        r = RLE()
        arr = (ctypes.c_double * 4)(*bb[:4])
        self.c.rleFrBbox(ctypes.byref(r), arr, ctypes.c_ulong(h), ctypes.c_ulong(w), ctypes.c_ulong(1))
        return self._out(r)

    def fr_string(self, s, h, w):
        r = RLE()
        self.c.rleFrString(ctypes.byref(r), ctypes.c_char_p(s.encode()), ctypes.c_ulong(h), ctypes.c_ulong(w))
        return self._out(r)

    def to_string(self, rle):
        r = self._mk(*rle)
        p = self.c.rleToString(ctypes.byref(r))
        return ctypes.string_at(p).decode()

    def merge(self, rles):
        arr = (RLE * len(rles))(*[self._mk(*x) for x in rles])
        out = RLE()
        self.c.rleMerge(arr, ctypes.byref(out), ctypes.c_ulong(len(rles)), 0)
        return self._out(out)

    def encode(self, mask):
        h, w = mask.shape
        buf = np.asfortranarray(mask.astype(np.uint8))
        r = RLE()
        self.c.rleEncode(ctypes.byref(r), buf.ctypes.data_as(ctypes.c_void_p),
                         ctypes.c_ulong(h), ctypes.c_ulong(w), ctypes.c_ulong(1))
        return self._out(r)

    def decode(self, rle):
        h, w, _ = rle
        r = self._mk(*rle)
        buf = (ctypes.c_ubyte * (h * w))()
        self.c.rleDecode(ctypes.byref(r), buf, ctypes.c_ulong(1))
        return np.frombuffer(bytes(buf), dtype=np.uint8).reshape((h, w), order="F")

    def ann_to_rle(self, segm, h, w):
        """COCO.annToRLE with frPyObjects' dispatch, quirks included."""
        if isinstance(segm, list):
            if len(segm[0]) == 4:  # frPyObjects treats 4-number lists as [x, y, w, h] boxes
                rles = [self.fr_bbox(p, h, w) for p in segm]
            else:
                rles = [self.fr_poly(p, h, w) for p in segm]
            return self.merge(rles)
        if isinstance(segm["counts"], list):
            return (segm["size"][0], segm["size"][1], list(segm["counts"]))
        return self.fr_string(segm["counts"], segm["size"][0], segm["size"][1])


def cross_check(api, anns, imgs):
    try:
        from pycocotools import mask as mu  # noqa
    except ImportError:
        print("pycocotools not importable: maskApi.c via ctypes is the only reference")
        return
    for a in anns:
        im = imgs[a["image_id"]]
        segm = a["segmentation"]
        h, w = im["height"], im["width"]
        if isinstance(segm, list):
            r = mu.merge(mu.frPyObjects(segm, h, w))
        elif isinstance(segm["counts"], list):
            r = mu.frPyObjects(segm, h, w)
        else:
            r = segm
        assert (mu.decode(r) == api.decode(api.ann_to_rle(segm, h, w))).all(), a["id"]
    print("cross-checked against pycocotools")


def blob(h, w, rng, n=3):
    m = np.zeros((h, w), np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(n):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(2, min(h, w) / 3)
        m |= (((yy - cy) ** 2 + (xx - cx) ** 2) < r * r).astype(np.uint8)
    return m


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--maskapi", required=True, help="path to cocoapi's common/maskApi.c")
    args = ap.parse_args()
    api = MaskApi(os.path.abspath(args.maskapi))
    rng = np.random.RandomState(7)
    prng = random.Random(11)

    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(os.path.join(OUT, "images"))
    os.makedirs(os.path.join(OUT, "expected"))

    images = [
        {"id": 1, "file_name": "a.png", "height": 36, "width": 48},
        {"id": 2, "file_name": "b.png", "height": 40, "width": 30},
        # LVIS style: no file_name, the file is named by coco_url's basename.
        {"id": 3, "coco_url": "http://example.invalid/val2017/c.png", "height": 20, "width": 24},
    ]
    for im in images:
        name = im.get("file_name") or im["coco_url"].rsplit("/", 1)[1]
        px = rng.randint(0, 256, (im["height"], im["width"], 3)).astype(np.uint8)
        Image.fromarray(px).save(os.path.join(OUT, "images", name))
    imgs = {im["id"]: im for im in images}

    crowd_mask = blob(36, 48, rng, 2)
    crowd_counts = api.encode(crowd_mask)[2]
    str_mask = blob(40, 30, rng, 4)
    str_rle = api.to_string(api.encode(str_mask))
    anns = [
        {"id": 11, "image_id": 1, "category_id": 1, "iscrowd": 0,
         "segmentation": [[3.2, 4.7, 30.9, 8.1, 17.45, 29.6]]},
        {"id": 12, "image_id": 1, "category_id": 2, "iscrowd": 0,  # two parts, one leaving the image
         "segmentation": [[35.5, 2.0, 47.9, 2.0, 47.9, 14.25, 35.5, 14.25],
                          [-3.0, 25.0, 12.6, 22.2, 20.0, 40.5, 4.4, 38.0]]},
        {"id": 13, "image_id": 1, "category_id": 3, "iscrowd": 1,
         "segmentation": {"size": [36, 48], "counts": crowd_counts}},
        {"id": 21, "image_id": 2, "category_id": 1, "iscrowd": 0,
         "segmentation": {"size": [40, 30], "counts": str_rle}},
        {"id": 22, "image_id": 2, "category_id": 4, "iscrowd": 0,  # [x, y, w, h]: frPyObjects' box quirk
         "segmentation": [[5.3, 6.8, 12.4, 20.1]]},
        {"id": 31, "image_id": 3, "category_id": 5,  # LVIS: no iscrowd
         "segmentation": [[2.0, 2.0, 21.0, 3.0, 12.0, 17.5], [1.0, 15.0, 5.0, 15.0, 5.0, 19.0, 1.0, 19.0]]},
        {"id": 32, "image_id": 3, "category_id": 5,  # degenerate: decodes to an empty mask
         "segmentation": [[7.0, 7.0, 7.0, 7.0, 7.0, 7.0]]},
    ]
    expected = {"annotations": {}, "polygons": [], "strings": []}
    for a in anns:
        im = imgs[a["image_id"]]
        rle = api.ann_to_rle(a["segmentation"], im["height"], im["width"])
        m = api.decode(rle)
        Image.fromarray(m * 255).save(os.path.join(OUT, "expected", "%d.png" % a["id"]))
        expected["annotations"][str(a["id"])] = {"rle": api.to_string(rle), "area": int(m.sum())}
    cross_check(api, anns, imgs)

    # Random polygons, including fractional, out-of-image, collinear and tiny ones.
    for i in range(60):
        h, w = prng.randint(1, 70), prng.randint(1, 70)
        k = prng.randint(1, 9)
        xy = []
        for _ in range(k):
            xy += [round(prng.uniform(-5, w + 5), prng.choice([0, 1, 2, 3])),
                   round(prng.uniform(-5, h + 5), prng.choice([0, 1, 2, 3]))]
        rle = api.fr_poly(xy, h, w)
        expected["polygons"].append({"h": h, "w": w, "xy": xy, "rle": api.to_string(rle),
                                     "area": int(sum(rle[2][1::2]))})
    # Strings with big counts and negative deltas (the 0x10 sign bit path).
    for h, w in [(1, 1), (7, 9), (300, 500), (1500, 2250)]:
        m = blob(h, w, rng, 5)
        rle = api.encode(m)
        s = api.to_string(rle)
        back = api.fr_string(s, h, w)
        assert back[2] == rle[2]
        expected["strings"].append({"h": h, "w": w, "counts": rle[2], "rle": s})

    with open(os.path.join(OUT, "instances.json"), "w") as f:
        json.dump({"images": images, "annotations": anns,
                   "categories": [{"id": i, "name": "c%d" % i} for i in range(1, 6)]}, f, indent=1)
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
    shutil.rmtree(api.tmp)
    print("wrote", OUT)


if __name__ == "__main__":
    main()
