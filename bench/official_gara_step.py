#!/usr/bin/env python3
"""A Python reference for one GaRA training step on the official SAM, for a
same-run ratio against `rsam train` (see README, Performance).

GaRA adapters (r_low 16, r_high 256, gates as in rsam's docs/adapters.md) on
q, k and v of every image-encoder block, frozen base, focal x20 + dice on a
box prompt, Adam; torch.utils.checkpoint per block when --grad-checkpoint.

    /usr/bin/python3 bench/official_gara_step.py --sam-repo PATH --checkpoint vit_b.pth \\
        [--precision fp32|bf16] [--grad-checkpoint] [--steps 2] [--threads 2]

Prints one JSON line: per-step seconds and peak RSS.
"""
import argparse
import json
import resource
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sam-repo", required=True)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--grad-checkpoint", action="store_true")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    sys.path.insert(0, args.sam_repo)
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    import torch.utils.checkpoint as cp
    from segment_anything import sam_model_registry

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    sam = sam_model_registry["vit_b"](checkpoint=args.checkpoint)
    for p in sam.parameters():
        p.requires_grad_(False)

    def gumbel_gate(logits, tau=0.5):
        u = torch.rand_like(logits).clamp(1e-10, 1 - 1e-10)
        soft = torch.sigmoid((logits - torch.log(-torch.log(u))) / tau)
        return (soft > 0.5).float() + soft - soft.detach()

    def mlp(d, h, o, layers, bias):
        mods = []
        for i in range(layers):
            mods.append(nn.Linear(d if i == 0 else h, o if i == layers - 1 else h))
            if i < layers - 1:
                mods.append(nn.ReLU())
        nn.init.constant_(mods[-1].bias, bias)
        return nn.Sequential(*mods)

    class GaRA(nn.Module):
        def __init__(self, d, out, rl=16, rh=256):
            super().__init__()
            self.al, self.bl = nn.Parameter(torch.empty(rl, d)), nn.Parameter(torch.zeros(out, rl))
            self.ah, self.bh = nn.Parameter(torch.empty(rh, d)), nn.Parameter(torch.zeros(out, rh))
            for a in (self.al, self.ah):
                nn.init.kaiming_uniform_(a, a=5 ** 0.5)
            self.gs, self.gl, self.gh = mlp(d, 128, 1, 2, 0.0), mlp(d, 128, rl, 3, 2.0), mlp(d, 128, rh, 3, 2.0)

        def forward(self, x, f):  # x [B', h, w, d], f [B, d]
            zs, zl, zh = gumbel_gate(self.gs(f)), gumbel_gate(self.gl(f)), gumbel_gate(self.gh(f))
            g = x.shape[0] // f.shape[0]
            ml = ((1 - zs) * zl).repeat_interleave(g, 0)[:, None, None, :]
            mh = (zs * zh).repeat_interleave(g, 0)[:, None, None, :]
            return ((x @ self.al.t()) * ml) @ self.bl.t() + ((x @ self.ah.t()) * mh) @ self.bh.t()

    class AdaptedQKV(nn.Module):
        def __init__(self, qkv):
            super().__init__()
            self.qkv = qkv
            d = qkv.in_features
            self.parts = nn.ModuleList([GaRA(d, d) for _ in range(3)])
            self.f = None

        def forward(self, x):
            return self.qkv(x) + torch.cat([p(x, self.f) for p in self.parts], -1)

    class BlockWithGate(nn.Module):
        def __init__(self, blk):
            super().__init__()
            self.blk = blk
            blk.attn.qkv = AdaptedQKV(blk.attn.qkv)

        def forward(self, x):
            self.blk.attn.qkv.f = self.blk.norm1(x).mean((1, 2))
            return self.blk(x)

    enc = sam.image_encoder
    enc.blocks = nn.ModuleList([BlockWithGate(b) for b in enc.blocks])
    params = [p for n, p in sam.named_parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-4, weight_decay=1e-5)

    torch.manual_seed(1)
    img = torch.randn(1, 3, 1024, 1024)
    target = (torch.rand(1, 1, 256, 256) > 0.5).float()
    box = torch.tensor([[200.0, 200.0, 700.0, 800.0]])

    def encode(x):
        x = enc.patch_embed(x) + enc.pos_embed
        for b in enc.blocks:
            x = cp.checkpoint(b, x, use_reentrant=True) if args.grad_checkpoint else b(x)
        return enc.neck(x.permute(0, 3, 1, 2))

    times = []
    for _ in range(args.steps):
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16"):
            x = img.requires_grad_(args.grad_checkpoint)
            emb = encode(x)
        emb = emb.float()
        sparse, dense = sam.prompt_encoder(points=None, boxes=box, masks=None)
        low, iou = sam.mask_decoder(emb, sam.prompt_encoder.get_dense_pe(), sparse, dense, False)
        p = torch.sigmoid(low)
        ce = F.binary_cross_entropy_with_logits(low, target, reduction="none")
        pt = p * target + (1 - p) * (1 - target)
        focal = ((0.25 * target + 0.75 * (1 - target)) * ce * (1 - pt) ** 2).mean()
        dice = 1 - (2 * (p * target).sum() + 1) / (p.sum() + target.sum() + 1)
        loss = 20 * focal + dice
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t)
    print(json.dumps({"impl": "python-reference", "precision": args.precision,
                      "grad_checkpoint": args.grad_checkpoint, "step_s": times,
                      "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}))


if __name__ == "__main__":
    main()
