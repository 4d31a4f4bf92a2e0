/* optim.c: AdamW and SGD, learning-rate schedules, global gradient-norm clipping.
 *
 * The update rules are torch.optim's, step for step, so that a run can be compared with a
 * PyTorch run of the same recipe: AdamW decays the weights first (p *= 1 - lr * wd), then
 * applies the bias-corrected Adam step; SGD with momentum keeps torch's buffer convention
 * (buf = momentum * buf + g, no dampening). Parameters flagged TS_PARAM_NO_DECAY (norms, biases,
 * embeddings, by the rule of open_clip and timm) are not decayed; buffers are not trained.
 * Optimizer moments live in the parameter arena (ts_params_state slots 0 and 1).
 */
#include "tessera-impl.h"

#include <math.h>

void ts_optim_init(ts_optim *o, const ts_optim_cfg *cfg) {
    o->cfg = *cfg;
    o->t = 0;
}

static void adamw_one(const ts_optim_cfg *cfg, int64_t t, float lr, int decay, float *p,
                      const float *g, float *m, float *v, int64_t n) {
    const float b1 = cfg->beta1, b2 = cfg->beta2, eps = cfg->eps;
    const double bc1 = 1.0 - pow(b1, (double)t), bc2 = 1.0 - pow(b2, (double)t);
    const float step = (float)(lr / bc1), rbc2 = (float)(1.0 / sqrt(bc2));
    const float shrink = decay ? 1.0f - lr * cfg->weight_decay : 1.0f;
#pragma omp parallel for simd if (n > 32768) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float gi = g[i];
        m[i] = b1 * m[i] + (1.0f - b1) * gi;
        v[i] = b2 * v[i] + (1.0f - b2) * gi * gi;
        float denom = sqrtf(v[i]) * rbc2 + eps;
        p[i] = p[i] * shrink - step * (m[i] / denom);
    }
}

static void sgd_one(const ts_optim_cfg *cfg, int64_t t, float lr, int decay, float *p,
                    const float *g, float *buf, int64_t n) {
    const float wd = decay ? cfg->weight_decay : 0.0f, mom = cfg->momentum;
#pragma omp parallel for simd if (n > 32768) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float gi = g[i] + wd * p[i];
        if (mom != 0.0f) {
            buf[i] = t == 1 ? gi : mom * buf[i] + gi;
            gi = buf[i];
        }
        p[i] -= lr * gi;
    }
}

void ts_optim_step(ts_optim *o, ts_params *p, float lr) {
    o->t++;
    for (int i = 0; i < ts_params_count(p); i++) {
        int flags = ts_params_flags(p, i);
        if (flags & (TS_PARAM_BUFFER | TS_PARAM_FROZEN)) continue;
        ts_tensor *t = ts_params_get(p, i);
        int decay = !(flags & TS_PARAM_NO_DECAY);
        if (o->cfg.kind == TS_OPTIM_ADAMW)
            adamw_one(&o->cfg, o->t, lr, decay, ts_f32(t), ts_f32(t->grad),
                      ts_params_state(p, i, 0), ts_params_state(p, i, 1), t->numel);
        else
            sgd_one(&o->cfg, o->t, lr, decay, ts_f32(t), ts_f32(t->grad),
                    ts_params_state(p, i, 0), t->numel);
    }
}

float ts_clip_grad_norm(ts_params *p, float max_norm) {
    double sq = 0;
    for (int i = 0; i < ts_params_count(p); i++) {
        ts_tensor *t = ts_params_get(p, i);
        if (!t->grad) continue;
        const float *g = ts_f32(t->grad);
        double s = 0;
#pragma omp parallel for reduction(+ : s) if (t->numel > 32768) schedule(static)
        for (int64_t j = 0; j < t->numel; j++) s += (double)g[j] * g[j];
        sq += s;
    }
    float norm = (float)sqrt(sq);
    if (max_norm > 0.0f && norm > max_norm) {
        /* torch: clip_coef = max_norm / (total_norm + 1e-6), applied when below 1 */
        float coef = max_norm / (norm + 1e-6f);
        for (int i = 0; i < ts_params_count(p); i++) {
            ts_tensor *t = ts_params_get(p, i);
            if (!t->grad) continue;
            float *g = ts_f32(t->grad);
            for (int64_t j = 0; j < t->numel; j++) g[j] *= coef;
        }
    }
    return norm;
}

/* Warmup is linear from base_lr / warmup at step 0 to base_lr at step warmup - 1 (open_clip's
 * _warmup_lr: base_lr * (step + 1) / warmup). After it the cosine goes from base_lr to min_lr
 * over the remaining steps: min + (base - min) * (1 + cos(pi * e / es)) / 2. */
float ts_sched_lr(const ts_sched *s, int64_t step) {
    if (s->warmup > 0 && step < s->warmup)
        return s->base_lr * (float)(step + 1) / (float)s->warmup;
    int64_t e = step - s->warmup, es = s->total - s->warmup;
    if (es <= 0 || s->kind == TS_SCHED_CONSTANT) return s->base_lr;
    double frac = e >= es ? 1.0 : (double)e / (double)es;
    if (s->kind == TS_SCHED_LINEAR) return (float)(s->base_lr + (s->min_lr - s->base_lr) * frac);
    return (float)(s->min_lr + 0.5 * (s->base_lr - s->min_lr) * (1.0 + cos(M_PI * frac)));
}
