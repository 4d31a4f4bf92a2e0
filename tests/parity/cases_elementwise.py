"""Parity cases for the elementwise group (rows in tests/rows/rows_elementwise.c).

ts_sum / ts_mean with TS_ALL return shape (1), so those cases reshape torch's 0-d result.
Dropout has no case: its mask comes from tessera's own RNG stream.
"""
import torch
import torch.nn.functional as F


def randn(g, *shape, scale=1.0, rg=True):
    return (scale * torch.randn(*shape, generator=g)).requires_grad_(rg)


def binary(bshape):
    return lambda g: [randn(g, 2, 3, 4), randn(g, *bshape)]


def x234(g):
    return [randn(g, 2, 3, 4)]


def l2n_eps_input(g):
    x = torch.randn(4, 5, generator=g)
    x[2:4] *= 0.05
    return [x.requires_grad_(True)]


CASES = [
    ("add", binary((2, 3, 4)), torch.add),
    ("add_bcast_last", binary((4,)), torch.add),
    ("add_bcast_tail2", binary((3, 4)), torch.add),
    ("add_scalar", binary((1,)), torch.add),
    ("sub", binary((2, 3, 4)), torch.sub),
    ("sub_bcast_tail2", binary((3, 4)), torch.sub),
    ("sub_scalar", binary((1,)), torch.sub),
    ("mul", binary((2, 3, 4)), torch.mul),
    ("mul_bcast_last", binary((4,)), torch.mul),
    ("mul_bcast_tail2", binary((3, 4)), torch.mul),
    ("mul_scalar", binary((1,)), torch.mul),
    ("scale", x234, lambda x: -1.5 * x),
    ("relu", x234, F.relu),
    ("exp", x234, torch.exp),
    ("log_sigmoid", lambda g: [randn(g, 2, 3, 4, scale=6.0)], F.logsigmoid),
    ("sum_dim0", x234, lambda x: x.sum(0)),
    ("sum_dim1", x234, lambda x: x.sum(1)),
    ("sum_dim_last", x234, lambda x: x.sum(-1)),
    ("sum_all", x234, lambda x: x.sum().reshape(1)),
    ("mean_dim0", x234, lambda x: x.mean(0)),
    ("mean_dim1", x234, lambda x: x.mean(1)),
    ("mean_dim2", x234, lambda x: x.mean(2)),
    ("mean_all", x234, lambda x: x.mean().reshape(1)),
    ("l2_normalize", x234, lambda x: F.normalize(x, dim=-1, eps=1e-12)),
    ("l2_normalize_eps", l2n_eps_input, lambda x: F.normalize(x, dim=-1, eps=0.5)),
]
