"""Parity cases for MAE (vision/mae.c) and the video-clip pooling (vision/video.c), rows in
tests/rows/rows_mae.c.

The MAE reference is a plain-torch rewrite of facebookresearch/mae's models_mae.py at commit
efb2a8062c206524e35e47d04501ed4f544c0ae8 (MaskedAutoencoderViT, get_2d_sincos_pos_embed of
util/pos_embed.py), with timm 0.3.2's PatchEmbed and Block (which models_mae.py imports) written
out: the same modules, names, order of parameters and arithmetic. Two changes, both outside the
math: random_masking takes the noise as an argument instead of drawing torch.rand (so tessera
can be given the same noise), and np.float, gone from numpy, is np.float64.

MAE cases: in0 the images (N, 3, H, W), in1 every trainable parameter flattened and concatenated
in named_parameters() order (the fixed pos_embed and decoder_pos_embed are not inputs: each side
computes its own table), in2 their names joined by newlines (u8), in3 the noise (N, L). The
parameters are random rather than MAE's init, so ones and zeros hide nothing, and reach the
model through torch.nn.utils.stateless.functional_call; the gradient of in1 is every
parameter's gradient.

Video cases: the frame embeddings (B, K, D) plus temporal embedding and pooling parameters, and
a whole clip through a toy linear frame encoder (one matrix on the flattened frame) to check the
B * K batching. The attention pooling is open_clip's AttentionalPooler with one query, written
out with torch.nn.MultiheadAttention.
"""
from functools import partial

import numpy as np
import torch
import torch.nn as nn
from torch.nn.utils import stateless

MAE_COMMIT = "efb2a8062c206524e35e47d04501ed4f544c0ae8"


# ---- util/pos_embed.py ----

def get_2d_sincos_pos_embed(embed_dim, grid_size, cls_token=False):
    grid_h = np.arange(grid_size, dtype=np.float32)
    grid_w = np.arange(grid_size, dtype=np.float32)
    grid = np.meshgrid(grid_w, grid_h)  # here w goes first
    grid = np.stack(grid, axis=0)
    grid = grid.reshape([2, 1, grid_size, grid_size])
    pos_embed = get_2d_sincos_pos_embed_from_grid(embed_dim, grid)
    if cls_token:
        pos_embed = np.concatenate([np.zeros([1, embed_dim]), pos_embed], axis=0)
    return pos_embed


def get_2d_sincos_pos_embed_from_grid(embed_dim, grid):
    assert embed_dim % 2 == 0
    emb_h = get_1d_sincos_pos_embed_from_grid(embed_dim // 2, grid[0])  # (H*W, D/2)
    emb_w = get_1d_sincos_pos_embed_from_grid(embed_dim // 2, grid[1])  # (H*W, D/2)
    return np.concatenate([emb_h, emb_w], axis=1)  # (H*W, D)


def get_1d_sincos_pos_embed_from_grid(embed_dim, pos):
    assert embed_dim % 2 == 0
    omega = np.arange(embed_dim // 2, dtype=np.float64)
    omega /= embed_dim / 2.
    omega = 1. / 10000**omega  # (D/2,)
    pos = pos.reshape(-1)  # (M,)
    out = np.einsum('m,d->md', pos, omega)  # (M, D/2), outer product
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)  # (M, D)


# ---- timm 0.3.2: PatchEmbed, Mlp, Attention, Block ----

class PatchEmbed(nn.Module):
    def __init__(self, img_size=224, patch_size=16, in_chans=3, embed_dim=768):
        super().__init__()
        img_size, patch_size = (img_size, img_size), (patch_size, patch_size)
        self.img_size, self.patch_size = img_size, patch_size
        self.num_patches = (img_size[1] // patch_size[1]) * (img_size[0] // patch_size[0])
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class Mlp(nn.Module):
    def __init__(self, in_features, hidden_features):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, in_features)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    def __init__(self, dim, num_heads=8, qkv_bias=False, qk_scale=None):
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = qk_scale or head_dim ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q @ k.transpose(-2, -1)) * self.scale
        attn = attn.softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(B, N, C)
        return self.proj(x)


class Block(nn.Module):
    def __init__(self, dim, num_heads, mlp_ratio=4., qkv_bias=False, qk_scale=None,
                 norm_layer=nn.LayerNorm):
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = Attention(dim, num_heads=num_heads, qkv_bias=qkv_bias, qk_scale=qk_scale)
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        x = x + self.mlp(self.norm2(x))
        return x


# ---- models_mae.py ----

class MaskedAutoencoderViT(nn.Module):
    def __init__(self, img_size=224, patch_size=16, in_chans=3,
                 embed_dim=1024, depth=24, num_heads=16,
                 decoder_embed_dim=512, decoder_depth=8, decoder_num_heads=16,
                 mlp_ratio=4., norm_layer=nn.LayerNorm, norm_pix_loss=False):
        super().__init__()
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        num_patches = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, embed_dim), requires_grad=False)
        self.blocks = nn.ModuleList([
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True, qk_scale=None, norm_layer=norm_layer)
            for i in range(depth)])
        self.norm = norm_layer(embed_dim)
        self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim, bias=True)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, decoder_embed_dim),
                                              requires_grad=False)
        self.decoder_blocks = nn.ModuleList([
            Block(decoder_embed_dim, decoder_num_heads, mlp_ratio, qkv_bias=True, qk_scale=None,
                  norm_layer=norm_layer)
            for i in range(decoder_depth)])
        self.decoder_norm = norm_layer(decoder_embed_dim)
        self.decoder_pred = nn.Linear(decoder_embed_dim, patch_size**2 * in_chans, bias=True)
        self.norm_pix_loss = norm_pix_loss
        self.initialize_weights()

    def initialize_weights(self):
        pos_embed = get_2d_sincos_pos_embed(self.pos_embed.shape[-1],
                                            int(self.patch_embed.num_patches**.5), cls_token=True)
        self.pos_embed.data.copy_(torch.from_numpy(pos_embed).float().unsqueeze(0))
        decoder_pos_embed = get_2d_sincos_pos_embed(self.decoder_pos_embed.shape[-1],
                                                    int(self.patch_embed.num_patches**.5),
                                                    cls_token=True)
        self.decoder_pos_embed.data.copy_(torch.from_numpy(decoder_pos_embed).float().unsqueeze(0))
        w = self.patch_embed.proj.weight.data
        torch.nn.init.xavier_uniform_(w.view([w.shape[0], -1]))
        torch.nn.init.normal_(self.cls_token, std=.02)
        torch.nn.init.normal_(self.mask_token, std=.02)
        self.apply(self._init_weights)

    def _init_weights(self, m):
        if isinstance(m, nn.Linear):
            torch.nn.init.xavier_uniform_(m.weight)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.LayerNorm):
            nn.init.constant_(m.bias, 0)
            nn.init.constant_(m.weight, 1.0)

    def patchify(self, imgs):
        p = self.patch_embed.patch_size[0]
        assert imgs.shape[2] == imgs.shape[3] and imgs.shape[2] % p == 0
        h = w = imgs.shape[2] // p
        x = imgs.reshape(shape=(imgs.shape[0], 3, h, p, w, p))
        x = torch.einsum('nchpwq->nhwpqc', x)
        x = x.reshape(shape=(imgs.shape[0], h * w, p**2 * 3))
        return x

    def random_masking(self, x, mask_ratio, noise):
        N, L, D = x.shape  # batch, length, dim
        len_keep = int(L * (1 - mask_ratio))
        ids_shuffle = torch.argsort(noise, dim=1)  # ascend: small is keep, large is remove
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        ids_keep = ids_shuffle[:, :len_keep]
        x_masked = torch.gather(x, dim=1, index=ids_keep.unsqueeze(-1).repeat(1, 1, D))
        mask = torch.ones([N, L], device=x.device)
        mask[:, :len_keep] = 0
        mask = torch.gather(mask, dim=1, index=ids_restore)
        return x_masked, mask, ids_restore

    def forward_encoder(self, x, mask_ratio, noise):
        x = self.patch_embed(x)
        x = x + self.pos_embed[:, 1:, :]
        x, mask, ids_restore = self.random_masking(x, mask_ratio, noise)
        cls_token = self.cls_token + self.pos_embed[:, :1, :]
        cls_tokens = cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat((cls_tokens, x), dim=1)
        for blk in self.blocks:
            x = blk(x)
        x = self.norm(x)
        return x, mask, ids_restore

    def forward_decoder(self, x, ids_restore):
        x = self.decoder_embed(x)
        mask_tokens = self.mask_token.repeat(x.shape[0], ids_restore.shape[1] + 1 - x.shape[1], 1)
        x_ = torch.cat([x[:, 1:, :], mask_tokens], dim=1)  # no cls token
        x_ = torch.gather(x_, dim=1, index=ids_restore.unsqueeze(-1).repeat(1, 1, x.shape[2]))
        x = torch.cat([x[:, :1, :], x_], dim=1)  # append cls token
        x = x + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            x = blk(x)
        x = self.decoder_norm(x)
        x = self.decoder_pred(x)
        x = x[:, 1:, :]
        return x

    def forward_loss(self, imgs, pred, mask):
        target = self.patchify(imgs)
        if self.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1.e-6)**.5
        loss = (pred - target) ** 2
        loss = loss.mean(dim=-1)  # [N, L], mean loss per patch
        loss = (loss * mask).sum() / mask.sum()  # mean loss on removed patches
        return loss

    def forward(self, imgs, mask_ratio=0.75, noise=None):
        latent, mask, ids_restore = self.forward_encoder(imgs, mask_ratio, noise)
        pred = self.forward_decoder(latent, ids_restore)  # [N, L, p*p*3]
        loss = self.forward_loss(imgs, pred, mask)
        return loss, pred, mask, latent, ids_restore


def mae_vit_base_patch16_dec512d8b(**kwargs):
    return MaskedAutoencoderViT(
        patch_size=16, embed_dim=768, depth=12, num_heads=12,
        decoder_embed_dim=512, decoder_depth=8, decoder_num_heads=16,
        mlp_ratio=4, norm_layer=partial(nn.LayerNorm, eps=1e-6), **kwargs)


# ---- the cases ----

# name -> (batch, image, patch, width, layers, heads, dec_width, dec_layers, dec_heads,
# mask_ratio, norm_pix_loss, output). rows_mae.c has the same table.
MAES = {
    "mae_tiny_pred": (2, 16, 4, 16, 2, 2, 8, 2, 2, 0.75, False, "pred"),
    "mae_tiny_loss": (2, 16, 4, 16, 2, 2, 8, 2, 2, 0.75, False, "loss"),
    "mae_tiny_latent": (2, 16, 4, 16, 2, 2, 8, 2, 2, 0.75, False, "latent"),
    "mae_normpix_loss": (3, 24, 8, 12, 1, 3, 16, 2, 4, 0.6, True, "loss"),
    "mae_normpix_pred": (3, 24, 8, 12, 1, 3, 16, 2, 4, 0.6, True, "pred"),
    "mae_tiny_mask": (2, 16, 4, 16, 2, 2, 8, 2, 2, 0.75, False, "mask"),
    "mae_tiny_ids_restore": (2, 16, 4, 16, 2, 2, 8, 2, 2, 0.75, False, "ids_restore"),
}


def build_mae(spec):
    _, image, patch, width, layers, heads, dwidth, dlayers, dheads, _, normpix, _ = spec
    m = MaskedAutoencoderViT(img_size=image, patch_size=patch, embed_dim=width, depth=layers,
                             num_heads=heads, decoder_embed_dim=dwidth, decoder_depth=dlayers,
                             decoder_num_heads=dheads, mlp_ratio=4.,
                             norm_layer=partial(nn.LayerNorm, eps=1e-6), norm_pix_loss=normpix)
    return m.eval()


def trainable(m):
    return [(n, p) for n, p in m.named_parameters() if p.requires_grad]


def mae_inputs(spec):
    def make(g):
        batch, image, patch, out = spec[0], spec[1], spec[2], spec[11]
        grads = out not in ("mask", "ids_restore")
        m = build_mae(spec)
        names, flat = [], []
        for name, p in trainable(m):
            names.append(name)
            scale = 0.2 if p.dim() == 1 else 1.0 / (p.shape[-1] ** 0.5)
            shift = 1.0 if "norm" in name and name.endswith("weight") else 0.0
            flat.append((scale * torch.randn(p.shape, generator=g) + shift).reshape(-1))
        images = torch.randn(batch, 3, image, image, generator=g)
        flat = torch.cat(flat).requires_grad_(grads)
        text = torch.tensor(list("\n".join(names).encode()), dtype=torch.uint8)
        L = (image // patch) ** 2
        noise = torch.rand(batch, L, generator=g)
        return [images, flat, text, noise]
    return make


def mae_fn(spec):
    ratio, out = spec[9], spec[11]

    def fn(images, flat, names, noise):
        m = build_mae(spec)
        params, off = {}, 0
        for name, p in trainable(m):
            params[name] = flat[off:off + p.numel()].view(p.shape)
            off += p.numel()
        assert off == flat.numel()
        assert "\n".join(params).encode() == bytes(names.tolist())
        loss, pred, mask, latent, ids_restore = stateless.functional_call(
            m, params, (images,), {"mask_ratio": ratio, "noise": noise})
        return {"loss": loss.reshape(1), "pred": pred, "latent": latent, "mask": mask,
                "ids_restore": ids_restore.float()}[out]
    return fn


def count_inputs(g):
    m = mae_vit_base_patch16_dec512d8b()
    n = sum(p.numel() for p in m.parameters() if p.requires_grad)
    del m
    return [torch.tensor([n], dtype=torch.int64)]


# ---- video-clip pooling ----

class ClipPool(nn.Module):
    """temporal_embedding (K, D), then the mean over frames or open_clip's AttentionalPooler
    with one query (ln_k on the frames, ln_q on the query, MultiheadAttention, no residual)."""

    def __init__(self, frames, dim, pool, heads):
        super().__init__()
        self.temporal_embedding = nn.Parameter(torch.zeros(frames, dim))
        self.kind = pool
        if pool == "attn":
            self.pool = nn.Module()
            self.pool.query = nn.Parameter(torch.zeros(1, dim))
            self.pool.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
            self.pool.ln_q = nn.LayerNorm(dim)
            self.pool.ln_k = nn.LayerNorm(dim)

    def forward(self, frames):
        x = frames + self.temporal_embedding
        if self.kind == "mean":
            return x.mean(dim=1)
        p = self.pool
        x = p.ln_k(x)
        q = p.ln_q(p.query)
        out = p.attn(q.unsqueeze(0).expand(x.shape[0], -1, -1), x, x, need_weights=False)[0]
        return out[:, 0]


# name -> (batch, frames, dim, pool, heads, clip (H, W) or None). rows_mae.c has the same table.
VIDEOS = {
    "video_pool_mean": (3, 4, 8, "mean", 1, None),
    "video_pool_attn": (3, 5, 8, "attn", 2, None),
    "video_clip_attn": (2, 3, 8, "attn", 4, (4, 6)),
}


def video_params(m):
    return list(m.named_parameters())


def video_inputs(spec):
    def make(g):
        batch, frames, dim, pool, heads, clip = spec
        m = ClipPool(frames, dim, pool, heads)
        names, flat = [], []
        for name, p in video_params(m):
            names.append(name)
            scale = 0.2 if p.dim() == 1 else 1.0 / (p.shape[-1] ** 0.5)
            shift = 1.0 if name.endswith("ln_q.weight") or name.endswith("ln_k.weight") else 0.0
            flat.append((scale * torch.randn(p.shape, generator=g) + shift).reshape(-1))
        flat = torch.cat(flat).requires_grad_(True)
        text = torch.tensor(list("\n".join(names).encode()), dtype=torch.uint8)
        if clip is None:
            x = torch.randn(batch, frames, dim, generator=g).requires_grad_(True)
            return [x, flat, text]
        h, w = clip
        x = torch.randn(batch, frames, 3, h, w, generator=g).requires_grad_(True)
        enc = (torch.randn(dim, 3 * h * w, generator=g) / (3 * h * w) ** 0.5).requires_grad_(True)
        return [x, flat, text, enc]
    return make


def video_fn(spec):
    batch, frames, dim, pool, heads, clip = spec

    def fn(x, flat, names, enc=None):
        m = ClipPool(frames, dim, pool, heads)
        params, off = {}, 0
        for name, p in video_params(m):
            params[name] = flat[off:off + p.numel()].view(p.shape)
            off += p.numel()
        assert off == flat.numel()
        assert "\n".join(n for n, _ in video_params(m)).encode() == bytes(names.tolist())
        if enc is not None:  # the toy frame encoder: B K frames in one batch, one matrix
            x = (x.reshape(batch * frames, -1) @ enc.t()).reshape(batch, frames, dim)
        return stateless.functional_call(m, params, (x,))
    return fn


CASES = [(name, mae_inputs(spec), mae_fn(spec)) for name, spec in MAES.items()]
# Our count minus models_mae.py's trainable count for mae_vit_base_patch16: zero.
CASES += [("mae_param_count", count_inputs, lambda n: torch.zeros(1))]
CASES += [(name, video_inputs(spec), video_fn(spec)) for name, spec in VIDEOS.items()]
