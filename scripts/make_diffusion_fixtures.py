#!/usr/bin/env python3
"""Regenerates rsam's Stable Diffusion parity fixtures (tests/data/diffusion).

The reference implementations themselves produce the expected numbers:
diffusers v0.27.0's UNet2DConditionModel and DDIMScheduler, and transformers'
CLIPTextModel (the 4.27.1 source: the 4.28.1 that GleSAM pins has the same
text-model code). Their modules are imported from the public source as it is;
the third-party packages they import at load time and this machine lacks
(huggingface_hub, safetensors, packaging, filelock, tqdm, torch_mlu) are replaced
by small stubs below, and transformers' PreTrainedModel/PretrainedConfig
plumbing by a minimal base class (hub download, saving and init helpers are
not on the forward path).

Each case is a folder laid out as diffusers writes a Stable Diffusion model
(unet/, text_encoder/, tokenizer/, scheduler/) with tiny random weights, plus
io/*.npy holding the inputs and the reference outputs. The C++ tests read
these files and need no Python.

Run with Debian's python3-torch (RSAM_FIXTURE_TOOLS=1 scripts/install-deps.sh)
and git mirrors of huggingface/diffusers and a transformers 4.27/4.28 tree:

    /usr/bin/python3 scripts/make_diffusion_fixtures.py \\
        --diffusers-git /path/to/diffusers/.git --transformers-git /path/to/transformers/.git
"""
import argparse
import importlib.abc
import importlib.machinery
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import types

import numpy as np
import torch

# ---------------------------------------------------------------- stubs ----


def _passthrough(*args, **kwargs):
    # Used as a decorator (returns the function) or as a do-nothing call.
    if len(args) == 1 and callable(args[0]) and not kwargs:
        return args[0]
    return None


_STUB_CACHE = tempfile.mkdtemp(prefix="rsam-fixture-hf-")


class _StubModule(types.ModuleType):
    """Any attribute exists: constants are strings, *Error names are
    exception classes, everything else is a pass-through callable."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        if name.endswith(("Error", "Exception", "Warning")):
            value = type(name, (Exception,), {})
        elif name.isupper():
            # A private temp folder: diffusers writes a version file into its cache.
            value = _STUB_CACHE if "CACHE" in name or "HOME" in name else ""
        else:
            value = _passthrough
        setattr(self, name, value)
        return value


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, roots):
        self.roots = set(roots)

    def find_spec(self, fullname, path, target=None):
        if fullname.split(".")[0] in self.roots:
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _StubModule(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module):
        pass


def _packaging_stub():
    """packaging.version with what diffusers/transformers compare: release
    numbers (pre-release tags ignored)."""

    class Version:
        def __init__(self, text):
            self.text = str(text)
            nums = re.match(r"\s*v?(\d+(?:\.\d+)*)", self.text)
            self.release = tuple(int(x) for x in nums.group(1).split(".")) if nums else (0,)

        @property
        def base_version(self):
            return ".".join(str(x) for x in self.release)

        @property
        def major(self):
            return self.release[0]

        @property
        def minor(self):
            return (self.release + (0,))[1]

        def _key(self):
            r = list(self.release)
            while len(r) > 1 and r[-1] == 0:
                r.pop()
            return tuple(r)

        def __lt__(self, o):
            return self._key() < Version(o)._key() if not isinstance(o, Version) else self._key() < o._key()

        def __le__(self, o):
            return not Version.__gt__(self, o)

        def __gt__(self, o):
            o = o if isinstance(o, Version) else Version(o)
            return self._key() > o._key()

        def __ge__(self, o):
            return not Version.__lt__(self, o)

        def __eq__(self, o):
            o = o if isinstance(o, Version) else Version(o)
            return self._key() == o._key()

        def __hash__(self):
            return hash(self._key())

        def __str__(self):
            return self.text

    pkg = types.ModuleType("packaging")
    pkg.__path__ = []
    ver = types.ModuleType("packaging.version")
    ver.Version = Version
    ver.parse = Version
    ver.InvalidVersion = type("InvalidVersion", (ValueError,), {})
    pkg.version = ver
    sys.modules["packaging"] = pkg
    sys.modules["packaging.version"] = ver


def install_stubs():
    have = lambda m: importlib.util.find_spec(m) is not None  # noqa: E731
    if not have("packaging"):
        _packaging_stub()
    roots = [m for m in ("huggingface_hub", "filelock", "tqdm", "torch_mlu") if not have(m)]
    if not have("safetensors"):
        roots.append("safetensors")  # diffusers imports it; weights are written by write_safetensors below
    sys.meta_path.insert(0, _StubFinder(roots))
    # diffusers checks its runtime dependencies' installed versions by name.
    import importlib.metadata as md
    real_version = md.version
    stubbed = set(roots) | {"packaging", "importlib_metadata", "huggingface-hub"}
    md.version = lambda name: "99.0" if name.replace("-", "_") in stubbed or name in stubbed else real_version(name)


# ------------------------------------------------------- file writers ----

_ST_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.int64: "I64"}


def write_safetensors(path, tensors, metadata=None):
    """The safetensors format: u64 header length, JSON header (dtype, shape,
    data_offsets per tensor, optional __metadata__), then the raw bytes."""
    header, blobs, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    for name, t in tensors.items():
        t = t.detach().contiguous()
        raw = t.view(torch.uint8).numpy().tobytes() if t.dtype == torch.bfloat16 else t.numpy().tobytes()
        header[name] = {"dtype": _ST_DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def write_npy(path, array):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.save(path, np.ascontiguousarray(array))


# --------------------------------------------------- reference sources ----


def extract(gitdir, rev, paths, dest):
    os.makedirs(dest, exist_ok=True)
    archive = subprocess.run(["git", "--git-dir", gitdir, "archive", rev] + paths, check=True,
                             stdout=subprocess.PIPE).stdout
    subprocess.run(["tar", "-x", "-C", dest], input=archive, check=True)


_TRANSFORMERS_SHIMS = {
    "__init__.py": "",
    "models/__init__.py": "",
    "models/clip/__init__.py": "",
    "onnx/__init__.py": "OnnxConfig = object\n",
    "utils/__init__.py": '''
import logging as _logging
class _Logging:
    get_logger = staticmethod(_logging.getLogger)
logging = _Logging()
def _deco(*a, **k):
    return lambda f: f
add_start_docstrings = add_start_docstrings_to_model_forward = replace_return_docstrings = _deco
class ModelOutput:
    pass
TensorType = object
''',
    "modeling_outputs.py": "class BaseModelOutput:\n    pass\nclass BaseModelOutputWithPooling:\n    pass\n",
    # The forward path only needs config access and weight init; tuples are
    # returned (use_return_dict False) so ModelOutput is never built.
    "configuration_utils.py": '''
class PretrainedConfig:
    def __init__(self, **kwargs):
        self.output_attentions = False
        self.output_hidden_states = False
        self.use_return_dict = False
        for k, v in kwargs.items():
            setattr(self, k, v)
''',
    "modeling_utils.py": '''
import torch
class PreTrainedModel(torch.nn.Module):
    def __init__(self, config, *args, **kwargs):
        super().__init__()
        self.config = config
    def post_init(self):
        self.apply(self._init_weights)
''',
}


def load_references(diffusers_git, diffusers_rev, transformers_git, transformers_rev, work):
    extract(diffusers_git, diffusers_rev, ["src/diffusers"], os.path.join(work, "d"))
    sys.path.insert(0, os.path.join(work, "d", "src"))
    tdir = os.path.join(work, "t")
    extract(transformers_git, transformers_rev,
            ["src/transformers/activations.py", "src/transformers/models/clip/modeling_clip.py",
             "src/transformers/models/clip/configuration_clip.py"], tdir)
    root = os.path.join(tdir, "src", "transformers")
    for rel, text in _TRANSFORMERS_SHIMS.items():
        os.makedirs(os.path.dirname(os.path.join(root, rel)), exist_ok=True)
        with open(os.path.join(root, rel), "w") as f:
            f.write(text)
    sys.path.insert(0, os.path.join(tdir, "src"))
    install_stubs()
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
    from diffusers.schedulers.scheduling_ddim import DDIMScheduler
    from transformers.models.clip.modeling_clip import CLIPTextModel
    from transformers.models.clip.configuration_clip import CLIPTextConfig
    return UNet2DConditionModel, DDIMScheduler, CLIPTextModel, CLIPTextConfig


# ---------------------------------------------------------------- cases ----

BASE_UNET = {
    "_class_name": "UNet2DConditionModel",
    "_diffusers_version": "0.27.0",
    "act_fn": "silu",
    "center_input_sample": False,
    "downsample_padding": 1,
    "dual_cross_attention": False,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 2,
    "num_class_embeds": None,
    "only_cross_attention": False,
    "out_channels": 4,
    "sample_size": 8,
}

# SD-2.x style: linear projections, a head count per block (reversed for the
# up blocks, the last for the mid block), upcast_attention.
SD2_UNET = dict(BASE_UNET, **{
    "attention_head_dim": [1, 2, 4],
    "block_out_channels": [4, 8, 8],
    "cross_attention_dim": 12,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "layers_per_block": 1,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "use_linear_projection": True,
    "upcast_attention": True,
})

# SD-1.x style: 1x1-conv projections, one head count for every block; also
# the non-default time embedding (sin first, freq_shift 1).
SD1_UNET = dict(BASE_UNET, **{
    "attention_head_dim": 2,
    "block_out_channels": [8, 12],
    "cross_attention_dim": 8,
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
    "layers_per_block": 1,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
    "flip_sin_to_cos": False,
    "freq_shift": 1,
})

# Less common settings SD folders may carry: per-block lists, two transformer
# layers, padding-0 downsamplers, a mid-block scale, gelu, centred input and
# a latent whose size is not a multiple of the total downsampling.
ODD_UNET = dict(BASE_UNET, **{
    "act_fn": "gelu",
    "attention_head_dim": [2, 1, 2],
    "block_out_channels": [4, 4, 8],
    "center_input_sample": True,
    "cross_attention_dim": [6, 10, 10],
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "downsample_padding": 0,
    "layers_per_block": [1, 2, 1],
    "mid_block_scale_factor": 1.5,
    "transformer_layers_per_block": [1, 2, 1],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "use_linear_projection": True,
})

CLIP_BASE = {
    "architectures": ["CLIPTextModel"],
    "attention_dropout": 0.0,
    "bos_token_id": 0,
    "dropout": 0.0,
    "eos_token_id": 2,
    "hidden_size": 16,
    "initializer_factor": 1.0,
    "initializer_range": 0.02,
    "intermediate_size": 24,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 77,
    "model_type": "clip_text_model",
    "num_attention_heads": 2,
    "num_hidden_layers": 2,
    "pad_token_id": 1,
    "projection_dim": 8,
    "torch_dtype": "float32",
    "transformers_version": "4.28.1",
    "vocab_size": 40,
}

# A CLIP-like vocabulary small enough for the tiny embedding table: "!" is 0
# (SD-2.x pads with it), the specials are the last two ids as in CLIP.
VOCAB = {**{chr(33 + i) + ("" if i < 20 else "</w>"): i for i in range(38)},
         "<|startoftext|>": 38, "<|endoftext|>": 39}


def added(content):
    return {"__type": "AddedToken", "content": content, "lstrip": False, "normalized": True,
            "rstrip": False, "single_word": False}


def randomize(model, gen):
    # Torch's default init leaves norms at 1/0; move every norm so a wrong
    # eps or a missing affine shows.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            elif "embedding" in name:
                p.copy_(torch.randn(p.shape, generator=gen))


def unet_case(UNet, out, config, batch, hw, timesteps, seq, dtype, gen):
    unet = UNet(**{k: v for k, v in config.items() if not k.startswith("_") and k != "sample_size"}).eval()
    randomize(unet, gen)
    sd = {k: v.detach().clone() for k, v in unet.state_dict().items()}
    if dtype == torch.float16:
        # What the file holds is what the model computes with (loaded into fp32).
        sd = {k: v.half() for k, v in sd.items()}
        unet.load_state_dict({k: v.float() for k, v in sd.items()})
    write_json(os.path.join(out, "unet", "config.json"), config)
    write_safetensors(os.path.join(out, "unet", "diffusion_pytorch_model.safetensors"), sd)
    sample = torch.randn(batch, config["in_channels"], hw[0], hw[1], generator=gen)
    cross = config["cross_attention_dim"]
    cross = cross[-1] if isinstance(cross, list) else cross
    ehs = torch.randn(batch, seq, cross, generator=gen)
    t = torch.tensor(timesteps, dtype=torch.int64)
    with torch.no_grad():
        y = unet(sample, t, ehs).sample
    io = os.path.join(out, "io")
    write_npy(os.path.join(io, "unet_sample.npy"), sample.numpy())
    write_npy(os.path.join(io, "unet_timesteps.npy"), t.numpy())
    write_npy(os.path.join(io, "unet_encoder_hidden_states.npy"), ehs.numpy())
    write_npy(os.path.join(io, "unet_out.npy"), y.numpy())
    return unet, sample, t, ehs


def clip_case(CLIPTextModel, CLIPTextConfig, out, hidden_act, pad_token, bin_file, gen):
    cfg_json = dict(CLIP_BASE, hidden_act=hidden_act)
    cfg = CLIPTextConfig(**{k: v for k, v in cfg_json.items() if k not in ("architectures", "model_type")})
    model = CLIPTextModel(cfg).eval()
    randomize(model, gen)
    sd = model.state_dict()  # 4.27/4.28 keep position_ids as a persistent int64 buffer
    assert sd["text_model.embeddings.position_ids"].dtype == torch.int64
    write_json(os.path.join(out, "text_encoder", "config.json"), cfg_json)
    if bin_file:
        os.makedirs(os.path.join(out, "text_encoder"), exist_ok=True)
        torch.save(sd, os.path.join(out, "text_encoder", "pytorch_model.bin"))
    else:
        write_safetensors(os.path.join(out, "text_encoder", "model.safetensors"), sd)
    # The empty prompt as CLIPTokenizer(padding="max_length", max_length=77)
    # encodes it: BOS, EOS, then the pad id to 77.
    ids = [VOCAB["<|startoftext|>"], VOCAB["<|endoftext|>"]] + [VOCAB[pad_token]] * 75
    empty = torch.tensor([ids], dtype=torch.int64)
    other = torch.randint(0, CLIP_BASE["vocab_size"], (2, 77), generator=gen)
    with torch.no_grad():
        e = model(empty)[0]
        o = model(other)[0]
    io = os.path.join(out, "io")
    write_npy(os.path.join(io, "clip_empty_ids.npy"), empty.numpy())
    write_npy(os.path.join(io, "clip_empty_out.npy"), e.numpy())
    write_npy(os.path.join(io, "clip_ids.npy"), other.numpy())
    write_npy(os.path.join(io, "clip_out.npy"), o.numpy())


def tokenizer_files(out, config_pad, map_pad, dict_form):
    tok = os.path.join(out, "tokenizer")
    wrap = added if dict_form else (lambda s: s)
    tc = {"add_prefix_space": False, "bos_token": wrap("<|startoftext|>"), "do_lower_case": True,
          "eos_token": wrap("<|endoftext|>"), "errors": "replace", "model_max_length": 77,
          "name_or_path": "openai/clip-vit-large-patch14", "pad_token": wrap(config_pad),
          "special_tokens_map_file": "./special_tokens_map.json", "tokenizer_class": "CLIPTokenizer",
          "unk_token": wrap("<|endoftext|>")}
    write_json(os.path.join(tok, "tokenizer_config.json"), tc)
    if map_pad is not None:
        stm = {"bos_token": wrap("<|startoftext|>"), "eos_token": wrap("<|endoftext|>"),
               "pad_token": wrap(map_pad), "unk_token": wrap("<|endoftext|>")}
        write_json(os.path.join(tok, "special_tokens_map.json"), stm)
    write_json(os.path.join(tok, "vocab.json"), VOCAB)
    with open(os.path.join(tok, "merges.txt"), "w") as f:
        f.write("#version: 0.2\n! \"</w>\n")


def scheduler_case(DDIMScheduler, out, config, timesteps, gen):
    write_json(os.path.join(out, "scheduler", "scheduler_config.json"), config)
    sched = DDIMScheduler.from_config({k: v for k, v in config.items() if k != "_class_name"})
    ac = sched.alphas_cumprod
    assert ac.dtype == torch.float32
    # GleSAM's get_x0_from_noise: float64 alphas_cumprod, inputs cast to
    # float64, x0 = (x - sqrt(1 - a) eps) / sqrt(a), cast back to float32.
    a = ac.double()[torch.tensor(timesteps)].reshape(-1, 1, 1, 1)
    x = torch.randn(len(timesteps), 3, 4, 4, generator=gen)
    eps = torch.randn(len(timesteps), 3, 4, 4, generator=gen)
    x0 = ((x.double() - (1 - a) ** 0.5 * eps.double()) / a ** 0.5).float()
    io = os.path.join(out, "io")
    write_npy(os.path.join(io, "sched_alphas_cumprod.npy"), ac.numpy())
    write_npy(os.path.join(io, "sched_timesteps.npy"), np.array(timesteps, dtype=np.int64))
    write_npy(os.path.join(io, "sched_x.npy"), x.numpy())
    write_npy(os.path.join(io, "sched_eps.npy"), eps.numpy())
    write_npy(os.path.join(io, "sched_x0.npy"), x0.numpy())


# GleSAM's LoRA target list (models/sd_unifined_model_CRE_addlora.py).
GLESAM_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2",
                  "conv1", "conv2", "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv",
                  "time_emb_proj", "conv_in", "conv_out"]
ATTN_PROJ = ("to_q", "to_k", "to_v", "to_out.0")


def lora_case(unet, out, sample, t, ehs, rank, gen):
    """A LoRA file laid out as GleSAM's pytorch_lora_weights.safetensors:
    peft's A/B per target module, renamed by diffusers 0.27's
    convert_state_dict_to_diffusers (only the attention projections become
    lora.down/lora.up), prefixed "unet." by save_lora_weights. The reference
    output merges W += (alpha/r) B A into a copy of the U-Net (alpha = r, as
    GleSAM's scripts set it)."""
    targets = []
    for name, m in unet.named_modules():
        if any(name == s or name.endswith("." + s) for s in GLESAM_TARGETS):
            assert isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)), name
            targets.append((name, m))
    tensors = {}
    with torch.no_grad():
        for name, m in targets:
            if isinstance(m, torch.nn.Linear):
                a = torch.randn(rank, m.in_features, generator=gen) / m.in_features ** 0.5
                b = 0.3 * torch.randn(m.out_features, rank, generator=gen)
                m.weight += b @ a
            else:
                kh, kw = m.kernel_size
                a = torch.randn(rank, m.in_channels, kh, kw, generator=gen) / (m.in_channels * kh * kw) ** 0.5
                b = 0.3 * torch.randn(m.out_channels, rank, 1, 1, generator=gen)
                m.weight += torch.einsum("or,rikl->oikl", b[:, :, 0, 0], a)
            if name.endswith(ATTN_PROJ):
                down, up = "lora.down", "lora.up"
            else:
                down, up = "lora_A", "lora_B"
            tensors[f"unet.{name}.{down}.weight"] = a
            tensors[f"unet.{name}.{up}.weight"] = b
        y = unet(sample, t, ehs).sample
    write_safetensors(os.path.join(out, "lora", "pytorch_lora_weights.safetensors"), tensors,
                      metadata={"format": "pt"})
    write_npy(os.path.join(out, "io", "lora_out.npy"), y.numpy())
    return len(targets)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--diffusers-git", default="/work/.mirror/huggingface+diffusers/repo")
    ap.add_argument("--diffusers-rev", default="v0.27.0")
    ap.add_argument("--transformers-git", default="/work/.mirror/xiaojunjun65+transformers-mlu_4.27.1/repo")
    ap.add_argument("--transformers-rev", default="HEAD")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                                  "data", "diffusion"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(39)  # the modules' default init draws from the global generator
    work = tempfile.mkdtemp(prefix="rsam-diffusion-ref-")
    try:
        UNet, DDIM, CLIP, CLIPConfig = load_references(args.diffusers_git, args.diffusers_rev,
                                                       args.transformers_git, args.transformers_rev, work)
        out = os.path.abspath(args.out)
        for case in ("sd1", "sd2", "odd"):  # configs/ holds hand-written real SD configs
            shutil.rmtree(os.path.join(out, case), ignore_errors=True)
        gen = torch.Generator().manual_seed(39)

        sd2 = os.path.join(out, "sd2")
        unet_case(UNet, sd2, SD2_UNET, 1, (8, 8), [1], 5, torch.float32, gen)
        clip_case(CLIP, CLIPConfig, sd2, "gelu", "!", False, gen)
        tokenizer_files(sd2, "<|endoftext|>", "!", dict_form=False)
        scheduler_case(DDIM, sd2, {"_class_name": "DDIMScheduler", "_diffusers_version": "0.8.0",
                                   "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
                                   "clip_sample": False, "num_train_timesteps": 1000,
                                   "prediction_type": "epsilon", "set_alpha_to_one": False,
                                   "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None},
                       [1, 999, 500], gen)

        sd1 = os.path.join(out, "sd1")
        unet, sample, t, ehs = unet_case(UNet, sd1, SD1_UNET, 2, (8, 8), [999, 17], 7, torch.float16, gen)
        n = lora_case(unet, sd1, sample, t, ehs, 2, gen)
        clip_case(CLIP, CLIPConfig, sd1, "quick_gelu", "<|endoftext|>", True, gen)
        tokenizer_files(sd1, "<|endoftext|>", "<|endoftext|>", dict_form=True)
        scheduler_case(DDIM, sd1, {"_class_name": "PNDMScheduler", "_diffusers_version": "0.6.0",
                                   "beta_end": 0.02, "beta_schedule": "linear", "beta_start": 0.0001,
                                   "num_train_timesteps": 1000, "set_alpha_to_one": False,
                                   "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None,
                                   "clip_sample": False}, [0, 1, 999], gen)

        odd = os.path.join(out, "odd")
        unet_case(UNet, odd, ODD_UNET, 2, (6, 10), [3, 250], 4, torch.float32, gen)

        total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(out) for f in fs)
        print(f"wrote {out}: {total} bytes; sd1 LoRA wraps {n} modules")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
