/* unit_text_encoder.c: the text tower's names, counts, init, masks, pooling, recipe section and
 * checkpoint loading, and the masked-language pieces (head and 80/10/10 masking).
 *
 * Parity with open_clip (tests/parity/cases_text.py) covers the numbers of the forward and the
 * backward. This test covers what parity does not: names under a prefix written out from
 * open_clip's TextTransformer.named_parameters(), the counts of its model configs (printed by
 * open_clip_torch 3.3.0, see counts_match_open_clip), the init's standard deviations, that the
 * causal tower never looks ahead and the bidirectional one ignores padding keys, that a recipe
 * whose vocab_size differs from the tokenizer's is an error naming both, that ts_text_load
 * copies a checkpoint and names every mismatch without changing anything, and the masking
 * statistics.
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
#include "../text/text.h"

static ts_text_cfg tiny(int causal) {
    return (ts_text_cfg){ .context_length = 8, .vocab_size = 20, .width = 16, .layers = 2,
                          .heads = 2, .mlp_ratio = 4.0f, .out_dim = 8, .act = TS_ACT_GELU,
                          .causal = causal, .pad_mask = 1, .pad_id = 0, .eos_id = 19,
                          .pool = TS_TEXT_POOL_ARGMAX, .ln_eps = 1e-5f, .drop_path = 0.0f };
}

/* ---- names and counts ---- */

static void names_in_open_clip_order(void **state) {
    (void)state;
    /* open_clip.transformer.TextTransformer(..., layers=1).named_parameters(), torch 1.13. */
    static const char *const want[] = {
        "positional_embedding", "text_projection", "token_embedding.weight",
        "transformer.resblocks.0.ln_1.weight", "transformer.resblocks.0.ln_1.bias",
        "transformer.resblocks.0.attn.in_proj_weight", "transformer.resblocks.0.attn.in_proj_bias",
        "transformer.resblocks.0.attn.out_proj.weight",
        "transformer.resblocks.0.attn.out_proj.bias",
        "transformer.resblocks.0.ln_2.weight", "transformer.resblocks.0.ln_2.bias",
        "transformer.resblocks.0.mlp.c_fc.weight", "transformer.resblocks.0.mlp.c_fc.bias",
        "transformer.resblocks.0.mlp.c_proj.weight", "transformer.resblocks.0.mlp.c_proj.bias",
        "ln_final.weight", "ln_final.bias",
    };
    static const char *const prefixes[] = { "", "text." };
    for (int k = 0; k < 2; k++) {
        ts_text_cfg cfg = tiny(1);
        cfg.layers = 1;
        ts_params *p = ts_params_new();
        ts_text m;
        ts_text_init(&m, p, prefixes[k], &cfg);
        assert_int_equal(ts_params_count(p), (int)(sizeof want / sizeof want[0]));
        for (int i = 0; i < ts_params_count(p); i++) {
            char name[128];
            snprintf(name, sizeof name, "%s%s", prefixes[k], want[i]);
            assert_string_equal(ts_params_get(p, i)->name, name);
        }
        assert_int_equal(ts_params_numel(p, 1), ts_text_param_count(&cfg));
        ts_text_free(&m);
        ts_params_free(p);
    }
    /* Without a projection there is no text_projection. */
    ts_text_cfg cfg = tiny(1);
    cfg.out_dim = 0;
    ts_params *p = ts_params_new();
    ts_text m;
    ts_text_init(&m, p, "", &cfg);
    assert_null(ts_params_find(p, "text_projection"));
    assert_null(m.proj);
    assert_int_equal(ts_params_numel(p, 1), ts_text_param_count(&cfg));
    ts_text_free(&m);
    ts_params_free(p);
}

static void counts_match_open_clip(void **state) {
    (void)state;
    /* sum(p.numel() for p in open_clip.model._build_text_tower(cfg["embed_dim"],
     * cfg["text_cfg"]).parameters()) with cfg = open_clip.factory.get_model_config(name),
     * open_clip_torch 3.3.0 on torch 1.13. The parity case text_param_counts recomputes them
     * with open_clip at every run. */
    static const struct { const char *name; int64_t n; } want[] = {
        { "ViT-B-32", 63428096 }, { "ViT-B-16", 63428096 }, { "ViT-L-14", 123650304 },
        { "ViT-H-14", 354032640 }, { "ViT-S-16", 40444032 }, { "ViT-B-16-plus", 91163520 },
        { "ViT-L-14-quickgelu", 123650304 },
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        ts_text_cfg cfg;
        ts_err err = { 0 };
        assert_int_equal(ts_text_cfg_named(want[i].name, &cfg, &err), TS_OK);
        assert_int_equal(ts_text_param_count(&cfg), want[i].n);
        assert_int_equal(cfg.context_length, 77);
        assert_int_equal(cfg.vocab_size, 49408);
        assert_true(cfg.causal);
        assert_int_equal(cfg.act, strstr(want[i].name, "quickgelu") ? TS_ACT_QUICK_GELU
                                                                   : TS_ACT_GELU);
    }
    /* Registering (without allocating) a ViT-B-32 text tower gives the same number. */
    ts_text_cfg cfg;
    assert_int_equal(ts_text_cfg_named("ViT-B-32", &cfg, NULL), TS_OK);
    ts_params *p = ts_params_new();
    ts_text m;
    ts_text_init(&m, p, "", &cfg);
    assert_int_equal(ts_params_numel(p, 1), 63428096);
    ts_text_free(&m);
    ts_params_free(p);

    ts_err err = { 0 };
    assert_int_equal(ts_text_cfg_named("ViT-Q-99", &cfg, &err), TS_ERR_RECIPE);
    assert_non_null(strstr(err.msg, "ViT-Q-99"));
    assert_non_null(strstr(err.msg, "ViT-B-32"));
}

/* open_clip's init_parameters: the standard deviation of each kind of tensor. */
static void init_as_open_clip(void **state) {
    (void)state;
    ts_text_cfg cfg = tiny(1);
    cfg.width = 128;
    cfg.heads = 4;
    cfg.layers = 3;
    cfg.vocab_size = 500;
    cfg.out_dim = 96;
    ts_params *p = ts_params_new();
    ts_text m;
    ts_text_init(&m, p, "", &cfg);
    assert_int_equal(ts_params_finalize(p, 5, NULL), TS_OK);
    double C = 128, L = 3;
    struct { const ts_tensor *t; double std; } want[] = {
        { m.tok_embed, 0.02 },
        { m.pos_embed, 0.01 },
        { m.proj, 1 / sqrt(C) },
        { m.blocks[1].attn.in_w, 1 / sqrt(C) },
        { m.blocks[1].attn.out.w, 1 / sqrt(C) / sqrt(2 * L) },
        { m.blocks[1].mlp.fc.w, 1 / sqrt(2 * C) },
        { m.blocks[1].mlp.proj.w, 1 / sqrt(C) / sqrt(2 * L) },
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        double s = 0;
        for (int64_t k = 0; k < want[i].t->numel; k++) s += (double)ts_f32(want[i].t)[k] *
                                                              ts_f32(want[i].t)[k];
        s = sqrt(s / (double)want[i].t->numel);
        if (fabs(s / want[i].std - 1) > 0.05)
            fail_msg("%s: std %g, open_clip %g", want[i].t->name, s, want[i].std);
    }
    for (int64_t k = 0; k < m.blocks[0].attn.in_b->numel; k++)
        assert_true(ts_f32(m.blocks[0].attn.in_b)[k] == 0.0f);
    for (int64_t k = 0; k < m.ln_final.w->numel; k++) assert_true(ts_f32(m.ln_final.w)[k] == 1.0f);
    /* Embeddings, norms and biases are not decayed; matrices are. */
    for (int i = 0; i < ts_params_count(p); i++) {
        const ts_tensor *t = ts_params_get(p, i);
        int nd = (ts_params_flags(p, i) & TS_PARAM_NO_DECAY) != 0;
        int want_nd = t->ndim == 1 || t == m.tok_embed || t == m.pos_embed;
        if (nd != want_nd) fail_msg("%s: no-decay flag %d", t->name, nd);
    }
    ts_text_free(&m);
    ts_params_free(p);
}

/* ---- masks and pooling ---- */

/* ids (B, L): start 18, words, end 19, zeros. */
static ts_tensor *ids_of(ts_ctx *c, const int32_t *v, int64_t B, int64_t L) {
    ts_tensor *t = ts_new(c, TS_I32, 2, TS_SHAPE(B, L));
    memcpy(t->data, v, (size_t)(B * L) * sizeof(int32_t));
    return t;
}

static void causal_and_padding(void **state) {
    (void)state;
    static const int32_t a[] = { 18, 5, 6, 7, 19, 0, 0, 0, 18, 3, 19, 0, 0, 0, 0, 0 };
    int32_t b[16];
    for (int causal = 0; causal < 2; causal++) {
        ts_text_cfg cfg = tiny(causal);
        ts_params *p = ts_params_new();
        ts_text m;
        ts_text_init(&m, p, "", &cfg);
        assert_int_equal(ts_params_finalize(p, 3, NULL), TS_OK);
        ts_ctx *c = ts_ctx_new(TS_CPU, 1 << 20, 1);
        c->grad_enabled = 0;
        ts_tensor *ta, *tb, *t3;
        ts_tensor *ya = ts_text_forward(c, &m, ids_of(c, a, 2, 8), NULL, &ta);
        /* A word after sample 0's end: the causal tower's rows up to the end stay the same. */
        memcpy(b, a, sizeof b);
        b[5] = 9;
        ts_tensor *yb = ts_text_forward(c, &m, ids_of(c, b, 2, 8), NULL, &tb);
        /* Sample 1 without its padding (L = 3): both towers give the same rows, the causal one
         * because it never looks ahead, the bidirectional one because padding keys are masked. */
        ts_tensor *y3 = ts_text_forward(c, &m, ids_of(c, a + 8, 1, 3), NULL, &t3);
        for (int t = 0; t < 3; t++)
            for (int ch = 0; ch < 16; ch++)
                assert_true(fabsf(ts_f32(ta)[(8 + t) * 16 + ch] - ts_f32(t3)[t * 16 + ch]) < 1e-5f);
        for (int t = 0; t <= 4; t++)
            for (int ch = 0; ch < 16; ch++) {
                float u = ts_f32(ta)[t * 16 + ch], v = ts_f32(tb)[t * 16 + ch];
                if (causal) assert_true(fabsf(u - v) < 1e-6f);
                else if (ch == 0 && t == 0) assert_true(u != v); /* id 9 is no padding */
            }
        /* Pooled at the end token (the largest id). */
        for (int e = 0; e < 8; e++) {
            assert_true(fabsf(ts_f32(ya)[8 + e] - ts_f32(y3)[e]) < 1e-5f);
            if (causal) assert_true(fabsf(ts_f32(ya)[e] - ts_f32(yb)[e]) < 1e-6f);
        }
        /* pooled = tokens[row of the end] @ text_projection */
        for (int e = 0; e < 8; e++) {
            double acc = 0;
            for (int ch = 0; ch < 16; ch++)
                acc += ts_f32(ta)[(8 + 2) * 16 + ch] * ts_f32(m.proj)[ch * 8 + e];
            assert_true(fabs(acc - ts_f32(ya)[8 + e]) < 1e-5);
        }
        ts_ctx_free(c);
        ts_text_free(&m);
        ts_params_free(p);
    }
}

static void pooling_rows(void **state) {
    (void)state;
    /* Two equal maxima: argmax takes the first, as torch. eos takes the first eos_id. */
    static const int32_t a[] = { 3, 12, 7, 12, 5, 7, 0, 0 };
    static const struct { ts_text_pool pool; int eos, row; } cases[] = {
        { TS_TEXT_POOL_ARGMAX, 0, 1 }, { TS_TEXT_POOL_EOS, 7, 2 }, { TS_TEXT_POOL_EOS, 15, 0 },
        { TS_TEXT_POOL_FIRST, 0, 0 }, { TS_TEXT_POOL_LAST, 0, 7 },
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        ts_text_cfg cfg = tiny(1);
        cfg.out_dim = 0;
        cfg.pool = cases[k].pool;
        cfg.eos_id = cases[k].eos;
        ts_params *p = ts_params_new();
        ts_text m;
        ts_text_init(&m, p, "", &cfg);
        assert_int_equal(ts_params_finalize(p, 3, NULL), TS_OK);
        ts_ctx *c = ts_ctx_new(TS_CPU, 1 << 20, 1);
        ts_tensor *tok;
        ts_tensor *y = ts_text_forward(c, &m, ids_of(c, a, 1, 8), NULL, &tok);
        assert_int_equal(ts_dim(y, 1), 16);
        assert_memory_equal(ts_f32(y), ts_f32(tok) + cases[k].row * 16, 16 * sizeof(float));
        ts_ctx_free(c);
        ts_text_free(&m);
        ts_params_free(p);
    }
}

/* ---- the recipe section ---- */

static ts_status parse(const char *yaml, int tokenizer_vocab, ts_text_cfg *cfg, ts_err *err,
                       char **dump) {
    ts_recipe *r = NULL;
    ts_status st = ts_recipe_parse(yaml, "t.yaml", &r, err);
    assert_int_equal(st, TS_OK);
    st = ts_text_cfg_parse(r, "model.text", tokenizer_vocab, cfg, err);
    if (dump) *dump = ts_recipe_dump(r);
    ts_recipe_free(r);
    return st;
}

static void recipe_section(void **state) {
    (void)state;
    ts_log_set_level(TS_LOG_WARN);
    ts_text_cfg cfg;
    ts_err err = { 0 };
    char *dump = NULL;
    /* A vocab_size that is not the tokenizer's: both numbers and the line are named. */
    assert_int_equal(parse("model:\n  text:\n    type: text\n    vocab_size: 1000\n", 49408,
                           &cfg, &err, NULL), TS_ERR_RECIPE);
    assert_non_null(strstr(err.msg, "t.yaml:4"));
    assert_non_null(strstr(err.msg, "model.text.vocab_size"));
    assert_non_null(strstr(err.msg, "1000"));
    assert_non_null(strstr(err.msg, "49408"));
    /* 0 takes the tokenizer's; without a tokenizer it is an error. */
    assert_int_equal(parse("model:\n  text:\n    type: text\n    width: 64\n    heads: 4\n", 700,
                           &cfg, &err, NULL), TS_OK);
    assert_int_equal(cfg.vocab_size, 700);
    assert_int_equal(cfg.width, 64);
    assert_int_equal(parse("model:\n  text:\n    type: text\n", 0, &cfg, &err, NULL),
                     TS_ERR_RECIPE);
    assert_non_null(strstr(err.msg, "vocab_size"));
    /* Every key of the issue: width, layers, heads, context length, vocab size, causal or not,
     * pooling. */
    assert_int_equal(parse("model:\n  text:\n    type: text\n    width: 48\n    layers: 3\n"
                           "    heads: 6\n    context_length: 20\n    vocab_size: 300\n"
                           "    causal: false\n    pooling: first\n    act: quick_gelu\n"
                           "    out_dim: 0\n", 300, &cfg, &err, NULL), TS_OK);
    assert_int_equal(cfg.width, 48);
    assert_int_equal(cfg.layers, 3);
    assert_int_equal(cfg.heads, 6);
    assert_int_equal(cfg.context_length, 20);
    assert_false(cfg.causal);
    assert_int_equal(cfg.pool, TS_TEXT_POOL_FIRST);
    assert_int_equal(cfg.act, TS_ACT_QUICK_GELU);
    assert_int_equal(cfg.out_dim, 0);
    /* A named open_clip config gives the defaults; given keys win; the resolved recipe says so. */
    assert_int_equal(parse("model:\n  text:\n    type: text\n    config: ViT-L-14-quickgelu\n"
                           "    layers: 2\n", 49408, &cfg, &err, &dump), TS_OK);
    assert_int_equal(cfg.width, 768);
    assert_int_equal(cfg.heads, 12);
    assert_int_equal(cfg.layers, 2);
    assert_int_equal(cfg.out_dim, 768);
    assert_int_equal(cfg.act, TS_ACT_QUICK_GELU);
    assert_non_null(strstr(dump, "width: 768"));
    assert_non_null(strstr(dump, "layers: 2"));
    free(dump);
    /* Bad values and unknown keys. */
    assert_int_equal(parse("model:\n  text:\n    type: text\n    width: 50\n    heads: 8\n",
                           100, &cfg, &err, NULL), TS_ERR_RECIPE);
    assert_non_null(strstr(err.msg, "divisible"));
    assert_int_equal(parse("model:\n  text:\n    type: text\n    widht: 50\n", 100, &cfg, &err,
                           NULL), TS_ERR_RECIPE);
    assert_non_null(strstr(err.msg, "widht"));
    assert_int_equal(parse("model:\n  text:\n    type: text\n    pooling: mean\n", 100, &cfg,
                           &err, NULL), TS_ERR_RECIPE);
    assert_non_null(strstr(err.msg, "argmax"));
    ts_log_set_level(TS_LOG_INFO);
}

/* ---- loading ---- */

static void load_copies_and_checks(void **state) {
    (void)state;
    char dir[] = "/tmp/tessera-unit-text-XXXXXX", path[128];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/clip.safetensors", dir);
    ts_text_cfg cfg = tiny(1);
    ts_params *p0 = ts_params_new();
    ts_text m0;
    ts_text_init(&m0, p0, "", &cfg);
    assert_int_equal(ts_params_finalize(p0, 1, NULL), TS_OK);
    /* A CLIP checkpoint: the text tower at the top level, token_embedding in BF16, plus a
     * visual tensor that the text loader ignores. */
    ts_st_writer *w = ts_st_writer_new();
    uint16_t *bf = malloc((size_t)m0.tok_embed->numel * sizeof *bf);
    for (int i = 0; i < ts_params_count(p0); i++) {
        ts_tensor *t = ts_params_get(p0, i);
        if (t == m0.tok_embed) {
            for (int64_t k = 0; k < t->numel; k++) bf[k] = ts_f32_to_bf16(ts_f32(t)[k]);
            ts_st_writer_add(w, t->name, TS_BF16, t->ndim, t->shape, bf);
        } else {
            ts_st_writer_add(w, t->name, TS_F32, t->ndim, t->shape, t->data);
        }
    }
    static const float other[2] = { 1, 2 };
    ts_st_writer_add(w, "visual.proj", TS_F32, 2, TS_SHAPE(1, 2), other);
    assert_int_equal(ts_st_write(w, path, NULL), TS_OK);
    ts_st_writer_free(w);

    ts_params *p1 = ts_params_new();
    ts_text m1;
    ts_text_init(&m1, p1, "", &cfg);
    assert_int_equal(ts_params_finalize(p1, 2, NULL), TS_OK);
    ts_err err = { 0 };
    assert_int_equal(ts_text_load(&m1, path, &err), TS_OK);
    for (int i = 0; i < ts_params_count(p1); i++) {
        ts_tensor *a = ts_params_get(p0, i), *b = ts_params_get(p1, i);
        for (int64_t k = 0; k < a->numel; k++) {
            float want = a == m0.tok_embed ? ts_bf16_to_f32(bf[k]) : ts_f32(a)[k];
            assert_true(ts_f32(b)[k] == want);
        }
    }
    /* Another vocabulary and depth: every mismatch named, nothing changed. */
    ts_text_cfg cfg2 = cfg;
    cfg2.vocab_size = 30;
    cfg2.layers = 3;
    ts_params *p2 = ts_params_new();
    ts_text m2;
    ts_text_init(&m2, p2, "", &cfg2);
    assert_int_equal(ts_params_finalize(p2, 3, NULL), TS_OK);
    float before = ts_f32(m2.pos_embed)[0];
    assert_int_equal(ts_text_load(&m2, path, &err), TS_ERR_MISMATCH);
    assert_non_null(strstr(err.msg, "token_embedding.weight: shape differs (model (30, 16), "
                                    "file (20, 16))"));
    assert_non_null(strstr(err.msg, "transformer.resblocks.2.ln_1.weight: missing"));
    assert_non_null(strstr(err.msg, path));
    assert_true(ts_f32(m2.pos_embed)[0] == before);
    free(bf);
    ts_text_free(&m0);
    ts_text_free(&m1);
    ts_text_free(&m2);
    ts_params_free(p0);
    ts_params_free(p1);
    ts_params_free(p2);
    unlink(path);
    rmdir(dir);
}

/* ---- masked language modelling ---- */

static void mlm_masking_statistics(void **state) {
    (void)state;
    enum { B = 400, L = 50 };
    int32_t *ids = malloc(B * L * sizeof *ids), *orig = malloc(B * L * sizeof *orig);
    int32_t *tg = malloc(B * L * sizeof *tg);
    uint8_t *sp = malloc(B * L);
    for (int i = 0; i < B * L; i++) {
        orig[i] = ids[i] = 10 + i % 17;
        sp[i] = i % L == 0 || i % L >= 40; /* start and padding */
    }
    ts_mlm_mask_cfg cfg = { .mask_prob = 0.15f, .p_mask = 0.8f, .p_random = 0.1f,
                            .mask_id = 99, .random_lo = 0, .random_hi = 98, .at_least_one = 1 };
    ts_rng r;
    ts_rng_seed(&r, 7);
    int64_t n = ts_mlm_mask(&r, &cfg, ids, tg, sp, B, L, -100);
    int64_t chosen = 0, masked = 0, kept = 0, changed = 0;
    for (int i = 0; i < B * L; i++) {
        if (tg[i] == -100) {
            assert_int_equal(ids[i], orig[i]);
            continue;
        }
        assert_false(sp[i]);
        assert_int_equal(tg[i], orig[i]);
        chosen++;
        if (ids[i] == 99) masked++;
        else if (ids[i] == orig[i]) kept++;
        else changed++;
        assert_true(ids[i] == 99 || (ids[i] >= 0 && ids[i] < 98));
    }
    assert_int_equal(n, chosen);
    double cand = B * 39.0;
    if (fabs(chosen / cand - 0.15) > 0.01) fail_msg("chosen %g", chosen / cand);
    if (fabs((double)masked / chosen - 0.8) > 0.03) fail_msg("masked %g", (double)masked / chosen);
    /* A random id can equal the original one (1 in 98). */
    if (fabs((double)(changed + kept) / chosen - 0.2) > 0.03) fail_msg("others");
    if (fabs((double)changed / chosen - 0.1) > 0.03)
        fail_msg("random %g", (double)changed / chosen);
    /* Every row has at least one chosen position. */
    for (int b = 0; b < B; b++) {
        int any = 0;
        for (int t = 0; t < L; t++) any |= tg[b * L + t] != -100;
        assert_true(any);
    }
    free(ids);
    free(orig);
    free(tg);
    free(sp);
}

static void mlm_head_tied_and_untied(void **state) {
    (void)state;
    for (int tied = 0; tied < 2; tied++) {
        ts_text_cfg cfg = tiny(0);
        cfg.out_dim = 0;
        ts_params *p = ts_params_new();
        ts_text m;
        ts_mlm_head h;
        ts_text_init(&m, p, "", &cfg);
        int before = ts_params_count(p);
        ts_mlm_head_init(&h, p, "mlm_head.", &m, tied);
        assert_int_equal(ts_params_count(p) - before, tied ? 5 : 6);
        assert_true((h.decoder == m.tok_embed) == tied);
        assert_int_equal(ts_params_find(p, "mlm_head.decoder.weight") == NULL, tied);
        assert_non_null(ts_params_find(p, "mlm_head.layer_norm.weight"));
        assert_int_equal(ts_params_finalize(p, 4, NULL), TS_OK);
        ts_ctx *c = ts_ctx_new(TS_CPU, 1 << 20, 1);
        static const int32_t a[] = { 18, 5, 6, 7, 19, 0, 0, 0 };
        ts_tensor *tok;
        ts_text_forward(c, &m, ids_of(c, a, 1, 8), NULL, &tok);
        ts_tensor *lg = ts_mlm_head_forward(c, &h, tok);
        assert_int_equal(lg->ndim, 3);
        assert_int_equal(ts_dim(lg, 2), 20);
        ts_tensor *y = ts_new(c, TS_I32, 1, TS_SHAPE(8));
        for (int i = 0; i < 8; i++) ts_i32(y)[i] = i == 2 ? 6 : -100;
        ts_tensor *loss = ts_cross_entropy(c, ts_reshape(c, lg, 2, TS_SHAPE(8, 20)), y, -100,
                                           0.0f);
        ts_backward(c, loss);
        /* The tied decoder's gradient reaches the token embedding's rows that were not read. */
        double g = 0;
        for (int ch = 0; ch < 16; ch++) g += fabs(ts_f32(m.tok_embed->grad)[1 * 16 + ch]);
        assert_true(tied ? g > 0 : g == 0);
        ts_ctx_free(c);
        ts_text_free(&m);
        ts_params_free(p);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(names_in_open_clip_order),
        cmocka_unit_test(counts_match_open_clip),
        cmocka_unit_test(init_as_open_clip),
        cmocka_unit_test(causal_and_padding),
        cmocka_unit_test(pooling_rows),
        cmocka_unit_test(recipe_section),
        cmocka_unit_test(load_copies_and_checks),
        cmocka_unit_test(mlm_masking_statistics),
        cmocka_unit_test(mlm_head_tied_and_untied),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
