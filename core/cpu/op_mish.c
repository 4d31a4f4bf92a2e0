/* op_mish.c: Mish, x * tanh(softplus(x)), on the CPU, forward and backward.
 *
 * The activation of Diffusion Policy's timestep MLP and its convolutional blocks.
 *
 * Shapes: x (...), y like x. Elementwise, so the loops run over the flat data.
 */
#include "../tessera-impl.h"

#include <math.h>

#define MISH_PAR 32768

/* softplus as torch computes it (threshold 20: above it, softplus(x) = x). */
static inline float softplus(float x) { return x > 20.0f ? x : log1pf(expf(x)); }

/* With t = tanh(softplus(x)) and softplus'(x) = sigmoid(x):
 *   y     = x * t
 *   dy/dx = t + x * (1 - t^2) * sigmoid(x) */
static void mish_backward(ts_ctx *c, ts_node *n) {
    ts_tensor *x = n->in[0];
    const int64_t N = x->numel;
    const float *X = ts_f32(x), *dY = ts_f32(n->out->grad);
    float *dX = ts__grad(c, x);
    if (!dX) return;
#pragma omp parallel for if (N > MISH_PAR)
    for (int64_t i = 0; i < N; i++) {
        const float v = X[i], t = tanhf(softplus(v)), s = 1.0f / (1.0f + expf(-v));
        dX[i] += dY[i] * (t + v * (1.0f - t * t) * s);
    }
}

ts_tensor *ts_mish(ts_ctx *c, const ts_tensor *x) {
    ts__check_f32("mish", x);
    ts_tensor *y = ts_new_like(c, x);
    const int64_t N = x->numel;
    const float *X = ts_f32(x);
    float *Y = ts_f32(y);
#pragma omp parallel for if (N > MISH_PAR)
    for (int64_t i = 0; i < N; i++) Y[i] = X[i] * tanhf(softplus(X[i]));
    TS__RECORD(c, TS_OP_MISH, mish_backward, y, x);
    return y;
}
