"""Parity cases for the shape group (rows in tests/rows/rows_shape.c).

Index inputs are torch.int32 tensors, as tessera's ops take i32 indices.
"""
import torch
import torch.nn.functional as F


def randn(g, *shape, scale=1.0, rg=True):
    return (scale * torch.randn(*shape, generator=g)).requires_grad_(rg)


def randint(g, hi, *shape):
    return torch.randint(0, hi, shape, generator=g, dtype=torch.int32)


def x234(g):
    return [randn(g, 2, 3, 4)]


def x2345(g):
    return [randn(g, 2, 3, 4, 5)]


def x354(g):
    return [randn(g, 3, 5, 4)]


def index_select(idx_dim, a_shape, n):
    def make(g):
        a = randn(g, *a_shape)
        return [a, randint(g, a_shape[idx_dim], n)]
    return make


CASES = [
    ("reshape", x234, lambda x: x.reshape(4, -1)),
    ("reshape_chain", x234, lambda x: (2.0 * x.reshape(2, 2, 3, 2)).reshape(6, 4)),
    ("permute_4d", x2345, lambda x: x.permute(2, 0, 3, 1)),
    ("permute_heads", x2345, lambda x: x.permute(0, 2, 1, 3)),
    ("transpose", x234, lambda x: x.transpose(0, -1)),
    ("concat_mid", lambda g: [randn(g, 2, 3, 4), randn(g, 2, 1, 4), randn(g, 2, 2, 4)],
     lambda *xs: torch.cat(xs, 1)),
    ("concat_first", lambda g: [randn(g, 1, 5), randn(g, 3, 5)], lambda *xs: torch.cat(xs, 0)),
    ("concat_last", lambda g: [randn(g, 2, 3, 2), randn(g, 2, 3, 3, rg=False)],
     lambda *xs: torch.cat(xs, -1)),
    ("concat_many", lambda g: [randn(g, 2, 1 + k % 2, 3) for k in range(6)],
     lambda *xs: torch.cat(xs, 1)),
    ("slice_mid", x354, lambda x: x.narrow(1, 1, 3)),
    ("slice_first", x354, lambda x: x[2:3]),
    ("slice_last", x354, lambda x: x[..., -3:4]),
    ("embedding", lambda g: [randn(g, 7, 5), randint(g, 7, 2, 6)],
     lambda table, ids: F.embedding(ids, table)),
    ("index_select", index_select(1, (3, 5, 4), 7), lambda a, i: a.index_select(1, i)),
    ("index_select_dim0", index_select(0, (4, 6), 5), lambda a, i: a.index_select(0, i)),
]
