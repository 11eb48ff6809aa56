#!/usr/bin/python3
"""Fixtures for GleSAM's latent enhancement (issue 40) -> tests/data/glesam.

A miniature Stable Diffusion folder (sd/: a 4-channel SD-2.x-style U-Net, a
CLIP text encoder and tokenizer, SD's DDIM scheduler config) whose U-Net,
widened by CRE, runs on the tiny test SAM's 32-channel embeddings; a LoRA
file in the layout of GleSAM's released pytorch_lora_weights.safetensors
(for the CRE-widened U-Net); a fine-tuned mask decoder of tests/data/sam's
tiny_a in the released decoder forms; and the reference enhancement z_L ->
z_H computed as GleSAM's code does it:

  U = UNet2DConditionModel(in=out=C) with the 4-channel weights tiled C/4
      times (conv_in along input channels, conv_out weight and bias along
      outputs, no rescaling: models/sd_unifined_model_CRE_addlora.py),
      plus the LoRA (merged into a copy here: peft is not needed for the
      function);
  eps = U(gamma z_L, t, c).sample, c = CLIP's empty-prompt embedding;
  x0  = (gamma z_L - sqrt(1 - abar_t) eps) / sqrt(abar_t) in float64, cast to
        float32 (get_x0_from_noise);  z_H = x0 / gamma.

diffusers v0.27.0 and the CLIP text model come from the same sources as
scripts/make_diffusion_fixtures.py (its cases and scripts/fixture_util.py's
loaders and writers are imported).
Run with Debian's /usr/bin/python3 (torch 1.13); deterministic.
"""
import os
import shutil
import sys
import tempfile

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fixture_util as fu  # noqa: E402
import make_diffusion_fixtures as mdf  # noqa: E402

CHANNELS = 32  # tests/data/sam/tiny_a's prompt_embed_dim
UNET = dict(mdf.SD2_UNET, cross_attention_dim=mdf.CLIP_BASE["hidden_size"])
SCHEDULER = {"_class_name": "DDIMScheduler", "_diffusers_version": "0.8.0", "beta_end": 0.012,
             "beta_schedule": "scaled_linear", "beta_start": 0.00085, "clip_sample": False,
             "num_train_timesteps": 1000, "prediction_type": "epsilon", "set_alpha_to_one": False,
             "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None}
# (name, gamma, timestep): the released setting, the argparse default
# timestep with demo.sh's gamma, and no FDA.
CASES = [("g5_t1", 5, 1), ("g3_t999", 3, 999), ("g1_t500", 1, 500)]


def cre_widen(UNet, base, channels):
    """GleSAM's CRE on a copy of `base`: in/out widened to `channels`."""
    wide = fu.build_unet(UNet, dict(UNET, in_channels=channels, out_channels=channels))
    sd = base.state_dict()
    rep = channels // 4
    sd["conv_in.weight"] = sd["conv_in.weight"].repeat(1, rep, 1, 1)
    sd["conv_out.weight"] = sd["conv_out.weight"].repeat(rep, 1, 1, 1)
    sd["conv_out.bias"] = sd["conv_out.bias"].repeat(rep)
    wide.load_state_dict(sd)
    return wide


def enhance(unet, alphas_cumprod, text, z, gamma, t):
    x = gamma * z
    ts = torch.full((z.shape[0],), t, dtype=torch.int64)
    with torch.no_grad():
        eps = unet(x, ts, text.expand(z.shape[0], -1, -1)).sample
    a = alphas_cumprod.double()[ts].reshape(-1, 1, 1, 1)
    x0 = ((x.double() - (1 - a) ** 0.5 * eps.double()) / a ** 0.5).float()
    return x0 / gamma


def decoder_files(out, gen):
    """tiny_a's mask decoder, perturbed (so loading it shows), as a bare
    state dict written by torch.save (the other released forms, prefixed or
    whole-SAM, .pth or .safetensors, are made from it by the C++ tests)."""
    sam = torch.load(os.path.join(out, "..", "sam", "tiny_a.pth"))
    dec = {}
    for k, v in sam.items():
        if k.startswith("mask_decoder."):
            dec[k[len("mask_decoder."):]] = v + 0.05 * torch.randn(v.shape, generator=gen)
    torch.save(dec, os.path.join(out, "ft-decoder.pth"))


def main():
    ap = fu.reference_args(__doc__, "glesam")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(40)
    work = tempfile.mkdtemp(prefix="rsam-glesam-ref-")
    try:
        UNet, DDIM, CLIP, CLIPConfig = fu.load_references(args.diffusers_git, args.diffusers_rev,
                                                           args.transformers_git, args.transformers_rev, work)
        out = os.path.abspath(args.out)
        shutil.rmtree(out, ignore_errors=True)
        gen = torch.Generator().manual_seed(40)
        sd = os.path.join(out, "sd")

        base = fu.build_unet(UNet, UNET)
        fu.randomize(base, gen)
        fu.write_json(os.path.join(sd, "unet", "config.json"), UNET)
        fu.write_safetensors(os.path.join(sd, "unet", "diffusion_pytorch_model.safetensors"),
                              {k: v.detach().clone() for k, v in base.state_dict().items()})
        mdf.clip_case(CLIP, CLIPConfig, sd, "gelu", "!", False, gen)
        mdf.tokenizer_files(sd, "<|endoftext|>", "!", dict_form=False)
        fu.write_json(os.path.join(sd, "scheduler", "scheduler_config.json"), SCHEDULER)
        io = os.path.join(out, "io")
        os.makedirs(io, exist_ok=True)
        text = torch.from_numpy(np.load(os.path.join(sd, "io", "clip_empty_out.npy")))
        shutil.rmtree(os.path.join(sd, "io"))  # the SD folder holds only what a real one has
        fu.write_npy(os.path.join(out, "text_embedding.npy"), text.numpy())
        ac = DDIM.from_config({k: v for k, v in SCHEDULER.items() if k != "_class_name"}).alphas_cumprod

        wide = cre_widen(UNet, base, CHANNELS)
        # SAM embeddings are small (|z| ~ 0.1-1); gamma brings them nearer
        # the U-Net's unit-variance latents, as FDA intends.
        z = 0.3 * torch.randn(2, CHANNELS, 8, 8, generator=gen)
        fu.write_npy(os.path.join(io, "z_low.npy"), z.numpy())
        # Without LoRA: CRE alone (the paper's starting point).
        fu.write_npy(os.path.join(io, "z_high_nolora_g5_t1.npy"), enhance(wide, ac, text, z, 5, 1).numpy())
        lora = fu.merge_random_lora(wide, 2, gen, 0.2)
        fu.write_safetensors(os.path.join(out, "lora", "pytorch_lora_weights.safetensors"), lora,
                              metadata={"format": "pt"})
        for name, gamma, t in CASES:
            fu.write_npy(os.path.join(io, f"z_high_{name}.npy"), enhance(wide, ac, text, z, gamma, t).numpy())
        decoder_files(out, gen)
        fu.write_json(os.path.join(out, "enhancer.json"),
                       {"method": "glesam", "sd": "sd", "lora": "lora/pytorch_lora_weights.safetensors",
                        "decoder": "ft-decoder.pth", "gamma": 5, "timestep": 1})
        print(f"wrote {out}: {fu.folder_bytes(out)} bytes, LoRA on {len(lora) // 2} modules")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
