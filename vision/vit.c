/* vit.c: the ViT image tower, as open_clip's VisionTransformer builds it, and as timm's.
 *
 * images -> conv1 (stride P, no bias) -> patch tokens in grid order -> class token in front ->
 * + positional_embedding -> ln_pre -> transformer.resblocks -> ln_post -> pool (class token or
 * mean of the patch tokens) -> @ proj. timm's flavour runs the same blocks under timm's names
 * with its own edges: a patch convolution with bias, no ln_pre, `norm` before class-token
 * pooling or `fc_norm` after mean pooling, and a linear head with bias. Everything is made of core ops and the core transformer
 * block, so the tape gives the backward. Beside the tower: open_clip's model configs by name,
 * the parameter count, the bicubic resampling of the positional table (torch's antialiased and
 * plain kernels) and a loader that resamples a checkpoint's table on the way in.
 *
 * What this file is not: patch dropout, attentional pooling, layer scale or the other rare
 * open_clip tower options, and not the encoder plug-in (cli/factory.c wraps a ts_vit).
 *
 * Shapes: B batch, P patch side, gh x gw patch grid, N = gh * gw, T = 1 + N, C width,
 * E out_dim.
 */
#include "vision.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- configurations by name ---- */

/* open_clip's model configs (one JSON file per name in open_clip_torch 3.3.0): vision_cfg
 * width, layers, patch_size, image_size, head_width (64 unless given), mlp_ratio (4 in all of
 * these), and embed_dim. */
typedef struct named_cfg {
    const char *name;
    int width, layers, head_width, patch, image, out_dim;
    int timm; /* timm's model name: its flavour, eps 1e-6 and out_dim the ImageNet classes */
} named_cfg;

static const named_cfg named[] = {
    { "ViT-Ti-32", 192, 12, 64, 32, 224, 192, 0 }, /* tessera's own, timm's vit_tiny sizes */
    { "ViT-Ti-16", 192, 12, 64, 16, 224, 192, 0 },
    { "ViT-Ti-14", 192, 12, 64, 14, 224, 192, 0 },
    { "ViT-S-32", 384, 12, 64, 32, 224, 384, 0 },
    { "ViT-S-16", 384, 12, 64, 16, 224, 384, 0 },
    { "ViT-M-32", 512, 12, 64, 32, 224, 512, 0 },
    { "ViT-M-16", 512, 12, 64, 16, 224, 512, 0 },
    { "ViT-B-32", 768, 12, 64, 32, 224, 512, 0 },
    { "ViT-B-32-256", 768, 12, 64, 32, 256, 512, 0 },
    { "ViT-B-16", 768, 12, 64, 16, 224, 512, 0 },
    { "ViT-B-16-plus", 896, 12, 64, 16, 224, 640, 0 },
    { "ViT-B-16-plus-240", 896, 12, 64, 16, 240, 640, 0 },
    { "ViT-L-14", 1024, 24, 64, 14, 224, 768, 0 },
    { "ViT-L-14-336", 1024, 24, 64, 14, 336, 768, 0 },
    { "ViT-L-16", 1024, 24, 64, 16, 224, 768, 0 },
    { "ViT-H-14", 1280, 32, 80, 14, 224, 1024, 0 },
    { "ViT-H-16", 1280, 32, 80, 16, 224, 1024, 0 },
    /* timm's vision_transformer.py model names (class token, 1000 classes) */
    { "vit_tiny_patch16_224", 192, 12, 64, 16, 224, 1000, 1 },
    { "vit_small_patch16_224", 384, 12, 64, 16, 224, 1000, 1 },
    { "vit_small_patch32_224", 384, 12, 64, 32, 224, 1000, 1 },
    { "vit_base_patch16_224", 768, 12, 64, 16, 224, 1000, 1 },
    { "vit_base_patch32_224", 768, 12, 64, 32, 224, 1000, 1 },
    { "vit_large_patch16_224", 1024, 24, 64, 16, 224, 1000, 1 },
};
enum { NNAMED = (int)(sizeof named / sizeof named[0]) };

const char *const ts_vit_cfg_names[] = {
    "ViT-Ti-32", "ViT-Ti-16", "ViT-Ti-14", "ViT-S-32", "ViT-S-16", "ViT-M-32", "ViT-M-16",
    "ViT-B-32", "ViT-B-32-256", "ViT-B-16", "ViT-B-16-plus", "ViT-B-16-plus-240", "ViT-L-14",
    "ViT-L-14-336", "ViT-L-16", "ViT-H-14", "ViT-H-16", "vit_tiny_patch16_224",
    "vit_small_patch16_224", "vit_small_patch32_224", "vit_base_patch16_224",
    "vit_base_patch32_224", "vit_large_patch16_224", NULL,
};
_Static_assert(sizeof ts_vit_cfg_names / sizeof ts_vit_cfg_names[0] == NNAMED + 1,
               "ts_vit_cfg_names must list every named configuration");

ts_status ts_vit_cfg_named(const char *name, ts_vit_cfg *cfg, ts_err *err) {
    static const char quick[] = "-quickgelu";
    size_t n = strlen(name), q = sizeof quick - 1;
    int is_quick = n > q && strcmp(name + n - q, quick) == 0;
    size_t base = is_quick ? n - q : n;
    for (int i = 0; i < NNAMED; i++) {
        const named_cfg *d = &named[i];
        if (strlen(d->name) != base || strncmp(d->name, name, base) != 0) continue;
        *cfg = (ts_vit_cfg){
            .image_h = d->image, .image_w = d->image, .patch = d->patch, .width = d->width,
            .layers = d->layers, .heads = d->width / d->head_width, .mlp_ratio = 4.0f,
            .out_dim = d->out_dim, .act = is_quick ? TS_ACT_QUICK_GELU : TS_ACT_GELU,
            .pool = TS_VIT_POOL_TOKEN, .ln_eps = d->timm ? 1e-6f : 1e-5f, .drop_path = 0.0f,
            .flavour = d->timm ? TS_VIT_TIMM : TS_VIT_OPEN_CLIP,
        };
        return TS_OK;
    }
    char list[2048];
    size_t len = 0;
    for (int i = 0; i < NNAMED && len < sizeof list; i++)
        len += (size_t)snprintf(list + len, sizeof list - len, "%s%s", i ? ", " : "",
                                named[i].name);
    return ts_fail(err, TS_ERR_RECIPE,
                   "unknown ViT configuration '%s'; valid: %s (each also with -quickgelu)", name,
                   list);
}

ts_status ts_vit_cfg_check(const ts_vit_cfg *cfg, ts_err *err) {
    if (cfg->patch < 1)
        return ts_fail(err, TS_ERR_RECIPE, "vit: patch must be at least 1, got %d", cfg->patch);
    if (cfg->image_h < cfg->patch || cfg->image_w < cfg->patch)
        return ts_fail(err, TS_ERR_RECIPE, "vit: image %dx%d is smaller than the patch %d",
                       cfg->image_h, cfg->image_w, cfg->patch);
    if (cfg->layers < 0)
        return ts_fail(err, TS_ERR_RECIPE, "vit: layers must be 0 or more, got %d", cfg->layers);
    if (cfg->width < 1 || cfg->heads < 1 || cfg->width % cfg->heads != 0)
        return ts_fail(err, TS_ERR_RECIPE, "vit: width %d is not divisible by %d heads",
                       cfg->width, cfg->heads);
    if (!(cfg->mlp_ratio > 0.0f) || (int)(cfg->width * cfg->mlp_ratio) < 1)
        return ts_fail(err, TS_ERR_RECIPE, "vit: mlp_ratio %g gives no hidden units",
                       (double)cfg->mlp_ratio);
    if (cfg->flavour != TS_VIT_OPEN_CLIP && cfg->flavour != TS_VIT_TIMM)
        return ts_fail(err, TS_ERR_RECIPE, "vit: flavour must be open_clip or timm");
    if (cfg->out_dim < (cfg->flavour == TS_VIT_TIMM ? 0 : 1))
        return ts_fail(err, TS_ERR_RECIPE, "vit: out_dim must be at least %d, got %d",
                       cfg->flavour == TS_VIT_TIMM ? 0 : 1, cfg->out_dim);
    if (cfg->act != TS_ACT_GELU && cfg->act != TS_ACT_QUICK_GELU)
        return ts_fail(err, TS_ERR_RECIPE, "vit: activation must be gelu or quick_gelu");
    if (cfg->pool != TS_VIT_POOL_TOKEN && cfg->pool != TS_VIT_POOL_MEAN)
        return ts_fail(err, TS_ERR_RECIPE, "vit: pool must be token or mean");
    if (!(cfg->drop_path >= 0.0f && cfg->drop_path < 1.0f))
        return ts_fail(err, TS_ERR_RECIPE, "vit: drop_path %g is not in [0, 1)",
                       (double)cfg->drop_path);
    return TS_OK;
}

/* ---- parameter count ---- */

/* The sum of the shapes registered by ts_vit_init, written out. */
int64_t ts_vit_param_count(const ts_vit_cfg *cfg) {
    int64_t C = cfg->width, P = cfg->patch, E = cfg->out_dim;
    int64_t N = (int64_t)(cfg->image_h / cfg->patch) * (cfg->image_w / cfg->patch);
    int64_t hid = (int64_t)(int)(cfg->width * cfg->mlp_ratio);
    int64_t block = 2 * C                 /* ln_1 */
                    + 3 * C * C + 3 * C   /* attn.in_proj */
                    + C * C + C           /* attn.out_proj */
                    + 2 * C               /* ln_2 */
                    + hid * C + hid       /* mlp.c_fc */
                    + C * hid + C;        /* mlp.c_proj */
    if (cfg->flavour == TS_VIT_TIMM)
        return C * 3 * P * P + C          /* patch_embed.proj */
               + C                        /* cls_token */
               + (1 + N) * C              /* pos_embed */
               + cfg->layers * block
               + 2 * C                    /* norm or fc_norm */
               + E * C + E;               /* head (none when E is 0) */
    return C * 3 * P * P                  /* conv1 */
           + C                            /* class_embedding */
           + (1 + N) * C                  /* positional_embedding */
           + 2 * C                        /* ln_pre */
           + cfg->layers * block
           + 2 * C                        /* ln_post */
           + C * E;                       /* proj */
}

/* ---- building ---- */

/* timm's names and order for the same tensors: cls_token (1, 1, C), pos_embed (1, T, C),
 * patch_embed.proj with bias, blocks.N.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2},
 * then norm or fc_norm and head. The initial values follow timm's init loosely (truncation
 * aside): std 0.02 for the tables and linears, zero biases. */
static void timm_init(ts_vit *m, ts_params *p, const char *prefix, const ts_vit_cfg *cfg) {
    int C = cfg->width, P = cfg->patch, T = 1 + m->gh * m->gw, hid = (int)(C * cfg->mlp_ratio);
    float conv_bound = 1.0f / sqrtf(3.0f * P * P);
    char name[256];
    m->class_embedding = ts_param(p, ts_pname(name, sizeof name, "%scls_token", prefix), 3,
                                  TS_SHAPE(1, 1, C), TS_INIT_N(1e-6f), TS_PARAM_NO_DECAY);
    m->pos_embed = ts_param(p, ts_pname(name, sizeof name, "%spos_embed", prefix), 3,
                            TS_SHAPE(1, T, C), TS_INIT_N(0.02f), TS_PARAM_NO_DECAY);
    m->conv1 = ts_param(p, ts_pname(name, sizeof name, "%spatch_embed.proj.weight", prefix), 4,
                        TS_SHAPE(C, 3, P, P), TS_INIT_U(-conv_bound, conv_bound), 0);
    m->conv1_b = ts_param(p, ts_pname(name, sizeof name, "%spatch_embed.proj.bias", prefix), 1,
                          TS_SHAPE(C), TS_INIT_0, TS_PARAM_NO_DECAY);
    for (int l = 0; l < cfg->layers; l++) {
        ts_nn_block *b = &m->blocks[l];
        ts_nn_linear lin;
        ts_nn_layernorm_init(&b->ln_1, p,
                             ts_pname(name, sizeof name, "%sblocks.%d.norm1", prefix, l), C,
                             cfg->ln_eps);
        ts_nn_linear_init(&lin, p, ts_pname(name, sizeof name, "%sblocks.%d.attn.qkv", prefix, l),
                          C, 3 * C, 1);
        b->attn.in_w = lin.w;
        b->attn.in_b = lin.b;
        ts_nn_linear_init(&b->attn.out, p,
                          ts_pname(name, sizeof name, "%sblocks.%d.attn.proj", prefix, l), C, C, 1);
        b->attn.dim = C;
        b->attn.heads = cfg->heads;
        ts_nn_layernorm_init(&b->ln_2, p,
                             ts_pname(name, sizeof name, "%sblocks.%d.norm2", prefix, l), C,
                             cfg->ln_eps);
        ts_nn_linear_init(&b->mlp.fc, p,
                          ts_pname(name, sizeof name, "%sblocks.%d.mlp.fc1", prefix, l), C, hid, 1);
        ts_nn_linear_init(&b->mlp.proj, p,
                          ts_pname(name, sizeof name, "%sblocks.%d.mlp.fc2", prefix, l), hid, C,
                          1);
        b->mlp.act = cfg->act;
        b->drop_path = cfg->drop_path;
    }
    /* timm's default fc_norm: on after mean pooling, and then `norm` is an identity. */
    ts_nn_layernorm_init(&m->ln_post, p,
                         ts_pname(name, sizeof name, "%s%s", prefix,
                                  cfg->pool == TS_VIT_POOL_MEAN ? "fc_norm" : "norm"),
                         C, cfg->ln_eps);
    if (cfg->out_dim > 0) {
        ts_nn_linear head;
        ts_nn_linear_init(&head, p, ts_pname(name, sizeof name, "%shead", prefix), C,
                          cfg->out_dim, 1);
        m->head_w = head.w;
        m->head_b = head.b;
    }
}

void ts_vit_init(ts_vit *m, ts_params *p, const char *prefix, const ts_vit_cfg *cfg) {
    ts_err err = { 0 };
    TS_CHECK(ts_vit_cfg_check(cfg, &err) == TS_OK, "%s", err.msg);
    memset(m, 0, sizeof *m);
    m->cfg = *cfg;
    m->gh = cfg->image_h / cfg->patch;
    m->gw = cfg->image_w / cfg->patch;
    TS_CHECK(strlen(prefix) < sizeof m->prefix, "vit: prefix '%s' is too long", prefix);
    strcpy(m->prefix, prefix);
    m->blocks = calloc((size_t)(cfg->layers > 0 ? cfg->layers : 1), sizeof *m->blocks);
    TS_CHECK(m->blocks != NULL, "out of memory");
    if (cfg->flavour == TS_VIT_TIMM) {
        timm_init(m, p, prefix, cfg);
        return;
    }
    int C = cfg->width, P = cfg->patch, T = 1 + m->gh * m->gw;
    float scale = 1.0f / sqrtf((float)C);       /* open_clip: width ** -0.5 */
    float conv_bound = 1.0f / sqrtf(3.0f * P * P); /* Conv2d default: 1 / sqrt(fan_in) */
    char name[256];
    /* Registration follows open_clip's named_parameters(): the three bare tensors first. */
    m->class_embedding = ts_param(p, ts_pname(name, sizeof name, "%sclass_embedding", prefix), 1,
                                  TS_SHAPE(C), TS_INIT_N(scale), TS_PARAM_NO_DECAY);
    m->pos_embed = ts_param(p, ts_pname(name, sizeof name, "%spositional_embedding", prefix), 2,
                            TS_SHAPE(T, C), TS_INIT_N(scale), TS_PARAM_NO_DECAY);
    m->proj = ts_param(p, ts_pname(name, sizeof name, "%sproj", prefix), 2,
                       TS_SHAPE(C, cfg->out_dim), TS_INIT_N(scale), 0);
    m->conv1 = ts_param(p, ts_pname(name, sizeof name, "%sconv1.weight", prefix), 4,
                        TS_SHAPE(C, 3, P, P), TS_INIT_U(-conv_bound, conv_bound), 0);
    ts_nn_layernorm_init(&m->ln_pre, p, ts_pname(name, sizeof name, "%sln_pre", prefix), C,
                         cfg->ln_eps);
    for (int l = 0; l < cfg->layers; l++)
        ts_nn_block_init(&m->blocks[l], p,
                         ts_pname(name, sizeof name, "%stransformer.resblocks.%d", prefix, l), C,
                         cfg->heads, cfg->mlp_ratio, cfg->act, cfg->ln_eps, cfg->drop_path);
    ts_nn_layernorm_init(&m->ln_post, p, ts_pname(name, sizeof name, "%sln_post", prefix), C,
                         cfg->ln_eps);
}

void ts_vit_free(ts_vit *m) {
    if (!m) return;
    free(m->blocks);
    m->blocks = NULL;
}

/* ---- forward ---- */

ts_tensor *ts_vit_forward(ts_ctx *c, const ts_vit *m, const ts_tensor *images,
                          ts_tensor **tokens_out) {
    const ts_vit_cfg *cfg = &m->cfg;
    int64_t C = cfg->width, P = cfg->patch, N = (int64_t)m->gh * m->gw;
    char s[96];
    TS_CHECK(images->ndim == 4 && ts_dim(images, 1) == 3 && ts_dim(images, 2) == m->gh * P &&
                 ts_dim(images, 3) == m->gw * P,
             "vit: images are %s, expected (B, 3, %lld, %lld)", ts_shape_str(images, s, sizeof s),
             (long long)(m->gh * P), (long long)(m->gw * P));
    int64_t B = ts_dim(images, 0);

    int timm = cfg->flavour == TS_VIT_TIMM;

    /* Patch embedding: one stride-P convolution, then the grid flattened row by row. */
    ts_tensor *x = ts_conv2d(c, images, m->conv1, m->conv1_b, (int)P, 0); /* (B, C, gh, gw) */
    x = ts_reshape(c, x, 3, TS_SHAPE(B, C, N));
    x = ts_permute(c, x, (const int[]){ 0, 2, 1 });                  /* (B, N, C) */

    /* The class token goes in front of every sample: broadcasting it over a zero (B, 1, C)
     * keeps its gradient summed over the batch, as torch's expand does. */
    ts_tensor *cls_row = timm ? ts_reshape(c, m->class_embedding, 1, TS_SHAPE(C))
                              : m->class_embedding;
    ts_tensor *cls = ts_add(c, ts_zeros(c, TS_F32, 3, TS_SHAPE(B, 1, C)), cls_row);
    x = ts_concat(c, (ts_tensor *const[]){ cls, x }, 2, 1);          /* (B, T, C) */
    x = ts_add(c, x, timm ? ts_reshape(c, m->pos_embed, 2, TS_SHAPE(1 + N, C)) : m->pos_embed);
    if (!timm) x = ts_nn_layernorm_forward(c, &m->ln_pre, x);

    for (int l = 0; l < cfg->layers; l++) x = ts_nn_block_forward(c, &m->blocks[l], x, 0, NULL);

    ts_tensor *pooled;
    if (timm) {
        /* timm: `norm` on the sequence and the class token, or the mean of the patch tokens
         * and then fc_norm on it; tokens_out gets the sequence as forward_features returns. */
        if (cfg->pool == TS_VIT_POOL_MEAN) {
            if (tokens_out) *tokens_out = x;
            pooled = ts_nn_layernorm_forward(c, &m->ln_post,
                                             ts_mean(c, ts_slice(c, x, 1, 1, 1 + N), 1));
        } else {
            x = ts_nn_layernorm_forward(c, &m->ln_post, x);
            if (tokens_out) *tokens_out = x;
            pooled = ts_reshape(c, ts_slice(c, x, 1, 0, 1), 2, TS_SHAPE(B, C));
        }
        return m->head_w ? ts_linear(c, pooled, m->head_w, m->head_b) : pooled; /* (B, E) */
    }
    x = ts_nn_layernorm_forward(c, &m->ln_post, x);                  /* (B, T, C) */
    if (tokens_out) *tokens_out = x;

    if (cfg->pool == TS_VIT_POOL_MEAN) /* open_clip 'avg': x[:, 1:].mean(dim=1) */
        pooled = ts_mean(c, ts_slice(c, x, 1, 1, 1 + N), 1);
    else                               /* open_clip 'tok': x[:, 0] */
        pooled = ts_reshape(c, ts_slice(c, x, 1, 0, 1), 2, TS_SHAPE(B, C));
    return ts_matmul(c, pooled, m->proj, 0);                         /* (B, E) */
}

/* ---- resampling the positional table ---- */

/* Keys' cubic convolution kernel with parameter a (torch: -0.75 plain, -0.5 antialiased). */
static double cubic(double x, double a) {
    x = fabs(x);
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
    if (x < 2.0) return ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a;
    return 0.0;
}

/* The resampling matrix of one axis, w (out, in): output i = sum_j w[i][j] input j.
 * Plain bicubic (torch's upsample_bicubic2d, align_corners=False): the source coordinate is
 * scale (i + 0.5) - 0.5 with scale = in / out, four taps around it, indices clamped to the
 * edge. Antialiased (torch's _upsample_bicubic2d_aa, PIL's filter): centre scale (i + 0.5), the
 * kernel stretched by scale when shrinking (support 2 scale), taps outside the input dropped
 * and the weights renormalised to sum to one. */
static void axis_weights(double *w, int in, int out, int antialias) {
    double scale = (double)in / out;
    memset(w, 0, (size_t)in * out * sizeof *w);
    for (int i = 0; i < out; i++) {
        double *row = w + (size_t)i * in;
        if (!antialias) {
            double src = scale * (i + 0.5) - 0.5;
            int x0 = (int)floor(src);
            double t = src - x0;
            double k[4] = { cubic(t + 1.0, -0.75), cubic(t, -0.75), cubic(1.0 - t, -0.75),
                            cubic(2.0 - t, -0.75) };
            for (int j = 0; j < 4; j++) {
                int idx = x0 - 1 + j;
                idx = idx < 0 ? 0 : idx >= in ? in - 1 : idx;
                row[idx] += k[j];
            }
            continue;
        }
        double support = scale >= 1.0 ? 2.0 * scale : 2.0;
        double invscale = scale >= 1.0 ? 1.0 / scale : 1.0;
        double centre = scale * (i + 0.5);
        int64_t lo = (int64_t)(centre - support + 0.5), hi = (int64_t)(centre + support + 0.5);
        if (lo < 0) lo = 0;
        if (hi > in) hi = in;
        double total = 0.0;
        for (int64_t j = lo; j < hi; j++) {
            row[j] = cubic((j - centre + 0.5) * invscale, -0.5);
            total += row[j];
        }
        if (total != 0.0)
            for (int64_t j = lo; j < hi; j++) row[j] /= total;
    }
}

void ts_vit_resize_pos_embed(float *out, const float *in, int extra, int old_gh, int old_gw,
                             int new_gh, int new_gw, int C, int antialias) {
    TS_CHECK(extra >= 0 && old_gh > 0 && old_gw > 0 && new_gh > 0 && new_gw > 0 && C > 0,
             "resize_pos_embed: bad sizes extra %d, grid %dx%d -> %dx%d, width %d", extra, old_gh,
             old_gw, new_gh, new_gw, C);
    memcpy(out, in, (size_t)extra * C * sizeof(float));
    const float *src = in + (size_t)extra * C;
    float *dst = out + (size_t)extra * C;
    double *wy = malloc((size_t)new_gh * old_gh * sizeof *wy);
    double *wx = malloc((size_t)new_gw * old_gw * sizeof *wx);
    double *mid = malloc((size_t)old_gh * new_gw * C * sizeof *mid); /* (old_gh, new_gw, C) */
    TS_CHECK(wy && wx && mid, "out of memory");
    axis_weights(wy, old_gh, new_gh, antialias);
    axis_weights(wx, old_gw, new_gw, antialias);
    /* Separable, along the width first (as torch does), then along the height. */
    for (int y = 0; y < old_gh; y++)
        for (int j = 0; j < new_gw; j++) {
            double *m = mid + ((size_t)y * new_gw + j) * C;
            for (int ch = 0; ch < C; ch++) m[ch] = 0.0;
            for (int x = 0; x < old_gw; x++) {
                double wt = wx[(size_t)j * old_gw + x];
                if (wt == 0.0) continue;
                const float *s = src + ((size_t)y * old_gw + x) * C;
                for (int ch = 0; ch < C; ch++) m[ch] += wt * s[ch];
            }
        }
    for (int i = 0; i < new_gh; i++)
        for (int j = 0; j < new_gw; j++) {
            float *d = dst + ((size_t)i * new_gw + j) * C;
            for (int ch = 0; ch < C; ch++) {
                double acc = 0.0;
                for (int y = 0; y < old_gh; y++)
                    acc += wy[(size_t)i * old_gh + y] * mid[((size_t)y * new_gw + j) * C + ch];
                d[ch] = (float)acc;
            }
        }
    free(mid);
    free(wx);
    free(wy);
}

/* ---- loading a checkpoint ---- */

/* The tensors of the tower, in registration order, for the loader. */
static int vit_tensors(const ts_vit *m, ts_tensor **t) {
    int n = 0;
    if (m->cfg.flavour == TS_VIT_TIMM) {
        t[n++] = m->class_embedding;
        t[n++] = m->pos_embed;
        t[n++] = m->conv1;
        t[n++] = m->conv1_b;
    } else {
        t[n++] = m->class_embedding;
        t[n++] = m->pos_embed;
        t[n++] = m->proj;
        t[n++] = m->conv1;
        t[n++] = m->ln_pre.w;
        t[n++] = m->ln_pre.b;
    }
    for (int l = 0; l < m->cfg.layers; l++) {
        const ts_nn_block *b = &m->blocks[l];
        ts_tensor *bt[] = { b->ln_1.w, b->ln_1.b, b->attn.in_w, b->attn.in_b, b->attn.out.w,
                            b->attn.out.b, b->ln_2.w, b->ln_2.b, b->mlp.fc.w, b->mlp.fc.b,
                            b->mlp.proj.w, b->mlp.proj.b };
        for (size_t k = 0; k < sizeof bt / sizeof bt[0]; k++) t[n++] = bt[k];
    }
    t[n++] = m->ln_post.w;
    t[n++] = m->ln_post.b;
    if (m->head_w) {
        t[n++] = m->head_w;
        t[n++] = m->head_b;
    }
    return n;
}

/* The side of the square grid behind a table of rows = 1 + side^2, or 0 when there is none. */
static int square_grid(int64_t rows) {
    int64_t n = rows - 1;
    int64_t s = (int64_t)llround(sqrt((double)(n > 0 ? n : 0)));
    return s > 0 && s * s == n ? (int)s : 0;
}

/* A positional table of another square grid is loaded and resampled: (rows, C), or (1, rows,
 * C) in timm's layout. */
static int pos_embed_resizable(const ts_tensor *t, const ts_st_entry *e, void *user) {
    const ts_vit *m = user;
    int nd = t->ndim;
    return t == m->pos_embed && e->ndim == nd && e->shape[nd - 1] == m->cfg.width &&
           (nd == 2 || e->shape[0] == 1) && square_grid(e->shape[nd - 2]) > 0;
}

ts_status ts_vit_load(ts_vit *m, const char *path, ts_err *err) {
    ts_st_file *f;
    ts_status st = ts_st_read(path, &f, err);
    if (st) return st;
    int cap = 8 + 12 * m->cfg.layers + 2;
    ts_tensor **t = malloc((size_t)cap * sizeof *t);
    TS_CHECK(t != NULL, "out of memory");
    int n = vit_tensors(m, t);
    char msg[4096];
    int bad = ts_st_check(f, t, n, pos_embed_resizable, m, msg, sizeof msg);
    if (bad) {
        st = ts_fail(err, TS_ERR_MISMATCH, "%s: %d ViT tensor%s do%s not match the model:%s",
                     path, bad, bad == 1 ? "" : "s", bad == 1 ? "es" : "", msg);
        goto done;
    }
    for (int i = 0; i < n; i++) {
        const ts_st_entry *e = ts_st_find(f, t[i]->name);
        int nd = t[i]->ndim;
        if (t[i] != m->pos_embed || e->shape[nd - 2] == t[i]->shape[nd - 2]) {
            ts_st_entry_to_f32(e, ts_f32(t[i]));
            continue;
        }
        int side = square_grid(e->shape[nd - 2]);
        float *old = malloc((size_t)e->shape[nd - 2] * e->shape[nd - 1] * sizeof *old);
        TS_CHECK(old != NULL, "out of memory");
        ts_st_entry_to_f32(e, old);
        ts_vit_resize_pos_embed(ts_f32(t[i]), old, 1, side, side, m->gh, m->gw, m->cfg.width, 1);
        ts_log(TS_LOG_INFO, "%s: %s resized from a %dx%d grid to %dx%d", path, t[i]->name, side,
               side, m->gh, m->gw);
        free(old);
    }
done:
    free(t);
    ts_st_close(f);
    return st;
}
