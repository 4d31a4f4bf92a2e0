"""Parity cases for the contrastive objectives (rows in tests/rows/rows_objectives.c).

The references are open_clip 3.3.0's ClipLoss (world size 1) and SigLipLoss (world size 1)
written out: open_clip's CLIP model normalises both embeddings (F.normalize) and passes
logit_scale.exp(); ClipLoss averages the image-to-text and text-to-image cross-entropies with
targets arange(n); SigLipLoss sums -logsigmoid(labels * logits) with labels 2 I - 1 and divides
by the number of images. Inputs: image and text embeddings (6, 8), the log-scale (1) and, for SigLIP,
the bias (1).
"""
import torch
import torch.nn.functional as F


def pair(g):
    img = torch.randn(6, 8, generator=g)
    txt = torch.randn(6, 8, generator=g)
    s = 0.3 * torch.randn(1, generator=g) + 1.5
    b = torch.randn(1, generator=g)
    return [t.requires_grad_(True) for t in (img, txt, s, b)]


def clip_inputs(g):
    return pair(g)[:3]


def clip_loss(img, txt, s):
    img, txt = F.normalize(img, dim=-1), F.normalize(txt, dim=-1)
    logits = s.exp() * img @ txt.T
    labels = torch.arange(img.shape[0])
    loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    return loss.reshape(1)


def siglip_loss(img, txt, s, b):
    img, txt = F.normalize(img, dim=-1), F.normalize(txt, dim=-1)
    logits = s.exp() * img @ txt.T + b
    labels = 2 * torch.eye(img.shape[0]) - 1
    return (-F.logsigmoid(labels * logits).sum() / img.shape[0]).reshape(1)


CASES = [
    ("all_gather", lambda g: [torch.randn(5, 3, generator=g).requires_grad_(True)],
     lambda x: x.clone()),  # torch.distributed.nn.all_gather in one process
    ("clip_loss", clip_inputs, clip_loss),
    ("siglip_loss", pair, siglip_loss),
]
