#!/usr/bin/python3
"""diffusers' own UNet2DConditionModel forward: the same-run baseline of
rsam's U-Net figure (bench/unet_compare.sh runs both on the same files).

  diffusers_unet.py write --config unet/config.json --channels C --out DIR
      DIR/config.json + DIR/diffusion_pytorch_model.safetensors: the U-Net of
      the config with in/out channels C (256: GleSAM's CRE-widened one) and
      torch's default random init.
  diffusers_unet.py time --unet DIR [--precision fp32|bf16] [--threads 2]
                         [--repeat 3] [--size 64]
      Forwards at t = 1 on a [1, C, size, size] latent and a [1, 77, D] text
      embedding; prints one JSON line: forward_ms[], peak_rss_gb, and for
      bf16 which mode ran.

diffusers v0.27.0 comes from the git mirror as in the fixture scripts
(scripts/fixture_util.py: its missing third-party imports stubbed). Run with
Debian's /usr/bin/python3 (torch 1.13). bf16 is torch.autocast("cpu"); where
that fails (torch 1.13: group_norm refuses the mixed dtypes) the error is
reported and the U-Net runs with bf16 weights and inputs instead, as
diffusers does with torch_dtype=torch.bfloat16.
"""
import argparse
import json
import os
import resource
import shutil
import struct
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
import fixture_util as fu  # noqa: E402

_DTYPES = {"F32": torch.float32, "F16": torch.float16}


def load_safetensors(module, path):
    """Copies the file's tensors into `module`'s parameters one at a time
    (peak memory: the model plus one tensor). Every name must match."""
    params = module.state_dict()
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        header.pop("__metadata__", None)
        if set(header) != set(params):
            raise SystemExit(f"{path}: tensor names differ from the U-Net's")
        for name, h in header.items():
            a, b = h["data_offsets"]
            f.seek(8 + n + a)
            t = torch.frombuffer(bytearray(f.read(b - a)), dtype=_DTYPES[h["dtype"]]).reshape(h["shape"])
            params[name].copy_(t)


def write(args, UNet):
    with open(args.config) as f:
        config = dict(json.load(f), in_channels=args.channels, out_channels=args.channels)
    torch.manual_seed(0)
    unet = fu.build_unet(UNet, config)
    fu.write_json(os.path.join(args.out, "config.json"), config)
    fu.write_safetensors(os.path.join(args.out, "diffusion_pytorch_model.safetensors"), unet.state_dict())
    print(json.dumps({"wrote": args.out, "parameters": sum(p.numel() for p in unet.parameters())}))


def skip_init():
    # The weights are loaded right after construction: torch's random init of
    # 865M parameters would only add minutes.
    for cls in (torch.nn.Linear, torch.nn.Conv2d):
        cls.reset_parameters = lambda self: None


def forward_times(unet, x, t, text, repeat, autocast):
    times = []
    with torch.no_grad():
        for _ in range(repeat):
            t0 = time.perf_counter()
            if autocast:
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    unet(x, t, text)
            else:
                unet(x, t, text)
            times.append((time.perf_counter() - t0) * 1e3)
    return times


def time_unet(args, UNet):
    torch.set_num_threads(args.threads)
    with open(os.path.join(args.unet, "config.json")) as f:
        config = json.load(f)
    skip_init()
    unet = fu.build_unet(UNet, config)
    load_safetensors(unet, os.path.join(args.unet, "diffusion_pytorch_model.safetensors"))
    cross = config["cross_attention_dim"]
    cross = cross[-1] if isinstance(cross, list) else cross
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, config["in_channels"], args.size, args.size, generator=gen)
    text = torch.randn(1, 77, cross, generator=gen)
    t = torch.tensor(1, dtype=torch.int64)
    result = {"implementation": "diffusers 0.27.0", "torch": torch.__version__, "precision": args.precision,
              "threads": torch.get_num_threads(), "channels": config["in_channels"],
              "parameters": sum(p.numel() for p in unet.parameters())}
    if args.precision == "fp32":
        result["forward_ms"] = forward_times(unet, x, t, text, args.repeat, False)
    else:
        try:
            result["forward_ms"] = forward_times(unet, x, t, text, args.repeat, True)
            result["bf16_mode"] = "autocast"
        except RuntimeError as e:
            result["autocast_error"] = str(e).splitlines()[0]
            unet = unet.to(torch.bfloat16)
            result["forward_ms"] = forward_times(unet, x.bfloat16(), t, text.bfloat16(), args.repeat, False)
            result["bf16_mode"] = "bf16 weights"
    result["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    print(json.dumps(result))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["write", "time"])
    ap.add_argument("--config")
    ap.add_argument("--channels", type=int, default=4)
    ap.add_argument("--out")
    ap.add_argument("--unet")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--diffusers-git", default="/work/.mirror/huggingface+diffusers/repo")
    ap.add_argument("--diffusers-rev", default="v0.27.0")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="rsam-diffusers-unet-")
    try:
        UNet = fu.load_diffusers(args.diffusers_git, args.diffusers_rev, work)
        write(args, UNet) if args.mode == "write" else time_unet(args, UNet)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
