/* op_gelu_tanh.c: GELU with the tanh approximation on the CPU, forward and backward.
 *
 * The GPT-2 / BERT form, as torch.nn.functional.gelu with approximate='tanh'. It deliberately
 * is not the exact erf form (op_gelu.c), which is what open_clip's nn.GELU computes; use this
 * one only where a checkpoint was trained with it.
 *
 * Shapes: x (...), y like x. Elementwise, so the loops run over the flat data.
 */
#include "../tessera-impl.h"

#include <math.h>

/* Work above this many elements is split over the OpenMP threads. */
#define GELU_PAR 32768

/* The math, with k = sqrt(2 / pi) and u = k * (x + 0.044715 x^3), t = tanh(u):
 *
 *   y     = x * (1 + t) / 2
 *   dy/dx = (1 + t) / 2 + x / 2 * (1 - t^2) * k * (1 + 3 * 0.044715 x^2)
 *
 * using d tanh(u) = (1 - tanh(u)^2) du. */
#define GELU_K 0.79788456080286536f
#define GELU_A 0.044715f

static void gelu_tanh_backward(ts_ctx *c, ts_node *n) {
    ts_tensor *x = n->in[0];
    const int64_t N = x->numel;
    const float *X = ts_f32(x), *dY = ts_f32(n->out->grad);
    float *dX = ts__grad(c, x);
    if (!dX) return;
#pragma omp parallel for if (N > GELU_PAR)
    for (int64_t i = 0; i < N; i++) {
        const float v = X[i], v2 = v * v;
        const float t = tanhf(GELU_K * (v + GELU_A * v2 * v));
        const float du = GELU_K * (1.0f + 3.0f * GELU_A * v2);
        dX[i] += dY[i] * (0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * du);
    }
}

ts_tensor *ts_gelu_tanh(ts_ctx *c, const ts_tensor *x) {
    ts__check_f32("gelu_tanh", x);
    ts_tensor *y = ts_new_like(c, x);
    const int64_t N = x->numel;
    const float *X = ts_f32(x);
    float *Y = ts_f32(y);
#pragma omp parallel for if (N > GELU_PAR)
    for (int64_t i = 0; i < N; i++) {
        const float v = X[i];
        Y[i] = 0.5f * v * (1.0f + tanhf(GELU_K * (v + GELU_A * v * v * v)));
    }
    TS__RECORD(c, TS_OP_GELU_TANH, gelu_tanh_backward, y, x);
    return y;
}
