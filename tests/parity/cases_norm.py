"""Parity cases for layernorm, batchnorm1d and cross_entropy (rows in tests/rows/rows_norm.c).

Batch norm gets its running statistics as inputs without grad, in the order of the C row:
x, w, b, running_mean, running_var. Targets are stored as int32, as tessera takes them, and
made long inside the torch function.
"""
import torch
import torch.nn.functional as F


def randn(g, *shape, scale=1.0, rg=True):
    return (scale * torch.randn(*shape, generator=g)).requires_grad_(rg)


def bn_inputs(g):
    return [randn(g, 6, 5), randn(g, 5), randn(g, 5), randn(g, 5, scale=0.5, rg=False),
            0.5 + torch.rand(5, generator=g)]


def targets(g, ignore_rows=(), ignore_value=-100):
    t = torch.randint(0, 5, (6,), generator=g, dtype=torch.int32)
    for r in ignore_rows:
        t[r] = ignore_value
    return t


CASES = [
    ("layernorm", lambda g: [randn(g, 2, 3, 8), randn(g, 8), randn(g, 8)],
     lambda x, w, b: F.layer_norm(x, (8,), w, b, 1e-5)),
    ("layernorm_noaffine", lambda g: [randn(g, 2, 3, 8)],
     lambda x: F.layer_norm(x, (8,), None, None, 1e-5)),
    ("batchnorm1d_train", bn_inputs,
     lambda x, w, b, rm, rv: F.batch_norm(x, rm, rv, w, b, True, 0.1, 1e-5)),
    ("batchnorm1d_eval", bn_inputs,
     lambda x, w, b, rm, rv: F.batch_norm(x, rm, rv, w, b, False, 0.1, 1e-5)),
    ("cross_entropy", lambda g: [randn(g, 6, 5), targets(g)],
     lambda x, t: F.cross_entropy(x, t.long(), ignore_index=-100).reshape(1)),
    ("cross_entropy_ignore", lambda g: [randn(g, 6, 5), targets(g, (1, 4))],
     lambda x, t: F.cross_entropy(x, t.long(), ignore_index=-100).reshape(1)),
    ("cross_entropy_smooth", lambda g: [randn(g, 6, 5), targets(g)],
     lambda x, t: F.cross_entropy(x, t.long(), label_smoothing=0.1).reshape(1)),
    ("cross_entropy_ignore_smooth", lambda g: [randn(g, 6, 5), targets(g, (0, 3), 1)],
     lambda x, t: F.cross_entropy(x, t.long(), ignore_index=1,
                                  label_smoothing=0.2).reshape(1)),
]
