/* unit_mae.c: MAE's names, counts, initialisation, masking and loss, and the video-clip encoder.
 *
 * Parity (tests/parity/cases_mae.py) covers the numbers of MAE's forward and backward against a
 * rewrite of models_mae.py, given the same noise. This test covers what parity does not: every
 * name and shape of mae_vit_base_patch16 in models_mae.py's order and the two fixed tables as
 * buffers; MAE's initialisation; that masking keeps exactly len_keep patches per sample, the
 * ones with the smallest noise, and that ids_restore inverts the shuffle; patchify's order and
 * its inverse; that the loss counts removed patches only; noise drawn from the context when none
 * is given; configuration errors; and the video encoder's shapes, mean pooling and ViT adapter.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tessera.h"
#include "../vision/vision.h"

static ts_mae_cfg tiny(void) {
    ts_mae_cfg cfg;
    ts_mae_cfg_default(&cfg);
    cfg.image_h = cfg.image_w = 16;
    cfg.patch = 4;
    cfg.width = 16;
    cfg.layers = 2;
    cfg.heads = 2;
    cfg.dec_width = 8;
    cfg.dec_layers = 1;
    cfg.dec_heads = 2;
    return cfg;
}

/* ---- names, shapes, counts ---- */

static void names_and_counts(void **state) {
    (void)state;
    ts_mae_cfg cfg;
    ts_mae_cfg_default(&cfg);
    assert_int_equal(cfg.dec_width, 512);
    assert_int_equal(cfg.dec_layers, 8);
    assert_int_equal(cfg.dec_heads, 16);
    assert_true(cfg.ln_eps == 1e-6f && cfg.mask_ratio == 0.75);
    ts_params *p = ts_params_new();
    ts_mae m;
    ts_mae_init(&m, p, "", &cfg);
    /* models_mae.py, mae_vit_base_patch16: sum(p.numel() for p in model.parameters() if
     * p.requires_grad) = 111,655,680; the parity case mae_param_count recomputes it. */
    assert_int_equal(ts_params_numel(p, 1), 111655680);
    assert_int_equal(ts_mae_param_count(&cfg), 111655680);
    assert_int_equal(ts_params_numel(p, 0) - ts_params_numel(p, 1), 197 * (768 + 512));
    assert_int_equal(ts_params_count(p), 6 + 12 * 12 + 4 + 8 * 12 + 4);
    static const struct { int i; const char *name; int ndim; int64_t shape[4]; } want[] = {
        { 0, "cls_token", 3, { 1, 1, 768 } },
        { 1, "pos_embed", 3, { 1, 197, 768 } },
        { 2, "mask_token", 3, { 1, 1, 512 } },
        { 3, "decoder_pos_embed", 3, { 1, 197, 512 } },
        { 4, "patch_embed.proj.weight", 4, { 768, 3, 16, 16 } },
        { 5, "patch_embed.proj.bias", 1, { 768 } },
        { 6, "blocks.0.norm1.weight", 1, { 768 } },
        { 8, "blocks.0.attn.qkv.weight", 2, { 2304, 768 } },
        { 10, "blocks.0.attn.proj.weight", 2, { 768, 768 } },
        { 12, "blocks.0.norm2.weight", 1, { 768 } },
        { 14, "blocks.0.mlp.fc1.weight", 2, { 3072, 768 } },
        { 17, "blocks.0.mlp.fc2.bias", 1, { 768 } },
        { 6 + 144, "norm.weight", 1, { 768 } },
        { 6 + 144 + 2, "decoder_embed.weight", 2, { 512, 768 } },
        { 6 + 144 + 4, "decoder_blocks.0.norm1.weight", 1, { 512 } },
        { 6 + 144 + 4 + 96, "decoder_norm.weight", 1, { 512 } },
        { 6 + 144 + 4 + 96 + 2, "decoder_pred.weight", 2, { 768, 512 } },
        { 6 + 144 + 4 + 96 + 3, "decoder_pred.bias", 1, { 768 } },
    };
    for (size_t k = 0; k < sizeof want / sizeof want[0]; k++) {
        ts_tensor *t = ts_params_get(p, want[k].i);
        assert_string_equal(t->name, want[k].name);
        assert_int_equal(t->ndim, want[k].ndim);
        for (int d = 0; d < t->ndim; d++) assert_int_equal(t->shape[d], want[k].shape[d]);
    }
    assert_true(ts_params_flags(p, 1) & TS_PARAM_BUFFER);
    assert_true(ts_params_flags(p, 3) & TS_PARAM_BUFFER);
    assert_false(ts_params_flags(p, 0) & TS_PARAM_BUFFER);
    assert_int_equal(m.L, 196);
    assert_int_equal(m.len_keep, 49);
    ts_mae_free(&m);
    ts_params_free(p);

    /* A prefix goes in front of every name. */
    cfg = tiny();
    p = ts_params_new();
    ts_mae_init(&m, p, "mae.", &cfg);
    assert_non_null(ts_params_find(p, "mae.decoder_blocks.0.mlp.fc2.weight"));
    assert_non_null(ts_params_find(p, "mae.cls_token"));
    ts_mae_free(&m);
    ts_params_free(p);
}

/* ---- initialisation and the fixed tables ---- */

static void init_and_tables(void **state) {
    (void)state;
    ts_mae_cfg cfg = tiny();
    ts_params *p = ts_params_new();
    ts_mae m;
    ts_mae_init(&m, p, "", &cfg);
    ts_err err = { 0 };
    assert_int_equal(ts_params_finalize(p, 7, &err), TS_OK);
    ts_mae_set_tables(&m);
    int C = cfg.width, D = cfg.dec_width, L = m.L;
    /* The class row is zero, the others MAE's sin-cos (core's table, checked by parity). */
    float *want = malloc((size_t)(1 + L) * C * sizeof *want);
    ts_pos_embed_sincos_2d(want, m.gh, m.gw, C, 1);
    for (int64_t i = 0; i < (int64_t)(1 + L) * C; i++)
        assert_true(ts_f32(m.pos_embed)[i] == want[i]);
    for (int i = 0; i < C; i++) assert_true(ts_f32(m.pos_embed)[i] == 0.0f);
    for (int i = 0; i < D; i++) assert_true(ts_f32(m.dec_pos_embed)[i] == 0.0f);
    free(want);
    /* xavier-uniform weights within sqrt(6 / (in + out)), zero biases, unit norms. */
    float bound = sqrtf(6.0f / (float)(C + 3 * C));
    const ts_tensor *qkv = m.blocks[0].attn.in_w;
    float mx = 0.0f;
    for (int64_t i = 0; i < qkv->numel; i++) mx = fmaxf(mx, fabsf(ts_f32(qkv)[i]));
    assert_true(mx <= bound && mx > 0.5f * bound);
    for (int64_t i = 0; i < m.blocks[0].attn.in_b->numel; i++)
        assert_true(ts_f32(m.blocks[0].attn.in_b)[i] == 0.0f);
    for (int64_t i = 0; i < m.dec_pred.b->numel; i++) assert_true(ts_f32(m.dec_pred.b)[i] == 0.0f);
    for (int i = 0; i < C; i++) assert_true(ts_f32(m.norm.w)[i] == 1.0f);
    float pb = sqrtf(6.0f / (float)(3 * 4 * 4 + C));
    mx = 0.0f;
    for (int64_t i = 0; i < m.patch_w->numel; i++) mx = fmaxf(mx, fabsf(ts_f32(m.patch_w)[i]));
    assert_true(mx <= pb);
    ts_mae_free(&m);
    ts_params_free(p);
}

/* ---- masking ---- */

static void masking_keeps_the_smallest_noise(void **state) {
    (void)state;
    enum { N = 5, L = 37 };
    ts_rng r;
    ts_rng_seed(&r, 3);
    float noise[N * L];
    for (int i = 0; i < N * L; i++) noise[i] = ts_rng_uniform(&r);
    static const double ratios[] = { 0.75, 0.5, 0.9, 0.1 };
    for (size_t k = 0; k < sizeof ratios / sizeof ratios[0]; k++) {
        int keep = (int)(L * (1.0 - ratios[k]));
        int32_t ids_keep[N * L], restore[N * L];
        float mask[N * L];
        ts_mae_masking(noise, N, L, keep, ids_keep, restore, mask);
        for (int n = 0; n < N; n++) {
            const float *row = noise + n * L;
            int removed = 0, seen[L] = { 0 };
            for (int l = 0; l < L; l++) {
                removed += mask[n * L + l] == 1.0f;
                assert_true(mask[n * L + l] == 0.0f || mask[n * L + l] == 1.0f);
                assert_true(restore[n * L + l] >= 0 && restore[n * L + l] < L);
                seen[restore[n * L + l]]++;
                /* Patch l stays exactly when its rank in the noise is below keep. */
                int rank = 0;
                for (int j = 0; j < L; j++) rank += row[j] < row[l] || (row[j] == row[l] && j < l);
                assert_int_equal(restore[n * L + l], rank);
                assert_true((mask[n * L + l] == 0.0f) == (rank < keep));
            }
            assert_int_equal(removed, L - keep);
            for (int l = 0; l < L; l++) assert_int_equal(seen[l], 1); /* a permutation */
            for (int j = 0; j < keep; j++) {
                int32_t id = ids_keep[n * keep + j];
                assert_true(mask[n * L + id] == 0.0f);
                assert_int_equal(restore[n * L + id], j); /* ids_restore[ids_shuffle[j]] == j */
                if (j) assert_true(row[ids_keep[n * keep + j - 1]] <= row[id]);
            }
        }
    }
    /* Ties are broken by index, as a stable argsort. */
    float flat[4] = { 0.5f, 0.5f, 0.1f, 0.5f };
    int32_t kept[2], rest[4];
    ts_mae_masking(flat, 1, 4, 2, kept, rest, NULL);
    assert_int_equal(kept[0], 2);
    assert_int_equal(kept[1], 0);
    assert_int_equal(rest[0], 1);
    assert_int_equal(rest[1], 2);
    assert_int_equal(rest[3], 3);
}

/* ---- patchify ---- */

static void patchify_order(void **state) {
    (void)state;
    enum { N = 2, H = 8, W = 12, P = 4 };
    float imgs[N * 3 * H * W], x[N * 3 * H * W], back[N * 3 * H * W];
    for (int i = 0; i < N * 3 * H * W; i++) imgs[i] = (float)i;
    ts_mae_patchify(x, imgs, N, H, W, P);
    int gw = W / P, Q = P * P * 3;
    for (int n = 0; n < N; n++)
        for (int c = 0; c < 3; c++)
            for (int y = 0; y < H; y++)
                for (int xx = 0; xx < W; xx++) {
                    int i = y / P, p = y % P, j = xx / P, q = xx % P;
                    float v = imgs[((n * 3 + c) * H + y) * W + xx];
                    assert_true(x[(n * (H / P) * gw + i * gw + j) * Q + (p * P + q) * 3 + c] == v);
                }
    ts_mae_unpatchify(back, x, N, H, W, P);
    assert_memory_equal(back, imgs, sizeof imgs);
}

/* ---- forward: shapes, drawn noise, loss on removed patches ---- */

static void forward_and_loss(void **state) {
    (void)state;
    ts_mae_cfg cfg = tiny();
    cfg.norm_pix_loss = 1;
    ts_params *p = ts_params_new();
    ts_mae m;
    ts_mae_init(&m, p, "", &cfg);
    ts_err err = { 0 };
    assert_int_equal(ts_params_finalize(p, 11, &err), TS_OK);
    ts_mae_set_tables(&m);
    ts_ctx *c = ts_ctx_new(TS_CPU, 1 << 20, 5);
    int64_t N = 3, L = m.L, K = m.len_keep, Q = 48;
    ts_tensor *x = ts_new_f32(c, 4, TS_SHAPE(N, 3, 16, 16));
    ts_rng r;
    ts_rng_seed(&r, 9);
    for (int64_t i = 0; i < x->numel; i++) ts_f32(x)[i] = ts_rng_normal(&r);
    ts_mae_out o = ts_mae_forward(c, &m, x, NULL); /* noise from c->rng */
    assert_int_equal(K, 4);
    assert_int_equal(ts_dim(o.latent, 1), 1 + K);
    assert_int_equal(ts_dim(o.latent, 2), cfg.width);
    assert_int_equal(ts_dim(o.pred, 1), L);
    assert_int_equal(ts_dim(o.pred, 2), Q);
    double want = 0.0;
    for (int64_t n = 0; n < N; n++) {
        int removed = 0;
        for (int64_t l = 0; l < L; l++) {
            float mk = ts_f32(o.mask)[n * L + l];
            removed += mk == 1.0f;
            /* norm_pix_loss: each target patch has mean 0 and unbiased variance ~1. */
            const float *t = ts_f32(o.target) + (n * L + l) * Q;
            double mean = 0.0, var = 0.0;
            for (int64_t q = 0; q < Q; q++) mean += t[q];
            mean /= Q;
            for (int64_t q = 0; q < Q; q++) var += (t[q] - mean) * (t[q] - mean);
            assert_true(fabs(mean) < 1e-5 && fabs(var / (Q - 1) - 1.0) < 1e-3);
            if (mk == 0.0f) continue;
            const float *pr = ts_f32(o.pred) + (n * L + l) * Q;
            double e = 0.0;
            for (int64_t q = 0; q < Q; q++) e += (pr[q] - t[q]) * (pr[q] - t[q]);
            want += e / Q;
        }
        assert_int_equal(removed, L - K);
    }
    want /= (double)(N * (L - K));
    assert_true(fabs(ts_f32(o.loss)[0] - want) < 1e-5 * want);
    /* The loss's gradient reaches the parameters; drawn noise differs between calls. */
    ts_backward(c, o.loss);
    double g = 0.0;
    for (int64_t i = 0; i < m.mask_token->numel; i++) g += fabs(ts_f32(m.mask_token->grad)[i]);
    assert_true(g > 0.0);
    ts_tensor *restore1 = o.ids_restore;
    ts_mae_out o2 = ts_mae_forward(c, &m, x, NULL);
    assert_memory_not_equal(ts_i32(restore1), ts_i32(o2.ids_restore), (size_t)(N * L) * 4);
    ts_ctx_free(c);
    ts_mae_free(&m);
    ts_params_free(p);
}

static void config_errors(void **state) {
    (void)state;
    ts_err err = { 0 };
    ts_mae_cfg cfg = tiny();
    assert_int_equal(ts_mae_cfg_check(&cfg, &err), TS_OK);
    cfg.patch = 5;
    assert_int_equal(ts_mae_cfg_check(&cfg, &err), TS_ERR_RECIPE);
    assert_non_null(strstr(err.msg, "patch 5"));
    cfg = tiny();
    cfg.mask_ratio = 1.0;
    assert_int_equal(ts_mae_cfg_check(&cfg, &err), TS_ERR_RECIPE);
    assert_non_null(strstr(err.msg, "mask_ratio"));
    cfg.mask_ratio = 0.99; /* 16 patches: keeps none */
    assert_int_equal(ts_mae_cfg_check(&cfg, &err), TS_ERR_RECIPE);
    cfg = tiny();
    cfg.dec_width = 10;
    assert_int_equal(ts_mae_cfg_check(&cfg, &err), TS_ERR_RECIPE);
    assert_non_null(strstr(err.msg, "dec_width 10"));
    cfg = tiny();
    cfg.width = 18;
    cfg.heads = 3;
    assert_int_equal(ts_mae_cfg_check(&cfg, &err), TS_ERR_RECIPE);
}

/* ---- the video-clip encoder ---- */

static void video_encoder(void **state) {
    (void)state;
    ts_vit_cfg vc = { .image_h = 16, .image_w = 16, .patch = 8, .width = 16, .layers = 1,
                      .heads = 2, .mlp_ratio = 2.0f, .out_dim = 12, .act = TS_ACT_GELU,
                      .pool = TS_VIT_POOL_TOKEN, .ln_eps = 1e-5f };
    ts_params *p = ts_params_new();
    ts_vit vit;
    ts_vit_init(&vit, p, "visual.", &vc);
    ts_video_enc mean, attn;
    ts_video_enc_cfg cfg = { .frames = 3, .dim = 12, .pool = TS_VIDEO_ENC_MEAN };
    ts_video_enc_init(&mean, p, "video_mean.", &cfg, ts_video_enc_vit, &vit);
    cfg.pool = TS_VIDEO_ENC_ATTN;
    cfg.heads = 3;
    cfg.ln_eps = 1e-5f;
    ts_video_enc_init(&attn, p, "video_attn.", &cfg, ts_video_enc_vit, &vit);
    assert_non_null(ts_params_find(p, "video_attn.pool.attn.in_proj_weight"));
    assert_non_null(ts_params_find(p, "video_attn.pool.ln_k.bias"));
    assert_non_null(ts_params_find(p, "video_mean.temporal_embedding"));
    assert_null(ts_params_find(p, "video_mean.pool.query"));
    ts_err err = { 0 };
    assert_int_equal(ts_params_finalize(p, 3, &err), TS_OK);
    ts_ctx *c = ts_ctx_new(TS_CPU, 1 << 20, 5);
    int64_t B = 2, K = 3;
    ts_tensor *clips = ts_new_f32(c, 5, TS_SHAPE(B, K, 3, 16, 16));
    ts_rng r;
    ts_rng_seed(&r, 1);
    for (int64_t i = 0; i < clips->numel; i++) ts_f32(clips)[i] = ts_rng_normal(&r);
    ts_tensor *frames;
    ts_tensor *y = ts_video_enc_forward(c, &mean, clips, &frames);
    assert_int_equal(y->ndim, 2);
    assert_int_equal(ts_dim(y, 0), B);
    assert_int_equal(ts_dim(y, 1), 12);
    /* Mean pooling is the mean of each frame's embedding plus its temporal row; a frame's
     * embedding is the tower's on that image alone. */
    ts_tensor *one = ts_new_f32(c, 4, TS_SHAPE(1, 3, 16, 16));
    memcpy(ts_f32(one), ts_f32(clips) + (1 * K + 2) * 3 * 256, 3 * 256 * sizeof(float));
    ts_tensor *e = ts_vit_forward(c, &vit, one, NULL);
    for (int d = 0; d < 12; d++) {
        float want = ts_f32(e)[d] + ts_f32(mean.temporal)[2 * 12 + d];
        assert_true(fabsf(ts_f32(frames)[(1 * K + 2) * 12 + d] - want) < 1e-4f);
        float avg = 0.0f;
        for (int k = 0; k < K; k++) avg += ts_f32(frames)[(1 * K + k) * 12 + d] / (float)K;
        assert_true(fabsf(ts_f32(y)[12 + d] - avg) < 1e-5f);
    }
    ts_tensor *z = ts_video_enc_forward(c, &attn, clips, NULL);
    assert_int_equal(ts_dim(z, 0), B);
    assert_int_equal(ts_dim(z, 1), 12);
    cfg.heads = 5;
    assert_int_equal(ts_video_enc_cfg_check(&cfg, &err), TS_ERR_RECIPE);
    cfg.frames = 0;
    assert_int_equal(ts_video_enc_cfg_check(&cfg, &err), TS_ERR_RECIPE);
    ts_ctx_free(c);
    ts_vit_free(&vit);
    ts_params_free(p);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(names_and_counts),
        cmocka_unit_test(init_and_tables),
        cmocka_unit_test(masking_keeps_the_smallest_noise),
        cmocka_unit_test(patchify_order),
        cmocka_unit_test(forward_and_loss),
        cmocka_unit_test(config_errors),
        cmocka_unit_test(video_encoder),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
