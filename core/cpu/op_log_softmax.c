/* op_log_softmax.c: log-softmax over the last dim on the CPU, forward and backward.
 *
 * y = x - max - log(sum(exp(x - max))) per row, the numerically stable form: no exponent is
 * positive and the log never sees a sum below 1. It deliberately is not the loss: softmax
 * cross-entropy against class targets is fused in op_cross_entropy.c, which never writes the
 * (N, K) log-probabilities.
 *
 * Shapes: x (R..., C) seen as R rows of C, y like x.
 */
#include "../tessera-impl.h"

#include <math.h>

/* Work above this many elements is split over the OpenMP threads. */
#define LOGSOFTMAX_PAR 32768

/* The backward needs only the output: softmax is exp(y), and y_i = x_i - lse(x) gives
 *
 *   dx = dy - exp(y) * sum_j(dy_j)
 *
 * since d lse / dx = softmax(x). */
static void log_softmax_backward(ts_ctx *c, ts_node *n) {
    ts_tensor *x = n->in[0];
    const int64_t C = ts_dim(x, -1), R = x->numel / (C ? C : 1);
    const float *Y = ts_f32(n->out), *dY = ts_f32(n->out->grad);
    float *dX = ts__grad(c, x);
    if (!dX) return;
#pragma omp parallel for if (R * C > LOGSOFTMAX_PAR)
    for (int64_t r = 0; r < R; r++) {
        const float *yr = Y + r * C, *dyr = dY + r * C;
        float *dxr = dX + r * C;
        double s = 0.0;
#pragma omp simd reduction(+ : s)
        for (int64_t j = 0; j < C; j++) s += dyr[j];
        const float sf = (float)s;
        for (int64_t j = 0; j < C; j++) dxr[j] += dyr[j] - expf(yr[j]) * sf;
    }
}

ts_tensor *ts_log_softmax(ts_ctx *c, const ts_tensor *x) {
    char sx[96];
    ts__check_f32("log_softmax", x);
    TS_CHECK(x->ndim >= 1 && ts_dim(x, -1) > 0,
             "log_softmax: needs a non-empty last dim, got %s", ts_shape_str(x, sx, sizeof sx));
    const int64_t C = ts_dim(x, -1), R = x->numel / C;
    ts_tensor *y = ts_new_like(c, x);
    const float *X = ts_f32(x);
    float *Y = ts_f32(y);
#pragma omp parallel for if (R * C > LOGSOFTMAX_PAR)
    for (int64_t r = 0; r < R; r++) {
        const float *xr = X + r * C;
        float *yr = Y + r * C;
        float m = xr[0];
        /* The row maximum; simd lets the comparisons run over vector lanes. */
#pragma omp simd reduction(max : m)
        for (int64_t j = 1; j < C; j++) m = xr[j] > m ? xr[j] : m;
        double s = 0.0;
        for (int64_t j = 0; j < C; j++) s += expf(xr[j] - m);
        const float shift = m + (float)log(s);
        for (int64_t j = 0; j < C; j++) yr[j] = xr[j] - shift;
    }
    TS__RECORD(c, TS_OP_LOG_SOFTMAX, log_softmax_backward, y, x);
    return y;
}
