/* Rows for the timm flavour of the ViT tower (vision/vit.c): parity with timm's
 * VisionTransformer and loading a timm state_dict saved as safetensors by name
 * (tests/parity/cases_vit_timm.py).
 *
 * A tower row works as rows_vit.c's do: in0 the images (B, 3, H, W), in1 every parameter
 * flattened in timm's named_parameters() order, in2 those names joined by newlines (u8). The
 * row builds the tower on a throwaway parameter set, checks that its names and order are timm's,
 * and puts a slice of in1 in place of each parameter, so the gradient of in1 holds every
 * parameter's gradient. The load row writes in0 (the bytes of a safetensors file saved from a
 * timm model's state_dict) to a temporary file, builds a finalized tower and fills it with
 * ts_vit_load, the loader a user calls, then runs it on in1. The rows are parity-only.
 */
#define _POSIX_C_SOURCE 200809L /* mkstemp, fdopen */
#include "../rows.h"
#include "../../vision/vision.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The slot in m that holds parameter t. */
static ts_tensor **slot_of(ts_vit *m, const ts_tensor *t) {
    ts_tensor **top[] = { &m->class_embedding, &m->pos_embed, &m->conv1, &m->conv1_b,
                          &m->ln_post.w, &m->ln_post.b, &m->head_w, &m->head_b };
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
    TS_CHECK(0, "vit timm row: parameter %s has no slot in ts_vit", t->name);
    return NULL;
}

/* The table of cases_vit_timm.py's TOWERS: image (H, W), patch, width, layers, heads,
 * mlp_ratio, classes, pool. */
static ts_vit_cfg tower(int h, int w, int patch, int width, int layers, int heads, float mlp,
                        int classes, ts_vit_pool pool) {
    return (ts_vit_cfg){ .image_h = h, .image_w = w, .patch = patch, .width = width,
                         .layers = layers, .heads = heads, .mlp_ratio = mlp, .out_dim = classes,
                         .act = TS_ACT_GELU, .pool = pool, .ln_eps = 1e-6f, .drop_path = 0.0f,
                         .flavour = TS_VIT_TIMM };
}

/* Run the tower of cfg on in[0] with the parameters of in[1]; tokens selects the output. */
static ts_tensor *timm_row(ts_ctx *c, ts_tensor **in, ts_vit_cfg cfg, int tokens) {
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
                 "vit timm row: parameter %d is %s, timm has %.*s here", i, t->name,
                 (int)(nlen - pos < 60 ? nlen - pos : 60), names + pos);
        pos += (int64_t)k + 1;
        *slot_of(&m, t) =
            ts_reshape(c, ts_slice(c, in[1], 0, off, off + t->numel), t->ndim, t->shape);
        off += t->numel;
    }
    TS_CHECK(off == in[1]->numel && pos >= nlen,
             "vit timm row: %lld parameter values and %lld name bytes used, the case has %lld "
             "and %lld",
             (long long)off, (long long)pos, (long long)in[1]->numel, (long long)nlen);
    TS_CHECK(off == ts_vit_param_count(&cfg),
             "vit timm row: ts_vit_param_count %lld, registered %lld",
             (long long)ts_vit_param_count(&cfg), (long long)off);
    ts_tensor *seq = NULL;
    ts_tensor *y = ts_vit_forward(c, &m, in[0], tokens ? &seq : NULL);
    ts_vit_free(&m);
    ts_params_free(p);
    return tokens ? seq : y;
}

static ts_tensor *fn_tok(ts_ctx *c, ts_tensor **in) {
    return timm_row(c, in, tower(32, 32, 8, 32, 2, 4, 4.0f, 10, TS_VIT_POOL_TOKEN), 0);
}
static ts_tensor *fn_avg(ts_ctx *c, ts_tensor **in) {
    return timm_row(c, in, tower(32, 32, 8, 32, 2, 4, 4.0f, 10, TS_VIT_POOL_MEAN), 0);
}
static ts_tensor *fn_tok_nohead_rect(ts_ctx *c, ts_tensor **in) {
    return timm_row(c, in, tower(24, 40, 8, 24, 1, 3, 2.0f, 0, TS_VIT_POOL_TOKEN), 0);
}
static ts_tensor *fn_tok_tokens(ts_ctx *c, ts_tensor **in) {
    return timm_row(c, in, tower(32, 32, 8, 32, 2, 4, 4.0f, 10, TS_VIT_POOL_TOKEN), 1);
}
static ts_tensor *fn_patch7_avg(ts_ctx *c, ts_tensor **in) {
    return timm_row(c, in, tower(28, 21, 7, 16, 2, 2, 4.0f, 5, TS_VIT_POOL_MEAN), 0);
}

/* ---- a timm state_dict in safetensors: in0 the file's bytes (u8), in1 images (B, 3, 24, 24) */

static ts_tensor *fn_load(ts_ctx *c, ts_tensor **in) {
    char path[] = "/tmp/tessera-vit-timm-XXXXXX";
    int fd = mkstemp(path);
    TS_CHECK(fd >= 0, "vit timm load row: cannot create a temporary file");
    FILE *f = fdopen(fd, "wb");
    TS_CHECK(f && fwrite(in[0]->data, 1, (size_t)in[0]->numel, f) == (size_t)in[0]->numel &&
                 fclose(f) == 0,
             "vit timm load row: cannot write %s", path);
    /* The file holds a 4x4 grid (16x16 images, patch 4); the tower runs on 24x24. */
    ts_vit_cfg cfg = tower(24, 24, 4, 16, 2, 2, 4.0f, 7, TS_VIT_POOL_TOKEN);
    ts_params *p = ts_params_new();
    ts_vit m;
    ts_vit_init(&m, p, "", &cfg);
    ts_err err = { 0 };
    TS_CHECK(ts_params_finalize(p, 1, &err) == TS_OK, "%s", err.msg);
    ts_status st = ts_vit_load(&m, path, &err);
    unlink(path);
    TS_CHECK(st == TS_OK, "vit timm load row: %s", err.msg);
    /* The loaded values move to step-arena copies, so the parameter set can go before the
     * parity test pulls dy back to the images. */
    for (int i = 0; i < ts_params_count(p); i++) {
        ts_tensor *t = ts_params_get(p, i), *v = ts_new_f32(c, t->ndim, t->shape);
        memcpy(ts_f32(v), ts_f32(t), (size_t)t->numel * sizeof(float));
        *slot_of(&m, t) = v;
    }
    ts_tensor *y = ts_vit_forward(c, &m, in[1], NULL);
    ts_vit_free(&m);
    ts_params_free(p);
    return y;
}

const test_row rows_vit_timm[] = {
    { "vit_timm_tok", -1, NULL, fn_tok, 0, 1 },
    { "vit_timm_avg", -1, NULL, fn_avg, 0, 1 },
    { "vit_timm_tok_nohead_rect", -1, NULL, fn_tok_nohead_rect, 0, 1 },
    { "vit_timm_tok_tokens", -1, NULL, fn_tok_tokens, 0, 1 },
    { "vit_timm_patch7_avg", -1, NULL, fn_patch7_avg, 0, 1 },
    { "vit_timm_load_safetensors", -1, NULL, fn_load, 0, 1 },
    ROW_END,
};
