"""Parity cases for matmul and linear (rows in tests/rows/rows_matmul.c)."""
import torch
import torch.nn.functional as F


def randn(g, *shape, scale=1.0, rg=True):
    return (scale * torch.randn(*shape, generator=g)).requires_grad_(rg)


CASES = [
    ("matmul", lambda g: [randn(g, 2, 3, 4), randn(g, 4, 5)], lambda a, b: a @ b),
    ("matmul_tt", lambda g: [randn(g, 4, 3), randn(g, 5, 4)], lambda a, b: a.t() @ b.t()),
    ("bmm_tb", lambda g: [randn(g, 2, 2, 3, 4), randn(g, 2, 2, 5, 4)],
     lambda a, b: a @ b.transpose(-1, -2)),
    ("bmm_ta", lambda g: [randn(g, 3, 4, 2), randn(g, 3, 4, 5)],
     lambda a, b: a.transpose(-1, -2) @ b),
    ("linear", lambda g: [randn(g, 2, 3, 6), randn(g, 4, 6, scale=0.5), randn(g, 4)],
     F.linear),
]
