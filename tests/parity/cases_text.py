"""Parity cases for the CLIP text tower (rows in tests/rows/rows_text.c) against open_clip itself.

The reference is open_clip's own code, not a rewrite: its TextTransformer for the forward and
backward cases (causal as CLIP, and bidirectional with its pad mask), the text half of its CLIP
model (encode_text, whose parameters sit at the model's top level), and _build_text_tower on its
model configs for the parameter counts. open_clip is imported from the venv that the
parity_openclip_venv test makes (tests/CMakeLists.txt), exactly as cases_vit.py does; without it
these cases are left out with a warning and the text rows of the parity test fail by name.

Tower cases: in0 the token ids (B, L) i32, made as open_clip's tokenizer makes them (start id,
random ids, end id, zero padding, varied lengths), in1 every parameter flattened and
concatenated in the order of the module's named_parameters(), in2 their names joined by
newlines (u8), so the C row can check names and order. Parameters are random (not open_clip's
init, whose ones and zeros would hide mistakes) and reach the model through
torch.nn.utils.stateless.functional_call, so the gradient of in1 is every parameter's gradient.
To regenerate: ctest -R parity (or tests/parity/reference.py OUT with TS_OPEN_CLIP_VENV set).
"""
import os
import sys

import torch
from torch.nn.utils import stateless

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cases_vit import oc  # noqa: E402  the same pinned open_clip, imported once

# name -> (batch, L, context, vocab, width, layers, heads, mlp_ratio, out_dim, quick_gelu,
# causal, pad_mask, pool_type, eos_id, output tokens). rows_text.c has the same table. The
# causal tower takes L == context only (open_clip does not cut its causal mask); the
# bidirectional one also shorter inputs (positional_embedding[:L]).
TOWERS = {
    "text_gelu_causal": (3, 12, 12, 50, 32, 2, 4, 4.0, 16, False, True, False, "argmax", 0, False),
    "text_quickgelu_causal": (3, 12, 12, 50, 32, 2, 4, 4.0, 16, True, True, False, "argmax", 0,
                              False),
    "text_gelu_causal_tokens": (2, 10, 10, 40, 24, 2, 3, 4.0, 8, False, True, False, "argmax", 0,
                                True),
    "text_quickgelu_mlp2": (2, 7, 7, 40, 16, 1, 2, 2.0, 8, True, True, False, "argmax", 0,
                            False),
    "text_gelu_bidir_pad": (3, 12, 12, 50, 32, 2, 4, 4.0, 16, False, False, True, "first", 0,
                            True),
    "text_quickgelu_bidir_eos": (3, 12, 12, 50, 32, 2, 4, 4.0, 0, True, False, True, "eos", 49,
                                 False),
    "text_gelu_bidir_nopad_last": (2, 9, 12, 30, 16, 1, 4, 4.0, 8, False, False, False, "last", 0,
                                   False),
}


def build_tower(spec):
    (_, _, ctx, vocab, width, layers, heads, mlp, out_dim, quick, causal, pad_mask, pool, eos,
     tokens) = spec
    act = oc.transformer.QuickGELU if quick else torch.nn.GELU
    m = oc.transformer.TextTransformer(
        context_length=ctx, vocab_size=vocab, width=width, heads=heads, layers=layers,
        mlp_ratio=mlp, output_dim=out_dim, no_causal_mask=not causal, use_pad_mask=pad_mask,
        pad_id=0, eos_id=eos, pool_type=pool, act_layer=act, output_tokens=tokens)
    return m.eval()


def make_ids(g, batch, L, vocab):
    """Rows as open_clip's tokenizer writes them: start (vocab - 2), ids, end (vocab - 1), zeros.
    The last row fills the whole context."""
    ids = torch.zeros(batch, L, dtype=torch.int32)
    for b in range(batch):
        n = L if b == batch - 1 else int(torch.randint(3, L + 1, (1,), generator=g))
        ids[b, 0] = vocab - 2
        ids[b, 1:n - 1] = torch.randint(1, vocab - 2, (n - 2,), generator=g, dtype=torch.int32)
        ids[b, n - 1] = vocab - 1
    return ids


def flat_params(g, named, ln_names):
    names, flat = [], []
    for name, p in named:
        names.append(name)
        scale = 0.2 if p.dim() == 1 else 1.0 / (p.shape[-1] ** 0.5)
        shift = 1.0 if any(name.endswith(s) for s in ln_names) else 0.0
        flat.append((scale * torch.randn(p.shape, generator=g) + shift).reshape(-1))
    flat = torch.cat(flat).requires_grad_(True)
    text = torch.tensor(list("\n".join(names).encode()), dtype=torch.uint8)
    return flat, text


LN_WEIGHTS = ("ln_1.weight", "ln_2.weight", "ln_final.weight")


def tower_inputs(spec):
    def make(g):
        batch, L, _, vocab = spec[:4]
        m = build_tower(spec)
        flat, names = flat_params(g, m.named_parameters(), LN_WEIGHTS)
        return [make_ids(g, batch, L, vocab), flat, names]
    return make


def bind(m, flat, names):
    params, off = {}, 0
    for name, p in m.named_parameters():
        params[name] = flat[off:off + p.numel()].view(p.shape)
        off += p.numel()
    assert off == flat.numel()
    assert "\n".join(params).encode() == bytes(names.tolist())
    return params


def tower_fn(spec):
    def fn(ids, flat, names):
        m = build_tower(spec)
        out = stateless.functional_call(m, bind(m, flat, names), (ids.long(),))
        return out[1] if spec[14] else out
    return fn


# The text half of a CLIP model: its parameters at the top level (positional_embedding,
# text_projection, transformer.*, token_embedding.weight, ln_final.*), in CLIP's order, which
# differs from TextTransformer's; the C row finds them by name. QuickGELU, causal, argmax.
CLIP_SPEC = dict(embed_dim=16, quick_gelu=True,
                 vision_cfg=dict(image_size=16, patch_size=8, width=16, layers=1, head_width=8),
                 text_cfg=dict(context_length=12, vocab_size=50, width=32, heads=4, layers=2))


def clip_model():
    return oc.model.CLIP(**CLIP_SPEC).eval()


def clip_text_named(m):
    return [(n, p) for n, p in m.named_parameters()
            if not n.startswith("visual.") and n not in ("logit_scale", "logit_bias")]


def clip_inputs(g):
    m = clip_model()
    flat, names = flat_params(g, clip_text_named(m), LN_WEIGHTS)
    return [make_ids(g, 3, 12, 50), flat, names]


def clip_fn(ids, flat, names):
    m = clip_model()
    params, off = {}, 0
    for name, p in clip_text_named(m):
        params[name] = flat[off:off + p.numel()].view(p.shape)
        off += p.numel()
    assert off == flat.numel() and "\n".join(params).encode() == bytes(names.tolist())

    class EncodeText(torch.nn.Module):
        def __init__(self, clip):
            super().__init__()
            self.clip = clip

        def forward(self, text):
            return self.clip.encode_text(text)
    wrapper = EncodeText(m)
    return stateless.functional_call(wrapper, {"clip." + k: v for k, v in params.items()},
                                     (ids.long(),))


# Parameter counts of open_clip's text towers, built by open_clip from its model configs.
# rows_text.c lists the same names in the same order.
COUNTED = ["ViT-B-32", "ViT-L-14", "ViT-H-14", "ViT-S-16", "ViT-B-16-plus", "ViT-B-16-quickgelu"]


def count_inputs(g):
    counts = []
    for name in COUNTED:
        cfg = oc.factory.get_model_config(name)
        tower = oc.model._build_text_tower(cfg["embed_dim"], cfg["text_cfg"],
                                           quick_gelu=cfg.get("quick_gelu", False))
        counts.append(sum(p.numel() for p in tower.parameters()))
        del tower
    return [torch.tensor(counts, dtype=torch.int64)]


CASES = []
if oc is not None:
    CASES += [(name, tower_inputs(spec), tower_fn(spec)) for name, spec in TOWERS.items()]
    CASES += [("text_clip_encode_text", clip_inputs, clip_fn)]
    # The output is ours minus open_clip's count, so the reference is zeros.
    CASES += [("text_param_counts", count_inputs, lambda counts: torch.zeros(len(COUNTED)))]
