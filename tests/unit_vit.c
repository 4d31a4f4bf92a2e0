/* unit_vit.c: the ViT tower's names, sizes, parameter counts, pooling, and checkpoint loading.
 *
 * Parity with open_clip (tests/parity/cases_vit.py) covers the numbers of the forward, the
 * backward and the positional-table resampling, and compares the parameter counts with the ones
 * open_clip computes from its model configs when the reference is generated. This test covers
 * what parity does not: the counts against a formula written here from open_clip's module
 * shapes and against the parameters the tower really registers; open_clip's names under a
 * prefix; configurations by name and their errors; that pooling picks what it should; and that
 * ts_vit_load resamples a checkpoint's positional table, converts BF16, ignores other towers
 * and names every mismatch without changing anything.
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
#include <unistd.h>

#include "tessera.h"
#include "../vision/vision.h"

/* ---- parameter counts ---- */

/* open_clip's VisionTransformer parameters, from the shapes of its modules: conv1 (C, 3, P, P)
 * without bias, class_embedding (C), positional_embedding (1 + N, C), ln_pre, per block ln_1,
 * attn (in_proj (3C, C) + (3C), out_proj (C, C) + (C)), ln_2, mlp (c_fc (4C, C) + (4C), c_proj
 * (C, 4C) + (C)), then ln_post and proj (C, E). */
static int64_t formula(int64_t C, int64_t L, int64_t P, int64_t image, int64_t E) {
    int64_t N = (image / P) * (image / P), H = 4 * C;
    int64_t block = 2 * C + (3 * C * C + 3 * C) + (C * C + C) + 2 * C + (H * C + H) + (C * H + C);
    return C * 3 * P * P + C + (1 + N) * C + 2 * C + L * block + 2 * C + C * E;
}

/* Registers the tower without allocating it and counts what was registered. */
static int64_t registered(const ts_vit_cfg *cfg, int *nparams) {
    ts_params *p = ts_params_new();
    ts_vit m;
    ts_vit_init(&m, p, "visual.", cfg);
    int64_t n = ts_params_numel(p, 1);
    if (nparams) *nparams = ts_params_count(p);
    ts_vit_free(&m);
    ts_params_free(p);
    return n;
}

static void counts_match_open_clip(void **state) {
    (void)state;
    /* Printed by open_clip_torch 3.3.0 on torch 1.13 for the vision tower of each config:
     * cfg = open_clip.factory.get_model_config(name);
     * sum(p.numel() for p in open_clip.model._build_vision_tower(cfg["embed_dim"],
     *     cfg["vision_cfg"]).parameters()).
     * The parity case vit_param_counts recomputes them with open_clip at every run. */
    static const struct { const char *name; int64_t open_clip, C, L, P, image, E; } want[] = {
        { "ViT-B-32", 87849216, 768, 12, 32, 224, 512 },
        { "ViT-B-16", 86192640, 768, 12, 16, 224, 512 },
        { "ViT-L-14", 303966208, 1024, 24, 14, 224, 768 },
        { "ViT-S-16", 21813504, 384, 12, 16, 224, 384 },
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        ts_vit_cfg cfg;
        assert_int_equal(ts_vit_cfg_named(want[i].name, &cfg, NULL), TS_OK);
        int64_t ours = ts_vit_param_count(&cfg);
        int64_t f = formula(want[i].C, want[i].L, want[i].P, want[i].image, want[i].E);
        int np = 0;
        int64_t reg = registered(&cfg, &np);
        printf("  %-9s tessera %11lld  open_clip %11lld  formula %11lld  registered %11lld\n",
               want[i].name, (long long)ours, (long long)want[i].open_clip, (long long)f,
               (long long)reg);
        assert_int_equal(ours, want[i].open_clip);
        assert_int_equal(ours, f);
        assert_int_equal(ours, reg);
        assert_int_equal(np, 6 + 12 * cfg.layers + 2);
    }
    /* Every named configuration counts what it registers. */
    for (int i = 0; ts_vit_cfg_names[i]; i++) {
        ts_vit_cfg cfg;
        assert_int_equal(ts_vit_cfg_named(ts_vit_cfg_names[i], &cfg, NULL), TS_OK);
        assert_int_equal(ts_vit_param_count(&cfg), registered(&cfg, NULL));
    }
}

/* ---- configurations ---- */

static void configs_by_name(void **state) {
    (void)state;
    ts_vit_cfg cfg;
    ts_err err = { 0 };
    assert_int_equal(ts_vit_cfg_named("ViT-L-14-quickgelu", &cfg, &err), TS_OK);
    assert_int_equal(cfg.width, 1024);
    assert_int_equal(cfg.layers, 24);
    assert_int_equal(cfg.heads, 16);
    assert_int_equal(cfg.patch, 14);
    assert_int_equal(cfg.out_dim, 768);
    assert_int_equal(cfg.act, TS_ACT_QUICK_GELU);
    assert_int_equal(cfg.pool, TS_VIT_POOL_TOKEN);
    assert_int_equal(ts_vit_cfg_named("ViT-H-14", &cfg, &err), TS_OK);
    assert_int_equal(cfg.heads, 16); /* head_width 80 */
    assert_int_equal(cfg.act, TS_ACT_GELU);
    assert_int_equal(ts_vit_cfg_named("ViT-Ti-16", &cfg, &err), TS_OK);
    assert_int_equal(cfg.heads, 3);

    assert_int_equal(ts_vit_cfg_named("ViT-X-99", &cfg, &err), TS_ERR_RECIPE);
    assert_non_null(strstr(err.msg, "ViT-X-99"));
    assert_non_null(strstr(err.msg, "ViT-B-16"));
    assert_int_equal(ts_vit_cfg_named("ViT-B", &cfg, &err), TS_ERR_RECIPE);
    assert_int_equal(ts_vit_cfg_named("-quickgelu", &cfg, &err), TS_ERR_RECIPE);

    ts_vit_cfg bad = { .image_h = 32, .image_w = 32, .patch = 8, .width = 30, .layers = 1,
                       .heads = 4, .mlp_ratio = 4.0f, .out_dim = 8, .act = TS_ACT_GELU,
                       .pool = TS_VIT_POOL_TOKEN, .ln_eps = 1e-5f };
    assert_int_equal(ts_vit_cfg_check(&bad, &err), TS_ERR_RECIPE);
    assert_non_null(strstr(err.msg, "heads"));
    bad.width = 32;
    assert_int_equal(ts_vit_cfg_check(&bad, &err), TS_OK);
    bad.patch = 40;
    assert_int_equal(ts_vit_cfg_check(&bad, &err), TS_ERR_RECIPE);
    assert_non_null(strstr(err.msg, "patch"));
    bad.patch = 8;
    bad.act = TS_ACT_RELU;
    assert_int_equal(ts_vit_cfg_check(&bad, &err), TS_ERR_RECIPE);
}

/* ---- names, init and pooling on a small tower ---- */

static ts_vit_cfg small(int image, ts_vit_pool pool) {
    return (ts_vit_cfg){ .image_h = image, .image_w = image, .patch = 8, .width = 32,
                         .layers = 2, .heads = 4, .mlp_ratio = 4.0f, .out_dim = 16,
                         .act = TS_ACT_GELU, .pool = pool, .ln_eps = 1e-5f };
}

static void names_and_init(void **state) {
    (void)state;
    ts_params *p = ts_params_new();
    ts_vit m;
    ts_vit_cfg cfg = small(32, TS_VIT_POOL_TOKEN);
    ts_vit_init(&m, p, "visual.", &cfg);
    assert_int_equal(ts_params_finalize(p, 3, NULL), TS_OK);
    static const struct { const char *name; int ndim; int64_t shape[4]; } want[] = {
        { "visual.class_embedding", 1, { 32 } },
        { "visual.positional_embedding", 2, { 17, 32 } },
        { "visual.proj", 2, { 32, 16 } },
        { "visual.conv1.weight", 4, { 32, 3, 8, 8 } },
        { "visual.ln_pre.weight", 1, { 32 } },
        { "visual.transformer.resblocks.0.attn.in_proj_weight", 2, { 96, 32 } },
        { "visual.transformer.resblocks.1.mlp.c_proj.weight", 2, { 32, 128 } },
        { "visual.ln_post.bias", 1, { 32 } },
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        ts_tensor *t = ts_params_find(p, want[i].name);
        assert_non_null(t);
        assert_int_equal(t->ndim, want[i].ndim);
        for (int d = 0; d < t->ndim; d++) assert_int_equal(t->shape[d], want[i].shape[d]);
    }
    assert_null(ts_params_find(p, "visual.conv1.bias"));
    /* open_clip's order: the bare tensors first, then conv1 and ln_pre. */
    assert_string_equal(ts_params_get(p, 0)->name, "visual.class_embedding");
    assert_string_equal(ts_params_get(p, 3)->name, "visual.conv1.weight");
    assert_true(ts_params_flags(p, 0) & TS_PARAM_NO_DECAY);
    assert_true(ts_params_flags(p, 1) & TS_PARAM_NO_DECAY);
    assert_false(ts_params_flags(p, 2) & TS_PARAM_NO_DECAY);
    /* class_embedding, positional_embedding and proj are N(0, width^-1); conv1 within
     * 1/sqrt(3 P P). */
    double ss = 0;
    int64_t n = 0;
    for (int k = 0; k < 3; k++) {
        ts_tensor *t = ts_params_get(p, k);
        for (int64_t i = 0; i < t->numel; i++, n++) ss += (double)ts_f32(t)[i] * ts_f32(t)[i];
    }
    double sd = sqrt(ss / (double)n);
    assert_true(fabs(sd - 1.0 / sqrt(32.0)) < 0.02);
    float bound = 1.0f / sqrtf(3.0f * 64.0f);
    for (int64_t i = 0; i < m.conv1->numel; i++) assert_true(fabsf(ts_f32(m.conv1)[i]) <= bound);
    ts_vit_free(&m);
    ts_params_free(p);
}

static void pooling_and_tokens(void **state) {
    (void)state;
    for (int pool = 0; pool < 2; pool++) {
        ts_params *p = ts_params_new();
        ts_vit m;
        ts_vit_cfg cfg = small(32, (ts_vit_pool)pool);
        ts_vit_init(&m, p, "", &cfg);
        assert_int_equal(ts_params_finalize(p, 5, NULL), TS_OK);
        ts_ctx *c = ts_ctx_new(TS_CPU, 1 << 20, 1);
        ts_rng r;
        ts_rng_seed(&r, 9);
        ts_tensor *x = ts_new_f32(c, 4, TS_SHAPE(3, 3, 32, 32));
        for (int64_t i = 0; i < x->numel; i++) ts_f32(x)[i] = ts_rng_normal(&r);
        ts_tensor *tok = NULL;
        ts_tensor *y = ts_vit_forward(c, &m, x, &tok);
        assert_int_equal(y->ndim, 2);
        assert_int_equal(ts_dim(y, 0), 3);
        assert_int_equal(ts_dim(y, 1), 16);
        assert_int_equal(tok->ndim, 3);
        assert_int_equal(ts_dim(tok, 1), 17);
        assert_int_equal(ts_dim(tok, 2), 32);
        /* pooled = (class token, or the mean of the 16 patch tokens) @ proj */
        for (int b = 0; b < 3; b++)
            for (int e = 0; e < 16; e++) {
                double acc = 0;
                for (int ch = 0; ch < 32; ch++) {
                    double v = 0;
                    if (pool == TS_VIT_POOL_TOKEN) {
                        v = ts_f32(tok)[(b * 17) * 32 + ch];
                    } else {
                        for (int t = 1; t < 17; t++) v += ts_f32(tok)[(b * 17 + t) * 32 + ch];
                        v /= 16;
                    }
                    acc += v * ts_f32(m.proj)[ch * 16 + e];
                }
                assert_true(fabs(acc - ts_f32(y)[b * 16 + e]) < 1e-4);
            }
        /* Every parameter gets a gradient from the pooled output. */
        ts_backward(c, ts_sum(c, ts_mul(c, y, y), TS_ALL));
        for (int i = 0; i < ts_params_count(p); i++) {
            ts_tensor *t = ts_params_get(p, i);
            double g = 0;
            for (int64_t k = 0; k < t->numel; k++) g += fabs(ts_f32(t->grad)[k]);
            if (!(g > 0)) fail_msg("no gradient reached %s", t->name);
        }
        ts_ctx_free(c);
        ts_vit_free(&m);
        ts_params_free(p);
    }
}

/* ---- resampling and loading ---- */

static void resize_same_grid_is_identity(void **state) {
    (void)state;
    float in[(1 + 12) * 5], out[(1 + 12) * 5];
    for (int i = 0; i < (int)(sizeof in / sizeof in[0]); i++) in[i] = (float)((i * 37) % 11) - 5;
    for (int aa = 0; aa < 2; aa++) {
        ts_vit_resize_pos_embed(out, in, 1, 3, 4, 3, 4, 5, aa);
        for (int i = 0; i < (int)(sizeof in / sizeof in[0]); i++)
            assert_true(fabsf(out[i] - in[i]) < 1e-6f);
    }
}

static char tmpdir[256];

static int setup_tmp(void **state) {
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/tessera-unit-vit-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown_tmp(void **state) {
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* Writes every tensor of p to path, conv1 in BF16, plus an unrelated text-tower tensor. */
static void save(ts_params *p, const char *path, uint16_t *bf16_buf) {
    ts_st_writer *w = ts_st_writer_new();
    static const float other[4] = { 1, 2, 3, 4 };
    for (int i = 0; i < ts_params_count(p); i++) {
        ts_tensor *t = ts_params_get(p, i);
        if (strcmp(t->name, "visual.conv1.weight") == 0) {
            for (int64_t k = 0; k < t->numel; k++) bf16_buf[k] = ts_f32_to_bf16(ts_f32(t)[k]);
            ts_st_writer_add(w, t->name, TS_BF16, t->ndim, t->shape, bf16_buf);
        } else {
            ts_st_writer_add(w, t->name, TS_F32, t->ndim, t->shape, t->data);
        }
    }
    ts_st_writer_add(w, "token_embedding.weight", TS_F32, 2, TS_SHAPE(2, 2), other);
    assert_int_equal(ts_st_write(w, path, NULL), TS_OK);
    ts_st_writer_free(w);
}

static void load_resizes_and_checks(void **state) {
    (void)state;
    char path[300];
    snprintf(path, sizeof path, "%s/clip.safetensors", tmpdir);
    /* A checkpoint of a tower trained at 32x32 (a 4x4 grid) ... */
    ts_params *p0 = ts_params_new();
    ts_vit m0;
    ts_vit_cfg cfg0 = small(32, TS_VIT_POOL_TOKEN);
    ts_vit_init(&m0, p0, "visual.", &cfg0);
    assert_int_equal(ts_params_finalize(p0, 11, NULL), TS_OK);
    uint16_t *bf = malloc((size_t)m0.conv1->numel * sizeof *bf);
    save(p0, path, bf);

    /* ... loads into one at 48x48 (6x6): the table is resampled, the rest copied. */
    ts_params *p1 = ts_params_new();
    ts_vit m1;
    ts_vit_cfg cfg1 = small(48, TS_VIT_POOL_TOKEN);
    ts_vit_init(&m1, p1, "visual.", &cfg1);
    assert_int_equal(ts_params_finalize(p1, 12, NULL), TS_OK);
    ts_err err = { 0 };
    assert_int_equal(ts_vit_load(&m1, path, &err), TS_OK);
    float *want = malloc((size_t)m1.pos_embed->numel * sizeof *want);
    ts_vit_resize_pos_embed(want, ts_f32(m0.pos_embed), 1, 4, 4, 6, 6, 32, 1);
    for (int64_t i = 0; i < m1.pos_embed->numel; i++)
        assert_true(fabsf(ts_f32(m1.pos_embed)[i] - want[i]) < 1e-6f);
    for (int64_t i = 0; i < m1.conv1->numel; i++)
        assert_true(ts_f32(m1.conv1)[i] == ts_bf16_to_f32(bf[i]));
    for (int i = 0; i < ts_params_count(p1); i++) {
        ts_tensor *a = ts_params_get(p0, i), *b = ts_params_get(p1, i);
        if (b == m1.pos_embed || b == m1.conv1) continue;
        assert_memory_equal(a->data, b->data, (size_t)a->numel * sizeof(float));
    }

    /* A tower of another width: every mismatch named, nothing changed. */
    ts_params *p2 = ts_params_new();
    ts_vit m2;
    ts_vit_cfg cfg2 = small(32, TS_VIT_POOL_TOKEN);
    cfg2.out_dim = 8;
    cfg2.layers = 3;
    ts_vit_init(&m2, p2, "visual.", &cfg2);
    assert_int_equal(ts_params_finalize(p2, 13, NULL), TS_OK);
    float before = ts_f32(m2.class_embedding)[0];
    assert_int_equal(ts_vit_load(&m2, path, &err), TS_ERR_MISMATCH);
    assert_non_null(strstr(err.msg, "visual.proj: shape differs (model (32, 8), file (32, 16))"));
    assert_non_null(strstr(err.msg, "visual.transformer.resblocks.2.ln_1.weight: missing"));
    assert_non_null(strstr(err.msg, path));
    assert_true(ts_f32(m2.class_embedding)[0] == before);

    /* Under another prefix nothing is found. */
    ts_params *p3 = ts_params_new();
    ts_vit m3;
    ts_vit_init(&m3, p3, "image.", &cfg0);
    assert_int_equal(ts_params_finalize(p3, 14, NULL), TS_OK);
    assert_int_equal(ts_vit_load(&m3, path, &err), TS_ERR_MISMATCH);
    assert_non_null(strstr(err.msg, "image.conv1.weight: missing"));

    char missing[300];
    snprintf(missing, sizeof missing, "%s/none.safetensors", tmpdir);
    assert_int_not_equal(ts_vit_load(&m3, missing, &err), TS_OK);

    free(want);
    free(bf);
    ts_vit_free(&m3);
    ts_params_free(p3);
    ts_vit_free(&m2);
    ts_params_free(p2);
    ts_vit_free(&m1);
    ts_params_free(p1);
    ts_vit_free(&m0);
    ts_params_free(p0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(counts_match_open_clip),
        cmocka_unit_test(configs_by_name),
        cmocka_unit_test(names_and_init),
        cmocka_unit_test(pooling_and_tokens),
        cmocka_unit_test(resize_same_grid_is_identity),
        cmocka_unit_test_setup_teardown(load_resizes_and_checks, setup_tmp, teardown_tmp),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
