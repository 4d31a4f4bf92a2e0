/* Rows for CSWin Transformer: the fused stripe attention op (core/cpu/op_stripe_attention.c),
 * checked by finite differences and against a plain-torch rewrite of the official code, and
 * whole CSWin models (vision/cswin.c) against the same rewrite (tests/parity/cases_cswin.py).
 *
 * Op rows: in0 qkv (B, H*W, 3C), in1 the LePE weight (C, 1, 3, 3), in2 its bias (C). The table
 * below and cases_cswin.py's OPS are the same: two-branch stripes of width 2 on a rectangular
 * map, stripes one token wide, stripes of 3 with a weight but no bias, no LePE with a custom
 * scale, one window over the whole map of 72 tokens (more than one query block of 64), and
 * 80-token columns beside 2-token rows (branches with windows of different lengths).
 *
 * Model rows take the images (B, 3, H, W), every parameter flattened in the official
 * named_parameters() order (in1) and the names joined by newlines (in2, u8), as the ViT rows do:
 * the model is built on a throwaway parameter set, its names and order are checked against the
 * reference's, and a slice of in1 stands in for each parameter. They are parity-only: the ops
 * inside have gradient-check rows of their own.
 */
#include "../rows.h"
#include "../../vision/vision.h"

#include <string.h>

/* ---- the op ---- */

typedef struct op_case {
    int64_t B, H, W, C, heads, sw;
    int lepe; /* 2 weight and bias, 1 weight only, 0 none */
    float scale;
} op_case;

static const op_case OP_SW2 = { 2, 4, 6, 16, 4, 2, 2, 0.0f };
static const op_case OP_SW1_RECT = { 1, 6, 5, 12, 2, 1, 2, 0.0f };
static const op_case OP_SW3_NOBIAS = { 2, 6, 6, 8, 2, 3, 1, 0.0f };
static const op_case OP_NOLEPE = { 1, 6, 4, 8, 4, 2, 0, 0.3f };
static const op_case OP_WHOLE = { 2, 9, 8, 8, 2, 0, 2, 0.0f };
static const op_case OP_LONG = { 1, 80, 2, 8, 2, 1, 2, 0.0f };

static int op_make(ts_ctx *c, ts_rng *r, ts_tensor **in, const op_case *k) {
    in[0] = row_randn(c, r, 3, TS_SHAPE(k->B, k->H * k->W, 3 * k->C), 1.0f, 1);
    if (k->lepe >= 1) in[1] = row_randn(c, r, 4, TS_SHAPE(k->C, 1, 3, 3), 0.5f, 1);
    if (k->lepe >= 2) in[2] = row_randn(c, r, 1, TS_SHAPE(k->C), 1.0f, 1);
    return 1 + k->lepe;
}

static ts_tensor *op_run(ts_ctx *c, ts_tensor **in, const op_case *k) {
    return ts_stripe_attention(c, in[0], k->lepe >= 1 ? in[1] : NULL,
                               k->lepe >= 2 ? in[2] : NULL, k->H, k->W, k->heads, k->sw,
                               k->scale);
}

#define OP_ROW(fname, cfg)                                                                   \
    static int mk_##fname(ts_ctx *c, ts_rng *r, ts_tensor **in) {                            \
        return op_make(c, r, in, &cfg);                                                      \
    }                                                                                        \
    static ts_tensor *fn_##fname(ts_ctx *c, ts_tensor **in) { return op_run(c, in, &cfg); }

OP_ROW(sw2, OP_SW2)
OP_ROW(sw1_rect, OP_SW1_RECT)
OP_ROW(sw3_nobias, OP_SW3_NOBIAS)
OP_ROW(nolepe, OP_NOLEPE)
OP_ROW(whole, OP_WHOLE)
OP_ROW(long_cols, OP_LONG)

/* ---- whole models ---- */

/* The slot in m that holds parameter t. */
static ts_tensor **slot_of(ts_cswin *m, const ts_tensor *t) {
    ts_tensor **top[] = { &m->stem_w, &m->stem_b, &m->stem_norm.w, &m->stem_norm.b,
                          &m->norm.w, &m->norm.b, &m->head.w, &m->head.b };
    for (size_t k = 0; k < sizeof top / sizeof top[0]; k++)
        if (*top[k] == t) return top[k];
    for (int s = 0; s < 4; s++) {
        if (s > 0) {
            ts_cswin_merge *mg = &m->merge[s - 1];
            ts_tensor **mt[] = { &mg->conv_w, &mg->conv_b, &mg->norm.w, &mg->norm.b };
            for (size_t k = 0; k < sizeof mt / sizeof mt[0]; k++)
                if (*mt[k] == t) return mt[k];
        }
        for (int l = 0; l < m->cfg.depth[s]; l++) {
            ts_cswin_block *b = &m->blocks[s][l];
            ts_tensor **bt[] = { &b->qkv.w, &b->qkv.b, &b->norm1.w, &b->norm1.b, &b->proj.w,
                                 &b->proj.b, &b->get_v_w[0], &b->get_v_b[0], &b->get_v_w[1],
                                 &b->get_v_b[1], &b->mlp.fc.w, &b->mlp.fc.b, &b->mlp.proj.w,
                                 &b->mlp.proj.b, &b->norm2.w, &b->norm2.b };
            for (size_t k = 0; k < sizeof bt / sizeof bt[0]; k++)
                if (*bt[k] == t) return bt[k];
        }
    }
    TS_CHECK(0, "cswin row: parameter %s has no slot in ts_cswin", t->name);
    return NULL;
}

/* Run the model of cfg on in[0] with the parameters of in[1]; tokens selects the output. */
static ts_tensor *cswin_row(ts_ctx *c, ts_tensor **in, ts_cswin_cfg cfg, int tokens) {
    ts_params *p = ts_params_new();
    ts_cswin m;
    ts_err err = { 0 };
    TS_CHECK(ts_cswin_init(&m, p, "", &cfg, &err) == TS_OK, "%s", err.msg);
    const char *names = (const char *)in[2]->data;
    int64_t nlen = in[2]->numel, pos = 0, off = 0;
    for (int i = 0; i < ts_params_count(p); i++) {
        ts_tensor *t = ts_params_get(p, i);
        size_t k = strlen(t->name);
        TS_CHECK(pos + (int64_t)k <= nlen && memcmp(names + pos, t->name, k) == 0 &&
                     (pos + (int64_t)k == nlen || names[pos + k] == '\n'),
                 "cswin row: parameter %d is %s, the reference has %.*s here", i, t->name,
                 (int)(nlen - pos < 60 ? nlen - pos : 60), names + pos);
        pos += (int64_t)k + 1;
        *slot_of(&m, t) = ts_reshape(c, ts_slice(c, in[1], 0, off, off + t->numel), t->ndim,
                                     t->shape);
        off += t->numel;
    }
    TS_CHECK(off == in[1]->numel && pos >= nlen,
             "cswin row: %lld parameter values and %lld name bytes used, the case has %lld and "
             "%lld", (long long)off, (long long)pos, (long long)in[1]->numel, (long long)nlen);
    TS_CHECK(off == ts_cswin_param_count(&cfg),
             "cswin row: ts_cswin_param_count %lld, registered %lld",
             (long long)ts_cswin_param_count(&cfg), (long long)off);
    ts_tensor *seq = NULL;
    ts_tensor *y = ts_cswin_forward(c, &m, in[0], tokens ? &seq : NULL);
    ts_cswin_free(&m);
    ts_params_free(p);
    return tokens ? seq : y;
}

/* The table of cases_cswin.py's MODELS: image (H, W), embed_dim, depths, heads, stripe widths,
 * classes (the batch comes with the images). */
static ts_cswin_cfg model(int h, int w, int dim, const int depth[4], const int heads[4],
                          const int split[4], int classes) {
    ts_cswin_cfg cfg = { .image_h = h, .image_w = w, .embed_dim = dim, .mlp_ratio = 4.0f,
                         .num_classes = classes, .ln_eps = 1e-5f, .drop_path = 0.0f };
    for (int s = 0; s < 4; s++) {
        cfg.depth[s] = depth[s];
        cfg.heads[s] = heads[s];
        cfg.split[s] = split[s];
    }
    return cfg;
}

static ts_tensor *fn_tiny_64(ts_ctx *c, ts_tensor **in) {
    return cswin_row(c, in, model(64, 64, 16, (const int[]){ 1, 2, 1, 1 },
                                  (const int[]){ 2, 4, 4, 8 }, (const int[]){ 1, 2, 4, 2 }, 10),
                     0);
}
static ts_tensor *fn_tiny_32_nohead(ts_ctx *c, ts_tensor **in) {
    return cswin_row(c, in, model(32, 32, 8, (const int[]){ 1, 1, 1, 1 },
                                  (const int[]){ 2, 2, 4, 4 }, (const int[]){ 2, 2, 1, 1 }, 0),
                     0);
}
static ts_tensor *fn_tiny_32_tokens(ts_ctx *c, ts_tensor **in) {
    return cswin_row(c, in, model(32, 32, 8, (const int[]){ 1, 1, 1, 1 },
                                  (const int[]){ 2, 2, 4, 4 }, (const int[]){ 2, 2, 1, 1 }, 0),
                     1);
}
static ts_tensor *fn_tiny_rect(ts_ctx *c, ts_tensor **in) {
    return cswin_row(c, in, model(32, 64, 8, (const int[]){ 1, 1, 1, 1 },
                                  (const int[]){ 2, 2, 2, 4 }, (const int[]){ 2, 4, 2, 1 }, 6),
                     0);
}

/* ---- parameter counts: in0 i64 the reference's counts -> ours minus theirs (zeros) ---- */

static ts_tensor *fn_param_counts(ts_ctx *c, ts_tensor **in) {
    static const char *const names[] = { "CSWin-T", "CSWin-S", "CSWin-B", "CSWin-L" };
    int n = (int)(sizeof names / sizeof names[0]);
    TS_CHECK(in[0]->dtype == TS_I64 && in[0]->numel == n, "param count row: %lld counts",
             (long long)in[0]->numel);
    ts_tensor *y = ts_new_f32(c, 1, TS_SHAPE(n));
    for (int i = 0; i < n; i++) {
        ts_cswin_cfg cfg;
        ts_err err = { 0 };
        TS_CHECK(ts_cswin_cfg_named(names[i], &cfg, &err) == TS_OK, "%s", err.msg);
        int64_t ours = ts_cswin_param_count(&cfg), theirs = ((const int64_t *)in[0]->data)[i];
        printf("  %-8s tessera %11lld  reference %11lld\n", names[i], (long long)ours,
               (long long)theirs);
        ts_f32(y)[i] = (float)(ours - theirs);
    }
    return y;
}

const test_row rows_cswin[] = {
    { "stripe_attention_sw2", TS_OP_STRIPE_ATTENTION, mk_sw2, fn_sw2, 0, 1 },
    { "stripe_attention_sw1_rect", TS_OP_STRIPE_ATTENTION, mk_sw1_rect, fn_sw1_rect, 0, 1 },
    { "stripe_attention_sw3_nobias", TS_OP_STRIPE_ATTENTION, mk_sw3_nobias, fn_sw3_nobias, 0, 1 },
    { "stripe_attention_nolepe", TS_OP_STRIPE_ATTENTION, mk_nolepe, fn_nolepe, 0, 1 },
    { "stripe_attention_whole", TS_OP_STRIPE_ATTENTION, mk_whole, fn_whole, 0, 1 },
    { "stripe_attention_long", TS_OP_STRIPE_ATTENTION, mk_long_cols, fn_long_cols, 0, 1 },
    { "cswin_tiny_64", -1, NULL, fn_tiny_64, 0, 1 },
    { "cswin_tiny_32_nohead", -1, NULL, fn_tiny_32_nohead, 0, 1 },
    { "cswin_tiny_32_tokens", -1, NULL, fn_tiny_32_tokens, 0, 1 },
    { "cswin_tiny_rect", -1, NULL, fn_tiny_rect, 0, 1 },
    { "cswin_param_counts", -1, NULL, fn_param_counts, 0, 1 },
    ROW_END,
};
