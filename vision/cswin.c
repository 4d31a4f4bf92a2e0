/* cswin.c: CSWin Transformer, as the official implementation (microsoft/CSWin-Transformer,
 * models/cswin.py) builds it.
 *
 * images -> stage1_conv_embed (7x7 conv, stride 4, padding 2; tokens row-major; layernorm) ->
 * stage1 blocks -> merge1 (3x3 conv, stride 2, padding 1; layernorm) -> stage2 -> merge2 ->
 * stage3 -> merge3 -> stage4 -> norm -> mean over tokens -> head. A block is pre-norm: the qkv
 * Linear, the fused cross-shaped window attention with LePE (ts_stripe_attention, which does the
 * gathering into stripes and back that the official code does with reshapes), proj, drop-path,
 * and the MLP (fc1, GELU, fc2). Everything is core ops, so the tape gives the backward. Beside
 * the model: the official configurations by name, the size checks with errors that name the
 * stage, the parameter count and a one-line description.
 *
 * What this file is not: the segmentation backbone of the official repository, gradient
 * checkpointing (use_chk), dropout inside the blocks (the official configurations train with
 * drop rate 0), or the encoder plug-in (cli/factory.c wraps a model).
 *
 * Shapes: B batch, H x W image, stage s (0-based here, 1-based in names) works on a map
 * mh x mw = (H / 2^(s+2)) x (W / 2^(s+2)) of N = mh * mw tokens with width C_s =
 * embed_dim * 2^s; K classes.
 */
#include "vision.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- configurations by name ---- */

/* The official registrations (CSWin_64_12211_tiny_224, CSWin_64_24322_small_224,
 * CSWin_96_24322_base_224, CSWin_144_24322_large_224 and the base and large _384): embed_dim,
 * depth, num_heads; split_size [1, 2, 7, 7] at 224 and [1, 2, 12, 12] at 384. */
typedef struct named_cfg {
    const char *name;
    int dim, depth[4], heads[4];
} named_cfg;

static const named_cfg named[] = {
    { "CSWin-T", 64, { 1, 2, 21, 1 }, { 2, 4, 8, 16 } },
    { "CSWin-S", 64, { 2, 4, 32, 2 }, { 2, 4, 8, 16 } },
    { "CSWin-B", 96, { 2, 4, 32, 2 }, { 4, 8, 16, 32 } },
    { "CSWin-L", 144, { 2, 4, 32, 2 }, { 6, 12, 24, 24 } },
};
enum { NNAMED = (int)(sizeof named / sizeof named[0]) };

const char *const ts_cswin_cfg_names[] = {
    "CSWin-T", "CSWin-S", "CSWin-B", "CSWin-L",
    "CSWin-T-384", "CSWin-S-384", "CSWin-B-384", "CSWin-L-384", NULL,
};
_Static_assert(sizeof ts_cswin_cfg_names / sizeof ts_cswin_cfg_names[0] == 2 * NNAMED + 1,
               "ts_cswin_cfg_names must list every named configuration at 224 and 384");

ts_status ts_cswin_cfg_named(const char *name, ts_cswin_cfg *cfg, ts_err *err) {
    static const char s384[] = "-384";
    size_t n = strlen(name), q = sizeof s384 - 1;
    int at384 = n > q && strcmp(name + n - q, s384) == 0;
    size_t base = at384 ? n - q : n;
    for (int i = 0; i < NNAMED; i++) {
        const named_cfg *d = &named[i];
        if (strlen(d->name) != base || strncmp(d->name, name, base) != 0) continue;
        *cfg = (ts_cswin_cfg){ .image_h = at384 ? 384 : 224, .image_w = at384 ? 384 : 224,
                               .embed_dim = d->dim, .mlp_ratio = 4.0f, .num_classes = 1000,
                               .ln_eps = 1e-5f, .drop_path = 0.0f };
        for (int s = 0; s < 4; s++) {
            cfg->depth[s] = d->depth[s];
            cfg->heads[s] = d->heads[s];
        }
        const int *split = at384 ? (const int[]){ 1, 2, 12, 12 } : (const int[]){ 1, 2, 7, 7 };
        memcpy(cfg->split, split, sizeof cfg->split);
        return TS_OK;
    }
    return ts_fail(err, TS_ERR_RECIPE,
                   "unknown CSWin configuration '%s'; valid: CSWin-T, CSWin-S, CSWin-B, CSWin-L "
                   "(224 input), each also with -384", name);
}

/* ---- sizes ---- */

/* Does stage s (0-based) of a model whose stage maps are mh x mw attend in one branch? The
 * official rule: the last stage always, and any stage whose map equals its stripe width. */
static int one_branch(const ts_cswin_cfg *cfg, int s, int mh, int mw) {
    return s == 3 || (mh == cfg->split[s] && mw == cfg->split[s]);
}

ts_status ts_cswin_cfg_check(const ts_cswin_cfg *cfg, ts_err *err) {
    const char *sp = "cswin";
    if (cfg->embed_dim < 1)
        return ts_fail(err, TS_ERR_RECIPE, "%s: embed_dim must be at least 1, got %d", sp,
                       cfg->embed_dim);
    if (!(cfg->mlp_ratio > 0.0f) || (int)(cfg->embed_dim * cfg->mlp_ratio) < 1)
        return ts_fail(err, TS_ERR_RECIPE, "%s: mlp_ratio %g gives no hidden units", sp,
                       (double)cfg->mlp_ratio);
    if (cfg->num_classes < 0)
        return ts_fail(err, TS_ERR_RECIPE, "%s: num_classes must be 0 (no head) or more, got %d",
                       sp, cfg->num_classes);
    if (!(cfg->drop_path >= 0.0f && cfg->drop_path < 1.0f))
        return ts_fail(err, TS_ERR_RECIPE, "%s: drop_path %g is not in [0, 1)", sp,
                       (double)cfg->drop_path);
    if (!(cfg->ln_eps > 0.0f))
        return ts_fail(err, TS_ERR_RECIPE, "%s: ln_eps must be positive, got %g", sp,
                       (double)cfg->ln_eps);
    if (cfg->image_h < 1 || cfg->image_w < 1)
        return ts_fail(err, TS_ERR_RECIPE, "%s: image size %dx%d", sp, cfg->image_h,
                       cfg->image_w);
    /* The stem gives (H / 4) x (W / 4) tokens only when 4 divides the sides (the official code
     * then asserts that map size), and each merge halves the map exactly only when it is even. */
    if (cfg->image_h % 4 || cfg->image_w % 4)
        return ts_fail(err, TS_ERR_RECIPE,
                       "%s: stage 1: the stride-4 stem cannot make an exact map of a %dx%d image; "
                       "image sides must be divisible by 32 (4 for the stem, then 2 per merge)",
                       sp, cfg->image_h, cfg->image_w);
    int mh = cfg->image_h / 4, mw = cfg->image_w / 4, dim = cfg->embed_dim;
    for (int s = 0; s < 4; s++) {
        if (s > 0) {
            if (mh % 2 || mw % 2)
                return ts_fail(err, TS_ERR_RECIPE,
                               "%s: stage %d: merge%d cannot halve stage %d's %dx%d map (image "
                               "%dx%d); image sides must be divisible by 32", sp, s + 1, s, s,
                               mh, mw, cfg->image_h, cfg->image_w);
            mh /= 2, mw /= 2, dim *= 2;
        }
        if (cfg->depth[s] < 0)
            return ts_fail(err, TS_ERR_RECIPE, "%s: stage %d: depth must be 0 or more, got %d",
                           sp, s + 1, cfg->depth[s]);
        if (cfg->depth[s] == 0) continue;
        int h = cfg->heads[s], sw = cfg->split[s];
        if (h < 1 || dim % h)
            return ts_fail(err, TS_ERR_RECIPE, "%s: stage %d: width %d is not divisible by %d "
                           "heads", sp, s + 1, dim, h);
        if (one_branch(cfg, s, mh, mw)) continue;
        if (sw < 1 || mh % sw || mw % sw)
            return ts_fail(err, TS_ERR_RECIPE,
                           "%s: stage %d works on a %dx%d map, which stripes of width %d do not "
                           "divide (image %dx%d, stripe widths %d, %d, %d, %d)", sp, s + 1, mh,
                           mw, sw, cfg->image_h, cfg->image_w, cfg->split[0], cfg->split[1],
                           cfg->split[2], cfg->split[3]);
        if (h % 2)
            return ts_fail(err, TS_ERR_RECIPE,
                           "%s: stage %d: %d heads cannot split into the two stripe branches (an "
                           "even number is needed)", sp, s + 1, h);
    }
    return TS_OK;
}

/* The parameters of one block of width C: qkv, norm1, proj, the LePE convolutions (C / nb
 * channels per branch, so 9 C + C in all whatever nb), the MLP and norm2. */
static int64_t block_params(int64_t C, int64_t hid) {
    return (3 * C * C + 3 * C) + 2 * C + (C * C + C) + (9 * C + C) + (hid * C + hid) +
           (C * hid + C) + 2 * C;
}

int64_t ts_cswin_param_count(const ts_cswin_cfg *cfg) {
    int64_t C = cfg->embed_dim;
    int64_t n = C * 3 * 49 + C + 2 * C; /* stage1_conv_embed: conv and layernorm */
    for (int s = 0; s < 4; s++) {
        if (s > 0) {
            n += 2 * C * C * 9 + 2 * C + 2 * (2 * C); /* merge: conv (2C, C, 3, 3), norm */
            C *= 2;
        }
        n += cfg->depth[s] * block_params(C, (int64_t)(int)(C * cfg->mlp_ratio));
    }
    n += 2 * C; /* norm */
    if (cfg->num_classes > 0) n += C * cfg->num_classes + cfg->num_classes;
    return n;
}

const char *ts_cswin_describe(const ts_cswin_cfg *cfg, char *buf, size_t n) {
    snprintf(buf, n,
             "CSWin: image %dx%d, width %d, depths [%d, %d, %d, %d], heads [%d, %d, %d, %d], "
             "stripes [%d, %d, %d, %d], maps %dx%d %dx%d %dx%d %dx%d, %d classes, "
             "%lld parameters", cfg->image_h, cfg->image_w, cfg->embed_dim, cfg->depth[0],
             cfg->depth[1], cfg->depth[2], cfg->depth[3], cfg->heads[0], cfg->heads[1],
             cfg->heads[2], cfg->heads[3], cfg->split[0], cfg->split[1], cfg->split[2],
             cfg->split[3], cfg->image_h / 4, cfg->image_w / 4, cfg->image_h / 8,
             cfg->image_w / 8, cfg->image_h / 16, cfg->image_w / 16, cfg->image_h / 32,
             cfg->image_w / 32, cfg->num_classes, (long long)ts_cswin_param_count(cfg));
    return buf;
}

/* ---- building ---- */

/* A Linear as the official _init_weights leaves it: weight N(0, 0.02), bias zero. */
static void linear_init(ts_nn_linear *m, ts_params *p, const char *name, int in, int out) {
    char buf[256];
    m->w = ts_param(p, ts_pname(buf, sizeof buf, "%s.weight", name), 2, TS_SHAPE(out, in),
                    TS_INIT_N(0.02f), 0);
    m->b = ts_param(p, ts_pname(buf, sizeof buf, "%s.bias", name), 1, TS_SHAPE(out), TS_INIT_0,
                    TS_PARAM_NO_DECAY);
}

/* A Conv2d as torch leaves it: weight and bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)). */
static void conv_init(ts_tensor **w, ts_tensor **b, ts_params *p, const char *name, int out,
                      int in_per_group, int k) {
    char buf[256];
    float bound = 1.0f / sqrtf((float)(in_per_group * k * k));
    *w = ts_param(p, ts_pname(buf, sizeof buf, "%s.weight", name), 4,
                  TS_SHAPE(out, in_per_group, k, k), TS_INIT_U(-bound, bound), 0);
    *b = ts_param(p, ts_pname(buf, sizeof buf, "%s.bias", name), 1, TS_SHAPE(out),
                  TS_INIT_U(-bound, bound), TS_PARAM_NO_DECAY);
}

/* Registration follows the official CSWinBlock's named_parameters(): qkv, norm1, proj, attns,
 * mlp, norm2. */
static void block_init(ts_cswin_block *b, ts_params *p, const char *prefix, const ts_cswin_cfg *cfg,
                       int s, int dim, int mh, int mw, float drop_path) {
    char name[256];
    memset(b, 0, sizeof *b);
    b->dim = dim, b->heads = cfg->heads[s], b->map_h = mh, b->map_w = mw;
    b->sw = one_branch(cfg, s, mh, mw) ? 0 : cfg->split[s];
    b->drop_path = drop_path;
    int nb = b->sw ? 2 : 1, hid = (int)(dim * cfg->mlp_ratio);
    linear_init(&b->qkv, p, ts_pname(name, sizeof name, "%s.qkv", prefix), dim, 3 * dim);
    ts_nn_layernorm_init(&b->norm1, p, ts_pname(name, sizeof name, "%s.norm1", prefix), dim,
                         cfg->ln_eps);
    linear_init(&b->proj, p, ts_pname(name, sizeof name, "%s.proj", prefix), dim, dim);
    for (int r = 0; r < nb; r++)
        conv_init(&b->get_v_w[r], &b->get_v_b[r], p,
                  ts_pname(name, sizeof name, "%s.attns.%d.get_v", prefix, r), dim / nb, 1, 3);
    linear_init(&b->mlp.fc, p, ts_pname(name, sizeof name, "%s.mlp.fc1", prefix), dim, hid);
    linear_init(&b->mlp.proj, p, ts_pname(name, sizeof name, "%s.mlp.fc2", prefix), hid, dim);
    b->mlp.act = TS_ACT_GELU;
    ts_nn_layernorm_init(&b->norm2, p, ts_pname(name, sizeof name, "%s.norm2", prefix), dim,
                         cfg->ln_eps);
}

ts_status ts_cswin_init(ts_cswin *m, ts_params *p, const char *prefix, const ts_cswin_cfg *cfg,
                        ts_err *err) {
    ts_status st = ts_cswin_cfg_check(cfg, err);
    if (st) return st;
    memset(m, 0, sizeof *m);
    m->cfg = *cfg;
    TS_CHECK(strlen(prefix) < sizeof m->prefix, "cswin: prefix '%s' is too long", prefix);
    strcpy(m->prefix, prefix);
    char name[256];
    int C = cfg->embed_dim;
    conv_init(&m->stem_w, &m->stem_b, p,
              ts_pname(name, sizeof name, "%sstage1_conv_embed.0", prefix), C, 3, 7);
    ts_nn_layernorm_init(&m->stem_norm, p,
                         ts_pname(name, sizeof name, "%sstage1_conv_embed.2", prefix), C,
                         cfg->ln_eps);
    /* Stochastic depth rises linearly over all blocks: torch.linspace(0, rate, total). */
    int total = cfg->depth[0] + cfg->depth[1] + cfg->depth[2] + cfg->depth[3], first = 0;
    int mh = cfg->image_h / 4, mw = cfg->image_w / 4;
    for (int s = 0; s < 4; s++) {
        if (s > 0) {
            ts_cswin_merge *mg = &m->merge[s - 1];
            conv_init(&mg->conv_w, &mg->conv_b, p,
                      ts_pname(name, sizeof name, "%smerge%d.conv", prefix, s), 2 * C, C, 3);
            ts_nn_layernorm_init(&mg->norm, p,
                                 ts_pname(name, sizeof name, "%smerge%d.norm", prefix, s), 2 * C,
                                 cfg->ln_eps);
            C *= 2, mh /= 2, mw /= 2;
        }
        m->map_h[s] = mh, m->map_w[s] = mw, m->dim[s] = C;
        size_t nblk = (size_t)(cfg->depth[s] > 0 ? cfg->depth[s] : 1);
        m->blocks[s] = calloc(nblk, sizeof *m->blocks[s]);
        TS_CHECK(m->blocks[s] != NULL, "out of memory");
        for (int l = 0; l < cfg->depth[s]; l++, first++) {
            float dp = total > 1 ? cfg->drop_path * (float)first / (float)(total - 1) : 0.0f;
            block_init(&m->blocks[s][l], p,
                       ts_pname(name, sizeof name, "%sstage%d.%d", prefix, s + 1, l), cfg, s, C,
                       mh, mw, dp);
        }
    }
    ts_nn_layernorm_init(&m->norm, p, ts_pname(name, sizeof name, "%snorm", prefix), C,
                         cfg->ln_eps);
    if (cfg->num_classes > 0)
        linear_init(&m->head, p, ts_pname(name, sizeof name, "%shead", prefix), C,
                    cfg->num_classes);
    m->out_dim = cfg->num_classes > 0 ? cfg->num_classes : C;
    return TS_OK;
}

void ts_cswin_free(ts_cswin *m) {
    if (!m) return;
    for (int s = 0; s < 4; s++) {
        free(m->blocks[s]);
        m->blocks[s] = NULL;
    }
}

/* ---- forward ---- */

/* x (B, N, C) -> x + drop_path(attention) -> + drop_path(mlp). */
static ts_tensor *block_forward(ts_ctx *c, const ts_cswin_block *b, ts_tensor *x) {
    ts_tensor *qkv = ts_nn_linear_forward(c, &b->qkv, ts_nn_layernorm_forward(c, &b->norm1, x));
    /* The branches' LePE weights side by side, as the op takes them: (C, 1, 3, 3) and (C). */
    ts_tensor *lw = b->get_v_w[0], *lb = b->get_v_b[0];
    if (b->sw) {
        lw = ts_concat(c, (ts_tensor *const[]){ b->get_v_w[0], b->get_v_w[1] }, 2, 0);
        lb = ts_concat(c, (ts_tensor *const[]){ b->get_v_b[0], b->get_v_b[1] }, 2, 0);
    }
    ts_tensor *a = ts_stripe_attention(c, qkv, lw, lb, b->map_h, b->map_w, b->heads, b->sw,
                                       0.0f);                            /* (B, N, C) */
    a = ts_nn_linear_forward(c, &b->proj, a);
    x = ts_add(c, x, ts_nn_drop_path(c, a, b->drop_path));
    ts_tensor *h = ts_nn_mlp_forward(c, &b->mlp, ts_nn_layernorm_forward(c, &b->norm2, x));
    return ts_add(c, x, ts_nn_drop_path(c, h, b->drop_path));
}

/* (B, C, mh, mw) feature map -> (B, mh * mw, C) tokens, row-major. */
static ts_tensor *to_tokens(ts_ctx *c, ts_tensor *x) {
    int64_t B = ts_dim(x, 0), C = ts_dim(x, 1), N = ts_dim(x, 2) * ts_dim(x, 3);
    x = ts_reshape(c, x, 3, TS_SHAPE(B, C, N));
    return ts_permute(c, x, (const int[]){ 0, 2, 1 });
}

ts_tensor *ts_cswin_forward(ts_ctx *c, const ts_cswin *m, const ts_tensor *images,
                            ts_tensor **tokens_out) {
    const ts_cswin_cfg *cfg = &m->cfg;
    char s[96];
    TS_CHECK(images->ndim == 4 && ts_dim(images, 1) == 3 && ts_dim(images, 2) == cfg->image_h &&
                 ts_dim(images, 3) == cfg->image_w,
             "cswin: images are %s, expected (B, 3, %d, %d)", ts_shape_str(images, s, sizeof s),
             cfg->image_h, cfg->image_w);
    int64_t B = ts_dim(images, 0);
    ts_tensor *x = ts_conv2d(c, images, m->stem_w, m->stem_b, 4, 2); /* (B, C, H/4, W/4) */
    x = ts_nn_layernorm_forward(c, &m->stem_norm, to_tokens(c, x));  /* (B, N, C) */
    for (int st = 0; st < 4; st++) {
        if (st > 0) {
            const ts_cswin_merge *mg = &m->merge[st - 1];
            int64_t C = m->dim[st - 1];
            x = ts_permute(c, x, (const int[]){ 0, 2, 1 });             /* (B, C, N) */
            x = ts_reshape(c, x, 4, TS_SHAPE(B, C, m->map_h[st - 1], m->map_w[st - 1]));
            x = ts_conv2d(c, x, mg->conv_w, mg->conv_b, 2, 1);            /* (B, 2C, mh/2, mw/2) */
            x = ts_nn_layernorm_forward(c, &mg->norm, to_tokens(c, x));
        }
        for (int l = 0; l < cfg->depth[st]; l++) x = block_forward(c, &m->blocks[st][l], x);
    }
    x = ts_nn_layernorm_forward(c, &m->norm, x);                         /* (B, N, 8C) */
    if (tokens_out) *tokens_out = x;
    ts_tensor *pooled = ts_mean(c, x, 1);                                /* (B, 8C) */
    return cfg->num_classes > 0 ? ts_nn_linear_forward(c, &m->head, pooled) : pooled;
}
