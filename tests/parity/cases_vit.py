"""Parity cases for the ViT image tower (rows in tests/rows/rows_vit.c) against open_clip itself.

The reference is open_clip's own code, not a rewrite: its VisionTransformer for the forward and
backward cases, its resize_pos_embed for the positional-table resampling, and its
_build_vision_tower on its model configs for the parameter counts. open_clip_torch is pinned
(3.3.0, the newest release checked to import and run on Debian's torch 1.13) and installed with
--no-deps into a venv under the build tree by the parity_openclip_venv test (tests/CMakeLists.txt);
TS_OPEN_CLIP_VENV names that venv. Without open_clip these cases are left out with a warning,
and the ViT rows of the parity test then fail with "no case of this name".

Tower cases: in0 the images (B, 3, H, W), in1 every parameter flattened and concatenated in
the order of open_clip's named_parameters(), in2 their names joined by newlines (u8), so the C
row can check that its names and order are open_clip's. The parameters are random (not
open_clip's init, whose ones and zeros would hide mistakes) and reach the model through
torch.nn.utils.stateless.functional_call, so the gradient of in1 is every parameter's gradient.
"""
import glob
import os
import sys
import types

import torch
from torch.nn.utils import stateless

OPEN_CLIP_VERSION = "3.3.0"


def _import_open_clip():
    venv = os.environ.get("TS_OPEN_CLIP_VENV")
    if venv:
        for site in sorted(glob.glob(os.path.join(venv, "lib", "python3*", "site-packages"))):
            if site not in sys.path:
                sys.path.append(site)
    try:
        import open_clip
        import open_clip.model
        import open_clip.transformer
    except ImportError as e:
        print(f"cases_vit.py: open_clip is not importable ({e}); the ViT cases are left out "
              f"(TS_OPEN_CLIP_VENV={venv!r})", file=sys.stderr)
        return None
    if open_clip.__version__ != OPEN_CLIP_VERSION:
        print(f"cases_vit.py: warning: open_clip {open_clip.__version__}, the cases were written "
              f"against {OPEN_CLIP_VERSION}", file=sys.stderr)
    return open_clip


oc = _import_open_clip()

# The tower cases: name -> (batch, image (H, W), patch, width, layers, heads, mlp_ratio,
# out_dim, quick_gelu, pool_type, output the token sequence). rows_vit.c has the same table.
TOWERS = {
    "vit_gelu_tok": (2, (32, 32), 8, 32, 2, 4, 4.0, 16, False, "tok", False),
    "vit_quickgelu_tok": (2, (32, 32), 8, 32, 2, 4, 4.0, 16, True, "tok", False),
    "vit_gelu_avg": (2, (32, 32), 8, 32, 2, 4, 4.0, 16, False, "avg", False),
    "vit_quickgelu_avg_rect": (3, (24, 40), 8, 24, 1, 3, 2.0, 12, True, "avg", False),
    "vit_gelu_tok_tokens": (2, (32, 32), 8, 32, 2, 4, 4.0, 16, False, "tok", True),
    "vit_patch7_tok": (2, (28, 21), 7, 16, 2, 2, 4.0, 8, False, "tok", False),
}


def build_tower(spec):
    _, image, patch, width, layers, heads, mlp_ratio, out_dim, quick, pool, _ = spec
    act = oc.transformer.QuickGELU if quick else torch.nn.GELU
    m = oc.transformer.VisionTransformer(
        image_size=image, patch_size=patch, width=width, layers=layers, heads=heads,
        mlp_ratio=mlp_ratio, output_dim=out_dim, act_layer=act, pool_type=pool)
    return m.eval()


def tower_inputs(spec):
    def make(g):
        batch, image = spec[0], spec[1]
        m = build_tower(spec)
        names, flat = [], []
        for name, p in m.named_parameters():
            names.append(name)
            scale = 0.2 if p.dim() == 1 else 1.0 / (p.shape[-1] ** 0.5)
            shift = 1.0 if name.endswith("ln_1.weight") or name.endswith("ln_2.weight") or \
                name in ("ln_pre.weight", "ln_post.weight") else 0.0
            flat.append((scale * torch.randn(p.shape, generator=g) + shift).reshape(-1))
        images = torch.randn(batch, 3, image[0], image[1], generator=g).requires_grad_(True)
        flat = torch.cat(flat).requires_grad_(True)
        text = torch.tensor(list("\n".join(names).encode()), dtype=torch.uint8)
        return [images, flat, text]
    return make


def tower_fn(spec):
    tokens_out = spec[10]

    def fn(images, flat, names):
        m = build_tower(spec)
        params, off = {}, 0
        for name, p in m.named_parameters():
            params[name] = flat[off:off + p.numel()].view(p.shape)
            off += p.numel()
        assert off == flat.numel()
        assert "\n".join(params).encode() == bytes(names.tolist())
        seen = []
        hook = m.ln_post.register_forward_hook(lambda mod, i, o: seen.append(o))
        pooled = stateless.functional_call(m, params, (images,))
        hook.remove()
        return seen[0] if tokens_out else pooled
    return fn


# Positional-table resampling through open_clip's resize_pos_embed: name -> (old grid side,
# new grid (h, w), width, antialias). The table has the class row first.
RESIZES = {
    "vit_pos_resize_4_to_6": (4, (6, 6), 8, True),
    "vit_pos_resize_6_to_4": (6, (4, 4), 8, True),
    "vit_pos_resize_4_to_3x6": (4, (3, 6), 8, True),
    "vit_pos_resize_4_to_6_plain": (4, (6, 6), 8, False),
    "vit_pos_resize_7_to_16": (7, (16, 16), 4, True),
}


def resize_inputs(spec):
    def make(g):
        side, _, width, _ = spec
        return [torch.randn(1 + side * side, width, generator=g)]
    return make


def resize_fn(spec):
    def fn(table):
        _, grid, _, antialias = spec
        sd = {"visual.positional_embedding": table.clone()}
        model = types.SimpleNamespace(visual=types.SimpleNamespace(grid_size=grid))
        oc.model.resize_pos_embed(sd, model, antialias=antialias)
        return sd["visual.positional_embedding"]
    return fn


# Parameter counts of open_clip's vision towers, built by open_clip from its model configs.
# rows_vit.c lists the same names in the same order.
COUNTED = ["ViT-B-32", "ViT-B-16", "ViT-L-14", "ViT-S-16", "ViT-B-16-quickgelu"]


def count_inputs(g):
    counts = []
    for name in COUNTED:
        cfg = oc.factory.get_model_config(name)
        tower = oc.model._build_vision_tower(cfg["embed_dim"], cfg["vision_cfg"],
                                             quick_gelu=cfg.get("quick_gelu", False))
        counts.append(sum(p.numel() for p in tower.parameters()))
        del tower
    return [torch.tensor(counts, dtype=torch.int64)]


CASES = []
if oc is not None:
    CASES += [(name, tower_inputs(spec), tower_fn(spec)) for name, spec in TOWERS.items()]
    CASES += [(name, resize_inputs(spec), resize_fn(spec)) for name, spec in RESIZES.items()]
    # The output is ours minus open_clip's count, so the reference is zeros.
    CASES += [("vit_param_counts", count_inputs, lambda counts: torch.zeros(len(COUNTED)))]
