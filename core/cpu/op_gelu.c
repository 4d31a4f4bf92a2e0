/* op_gelu.c: GELU in its exact erf form on the CPU, forward and backward.
 *
 * y = x * Phi(x) with Phi the standard normal CDF, as torch.nn.functional.gelu with
 * approximate='none'. It deliberately is not the tanh approximation (op_gelu_tanh.c), the
 * sigmoid one (op_quick_gelu.c) or the fused bias + GELU of the MLP (op_bias_gelu.c).
 *
 * Shapes: x (...), y like x. Elementwise, so the loops run over the flat data.
 */
#include "../tessera-impl.h"
#include "vmath.h"

/* Work above this many elements is split over the OpenMP threads. */
#define GELU_PAR 32768

/* The math: Phi(x) = (1 + erf(x / sqrt 2)) / 2 and phi(x) = exp(-x^2 / 2) / sqrt(2 pi), so
 *
 *   y  = x * Phi(x)
 *   dy/dx = Phi(x) + x * phi(x)
 *
 * The second term is the slope of the gate itself; it is what makes GELU dip below zero.
 * Phi and exp are vmath.h's vectorisable float code (libm's erff is a scalar call). */

static void gelu_backward(ts_ctx *c, ts_node *n) {
    ts_tensor *x = n->in[0];
    const int64_t N = x->numel;
    const float *X = ts_f32(x), *dY = ts_f32(n->out->grad);
    float *dX = ts__grad(c, x);
    if (!dX) return;
#pragma omp parallel for simd if (N > GELU_PAR)
    for (int64_t i = 0; i < N; i++) dX[i] += dY[i] * dgelu(X[i]);
}

ts_tensor *ts_gelu(ts_ctx *c, const ts_tensor *x) {
    ts__check_f32("gelu", x);
    ts_tensor *y = ts_new_like(c, x);
    const int64_t N = x->numel;
    const float *X = ts_f32(x);
    float *Y = ts_f32(y);
#pragma omp parallel for simd if (N > GELU_PAR)
    for (int64_t i = 0; i < N; i++) Y[i] = X[i] * vphi(X[i]);
    TS__RECORD(c, TS_OP_GELU, gelu_backward, y, x);
    return y;
}
