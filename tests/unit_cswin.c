/* unit_cswin.c: CSWin's configurations, parameter names and counts, size errors, and loading.
 *
 * Parity (tests/parity/cases_cswin.py) covers the numbers of the forward and backward of the
 * stripe attention op and of small models against a rewrite of the official code, and
 * recomputes the parameter counts there. This test covers what parity does not: the counts of
 * the four official configurations against the exact numbers the official model gives and the
 * paper's table, against a formula written here and against what the model really registers;
 * the official names, shapes and order; the branch layout per stage (two stripe branches, or
 * one over the whole map); the errors for sizes the stripes do not divide, each naming the
 * stage, the map and the stripe width; and a checkpoint written by name loading into a model
 * without a head.
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

/* The official model's parameters from the shapes of its modules: the stem conv (C, 3, 7, 7) +
 * (C) and its layernorm; per block of width d: qkv (3d, d) + (3d), norm1, proj (d, d) + (d),
 * get_v (d channels over the branches, 3x3 + bias), mlp fc1 (4d, d) + (4d), fc2 (d, 4d) + (d),
 * norm2; merges conv (2d, d, 3, 3) + (2d) and layernorm (2d); the final norm and the head. */
static int64_t formula(int64_t C, const int depth[4], int64_t K) {
    int64_t n = C * 3 * 49 + C + 2 * C, d = C;
    for (int s = 0; s < 4; s++) {
        if (s) {
            n += 2 * d * d * 9 + 2 * d + 4 * d;
            d *= 2;
        }
        int64_t block = (3 * d * d + 3 * d) + 2 * d + (d * d + d) + (d * 9 + d) +
                        (4 * d * d + 4 * d) + (4 * d * d + d) + 2 * d;
        n += depth[s] * block;
    }
    return n + 2 * d + d * K + K;
}

static int64_t registered(const ts_cswin_cfg *cfg, int *nparams) {
    ts_params *p = ts_params_new();
    ts_cswin m;
    assert_int_equal(ts_cswin_init(&m, p, "", cfg, NULL), TS_OK);
    int64_t n = ts_params_numel(p, 1);
    if (nparams) *nparams = ts_params_count(p);
    ts_cswin_free(&m);
    ts_params_free(p);
    return n;
}

static void counts_match_official_and_paper(void **state) {
    (void)state;
    /* official: sum(p.numel() for p in model.parameters()) of models/cswin.py at commit
     * f111ae2f (CSWin_64_12211_tiny_224 and the others, 1000 classes); the parity case
     * cswin_param_counts recomputes them with the rewrite of that code at every run. paper: the
     * CSWin paper's table (Params column), in millions. */
    static const struct {
        const char *name;
        int64_t official;
        double paper_m;
        int nparams;
    } want[] = {
        { "CSWin-T", 22320552, 23, 418 },
        { "CSWin-S", 34643304, 35, 656 },
        { "CSWin-B", 77382184, 78, 656 },
        { "CSWin-L", 173262664, 173, 656 },
    };
    printf("  %-8s %12s %12s %12s %8s\n", "config", "tessera", "official", "registered", "paper");
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        ts_cswin_cfg cfg;
        assert_int_equal(ts_cswin_cfg_named(want[i].name, &cfg, NULL), TS_OK);
        int64_t ours = ts_cswin_param_count(&cfg);
        int np = 0;
        int64_t reg = registered(&cfg, &np);
        printf("  %-8s %12lld %12lld %12lld %7.0fM  (%.2fM)\n", want[i].name, (long long)ours,
               (long long)want[i].official, (long long)reg, want[i].paper_m, ours / 1e6);
        assert_int_equal(ours, want[i].official);
        assert_int_equal(ours, formula(cfg.embed_dim, cfg.depth, cfg.num_classes));
        assert_int_equal(ours, reg);
        assert_int_equal(np, want[i].nparams);
        /* The paper rounds loosely (22.3M is listed as 23M): within a million of its table. */
        assert_true(fabs(ours / 1e6 - want[i].paper_m) < 1.0);
        /* Nothing depends on the input size: the 384 models count the same. */
        char n384[32];
        snprintf(n384, sizeof n384, "%s-384", want[i].name);
        assert_int_equal(ts_cswin_cfg_named(n384, &cfg, NULL), TS_OK);
        assert_int_equal(ts_cswin_param_count(&cfg), want[i].official);
        assert_int_equal(registered(&cfg, NULL), want[i].official);
    }
    /* Without a head, the head's (K, 8C) + (K) go. */
    ts_cswin_cfg cfg;
    assert_int_equal(ts_cswin_cfg_named("CSWin-T", &cfg, NULL), TS_OK);
    cfg.num_classes = 0;
    assert_int_equal(ts_cswin_param_count(&cfg), 22320552 - (512 * 1000 + 1000));
    assert_int_equal(registered(&cfg, NULL), ts_cswin_param_count(&cfg));
    char line[512];
    ts_cswin_describe(&cfg, line, sizeof line);
    printf("  %s\n", line);
    assert_non_null(strstr(line, "stripes [1, 2, 7, 7]"));
    assert_non_null(strstr(line, "maps 56x56 28x28 14x14 7x7"));
}

/* ---- configurations ---- */

static void configs_by_name(void **state) {
    (void)state;
    ts_cswin_cfg cfg;
    ts_err err = { 0 };
    assert_int_equal(ts_cswin_cfg_named("CSWin-L-384", &cfg, &err), TS_OK);
    assert_int_equal(cfg.image_h, 384);
    assert_int_equal(cfg.embed_dim, 144);
    assert_int_equal(cfg.depth[2], 32);
    assert_int_equal(cfg.heads[3], 24);
    assert_int_equal(cfg.split[2], 12);
    assert_int_equal(cfg.split[3], 12);
    assert_int_equal(ts_cswin_cfg_named("CSWin-B", &cfg, &err), TS_OK);
    assert_int_equal(cfg.image_w, 224);
    assert_int_equal(cfg.embed_dim, 96);
    assert_int_equal(cfg.heads[0], 4);
    assert_int_equal(cfg.split[0], 1);
    assert_int_equal(cfg.split[2], 7);
    assert_int_equal(cfg.num_classes, 1000);
    assert_true(cfg.mlp_ratio == 4.0f);
    for (int i = 0; ts_cswin_cfg_names[i]; i++) {
        assert_int_equal(ts_cswin_cfg_named(ts_cswin_cfg_names[i], &cfg, &err), TS_OK);
        assert_int_equal(ts_cswin_cfg_check(&cfg, &err), TS_OK);
    }
    assert_int_equal(ts_cswin_cfg_named("CSWin-XL", &cfg, &err), TS_ERR_RECIPE);
    assert_non_null(strstr(err.msg, "CSWin-XL"));
    assert_non_null(strstr(err.msg, "CSWin-T"));
    assert_int_equal(ts_cswin_cfg_named("-384", &cfg, &err), TS_ERR_RECIPE);
}

/* ---- size errors ---- */

static void size_errors_name_stage_map_and_width(void **state) {
    (void)state;
    ts_cswin_cfg cfg;
    ts_err err = { 0 };
    assert_int_equal(ts_cswin_cfg_named("CSWin-T", &cfg, NULL), TS_OK);

    /* 256: maps 64, 32, 16, 8, and stripes of 7 do not divide stage 3's 16x16. */
    cfg.image_h = cfg.image_w = 256;
    assert_int_equal(ts_cswin_cfg_check(&cfg, &err), TS_ERR_RECIPE);
    assert_non_null(strstr(err.msg, "stage 3"));
    assert_non_null(strstr(err.msg, "16x16"));
    assert_non_null(strstr(err.msg, "width 7"));
    /* ts_cswin_init says the same and registers nothing. */
    ts_params *p = ts_params_new();
    ts_cswin m;
    memset(&err, 0, sizeof err);
    assert_int_equal(ts_cswin_init(&m, p, "", &cfg, &err), TS_ERR_RECIPE);
    assert_non_null(strstr(err.msg, "stage 3"));
    assert_int_equal(ts_params_count(p), 0);
    ts_params_free(p);

    /* 448: maps 112, 56, 28, 14, all divisible by the widths 1, 2, 7. */
    cfg.image_h = cfg.image_w = 448;
    assert_int_equal(ts_cswin_cfg_check(&cfg, &err), TS_OK);
    /* A stripe of 3 in stage 2's 56x28 map (a rectangular 448x224 image). */
    cfg.image_w = 224;
    cfg.split[1] = 3;
    assert_int_equal(ts_cswin_cfg_check(&cfg, &err), TS_ERR_RECIPE);
    assert_non_null(strstr(err.msg, "stage 2"));
    assert_non_null(strstr(err.msg, "56x28"));
    assert_non_null(strstr(err.msg, "width 3"));
    cfg.split[1] = 2;
    assert_int_equal(ts_cswin_cfg_check(&cfg, &err), TS_OK);

    /* 200: the stem gives 50x50 and merge1 25x25, which stripes of 2 do not divide ... */
    cfg.image_h = cfg.image_w = 200;
    assert_int_equal(ts_cswin_cfg_check(&cfg, &err), TS_ERR_RECIPE);
    assert_non_null(strstr(err.msg, "stage 2"));
    assert_non_null(strstr(err.msg, "25x25"));
    assert_non_null(strstr(err.msg, "width 2"));
    /* ... and with stripes of 5 there, merge2 cannot halve 25. */
    cfg.split[1] = 5;
    assert_int_equal(ts_cswin_cfg_check(&cfg, &err), TS_ERR_RECIPE);
    assert_non_null(strstr(err.msg, "stage 3"));
    assert_non_null(strstr(err.msg, "25x25"));
    assert_non_null(strstr(err.msg, "32"));
    cfg.split[1] = 2;
    /* 222: the stride-4 stem. */
    cfg.image_h = cfg.image_w = 222;
    assert_int_equal(ts_cswin_cfg_check(&cfg, &err), TS_ERR_RECIPE);
    assert_non_null(strstr(err.msg, "stage 1"));
    assert_non_null(strstr(err.msg, "222x222"));

    /* The last stage attends the whole map: its own width is not checked. */
    cfg.image_h = cfg.image_w = 224;
    cfg.split[3] = 5;
    assert_int_equal(ts_cswin_cfg_check(&cfg, &err), TS_OK);
    /* A stage whose map equals its width has one branch, so odd heads are fine there ... */
    cfg.split[2] = 14;
    cfg.heads[2] = 1;
    assert_int_equal(ts_cswin_cfg_check(&cfg, &err), TS_OK);
    /* ... but not in stripe stages, and heads must divide the width. */
    cfg.split[2] = 7;
    assert_int_equal(ts_cswin_cfg_check(&cfg, &err), TS_ERR_RECIPE);
    assert_non_null(strstr(err.msg, "stage 3"));
    assert_non_null(strstr(err.msg, "even"));
    cfg.heads[2] = 6;
    assert_int_equal(ts_cswin_cfg_check(&cfg, &err), TS_ERR_RECIPE);
    assert_non_null(strstr(err.msg, "width 256 is not divisible by 6 heads"));
    cfg.heads[2] = 8;
    cfg.num_classes = -1;
    assert_int_equal(ts_cswin_cfg_check(&cfg, &err), TS_ERR_RECIPE);
    assert_non_null(strstr(err.msg, "num_classes"));
}

/* ---- names, shapes, branches ---- */

static void names_shapes_and_branches(void **state) {
    (void)state;
    ts_cswin_cfg cfg;
    assert_int_equal(ts_cswin_cfg_named("CSWin-T", &cfg, NULL), TS_OK);
    ts_params *p = ts_params_new();
    ts_cswin m;
    assert_int_equal(ts_cswin_init(&m, p, "visual.", &cfg, NULL), TS_OK);
    /* The official order: the stem, then each block's qkv, norm1, proj, attns, mlp, norm2. */
    static const char *const first[] = {
        "visual.stage1_conv_embed.0.weight", "visual.stage1_conv_embed.0.bias",
        "visual.stage1_conv_embed.2.weight", "visual.stage1_conv_embed.2.bias",
        "visual.stage1.0.qkv.weight", "visual.stage1.0.qkv.bias",
        "visual.stage1.0.norm1.weight", "visual.stage1.0.norm1.bias",
        "visual.stage1.0.proj.weight", "visual.stage1.0.proj.bias",
        "visual.stage1.0.attns.0.get_v.weight", "visual.stage1.0.attns.0.get_v.bias",
        "visual.stage1.0.attns.1.get_v.weight", "visual.stage1.0.attns.1.get_v.bias",
        "visual.stage1.0.mlp.fc1.weight", "visual.stage1.0.mlp.fc1.bias",
        "visual.stage1.0.mlp.fc2.weight", "visual.stage1.0.mlp.fc2.bias",
        "visual.stage1.0.norm2.weight", "visual.stage1.0.norm2.bias",
        "visual.merge1.conv.weight", "visual.merge1.conv.bias",
        "visual.merge1.norm.weight", "visual.merge1.norm.bias",
        "visual.stage2.0.qkv.weight",
    };
    for (int i = 0; i < (int)(sizeof first / sizeof first[0]); i++)
        assert_string_equal(ts_params_get(p, i)->name, first[i]);
    int n = ts_params_count(p);
    assert_string_equal(ts_params_get(p, n - 4)->name, "visual.norm.weight");
    assert_string_equal(ts_params_get(p, n - 2)->name, "visual.head.weight");
    assert_string_equal(ts_params_get(p, n - 1)->name, "visual.head.bias");
    static const struct { const char *name; int ndim; int64_t shape[4]; } want[] = {
        { "visual.stage1_conv_embed.0.weight", 4, { 64, 3, 7, 7 } },
        { "visual.stage1.0.qkv.weight", 2, { 192, 64 } },
        { "visual.stage1.0.attns.1.get_v.weight", 4, { 32, 1, 3, 3 } },
        { "visual.stage2.1.mlp.fc1.weight", 2, { 512, 128 } },
        { "visual.merge2.conv.weight", 4, { 256, 128, 3, 3 } },
        { "visual.stage3.20.attns.1.get_v.bias", 1, { 128 } },
        { "visual.merge3.norm.bias", 1, { 512 } },
        { "visual.stage4.0.attns.0.get_v.weight", 4, { 512, 1, 3, 3 } },
        { "visual.norm.weight", 1, { 512 } },
        { "visual.head.weight", 2, { 1000, 512 } },
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        ts_tensor *t = ts_params_find(p, want[i].name);
        if (!t) fail_msg("%s is not registered", want[i].name);
        assert_int_equal(t->ndim, want[i].ndim);
        for (int d = 0; d < t->ndim; d++) assert_int_equal(t->shape[d], want[i].shape[d]);
    }
    /* Stage 4 has one branch over the 7x7 map; the others two stripe branches. */
    assert_null(ts_params_find(p, "visual.stage4.0.attns.1.get_v.weight"));
    assert_null(ts_params_find(p, "visual.stage3.21.qkv.weight"));
    assert_int_equal(m.blocks[0][0].sw, 1);
    assert_int_equal(m.blocks[1][1].sw, 2);
    assert_int_equal(m.blocks[2][0].sw, 7);
    assert_int_equal(m.blocks[3][0].sw, 0);
    assert_int_equal(m.map_h[2], 14);
    assert_int_equal(m.out_dim, 1000);
    /* Norms and biases are not decayed, weights are. */
    assert_true(ts_params_flags(p, 1) & TS_PARAM_NO_DECAY);
    assert_true(ts_params_flags(p, 2) & TS_PARAM_NO_DECAY);
    assert_false(ts_params_flags(p, 4) & TS_PARAM_NO_DECAY);
    ts_cswin_free(&m);
    ts_params_free(p);

    /* At 384 stage 3 (24x24, width 12) keeps two branches; with widths 14 at 224 it has one. */
    assert_int_equal(ts_cswin_cfg_named("CSWin-T-384", &cfg, NULL), TS_OK);
    p = ts_params_new();
    assert_int_equal(ts_cswin_init(&m, p, "", &cfg, NULL), TS_OK);
    assert_int_equal(m.blocks[2][0].sw, 12);
    assert_int_equal(m.blocks[3][0].sw, 0);
    assert_non_null(ts_params_find(p, "stage3.0.attns.1.get_v.weight"));
    ts_cswin_free(&m);
    ts_params_free(p);
    assert_int_equal(ts_cswin_cfg_named("CSWin-T", &cfg, NULL), TS_OK);
    cfg.split[2] = 14;
    p = ts_params_new();
    assert_int_equal(ts_cswin_init(&m, p, "", &cfg, NULL), TS_OK);
    assert_int_equal(m.blocks[2][0].sw, 0);
    assert_null(ts_params_find(p, "stage3.0.attns.1.get_v.weight"));
    assert_int_equal(ts_params_find(p, "stage3.0.attns.0.get_v.weight")->shape[0], 256);
    assert_int_equal(ts_params_numel(p, 1), ts_cswin_param_count(&cfg));
    ts_cswin_free(&m);
    ts_params_free(p);
}

/* ---- forward, gradients, loading ---- */

static ts_cswin_cfg tiny(int classes) {
    return (ts_cswin_cfg){ .image_h = 64, .image_w = 64, .embed_dim = 8,
                           .depth = { 1, 1, 1, 1 }, .heads = { 2, 2, 4, 4 },
                           .split = { 2, 4, 2, 2 }, .mlp_ratio = 4.0f, .num_classes = classes,
                           .ln_eps = 1e-5f, .drop_path = 0.1f };
}

static ts_tensor *images(ts_ctx *c, int B) {
    ts_rng r;
    ts_rng_seed(&r, 5);
    ts_tensor *x = ts_new_f32(c, 4, TS_SHAPE(B, 3, 64, 64));
    for (int64_t i = 0; i < x->numel; i++) ts_f32(x)[i] = ts_rng_normal(&r);
    return x;
}

static void forward_tokens_and_gradients(void **state) {
    (void)state;
    ts_params *p = ts_params_new();
    ts_cswin m;
    ts_cswin_cfg cfg = tiny(5);
    assert_int_equal(ts_cswin_init(&m, p, "", &cfg, NULL), TS_OK);
    assert_int_equal(ts_params_finalize(p, 3, NULL), TS_OK);
    ts_ctx *c = ts_ctx_new(TS_CPU, 1 << 20, 1);
    c->training = 1;
    ts_tensor *tok = NULL;
    ts_tensor *y = ts_cswin_forward(c, &m, images(c, 3), &tok);
    assert_int_equal(ts_dim(y, 0), 3);
    assert_int_equal(ts_dim(y, 1), 5);
    assert_int_equal(ts_dim(tok, 1), 4);  /* the 2x2 map of stage 4 */
    assert_int_equal(ts_dim(tok, 2), 64); /* 8 * 8 */
    /* Every parameter gets a gradient (drop-path keeps the first block, rate 0, always). */
    ts_backward(c, ts_sum(c, ts_mul(c, y, y), TS_ALL));
    for (int i = 0; i < ts_params_count(p); i++) {
        ts_tensor *t = ts_params_get(p, i);
        double g = 0;
        for (int64_t k = 0; k < t->numel; k++) g += fabs(ts_f32(t->grad)[k]);
        if (!(g > 0)) fail_msg("no gradient reached %s", t->name);
    }
    /* Drop-path rises linearly from 0 to the configured rate over the four blocks. */
    assert_true(m.blocks[0][0].drop_path == 0.0f);
    assert_true(fabsf(m.blocks[3][0].drop_path - 0.1f) < 1e-7f);
    assert_true(fabsf(m.blocks[1][0].drop_path - 0.1f / 3) < 1e-7f);
    ts_ctx_free(c);
    ts_cswin_free(&m);
    ts_params_free(p);
}

static char tmpdir[256];

static int setup_tmp(void **state) {
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/tessera-unit-cswin-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown_tmp(void **state) {
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* A classifier's checkpoint, written by the official names, loads into a headless encoder of
 * another image size (nothing in CSWin depends on it) and gives the same features. */
static void checkpoint_loads_by_name(void **state) {
    (void)state;
    char path[300];
    snprintf(path, sizeof path, "%s/cswin.safetensors", tmpdir);
    ts_params *p0 = ts_params_new();
    ts_cswin m0;
    ts_cswin_cfg cfg0 = tiny(5);
    assert_int_equal(ts_cswin_init(&m0, p0, "", &cfg0, NULL), TS_OK);
    assert_int_equal(ts_params_finalize(p0, 21, NULL), TS_OK);
    ts_st_writer *w = ts_st_writer_new();
    for (int i = 0; i < ts_params_count(p0); i++) {
        ts_tensor *t = ts_params_get(p0, i);
        ts_st_writer_add(w, t->name, TS_F32, t->ndim, t->shape, t->data);
    }
    assert_int_equal(ts_st_write(w, path, NULL), TS_OK);
    ts_st_writer_free(w);

    ts_params *p1 = ts_params_new();
    ts_cswin m1;
    ts_cswin_cfg cfg1 = tiny(0);
    cfg1.image_h = 128; /* maps 32x16 ... 4x2: the widths 2, 4, 2 still divide */
    assert_int_equal(ts_cswin_init(&m1, p1, "", &cfg1, NULL), TS_OK);
    assert_int_equal(ts_params_finalize(p1, 22, NULL), TS_OK);
    ts_err err = { 0 };
    assert_int_equal(ts_ckpt_load_model(p1, path, 0, &err), TS_ERR_MISMATCH); /* the head */
    assert_non_null(strstr(err.msg, "head.weight"));
    assert_int_equal(ts_ckpt_load_model(p1, path, 1, &err), TS_OK);
    for (int i = 0; i < ts_params_count(p1); i++) {
        ts_tensor *a = ts_params_find(p0, ts_params_get(p1, i)->name), *b = ts_params_get(p1, i);
        assert_non_null(a);
        assert_memory_equal(a->data, b->data, (size_t)a->numel * sizeof(float));
    }
    ts_cswin_free(&m1);
    ts_params_free(p1);
    ts_cswin_free(&m0);
    ts_params_free(p0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(counts_match_official_and_paper),
        cmocka_unit_test(configs_by_name),
        cmocka_unit_test(size_errors_name_stage_map_and_width),
        cmocka_unit_test(names_shapes_and_branches),
        cmocka_unit_test(forward_tokens_and_gradients),
        cmocka_unit_test_setup_teardown(checkpoint_loads_by_name, setup_tmp, teardown_tmp),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
