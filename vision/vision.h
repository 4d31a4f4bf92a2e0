/* vision.h: the public header of tessera's vision layer.
 *
 * The ViT image tower as open_clip builds it (its VisionTransformer): a patch-embedding
 * convolution without bias, a learned class token and positional table, ln_pre, the pre-norm
 * transformer blocks of core/nn, ln_post, pooling (class token or the mean of the patch tokens)
 * and a projection to the shared embedding width. Parameter names are open_clip's state_dict
 * names under a caller-given prefix ("visual." in a CLIP model), so its checkpoints converted
 * to safetensors load as they are, and the positional table of a checkpoint trained at another
 * grid is resampled as open_clip's resize_pos_embed does.
 *
 * What this header is not: the recipe parser or the encoder registry (cli/factory.c wires a
 * ts_vit into a ts_encoder), nor open_clip's rarer tower options (attentional pooling, layer
 * scale, patch dropout, no_ln_pre, final_ln_after_pool, custom blocks).
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

#ifdef __cplusplus
}
#endif
#endif /* TESSERA_VISION_H */
