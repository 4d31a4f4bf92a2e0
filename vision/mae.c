/* mae.c: the masked autoencoder, as facebookresearch/mae's models_mae.py defines it.
 *
 * images -> patch_embed (stride-P convolution) -> + pos_embed (fixed 2-d sin-cos) -> per-sample
 * shuffle by argsort of noise, the first len_keep patches stay -> class token (+ its table row)
 * in front -> timm blocks -> norm -> decoder_embed -> mask_token in every removed place, the
 * sequence unshuffled by ids_restore -> + decoder_pos_embed -> decoder blocks -> decoder_norm ->
 * decoder_pred -> class row dropped -> MSE against the patchified image on removed patches.
 * The per-sample gathers are index_select over the flattened (N L, C) rows with indices
 * b L + ids[b][j], so no new op is needed and the tape gives the backward.
 *
 * What this file is not: MAE's fine-tuning or linear-probe models (global pooling, heads), nor
 * its data pipeline; timm's Block is the core block registered under timm's names.
 *
 * Shapes: N batch, P patch side, gh x gw grid, L = gh gw, Lk = len_keep, Q = P P 3, C encoder
 * width, Cd decoder width.
 */
#include "vision.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- configuration ---- */

void ts_mae_cfg_default(ts_mae_cfg *cfg) {
    *cfg = (ts_mae_cfg){ .image_h = 224, .image_w = 224, .patch = 16, .width = 768,
                         .layers = 12, .heads = 12, .dec_width = 512, .dec_layers = 8,
                         .dec_heads = 16, .mlp_ratio = 4.0f, .ln_eps = 1e-6f,
                         .mask_ratio = 0.75, .norm_pix_loss = 0 };
}

static int64_t keep_of(const ts_mae_cfg *cfg) {
    int64_t L = (int64_t)(cfg->image_h / cfg->patch) * (cfg->image_w / cfg->patch);
    return (int64_t)((double)L * (1.0 - cfg->mask_ratio)); /* MAE: int(L * (1 - mask_ratio)) */
}

ts_status ts_mae_cfg_check(const ts_mae_cfg *cfg, ts_err *err) {
    if (cfg->patch < 1 || cfg->image_h < cfg->patch || cfg->image_w < cfg->patch ||
        cfg->image_h % cfg->patch || cfg->image_w % cfg->patch)
        return ts_fail(err, TS_ERR_RECIPE, "mae: patch %d must divide the image size %dx%d",
                       cfg->patch, cfg->image_h, cfg->image_w);
    if (cfg->width < 4 || cfg->width % 4 || cfg->heads < 1 || cfg->width % cfg->heads)
        return ts_fail(err, TS_ERR_RECIPE, "mae: width %d must be a multiple of 4 (the sin-cos "
                       "table) and of heads %d", cfg->width, cfg->heads);
    if (cfg->dec_width < 4 || cfg->dec_width % 4 || cfg->dec_heads < 1 ||
        cfg->dec_width % cfg->dec_heads)
        return ts_fail(err, TS_ERR_RECIPE, "mae: dec_width %d must be a multiple of 4 (the "
                       "sin-cos table) and of dec_heads %d", cfg->dec_width, cfg->dec_heads);
    if (cfg->layers < 0 || cfg->dec_layers < 0)
        return ts_fail(err, TS_ERR_RECIPE, "mae: layers %d and dec_layers %d must not be negative",
                       cfg->layers, cfg->dec_layers);
    if (!(cfg->mlp_ratio > 0.0f) || (int)(cfg->width * cfg->mlp_ratio) < 1 ||
        (int)(cfg->dec_width * cfg->mlp_ratio) < 1)
        return ts_fail(err, TS_ERR_RECIPE, "mae: mlp_ratio %g gives an empty MLP",
                       (double)cfg->mlp_ratio);
    if (!(cfg->ln_eps > 0.0f))
        return ts_fail(err, TS_ERR_RECIPE, "mae: ln_eps %g must be positive", (double)cfg->ln_eps);
    int64_t L = (int64_t)(cfg->image_h / cfg->patch) * (cfg->image_w / cfg->patch);
    int64_t keep = keep_of(cfg);
    if (!(cfg->mask_ratio > 0.0 && cfg->mask_ratio < 1.0) || keep < 1 || keep >= L)
        return ts_fail(err, TS_ERR_RECIPE, "mae: mask_ratio %g keeps %lld of %lld patches; it must "
                       "keep at least one and remove at least one", cfg->mask_ratio,
                       (long long)keep, (long long)L);
    return TS_OK;
}

/* A timm Block's parameters, C wide with hidden width hid. */
static int64_t block_count(int64_t C, int64_t hid) {
    return 2 * C                /* norm1 */
           + 3 * C * C + 3 * C  /* attn.qkv */
           + C * C + C          /* attn.proj */
           + 2 * C              /* norm2 */
           + hid * C + hid      /* mlp.fc1 */
           + C * hid + C;       /* mlp.fc2 */
}

int64_t ts_mae_param_count(const ts_mae_cfg *cfg) {
    int64_t C = cfg->width, D = cfg->dec_width, P = cfg->patch, Q = P * P * 3;
    return C                                               /* cls_token */
           + D                                             /* mask_token */
           + C * 3 * P * P + C                             /* patch_embed.proj */
           + cfg->layers * block_count(C, (int)(C * cfg->mlp_ratio))
           + 2 * C                                         /* norm */
           + D * C + D                                     /* decoder_embed */
           + cfg->dec_layers * block_count(D, (int)(D * cfg->mlp_ratio))
           + 2 * D                                         /* decoder_norm */
           + Q * D + Q;                                    /* decoder_pred */
}

/* ---- building ---- */

/* xavier_uniform_ of a (fan_out, fan_in) matrix: U(-a, a) with a = sqrt(6 / (in + out)). */
static ts_init xavier(int64_t fan_in, int64_t fan_out) {
    float a = sqrtf(6.0f / (float)(fan_in + fan_out));
    return TS_INIT_U(-a, a);
}

static void linear(ts_nn_linear *l, ts_params *p, const char *prefix, int in, int out) {
    char name[256];
    l->w = ts_param(p, ts_pname(name, sizeof name, "%s.weight", prefix), 2, TS_SHAPE(out, in),
                    xavier(in, out), 0);
    l->b = ts_param(p, ts_pname(name, sizeof name, "%s.bias", prefix), 1, TS_SHAPE(out),
                    TS_INIT_0, TS_PARAM_NO_DECAY);
}

/* timm's Block (norm1, attn.qkv, attn.proj, norm2, mlp.fc1, GELU, mlp.fc2) into the core
 * block's struct: the same computation as open_clip's block, under other names. */
static void timm_block(ts_nn_block *b, ts_params *p, const char *prefix, int C, int heads,
                       float mlp_ratio, float eps) {
    char name[256];
    int hid = (int)(C * mlp_ratio);
    memset(b, 0, sizeof *b);
    ts_nn_layernorm_init(&b->ln_1, p, ts_pname(name, sizeof name, "%s.norm1", prefix), C, eps);
    ts_nn_linear qkv;
    linear(&qkv, p, ts_pname(name, sizeof name, "%s.attn.qkv", prefix), C, 3 * C);
    b->attn.in_w = qkv.w;
    b->attn.in_b = qkv.b;
    b->attn.dim = C;
    b->attn.heads = heads;
    linear(&b->attn.out, p, ts_pname(name, sizeof name, "%s.attn.proj", prefix), C, C);
    ts_nn_layernorm_init(&b->ln_2, p, ts_pname(name, sizeof name, "%s.norm2", prefix), C, eps);
    linear(&b->mlp.fc, p, ts_pname(name, sizeof name, "%s.mlp.fc1", prefix), C, hid);
    linear(&b->mlp.proj, p, ts_pname(name, sizeof name, "%s.mlp.fc2", prefix), hid, C);
    b->mlp.act = TS_ACT_GELU;
    b->drop_path = 0.0f;
}

void ts_mae_init(ts_mae *m, ts_params *p, const char *prefix, const ts_mae_cfg *cfg) {
    ts_err err = { 0 };
    TS_CHECK(ts_mae_cfg_check(cfg, &err) == TS_OK, "%s", err.msg);
    memset(m, 0, sizeof *m);
    m->cfg = *cfg;
    m->gh = cfg->image_h / cfg->patch;
    m->gw = cfg->image_w / cfg->patch;
    m->L = m->gh * m->gw;
    m->len_keep = (int)keep_of(cfg);
    TS_CHECK(strlen(prefix) < sizeof m->prefix, "mae: prefix '%s' is too long", prefix);
    strcpy(m->prefix, prefix);
    int C = cfg->width, D = cfg->dec_width, P = cfg->patch, L = m->L;
    char name[256];
    /* The module's own tensors first, in models_mae.py's order of assignment. */
    m->cls_token = ts_param(p, ts_pname(name, sizeof name, "%scls_token", prefix), 3,
                            TS_SHAPE(1, 1, C), TS_INIT_N(0.02f), TS_PARAM_NO_DECAY);
    m->pos_embed = ts_param(p, ts_pname(name, sizeof name, "%spos_embed", prefix), 3,
                            TS_SHAPE(1, 1 + L, C), TS_INIT_0, TS_PARAM_BUFFER);
    m->mask_token = ts_param(p, ts_pname(name, sizeof name, "%smask_token", prefix), 3,
                             TS_SHAPE(1, 1, D), TS_INIT_N(0.02f), TS_PARAM_NO_DECAY);
    m->dec_pos_embed = ts_param(p, ts_pname(name, sizeof name, "%sdecoder_pos_embed", prefix), 3,
                                TS_SHAPE(1, 1 + L, D), TS_INIT_0, TS_PARAM_BUFFER);
    /* The patch convolution: weight initialised as a Linear over (C, 3 P P), bias as Conv2d. */
    float cb = 1.0f / sqrtf(3.0f * P * P);
    m->patch_w = ts_param(p, ts_pname(name, sizeof name, "%spatch_embed.proj.weight", prefix), 4,
                          TS_SHAPE(C, 3, P, P), xavier(3 * P * P, C), 0);
    m->patch_b = ts_param(p, ts_pname(name, sizeof name, "%spatch_embed.proj.bias", prefix), 1,
                          TS_SHAPE(C), TS_INIT_U(-cb, cb), TS_PARAM_NO_DECAY);
    m->blocks = calloc((size_t)(cfg->layers > 0 ? cfg->layers : 1), sizeof *m->blocks);
    m->dec_blocks = calloc((size_t)(cfg->dec_layers > 0 ? cfg->dec_layers : 1),
                           sizeof *m->dec_blocks);
    TS_CHECK(m->blocks && m->dec_blocks, "out of memory");
    for (int l = 0; l < cfg->layers; l++)
        timm_block(&m->blocks[l], p, ts_pname(name, sizeof name, "%sblocks.%d", prefix, l), C,
                   cfg->heads, cfg->mlp_ratio, cfg->ln_eps);
    ts_nn_layernorm_init(&m->norm, p, ts_pname(name, sizeof name, "%snorm", prefix), C,
                         cfg->ln_eps);
    linear(&m->dec_embed, p, ts_pname(name, sizeof name, "%sdecoder_embed", prefix), C, D);
    for (int l = 0; l < cfg->dec_layers; l++)
        timm_block(&m->dec_blocks[l], p,
                   ts_pname(name, sizeof name, "%sdecoder_blocks.%d", prefix, l), D,
                   cfg->dec_heads, cfg->mlp_ratio, cfg->ln_eps);
    ts_nn_layernorm_init(&m->dec_norm, p, ts_pname(name, sizeof name, "%sdecoder_norm", prefix),
                         D, cfg->ln_eps);
    linear(&m->dec_pred, p, ts_pname(name, sizeof name, "%sdecoder_pred", prefix), D,
           P * P * 3);
}

void ts_mae_set_tables(ts_mae *m) {
    TS_CHECK(m->pos_embed->data && m->dec_pos_embed->data,
             "mae: ts_mae_set_tables before ts_params_finalize");
    ts_pos_embed_sincos_2d(ts_f32(m->pos_embed), m->gh, m->gw, m->cfg.width, 1);
    ts_pos_embed_sincos_2d(ts_f32(m->dec_pos_embed), m->gh, m->gw, m->cfg.dec_width, 1);
    m->tables_set = 1;
}

void ts_mae_free(ts_mae *m) {
    if (!m) return;
    free(m->blocks);
    free(m->dec_blocks);
    m->blocks = m->dec_blocks = NULL;
}

/* ---- host helpers: patchify and masking ---- */

/* imgs.reshape(N, 3, gh, P, gw, P), einsum 'nchpwq->nhwpqc', reshape (N, gh gw, P P 3). */
void ts_mae_patchify(float *x, const float *imgs, int64_t N, int H, int W, int P) {
    int gh = H / P, gw = W / P;
    for (int64_t n = 0; n < N; n++)
        for (int i = 0; i < gh; i++)
            for (int j = 0; j < gw; j++) {
                float *row = x + ((n * gh + i) * gw + j) * (int64_t)P * P * 3;
                for (int pp = 0; pp < P; pp++)
                    for (int q = 0; q < P; q++)
                        for (int ch = 0; ch < 3; ch++)
                            row[(pp * P + q) * 3 + ch] =
                                imgs[((n * 3 + ch) * H + i * P + pp) * W + j * P + q];
            }
}

void ts_mae_unpatchify(float *imgs, const float *x, int64_t N, int H, int W, int P) {
    int gh = H / P, gw = W / P;
    for (int64_t n = 0; n < N; n++)
        for (int i = 0; i < gh; i++)
            for (int j = 0; j < gw; j++) {
                const float *row = x + ((n * gh + i) * gw + j) * (int64_t)P * P * 3;
                for (int pp = 0; pp < P; pp++)
                    for (int q = 0; q < P; q++)
                        for (int ch = 0; ch < 3; ch++)
                            imgs[((n * 3 + ch) * H + i * P + pp) * W + j * P + q] =
                                row[(pp * P + q) * 3 + ch];
            }
}

/* Sort one row's indices by its noise, ascending with ties by index so the order is total: a
 * merge sort (qsort would need the row through a global). tmp holds n indices. */
static void sort_row(int32_t *idx, int32_t *tmp, const float *noise, int64_t n) {
    if (n < 2) return;
    int64_t h = n / 2;
    sort_row(idx, tmp, noise, h);
    sort_row(idx + h, tmp, noise, n - h);
    int64_t a = 0, b = h, k = 0;
    while (a < h && b < n) {
        int32_t i = idx[a], j = idx[b];
        int take_b = noise[j] < noise[i] || (noise[j] == noise[i] && j < i);
        tmp[k++] = take_b ? idx[b++] : idx[a++];
    }
    while (a < h) tmp[k++] = idx[a++];
    while (b < n) tmp[k++] = idx[b++];
    memcpy(idx, tmp, (size_t)n * sizeof *idx);
}

void ts_mae_masking(const float *noise, int64_t N, int64_t L, int64_t len_keep, int32_t *ids_keep,
                    int32_t *ids_restore, float *mask) {
    TS_CHECK(len_keep >= 0 && len_keep <= L, "mae masking: keep %lld of %lld",
             (long long)len_keep, (long long)L);
    int32_t *shuffle = malloc((size_t)L * 2 * sizeof *shuffle);
    TS_CHECK(shuffle != NULL, "out of memory");
    for (int64_t n = 0; n < N; n++) {
        const float *row = noise + n * L;
        for (int64_t l = 0; l < L; l++) shuffle[l] = (int32_t)l;
        sort_row(shuffle, shuffle + L, row, L);              /* ids_shuffle */
        for (int64_t k = 0; k < L; k++) {
            if (ids_restore) ids_restore[n * L + shuffle[k]] = (int32_t)k; /* argsort of it */
            if (mask) mask[n * L + shuffle[k]] = k < len_keep ? 0.0f : 1.0f;
        }
        if (ids_keep) memcpy(ids_keep + n * len_keep, shuffle, (size_t)len_keep * sizeof *shuffle);
    }
    free(shuffle);
}

/* ---- forward ---- */

/* Rows b L + ids[b][j] of a (N L, W) matrix: the indices of a per-sample gather. */
static ts_tensor *flat_ids(ts_ctx *c, const int32_t *ids, int64_t N, int64_t L, int64_t n) {
    ts_tensor *t = ts_new(c, TS_I32, 1, TS_SHAPE(N * n));
    int32_t *d = ts_i32(t);
    for (int64_t b = 0; b < N; b++)
        for (int64_t j = 0; j < n; j++) d[b * n + j] = (int32_t)(b * L + ids[b * n + j]);
    return t;
}

/* x (N, L, W) gathered along dim 1 with per-sample indices ids (N, n) -> (N, n, W). */
static ts_tensor *gather_rows(ts_ctx *c, const ts_tensor *x, const int32_t *ids, int64_t n) {
    int64_t N = ts_dim(x, 0), L = ts_dim(x, 1), W = ts_dim(x, 2);
    ts_tensor *flat = ts_reshape(c, x, 2, TS_SHAPE(N * L, W));
    ts_tensor *y = ts_index_select(c, flat, 0, flat_ids(c, ids, N, L, n));
    return ts_reshape(c, y, 3, TS_SHAPE(N, n, W));
}

/* v (1, 1, W) repeated to (N, n, W); the gradient sums over the copies, as torch's repeat. */
static ts_tensor *repeat_row(ts_ctx *c, const ts_tensor *v, int64_t N, int64_t n) {
    int64_t W = ts_dim(v, -1);
    return ts_add(c, ts_zeros(c, TS_F32, 3, TS_SHAPE(N, n, W)), ts_reshape(c, v, 1, TS_SHAPE(W)));
}

ts_mae_out ts_mae_forward(ts_ctx *c, const ts_mae *m, const ts_tensor *images,
                          const ts_tensor *noise) {
    const ts_mae_cfg *cfg = &m->cfg;
    int64_t C = cfg->width, D = cfg->dec_width, P = cfg->patch, Q = P * P * 3;
    int64_t L = m->L, K = m->len_keep, H = cfg->image_h, W = cfg->image_w;
    char s[96];
    TS_CHECK(m->tables_set, "mae: call ts_mae_set_tables after ts_params_finalize");
    TS_CHECK(images->dtype == TS_F32 && images->ndim == 4 && ts_dim(images, 1) == 3 &&
                 ts_dim(images, 2) == H && ts_dim(images, 3) == W,
             "mae: images are %s, expected (N, 3, %lld, %lld)", ts_shape_str(images, s, sizeof s),
             (long long)H, (long long)W);
    int64_t N = ts_dim(images, 0);
    ts_mae_out out;

    /* Masking is decided first, on the host: noise -> ids_keep, ids_restore, mask. */
    const float *nz;
    if (noise) {
        TS_CHECK(noise->dtype == TS_F32 && noise->ndim == 2 && ts_dim(noise, 0) == N &&
                     ts_dim(noise, 1) == L,
                 "mae: noise is %s, expected (%lld, %lld)", ts_shape_str(noise, s, sizeof s),
                 (long long)N, (long long)L);
        nz = ts_f32(noise);
    } else {
        float *d = ts_arena_alloc(c->step, (size_t)(N * L) * sizeof *d);
        for (int64_t i = 0; i < N * L; i++) d[i] = ts_rng_uniform(&c->rng);
        nz = d;
    }
    int32_t *keep = ts_arena_alloc(c->step, (size_t)(N * K) * sizeof *keep);
    out.ids_restore = ts_new(c, TS_I32, 2, TS_SHAPE(N, L));
    out.mask = ts_new_f32(c, 2, TS_SHAPE(N, L));
    ts_mae_masking(nz, N, L, K, keep, ts_i32(out.ids_restore), ts_f32(out.mask));

    /* Encoder: patches + their table rows, the visible ones, the class token in front. */
    ts_tensor *x = ts_conv2d(c, images, m->patch_w, m->patch_b, (int)P, 0); /* (N, C, gh, gw) */
    x = ts_permute(c, ts_reshape(c, x, 3, TS_SHAPE(N, C, L)), (const int[]){ 0, 2, 1 });
    ts_tensor *pos = ts_reshape(c, m->pos_embed, 2, TS_SHAPE(1 + L, C));
    x = ts_add(c, x, ts_slice(c, pos, 0, 1, 1 + L));                  /* (N, L, C) */
    x = gather_rows(c, x, keep, K);                                   /* (N, Lk, C) */
    ts_tensor *cls = ts_add(c, m->cls_token, ts_reshape(c, ts_slice(c, pos, 0, 0, 1), 1,
                                                         TS_SHAPE(C))); /* (1, 1, C) */
    x = ts_concat(c, (ts_tensor *const[]){ repeat_row(c, cls, N, 1), x }, 2, 1); /* (N, 1+Lk, C) */
    for (int l = 0; l < cfg->layers; l++) x = ts_nn_block_forward(c, &m->blocks[l], x, 0, NULL);
    x = ts_nn_layernorm_forward(c, &m->norm, x);
    out.latent = x;

    /* Decoder: mask tokens appended, the sequence put back in patch order by ids_restore. */
    x = ts_nn_linear_forward(c, &m->dec_embed, x);                    /* (N, 1+Lk, Cd) */
    ts_tensor *seq = ts_concat(c, (ts_tensor *const[]){ ts_slice(c, x, 1, 1, 1 + K),
                                                        repeat_row(c, m->mask_token, N, L - K) },
                               2, 1);                                 /* (N, L, Cd) shuffled */
    seq = gather_rows(c, seq, ts_i32(out.ids_restore), L);           /* (N, L, Cd) */
    x = ts_concat(c, (ts_tensor *const[]){ ts_slice(c, x, 1, 0, 1), seq }, 2, 1);
    x = ts_add(c, x, ts_reshape(c, m->dec_pos_embed, 2, TS_SHAPE(1 + L, D)));
    for (int l = 0; l < cfg->dec_layers; l++)
        x = ts_nn_block_forward(c, &m->dec_blocks[l], x, 0, NULL);
    x = ts_nn_layernorm_forward(c, &m->dec_norm, x);
    x = ts_nn_linear_forward(c, &m->dec_pred, x);                     /* (N, 1+L, Q) */
    out.pred = ts_slice(c, x, 1, 1, 1 + L);                           /* (N, L, Q) */

    /* Target: the patchified image, optionally normalised per patch with the unbiased variance
     * (torch's var), (t - mean) / sqrt(var + 1e-6). */
    out.target = ts_new_f32(c, 3, TS_SHAPE(N, L, Q));
    float *t = ts_f32(out.target);
    ts_mae_patchify(t, ts_f32(images), N, (int)H, (int)W, (int)P);
    if (cfg->norm_pix_loss)
        for (int64_t r = 0; r < N * L; r++) {
            float *row = t + r * Q;
            double mean = 0.0, var = 0.0;
            for (int64_t k = 0; k < Q; k++) mean += row[k];
            mean /= (double)Q;
            for (int64_t k = 0; k < Q; k++) var += (row[k] - mean) * (row[k] - mean);
            var /= (double)(Q - 1);
            double inv = 1.0 / sqrt(var + 1e-6);
            for (int64_t k = 0; k < Q; k++) row[k] = (float)((row[k] - mean) * inv);
        }

    /* loss = sum(mean((pred - target)^2, -1) * mask) / sum(mask). */
    ts_tensor *d = ts_sub(c, out.pred, out.target);
    ts_tensor *per_patch = ts_mean(c, ts_mul(c, d, d), -1);          /* (N, L) */
    double removed = (double)N * (double)(L - K);
    out.loss = ts_scale(c, ts_sum(c, ts_mul(c, per_patch, out.mask), TS_ALL),
                        (float)(1.0 / removed));
    return out;
}
