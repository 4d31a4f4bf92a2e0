/* op_batchnorm1d.c: batch normalisation over (N, C) on the CPU, forward and backward.
 *
 * As torch.nn.functional.batch_norm on a 2-d input: every channel (column) is normalised by a
 * mean and a variance over the batch (rows). In training mode (c->training) those are the
 * batch's own statistics (biased variance), and running_mean / running_var are updated in
 * place with momentum, the variance entering them unbiased (times N / (N - 1)), exactly as
 * torch does. In eval mode the running statistics normalise and nothing is updated. When
 * both running tensors are NULL the batch statistics are used in either mode, as torch's
 * track_running_stats=False. It deliberately is not BatchNorm2d (no spatial dims) and does
 * not synchronise statistics across ranks.
 *
 * Shapes: x (N, C), w and b (C) or NULL, running_mean and running_var (C) or both NULL,
 * y (N, C); the mean and 1 / sqrt(var + eps) that normalised, (C) each, saved for backward.
 */
#include "../tessera-impl.h"

#include <math.h>

/* Work above this many elements is split over the OpenMP threads. */
#define BN_PAR 32768
/* Column sums over the batch go in blocks of this many channels, one block per thread. */
#define BN_COLS 64

/* The backward, written out once. With xhat = (x - mean) * rstd and y = xhat * w + b:
 *
 *   db += sum over the batch of dy
 *   dw += sum over the batch of dy * xhat
 *
 * In training mode mean and rstd depend on x, and differentiating through them gives, per
 * channel with g = dy * w,
 *
 *   dx += rstd * (g - mean_N(g) - xhat * mean_N(g * xhat))
 *
 * the layernorm formula with rows and columns swapped. In eval mode the statistics are
 * constants and dx += g * rstd. */
static void batchnorm1d_backward(ts_ctx *c, ts_node *n) {
    ts_tensor *x = n->in[0], *w = n->in[1], *b = n->in[2];
    const int64_t N = x->shape[0], C = x->shape[1];
    const int batch_stats = (int)n->i[0];
    const float *X = ts_f32(x), *dY = ts_f32(n->out->grad), *W = w ? ts_f32(w) : NULL;
    const float *mean = ts_f32(n->saved[0]), *rstd = ts_f32(n->saved[1]); /* (C) */
    float *dX = ts__grad(c, x), *dW = ts__grad(c, w), *dB = ts__grad(c, b);

    /* Per channel: sum of dy and of dy * xhat over the batch. */
    float *sdy = ts_arena_alloc(c->step, (size_t)(C ? C : 1) * sizeof(float));   /* (C) */
    float *sdyx = ts_arena_alloc(c->step, (size_t)(C ? C : 1) * sizeof(float));  /* (C) */
    const int64_t nblk = (C + BN_COLS - 1) / BN_COLS;
#pragma omp parallel for if (N * C > BN_PAR)
    for (int64_t blk = 0; blk < nblk; blk++) {
        const int64_t j0 = blk * BN_COLS, j1 = j0 + BN_COLS < C ? j0 + BN_COLS : C;
        double s1[BN_COLS] = { 0 }, s2[BN_COLS] = { 0 };
        for (int64_t r = 0; r < N; r++) {
            const float *xr = X + r * C, *dyr = dY + r * C;
            for (int64_t j = j0; j < j1; j++) {
                s1[j - j0] += dyr[j];
                s2[j - j0] += dyr[j] * ((xr[j] - mean[j]) * rstd[j]);
            }
        }
        for (int64_t j = j0; j < j1; j++) {
            sdy[j] = (float)s1[j - j0];
            sdyx[j] = (float)s2[j - j0];
            if (dB) dB[j] += sdy[j];
            if (dW) dW[j] += sdyx[j];
        }
    }
    if (!dX) return;
    const float invN = 1.0f / (float)N;
#pragma omp parallel for if (N * C > BN_PAR)
    for (int64_t r = 0; r < N; r++) {
        const float *xr = X + r * C, *dyr = dY + r * C;
        float *dxr = dX + r * C;
        if (batch_stats) {
            for (int64_t j = 0; j < C; j++) {
                const float wj = W ? W[j] : 1.0f;
                const float xh = (xr[j] - mean[j]) * rstd[j];
                dxr[j] += wj * rstd[j] * (dyr[j] - sdy[j] * invN - xh * sdyx[j] * invN);
            }
        } else {
            for (int64_t j = 0; j < C; j++) dxr[j] += dyr[j] * (W ? W[j] : 1.0f) * rstd[j];
        }
    }
}

static void check_channel_vec(const char *what, const ts_tensor *t, const ts_tensor *x) {
    char st[96], sx[96];
    ts__check_f32("batchnorm1d", t);
    TS_CHECK(t->ndim == 1 && t->shape[0] == x->shape[1], "batchnorm1d: %s %s does not match "
             "the channels of x %s", what, ts_shape_str(t, st, sizeof st),
             ts_shape_str(x, sx, sizeof sx));
}

ts_tensor *ts_batchnorm1d(ts_ctx *c, const ts_tensor *x, const ts_tensor *w, const ts_tensor *b,
                          ts_tensor *running_mean, ts_tensor *running_var, float momentum,
                          float eps) {
    char sx[96];
    ts__check_f32("batchnorm1d", x);
    TS_CHECK(x->ndim == 2, "batchnorm1d: x must be (N, C), got %s", ts_shape_str(x, sx, sizeof sx));
    if (w) check_channel_vec("w", w, x);
    if (b) check_channel_vec("b", b, x);
    TS_CHECK(!running_mean == !running_var,
             "batchnorm1d: running_mean and running_var must both be given or both be NULL");
    if (running_mean) {
        check_channel_vec("running_mean", running_mean, x);
        check_channel_vec("running_var", running_var, x);
    }
    const int64_t N = x->shape[0], C = x->shape[1];
    const int batch_stats = c->training || !running_mean;
    TS_CHECK(!batch_stats || N > 1, "batchnorm1d: batch statistics need more than one row, "
             "x is %s", ts_shape_str(x, sx, sizeof sx));

    const float *X = ts_f32(x), *W = w ? ts_f32(w) : NULL, *Bv = b ? ts_f32(b) : NULL;
    ts_tensor *mean = ts_new_f32(c, 1, TS_SHAPE(C)), *rstd = ts_new_f32(c, 1, TS_SHAPE(C));
    float *M = ts_f32(mean), *RS = ts_f32(rstd);

    if (batch_stats) {
        float *RM = running_mean ? ts_f32(running_mean) : NULL;
        float *RV = running_var ? ts_f32(running_var) : NULL;
        const int64_t nblk = (C + BN_COLS - 1) / BN_COLS;
#pragma omp parallel for if (N * C > BN_PAR)
        for (int64_t blk = 0; blk < nblk; blk++) {
            const int64_t j0 = blk * BN_COLS, j1 = j0 + BN_COLS < C ? j0 + BN_COLS : C;
            /* Two passes in double per channel: the mean, then the squares around it. */
            double s[BN_COLS] = { 0 }, v[BN_COLS] = { 0 };
            for (int64_t r = 0; r < N; r++)
                for (int64_t j = j0; j < j1; j++) s[j - j0] += X[r * C + j];
            for (int64_t j = j0; j < j1; j++) s[j - j0] /= (double)N;
            for (int64_t r = 0; r < N; r++)
                for (int64_t j = j0; j < j1; j++) {
                    double d = X[r * C + j] - s[j - j0];
                    v[j - j0] += d * d;
                }
            for (int64_t j = j0; j < j1; j++) {
                const double mu = s[j - j0], var = v[j - j0] / (double)N;
                M[j] = (float)mu;
                RS[j] = (float)(1.0 / sqrt(var + (double)eps));
                if (RM && c->training) {
                    /* torch's update: the mean as is, the variance unbiased. */
                    RM[j] = (float)((1.0 - momentum) * RM[j] + momentum * mu);
                    RV[j] = (float)((1.0 - momentum) * RV[j] +
                                    momentum * var * (double)N / (double)(N - 1));
                }
            }
        }
    } else {
        const float *RM = ts_f32(running_mean), *RV = ts_f32(running_var);
        for (int64_t j = 0; j < C; j++) {
            M[j] = RM[j];
            RS[j] = (float)(1.0 / sqrt((double)RV[j] + (double)eps));
        }
    }

    ts_tensor *y = ts_new_like(c, x);
    float *Y = ts_f32(y);
#pragma omp parallel for if (N * C > BN_PAR)
    for (int64_t r = 0; r < N; r++) {
        const float *xr = X + r * C;
        float *yr = Y + r * C;
        for (int64_t j = 0; j < C; j++) {
            float v = (xr[j] - M[j]) * RS[j];
            if (W) v *= W[j];
            if (Bv) v += Bv[j];
            yr[j] = v;
        }
    }

    ts_node *n = TS__RECORD(c, TS_OP_BATCHNORM1D, batchnorm1d_backward, y, x, w, b);
    if (n) {
        n->saved[0] = mean;
        n->saved[1] = rstd;
        n->i[0] = batch_stats;
        n->f[0] = momentum;
        n->f[1] = eps;
    }
    return y;
}
