/* vision.h: the public header of tessera's vision layer.
 *
 * The ViT image tower as open_clip builds it (its VisionTransformer): a patch-embedding
 * convolution without bias, a learned class token and positional table, ln_pre, the pre-norm
 * transformer blocks of core/nn, ln_post, pooling (class token or the mean of the patch tokens)
 * and a projection to the shared embedding width. Parameter names are open_clip's state_dict
 * names under a caller-given prefix ("visual." in a CLIP model), so its checkpoints converted
 * to safetensors load as they are, and the positional table of a checkpoint trained at another
 * grid is resampled as open_clip's resize_pos_embed does. Beside it, CSWin Transformer as the
 * official implementation builds it (stem, four stages of cross-shaped window attention with
 * LePE, merge blocks), with the official parameter names.
 *
 * What this header is not: the recipe parser or the encoder registry (cli/factory.c wires a
 * ts_vit into a ts_encoder), nor open_clip's rarer tower options (attentional pooling, layer
 * scale, patch dropout, no_ln_pre, final_ln_after_pool, custom blocks), nor CSWin's
 * segmentation backbone (the multi-scale outputs of mmseg's variant).
 *
 * Shape letters: B batch, P patch side, H and W image height and width in pixels, gh = H / P
 * and gw = W / P the patch grid, N = gh * gw patches, T = 1 + N tokens, C width, E out_dim.
 *
 * This layer includes only core/tessera.h.
 */
#ifndef TESSERA_VISION_H
#define TESSERA_VISION_H

#include "tessera.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------------------------------- */
/* ViT                                                                                      */

/* How the token sequence becomes one vector (open_clip's pool_type). */
typedef enum {
    TS_VIT_POOL_TOKEN, /* 'tok': the class token after ln_post (the default) */
    TS_VIT_POOL_MEAN,  /* 'avg': the mean of the N patch tokens after ln_post (class left out) */
} ts_vit_pool;

/* The size of a tower. ts_vit_cfg_named fills it from open_clip's model configs; any numbers
 * are allowed as long as ts_vit_cfg_check accepts them. */
typedef struct ts_vit_cfg {
    int image_h, image_w; /* input size in pixels; the grid is (image_h / patch, image_w / patch) */
    int patch;            /* square patch side: conv1's kernel and stride */
    int width;            /* C */
    int layers;           /* transformer blocks */
    int heads;            /* attention heads; open_clip sets width / head_width (64 or 80) */
    float mlp_ratio;      /* hidden width of the MLP is (int)(width * mlp_ratio) */
    int out_dim;          /* E, columns of proj (open_clip's embed_dim) */
    ts_act act;           /* TS_ACT_GELU, or TS_ACT_QUICK_GELU for the "-quickgelu" configs */
    ts_vit_pool pool;
    float ln_eps;         /* 1e-5 as open_clip */
    float drop_path;      /* stochastic depth of every block in training; 0 = off */
} ts_vit_cfg;

/* The configuration open_clip's model config NAME gives its vision tower, for example
 * "ViT-B-32", "ViT-B-16", "ViT-L-14", "ViT-S-16" or "ViT-L-14-336"; a "-quickgelu" suffix
 * selects QuickGELU. "ViT-Ti-32/16/14" are tessera's own: open_clip has no tiny config, so they
 * take timm's vit_tiny sizes (width 192, 12 layers, 3 heads) with out_dim 192.
 * Returns TS_ERR_RECIPE with a message listing the valid names when NAME is unknown. */
ts_status ts_vit_cfg_named(const char *name, ts_vit_cfg *cfg, ts_err *err);
/* The valid names, NULL-terminated. */
extern const char *const ts_vit_cfg_names[];
/* TS_OK when cfg describes a tower that can be built; TS_ERR_RECIPE naming the field otherwise
 * (a patch larger than the image, a width the heads do not divide, an unsupported activation). */
ts_status ts_vit_cfg_check(const ts_vit_cfg *cfg, ts_err *err);

/* Trainable parameters of a tower of this configuration, counted as open_clip counts them:
 * sum(p.numel() for p in model.visual.parameters()). ViT-B-32 87,849,216, ViT-B-16 86,192,640,
 * ViT-L-14 303,966,208. */
int64_t ts_vit_param_count(const ts_vit_cfg *cfg);

/* The tower: pointers into the parameter arena plus its configuration. Names under the prefix
 * given to ts_vit_init ("visual." gives "visual.conv1.weight"):
 *   conv1.weight                      (C, 3, P, P)
 *   class_embedding                   (C)
 *   positional_embedding              (T, C), row 0 for the class token, then the grid row by row
 *   ln_pre.weight, ln_pre.bias        (C)
 *   transformer.resblocks.N.*         the core block (ln_1, attn.in_proj_weight, ..., mlp.c_proj)
 *   ln_post.weight, ln_post.bias      (C)
 *   proj                              (C, E), applied as pooled @ proj */
typedef struct ts_vit {
    ts_vit_cfg cfg;
    int gh, gw;                 /* patch grid */
    char prefix[128];
    ts_tensor *conv1;           /* (C, 3, P, P) */
    ts_tensor *class_embedding; /* (C) */
    ts_tensor *pos_embed;       /* (T, C) */
    ts_nn_layernorm ln_pre;
    ts_nn_block *blocks;        /* (layers), malloc'ed by ts_vit_init */
    ts_nn_layernorm ln_post;
    ts_tensor *proj;            /* (C, E) */
} ts_vit;

/* Register the tower's parameters in p under prefix (which may be ""), in the order of
 * open_clip's named_parameters(), with open_clip's initialisation: class_embedding,
 * positional_embedding and proj normal with std width^-0.5; conv1 as torch's Conv2d default,
 * U(-1/sqrt(3 P P), 1/sqrt(3 P P)); the blocks as core's ts_nn_block_init; layernorms one and
 * zero. class_embedding, positional_embedding, norms and biases carry TS_PARAM_NO_DECAY.
 * cfg must pass ts_vit_cfg_check (TS_CHECK otherwise). Free with ts_vit_free. */
void ts_vit_init(ts_vit *m, ts_params *p, const char *prefix, const ts_vit_cfg *cfg);
/* Release what ts_vit_init allocated (not the parameters: they belong to p). NULL is a no-op. */
void ts_vit_free(ts_vit *m);

/* images f32 (B, 3, H, W) with H = gh * P and W = gw * P -> the pooled embedding (B, E).
 * When tokens_out is not NULL it receives the whole sequence after ln_post (B, T, C): row 0 is
 * the class token, rows 1.. the patches in grid order (open_clip's output_tokens gives rows 1..).
 * Records on the tape when grad is enabled, like any op. */
ts_tensor *ts_vit_forward(ts_ctx *c, const ts_vit *m, const ts_tensor *images,
                          ts_tensor **tokens_out);

/* Resample a positional table to another grid, as open_clip's resize_pos_embed does: the
 * first extra rows (the class token) are kept, the grid part (old_gh, old_gw, C) is resized to
 * (new_gh, new_gw, C) by bicubic interpolation with align_corners=False. antialias selects
 * torch's antialiased bicubic (Keys a = -0.5, the kernel widened when shrinking, weights
 * renormalised at the borders), which is what open_clip uses (antialias=True); otherwise the
 * plain torch bicubic (a = -0.75, borders clamped). Host arrays, no tape.
 *   in  (extra + old_gh * old_gw, C)
 *   out (extra + new_gh * new_gw, C) */
void ts_vit_resize_pos_embed(float *out, const float *in, int extra, int old_gh, int old_gw,
                             int new_gh, int new_gw, int C, int antialias);

/* Load the tower's parameters by name from the safetensors file at path (F32, BF16 or F16).
 * Every tower parameter must be present with the model's shape, except positional_embedding,
 * which may hold a square grid of another size: it is resampled with antialiased bicubic as
 * open_clip does when it loads a checkpoint into a model of another image size. Tensors that
 * are not the tower's (the text tower of a CLIP checkpoint) are ignored. Every mismatch is named
 * in one TS_ERR_MISMATCH message and nothing is changed when any is found; TS_ERR_IO or
 * TS_ERR_FORMAT when the file cannot be read. */
ts_status ts_vit_load(ts_vit *m, const char *path, ts_err *err);

/* ---------------------------------------------------------------------------------------- */
/* CSWin Transformer                                                                         */

/* CSWin as the official implementation builds it (microsoft/CSWin-Transformer,
 * models/cswin.py): a 7x7 stride-4 convolutional stem and a layernorm on its tokens, four
 * stages of CSWin blocks with a merge block (3x3 stride-2 convolution, layernorm) between them,
 * a final layernorm, the mean over tokens and an optional classifier head. A block is
 * x + drop_path(proj(stripe_attention(qkv(norm1(x))))), then + drop_path(mlp(norm2(x))) with
 * mlp fc1 (C -> ratio C), GELU, fc2. Stage s works on a map of (H / 2^(s+1)) x (W / 2^(s+1))
 * tokens with width embed_dim * 2^(s-1) (stages 1..4); in stages 1-3 half of the heads attend
 * within stripes split[s] columns wide and half within stripes split[s] rows high
 * (ts_stripe_attention), except where the map is split[s] x split[s]: then, as in stage 4
 * always, all heads attend the whole map (one branch).
 *
 * Beyond the official code: rectangular images (the official one assumes square), and no head
 * (num_classes 0), which returns the pooled features as an encoder wants them. */
typedef struct ts_cswin_cfg {
    int image_h, image_w; /* input size in pixels; both divisible by 32 */
    int embed_dim;        /* width of stage 1; doubles at every merge */
    int depth[4];         /* blocks per stage (0 allowed) */
    int heads[4];         /* heads per stage: even in stripe stages, dividing the width */
    int split[4];         /* stripe width per stage; stage 4 (whole map) ignores its own */
    float mlp_ratio;      /* hidden width of the MLP is (int)(width * mlp_ratio): 4 */
    int num_classes;      /* classifier outputs; 0 = no head, forward returns the pooled features */
    float ln_eps;         /* 1e-5 as torch.nn.LayerNorm */
    float drop_path;      /* stochastic depth of the last block; from 0 at the first, linearly */
} ts_cswin_cfg;

/* The official configurations by name: "CSWin-T" (64, depths [1, 2, 21, 1], heads
 * [2, 4, 8, 16]), "CSWin-S" (64, [2, 4, 32, 2], [2, 4, 8, 16]), "CSWin-B" (96, [2, 4, 32, 2],
 * [4, 8, 16, 32]), "CSWin-L" (144, [2, 4, 32, 2], [6, 12, 24, 24]), all at 224 with stripe
 * widths [1, 2, 7, 7], MLP ratio 4 and a 1000-class head; a "-384" suffix gives the 384 input
 * with widths [1, 2, 12, 12] (the official code registers B and L at 384). Returns
 * TS_ERR_RECIPE listing the valid names when NAME is unknown. */
ts_status ts_cswin_cfg_named(const char *name, ts_cswin_cfg *cfg, ts_err *err);
extern const char *const ts_cswin_cfg_names[]; /* NULL-terminated */
/* TS_OK when cfg describes a model that can be built; TS_ERR_RECIPE otherwise, naming the stage,
 * its map size and stripe width when the stripes do not divide the map (or the image side that
 * the stem and the merges cannot halve evenly), and the field for other mistakes. */
ts_status ts_cswin_cfg_check(const ts_cswin_cfg *cfg, ts_err *err);
/* Parameters of a model of this configuration, counted as
 * sum(p.numel() for p in model.parameters()) of the official model: CSWin-T 22,320,552,
 * CSWin-S 34,643,304, CSWin-B 77,382,184, CSWin-L 173,262,664 (the paper's table rounds these
 * to 23M, 35M, 78M and 173M). */
int64_t ts_cswin_param_count(const ts_cswin_cfg *cfg);
/* One line for logs into buf: image, widths, depths, heads, stripe widths, the stage maps and
 * the parameter count. Returns buf. */
const char *ts_cswin_describe(const ts_cswin_cfg *cfg, char *buf, size_t n);

/* One CSWin block. Names under its prefix ("stage1.0."):
 *   qkv.weight (3C, C), qkv.bias (3C)     the packed projection, [q | k | v]
 *   norm1.weight, norm1.bias (C)
 *   proj.weight (C, C), proj.bias (C)
 *   attns.0.get_v.weight (C/nb, 1, 3, 3), attns.0.get_v.bias (C/nb)   LePE of branch 0
 *   attns.1.get_v.weight, attns.1.get_v.bias                           branch 1 (nb = 2 only)
 *   mlp.fc1.weight (hid, C), mlp.fc1.bias, mlp.fc2.weight (C, hid), mlp.fc2.bias
 *   norm2.weight, norm2.bias (C) */
typedef struct ts_cswin_block {
    ts_nn_linear qkv, proj;
    ts_nn_layernorm norm1, norm2;
    ts_tensor *get_v_w[2], *get_v_b[2]; /* per branch; [1] NULL with one branch */
    ts_nn_mlp mlp;                      /* fc = mlp.fc1, proj = mlp.fc2, GELU */
    int dim, heads, map_h, map_w;
    int sw;                             /* stripe width; 0 = one branch over the whole map */
    float drop_path;
} ts_cswin_block;

/* A merge block: conv.weight (2C, C, 3, 3), conv.bias (2C), norm.weight, norm.bias (2C). */
typedef struct ts_cswin_merge {
    ts_tensor *conv_w, *conv_b;
    ts_nn_layernorm norm;
} ts_cswin_merge;

/* The model: pointers into the parameter arena plus its configuration. Names under the prefix
 * given to ts_cswin_init, in the official named_parameters() order:
 *   stage1_conv_embed.0.weight (C, 3, 7, 7), stage1_conv_embed.0.bias (C)
 *   stage1_conv_embed.2.weight, stage1_conv_embed.2.bias (C)   the stem's layernorm
 *   stage1.N.*, merge1.*, stage2.N.*, merge2.*, stage3.N.*, merge3.*, stage4.N.*
 *   norm.weight, norm.bias (8C)
 *   head.weight (K, 8C), head.bias (K)                         when num_classes > 0 */
typedef struct ts_cswin {
    ts_cswin_cfg cfg;
    char prefix[128];
    int map_h[4], map_w[4], dim[4]; /* per stage */
    int out_dim;                    /* num_classes, or the last width when there is no head */
    ts_tensor *stem_w, *stem_b;     /* (C, 3, 7, 7), (C) */
    ts_nn_layernorm stem_norm;
    ts_cswin_block *blocks[4];      /* (depth[s]) each, malloc'ed by ts_cswin_init */
    ts_cswin_merge merge[3];        /* before stages 2, 3, 4 */
    ts_nn_layernorm norm;
    ts_nn_linear head;              /* w and b NULL without a head */
} ts_cswin;

/* Check cfg (ts_cswin_cfg_check's errors, and nothing registered then) and register the model's
 * parameters in p under prefix (which may be ""), with the official initialisation: Linear
 * weights normal with std 0.02 (the official trunc_normal_ cuts at +-2, which is no cut at this
 * std) and zero biases, layernorms one and zero, convolutions as torch's Conv2d default
 * (U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias). Norms and biases carry
 * TS_PARAM_NO_DECAY. Free with ts_cswin_free. Official checkpoints converted to safetensors load
 * with ts_ckpt_load_model under prefix "" (allow_extra drops the head for a headless model). */
ts_status ts_cswin_init(ts_cswin *m, ts_params *p, const char *prefix, const ts_cswin_cfg *cfg,
                        ts_err *err);
/* Release what ts_cswin_init allocated (not the parameters: they belong to p). NULL is a no-op. */
void ts_cswin_free(ts_cswin *m);

/* images f32 (B, 3, H, W) of the configured size -> logits (B, num_classes), or the pooled
 * features (B, 8C) without a head. When tokens_out is not NULL it receives the tokens after the
 * final norm (B, H/32 * W/32, 8C), row-major over the last map. Records on the tape when grad is
 * enabled, like any op; drop-path acts in training mode only. */
ts_tensor *ts_cswin_forward(ts_ctx *c, const ts_cswin *m, const ts_tensor *images,
                            ts_tensor **tokens_out);

#ifdef __cplusplus
}
#endif
#endif /* TESSERA_VISION_H */
