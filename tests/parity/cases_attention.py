"""Parity cases for the fused attention op (rows in tests/rows/rows_attention.c).

torch 1.13 has no F.scaled_dot_product_attention, so the reference is written out:
softmax(q k^T * scale + mask) v. The softmax is spelled by hand so that a row whose keys are
all masked gives zeros (and zero gradients) instead of NaN, which is tessera's contract.
key_pad is a uint8 or int32 input without grad, nonzero = padding.
"""
import math

import torch


def randn(g, *shape, scale=1.0, rg=True):
    return (scale * torch.randn(*shape, generator=g)).requires_grad_(rg)


def attention(q, k, v, causal=False, key_pad=None, scale=None):
    scale = scale if scale else 1.0 / math.sqrt(q.shape[-1])
    s = (q @ k.transpose(-1, -2)) * scale               # (B, H, Tq, Tk)
    Tq, Tk = s.shape[-2], s.shape[-1]
    mask = torch.zeros(Tq, Tk, dtype=torch.bool)
    if causal:
        mask = torch.ones(Tq, Tk, dtype=torch.bool).triu(1)
    mask = mask.expand(s.shape[0], 1, Tq, Tk)
    if key_pad is not None:
        mask = mask | (key_pad != 0)[:, None, None, :]
    s = s.masked_fill(mask, float("-inf"))
    m = s.amax(dim=-1, keepdim=True).detach()
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    e = torch.exp(s - m)
    den = e.sum(dim=-1, keepdim=True)
    p = e / torch.where(den > 0, den, torch.ones_like(den))
    return p @ v


def attention_kv(q, kv, heads, key_pad):
    """ts_attention_kv: q (B, Tq, C), kv (B, Tk, 2C) columns [k | v], heads side by side."""
    B, Tq, C = q.shape
    Tk, D = kv.shape[1], C // heads
    split = lambda x, T: x.reshape(B, T, heads, D).permute(0, 2, 1, 3)
    y = attention(split(q, Tq), split(kv[..., :C], Tk), split(kv[..., C:], Tk), key_pad=key_pad)
    return y.permute(0, 2, 1, 3).reshape(B, Tq, C)


def qkv(g, B, H, Tq, Tk, D):
    return [randn(g, B, H, Tq, D), randn(g, B, H, Tk, D), randn(g, B, H, Tk, D)]


def pad_mask(dtype, B, T, padded):
    return torch.tensor([[int(padded(b, j)) for j in range(T)] for b in range(B)], dtype=dtype)


# The same masks as rows_attention.c.
def pad_u8(b, j):
    return j >= 130 if b == 0 else (j < 128 or j >= 135) if b == 1 else True


def pad_i32(b, j):
    return b == 0 and (5 <= j < 10 or j >= 135)


def pad_causal(b, j):
    return b == 0 and j < 3


def pad_short(b, j):
    return j >= 7 if b == 0 else b == 2


def pad_long(b, j):
    return (j < 3 or j >= 256) if b == 0 else j >= 290


CASES = [
    ("attention", lambda g: qkv(g, 2, 2, 140, 140, 8), lambda q, k, v: attention(q, k, v)),
    ("attention_causal", lambda g: qkv(g, 2, 2, 140, 140, 8),
     lambda q, k, v: attention(q, k, v, causal=True)),
    ("attention_keypad",
     lambda g: qkv(g, 3, 1, 140, 140, 8) + [pad_mask(torch.uint8, 3, 140, pad_u8)],
     lambda q, k, v, m: attention(q, k, v, key_pad=m)),
    ("attention_causal_keypad",
     lambda g: qkv(g, 2, 1, 140, 140, 8) + [pad_mask(torch.uint8, 2, 140, pad_causal)],
     lambda q, k, v, m: attention(q, k, v, causal=True, key_pad=m)),
    ("attention_cross",
     lambda g: qkv(g, 2, 2, 20, 140, 8) + [pad_mask(torch.int32, 2, 140, pad_i32)],
     lambda q, k, v, m: attention(q, k, v, key_pad=m)),
    ("attention_scale", lambda g: qkv(g, 1, 1, 140, 140, 8),
     lambda q, k, v: attention(q, k, v, scale=0.2)),
    ("attention_long", lambda g: qkv(g, 2, 2, 300, 300, 8), lambda q, k, v: attention(q, k, v)),
    ("attention_long_causal_keypad",
     lambda g: qkv(g, 2, 1, 300, 300, 8) + [pad_mask(torch.uint8, 2, 300, pad_long)],
     lambda q, k, v, m: attention(q, k, v, causal=True, key_pad=m)),
    ("attention_long_causal_one", lambda g: qkv(g, 1, 1, 300, 300, 8),
     lambda q, k, v: attention(q, k, v, causal=True)),
    ("attention_short", lambda g: qkv(g, 2, 2, 16, 16, 8), lambda q, k, v: attention(q, k, v)),
    ("attention_short_causal_keypad",
     lambda g: qkv(g, 2, 1, 32, 32, 8) + [pad_mask(torch.uint8, 2, 32, pad_causal)],
     lambda q, k, v, m: attention(q, k, v, causal=True, key_pad=m)),
    ("attention_short_cross",
     lambda g: qkv(g, 3, 2, 16, 10, 24) + [pad_mask(torch.int32, 3, 10, pad_short)],
     lambda q, k, v, m: attention(q, k, v, key_pad=m)),
    ("attention_kv",
     lambda g: [randn(g, 3, 16, 12), randn(g, 3, 10, 24), pad_mask(torch.int32, 3, 10, pad_short)],
     lambda q, kv, m: attention_kv(q, kv, 2, m)),
    ("attention_kv_block",
     lambda g: [randn(g, 2, 40, 8), randn(g, 2, 140, 16), pad_mask(torch.int32, 2, 140, pad_i32)],
     lambda q, kv, m: attention_kv(q, kv, 2, m)),
]
