"""Parity cases for CSWin Transformer (rows in tests/rows/rows_cswin.c): the fused stripe
attention op (core/cpu/op_stripe_attention.c) and whole CSWin models (vision/cswin.c).

The reference is a plain torch.nn reimplementation of the official code, written from the logic
of microsoft/CSWin-Transformer, models/cswin.py at commit
f111ae2f771df32006e7afd7916835dd67d4cb9d (LePEAttention, img2windows, windows2img, CSWinBlock,
Merge_Block, CSWinTransformer and its CSWin_* configurations). It keeps the official module
tree, so named_parameters() gives the official names in the official order
(stage1_conv_embed.0.weight, stage1.0.qkv.weight, stage1.0.attns.0.get_v.weight,
merge1.conv.weight, norm.weight, head.weight, ...), and the official arithmetic: windows
gathered with the same view/permute chains, q scaled before q @ k^T, the softmax, + LePE (a
3x3 depthwise convolution of V inside each window with zero padding at the window's edges),
windows scattered back. What it changes: no timm/einops imports (DropPath, trunc_normal_ and
Rearrange written out; drop-path is inactive in these eval-mode cases), and the map may be
H x W instead of square, which the official code assumes (H = W = sqrt(N)); for square maps the
two are the same code. Branch 0 (the first C/2 channels, heads [0, heads/2)) attends within
stripes of sw columns spanning the full height (official idx 0: H_sp = H, W_sp = sw), branch 1
within stripes of sw rows spanning the full width; a block whose map equals its stripe width,
and every block of the last stage, has one branch over the whole map.

Op cases: in0 qkv (B, H*W, 3C) as the qkv Linear makes it ([q | k | v], heads side by side),
in1 the LePE weight (C, 1, 3, 3) and in2 its bias (C): the get_v weights of the two branches
stacked (branch 0's channels first), which is what the C op takes. Model cases: in0 images,
in1 every parameter flattened in named_parameters() order, in2 their names joined by newlines
(u8), as the ViT cases do.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import stateless

OFFICIAL_COMMIT = "f111ae2f771df32006e7afd7916835dd67d4cb9d"


# ---- the official model, rewritten in plain torch ----

def img2windows(img, H_sp, W_sp):
    """(B, C, H, W) -> (B * windows, H_sp * W_sp, C), windows row-major, tokens row-major."""
    B, C, H, W = img.shape
    x = img.view(B, C, H // H_sp, H_sp, W // W_sp, W_sp)
    return x.permute(0, 2, 4, 3, 5, 1).contiguous().reshape(-1, H_sp * W_sp, C)


def windows2img(win, H_sp, W_sp, H, W):
    """(B * windows, H_sp, W_sp, C) -> (B, H, W, C)."""
    B = int(win.shape[0] / (H * W / H_sp / W_sp))
    x = win.view(B, H // H_sp, W // W_sp, H_sp, W_sp, -1)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(B, H, W, -1)


class LePEAttention(nn.Module):
    """One branch: idx -1 the whole map, 0 stripes of sw columns, 1 stripes of sw rows."""

    def __init__(self, dim, reso, idx, split_size, num_heads, qk_scale=None):
        super().__init__()
        self.dim, self.num_heads = dim, num_heads
        self.H, self.W = reso
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        if idx == -1:
            self.H_sp, self.W_sp = self.H, self.W
        elif idx == 0:
            self.H_sp, self.W_sp = self.H, split_size
        else:
            self.H_sp, self.W_sp = split_size, self.W
        self.get_v = nn.Conv2d(dim, dim, kernel_size=3, stride=1, padding=1, groups=dim)

    def im2cswin(self, x):
        B, N, C = x.shape
        x = x.transpose(-2, -1).contiguous().view(B, C, self.H, self.W)
        x = img2windows(x, self.H_sp, self.W_sp)
        return x.reshape(-1, self.H_sp * self.W_sp, self.num_heads,
                         C // self.num_heads).permute(0, 2, 1, 3).contiguous()

    def get_lepe(self, x, func):
        B, N, C = x.shape
        H_sp, W_sp = self.H_sp, self.W_sp
        x = x.transpose(-2, -1).contiguous().view(B, C, self.H, self.W)
        x = x.view(B, C, self.H // H_sp, H_sp, self.W // W_sp, W_sp)
        x = x.permute(0, 2, 4, 1, 3, 5).contiguous().reshape(-1, C, H_sp, W_sp)
        lepe = func(x)
        lepe = lepe.reshape(-1, self.num_heads, C // self.num_heads,
                            H_sp * W_sp).permute(0, 1, 3, 2).contiguous()
        x = x.reshape(-1, self.num_heads, C // self.num_heads,
                      H_sp * W_sp).permute(0, 1, 3, 2).contiguous()
        return x, lepe

    def forward(self, qkv):
        q, k, v = qkv[0], qkv[1], qkv[2]
        B, L, C = q.shape
        assert L == self.H * self.W
        q = self.im2cswin(q)
        k = self.im2cswin(k)
        v, lepe = self.get_lepe(v, self.get_v)
        q = q * self.scale
        attn = q @ k.transpose(-2, -1)
        attn = F.softmax(attn, dim=-1, dtype=attn.dtype)
        x = (attn @ v) + lepe
        x = x.transpose(1, 2).reshape(-1, self.H_sp * self.W_sp, C)
        return windows2img(x, self.H_sp, self.W_sp, self.H, self.W).view(B, -1, C)


class DropPath(nn.Module):
    def __init__(self, p):
        super().__init__()
        self.p = p

    def forward(self, x):
        if self.p == 0.0 or not self.training:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class CSWinBlock(nn.Module):
    def __init__(self, dim, reso, num_heads, split_size, mlp_ratio=4.0, qkv_bias=True,
                 qk_scale=None, drop_path=0.0, last_stage=False):
        super().__init__()
        self.reso = reso
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.norm1 = nn.LayerNorm(dim)
        if reso[0] == split_size and reso[1] == split_size:
            last_stage = True
        self.branch_num = 1 if last_stage else 2
        self.proj = nn.Linear(dim, dim)
        if last_stage:
            self.attns = nn.ModuleList([LePEAttention(dim, reso, -1, split_size, num_heads,
                                                      qk_scale)])
        else:
            self.attns = nn.ModuleList([LePEAttention(dim // 2, reso, i, split_size,
                                                      num_heads // 2, qk_scale)
                                        for i in range(2)])
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x):
        B, L, C = x.shape
        img = self.norm1(x)
        qkv = self.qkv(img).reshape(B, -1, 3, C).permute(2, 0, 1, 3)
        if self.branch_num == 2:
            x1 = self.attns[0](qkv[:, :, :, :C // 2])
            x2 = self.attns[1](qkv[:, :, :, C // 2:])
            a = torch.cat([x1, x2], dim=2)
        else:
            a = self.attns[0](qkv)
        x = x + self.drop_path(self.proj(a))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class MergeBlock(nn.Module):
    def __init__(self, dim, dim_out, reso):
        super().__init__()
        self.reso = reso
        self.conv = nn.Conv2d(dim, dim_out, 3, 2, 1)
        self.norm = nn.LayerNorm(dim_out)

    def forward(self, x):
        B, N, C = x.shape
        x = x.transpose(-2, -1).contiguous().view(B, C, self.reso[0], self.reso[1])
        x = self.conv(x)
        B, C = x.shape[:2]
        return self.norm(x.view(B, C, -1).transpose(-2, -1).contiguous())


class Tokens(nn.Module):
    """einops' Rearrange('b c h w -> b (h w) c'): no parameters, index 1 of the stem."""

    def forward(self, x):
        return x.flatten(2).transpose(1, 2)


class CSWinTransformer(nn.Module):
    def __init__(self, img_size=224, in_chans=3, num_classes=1000, embed_dim=64,
                 depth=(1, 2, 21, 1), split_size=(1, 2, 7, 7), num_heads=(2, 4, 8, 16),
                 mlp_ratio=4.0, qkv_bias=True, qk_scale=None, drop_path_rate=0.0):
        super().__init__()
        ih, iw = (img_size, img_size) if isinstance(img_size, int) else img_size
        self.stage1_conv_embed = nn.Sequential(nn.Conv2d(in_chans, embed_dim, 7, 4, 2),
                                               Tokens(), nn.LayerNorm(embed_dim))
        dpr = [x.item() for x in torch.linspace(0, drop_path_rate, sum(depth))]
        dim, first = embed_dim, 0
        for s in range(4):
            reso = (ih // (4 << s), iw // (4 << s))
            if s > 0:
                prev = (ih // (2 << s), iw // (2 << s))
                setattr(self, f"merge{s}", MergeBlock(dim, dim * 2, prev))
                dim *= 2
            setattr(self, f"stage{s + 1}", nn.ModuleList([
                CSWinBlock(dim, reso, num_heads[s], split_size[s], mlp_ratio, qkv_bias,
                           qk_scale, dpr[first + i], last_stage=(s == 3))
                for i in range(depth[s])]))
            first += depth[s]
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes) if num_classes > 0 else nn.Identity()

    def forward_tokens(self, x):
        x = self.stage1_conv_embed(x)
        for s in range(4):
            if s > 0:
                x = getattr(self, f"merge{s}")(x)
            for blk in getattr(self, f"stage{s + 1}"):
                x = blk(x)
        return self.norm(x)

    def forward(self, x):
        return self.head(torch.mean(self.forward_tokens(x), dim=1))


# The official configurations (CSWin_64_12211_tiny_224 ... CSWin_144_24322_large_384):
# embed_dim, depth, heads; split sizes [1, 2, 7, 7] at 224, [1, 2, 12, 12] at 384.
CONFIGS = {
    "CSWin-T": (64, (1, 2, 21, 1), (2, 4, 8, 16)),
    "CSWin-S": (64, (2, 4, 32, 2), (2, 4, 8, 16)),
    "CSWin-B": (96, (2, 4, 32, 2), (4, 8, 16, 32)),
    "CSWin-L": (144, (2, 4, 32, 2), (6, 12, 24, 24)),
}


# ---- the op: one block's attention part, through the modules above ----

def stripe_attention(qkv, w, b, H, W, heads, sw, scale=None):
    """qkv (B, H*W, 3C), w (C, 1, 3, 3) or None, b (C) or None -> (B, H*W, C).
    sw = 0 is one branch over the whole map with all heads."""
    B, N, C3 = qkv.shape
    C = C3 // 3
    qkv = qkv.reshape(B, N, 3, C).permute(2, 0, 1, 3)
    if sw == 0:
        branches = [(LePEAttention(C, (H, W), -1, 0, heads, scale), 0, C)]
    else:
        branches = [(LePEAttention(C // 2, (H, W), i, sw, heads // 2, scale), i * C // 2,
                     C // 2) for i in range(2)]
    outs = []
    for m, lo, n in branches:
        m.get_v = GivenLePE(w, b, lo, n)
        outs.append(m(qkv[:, :, :, lo:lo + n]))
    return torch.cat(outs, dim=2)


class GivenLePE(nn.Module):
    """get_v with the case's weights: channels [lo, lo + n) of w and b (zero without w)."""

    def __init__(self, w, b, lo, n):
        super().__init__()
        self.w, self.b, self.lo, self.n = w, b, lo, n

    def forward(self, x):
        if self.w is None:
            return torch.zeros_like(x)
        lo, n = self.lo, self.n
        return F.conv2d(x, self.w[lo:lo + n], None if self.b is None else self.b[lo:lo + n],
                        padding=1, groups=n)


def randn(g, *shape, scale=1.0, rg=True):
    return (scale * torch.randn(*shape, generator=g)).requires_grad_(rg)


# name -> (B, H, W, C, heads, sw, lepe: "wb" / "w" / "", scale). rows_cswin.c has the same table.
OPS = {
    "stripe_attention_sw2": (2, 4, 6, 16, 4, 2, "wb", None),
    "stripe_attention_sw1_rect": (1, 6, 5, 12, 2, 1, "wb", None),
    "stripe_attention_sw3_nobias": (2, 6, 6, 8, 2, 3, "w", None),
    "stripe_attention_nolepe": (1, 6, 4, 8, 4, 2, "", 0.3),
    "stripe_attention_whole": (2, 9, 8, 8, 2, 0, "wb", None),
    "stripe_attention_long": (1, 80, 2, 8, 2, 1, "wb", None),
}


def op_inputs(spec):
    def make(g):
        B, H, W, C, _, _, lepe, _ = spec
        xs = [randn(g, B, H * W, 3 * C)]
        if lepe:
            xs.append(randn(g, C, 1, 3, 3, scale=0.5))
        if lepe == "wb":
            xs.append(randn(g, C))
        return xs
    return make


def op_fn(spec):
    _, H, W, _, heads, sw, lepe, scale = spec

    def fn(qkv, w=None, b=None):
        return stripe_attention(qkv, w, b, H, W, heads, sw, scale)
    return fn


# ---- whole models ----

# name -> (batch, image (H, W), embed_dim, depth, heads, split, num_classes, output tokens).
# rows_cswin.c has the same table.
MODELS = {
    # stage maps 16, 8, 4, 2: stripes of 1 and 2, a non-last stage whose map equals its stripe
    # width (one branch), and the last stage over the whole map.
    "cswin_tiny_64": (2, (64, 64), 16, (1, 2, 1, 1), (2, 4, 4, 8), (1, 2, 4, 2), 10, False),
    # maps 8, 4, 2, 1; no head (pooled features), two-branch stages 1-3.
    "cswin_tiny_32_nohead": (2, (32, 32), 8, (1, 1, 1, 1), (2, 2, 4, 4), (2, 2, 1, 1), 0, False),
    # the token sequence after the final norm.
    "cswin_tiny_32_tokens": (1, (32, 32), 8, (1, 1, 1, 1), (2, 2, 4, 4), (2, 2, 1, 1), 0, True),
    # a rectangular image (maps 8x16 ... 1x2), which the official code does not allow.
    "cswin_tiny_rect": (2, (32, 64), 8, (1, 1, 1, 1), (2, 2, 2, 4), (2, 4, 2, 1), 6, False),
}


def build_model(spec):
    _, image, dim, depth, heads, split, classes, _ = spec
    return CSWinTransformer(img_size=image, num_classes=classes, embed_dim=dim, depth=depth,
                            split_size=split, num_heads=heads).eval()


def model_inputs(spec):
    def make(g):
        batch, image = spec[0], spec[1]
        m = build_model(spec)
        names, flat = [], []
        for name, p in m.named_parameters():
            names.append(name)
            norm_w = name.endswith("norm1.weight") or name.endswith("norm2.weight") or \
                name.endswith("norm.weight") or name == "stage1_conv_embed.2.weight"
            if norm_w:
                v = 1.0 + 0.2 * torch.randn(p.shape, generator=g)
            elif p.dim() == 1:
                v = 0.2 * torch.randn(p.shape, generator=g)
            else:
                v = torch.randn(p.shape, generator=g) / (p[0].numel() ** 0.5)
            flat.append(v.reshape(-1))
        images = torch.randn(batch, 3, image[0], image[1], generator=g).requires_grad_(True)
        flat = torch.cat(flat).requires_grad_(True)
        text = torch.tensor(list("\n".join(names).encode()), dtype=torch.uint8)
        return [images, flat, text]
    return make


def model_fn(spec):
    tokens = spec[7]

    def fn(images, flat, names):
        m = build_model(spec)
        params, off = {}, 0
        for name, p in m.named_parameters():
            params[name] = flat[off:off + p.numel()].view(p.shape)
            off += p.numel()
        assert off == flat.numel()
        assert "\n".join(params).encode() == bytes(names.tolist())
        if tokens:
            return _tokens(m, params, images)
        return stateless.functional_call(m, params, (images,))
    return fn


def _tokens(m, params, images):
    seen = []
    hook = m.norm.register_forward_hook(lambda mod, i, o: seen.append(o))
    stateless.functional_call(m, params, (images,))
    hook.remove()
    return seen[0]


# Parameter counts of the official configurations with the 1000-class head, in the order of
# rows_cswin.c: the 224 models, then CSWin-B at 384 (the same count: nothing depends on size).
COUNTED = ["CSWin-T", "CSWin-S", "CSWin-B", "CSWin-L"]


def count_inputs(g):
    counts = []
    for name in COUNTED:
        dim, depth, heads = CONFIGS[name]
        m = CSWinTransformer(224, embed_dim=dim, depth=depth, num_heads=heads)
        counts.append(sum(p.numel() for p in m.parameters()))
        del m
    return [torch.tensor(counts, dtype=torch.int64)]


CASES = [(name, op_inputs(spec), op_fn(spec)) for name, spec in OPS.items()]
CASES += [(name, model_inputs(spec), model_fn(spec)) for name, spec in MODELS.items()]
# The output is ours minus the reference's count, so the reference is zeros.
CASES += [("cswin_param_counts", count_inputs, lambda counts: torch.zeros(len(COUNTED)))]
