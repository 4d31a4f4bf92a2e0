/* op_layernorm.c: layer normalisation over the last dim on the CPU, forward and backward.
 *
 * One fused op, as torch.nn.functional.layer_norm with normalized_shape = (C,): each row of
 * x is shifted to zero mean and scaled to unit (biased) variance, then multiplied by w and
 * shifted by b when they are given. The forward saves the mean and 1/sqrt(var + eps) of every
 * row so the backward does not recompute them. It deliberately is not a general norm: it
 * normalises the last dim only (no normalized_shape over several dims) and has no RMS variant.
 *
 * Shapes: x (R..., C) seen as R rows of C, w and b (C) or NULL, y like x, mean and rstd (R).
 */
#include "../tessera-impl.h"

#include <math.h>

/* Work above this many elements is split over the OpenMP threads. */
#define LN_PAR 32768

/* dw and db are summed over chunks of LN_ROWS rows, then over the chunks in column blocks of
 * LN_COLS. */
#define LN_ROWS 32
#define LN_COLS 64

/* The backward, written out once. With xhat = (x - mean) * rstd and y = xhat * w + b:
 *
 *   db      += sum over rows of dy
 *   dw      += sum over rows of dy * xhat
 *   dx      += rstd * (g - mean_C(g) - xhat * mean_C(g * xhat)),   g = dy * w (or dy)
 *
 * (dx is written rather than added when x has no gradient yet.)
 *
 * The dx line comes from differentiating through the row's mean and variance: the mean term
 * removes the common shift of g, the xhat term removes its component along xhat, which is
 * what a change of the variance would undo. */
static void layernorm_backward(ts_ctx *c, ts_node *n) {
    ts_tensor *x = n->in[0], *w = n->in[1], *b = n->in[2];
    const int64_t C = ts_dim(x, -1), R = x->numel / (C ? C : 1);
    const float *X = ts_f32(x), *dY = ts_f32(n->out->grad);
    const float *mean = ts_f32(n->saved[0]), *rstd = ts_f32(n->saved[1]); /* (R) */
    const float *W = w ? ts_f32(w) : NULL;
    float *dW = ts__grad(c, w), *dB = ts__grad(c, b), beta;
    /* dx is written over dy when x takes dy's buffer: a row's dy is all read (sums and the
     * dw, db parts) before that row's dx is written */
    float *dX = ts__grad_adopt(c, n, x, &beta);
    if (!dX && !dW && !dB) return;
    /* dw and db: one partial sum per chunk of LN_ROWS rows, added in chunk order at the end, so
     * the result does not depend on the number of threads */
    const int64_t nchunk = (R + LN_ROWS - 1) / LN_ROWS;
    float *part = (dW || dB) ? ts_arena_alloc(c->step, (size_t)(nchunk * 2 * C) * sizeof(float))
                             : NULL;
#pragma omp parallel for schedule(static) if (R * C > LN_PAR)
    for (int64_t k = 0; k < nchunk; k++) {
        const int64_t r0 = k * LN_ROWS, r1 = r0 + LN_ROWS < R ? r0 + LN_ROWS : R;
        float *pw = part ? part + k * 2 * C : NULL, *pb = pw ? pw + C : NULL;
        if (pw) memset(pw, 0, (size_t)(2 * C) * sizeof(float));
        for (int64_t r = r0; r < r1; r++) {
            const float *xr = X + r * C, *dyr = dY + r * C;
            const float mu = mean[r], rs = rstd[r];
            /* Two row sums: mean of g and mean of g * xhat; and the row's part of dw, db. */
            double sg = 0.0, sgx = 0.0;
            if (pw) {
#pragma omp simd reduction(+ : sg, sgx)
                for (int64_t j = 0; j < C; j++) {
                    const float xh = (xr[j] - mu) * rs, g = W ? dyr[j] * W[j] : dyr[j];
                    sg += g;
                    sgx += g * xh;
                    pw[j] += dyr[j] * xh;
                    pb[j] += dyr[j];
                }
            } else {
#pragma omp simd reduction(+ : sg, sgx)
                for (int64_t j = 0; j < C; j++) {
                    const float xh = (xr[j] - mu) * rs, g = W ? dyr[j] * W[j] : dyr[j];
                    sg += g;
                    sgx += g * xh;
                }
            }
            if (!dX) continue;
            const float mg = (float)(sg / (double)C), mgx = (float)(sgx / (double)C);
            float *dxr = dX + r * C;
            if (beta == 0.0f) {
#pragma omp simd
                for (int64_t j = 0; j < C; j++) {
                    const float xh = (xr[j] - mu) * rs, g = W ? dyr[j] * W[j] : dyr[j];
                    dxr[j] = rs * (g - mg - xh * mgx);
                }
            } else {
#pragma omp simd
                for (int64_t j = 0; j < C; j++) {
                    const float xh = (xr[j] - mu) * rs, g = W ? dyr[j] * W[j] : dyr[j];
                    dxr[j] += rs * (g - mg - xh * mgx);
                }
            }
        }
    }
    if (!part) return;
#pragma omp parallel for schedule(static) if (nchunk * C > LN_PAR)
    for (int64_t j0 = 0; j0 < C; j0 += LN_COLS) {
        const int64_t j1 = j0 + LN_COLS < C ? j0 + LN_COLS : C;
        double sw[LN_COLS] = { 0 }, sb[LN_COLS] = { 0 };
        for (int64_t k = 0; k < nchunk; k++) {
            const float *pw = part + k * 2 * C, *pb = pw + C;
            for (int64_t j = j0; j < j1; j++) {
                sw[j - j0] += pw[j];
                sb[j - j0] += pb[j];
            }
        }
        for (int64_t j = j0; j < j1; j++) {
            if (dW) dW[j] += (float)sw[j - j0];
            if (dB) dB[j] += (float)sb[j - j0];
        }
    }
}

ts_tensor *ts_layernorm(ts_ctx *c, const ts_tensor *x, const ts_tensor *w, const ts_tensor *b,
                        float eps) {
    char sx[96], sp[96];
    ts__check_f32("layernorm", x);
    TS_CHECK(x->ndim >= 1, "layernorm: x must have at least one dim, got %s",
             ts_shape_str(x, sx, sizeof sx));
    const int64_t C = ts_dim(x, -1), R = x->numel / (C ? C : 1);
    if (w) {
        ts__check_f32("layernorm", w);
        TS_CHECK(w->ndim == 1 && w->shape[0] == C, "layernorm: w %s does not match x %s",
                 ts_shape_str(w, sp, sizeof sp), ts_shape_str(x, sx, sizeof sx));
    }
    if (b) {
        ts__check_f32("layernorm", b);
        TS_CHECK(b->ndim == 1 && b->shape[0] == C, "layernorm: b %s does not match x %s",
                 ts_shape_str(b, sp, sizeof sp), ts_shape_str(x, sx, sizeof sx));
    }

    ts_tensor *y = ts_new_like(c, x);
    ts_tensor *mean = ts_new_f32(c, 1, TS_SHAPE(R)), *rstd = ts_new_f32(c, 1, TS_SHAPE(R));
    const float *X = ts_f32(x), *W = w ? ts_f32(w) : NULL, *Bv = b ? ts_f32(b) : NULL;
    float *Y = ts_f32(y), *M = ts_f32(mean), *RS = ts_f32(rstd);

#pragma omp parallel for if (R * C > LN_PAR)
    for (int64_t r = 0; r < R; r++) {
        const float *xr = X + r * C;
        float *yr = Y + r * C;
        /* Two passes in double: the mean, then the biased variance around it. The simd
         * pragmas let the compiler split a sum over vector lanes, a reordering that plain
         * C forbids for floating point. */
        double s = 0.0;
#pragma omp simd reduction(+ : s)
        for (int64_t j = 0; j < C; j++) s += xr[j];
        const double mu = s / (double)C;
        double v = 0.0;
#pragma omp simd reduction(+ : v)
        for (int64_t j = 0; j < C; j++) {
            double d = xr[j] - mu;
            v += d * d;
        }
        const float muf = (float)mu, rs = (float)(1.0 / sqrt(v / (double)C + (double)eps));
        M[r] = muf;
        RS[r] = rs;
        for (int64_t j = 0; j < C; j++) {
            float xh = (xr[j] - muf) * rs;
            if (W) xh *= W[j];
            if (Bv) xh += Bv[j];
            yr[j] = xh;
        }
    }

    ts_node *n = TS__RECORD(c, TS_OP_LAYERNORM, layernorm_backward, y, x, w, b);
    if (n) {
        n->saved[0] = mean;
        n->saved[1] = rstd;
        n->f[0] = eps;
    }
    return y;
}
