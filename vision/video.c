/* video.c: a clip of K frames to one embedding, through any image encoder.
 *
 * clips (B, K, 3, H, W) -> one batch of B K images -> the encoder's embedding per frame
 * (B K, D) -> (B, K, D) + temporal_embedding (K, D) -> mean over frames, or attention pooling:
 * one learned query, ln_q on it and ln_k on the frames, torch.nn.MultiheadAttention(query,
 * frames, frames) with its packed in_proj, as open_clip's AttentionalPooler does with one query.
 * The encoder is a function pointer plus its state, so a ViT today and another tower later.
 *
 * What this file is not: a video decoder (loaders/ decodes frames) nor a spatio-temporal
 * transformer (frames do not attend to each other before pooling).
 *
 * Shapes: B clips, K frames, D embedding width, Hd heads, Dh = D / Hd.
 */
#include "vision.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

ts_tensor *ts_video_enc_vit(ts_ctx *c, const void *vit, const ts_tensor *images) {
    return ts_vit_forward(c, (const ts_vit *)vit, images, NULL);
}

ts_status ts_video_enc_cfg_check(const ts_video_enc_cfg *cfg, ts_err *err) {
    if (cfg->frames < 1 || cfg->dim < 1)
        return ts_fail(err, TS_ERR_RECIPE, "video: frames %d and dim %d must be positive",
                       cfg->frames, cfg->dim);
    if (cfg->pool != TS_VIDEO_ENC_MEAN && cfg->pool != TS_VIDEO_ENC_ATTN)
        return ts_fail(err, TS_ERR_RECIPE, "video: pool must be mean or attention");
    if (cfg->pool == TS_VIDEO_ENC_ATTN &&
        (cfg->heads < 1 || cfg->dim % cfg->heads || !(cfg->ln_eps > 0.0f)))
        return ts_fail(err, TS_ERR_RECIPE, "video: attention pooling needs heads (%d) dividing "
                       "dim %d and a positive ln_eps", cfg->heads, cfg->dim);
    return TS_OK;
}

void ts_video_enc_init(ts_video_enc *m, ts_params *p, const char *prefix,
                       const ts_video_enc_cfg *cfg, ts_frame_encoder encode, const void *encoder) {
    ts_err err = { 0 };
    TS_CHECK(ts_video_enc_cfg_check(cfg, &err) == TS_OK, "%s", err.msg);
    memset(m, 0, sizeof *m);
    m->cfg = *cfg;
    m->encode = encode;
    m->encoder = encoder;
    int K = cfg->frames, D = cfg->dim;
    char name[256];
    m->temporal = ts_param(p, ts_pname(name, sizeof name, "%stemporal_embedding", prefix), 2,
                           TS_SHAPE(K, D), TS_INIT_N(0.02f), TS_PARAM_NO_DECAY);
    if (cfg->pool != TS_VIDEO_ENC_ATTN) return;
    /* open_clip's AttentionalPooler: query randn * d_model^-0.5, then attn, ln_q, ln_k. */
    m->query = ts_param(p, ts_pname(name, sizeof name, "%spool.query", prefix), 2,
                        TS_SHAPE(1, D), TS_INIT_N(1.0f / sqrtf((float)D)), TS_PARAM_NO_DECAY);
    ts_nn_mha_init(&m->attn, p, ts_pname(name, sizeof name, "%spool.attn", prefix), D,
                   cfg->heads);
    ts_nn_layernorm_init(&m->ln_q, p, ts_pname(name, sizeof name, "%spool.ln_q", prefix), D,
                         cfg->ln_eps);
    ts_nn_layernorm_init(&m->ln_k, p, ts_pname(name, sizeof name, "%spool.ln_k", prefix), D,
                         cfg->ln_eps);
}

/* x (B, T, D) -> (B, Hd, T, Dh). */
static ts_tensor *heads_of(ts_ctx *c, const ts_tensor *x, int64_t Hd) {
    int64_t B = ts_dim(x, 0), T = ts_dim(x, 1), D = ts_dim(x, 2);
    return ts_permute(c, ts_reshape(c, x, 4, TS_SHAPE(B, T, Hd, D / Hd)),
                      (const int[]){ 0, 2, 1, 3 });
}

/* One query attending over the frames: MultiheadAttention(q, kv, kv) with the packed in_proj
 * split into its q, k and v rows. frames (B, K, D) -> (B, D). */
static ts_tensor *attn_pool(ts_ctx *c, const ts_video_enc *m, const ts_tensor *frames) {
    int64_t B = ts_dim(frames, 0), D = m->cfg.dim, Hd = m->cfg.heads;
    const ts_nn_mha *a = &m->attn;
    ts_tensor *kv = ts_nn_layernorm_forward(c, &m->ln_k, frames);              /* (B, K, D) */
    ts_tensor *q = ts_nn_layernorm_forward(c, &m->ln_q, m->query);             /* (1, D) */
    q = ts_linear(c, q, ts_slice(c, a->in_w, 0, 0, D), ts_slice(c, a->in_b, 0, 0, D));
    q = ts_add(c, ts_zeros(c, TS_F32, 3, TS_SHAPE(B, 1, D)), ts_reshape(c, q, 1, TS_SHAPE(D)));
    ts_tensor *k = ts_linear(c, kv, ts_slice(c, a->in_w, 0, D, 2 * D),
                             ts_slice(c, a->in_b, 0, D, 2 * D));               /* (B, K, D) */
    ts_tensor *v = ts_linear(c, kv, ts_slice(c, a->in_w, 0, 2 * D, 3 * D),
                             ts_slice(c, a->in_b, 0, 2 * D, 3 * D));
    ts_tensor *o = ts_attention(c, heads_of(c, q, Hd), heads_of(c, k, Hd), heads_of(c, v, Hd), 0,
                                NULL, 0.0f);                                   /* (B, Hd, 1, Dh) */
    o = ts_reshape(c, ts_permute(c, o, (const int[]){ 0, 2, 1, 3 }), 2, TS_SHAPE(B, D));
    return ts_nn_linear_forward(c, &a->out, o);                                /* (B, D) */
}

ts_tensor *ts_video_enc_pool(ts_ctx *c, const ts_video_enc *m, const ts_tensor *frames) {
    char s[96];
    TS_CHECK(frames->ndim == 3 && ts_dim(frames, 1) == m->cfg.frames &&
                 ts_dim(frames, 2) == m->cfg.dim,
             "video: frame embeddings are %s, expected (B, %d, %d)",
             ts_shape_str(frames, s, sizeof s), m->cfg.frames, m->cfg.dim);
    ts_tensor *x = ts_add(c, frames, m->temporal);                             /* (B, K, D) */
    if (m->cfg.pool == TS_VIDEO_ENC_MEAN) return ts_mean(c, x, 1);
    return attn_pool(c, m, x);
}

ts_tensor *ts_video_enc_forward(ts_ctx *c, const ts_video_enc *m, const ts_tensor *clips,
                                ts_tensor **frames_out) {
    char s[96];
    TS_CHECK(clips->ndim == 5 && ts_dim(clips, 1) == m->cfg.frames && ts_dim(clips, 2) == 3,
             "video: clips are %s, expected (B, %d, 3, H, W)", ts_shape_str(clips, s, sizeof s),
             m->cfg.frames);
    int64_t B = ts_dim(clips, 0), K = m->cfg.frames, H = ts_dim(clips, 3), W = ts_dim(clips, 4);
    ts_tensor *images = ts_reshape(c, clips, 4, TS_SHAPE(B * K, 3, H, W));
    ts_tensor *emb = m->encode(c, m->encoder, images);                         /* (B K, D) */
    TS_CHECK(emb->ndim == 2 && ts_dim(emb, 0) == B * K && ts_dim(emb, 1) == m->cfg.dim,
             "video: the frame encoder gave %s, expected (%lld, %d)",
             ts_shape_str(emb, s, sizeof s), (long long)(B * K), m->cfg.dim);
    ts_tensor *frames = ts_reshape(c, emb, 3, TS_SHAPE(B, K, m->cfg.dim));
    if (frames_out) *frames_out = ts_add(c, frames, m->temporal);
    return ts_video_enc_pool(c, m, frames);
}
