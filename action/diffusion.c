/* diffusion.c: the noise schedule and samplers of Diffusion Policy, as diffusers computes them.
 *
 * DDPMScheduler(num_train_timesteps=N, beta_schedule="squaredcos_cap_v2", clip_sample=True,
 * prediction_type=epsilon|sample, variance_type="fixed_small") for training and ancestral
 * sampling, DDIMScheduler(set_alpha_to_one=True, steps_offset=0, eta=0) for fast sampling.
 * diffusers builds the betas in double (betas_for_alpha_bar), stores them as float32, and takes
 * the cumulative product in float32; the same roundings are made here, so alphas_cumprod is
 * bit for bit diffusers' tensor.
 */
#include "action.h"

#include <math.h>
#include <stdlib.h>

static double alpha_bar(double t) {
    double c = cos((t + 0.008) / 1.008 * M_PI / 2.0);
    return c * c;
}

void ts_diffusion_init(ts_diffusion *d, int train_steps, ts_pred_kind prediction,
                       int clip_sample) {
    TS_CHECK(train_steps >= 1, "diffusion: %d training timesteps", train_steps);
    d->train_steps = train_steps;
    d->prediction = prediction;
    d->clip_sample = clip_sample;
    d->clip_range = 1.0f;
    d->betas = malloc((size_t)train_steps * sizeof *d->betas);
    d->alphas_cumprod = malloc((size_t)train_steps * sizeof *d->alphas_cumprod);
    TS_CHECK(d->betas && d->alphas_cumprod, "out of memory");
    float acc = 1.0f;
    for (int i = 0; i < train_steps; i++) {
        double b = 1.0 - alpha_bar((double)(i + 1) / train_steps) /
                             alpha_bar((double)i / train_steps);
        float bf = (float)(b < 0.999 ? b : 0.999);
        d->betas[i] = bf;
        acc *= 1.0f - bf;
        d->alphas_cumprod[i] = acc;
    }
}

void ts_diffusion_free(ts_diffusion *d) {
    if (!d) return;
    free(d->betas);
    free(d->alphas_cumprod);
    d->betas = d->alphas_cumprod = NULL;
}

void ts_diffusion_add_noise(const ts_diffusion *d, const float *x0, const float *eps,
                            const int32_t *t, int64_t n, int64_t m, float *out) {
    for (int64_t i = 0; i < n; i++) {
        TS_CHECK(t[i] >= 0 && t[i] < d->train_steps, "diffusion: timestep %d", (int)t[i]);
        float a = (float)d->alphas_cumprod[t[i]];
        float sa = sqrtf(a), sb = sqrtf(1.0f - a);
        for (int64_t j = 0; j < m; j++) out[i * m + j] = sa * x0[i * m + j] + sb * eps[i * m + j];
    }
}

void ts_diffusion_ddim_timesteps(const ts_diffusion *d, int k, int32_t *ts) {
    TS_CHECK(k >= 1 && k <= d->train_steps, "diffusion: %d DDIM steps for %d timesteps", k,
             d->train_steps);
    int ratio = d->train_steps / k;
    for (int i = 0; i < k; i++) ts[i] = ratio * (k - 1 - i);
}

/* The predicted x0 and epsilon of one element, x0 clipped as diffusers clips it. */
static void predict(const ts_diffusion *d, float a, float mo, float x, float *x0, float *eps) {
    float sb = sqrtf(1.0f - a), sa = sqrtf(a);
    if (d->prediction == TS_PRED_EPSILON) {
        *x0 = (x - sb * mo) / sa;
        *eps = mo;
    } else {
        *x0 = mo;
        *eps = (x - sa * mo) / sb;
    }
    if (d->clip_sample) {
        float r = d->clip_range;
        *x0 = *x0 < -r ? -r : *x0 > r ? r : *x0;
    }
}

void ts_diffusion_ddim_step(const ts_diffusion *d, int k, int t, const float *model_out,
                            float *x, int64_t nm) {
    TS_CHECK(t >= 0 && t < d->train_steps, "diffusion: timestep %d", t);
    int prev = t - d->train_steps / k;
    float a = (float)d->alphas_cumprod[t];
    float ap = prev >= 0 ? (float)d->alphas_cumprod[prev] : 1.0f; /* set_alpha_to_one */
    float sap = sqrtf(ap), dir = sqrtf(1.0f - ap);
    for (int64_t i = 0; i < nm; i++) {
        float x0, eps;
        predict(d, a, model_out[i], x[i], &x0, &eps);
        x[i] = sap * x0 + dir * eps;
    }
}

void ts_diffusion_ddpm_step(const ts_diffusion *d, int t, const float *model_out, float *x,
                            int64_t nm, ts_rng *rng) {
    TS_CHECK(t >= 0 && t < d->train_steps, "diffusion: timestep %d", t);
    float a = (float)d->alphas_cumprod[t];
    float ap = t > 0 ? (float)d->alphas_cumprod[t - 1] : 1.0f;
    float beta = 1.0f - a, beta_prev = 1.0f - ap;
    float cur_alpha = a / ap, cur_beta = 1.0f - cur_alpha;
    float c0 = sqrtf(ap) * cur_beta / beta, c1 = sqrtf(cur_alpha) * beta_prev / beta;
    float var = beta_prev / beta * cur_beta;
    if (var < 1e-20f) var = 1e-20f;
    float sd = sqrtf(var);
    for (int64_t i = 0; i < nm; i++) {
        float x0, eps;
        predict(d, a, model_out[i], x[i], &x0, &eps);
        float v = c0 * x0 + c1 * x[i];
        if (t > 0 && rng) v += sd * ts_rng_normal(rng);
        x[i] = v;
    }
}
