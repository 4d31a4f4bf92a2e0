/* clip.c: CLIP's contrastive objectives, InfoNCE (open_clip's ClipLoss) and the sigmoid loss
 * of SigLIP (open_clip's SigLipLoss), built from core ops so that their backward is the ops'.
 *
 * In a run of several ranks the embeddings of all ranks are gathered first (ts_all_gather) and
 * every rank computes the loss over the global batch, as open_clip with gather_with_grad; the
 * gathered backward makes the ranks' weighted gradient that of one process with the whole batch.
 *
 * What this file is not: open_clip's local_loss / cache_labels options, which change only speed.
 */
#include "../tessera-impl.h"

#include <math.h>
#include <stdlib.h>

ts_clip_cfg ts_clip_cfg_default(int siglip) {
    if (siglip) return (ts_clip_cfg){ 1, logf(10.0f), -10.0f, 0.0f };
    return (ts_clip_cfg){ 0, logf(1.0f / 0.07f), 0.0f, 100.0f };
}

/* exp(s) * normalise(img) @ normalise(txt)^T: (n, n), row i = image i against every caption. */
static ts_tensor *scaled_logits(ts_ctx *c, const ts_tensor *img, const ts_tensor *txt,
                                const ts_tensor *logit_scale) {
    TS_CHECK(img->ndim == 2 && txt->ndim == 2 && img->shape[0] == txt->shape[0] &&
             img->shape[1] == txt->shape[1], "clip loss: image and text embeddings differ in "
             "shape");
    TS_CHECK(logit_scale->numel == 1, "clip loss: logit_scale has %lld elements",
             (long long)logit_scale->numel);
    ts_tensor *a = ts_l2_normalize(c, img, 1e-12f), *b = ts_l2_normalize(c, txt, 1e-12f);
    ts_tensor *sim = ts_matmul(c, a, b, TS_TRANS_B);
    return ts_mul(c, sim, ts_exp(c, logit_scale));
}

/* In a run of several ranks, the embeddings of every rank (ts_all_gather). */
static void gather(ts_ctx *c, const ts_tensor **img, const ts_tensor **txt) {
    if (!c->dist || c->world <= 1) return;
    *img = ts_all_gather(c, *img);
    *txt = ts_all_gather(c, *txt);
}

ts_tensor *ts_clip_loss(ts_ctx *c, const ts_tensor *img, const ts_tensor *txt,
                        const ts_tensor *logit_scale) {
    gather(c, &img, &txt);
    int64_t n = img->shape[0];
    ts_tensor *logits = scaled_logits(c, img, txt, logit_scale);
    ts_tensor *targets = ts_new(c, TS_I32, 1, TS_SHAPE(n));
    for (int64_t i = 0; i < n; i++) ts_i32(targets)[i] = (int32_t)i;
    ts_tensor *li = ts_cross_entropy(c, logits, targets, -100, 0.0f);
    ts_tensor *lt = ts_cross_entropy(c, ts_transpose(c, logits, 0, 1), targets, -100, 0.0f);
    return ts_scale(c, ts_add(c, li, lt), 0.5f);
}

ts_tensor *ts_siglip_loss(ts_ctx *c, const ts_tensor *img, const ts_tensor *txt,
                          const ts_tensor *logit_scale, const ts_tensor *logit_bias) {
    gather(c, &img, &txt);
    int64_t n = img->shape[0];
    TS_CHECK(logit_bias->numel == 1, "siglip loss: logit_bias has %lld elements",
             (long long)logit_bias->numel);
    ts_tensor *logits = ts_add(c, scaled_logits(c, img, txt, logit_scale), logit_bias);
    ts_tensor *z = ts_new_f32(c, 2, TS_SHAPE(n, n));
    for (int64_t i = 0; i < n * n; i++) ts_f32(z)[i] = i / n == i % n ? 1.0f : -1.0f;
    ts_tensor *ls = ts_sum(c, ts_log_sigmoid(c, ts_mul(c, logits, z)), TS_ALL);
    return ts_scale(c, ls, -1.0f / (float)n);
}

/* ---- the objective ---- */

typedef struct clip_obj {
    ts_objective base;
    ts_clip_cfg cfg;
    ts_tensor *logit_scale, *logit_bias;
} clip_obj;

static ts_tensor *clip_obj_loss(ts_ctx *c, ts_objective *o, const ts_embeds *e, ts_metrics *m) {
    clip_obj *s = o->impl;
    TS_CHECK(e->image && e->text, "%s objective: needs image and text embeddings", o->type);
    ts_tensor *loss = s->cfg.siglip ? ts_siglip_loss(c, e->image, e->text, s->logit_scale,
                                                     s->logit_bias)
                                    : ts_clip_loss(c, e->image, e->text, s->logit_scale);
    if (m) ts_metrics_set(m, "logit_scale", exp(ts_f32(s->logit_scale)[0]));
    return loss;
}

static void clip_obj_after_step(ts_objective *o) {
    clip_obj *s = o->impl;
    if (s->cfg.max_logit_scale <= 0.0f) return;
    float *v = ts_f32(s->logit_scale), hi = logf(s->cfg.max_logit_scale);
    *v = *v < 0.0f ? 0.0f : *v > hi ? hi : *v; /* open_clip: clamp_(0, math.log(100)) */
}

static void clip_obj_free(ts_objective *o) { free(o->impl); }

ts_objective *ts_objective_clip_new(ts_params *p, const ts_clip_cfg *cfg, float weight) {
    clip_obj *s = calloc(1, sizeof *s);
    TS_CHECK(s, "out of memory");
    s->cfg = *cfg;
    s->logit_scale = ts_param(p, "logit_scale", 0, NULL,
                              (ts_init){ TS_INIT_CONST, cfg->init_logit_scale, 0.0f },
                              TS_PARAM_NO_DECAY);
    if (cfg->siglip)
        s->logit_bias = ts_param(p, "logit_bias", 0, NULL,
                                 (ts_init){ TS_INIT_CONST, cfg->init_logit_bias, 0.0f },
                                 TS_PARAM_NO_DECAY);
    s->base = (ts_objective){ .type = cfg->siglip ? "siglip" : "clip", .weight = weight,
                              .loss = clip_obj_loss, .after_step = clip_obj_after_step,
                              .free = clip_obj_free, .impl = s };
    return &s->base;
}

void ts_objective_free(ts_objective *o) {
    if (o && o->free) o->free(o);
}

void ts_encoder_free(ts_encoder *e) {
    if (e && e->free) e->free(e);
}
