#!/usr/bin/env python3
"""Regenerates rsam's Stable Diffusion parity fixtures (tests/data/diffusion).

The reference implementations themselves produce the expected numbers:
diffusers v0.27.0's UNet2DConditionModel and DDIMScheduler, and transformers'
CLIPTextModel (the 4.27.1 source: the 4.28.1 that GleSAM pins has the same
text-model code). Their modules are imported from the public source as it is;
the third-party packages they import at load time and this machine lacks
(huggingface_hub, safetensors, packaging, filelock, tqdm, torch_mlu) are replaced
by small stubs (scripts/fixture_util.py), and transformers' PreTrainedModel/PretrainedConfig
plumbing by a minimal base class (hub download, saving and init helpers are
not on the forward path).

Each case is a folder laid out as diffusers writes a Stable Diffusion model
(unet/, text_encoder/, tokenizer/, scheduler/) with tiny random weights, plus
io/*.npy holding the inputs and the reference outputs. tokenizer/ holds
transformers' CLIPTokenizer ids for many texts on a small learnt vocab/merges
pair (python3-regex needed). The C++ tests read these files and need no
Python.

Run with Debian's python3-torch (RSAM_FIXTURE_TOOLS=1 scripts/install-deps.sh)
and git mirrors of huggingface/diffusers and a transformers 4.27/4.28 tree:

    /usr/bin/python3 scripts/make_diffusion_fixtures.py \\
        --diffusers-git /path/to/diffusers/.git --transformers-git /path/to/transformers/.git
"""
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import types

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fixture_util import (build_unet, extract, folder_bytes, install_stubs, load_references,  # noqa: E402
                          merge_random_lora, randomize, reference_args, write_json, write_npy, write_safetensors)


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


def unet_case(UNet, out, config, batch, hw, timesteps, seq, dtype, gen):
    unet = build_unet(UNet, config)
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


def lora_case(unet, out, sample, t, ehs, rank, gen):
    """A LoRA file laid out as GleSAM's pytorch_lora_weights.safetensors
    (fixture_util.merge_random_lora); the reference output is the U-Net with
    the factors merged."""
    tensors = merge_random_lora(unet, rank, gen, 0.3)
    with torch.no_grad():
        y = unet(sample, t, ehs).sample
    write_safetensors(os.path.join(out, "lora", "pytorch_lora_weights.safetensors"), tensors,
                      metadata={"format": "pt"})
    write_npy(os.path.join(out, "io", "lora_out.npy"), y.numpy())
    return len(tensors) // 2


# ------------------------------------------------------------ tokenizer ----
# transformers' own CLIPTokenizer (slow; ftfy blocked, so its BasicTokenizer
# path, as on a machine without ftfy) on a small vocab/merges pair learnt
# here: the real CLIP files are too big to ship. Runs in a child process
# (--tokenizer-only) because it needs transformers' real utils package,
# which the model shims above replace.

TOKENIZER_FILES = ["src/transformers/tokenization_utils.py", "src/transformers/tokenization_utils_base.py",
                   "src/transformers/dynamic_module_utils.py", "src/transformers/utils",
                   "src/transformers/models/clip/tokenization_clip.py"]

CORPUS = """a photo of a cat sitting on the sofa, a dog in the park. the cats and the dogs are
playing with a red ball; photograph of an astronaut riding a horse on the moon. high quality,
detailed, 4k, trending on artstation! portrait of a woman with long hair, oil painting by
an old master. it's a beautiful day: don't worry, we're fine, they've gone, i'm here, you'll
see, he'd know. café naïve résumé über straße. ελληνικά русский текст 東京 タワー 🙂🙂 ❤️
landscape, mountains, river, sunset, clouds, reflections, cinematic lighting, photorealistic"""


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def learn_bpe(corpus, n_merges):
    """Plain BPE training over the corpus' whitespace words in CLIP's byte
    alphabet ("</w>" on each word's last symbol): the most frequent pair
    merged first, ties to the smallest pair."""
    enc = bytes_to_unicode()
    words = {}
    for w in corpus.lower().split():
        sym = tuple(enc[b] for b in w.encode("utf-8"))
        sym = sym[:-1] + (sym[-1] + "</w>",)
        words[sym] = words.get(sym, 0) + 1
    merges = []
    for _ in range(n_merges):
        counts = {}
        for sym, c in words.items():
            for pair in zip(sym, sym[1:]):
                counts[pair] = counts.get(pair, 0) + c
        if not counts:
            break
        best = min(counts, key=lambda p: (-counts[p], p))
        merges.append(best)
        merged = {}
        for sym, c in words.items():
            out, i = [], 0
            while i < len(sym):
                if i + 1 < len(sym) and (sym[i], sym[i + 1]) == best:
                    out.append(sym[i] + sym[i + 1])
                    i += 2
                else:
                    out.append(sym[i])
                    i += 1
            merged[tuple(out)] = merged.get(tuple(out), 0) + c
        words = merged
    return merges


def clip_vocab(merges, dropped):
    """CLIP's vocab.json order: the 256 byte symbols, the same with "</w>",
    one token per merge, then the two specials. Ids of `dropped` tokens are
    left out (their merges still apply: the tokenizer must answer unk)."""
    base = list(bytes_to_unicode().values())
    tokens = base + [b + "</w>" for b in base] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens) if t not in dropped}


def tokenizer_folder(path, vocab, merges, pad_in_map):
    """The tokenizer/ files as SD-2.1 (pad "!" in special_tokens_map, as a
    plain string) or SD-1.5 (pad = EOS) ship them."""
    write_json(os.path.join(path, "vocab.json"), vocab)
    with open(os.path.join(path, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    write_json(os.path.join(path, "tokenizer_config.json"),
               {"add_prefix_space": False, "bos_token": added("<|startoftext|>"), "do_lower_case": True,
                "eos_token": added("<|endoftext|>"), "errors": "replace", "model_max_length": 77,
                "pad_token": added("<|endoftext|>"), "tokenizer_class": "CLIPTokenizer",
                "unk_token": added("<|endoftext|>")})
    # special_tokens_map.json spells AddedTokens without "__type".
    token = lambda content: {k: v for k, v in added(content).items() if k != "__type"}  # noqa: E731
    write_json(os.path.join(path, "special_tokens_map.json"),
               {"bos_token": token("<|startoftext|>"), "eos_token": token("<|endoftext|>"),
                "pad_token": pad_in_map, "unk_token": token("<|endoftext|>")})


TEXTS = [
    "", "a photo of a cat", "A PHOTO of a Cat!! on the SOFA", "!", "hello!world",
    "Hello, world. (test) [x] {y} <z> @user #tag $5 %20 ^_^ &amp; *star* ~tilde~ `code` |pipe| back\\slash/",
    "in 2023 there were 1,234,567 cats; pi = 3.14159 and 4k 8K 1080p",
    "it's don't we're they've I'm you'll he'd IT'S She'LL it’s",
    "café naïve résumé Ångström façade ÉCOLE crème brûlée",
    "Ελληνικά Русский текст עברית العربية हिन्दी ไทย Tiếng Việt",
    "東京タワー 中文字符 한국어 日本語のテキスト",
    "🙂👍🏽 ❤️ 👨‍👩‍👧 ✨ 🇫🇷 ☕️",
    "  multiple   spaces\tand\ttabs\nnewlines\r\n  \u00a0nbsp\u2003em\u2028line\u2029para\u3000ideo  ",
    "a <|startoftext|> b <|endoftext|>c<|endoftext|><|endoftext|>d <|ENDOFTEXT|>",
    "null\x00char\x07bell\ufffdrepl\u200bzwsp\u00adsoft\x0bvt\x0cff\x1cfs\x85nel\ue000pua",
    "ΟΔΟΣ ΣΑΣ ΣΊΣΥΦΟΣ İstanbul ß STRASSE ﬁ ligature ℌ ½ ² Ⅻ ①",
    "x\u0301 \u0301 e\u0301\u0302 n\u0303 a\u030a",
    " ".join(["photograph"] * 40), "a " * 75, "a " * 76, "ab " * 80,
    ("a highly detailed matte painting of a castle on a hill surrounded by a misty forest at dawn, "
     "dramatic lighting, volumetric fog, by greg rutkowski and alphonse mucha, trending on artstation, "
     "unreal engine, octane render, 8k, ultra realistic, sharp focus, intricate details, concept art"),
]
BYTE_TEXTS = [b"abc\xff\xfedef", b"\xe2\x82", b"caf\xc3", b"caf\xc3 x", b"\xed\xa0\x80 surrogate",
              b"\xf4\x90\x80\x80 past max", b"\xc0\xaf overlong", b"\xe2\x82A\xf0\x9f\x99", b"\x80\x80\x80"]


def random_texts(rng, n):
    """Mixed-script strings: letters, digits, marks, punctuation, symbols,
    spaces and controls drawn from many blocks."""
    pools = [(0x20, 0x7E), (0xA0, 0x24F), (0x300, 0x36F), (0x370, 0x3FF), (0x400, 0x4FF), (0x590, 0x6FF),
             (0x900, 0x97F), (0xE00, 0xE7F), (0x1E00, 0x1EFF), (0x2000, 0x206F), (0x20A0, 0x20CF),
             (0x2100, 0x218F), (0x2460, 0x24FF), (0x3000, 0x30FF), (0x4E00, 0x4E80), (0xAC00, 0xAC80),
             (0xFB00, 0xFB4F), (0xFF00, 0xFFEF), (0x1F300, 0x1F6FF), (0x0, 0x1F)]
    out = []
    for _ in range(n):
        chars = []
        for _ in range(rng.randint(1, 60)):
            lo, hi = pools[rng.randrange(len(pools))]
            chars.append(chr(rng.randint(lo, hi)))
        out.append("".join(chars))
    return out


def random_bytes(rng, n):
    out = []
    for _ in range(n):
        b = bytearray()
        for _ in range(rng.randint(1, 50)):
            r = rng.random()
            b += bytes([rng.randint(0x61, 0x7A)]) if r < 0.5 else chr(rng.randint(0x80, 0x2FFF)).encode() \
                if r < 0.7 else bytes([rng.randint(0, 255)])
        out.append(bytes(b))
    return out


def load_clip_tokenizer(transformers_git, transformers_rev, work):
    extract(transformers_git, transformers_rev, TOKENIZER_FILES, work)
    root = os.path.join(work, "src", "transformers")
    # The package's __init__ (version checks, lazy imports) is not needed:
    # the three package levels are bare namespace modules.
    for name, path in (("transformers", root), ("transformers.models", os.path.join(root, "models")),
                       ("transformers.models.clip", os.path.join(root, "models", "clip"))):
        module = types.ModuleType(name)
        module.__path__ = [path]
        sys.modules[name] = module
    sys.modules["transformers"].__version__ = "4.27.1"
    sys.modules["ftfy"] = None  # import ftfy -> ImportError: the BasicTokenizer path
    install_stubs()
    from transformers.models.clip.tokenization_clip import CLIPTokenizer
    from transformers import tokenization_utils_base
    # Without the `tokenizers` package transformers falls back to a dataclass
    # AddedToken whose str() is its repr; the real one's is its content.
    tokenization_utils_base.AddedToken.__str__ = lambda self: self.content
    return CLIPTokenizer


def tokenizer_cases(out, transformers_git, transformers_rev):
    work = tempfile.mkdtemp(prefix="rsam-clip-tokenizer-")
    try:
        CLIPTokenizer = load_clip_tokenizer(transformers_git, transformers_rev, work)
        folder = os.path.join(out, "tokenizer")
        shutil.rmtree(folder, ignore_errors=True)
        merges = learn_bpe(CORPUS, 300)
        vocab = clip_vocab(merges, {"".join(m) for m in merges[7::60]} | {"ðŁ", "ĥ</w>"})
        tokenizer_folder(os.path.join(folder, "sd2"), vocab, merges, "!")
        tokenizer_folder(os.path.join(folder, "sd1"), vocab, merges, "<|endoftext|>")
        rng = random.Random(39)
        texts = [(t, None) for t in TEXTS + random_texts(rng, 30)]
        texts += [(b.decode("utf-8", errors="replace"), b) for b in BYTE_TEXTS + random_bytes(rng, 20)]
        cases = []
        for name, path in (("sd2", "tokenizer/sd2"), ("sd1", "tokenizer/sd1"), ("tiny", "sd2/tokenizer")):
            tok = CLIPTokenizer.from_pretrained(os.path.join(out, path))
            assert tok.fix_text is None
            for text, raw in texts if name != "tiny" else texts[:12]:
                ids = tok(text, padding="max_length", max_length=tok.model_max_length, truncation=True).input_ids
                case = {"tokenizer": path, "tokens": tok.tokenize(text), "ids": ids}
                case.update({"hex": raw.hex()} if raw is not None else {"text": text})
                cases.append(case)
        with open(os.path.join(folder, "cases.json"), "w", encoding="utf-8") as f:
            json.dump({"reference": "transformers 4.27.1 CLIPTokenizer (slow, without ftfy), "
                                    "tok(text, padding='max_length', max_length=77, truncation=True)",
                       "cases": cases}, f, separators=(",", ":"), ensure_ascii=False)
            f.write("\n")
        return len(cases)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main():
    ap = reference_args(__doc__, "diffusion")
    ap.add_argument("--tokenizer-only", action="store_true", help="only tests/data/diffusion/tokenizer")
    args = ap.parse_args()
    out = os.path.abspath(args.out)
    if args.tokenizer_only:
        n = tokenizer_cases(out, args.transformers_git, args.transformers_rev)
        print(f"wrote {out}/tokenizer: {folder_bytes(os.path.join(out, 'tokenizer'))} bytes, {n} cases")
        return
    torch.set_num_threads(1)
    torch.manual_seed(39)  # the modules' default init draws from the global generator
    work = tempfile.mkdtemp(prefix="rsam-diffusion-ref-")
    try:
        UNet, DDIM, CLIP, CLIPConfig = load_references(args.diffusers_git, args.diffusers_rev,
                                                       args.transformers_git, args.transformers_rev, work)
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

        print(f"wrote {out}: {folder_bytes(out)} bytes; sd1 LoRA wraps {n} modules")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    # The tokenizer needs transformers' real utils, which the shims above replace.
    subprocess.run([sys.executable, os.path.abspath(__file__), "--tokenizer-only"] + sys.argv[1:], check=True)


if __name__ == "__main__":
    main()
