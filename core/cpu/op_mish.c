/* op_mish.c: Mish, x * tanh(softplus(x)), on the CPU, forward and backward.
 *
 * The activation of Diffusion Policy's timestep MLP and its convolutional blocks.
 *
 * Shapes: x (...), y like x. Elementwise, so the loops run over the flat data.
 */
#include "../tessera-impl.h"
#include "vmath.h"

#include <math.h>

#define MISH_PAR 32768

/* tanh(softplus(x)) without libm's scalar calls, so that the loops vectorise: with e = exp(x),
 * 1 + e = exp(softplus(x)) and tanh(softplus(x)) = ((1+e)^2 - 1) / ((1+e)^2 + 1) =
 * n / (n + 2), n = e (e + 2). Above 20 torch's softplus is x itself and tanh of it is 1 in
 * float; below -87 e is 0 (as in exp_neg). *sig gets sigmoid(x) = e / (1 + e). */
static inline float tanh_softplus(float x, float *sig) {
    float e = x <= -87.0f ? 0.0f : vexp(x < 20.0f ? x : 20.0f);
    float n = e * (e + 2.0f);
    *sig = e / (1.0f + e);
    return x > 20.0f ? 1.0f : n / (n + 2.0f);
}

static void mish_backward(ts_ctx *c, ts_node *n) {
    ts_tensor *x = n->in[0];
    const int64_t N = x->numel;
    const float *X = ts_f32(x), *dY = ts_f32(n->out->grad);
    float *dX = ts__grad(c, x);
    if (!dX) return;
#pragma omp parallel for simd if (N > MISH_PAR)
    for (int64_t i = 0; i < N; i++) {
        float s;
        const float v = X[i], t = tanh_softplus(v, &s);
        dX[i] += dY[i] * (t + v * (1.0f - t * t) * s);
    }
}

ts_tensor *ts_mish(ts_ctx *c, const ts_tensor *x) {
    ts__check_f32("mish", x);
    ts_tensor *y = ts_new_like(c, x);
    const int64_t N = x->numel;
    const float *X = ts_f32(x);
    float *Y = ts_f32(y);
#pragma omp parallel for simd if (N > MISH_PAR)
    for (int64_t i = 0; i < N; i++) {
        float s;
        Y[i] = X[i] * tanh_softplus(X[i], &s);
    }
    TS__RECORD(c, TS_OP_MISH, mish_backward, y, x);
    return y;
}
