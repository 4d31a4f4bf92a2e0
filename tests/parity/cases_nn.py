"""Parity cases for the nn blocks and the optimizers (rows in tests/rows/rows_nn.c).

The attention cases go through torch.nn.functional.multi_head_attention_forward, the function
behind torch.nn.MultiheadAttention; the block is open_clip's ResidualAttentionBlock written out:
x + attn(ln_1(x)), then + mlp(ln_2(x)) with c_fc, activation, c_proj.
"""
import numpy as np
import torch
import torch.nn.functional as F

B, T, C, H = 2, 5, 8, 2


def randn(g, *shape, scale=1.0, rg=True, shift=0.0):
    return (scale * torch.randn(*shape, generator=g) + shift).requires_grad_(rg)


def mlp_inputs(g):
    return [randn(g, 2, 3, 6), randn(g, 12, 6, scale=0.4), randn(g, 12, scale=0.1),
            randn(g, 6, 12, scale=0.3), randn(g, 6, scale=0.1)]


def quick_gelu(x):
    return x * torch.sigmoid(1.702 * x)


def mlp(act):
    return lambda x, w1, b1, w2, b2: F.linear(act(F.linear(x, w1, b1)), w2, b2)


def mha_inputs(g):
    return [randn(g, B, T, C), randn(g, 3 * C, C, scale=0.4), randn(g, 3 * C, scale=0.1),
            randn(g, C, C, scale=0.4), randn(g, C, scale=0.1)]


def mha_pad_inputs(g):
    xs = mha_inputs(g)
    pad = torch.zeros(B, T, dtype=torch.int32)
    pad[0, T - 1] = 1
    pad[1, T - 2:] = 1
    return xs + [pad]


def mha(x, in_w, in_b, out_w, out_b, causal=False, pad=None):
    mask = None
    if causal:
        mask = torch.triu(torch.full((T, T), float("-inf")), diagonal=1)
    y, _ = F.multi_head_attention_forward(
        x.transpose(0, 1), x.transpose(0, 1), x.transpose(0, 1), C, H, in_w, in_b, None, None,
        False, 0.0, out_w, out_b, training=False,
        key_padding_mask=None if pad is None else pad.bool(), need_weights=False, attn_mask=mask)
    return y.transpose(0, 1)


def block_inputs(g):
    return [randn(g, B, T, C),
            randn(g, C, scale=0.2, shift=1.0), randn(g, C, scale=0.2),
            randn(g, 3 * C, C, scale=0.4), randn(g, 3 * C, scale=0.1),
            randn(g, C, C, scale=0.4), randn(g, C, scale=0.1),
            randn(g, C, scale=0.2, shift=1.0), randn(g, C, scale=0.2),
            randn(g, 4 * C, C, scale=0.3), randn(g, 4 * C, scale=0.1),
            randn(g, C, 4 * C, scale=0.2), randn(g, C, scale=0.1)]


def block(act, causal):
    def fn(x, l1w, l1b, iw, ib, ow, ob, l2w, l2b, fw, fb, pw, pb):
        x = x + mha(F.layer_norm(x, (C,), l1w, l1b, 1e-5), iw, ib, ow, ob, causal=causal)
        return x + mlp(act)(F.layer_norm(x, (C,), l2w, l2b, 1e-5), fw, fb, pw, pb)
    return fn


def optim_inputs(g):
    return [torch.randn(37, generator=g), torch.randn(3, 37, generator=g)]


def run_optim(make_opt):
    def fn(p0, grads):
        p = p0.clone().requires_grad_(True)
        opt = make_opt([p])
        for s in range(3):
            p.grad = grads[s].clone()
            opt.step()
        return p.detach()
    return fn


def sincos_1d(dim, pos):
    """MAE's get_1d_sincos_pos_embed_from_grid, in numpy as MAE writes it."""
    omega = np.arange(dim // 2, dtype=np.float64) / (dim / 2.0)
    omega = 1.0 / 10000 ** omega
    out = np.einsum("m,d->md", pos.reshape(-1).astype(np.float64), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def sincos_2d(dim, gh, gw, cls_token):
    """MAE's get_2d_sincos_pos_embed: meshgrid(w, h), first half from grid[0]."""
    grid = np.meshgrid(np.arange(gw, dtype=np.float32), np.arange(gh, dtype=np.float32))
    grid = np.stack(grid, axis=0).reshape([2, 1, gh, gw])
    emb = np.concatenate([sincos_1d(dim // 2, grid[0]), sincos_1d(dim // 2, grid[1])], axis=1)
    if cls_token:
        emb = np.concatenate([np.zeros([1, dim]), emb], axis=0)
    return torch.from_numpy(emb.astype(np.float32))


def placeholder(g):
    return [torch.zeros(1)]


CASES = [
    ("pos_sincos_1d", placeholder, lambda _: torch.from_numpy(
        sincos_1d(12, np.arange(7, dtype=np.float32)).astype(np.float32))),
    ("pos_sincos_2d_cls", placeholder, lambda _: sincos_2d(16, 3, 4, True)),
    ("nn_mlp_gelu", mlp_inputs, mlp(F.gelu)),
    ("nn_mlp_quick_gelu", mlp_inputs, mlp(quick_gelu)),
    ("nn_mha", mha_inputs, mha),
    ("nn_mha_causal", mha_inputs, lambda *a: mha(*a, causal=True)),
    ("nn_mha_key_padding", mha_pad_inputs, lambda *a: mha(*a[:5], pad=a[5])),
    ("nn_block", block_inputs, block(F.gelu, False)),
    ("nn_block_quick_gelu_causal", block_inputs, block(quick_gelu, True)),
    ("optim_adamw", optim_inputs,
     run_optim(lambda ps: torch.optim.AdamW(ps, lr=1e-2, betas=(0.9, 0.95), eps=1e-6,
                                            weight_decay=0.1))),
    ("optim_adamw_no_decay", optim_inputs,
     run_optim(lambda ps: torch.optim.AdamW(ps, lr=1e-2, betas=(0.9, 0.95), eps=1e-6,
                                            weight_decay=0.0))),
    ("optim_sgd_momentum", optim_inputs,
     run_optim(lambda ps: torch.optim.SGD(ps, lr=5e-2, momentum=0.9, weight_decay=1e-2))),
]
