/* op_bias_gelu.c: fused bias add + exact GELU on the CPU, forward and backward.
 *
 * y = gelu(x + b) with b (C) broadcast over the last dim: the first half of a transformer MLP
 * after a linear layer without its own bias, computed in one pass instead of two (no (R, C)
 * intermediate for x + b is written in the forward). The GELU is the exact erf form, as
 * torch.nn.functional.gelu(x + b), through vmath.h's vectorisable Phi. It deliberately is not
 * a matmul epilogue: the product itself stays with oneDNN (op_matmul.c).
 *
 * Shapes: x (R..., C) seen as R rows of C, b (C), y like x.
 */
#include "../tessera-impl.h"
#include "vmath.h"

#include <math.h>

/* Work above this many elements is split over the OpenMP threads. */
#define BGELU_PAR 32768
/* Rows per chunk of the bias-gradient sum. */
#define BGELU_ROWS 32

/* With z = x + b: y = z * Phi(z), g = dy * (Phi(z) + z * phi(z)), dx += g and db += the sum
 * of g over the rows. */

/* dx (R, C) and db (C). dx is written over dy when x takes dy's buffer (ts__grad_adopt): each
 * element of dy is read once, just before its dx is written. db is summed per chunk of
 * BGELU_ROWS rows (float), and the chunks are added in order (double), so the result does not
 * depend on the number of threads. */
static void bias_gelu_backward(ts_ctx *c, ts_node *n) {
    ts_tensor *x = n->in[0], *b = n->in[1];
    const int64_t C = ts_dim(x, -1), R = x->numel / (C ? C : 1);
    const float *X = ts_f32(x), *Bv = ts_f32(b), *dY = ts_f32(n->out->grad);
    float *dB = ts__grad(c, b), beta;
    float *dX = ts__grad_adopt(c, n, x, &beta);
    if (!dX && !dB) return;
    const int64_t nchunk = (R + BGELU_ROWS - 1) / BGELU_ROWS;
    float *part = dB ? ts_arena_alloc(c->step, (size_t)(nchunk * C) * sizeof(float)) : NULL;
#pragma omp parallel for schedule(static) if (R * C > BGELU_PAR)
    for (int64_t k = 0; k < nchunk; k++) {
        const int64_t r0 = k * BGELU_ROWS, r1 = r0 + BGELU_ROWS < R ? r0 + BGELU_ROWS : R;
        float *p = part ? part + k * C : NULL;
        if (p) memset(p, 0, (size_t)C * sizeof(float));
        for (int64_t r = r0; r < r1; r++) {
            const float *xr = X + r * C, *dyr = dY + r * C;
            float *dxr = dX ? dX + r * C : NULL;
            if (dxr && p && beta == 0.0f) {
#pragma omp simd
                for (int64_t j = 0; j < C; j++) {
                    const float g = dyr[j] * dgelu(xr[j] + Bv[j]);
                    dxr[j] = g;
                    p[j] += g;
                }
            } else if (dxr && beta == 0.0f) {
#pragma omp simd
                for (int64_t j = 0; j < C; j++) dxr[j] = dyr[j] * dgelu(xr[j] + Bv[j]);
            } else if (dxr && p) {
#pragma omp simd
                for (int64_t j = 0; j < C; j++) {
                    const float g = dyr[j] * dgelu(xr[j] + Bv[j]);
                    dxr[j] += g;
                    p[j] += g;
                }
            } else if (dxr) {
#pragma omp simd
                for (int64_t j = 0; j < C; j++) dxr[j] += dyr[j] * dgelu(xr[j] + Bv[j]);
            } else {
#pragma omp simd
                for (int64_t j = 0; j < C; j++) p[j] += dyr[j] * dgelu(xr[j] + Bv[j]);
            }
        }
    }
    if (!dB) return;
    /* db: column blocks over the threads, chunks in order within each */
#pragma omp parallel for schedule(static) if (nchunk * C > BGELU_PAR)
    for (int64_t j0 = 0; j0 < C; j0 += 64) {
        const int64_t j1 = j0 + 64 < C ? j0 + 64 : C;
        double acc[64] = { 0 };
        for (int64_t k = 0; k < nchunk; k++)
            for (int64_t j = j0; j < j1; j++) acc[j - j0] += part[k * C + j];
        for (int64_t j = j0; j < j1; j++) dB[j] += (float)acc[j - j0];
    }
}

ts_tensor *ts_bias_gelu(ts_ctx *c, const ts_tensor *x, const ts_tensor *bias) {
    char sx[96], sb[96];
    ts__check_f32("bias_gelu", x);
    ts__check_f32("bias_gelu", bias);
    TS_CHECK(x->ndim >= 1 && bias->ndim == 1 && bias->shape[0] == ts_dim(x, -1),
             "bias_gelu: bias %s does not match the last dim of x %s",
             ts_shape_str(bias, sb, sizeof sb), ts_shape_str(x, sx, sizeof sx));
    const int64_t C = ts_dim(x, -1), R = x->numel / (C ? C : 1);
    ts_tensor *y = ts_new_like(c, x);
    const float *X = ts_f32(x), *Bv = ts_f32(bias);
    float *Y = ts_f32(y);
#pragma omp parallel for if (R * C > BGELU_PAR)
    for (int64_t r = 0; r < R; r++) {
        const float *xr = X + r * C;
        float *yr = Y + r * C;
#pragma omp simd
        for (int64_t j = 0; j < C; j++) {
            const float z = xr[j] + Bv[j];
            yr[j] = z * vphi(z);
        }
    }
    TS__RECORD(c, TS_OP_BIAS_GELU, bias_gelu_backward, y, x, bias);
    return y;
}
