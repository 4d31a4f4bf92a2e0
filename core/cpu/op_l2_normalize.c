/* op_l2_normalize.c: L2 normalisation over the last dim, forward and backward.
 *
 * y = x / max(||x||_2, eps) row by row, as torch.nn.functional.normalize(x, dim=-1). CLIP-style
 * objectives normalise both embeddings with it before the similarity matrix. With d the
 * denominator of a row, the backward is
 *     dx = dy / d - x (x . dy) / d^3   when ||x|| > eps (d = ||x||),
 *     dx = dy / eps                    otherwise (d is the constant eps).
 * The forward saves d per row so the backward needs no second pass over x for the norm.
 *
 * What this file deliberately is not: a p-norm other than 2, or a normalisation over another
 * dim (permute first).
 *
 * Shapes: x (..., C) seen as (R, C), y like x, saved d (R).
 */
#include "../tessera-impl.h"

#include <math.h>

#define PAR_MIN 16384

static void l2n_backward(ts_ctx *c, ts_node *n) {
    float *dx = ts__grad(c, n->in[0]);
    if (!dx) return;
    const float *X = ts_f32(n->in[0]), *dY = ts_f32(n->out->grad), *D = ts_f32(n->saved[0]);
    int64_t C = n->i[0], R = n->i[1];
    float eps = n->f[0];
#pragma omp parallel for if (R * C > PAR_MIN)
    for (int64_t r = 0; r < R; r++) {
        const float *x = X + r * C, *dy = dY + r * C;
        float *g = dx + r * C;
        float inv = 1.0f / D[r];
        if (D[r] > eps) {
            float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
            for (int64_t j = 0; j < C; j++) dot += x[j] * dy[j];
            float k = dot * inv * inv * inv;
            for (int64_t j = 0; j < C; j++) g[j] += dy[j] * inv - x[j] * k;
        } else {
            for (int64_t j = 0; j < C; j++) g[j] += dy[j] * inv;
        }
    }
}

ts_tensor *ts_l2_normalize(ts_ctx *c, const ts_tensor *x, float eps) {
    char sx[96];
    ts__check_f32("l2_normalize", x);
    TS_CHECK(x->ndim >= 1 && eps > 0.0f, "l2_normalize: x %s needs a last dim and eps %g > 0",
             ts_shape_str(x, sx, sizeof sx), (double)eps);
    int64_t C = x->shape[x->ndim - 1], R = C ? x->numel / C : 0;
    ts_tensor *y = ts_new(c, TS_F32, x->ndim, x->shape);
    ts_tensor *d = ts_new(c, TS_F32, 1, TS_SHAPE(R));
    const float *X = ts_f32(x);
    float *Y = ts_f32(y), *D = ts_f32(d);
#pragma omp parallel for if (R * C > PAR_MIN)
    for (int64_t r = 0; r < R; r++) {
        const float *xr = X + r * C;
        float *yr = Y + r * C;
        float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
        for (int64_t j = 0; j < C; j++) ss += xr[j] * xr[j];
        float nrm = sqrtf(ss);
        D[r] = nrm > eps ? nrm : eps;
        float inv = 1.0f / D[r];
        for (int64_t j = 0; j < C; j++) yr[j] = xr[j] * inv;
    }
    ts_node *n = TS__RECORD(c, TS_OP_L2_NORMALIZE, l2n_backward, y, x);
    if (n) {
        n->saved[0] = d;
        n->i[0] = C;
        n->i[1] = R;
        n->f[0] = eps;
    }
    return y;
}
