/* op_bias_gelu.c: fused bias add + exact GELU on the CPU, forward and backward.
 *
 * y = gelu(x + b) with b (C) broadcast over the last dim: the first half of a transformer MLP
 * after a linear layer without its own bias, computed in one pass instead of two (no (R, C)
 * intermediate for x + b is written in the forward). The GELU is the exact erf form, as
 * torch.nn.functional.gelu(x + b). It deliberately is not a matmul epilogue: the product
 * itself stays with oneDNN (op_matmul.c).
 *
 * Shapes: x (R..., C) seen as R rows of C, b (C), y like x.
 */
#include "../tessera-impl.h"

#include <math.h>

/* Work above this many elements is split over the OpenMP threads. */
#define BGELU_PAR 32768
/* The bias gradient is summed over rows in column blocks of this width, one per thread. */
#define BGELU_COLS 64

#define GELU_RSQRT2 0.70710678118654752f
#define GELU_RSQRT2PI 0.39894228040143268f

/* The math, with z = x + b, Phi the standard normal CDF and phi its density:
 *
 *   y = z * Phi(z),   g = dy * (Phi(z) + z * phi(z))
 *   dx += g,          db += sum over rows of g
 *
 * When db is wanted, g is kept in a step-arena buffer so that the column sums do not
 * evaluate erf and exp a second time. */
static void bias_gelu_backward(ts_ctx *c, ts_node *n) {
    ts_tensor *x = n->in[0], *b = n->in[1];
    const int64_t C = ts_dim(x, -1), R = x->numel / (C ? C : 1);
    const float *X = ts_f32(x), *Bv = ts_f32(b), *dY = ts_f32(n->out->grad);
    float *dX = ts__grad(c, x), *dB = ts__grad(c, b);
    float *G = dB ? ts_arena_alloc(c->step, (size_t)(R * C) * sizeof(float)) : NULL; /* (R, C) */

#pragma omp parallel for if (R * C > BGELU_PAR)
    for (int64_t r = 0; r < R; r++) {
        const float *xr = X + r * C, *dyr = dY + r * C;
        for (int64_t j = 0; j < C; j++) {
            const float z = xr[j] + Bv[j];
            const float cdf = 0.5f * (1.0f + erff(z * GELU_RSQRT2));
            const float pdf = GELU_RSQRT2PI * expf(-0.5f * z * z);
            const float g = dyr[j] * (cdf + z * pdf);
            if (dX) dX[r * C + j] += g;
            if (G) G[r * C + j] = g;
        }
    }
    if (dB) {
        const int64_t nblk = (C + BGELU_COLS - 1) / BGELU_COLS;
#pragma omp parallel for if (R * C > BGELU_PAR)
        for (int64_t blk = 0; blk < nblk; blk++) {
            const int64_t j0 = blk * BGELU_COLS;
            const int64_t j1 = j0 + BGELU_COLS < C ? j0 + BGELU_COLS : C;
            double s[BGELU_COLS] = { 0 };
            for (int64_t r = 0; r < R; r++)
                for (int64_t j = j0; j < j1; j++) s[j - j0] += G[r * C + j];
            for (int64_t j = j0; j < j1; j++) dB[j] += (float)s[j - j0];
        }
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
        for (int64_t j = 0; j < C; j++) {
            const float z = xr[j] + Bv[j];
            yr[j] = 0.5f * z * (1.0f + erff(z * GELU_RSQRT2));
        }
    }
    TS__RECORD(c, TS_OP_BIAS_GELU, bias_gelu_backward, y, x, bias);
    return y;
}
