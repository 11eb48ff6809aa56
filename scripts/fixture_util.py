"""Helpers shared by the Stable Diffusion / GleSAM fixture scripts
(make_diffusion_fixtures.py, make_glesam_fixtures.py): stubs for the
third-party packages the reference sources import at load time, the file
writers, loading diffusers' and transformers' modules from their git
mirrors, and the random-weight and LoRA helpers both scripts use.

Run under Debian's /usr/bin/python3 (python3-torch); see those scripts.
"""
import argparse
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import re
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
    data_offsets per tensor, optional __metadata__), then the raw bytes
    (written tensor by tensor: SD-sized files need no second copy)."""
    header, offset = {}, 0
    if metadata:
        header["__metadata__"] = metadata
    for name, t in tensors.items():
        size = t.numel() * t.element_size()
        header[name] = {"dtype": _ST_DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for t in tensors.values():
            t = t.detach().contiguous()
            f.write(t.view(torch.uint8).numpy().tobytes() if t.dtype == torch.bfloat16 else t.numpy().tobytes())


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


def load_diffusers(diffusers_git, diffusers_rev, work):
    """diffusers' UNet2DConditionModel from the git mirror (stubs installed)."""
    extract(diffusers_git, diffusers_rev, ["src/diffusers"], os.path.join(work, "d"))
    sys.path.insert(0, os.path.join(work, "d", "src"))
    install_stubs()
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
    return UNet2DConditionModel


def load_references(diffusers_git, diffusers_rev, transformers_git, transformers_rev, work):
    """diffusers' U-Net and DDIM scheduler, and transformers' CLIP text model
    (its PreTrainedModel plumbing shimmed)."""
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
    UNet2DConditionModel = load_diffusers(diffusers_git, diffusers_rev, work)
    from diffusers.schedulers.scheduling_ddim import DDIMScheduler
    from transformers.models.clip.modeling_clip import CLIPTextModel
    from transformers.models.clip.configuration_clip import CLIPTextConfig
    return UNet2DConditionModel, DDIMScheduler, CLIPTextModel, CLIPTextConfig


# ------------------------------------------------------- shared helpers ----


def reference_args(description, out_default):
    """The scripts' common command line: where the reference sources are and
    where the fixtures go."""
    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--diffusers-git", default="/work/.mirror/huggingface+diffusers/repo")
    ap.add_argument("--diffusers-rev", default="v0.27.0")
    ap.add_argument("--transformers-git", default="/work/.mirror/xiaojunjun65+transformers-mlu_4.27.1/repo")
    ap.add_argument("--transformers-rev", default="HEAD")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                                  "data", out_default))
    return ap


def folder_bytes(path):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def build_unet(UNet, config):
    """A UNet2DConditionModel from a config.json dict (diffusers' private keys
    and sample_size are not constructor arguments)."""
    return UNet(**{k: v for k, v in config.items() if not k.startswith("_") and k != "sample_size"}).eval()


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


# GleSAM's LoRA target list (models/sd_unifined_model_CRE_addlora.py).
GLESAM_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2",
                  "conv1", "conv2", "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv",
                  "time_emb_proj", "conv_in", "conv_out"]
ATTN_PROJ = ("to_q", "to_k", "to_v", "to_out.0")


def merge_random_lora(unet, rank, gen, b_scale):
    """Random LoRA factors A, B (B scaled by b_scale) on GleSAM's targets,
    merged into `unet` (W += B A: alpha = rank, as GleSAM's scripts set it).
    Returns the tensors in the layout of GleSAM's released
    pytorch_lora_weights.safetensors: peft's A/B per target module, renamed
    by diffusers 0.27's convert_state_dict_to_diffusers (only the attention
    projections become lora.down/lora.up), prefixed "unet." by
    save_lora_weights."""
    tensors = {}
    with torch.no_grad():
        for name, m in unet.named_modules():
            if not any(name == s or name.endswith("." + s) for s in GLESAM_TARGETS):
                continue
            assert isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)), name
            if isinstance(m, torch.nn.Linear):
                a = torch.randn(rank, m.in_features, generator=gen) / m.in_features ** 0.5
                b = b_scale * torch.randn(m.out_features, rank, generator=gen)
                m.weight += b @ a
            else:
                kh, kw = m.kernel_size
                a = torch.randn(rank, m.in_channels, kh, kw, generator=gen) / (m.in_channels * kh * kw) ** 0.5
                b = b_scale * torch.randn(m.out_channels, rank, 1, 1, generator=gen)
                m.weight += torch.einsum("or,rikl->oikl", b[:, :, 0, 0], a)
            down, up = ("lora.down", "lora.up") if name.endswith(ATTN_PROJ) else ("lora_A", "lora_B")
            tensors[f"unet.{name}.{down}.weight"] = a
            tensors[f"unet.{name}.{up}.weight"] = b
    return tensors
