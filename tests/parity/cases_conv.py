"""Parity cases for conv2d and depthwise conv2d (rows in tests/rows/rows_conv.c).
Depthwise is F.conv2d with groups = C."""
import torch
import torch.nn.functional as F


def randn(g, *shape, scale=1.0, rg=True):
    return (scale * torch.randn(*shape, generator=g)).requires_grad_(rg)


def dwconv(x, w, b=None, stride=1, padding=0):
    return F.conv2d(x, w, b, stride=stride, padding=padding, groups=x.shape[1])


CASES = [
    ("conv2d_s1p1", lambda g: [randn(g, 2, 3, 7, 6), randn(g, 4, 3, 3, 3, scale=0.5),
                               randn(g, 4)],
     lambda x, w, b: F.conv2d(x, w, b, stride=1, padding=1)),
    ("conv2d_s2", lambda g: [randn(g, 2, 3, 9, 8), randn(g, 5, 3, 3, 3, scale=0.5)],
     lambda x, w: F.conv2d(x, w, None, stride=2, padding=1)),
    ("conv2d_s2_bias", lambda g: [randn(g, 1, 2, 9, 10), randn(g, 3, 2, 3, 2, scale=0.5),
                                  randn(g, 3)],
     lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=0)),
    ("conv2d_patch", lambda g: [randn(g, 2, 3, 8, 12), randn(g, 6, 3, 4, 4, scale=0.5),
                                randn(g, 6)],
     lambda x, w, b: F.conv2d(x, w, b, stride=4)),
    ("conv2d_patch_nobias", lambda g: [randn(g, 2, 3, 8, 12), randn(g, 6, 3, 4, 4, scale=0.5)],
     lambda x, w: F.conv2d(x, w, None, stride=4)),
    ("dwconv2d_3x3", lambda g: [randn(g, 2, 4, 7, 9), randn(g, 4, 1, 3, 3, scale=0.5),
                                randn(g, 4)],
     lambda x, w, b: dwconv(x, w, b, stride=1, padding=1)),
    ("dwconv2d_s2", lambda g: [randn(g, 2, 3, 9, 8), randn(g, 3, 1, 3, 3, scale=0.5)],
     lambda x, w: dwconv(x, w, None, stride=2, padding=1)),
    ("dwconv2d_5x5", lambda g: [randn(g, 1, 2, 6, 21), randn(g, 2, 1, 5, 5, scale=0.5),
                                randn(g, 2)],
     lambda x, w, b: dwconv(x, w, b, stride=1, padding=2)),
]
