"""Parity cases for ProtoCLIP's objective (rows in tests/rows/rows_protoclip.c).

The reference is the official ProtoCLIP code, megvii-research/protoclip at commit
fde193381369380bd6ffe278d644d85717e01a80, its formulas written out in plain PyTorch:

- the projection head of src/open_clip/model.py with its default arguments
  (--projection-n-layers 1): nn.Sequential(Linear(E, hidden), BatchNorm1d(hidden), ReLU,
  Linear(hidden, 128)), applied to the raw embedding and followed by F.normalize. The case
  builds that Sequential and calls it with the inputs as its state (functional_call), so the
  parameter names "0.weight", "1.running_mean", "3.bias", ... are checked as well;
- ProtoLoss of src/training/loss.py: student scores exp(logit_scale_proto) * f @ C_student^T,
  and with a teacher temperature T > 0 the cross-entropy against the soft target
  softmax(C_teacher[labels] @ C_teacher^T / T), otherwise the cross-entropy against the labels
  (as the external teacher is called in src/training/train.py);
- Clustering.PBT of src/training/clustering.py: the student prototype of cluster j is the
  mean of the student modality's features whose teacher label is j, zero when none has it;
- the pairing of src/training/train.py: image features against the image prototypes
  translated from the text clusters with the text centroids as teacher (labels: text labels),
  and the other way round, averaged.

Label and position inputs are int32, as tessera takes them.
"""
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

try:
    from torch.func import functional_call
except ImportError:  # torch < 2.0
    from torch.nn.utils.stateless import functional_call

N_IN, HID, OUT, B = 10, 16, 8, 6
K, D, N_EP = 5, 8, 20
# Teacher prototypes this small keep softmax(. / 0.01) soft, as for the close centroids of a
# real episode; larger ones would make the soft target one-hot.
TEACHER = 0.05


def randn(g, *shape, scale=1.0, rg=True, shift=0.0):
    return (scale * torch.randn(*shape, generator=g) + shift).requires_grad_(rg)


def head_inputs(g, rg_b0=True):
    rv = (0.5 + torch.randn(HID, generator=g).abs()).requires_grad_(False)
    return [randn(g, B, N_IN), randn(g, HID, N_IN, scale=0.3), randn(g, HID, scale=0.1, rg=rg_b0),
            randn(g, HID, scale=0.2, shift=1.0), randn(g, HID, scale=0.2),
            randn(g, HID, scale=0.5, rg=False), rv,
            randn(g, OUT, HID, scale=0.3), randn(g, OUT, scale=0.1)]


def head(training):
    def fn(x, w0, b0, gw, gb, rm, rv, w3, b3):
        seq = nn.Sequential(nn.Linear(N_IN, HID), nn.BatchNorm1d(HID), nn.ReLU(inplace=True),
                            nn.Linear(HID, OUT))
        seq.train(training)
        state = {"0.weight": w0, "0.bias": b0, "1.weight": gw, "1.bias": gb,
                 "1.running_mean": rm.clone(), "1.running_var": rv.clone(),
                 "3.weight": w3, "3.bias": b3}
        return F.normalize(functional_call(seq, state, (x,)), dim=-1)
    return fn


def proto_loss(f, c_student, c_teacher, labels, logit_scale, temperature):
    scores = logit_scale.exp() * f @ c_student.T
    if temperature > 0:
        target = (c_teacher[labels] @ c_teacher.T / temperature).softmax(dim=1)
        loss = F.cross_entropy(scores, target)
    else:
        loss = F.cross_entropy(scores, labels, ignore_index=-1)
    return loss.reshape(1)


def loss_inputs(g):
    return [randn(g, B, D, scale=0.4), randn(g, K, D, scale=0.5, rg=False),
            randn(g, K, D, scale=TEACHER, rg=False),
            torch.randint(0, K, (B,), generator=g, dtype=torch.int32),
            randn(g, 1, scale=0.3, shift=1.0)]


def pbt(k, teacher_labels, student_features):
    out = torch.zeros(k, student_features.shape[1])
    for j in np.unique(teacher_labels.numpy()):
        out[j] = student_features[teacher_labels == j].mean(dim=0)
    return out


def pbt_inputs(g):
    return [randn(g, N_EP, D, rg=False),
            torch.randint(0, K, (N_EP,), generator=g, dtype=torch.int32)]


def pbt_loss_inputs(g):
    """Batch features (image, text), the episode's features (image, text), its labels (image,
    text), the centroids (image, text), the batch's episode positions and the log-scale."""
    return [randn(g, B, D, scale=0.4), randn(g, B, D, scale=0.4),
            randn(g, N_EP, D, scale=0.4, rg=False), randn(g, N_EP, D, scale=0.4, rg=False),
            torch.randint(0, K, (N_EP,), generator=g, dtype=torch.int32),
            torch.randint(0, K, (N_EP,), generator=g, dtype=torch.int32),
            randn(g, K, D, scale=TEACHER, rg=False), randn(g, K, D, scale=TEACHER, rg=False),
            torch.randint(0, N_EP, (B,), generator=g, dtype=torch.int32),
            randn(g, 1, scale=0.3, shift=1.0)]


def pbt_loss(fi, ft, ei, et, li, lt, ci, ct, pos, s):
    li, lt, pos = li.long(), lt.long(), pos.long()
    img_from_text = pbt(K, lt, ei)
    text_from_img = pbt(K, li, et)
    l_i2t = proto_loss(fi, img_from_text, ct, lt[pos], s, 0.01)
    l_t2i = proto_loss(ft, text_from_img, ci, li[pos], s, 0.01)
    return 0.5 * (l_i2t + l_t2i)


CASES = [
    # Under batch statistics the first Linear's bias has no gradient (the norm removes it).
    ("protoclip_head_train", lambda g: head_inputs(g, rg_b0=False), head(True)),
    ("protoclip_head_eval", head_inputs, head(False)),
    ("protoclip_proto_loss", loss_inputs,
     lambda f, cs, ct, lab, s: proto_loss(f, cs, ct, lab.long(), s, 0.01)),
    ("protoclip_proto_loss_hard", loss_inputs,
     lambda f, cs, ct, lab, s: proto_loss(f, cs, ct, lab.long(), s, -1.0)),
    ("protoclip_pbt", pbt_inputs, lambda x, lab: pbt(K, lab.long(), x)),
    ("protoclip_pbt_loss", pbt_loss_inputs, pbt_loss),
]
