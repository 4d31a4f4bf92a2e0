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
 * LePE, merge blocks), with the official parameter names; MAE as facebookresearch/mae's
 * models_mae.py defines it (per-sample masking by shuffling, fixed sin-cos tables, a light
 * decoder, MSE on removed patches), with its names; and a video-clip encoder that runs any image
 * tower frame by frame and pools the frames with a temporal embedding.
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

/* Whose layout and names the tower has. Both run the same blocks; they differ in the edges.
 * open_clip: conv1 without bias, ln_pre, ln_post before pooling, proj (C, E) without bias.
 * timm (its VisionTransformer, class token, no register tokens, pre_norm off): the patch
 * convolution has a bias, no ln_pre, `norm` before class-token pooling or `fc_norm` after
 * mean pooling, and a classifier head (E, C) with bias (none when out_dim is 0). */
typedef enum {
    TS_VIT_OPEN_CLIP, /* the default (zero) */
    TS_VIT_TIMM,
} ts_vit_flavour;

/* The size of a tower. ts_vit_cfg_named fills it from open_clip's model configs; any numbers
 * are allowed as long as ts_vit_cfg_check accepts them. */
typedef struct ts_vit_cfg {
    int image_h, image_w; /* input size in pixels; the grid is (image_h / patch, image_w / patch) */
    int patch;            /* square patch side: conv1's kernel and stride */
    int width;            /* C */
    int layers;           /* transformer blocks */
    int heads;            /* attention heads; open_clip sets width / head_width (64 or 80) */
    float mlp_ratio;      /* hidden width of the MLP is (int)(width * mlp_ratio) */
    int out_dim;          /* E, columns of proj (open_clip's embed_dim); timm: classes, 0 = no head */
    ts_act act;           /* TS_ACT_GELU, or TS_ACT_QUICK_GELU for the "-quickgelu" configs */
    ts_vit_pool pool;
    float ln_eps;         /* 1e-5 as open_clip, 1e-6 as timm */
    float drop_path;      /* stochastic depth of every block in training; 0 = off */
    ts_vit_flavour flavour; /* names and edges: open_clip's (0) or timm's */
} ts_vit_cfg;

/* The configuration open_clip's model config NAME gives its vision tower, for example
 * "ViT-B-32", "ViT-B-16", "ViT-L-14", "ViT-S-16" or "ViT-L-14-336"; a "-quickgelu" suffix
 * selects QuickGELU. timm's model names ("vit_small_patch16_224", "vit_base_patch16_224", ...)
 * give timm's flavour with its 1000-class head and layernorm eps 1e-6. "ViT-Ti-32/16/14" are tessera's own: open_clip has no tiny config, so they
 * take timm's vit_tiny sizes (width 192, 12 layers, 3 heads) with out_dim 192.
 * Returns TS_ERR_RECIPE with a message listing the valid names when NAME is unknown. */
ts_status ts_vit_cfg_named(const char *name, ts_vit_cfg *cfg, ts_err *err);
/* The valid names, NULL-terminated. */
extern const char *const ts_vit_cfg_names[];
/* TS_OK when cfg describes a tower that can be built; TS_ERR_RECIPE naming the field otherwise
 * (a patch larger than the image, a width the heads do not divide, an unsupported activation). */
ts_status ts_vit_cfg_check(const ts_vit_cfg *cfg, ts_err *err);

/* Read a recipe section (e.g. "model.vision") into cfg (open_clip flavour):
 *   type        vit (required)
 *   config      an open_clip config name ("ViT-B-16") whose vision tower gives the defaults
 *               of the keys below ("" = none; the resolved recipe then holds the named values)
 *   image_size, patch_size, width, layers, heads, mlp_ratio, out_dim, ln_eps, drop_path
 *   act         gelu | quick_gelu
 *   pool        token | mean
 * Errors: TS_ERR_RECIPE naming file:line and the key. */
ts_status ts_vit_cfg_parse(ts_recipe *r, const char *section, ts_vit_cfg *cfg, ts_err *err);

/* Trainable parameters of a tower of this configuration, counted as open_clip counts them:
 * sum(p.numel() for p in model.visual.parameters()). ViT-B-32 87,849,216, ViT-B-16 86,192,640,
 * ViT-L-14 303,966,208. */
int64_t ts_vit_param_count(const ts_vit_cfg *cfg);

/* The tower: pointers into the parameter arena plus its configuration. Names under the prefix
 * given to ts_vit_init ("visual." gives "visual.conv1.weight"), for the open_clip flavour:
 *   conv1.weight                      (C, 3, P, P)
 *   class_embedding                   (C)
 *   positional_embedding              (T, C), row 0 for the class token, then the grid row by row
 *   ln_pre.weight, ln_pre.bias        (C)
 *   transformer.resblocks.N.*         the core block (ln_1, attn.in_proj_weight, ..., mlp.c_proj)
 *   ln_post.weight, ln_post.bias      (C)
 *   proj                              (C, E), applied as pooled @ proj
 * and for the timm flavour, in timm's order:
 *   cls_token (1, 1, C), pos_embed (1, T, C), patch_embed.proj.weight (C, 3, P, P) and .bias,
 *   blocks.N.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}.{weight, bias},
 *   norm (class-token pooling) or fc_norm (mean pooling), head.weight (E, C), head.bias (E). */
typedef struct ts_vit {
    ts_vit_cfg cfg;
    int gh, gw;                 /* patch grid */
    char prefix[128];
    ts_tensor *conv1;           /* (C, 3, P, P) */
    ts_tensor *class_embedding; /* (C) */
    ts_tensor *pos_embed;       /* (T, C) */
    ts_nn_layernorm ln_pre;     /* open_clip only */
    ts_nn_block *blocks;        /* (layers), malloc'ed by ts_vit_init */
    ts_nn_layernorm ln_post;    /* timm: norm, or fc_norm with mean pooling */
    ts_tensor *proj;            /* (C, E); NULL in the timm flavour */
    ts_tensor *conv1_b;         /* (C), timm only */
    ts_tensor *head_w, *head_b; /* (E, C) and (E), timm only (NULL when out_dim is 0) */
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

/* Load the tower's parameters by name from the safetensors file at path (F32, BF16 or F16),
 * under open_clip's or timm's names as the flavour says (a timm state_dict saved with
 * safetensors loads as it is). Every tower parameter must be present with the model's shape,
 * except the positional table, which may hold a square grid of another size: it is resampled with antialiased bicubic as
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
/* Read a recipe section into cfg:
 *   type        cswin (required)
 *   config      CSWin-T | CSWin-S | CSWin-B | CSWin-L (-384): defaults of the keys below
 *   image_size, embed_dim, depth [4], num_heads [4], split_size [4], mlp_ratio, ln_eps,
 *   drop_path, out_dim (the head's outputs; 0 = the pooled features)
 * Errors: TS_ERR_RECIPE naming file:line and the key (the stage, map and stripe width when the
 * widths do not divide the maps). */
ts_status ts_cswin_cfg_parse(ts_recipe *r, const char *section, ts_cswin_cfg *cfg, ts_err *err);
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

/* ---------------------------------------------------------------------------------------- */
/* MAE: masked autoencoder                                                                   */

/* MAE as facebookresearch/mae defines it (models_mae.py, MaskedAutoencoderViT): the image is cut
 * into patches (a stride-P convolution with bias), fixed 2-d sin-cos positional tables are added
 * (MAE's get_2d_sincos_pos_embed, a zero row for the class token), a ratio of the patches is
 * removed per sample by shuffling (noise -> argsort -> the first len_keep stay), the encoder
 * (timm's ViT blocks) sees the class token and the visible patches only, and a light decoder
 * (decoder_embed, one shared mask_token in every removed place, its own fixed sin-cos table,
 * decoder blocks, decoder_norm, decoder_pred to P * P * 3 values) predicts every patch. The loss
 * is the mean squared error over the removed patches only, against the pixels in MAE's patchify
 * order (row in patch, column in patch, channel), or against pixels normalised per patch (mean
 * and unbiased variance, eps 1e-6) with norm_pix_loss.
 *
 * Beyond models_mae.py: rectangular images (the grid is (H / P, W / P); MAE assumes a square),
 * and a given noise tensor, so masking can be reproduced exactly (MAE draws torch.rand).
 *
 * Shape letters here: N batch, L = gh * gw patches, Lk = len_keep visible patches,
 * Q = P * P * 3 values per patch, C encoder width, Cd decoder width. */
typedef struct ts_mae_cfg {
    int image_h, image_w; /* input size in pixels, both divisible by patch */
    int patch;            /* P */
    int width, layers, heads;             /* encoder: C, blocks, heads */
    int dec_width, dec_layers, dec_heads; /* decoder: MAE's defaults are 512, 8, 16 */
    float mlp_ratio;      /* hidden width (int)(width * mlp_ratio) in both: 4 */
    float ln_eps;         /* 1e-6, as MAE's models build their LayerNorms */
    double mask_ratio;    /* share of the patches removed: 0.75; len_keep = (int)(L (1 - r)) */
    int norm_pix_loss;    /* targets normalised per patch */
} ts_mae_cfg;

/* The defaults of MaskedAutoencoderViT with mae_vit_base_patch16's encoder (224, 16, 768, 12
 * layers, 12 heads), the 512-wide 8-block 16-head decoder, MLP ratio 4, eps 1e-6, ratio 0.75,
 * norm_pix_loss off (MAE's own default; its pretraining recipe turns it on). */
void ts_mae_cfg_default(ts_mae_cfg *cfg);
/* TS_OK when cfg can be built; TS_ERR_RECIPE naming the field otherwise (an image side the patch
 * does not divide, widths the heads do not divide or not divisible by 4 as the sin-cos tables
 * need, a mask ratio that keeps no patch or removes none). */
ts_status ts_mae_cfg_check(const ts_mae_cfg *cfg, ts_err *err);
/* Trainable parameters, as sum(p.numel() for p in model.parameters() if p.requires_grad) of
 * models_mae.py (the two fixed tables left out). mae_vit_base_patch16: 111,655,680. */
int64_t ts_mae_param_count(const ts_mae_cfg *cfg);

/* The model. Names under the prefix given to ts_mae_init, in models_mae.py's
 * named_parameters() order:
 *   cls_token (1, 1, C), pos_embed (1, 1 + L, C) fixed, mask_token (1, 1, Cd),
 *   decoder_pos_embed (1, 1 + L, Cd) fixed,
 *   patch_embed.proj.weight (C, 3, P, P), patch_embed.proj.bias (C),
 *   blocks.N.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}.{weight, bias}  (timm Block)
 *   norm.weight, norm.bias (C), decoder_embed.weight (Cd, C), decoder_embed.bias (Cd),
 *   decoder_blocks.N.*, decoder_norm.weight, decoder_norm.bias (Cd),
 *   decoder_pred.weight (Q, Cd), decoder_pred.bias (Q).
 * The two fixed tables are TS_PARAM_BUFFER parameters (saved in checkpoints, never trained), as
 * MAE keeps them (requires_grad=False). A timm block is the core block (ts_nn_block) under timm's
 * names: attn.qkv is the packed [q | k | v] projection of MultiheadAttention's in_proj. */
typedef struct ts_mae {
    ts_mae_cfg cfg;
    int gh, gw, L, len_keep;
    char prefix[128];
    ts_tensor *cls_token;     /* (1, 1, C) */
    ts_tensor *pos_embed;     /* (1, 1 + L, C) buffer */
    ts_tensor *mask_token;    /* (1, 1, Cd) */
    ts_tensor *dec_pos_embed; /* (1, 1 + L, Cd) buffer */
    ts_tensor *patch_w;       /* (C, 3, P, P) */
    ts_tensor *patch_b;       /* (C) */
    ts_nn_block *blocks;      /* (layers), malloc'ed */
    ts_nn_layernorm norm;
    ts_nn_linear dec_embed;   /* (Cd, C) */
    ts_nn_block *dec_blocks;  /* (dec_layers), malloc'ed */
    ts_nn_layernorm dec_norm;
    ts_nn_linear dec_pred;    /* (Q, Cd) */
    int tables_set;           /* ts_mae_set_tables has written the fixed tables */
} ts_mae;

/* Register the model's parameters in p under prefix (which may be ""), with MAE's
 * initialize_weights: Linear weights (the qkv, proj, fc1, fc2, decoder_embed and decoder_pred
 * matrices) xavier-uniform and biases zero, the patch convolution's weight xavier-uniform over
 * (C, 3 P P) and its bias as torch's Conv2d default, cls_token and mask_token normal with std
 * 0.02, layernorms one and zero. cfg must pass ts_mae_cfg_check (TS_CHECK otherwise). After
 * ts_params_finalize, call ts_mae_set_tables to write the fixed sin-cos tables (forward stops
 * with a message when that was forgotten). Free with ts_mae_free. */
void ts_mae_init(ts_mae *m, ts_params *p, const char *prefix, const ts_mae_cfg *cfg);
/* Write MAE's fixed 2-d sin-cos tables into pos_embed and decoder_pos_embed. */
void ts_mae_set_tables(ts_mae *m);
/* Release what ts_mae_init allocated (not the parameters). NULL is a no-op. */
void ts_mae_free(ts_mae *m);

/* MAE's patchify on host arrays: imgs (N, 3, H, W) -> x (N, L, Q), a patch's values in the
 * order (row p, column q, channel c); unpatchify is its inverse. */
void ts_mae_patchify(float *x, const float *imgs, int64_t N, int H, int W, int P);
void ts_mae_unpatchify(float *imgs, const float *x, int64_t N, int H, int W, int P);
/* MAE's random_masking on host arrays, from noise (N, L): per sample, ids_shuffle = argsort of
 * the noise (ascending; ties by index), ids_restore its inverse permutation (N, L), ids_keep the
 * first len_keep of ids_shuffle (N, Lk), mask (N, L) 0 where kept and 1 where removed, in the
 * original patch order. Any output may be NULL. */
void ts_mae_masking(const float *noise, int64_t N, int64_t L, int64_t len_keep, int32_t *ids_keep,
                    int32_t *ids_restore, float *mask);

/* What one forward gives. Tensors live in the step arena. */
typedef struct ts_mae_out {
    ts_tensor *loss;        /* (1) mean over removed patches of the per-patch MSE */
    ts_tensor *pred;        /* (N, L, Q) the decoder's prediction of every patch */
    ts_tensor *target;      /* (N, L, Q) patchified pixels (normalised with norm_pix_loss) */
    ts_tensor *mask;        /* (N, L) f32, 1 = removed */
    ts_tensor *ids_restore; /* (N, L) i32 */
    ts_tensor *latent;      /* (N, 1 + Lk, C) the encoder's output after norm */
} ts_mae_out;

/* images f32 (N, 3, H, W) of the configured size; noise f32 (N, L) or NULL to draw it uniform
 * in [0, 1) from c->rng (as torch.rand). Runs MAE's forward (encoder, decoder, loss); records on
 * the tape when grad is enabled. The images get no gradient (MAE's target is the input). */
ts_mae_out ts_mae_forward(ts_ctx *c, const ts_mae *m, const ts_tensor *images,
                          const ts_tensor *noise);

/* ---------------------------------------------------------------------------------------- */
/* Video clips                                                                               */

/* The clip encoder (ts_video_enc; loaders' ts_video is a decoded file). A clip of K frames
 * (B, K, 3, H, W) goes through any image encoder, frame by frame in one batch of B * K images,
 * plus a learned temporal position embedding (K, D) on the per-frame embeddings,
 * pooled to one embedding per clip: the mean over frames, or attention pooling, in which one
 * learned query attends over the K frame embeddings (open_clip's AttentionalPooler with one
 * query: ln_k on the frames, ln_q on the query, torch.nn.MultiheadAttention, no residual).
 *
 * The encoder is a function pointer, so any tower plugs in; ts_video_enc_vit adapts ts_vit.
 * Shape letters: B clips, K frames, D the encoder's embedding width. */
typedef ts_tensor *(*ts_frame_encoder)(ts_ctx *c, const void *encoder,
                                       const ts_tensor *images /* (B K, 3, H, W) */);
/* ts_frame_encoder for a ts_vit: its pooled embedding (B K, E). */
ts_tensor *ts_video_enc_vit(ts_ctx *c, const void *vit, const ts_tensor *images);

typedef enum { TS_VIDEO_ENC_MEAN, TS_VIDEO_ENC_ATTN } ts_video_enc_pool_kind;
typedef struct ts_video_enc_cfg {
    int frames;         /* K */
    int dim;            /* D, the encoder's embedding width */
    ts_video_enc_pool_kind pool;
    int heads;          /* attention pooling: heads dividing D */
    float ln_eps;       /* attention pooling's layernorms: 1e-5 */
} ts_video_enc_cfg;

/* Names under the prefix given to ts_video_enc_init:
 *   temporal_embedding (K, D), normal std 0.02
 *   attention pooling only: pool.query (1, D) normal std D^-0.5,
 *   pool.attn.in_proj_weight (3D, D), pool.attn.in_proj_bias (3D), pool.attn.out_proj.weight
 *   (D, D), pool.attn.out_proj.bias (D) (torch.nn.MultiheadAttention's names and init),
 *   pool.ln_q.weight, pool.ln_q.bias, pool.ln_k.weight, pool.ln_k.bias (D). */
typedef struct ts_video_enc {
    ts_video_enc_cfg cfg;
    ts_frame_encoder encode;
    const void *encoder;
    ts_tensor *temporal;        /* (K, D) */
    ts_tensor *query;           /* (1, D) or NULL */
    ts_nn_mha attn;             /* attention pooling */
    ts_nn_layernorm ln_q, ln_k; /* attention pooling */
} ts_video_enc;

/* TS_ERR_RECIPE naming the field when cfg is not usable (frames or dim not positive, heads not
 * dividing dim for attention pooling). */
ts_status ts_video_enc_cfg_check(const ts_video_enc_cfg *cfg, ts_err *err);
/* Register the temporal embedding and the pooling parameters under prefix; the encoder's own
 * parameters are the caller's. cfg must pass ts_video_enc_cfg_check (TS_CHECK otherwise). */
void ts_video_enc_init(ts_video_enc *m, ts_params *p, const char *prefix,
                       const ts_video_enc_cfg *cfg, ts_frame_encoder encode, const void *encoder);
/* clips f32 (B, K, 3, H, W) -> (B, D). frames_out, when not NULL, receives the per-frame
 * embeddings with the temporal embedding added (B, K, D). */
ts_tensor *ts_video_enc_forward(ts_ctx *c, const ts_video_enc *m, const ts_tensor *clips,
                                ts_tensor **frames_out);
/* The pooling alone: frame embeddings (B, K, D) -> (B, D), temporal embedding added first. */
ts_tensor *ts_video_enc_pool(ts_ctx *c, const ts_video_enc *m, const ts_tensor *frames);

#ifdef __cplusplus
}
#endif
#endif /* TESSERA_VISION_H */
