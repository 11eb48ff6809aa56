#!/usr/bin/python3
"""Writes the small fixtures under tests/data/io/ (and fuzz seeds under
fuzz/corpus/) that test_io checks src/io against. Needs torch and numpy, so
run it with Debian's interpreter: /usr/bin/python3 scripts/make_io_fixtures.py
The tests themselves never run Python; rerun this only to change fixtures."""

import io
import json
import os
import pickle
import shutil
import struct
import zipfile
from collections import OrderedDict

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "data", "io")
CORPUS = os.path.join(ROOT, "fuzz", "corpus")

DTYPE_NAMES = {
    torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
    torch.uint8: "U8", torch.bool: "BOOL",
}


def raw_hex(t):
    """Contiguous little-endian bytes of a tensor, as hex (bf16 has no numpy dtype)."""
    t = t.detach().contiguous()
    if t.dtype == torch.bfloat16:
        b = t.view(torch.int16).numpy().tobytes()
    else:
        b = t.numpy().tobytes()
    return b.hex()


def describe(sd):
    return [{"key": k, "dtype": DTYPE_NAMES[v.dtype], "shape": list(v.shape), "hex": raw_hex(v)}
            for k, v in sd.items()]


def state_dict():
    torch.manual_seed(0)
    # A real module's state_dict carries `_metadata`, which pickles as BUILD.
    sd = torch.nn.Linear(4, 3).state_dict()
    base = torch.randn(4, 6)
    sd["encoder.norm"] = torch.randn(3).half()
    sd["decoder.weight"] = torch.randn(2, 3).to(torch.bfloat16)
    sd["view.transposed"] = base.t()            # non-contiguous, shares base's storage
    sd["view.slice"] = base[1:3, 2:5]           # storage offset + strides
    sd["view.row"] = base[3]                    # third view of the same storage
    sd["scalar"] = torch.tensor(3.5, dtype=torch.float64)
    sd["counts"] = torch.arange(5, dtype=torch.int64) - 2
    sd["ints"] = torch.tensor([-1, 2, 70000], dtype=torch.int32)
    sd["bytes"] = torch.tensor([0, 255, 7], dtype=torch.uint8)
    sd["mask"] = torch.tensor([True, False, True])
    sd["empty"] = torch.zeros(0, 3)
    sd["param"] = torch.nn.Parameter(torch.randn(2))  # pickles via _rebuild_parameter
    return sd


def expected_of(sd):
    # The loader returns plain tensors; Parameters compare by their data.
    return describe(OrderedDict((k, v.data if isinstance(v, torch.nn.Parameter) else v) for k, v in sd.items()))


def zip_with_pickle(path, pkl):
    """A torch-style zip whose data.pkl is the given (hostile) pickle."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for name, data in (("archive/data.pkl", pkl), ("archive/version", b"3\n")):
            z.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data)  # reproducible


def legacy_with_pickle(path, pkl):
    with open(path, "wb") as f:
        pickle.dump(0x1950a86a20f9469cfc6c, f, protocol=2)
        pickle.dump(1001, f, protocol=2)
        pickle.dump({"protocol_version": 1001, "little_endian": True,
                     "type_sizes": {"short": 2, "int": 4, "long": 8}}, f, protocol=2)
        f.write(pkl)


def write_safetensors(path, tensors, metadata):
    header, blobs, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    for name, t in tensors.items():
        b = bytes.fromhex(raw_hex(t))
        header[name] = {"dtype": DTYPE_NAMES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def main():
    os.makedirs(OUT, exist_ok=True)
    expected = {}

    sd = state_dict()
    torch.save(sd, os.path.join(OUT, "sd_zip.pth"))
    torch.save(sd, os.path.join(OUT, "sd_legacy.pth"), _use_new_zipfile_serialization=False)
    expected["sd"] = expected_of(sd)

    small = OrderedDict([("w", torch.arange(6, dtype=torch.float32).reshape(2, 3)),
                         ("b", torch.tensor([0.5, -1.0], dtype=torch.float16))])
    torch.save({"model": small, "epoch": 7, "optimizer": {"lr": 0.1}},
               os.path.join(OUT, "wrapped_model.pth"))
    torch.save({"state_dict": small}, os.path.join(OUT, "wrapped_state_dict.pth"),
               _use_new_zipfile_serialization=False)
    torch.save(OrderedDict(("module." + k, v) for k, v in small.items()), os.path.join(OUT, "module_prefix.pth"))
    torch.save({"w": small["w"], "epoch": 3}, os.path.join(OUT, "non_tensor.pth"))
    # Other pickle protocols: 4 adds FRAME/MEMOIZE/STACK_GLOBAL, 1 spells the legacy magic as text.
    torch.save(small, os.path.join(OUT, "protocol4.pth"), pickle_protocol=4)
    torch.save(small, os.path.join(OUT, "protocol1_legacy.pth"), pickle_protocol=1,
               _use_new_zipfile_serialization=False)
    expected["small"] = describe(small)

    # Hostile pickles, assembled by hand and never unpickled here.
    evil = b"\x80\x02cos\nsystem\nX\x0b\x00\x00\x00echo pwned!\x85R."
    zip_with_pickle(os.path.join(OUT, "evil_global.pth"), evil)
    legacy_with_pickle(os.path.join(OUT, "evil_global_legacy.pth"), evil)
    stack_global = b"\x80\x04\x8c\x08builtins\x8c\x04eval\x93X\x04\x00\x00\x001+1\x85R."
    zip_with_pickle(os.path.join(OUT, "evil_stack_global.pth"), stack_global)

    st_tensors = OrderedDict([("z.first", torch.randn(2, 2)),
                              ("a.half", torch.randn(3).half()),
                              ("m.bf16", torch.randn(1, 2).to(torch.bfloat16)),
                              ("ids", torch.tensor([1, -2], dtype=torch.int64)),
                              ("flags", torch.tensor([True, False])),
                              ("none", torch.zeros(0))])
    write_safetensors(os.path.join(OUT, "tensors.safetensors"), st_tensors,
                      {"format": "pt", "note": "rsam fixture"})
    expected["safetensors"] = describe(st_tensors)
    expected["safetensors_metadata"] = {"format": "pt", "note": "rsam fixture"}

    np.save(os.path.join(OUT, "f4.npy"), np.array([[1.5, -2.0, 3.25], [0.0, 1e-3, -7.0]], dtype="<f4"))
    np.save(os.path.join(OUT, "f8.npy"), np.array([0.1, -1e10, 2.5], dtype="<f8"))
    np.save(os.path.join(OUT, "u1.npy"), np.array([[0, 1], [128, 255]], dtype=np.uint8))
    np.save(os.path.join(OUT, "bool.npy"), np.array([True, False, True, True]))
    np.save(os.path.join(OUT, "f2.npy"), np.array([1.0, -0.5, 65504.0, 6e-8], dtype="<f2"))
    np.save(os.path.join(OUT, "i8.npy"), np.array([-3, 4], dtype="<i8"))
    np.save(os.path.join(OUT, "scalar.npy"), np.array(2.5, dtype="<f4"))
    np.save(os.path.join(OUT, "fortran.npy"), np.asfortranarray(np.arange(6, dtype="<f4").reshape(2, 3)))
    np.save(os.path.join(OUT, "big_endian.npy"), np.arange(3, dtype=">f4"))
    with open(os.path.join(OUT, "v2.npy"), "wb") as f:  # format 2.0 header (4-byte length)
        np.lib.format.write_array(f, np.arange(4, dtype="<f4"), version=(2, 0))

    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
        f.write("\n")

    # Fuzz seeds: the valid fixtures, by loader.
    seeds = {"pth": ["sd_zip.pth", "sd_legacy.pth", "wrapped_model.pth", "wrapped_state_dict.pth",
                     "module_prefix.pth", "protocol4.pth", "protocol1_legacy.pth", "evil_global.pth",
                     "evil_global_legacy.pth", "evil_stack_global.pth"],
             "safetensors": ["tensors.safetensors"],
             "npy": ["f4.npy", "f8.npy", "u1.npy", "bool.npy", "f2.npy", "i8.npy", "v2.npy"]}
    for kind, names in seeds.items():
        os.makedirs(os.path.join(CORPUS, kind), exist_ok=True)
        for n in names:
            shutil.copyfile(os.path.join(OUT, n), os.path.join(CORPUS, kind, n))


if __name__ == "__main__":
    main()
