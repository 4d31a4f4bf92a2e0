/* op_quick_gelu.c: QuickGELU, x * sigmoid(1.702 x), on the CPU, forward and backward.
 *
 * The activation of OpenAI's original CLIP weights (open_clip's QuickGELU, selected by the
 * "-quickgelu" model configs). It deliberately is not a GELU approximation to swap in for
 * another: a checkpoint trained with one activation must be run with the same one.
 *
 * Shapes: x (...), y like x. Elementwise, so the loops run over the flat data.
 */
#include "../tessera-impl.h"

#include <math.h>

/* Work above this many elements is split over the OpenMP threads. */
#define QGELU_PAR 32768
#define QGELU_K 1.702f

/* The math, with s = sigmoid(k x) and sigmoid' = s (1 - s):
 *
 *   y     = x * s
 *   dy/dx = s + k * x * s * (1 - s)
 *
 * The sigmoid is written as 1 / (1 + exp(-k x)), which saturates cleanly to 0 or 1 in float
 * (exp overflows to inf and the quotient to 0, never to NaN). */
static void quick_gelu_backward(ts_ctx *c, ts_node *n) {
    ts_tensor *x = n->in[0];
    const int64_t N = x->numel;
    const float *X = ts_f32(x), *dY = ts_f32(n->out->grad);
    float *dX = ts__grad(c, x);
    if (!dX) return;
#pragma omp parallel for if (N > QGELU_PAR)
    for (int64_t i = 0; i < N; i++) {
        const float v = X[i];
        const float s = 1.0f / (1.0f + expf(-QGELU_K * v));
        dX[i] += dY[i] * (s + QGELU_K * v * s * (1.0f - s));
    }
}

ts_tensor *ts_quick_gelu(ts_ctx *c, const ts_tensor *x) {
    ts__check_f32("quick_gelu", x);
    ts_tensor *y = ts_new_like(c, x);
    const int64_t N = x->numel;
    const float *X = ts_f32(x);
    float *Y = ts_f32(y);
#pragma omp parallel for if (N > QGELU_PAR)
    for (int64_t i = 0; i < N; i++) Y[i] = X[i] / (1.0f + expf(-QGELU_K * X[i]));
    TS__RECORD(c, TS_OP_QUICK_GELU, quick_gelu_backward, y, x);
    return y;
}
