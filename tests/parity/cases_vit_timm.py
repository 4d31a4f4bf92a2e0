"""Parity cases for the timm flavour of the ViT tower (rows in tests/rows/rows_vit_timm.c)
against timm's own VisionTransformer (timm/models/vision_transformer.py).

timm is pinned (1.0.31, checked to import and run on Debian's torch 1.13 and torchvision 0.14;
its hub and safetensors imports are optional and left out) and installed with --no-deps into the
same venv as open_clip by the parity_openclip_venv test (tests/CMakeLists.txt); TS_OPEN_CLIP_VENV
names that venv. Without timm these cases are left out with a warning, and the vit_timm_* rows of
the parity test then fail with "no case of this name".

Tower cases are laid out as cases_vit.py's: in0 the images (B, 3, H, W), in1 every parameter
flattened in timm's named_parameters() order (random values, not timm's init), in2 their names
joined by newlines (u8); the model runs through torch.nn.utils.stateless.functional_call, so the
gradient of in1 is every parameter's gradient.

The load case shows that a timm state_dict saved as safetensors loads in tessera by name: in0 is
the bytes of a safetensors file written from a timm model's state_dict (with the writer of
reference.py, the format itself), in1 the images; the C row writes the bytes to a file, builds
the tower, loads it with ts_vit_load and runs it. Its positional table is stored for a 4x4 grid
and the model runs on 6x6, so the load also resamples it, compared with timm's own
resample_abs_pos_embed (antialiased bicubic, as open_clip).
"""
import glob
import os
import sys
import tempfile

import torch
from torch.nn.utils import stateless

TIMM_VERSION = "1.0.31"


def _import_timm():
    venv = os.environ.get("TS_OPEN_CLIP_VENV")
    if venv:
        for site in sorted(glob.glob(os.path.join(venv, "lib", "python3*", "site-packages"))):
            if site not in sys.path:
                sys.path.append(site)
    try:
        import timm
        import timm.layers
        import timm.models.vision_transformer
    except ImportError as e:
        print(f"cases_vit_timm.py: timm is not importable ({e}); the timm ViT cases are left out "
              f"(TS_OPEN_CLIP_VENV={venv!r})", file=sys.stderr)
        return None
    if timm.__version__ != TIMM_VERSION:
        print(f"cases_vit_timm.py: warning: timm {timm.__version__}, the cases were written "
              f"against {TIMM_VERSION}", file=sys.stderr)
    return timm


timm = _import_timm()

# name -> (batch, image (H, W), patch, width, layers, heads, mlp_ratio, classes, global_pool,
# output the token sequence). rows_vit_timm.c has the same table.
TOWERS = {
    "vit_timm_tok": (2, (32, 32), 8, 32, 2, 4, 4.0, 10, "token", False),
    "vit_timm_avg": (2, (32, 32), 8, 32, 2, 4, 4.0, 10, "avg", False),
    "vit_timm_tok_nohead_rect": (3, (24, 40), 8, 24, 1, 3, 2.0, 0, "token", False),
    "vit_timm_tok_tokens": (2, (32, 32), 8, 32, 2, 4, 4.0, 10, "token", True),
    "vit_timm_patch7_avg": (2, (28, 21), 7, 16, 2, 2, 4.0, 5, "avg", False),
}


def build_tower(spec, image=None):
    _, img, patch, width, layers, heads, mlp_ratio, classes, pool, _ = spec
    m = timm.models.vision_transformer.VisionTransformer(
        img_size=image or img, patch_size=patch, embed_dim=width, depth=layers, num_heads=heads,
        mlp_ratio=mlp_ratio, num_classes=classes, global_pool=pool, qkv_bias=True)
    return m.eval()


def random_params(m, g):
    """Random values for every parameter: N(0, 0.2^2) for vectors (norm weights around 1),
    N(0, 1/fan_in) for matrices, so that a wrong name or order cannot hide behind ones and
    zeros."""
    out = {}
    for name, p in m.named_parameters():
        scale = 0.2 if p.dim() == 1 else 1.0 / (p.shape[-1] ** 0.5)
        shift = 1.0 if name.endswith("norm1.weight") or name.endswith("norm2.weight") or \
            name in ("norm.weight", "fc_norm.weight") else 0.0
        out[name] = scale * torch.randn(p.shape, generator=g) + shift
    return out


def tower_inputs(spec):
    def make(g):
        m = build_tower(spec)
        params = random_params(m, g)
        images = torch.randn(spec[0], 3, *spec[1], generator=g).requires_grad_(True)
        flat = torch.cat([v.reshape(-1) for v in params.values()]).requires_grad_(True)
        text = torch.tensor(list("\n".join(params).encode()), dtype=torch.uint8)
        return [images, flat, text]
    return make


def tower_fn(spec):
    tokens_out = spec[9]

    def fn(images, flat, names):
        m = build_tower(spec)
        params, off = {}, 0
        for name, p in m.named_parameters():
            params[name] = flat[off:off + p.numel()].view(p.shape)
            off += p.numel()
        assert off == flat.numel()
        assert "\n".join(params).encode() == bytes(names.tolist())
        if tokens_out:
            return _features(m, params, images)
        return stateless.functional_call(m, params, (images,))
    return fn


def _features(m, params, images):
    """timm's forward_features: the sequence after `norm` (B, T, C)."""
    class Features(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner.forward_features(x)
    return stateless.functional_call(Features(m), {"inner." + k: v for k, v in params.items()},
                                     (images,))


# ---- a timm state_dict saved as safetensors, loaded by name ----

LOAD = (2, (24, 24), 4, 16, 2, 2, 4.0, 7, "token", False)  # stored at 16x16 (a 4x4 grid)
LOAD_RUN_IMAGE = (24, 24)                                  # run at a 6x6 grid


def load_inputs(g):
    import numpy as np
    here = os.path.dirname(os.path.abspath(__file__))
    if here not in sys.path:
        sys.path.insert(0, here)
    from reference import write_safetensors
    stored = build_tower(LOAD, image=(16, 16))
    with torch.no_grad():
        for name, v in random_params(stored, g).items():
            stored.get_parameter(name).copy_(v)
    sd = {k: v.detach().numpy().astype(np.float32) for k, v in stored.state_dict().items()}
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "timm.safetensors")
        write_safetensors(path, sd, {"format": "pt"})
        with open(path, "rb") as f:
            blob = f.read()
    images = torch.randn(LOAD[0], 3, *LOAD_RUN_IMAGE, generator=g).requires_grad_(True)
    return [torch.tensor(list(blob), dtype=torch.uint8), images]


def load_fn(blob, images):
    import json
    import struct

    import numpy as np
    raw = bytes(blob.tolist())
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    sd = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        sd[k] = torch.from_numpy(np.frombuffer(raw[8 + n + a:8 + n + b], dtype=np.float32)
                                 .reshape(v["shape"]).copy())
    # timm's own loading path for another image size: resample the table, then load by name.
    m = build_tower(LOAD, image=LOAD_RUN_IMAGE)
    sd["pos_embed"] = timm.layers.resample_abs_pos_embed(
        sd["pos_embed"], new_size=m.patch_embed.grid_size, num_prefix_tokens=1)
    m.load_state_dict(sd, strict=True)
    return m(images)


CASES = []
if timm is not None:
    CASES += [(name, tower_inputs(spec), tower_fn(spec)) for name, spec in TOWERS.items()]
    CASES += [("vit_timm_load_safetensors", load_inputs, load_fn)]
