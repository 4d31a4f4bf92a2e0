"""A PyTorch rendering of tessera's action heads (action/heads.c) for tests/unit_action.c.

Each head has torch.nn.TransformerDecoder(TransformerDecoderLayer(W, heads, mlp_ratio * W,
dropout=0, activation="gelu", batch_first=True, norm_first=True), depth, norm=LayerNorm(W))
blocks with the projected observation tokens as memory:
  l1:        learned queries through the decoder, head (W -> A);
  diffusion: the same readout of learned queries gives a context (n, H, W); a second decoder
             ("denoiser") runs over input_proj(x_t) + context + pos_embed + the timestep
             embedding (Diffusion Policy's SinusoidalPosEmb(W), time_mlp: Linear, Mish,
             Linear) with [timestep token, context] as memory, head (W -> A);
  tokens:    tok_embed rows of the ids + pos_embed, causal self-attention, head (W -> V + 2).
For every kind: the state_dict (names under "head."), the inputs, the output, an upstream
gradient dy and the gradients of the observation tokens and of every parameter for dy, into
one safetensors file; and the same for the observation encoder "obs" (FiLM, then robomimic's
SpatialSoftmax). Usage: heads_ref.py OUT.safetensors
"""
import math
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference import write_safetensors  # noqa: E402

N, TC, CD, W, DEPTH, HEADS, RATIO = 3, 5, 12, 16, 2, 2, 2.0
H, A, V = 6, 3, 10  # chunk, action size, tokenizer vocabulary (tokens: T = H * A + 1)
OE, OW, GH, GW, OK = 7, 8, 3, 4, 5  # observation encoder: instruction, token width, grid, keypoints


class SinusoidalPosEmb(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        half = self.dim // 2
        emb = math.log(10000) / (half - 1)
        emb = torch.exp(torch.arange(half) * -emb)
        emb = x.float()[:, None] * emb[None, :]
        return torch.cat((emb.sin(), emb.cos()), dim=-1)


class Head(nn.Module):
    def __init__(self, kind, H=H, A=A, CD=CD, W=W, DEPTH=DEPTH, HEADS=HEADS, RATIO=RATIO, V=V):
        super().__init__()
        self.kind = kind
        self.cond_proj = nn.Linear(CD, W)
        layer = nn.TransformerDecoderLayer(W, HEADS, int(RATIO * W), dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, DEPTH, norm=nn.LayerNorm(W))
        if kind == "diffusion":
            self.input_proj = nn.Linear(A, W)
            self.time_mlp = nn.Sequential(nn.Linear(W, 4 * W), nn.Mish(), nn.Linear(4 * W, W))
            self.pos_embed = nn.Parameter(0.02 * torch.randn(1, H, W))
            self.queries = nn.Parameter(0.5 * torch.randn(1, H, W))
            layer2 = nn.TransformerDecoderLayer(W, HEADS, int(RATIO * W), dropout=0.0,
                                                activation="gelu", batch_first=True,
                                                norm_first=True)
            self.denoiser = nn.TransformerDecoder(layer2, DEPTH, norm=nn.LayerNorm(W))
            self.head = nn.Linear(W, A)
        elif kind == "tokens":
            self.tok_embed = nn.Parameter(0.5 * torch.randn(V + 2, W))
            self.pos_embed = nn.Parameter(0.5 * torch.randn(1, H * A + 1, W))
            self.head = nn.Linear(W, V + 2)
        else:
            self.queries = nn.Parameter(0.5 * torch.randn(1, H, W))
            self.head = nn.Linear(W, A)
        self.time_emb = SinusoidalPosEmb(W)

    def forward(self, cond, x=None, t=None):
        mem = self.cond_proj(cond)
        if self.kind == "diffusion":
            ctx = self.decoder(self.queries.expand(cond.shape[0], -1, -1), mem)
            te = self.time_mlp(self.time_emb(t))[:, None]
            h = self.input_proj(x) + ctx + self.pos_embed + te
            return self.head(self.denoiser(h, torch.cat([te, ctx], dim=1)))
        elif self.kind == "tokens":
            T = x.shape[1]
            h = F.embedding(x.long(), self.tok_embed) + self.pos_embed[:, :T]
            mask = torch.triu(torch.full((T, T), float("-inf")), diagonal=1)
        else:
            h = self.queries.expand(cond.shape[0], -1, -1)
            mask = None
        return self.head(self.decoder(h, mem, tgt_mask=mask))


class SpatialSoftmax(nn.Module):
    """robomimic's SpatialSoftmax (models/obs_core.py) with its defaults: a 1x1 convolution to
    num_kp maps, temperature 1, no noise, no variance output."""

    def __init__(self, C, H, W, num_kp):
        super().__init__()
        self.nets = nn.Conv2d(C, num_kp, kernel_size=1)
        pos_x, pos_y = np.meshgrid(np.linspace(-1.0, 1.0, W), np.linspace(-1.0, 1.0, H))
        self.register_buffer("pos_x", torch.from_numpy(pos_x.reshape(1, H * W)).float())
        self.register_buffer("pos_y", torch.from_numpy(pos_y.reshape(1, H * W)).float())
        self.H, self.W, self.num_kp = H, W, num_kp

    def forward(self, feature):
        feature = self.nets(feature).reshape(-1, self.H * self.W)
        attention = F.softmax(feature, dim=-1)
        expected_x = torch.sum(self.pos_x * attention, dim=1, keepdim=True)
        expected_y = torch.sum(self.pos_y * attention, dim=1, keepdim=True)
        return torch.cat([expected_x, expected_y], 1).view(-1, self.num_kp, 2)


class ObsEncoder(nn.Module):
    """FiLM of a ViT's tokens by an instruction embedding, then spatial-softmax keypoints of the
    patch grid (the class token left out), as tessera's model.film + image_tokens: keypoints."""

    def __init__(self):
        super().__init__()
        self.film = nn.Linear(OE, 2 * OW)
        self.kp = SpatialSoftmax(OW, GH, GW, OK)

    def forward(self, tokens, e):
        gamma, beta = self.film(e).chunk(2, dim=-1)
        x = tokens * (1 + gamma[:, None]) + beta[:, None]
        fmap = x[:, 1:].transpose(1, 2).reshape(x.shape[0], OW, GH, GW)
        return self.kp(fmap)


def obs_case(out):
    torch.manual_seed(5)
    m = ObsEncoder()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0.0, 0.5)
    g = torch.Generator().manual_seed(13)
    tokens = torch.randn(N, 1 + GH * GW, OW, generator=g).requires_grad_(True)
    e = torch.randn(N, OE, generator=g).requires_grad_(True)
    y = m(tokens, e)
    dy = torch.randn(y.shape, generator=g)
    y.backward(dy)
    out["obs.tokens"], out["obs.e"] = tokens.detach().numpy(), e.detach().numpy()
    out["obs.out"], out["obs.dy"] = y.detach().numpy(), dy.numpy()
    out["obs.grad.tokens"], out["obs.grad.e"] = tokens.grad.numpy(), e.grad.numpy()
    conv = m.kp.nets
    for name, p, grad in (("obs.film.weight", m.film.weight, m.film.weight.grad),
                          ("obs.film.bias", m.film.bias, m.film.bias.grad),
                          ("obs.keypoints.weight", conv.weight[:, :, 0, 0], conv.weight.grad[:, :, 0, 0]),
                          ("obs.keypoints.bias", conv.bias, conv.bias.grad)):
        out[f"obs.param.{name}"] = p.detach().numpy()
        out[f"obs.grad.{name}"] = grad.numpy()


class Wrap(nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.head = Head(kind)


def main():
    out = {}
    for kind in ("diffusion", "tokens", "l1"):
        torch.manual_seed(7)
        m = Wrap(kind)
        # larger random values than the default init so that every part matters
        with torch.no_grad():
            for name, p in m.named_parameters():
                if name.endswith("weight") and p.ndim == 2:
                    p.normal_(0.0, 1.0 / math.sqrt(p.shape[1]))
                elif "norm" in name:
                    p.add_(0.1 * torch.randn_like(p))
                else:
                    p.normal_(0.0, 0.3)
        g = torch.Generator().manual_seed(11)
        cond = torch.randn(N, TC, CD, generator=g).requires_grad_(True)
        x = t = None
        if kind == "diffusion":
            x = torch.randn(N, H, A, generator=g)
            t = torch.tensor([0, 37, 99], dtype=torch.int32)
            out[f"{kind}.x"] = x.numpy()
            out[f"{kind}.t"] = t.numpy()
        elif kind == "tokens":
            x = torch.randint(0, V + 2, (N, H * A + 1), generator=g, dtype=torch.int32)
            x[:, 0] = V
            out[f"{kind}.x"] = x.numpy()
        y = m.head(cond, x, t)
        dy = torch.randn(y.shape, generator=g)
        y.backward(dy)
        out[f"{kind}.cond"] = cond.detach().numpy()
        out[f"{kind}.out"] = y.detach().numpy()
        out[f"{kind}.dy"] = dy.numpy()
        out[f"{kind}.grad.cond"] = cond.grad.numpy()
        for name, p in m.named_parameters():
            out[f"{kind}.param.{name}"] = p.detach().numpy()
            out[f"{kind}.grad.{name}"] = p.grad.numpy()
    obs_case(out)
    write_safetensors(sys.argv[1], {k: v.copy() for k, v in out.items()},
                      {"torch_version": torch.__version__})
    print(f"heads_ref.py: {len(out)} tensors -> {sys.argv[1]}")


if __name__ == "__main__":
    main()
