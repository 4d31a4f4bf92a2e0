/* op_softmax.c: softmax over the last dim on the CPU, forward and backward.
 *
 * y = exp(x - max) / sum(exp(x - max)) per row: subtracting the row maximum first keeps every
 * exponent <= 0, so nothing overflows and the largest term is exactly 1. It deliberately is
 * not attention's softmax (that one is fused into op_attention.c with its masks) and takes no
 * dim argument: permute first when another dim is wanted.
 *
 * Shapes: x (R..., C) seen as R rows of C, y like x.
 */
#include "../tessera-impl.h"

#include <math.h>

/* Work above this many elements is split over the OpenMP threads. */
#define SOFTMAX_PAR 32768

/* The backward needs only the output. With J = diag(y) - y y^T the Jacobian of one row,
 *
 *   dx = J dy = y * (dy - sum_j(dy_j * y_j))
 *
 * so one row sum and one elementwise pass per row. */
static void softmax_backward(ts_ctx *c, ts_node *n) {
    ts_tensor *x = n->in[0];
    const int64_t C = ts_dim(x, -1), R = x->numel / (C ? C : 1);
    const float *Y = ts_f32(n->out), *dY = ts_f32(n->out->grad);
    float *dX = ts__grad(c, x);
    if (!dX) return;
#pragma omp parallel for if (R * C > SOFTMAX_PAR)
    for (int64_t r = 0; r < R; r++) {
        const float *yr = Y + r * C, *dyr = dY + r * C;
        float *dxr = dX + r * C;
        double s = 0.0;
#pragma omp simd reduction(+ : s)
        for (int64_t j = 0; j < C; j++) s += dyr[j] * yr[j];
        const float sf = (float)s;
        for (int64_t j = 0; j < C; j++) dxr[j] += yr[j] * (dyr[j] - sf);
    }
}

ts_tensor *ts_softmax(ts_ctx *c, const ts_tensor *x) {
    char sx[96];
    ts__check_f32("softmax", x);
    TS_CHECK(x->ndim >= 1 && ts_dim(x, -1) > 0, "softmax: needs a non-empty last dim, got %s",
             ts_shape_str(x, sx, sizeof sx));
    const int64_t C = ts_dim(x, -1), R = x->numel / C;
    ts_tensor *y = ts_new_like(c, x);
    const float *X = ts_f32(x);
    float *Y = ts_f32(y);
#pragma omp parallel for if (R * C > SOFTMAX_PAR)
    for (int64_t r = 0; r < R; r++) {
        const float *xr = X + r * C;
        float *yr = Y + r * C;
        float m = xr[0];
        /* The row maximum; simd lets the comparisons run over vector lanes. */
#pragma omp simd reduction(max : m)
        for (int64_t j = 1; j < C; j++) m = xr[j] > m ? xr[j] : m;
        double s = 0.0;
        for (int64_t j = 0; j < C; j++) {
            yr[j] = expf(xr[j] - m);
            s += yr[j];
        }
        const float inv = (float)(1.0 / s);
        for (int64_t j = 0; j < C; j++) yr[j] *= inv;
    }
    TS__RECORD(c, TS_OP_SOFTMAX, softmax_backward, y, x);
    return y;
}
