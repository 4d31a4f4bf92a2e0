/* Rows for MAE (vision/mae.c) and the video-clip pooling (vision/video.c): parity with a
 * plain-torch rewrite of facebookresearch/mae's models_mae.py and with open_clip's attentional
 * pooling written out in torch (tests/parity/cases_mae.py).
 *
 * An MAE row takes the images (N, 3, H, W), every trainable parameter flattened in
 * models_mae.py's named_parameters() order (in1), those names joined by newlines (in2, u8) and
 * the masking noise (N, L) (in3). It builds the model on a throwaway parameter set, finalises it
 * so the fixed sin-cos tables have a home (each side computes its own), checks the names and
 * their order, and puts a slice of in1 in place of each trainable parameter, so the gradient of
 * in1 holds every parameter's gradient. Video rows do the same with the pooling parameters.
 * All rows are parity-only: the ops inside have their own gradient-check rows.
 */
#include "../rows.h"
#include "../../vision/vision.h"

#include <stdio.h>
#include <string.h>

/* Every parameter slot of m, in registration order; returns how many (cap at least
 * 6 + 12 (layers + dec_layers) + 6). */
static int mae_slots(ts_mae *m, ts_tensor ***s) {
    int n = 0;
    ts_tensor **top[] = { &m->cls_token, &m->pos_embed, &m->mask_token, &m->dec_pos_embed,
                          &m->patch_w, &m->patch_b };
    for (size_t k = 0; k < sizeof top / sizeof top[0]; k++) s[n++] = top[k];
    for (int pass = 0; pass < 2; pass++) {
        int layers = pass ? m->cfg.dec_layers : m->cfg.layers;
        for (int l = 0; l < layers; l++) {
            ts_nn_block *b = pass ? &m->dec_blocks[l] : &m->blocks[l];
            ts_tensor **bt[] = { &b->ln_1.w, &b->ln_1.b, &b->attn.in_w, &b->attn.in_b,
                                 &b->attn.out.w, &b->attn.out.b, &b->ln_2.w, &b->ln_2.b,
                                 &b->mlp.fc.w, &b->mlp.fc.b, &b->mlp.proj.w, &b->mlp.proj.b };
            for (size_t k = 0; k < sizeof bt / sizeof bt[0]; k++) s[n++] = bt[k];
        }
        ts_tensor **after[] = { &m->norm.w, &m->norm.b, &m->dec_embed.w, &m->dec_embed.b };
        ts_tensor **dafter[] = { &m->dec_norm.w, &m->dec_norm.b, &m->dec_pred.w, &m->dec_pred.b };
        for (size_t k = 0; k < 4; k++) s[n++] = pass ? dafter[k] : after[k];
    }
    return n;
}

/* The slot that holds t, found among the slots. */
static ts_tensor **slot_of(ts_tensor ***slots, int n, const ts_tensor *t) {
    for (int i = 0; i < n; i++)
        if (*slots[i] == t) return slots[i];
    TS_CHECK(0, "row: parameter %s has no slot", t->name);
    return NULL;
}

/* Replace the trainable parameters of p (in order, names checked against in_names) by slices
 * of flat; buffers stay. Returns the values used. */
static int64_t bind_params(ts_ctx *c, ts_params *p, ts_tensor ***slots, int nslots,
                           const ts_tensor *flat, const ts_tensor *in_names) {
    const char *names = (const char *)in_names->data;
    int64_t nlen = in_names->numel, pos = 0, off = 0;
    for (int i = 0; i < ts_params_count(p); i++) {
        if (ts_params_flags(p, i) & TS_PARAM_BUFFER) continue;
        ts_tensor *t = ts_params_get(p, i);
        size_t k = strlen(t->name);
        TS_CHECK(pos + (int64_t)k <= nlen && memcmp(names + pos, t->name, k) == 0 &&
                     (pos + (int64_t)k == nlen || names[pos + k] == '\n'),
                 "row: parameter %d is %s, the reference has %.*s here", i, t->name,
                 (int)(nlen - pos < 60 ? nlen - pos : 60), names + pos);
        pos += (int64_t)k + 1;
        *slot_of(slots, nslots, t) =
            ts_reshape(c, ts_slice(c, flat, 0, off, off + t->numel), t->ndim, t->shape);
        off += t->numel;
    }
    TS_CHECK(off == flat->numel && pos >= nlen,
             "row: %lld parameter values and %lld name bytes used, the case has %lld and %lld",
             (long long)off, (long long)pos, (long long)flat->numel, (long long)nlen);
    return off;
}

/* ---- MAE ---- */

enum { OUT_LOSS, OUT_PRED, OUT_LATENT, OUT_MASK, OUT_IDS };

/* cases_mae.py's MAES table: image side, patch, width, layers, heads, decoder width, layers,
 * heads, mask ratio, norm_pix_loss (the batch comes with the images). */
static ts_mae_cfg mae_cfg(int image, int patch, int width, int layers, int heads, int dwidth,
                          int dlayers, int dheads, double ratio, int normpix) {
    return (ts_mae_cfg){ .image_h = image, .image_w = image, .patch = patch, .width = width,
                         .layers = layers, .heads = heads, .dec_width = dwidth,
                         .dec_layers = dlayers, .dec_heads = dheads, .mlp_ratio = 4.0f,
                         .ln_eps = 1e-6f, .mask_ratio = ratio, .norm_pix_loss = normpix };
}

static ts_tensor *mae_row(ts_ctx *c, ts_tensor **in, ts_mae_cfg cfg, int out) {
    ts_params *p = ts_params_new();
    ts_mae m;
    ts_mae_init(&m, p, "", &cfg);
    ts_err err = { 0 };
    TS_CHECK(ts_params_finalize(p, 1, &err) == TS_OK, "%s", err.msg);
    ts_mae_set_tables(&m);
    ts_tensor **slots[6 + 12 * 64 + 8];
    TS_CHECK(cfg.layers + cfg.dec_layers <= 64, "mae row: too many layers");
    int nslots = mae_slots(&m, slots);
    TS_CHECK(nslots == ts_params_count(p), "mae row: %d slots, %d parameters", nslots,
             ts_params_count(p));
    int64_t used = bind_params(c, p, slots, nslots, in[1], in[2]);
    TS_CHECK(used == ts_mae_param_count(&cfg), "mae row: ts_mae_param_count %lld, registered %lld",
             (long long)ts_mae_param_count(&cfg), (long long)used);
    ts_mae_out o = ts_mae_forward(c, &m, in[0], in[3]);
    ts_tensor *y = NULL;
    switch (out) {
    case OUT_LOSS: y = o.loss; break;
    case OUT_PRED: y = o.pred; break;
    case OUT_LATENT: y = o.latent; break;
    case OUT_MASK: y = o.mask; break;
    case OUT_IDS: {
        y = ts_new_f32(c, 2, o.ids_restore->shape);
        for (int64_t i = 0; i < y->numel; i++) ts_f32(y)[i] = (float)ts_i32(o.ids_restore)[i];
        break;
    }
    }
    ts_mae_free(&m);
    ts_params_free(p);
    return y;
}

#define TINY mae_cfg(16, 4, 16, 2, 2, 8, 2, 2, 0.75, 0)
#define NORMPIX mae_cfg(24, 8, 12, 1, 3, 16, 2, 4, 0.6, 1)
static ts_tensor *fn_tiny_pred(ts_ctx *c, ts_tensor **in) { return mae_row(c, in, TINY, OUT_PRED); }
static ts_tensor *fn_tiny_loss(ts_ctx *c, ts_tensor **in) { return mae_row(c, in, TINY, OUT_LOSS); }
static ts_tensor *fn_tiny_latent(ts_ctx *c, ts_tensor **in) {
    return mae_row(c, in, TINY, OUT_LATENT);
}
static ts_tensor *fn_normpix_loss(ts_ctx *c, ts_tensor **in) {
    return mae_row(c, in, NORMPIX, OUT_LOSS);
}
static ts_tensor *fn_normpix_pred(ts_ctx *c, ts_tensor **in) {
    return mae_row(c, in, NORMPIX, OUT_PRED);
}
static ts_tensor *fn_tiny_mask(ts_ctx *c, ts_tensor **in) { return mae_row(c, in, TINY, OUT_MASK); }
static ts_tensor *fn_tiny_ids(ts_ctx *c, ts_tensor **in) { return mae_row(c, in, TINY, OUT_IDS); }

/* in0 i64 models_mae.py's trainable count of mae_vit_base_patch16 -> ours minus theirs. */
static ts_tensor *fn_param_count(ts_ctx *c, ts_tensor **in) {
    TS_CHECK(in[0]->dtype == TS_I64 && in[0]->numel == 1, "mae count row: %lld counts",
             (long long)in[0]->numel);
    ts_mae_cfg cfg;
    ts_mae_cfg_default(&cfg);
    int64_t ours = ts_mae_param_count(&cfg), theirs = ((const int64_t *)in[0]->data)[0];
    printf("  mae_vit_base_patch16  tessera %12lld  models_mae.py %12lld\n", (long long)ours,
           (long long)theirs);
    ts_tensor *y = ts_new_f32(c, 1, TS_SHAPE(1));
    ts_f32(y)[0] = (float)(ours - theirs);
    return y;
}

/* ---- video-clip pooling ---- */

/* The toy frame encoder of the clip case: one matrix w (D, 3 H W) on each flattened frame. */
static ts_tensor *toy_encoder(ts_ctx *c, const void *w, const ts_tensor *images) {
    int64_t BK = ts_dim(images, 0), F = images->numel / BK;
    return ts_matmul(c, ts_reshape(c, images, 2, TS_SHAPE(BK, F)), (const ts_tensor *)w,
                     TS_TRANS_B);
}

/* cases_mae.py's VIDEOS table: frames, dim, pool, heads; clip selects the whole clip path. */
static ts_tensor *video_row(ts_ctx *c, ts_tensor **in, int frames, int dim,
                            ts_video_enc_pool_kind pool, int heads, int clip) {
    ts_params *p = ts_params_new();
    ts_video_enc m;
    ts_video_enc_cfg cfg = { .frames = frames, .dim = dim, .pool = pool, .heads = heads,
                             .ln_eps = 1e-5f };
    ts_video_enc_init(&m, p, "", &cfg, toy_encoder, clip ? in[3] : NULL);
    ts_tensor **slots[] = { &m.temporal, &m.query, &m.attn.in_w, &m.attn.in_b, &m.attn.out.w,
                            &m.attn.out.b, &m.ln_q.w, &m.ln_q.b, &m.ln_k.w, &m.ln_k.b };
    bind_params(c, p, slots, pool == TS_VIDEO_ENC_ATTN ? 10 : 1, in[1], in[2]);
    ts_tensor *y = clip ? ts_video_enc_forward(c, &m, in[0], NULL)
                        : ts_video_enc_pool(c, &m, in[0]);
    ts_params_free(p);
    return y;
}

static ts_tensor *fn_video_mean(ts_ctx *c, ts_tensor **in) {
    return video_row(c, in, 4, 8, TS_VIDEO_ENC_MEAN, 1, 0);
}
static ts_tensor *fn_video_attn(ts_ctx *c, ts_tensor **in) {
    return video_row(c, in, 5, 8, TS_VIDEO_ENC_ATTN, 2, 0);
}
static ts_tensor *fn_video_clip(ts_ctx *c, ts_tensor **in) {
    return video_row(c, in, 3, 8, TS_VIDEO_ENC_ATTN, 4, 1);
}

const test_row rows_mae[] = {
    { "mae_tiny_pred", -1, NULL, fn_tiny_pred, 0, 1 },
    { "mae_tiny_loss", -1, NULL, fn_tiny_loss, 0, 1 },
    { "mae_tiny_latent", -1, NULL, fn_tiny_latent, 0, 1 },
    { "mae_normpix_loss", -1, NULL, fn_normpix_loss, 0, 1 },
    { "mae_normpix_pred", -1, NULL, fn_normpix_pred, 0, 1 },
    { "mae_tiny_mask", -1, NULL, fn_tiny_mask, 0, 1 },
    { "mae_tiny_ids_restore", -1, NULL, fn_tiny_ids, 0, 1 },
    { "mae_param_count", -1, NULL, fn_param_count, 0, 1 },
    { "video_pool_mean", -1, NULL, fn_video_mean, 0, 1 },
    { "video_pool_attn", -1, NULL, fn_video_attn, 0, 1 },
    { "video_clip_attn", -1, NULL, fn_video_clip, 0, 1 },
    ROW_END,
};
