/* Rows for the CLIP text tower (text/text_encoder.c): parity with open_clip's TextTransformer,
 * the text half of its CLIP model, and the parameter counts of its model configs
 * (tests/parity/cases_text.py).
 *
 * A tower row takes the ids (B, L) i32, every parameter flattened in the reference module's
 * named_parameters() order (in1) and those names joined by newlines (in2, u8). It builds the
 * tower with ts_text_init on a throwaway parameter set (for the names and shapes), checks the
 * names against the reference (in order for TextTransformer; by name for CLIP, whose order
 * differs), and puts a slice of in1 in place of each parameter, so the gradient of in1 holds
 * every parameter's gradient. The rows are parity-only: the blocks inside have their own
 * gradient-check rows.
 */
#include "../rows.h"
#include "../../text/text.h"

#include <string.h>

/* The slot in m that holds parameter t. */
static ts_tensor **slot_of(ts_text *m, const ts_tensor *t) {
    ts_tensor **top[] = { &m->pos_embed, &m->proj, &m->tok_embed, &m->ln_final.w,
                          &m->ln_final.b };
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
    TS_CHECK(0, "text row: parameter %s has no slot in ts_text", t->name);
    return NULL;
}

/* Run the tower of cfg on in[0] with the parameters of in[1] named by in[2]. in_order: the
 * names must come in our registration order; otherwise each is looked up by name. */
static ts_tensor *text_row(ts_ctx *c, ts_tensor **in, ts_text_cfg cfg, int tokens, int in_order) {
    ts_params *p = ts_params_new();
    ts_text m;
    ts_text_init(&m, p, "", &cfg);
    const char *names = (const char *)in[2]->data;
    int64_t nlen = in[2]->numel, pos = 0, off = 0;
    int n = ts_params_count(p), used = 0;
    for (int i = 0; i < n && pos < nlen; i++) {
        const char *nl = memchr(names + pos, '\n', (size_t)(nlen - pos));
        int64_t k = nl ? nl - (names + pos) : nlen - pos;
        char name[256];
        TS_CHECK(k < (int64_t)sizeof name, "text row: a name of %lld bytes", (long long)k);
        memcpy(name, names + pos, (size_t)k);
        name[k] = 0;
        pos += k + 1;
        ts_tensor *t = in_order ? ts_params_get(p, i) : ts_params_find(p, name);
        TS_CHECK(t && strcmp(t->name, name) == 0, "text row: parameter %d is %s, open_clip has %s",
                 i, t ? t->name : "(none of that name)", name);
        ts_tensor *v = ts_reshape(c, ts_slice(c, in[1], 0, off, off + t->numel), t->ndim,
                                  t->shape);
        *slot_of(&m, t) = v;
        off += t->numel;
        used++;
    }
    TS_CHECK(used == n && off == in[1]->numel && pos >= nlen,
             "text row: %d of %d parameters, %lld of %lld values used", used, n, (long long)off,
             (long long)in[1]->numel);
    TS_CHECK(off == ts_text_param_count(&cfg),
             "text row: ts_text_param_count %lld, registered %lld",
             (long long)ts_text_param_count(&cfg), (long long)off);
    ts_tensor *seq = NULL;
    ts_tensor *y = ts_text_forward(c, &m, in[0], NULL, tokens ? &seq : NULL);
    ts_text_free(&m);
    ts_params_free(p);
    return tokens ? seq : y;
}

/* The table of cases_text.py's TOWERS: context, vocab, width, layers, heads, mlp_ratio,
 * out_dim, activation, causal, pad_mask, pooling, eos_id (the batch and L come with the ids). */
static ts_text_cfg tower(int ctx, int vocab, int width, int layers, int heads, float mlp, int out,
                         ts_act act, int causal, int pad_mask, ts_text_pool pool, int eos) {
    return (ts_text_cfg){ .context_length = ctx, .vocab_size = vocab, .width = width,
                          .layers = layers, .heads = heads, .mlp_ratio = mlp, .out_dim = out,
                          .act = act, .causal = causal, .pad_mask = pad_mask, .pad_id = 0,
                          .eos_id = eos, .pool = pool, .ln_eps = 1e-5f, .drop_path = 0.0f };
}

static ts_tensor *fn_gelu_causal(ts_ctx *c, ts_tensor **in) {
    return text_row(c, in, tower(12, 50, 32, 2, 4, 4.0f, 16, TS_ACT_GELU, 1, 0,
                                 TS_TEXT_POOL_ARGMAX, 0), 0, 1);
}
static ts_tensor *fn_quick_causal(ts_ctx *c, ts_tensor **in) {
    return text_row(c, in, tower(12, 50, 32, 2, 4, 4.0f, 16, TS_ACT_QUICK_GELU, 1, 0,
                                 TS_TEXT_POOL_ARGMAX, 0), 0, 1);
}
static ts_tensor *fn_gelu_causal_tokens(ts_ctx *c, ts_tensor **in) {
    return text_row(c, in, tower(10, 40, 24, 2, 3, 4.0f, 8, TS_ACT_GELU, 1, 0,
                                 TS_TEXT_POOL_ARGMAX, 0), 1, 1);
}
static ts_tensor *fn_quick_mlp2(ts_ctx *c, ts_tensor **in) {
    return text_row(c, in, tower(7, 40, 16, 1, 2, 2.0f, 8, TS_ACT_QUICK_GELU, 1, 0,
                                 TS_TEXT_POOL_ARGMAX, 0), 0, 1);
}
static ts_tensor *fn_gelu_bidir_pad(ts_ctx *c, ts_tensor **in) {
    return text_row(c, in, tower(12, 50, 32, 2, 4, 4.0f, 16, TS_ACT_GELU, 0, 1,
                                 TS_TEXT_POOL_FIRST, 0), 1, 1);
}
static ts_tensor *fn_quick_bidir_eos(ts_ctx *c, ts_tensor **in) {
    return text_row(c, in, tower(12, 50, 32, 2, 4, 4.0f, 0, TS_ACT_QUICK_GELU, 0, 1,
                                 TS_TEXT_POOL_EOS, 49), 0, 1);
}
static ts_tensor *fn_gelu_bidir_nopad_last(ts_ctx *c, ts_tensor **in) {
    return text_row(c, in, tower(12, 30, 16, 1, 4, 4.0f, 8, TS_ACT_GELU, 0, 0,
                                 TS_TEXT_POOL_LAST, 0), 0, 1);
}
/* cases_text.py's CLIP_SPEC: the text tower of a CLIP model with quick_gelu. */
static ts_tensor *fn_clip_encode_text(ts_ctx *c, ts_tensor **in) {
    return text_row(c, in, tower(12, 50, 32, 2, 4, 4.0f, 16, TS_ACT_QUICK_GELU, 1, 0,
                                 TS_TEXT_POOL_ARGMAX, 0), 0, 0);
}

/* ---- parameter counts: in0 i64 open_clip's counts -> ours minus theirs (reference zeros) ---- */

static ts_tensor *fn_param_counts(ts_ctx *c, ts_tensor **in) {
    static const char *const names[] = { "ViT-B-32", "ViT-L-14", "ViT-H-14", "ViT-S-16",
                                         "ViT-B-16-plus", "ViT-B-16-quickgelu" };
    int n = (int)(sizeof names / sizeof names[0]);
    TS_CHECK(in[0]->dtype == TS_I64 && in[0]->numel == n, "text param count row: %lld counts",
             (long long)in[0]->numel);
    ts_tensor *y = ts_new_f32(c, 1, TS_SHAPE(n));
    for (int i = 0; i < n; i++) {
        ts_text_cfg cfg;
        ts_err err = { 0 };
        TS_CHECK(ts_text_cfg_named(names[i], &cfg, &err) == TS_OK, "%s", err.msg);
        int64_t ours = ts_text_param_count(&cfg), theirs = ((const int64_t *)in[0]->data)[i];
        printf("  %-20s tessera %12lld  open_clip %12lld\n", names[i], (long long)ours,
               (long long)theirs);
        ts_f32(y)[i] = (float)(ours - theirs);
    }
    return y;
}

const test_row rows_text[] = {
    { "text_gelu_causal", -1, NULL, fn_gelu_causal, 0, 1 },
    { "text_quickgelu_causal", -1, NULL, fn_quick_causal, 0, 1 },
    { "text_gelu_causal_tokens", -1, NULL, fn_gelu_causal_tokens, 0, 1 },
    { "text_quickgelu_mlp2", -1, NULL, fn_quick_mlp2, 0, 1 },
    { "text_gelu_bidir_pad", -1, NULL, fn_gelu_bidir_pad, 0, 1 },
    { "text_quickgelu_bidir_eos", -1, NULL, fn_quick_bidir_eos, 0, 1 },
    { "text_gelu_bidir_nopad_last", -1, NULL, fn_gelu_bidir_nopad_last, 0, 1 },
    { "text_clip_encode_text", -1, NULL, fn_clip_encode_text, 0, 1 },
    { "text_param_counts", -1, NULL, fn_param_counts, 0, 1 },
    ROW_END,
};
