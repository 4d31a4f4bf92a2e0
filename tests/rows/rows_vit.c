/* Rows for the ViT image tower (vision/vit.c): parity with open_clip's VisionTransformer, its
 * resize_pos_embed and the parameter counts of its model configs (tests/parity/cases_vit.py).
 *
 * A tower row takes the images (B, 3, H, W), every parameter flattened in open_clip's
 * named_parameters() order (in1) and those names joined by newlines (in2, u8). It builds the
 * tower with ts_vit_init on a throwaway parameter set (for the names and shapes), checks that
 * the names and their order are open_clip's, and puts a slice of in1 in place of each
 * parameter, so the gradient of in1 holds every parameter's gradient. The rows are parity-only:
 * the blocks inside have their own gradient-check rows.
 */
#include "../rows.h"
#include "../../vision/vision.h"

#include <string.h>

/* The slot in m that holds parameter t, in the order of ts_vit_init's registration. */
static ts_tensor **slot_of(ts_vit *m, const ts_tensor *t) {
    ts_tensor **top[] = { &m->class_embedding, &m->pos_embed, &m->proj, &m->conv1,
                          &m->ln_pre.w, &m->ln_pre.b, &m->ln_post.w, &m->ln_post.b };
    for (size_t k = 0; k < sizeof top / sizeof top[0]; k++)
        if (*top[k] == t) return top[k];
    for (int l = 0; l < m->cfg.layers; l++) {
        ts_nn_block *b = &m->blocks[l];
        ts_tensor **bt[] = { &b->ln_1.w, &b->ln_1.b, &b->attn.in_w, &b->attn.in_b,
                             &b->attn.out.w, &b->attn.out.b, &b->ln_2.w, &b->ln_2.b,
                             &b->mlp.fc.w, &b->mlp.fc.b, &b->mlp.proj.w, &b->mlp.proj.b };
        for (size_t k = 0; k < sizeof bt / sizeof bt[0]; k++)
            if (*bt[k] == t) return bt[k];
    }
    TS_CHECK(0, "vit row: parameter %s has no slot in ts_vit", t->name);
    return NULL;
}

/* Run the tower of cfg on in[0] with the parameters of in[1]; tokens selects the output. */
static ts_tensor *vit_row(ts_ctx *c, ts_tensor **in, ts_vit_cfg cfg, int tokens) {
    ts_params *p = ts_params_new();
    ts_vit m;
    ts_vit_init(&m, p, "", &cfg);
    const char *names = (const char *)in[2]->data;
    int64_t nlen = in[2]->numel, pos = 0, off = 0;
    for (int i = 0; i < ts_params_count(p); i++) {
        ts_tensor *t = ts_params_get(p, i);
        size_t k = strlen(t->name);
        TS_CHECK(pos + (int64_t)k <= nlen && memcmp(names + pos, t->name, k) == 0 &&
                     (pos + (int64_t)k == nlen || names[pos + k] == '\n'),
                 "vit row: parameter %d is %s, open_clip has %.*s here", i, t->name,
                 (int)(nlen - pos < 60 ? nlen - pos : 60), names + pos);
        pos += (int64_t)k + 1;
        ts_tensor *v = ts_reshape(c, ts_slice(c, in[1], 0, off, off + t->numel), t->ndim,
                                  t->shape);
        *slot_of(&m, t) = v;
        off += t->numel;
    }
    TS_CHECK(off == in[1]->numel && pos >= nlen,
             "vit row: %lld parameter values and %lld name bytes used, the case has %lld and %lld",
             (long long)off, (long long)pos, (long long)in[1]->numel, (long long)nlen);
    TS_CHECK(off == ts_vit_param_count(&cfg), "vit row: ts_vit_param_count %lld, registered %lld",
             (long long)ts_vit_param_count(&cfg), (long long)off);
    ts_tensor *seq = NULL;
    ts_tensor *y = ts_vit_forward(c, &m, in[0], tokens ? &seq : NULL);
    ts_vit_free(&m);
    ts_params_free(p);
    return tokens ? seq : y;
}

/* The table of cases_vit.py's TOWERS: image (H, W), patch, width, layers, heads, mlp_ratio,
 * out_dim, activation, pool (the batch comes with the images). */
static ts_vit_cfg tower(int h, int w, int patch, int width, int layers, int heads, float mlp,
                        int out, ts_act act, ts_vit_pool pool) {
    return (ts_vit_cfg){ .image_h = h, .image_w = w, .patch = patch, .width = width,
                         .layers = layers, .heads = heads, .mlp_ratio = mlp, .out_dim = out,
                         .act = act, .pool = pool, .ln_eps = 1e-5f, .drop_path = 0.0f };
}

static ts_tensor *fn_gelu_tok(ts_ctx *c, ts_tensor **in) {
    return vit_row(c, in, tower(32, 32, 8, 32, 2, 4, 4.0f, 16, TS_ACT_GELU, TS_VIT_POOL_TOKEN), 0);
}
static ts_tensor *fn_quick_tok(ts_ctx *c, ts_tensor **in) {
    return vit_row(c, in,
                   tower(32, 32, 8, 32, 2, 4, 4.0f, 16, TS_ACT_QUICK_GELU, TS_VIT_POOL_TOKEN), 0);
}
static ts_tensor *fn_gelu_avg(ts_ctx *c, ts_tensor **in) {
    return vit_row(c, in, tower(32, 32, 8, 32, 2, 4, 4.0f, 16, TS_ACT_GELU, TS_VIT_POOL_MEAN), 0);
}
static ts_tensor *fn_quick_avg_rect(ts_ctx *c, ts_tensor **in) {
    return vit_row(c, in,
                   tower(24, 40, 8, 24, 1, 3, 2.0f, 12, TS_ACT_QUICK_GELU, TS_VIT_POOL_MEAN), 0);
}
static ts_tensor *fn_gelu_tok_tokens(ts_ctx *c, ts_tensor **in) {
    return vit_row(c, in, tower(32, 32, 8, 32, 2, 4, 4.0f, 16, TS_ACT_GELU, TS_VIT_POOL_TOKEN), 1);
}
static ts_tensor *fn_patch7(ts_ctx *c, ts_tensor **in) {
    return vit_row(c, in, tower(28, 21, 7, 16, 2, 2, 4.0f, 8, TS_ACT_GELU, TS_VIT_POOL_TOKEN), 0);
}

/* ---- positional-table resampling: in0 (1 + side^2, C) -> (1 + gh gw, C) ---- */

static ts_tensor *resize_row(ts_ctx *c, ts_tensor **in, int side, int gh, int gw, int aa) {
    int C = (int)ts_dim(in[0], 1);
    TS_CHECK(ts_dim(in[0], 0) == 1 + side * side, "resize row: table has %lld rows",
             (long long)ts_dim(in[0], 0));
    ts_tensor *y = ts_new_f32(c, 2, TS_SHAPE(1 + gh * gw, C));
    ts_vit_resize_pos_embed(ts_f32(y), ts_f32(in[0]), 1, side, side, gh, gw, C, aa);
    return y;
}
static ts_tensor *fn_resize_4_6(ts_ctx *c, ts_tensor **in) { return resize_row(c, in, 4, 6, 6, 1); }
static ts_tensor *fn_resize_6_4(ts_ctx *c, ts_tensor **in) { return resize_row(c, in, 6, 4, 4, 1); }
static ts_tensor *fn_resize_4_3x6(ts_ctx *c, ts_tensor **in) {
    return resize_row(c, in, 4, 3, 6, 1);
}
static ts_tensor *fn_resize_4_6_plain(ts_ctx *c, ts_tensor **in) {
    return resize_row(c, in, 4, 6, 6, 0);
}
static ts_tensor *fn_resize_7_16(ts_ctx *c, ts_tensor **in) {
    return resize_row(c, in, 7, 16, 16, 1);
}

/* ---- parameter counts: in0 i64 open_clip's counts -> ours minus theirs (reference zeros) ---- */

static ts_tensor *fn_param_counts(ts_ctx *c, ts_tensor **in) {
    static const char *const names[] = { "ViT-B-32", "ViT-B-16", "ViT-L-14", "ViT-S-16",
                                         "ViT-B-16-quickgelu" };
    int n = (int)(sizeof names / sizeof names[0]);
    TS_CHECK(in[0]->dtype == TS_I64 && in[0]->numel == n, "param count row: %lld counts",
             (long long)in[0]->numel);
    ts_tensor *y = ts_new_f32(c, 1, TS_SHAPE(n));
    for (int i = 0; i < n; i++) {
        ts_vit_cfg cfg;
        ts_err err = { 0 };
        TS_CHECK(ts_vit_cfg_named(names[i], &cfg, &err) == TS_OK, "%s", err.msg);
        int64_t ours = ts_vit_param_count(&cfg), theirs = ((const int64_t *)in[0]->data)[i];
        printf("  %-20s tessera %12lld  open_clip %12lld\n", names[i], (long long)ours,
               (long long)theirs);
        ts_f32(y)[i] = (float)(ours - theirs);
    }
    return y;
}

const test_row rows_vit[] = {
    { "vit_gelu_tok", -1, NULL, fn_gelu_tok, 0, 1 },
    { "vit_quickgelu_tok", -1, NULL, fn_quick_tok, 0, 1 },
    { "vit_gelu_avg", -1, NULL, fn_gelu_avg, 0, 1 },
    { "vit_quickgelu_avg_rect", -1, NULL, fn_quick_avg_rect, 0, 1 },
    { "vit_gelu_tok_tokens", -1, NULL, fn_gelu_tok_tokens, 0, 1 },
    { "vit_patch7_tok", -1, NULL, fn_patch7, 0, 1 },
    { "vit_pos_resize_4_to_6", -1, NULL, fn_resize_4_6, 0, 1 },
    { "vit_pos_resize_6_to_4", -1, NULL, fn_resize_6_4, 0, 1 },
    { "vit_pos_resize_4_to_3x6", -1, NULL, fn_resize_4_3x6, 0, 1 },
    { "vit_pos_resize_4_to_6_plain", -1, NULL, fn_resize_4_6_plain, 0, 1 },
    { "vit_pos_resize_7_to_16", -1, NULL, fn_resize_7_16, 0, 1 },
    { "vit_param_counts", -1, NULL, fn_param_counts, 0, 1 },
    ROW_END,
};
