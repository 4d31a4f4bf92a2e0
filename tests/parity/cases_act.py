"""Parity cases for the GELU family, softmax and log_softmax (rows in tests/rows/rows_act.c)."""
import torch
import torch.nn.functional as F


def randn(g, *shape, scale=1.0, rg=True):
    return (scale * torch.randn(*shape, generator=g)).requires_grad_(rg)


CASES = [
    ("gelu", lambda g: [randn(g, 2, 3, 5, scale=1.5)], F.gelu),
    ("gelu_tanh", lambda g: [randn(g, 2, 3, 5, scale=1.5)],
     lambda x: F.gelu(x, approximate="tanh")),
    ("bias_gelu", lambda g: [randn(g, 2, 3, 6, scale=1.5), randn(g, 6, scale=0.5)],
     lambda x, b: F.gelu(x + b)),
    ("quick_gelu", lambda g: [randn(g, 2, 3, 5, scale=1.5)],
     lambda x: x * torch.sigmoid(1.702 * x)),
    ("mish", lambda g: [randn(g, 2, 3, 5, scale=1.5)], F.mish),
    ("mish_wide", lambda g: [randn(g, 2, 3, 5, scale=40.0)], F.mish),
    ("softmax", lambda g: [randn(g, 2, 3, 5, scale=1.5)], lambda x: F.softmax(x, dim=-1)),
    ("log_softmax", lambda g: [randn(g, 2, 3, 5, scale=1.5)],
     lambda x: F.log_softmax(x, dim=-1)),
]
