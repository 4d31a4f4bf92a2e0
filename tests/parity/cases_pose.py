"""Parity cases for the pose patch embedding (rows in tests/rows/rows_pose.c): frames grouped
in patches of p, each patch flattened (p*K*d) through a linear layer, plus the first T / p rows
of the position table."""
import torch
import torch.nn.functional as F

B, T, K, D, P, W = 2, 6, 4, 3, 2, 8


def randn(g, *shape, scale=1.0):
    return (scale * torch.randn(*shape, generator=g)).requires_grad_(True)


def inputs(max_patches):
    return lambda g: [randn(g, B, T, K, D, scale=0.5), randn(g, W, P * K * D, scale=0.3),
                      randn(g, W, scale=0.1), randn(g, max_patches, W, scale=0.2)]


def pose_embed(x, w, b, pos):
    n = x.shape[1] // P
    return F.linear(x.reshape(x.shape[0], n, P * K * D), w, b) + pos[:n]


CASES = [
    ("pose_embed", inputs(5), pose_embed),
    ("pose_embed_full", inputs(T // P), pose_embed),
]
