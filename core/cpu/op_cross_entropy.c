/* op_cross_entropy.c: fused softmax cross-entropy on the CPU, forward and backward.
 *
 * The mean over rows of -log softmax(logits)[target], as torch.nn.functional.cross_entropy
 * with reduction='mean', class-index targets, ignore_index and label_smoothing. Fused: the
 * forward keeps one log-sum-exp per row and never writes the (N, K) log-probabilities, and
 * the backward writes softmax minus the smoothed one-hot straight into the logits' gradient.
 * It deliberately is not the general loss: no class weights, no probability targets, no
 * 'sum' or 'none' reduction, and logits are 2-d (flatten (B, T, V) to (B*T, V) first).
 *
 * Shapes: logits (N, K) f32, targets (N) i32, loss (1), lse (N) saved for the backward.
 */
#include "../tessera-impl.h"

#include <math.h>

/* Work above this many elements is split over the OpenMP threads. */
#define CE_PAR 32768

/* The math. Per row with lse = log(sum_k exp(x_k)), log p_k = x_k - lse and smoothing e:
 *
 *   loss_i = (1 - e) * (lse - x_t) + (e / K) * sum_k (lse - x_k)
 *   loss   = sum over rows whose target is not ignore_index of loss_i, divided by their count
 *
 * which is torch's definition: the smoothed target puts 1 - e + e/K on the true class and
 * e/K on every other class. Differentiating, with M the count of rows kept:
 *
 *   dx_ik = dloss / M * (p_k - e / K - (1 - e) * [k == t])
 *
 * and zero for ignored rows. When every row is ignored the mean is 0/0 = NaN, as in torch. */
static void cross_entropy_backward(ts_ctx *c, ts_node *n) {
    ts_tensor *x = n->in[0], *t = n->in[1];
    const int64_t N = x->shape[0], K = x->shape[1];
    const int ignore = (int)n->i[0];
    const int64_t kept = n->i[1];
    const float e = n->f[0];
    const float *X = ts_f32(x), *lse = ts_f32(n->saved[0]);
    const int32_t *T = ts_i32(t);
    float *dX = ts__grad(c, x);
    if (!dX || kept == 0) return;
    const float scale = ts_f32(n->out->grad)[0] / (float)kept;
    const float off = e / (float)K, on = 1.0f - e;
#pragma omp parallel for if (N * K > CE_PAR)
    for (int64_t r = 0; r < N; r++) {
        if (T[r] == ignore) continue;
        const float *xr = X + r * K;
        float *dxr = dX + r * K;
        const float l = lse[r];
        for (int64_t k = 0; k < K; k++) dxr[k] += scale * (expf(xr[k] - l) - off);
        dxr[T[r]] -= scale * on;
    }
}

ts_tensor *ts_cross_entropy(ts_ctx *c, const ts_tensor *logits, const ts_tensor *targets,
                            int ignore_index, float label_smoothing) {
    char sx[96], st[96];
    ts__check_f32("cross_entropy", logits);
    TS_CHECK(targets->dtype == TS_I32, "cross_entropy: targets must be i32, got %s",
             ts_dtype_name(targets->dtype));
    TS_CHECK(logits->ndim == 2 && targets->ndim == 1 && targets->shape[0] == logits->shape[0],
             "cross_entropy: logits %s must be (N, K) and targets %s (N)",
             ts_shape_str(logits, sx, sizeof sx), ts_shape_str(targets, st, sizeof st));
    TS_CHECK(logits->shape[1] > 0, "cross_entropy: logits %s have no classes",
             ts_shape_str(logits, sx, sizeof sx));
    TS_CHECK(label_smoothing >= 0.0f && label_smoothing <= 1.0f,
             "cross_entropy: label_smoothing %g is outside [0, 1]", (double)label_smoothing);
    const int64_t N = logits->shape[0], K = logits->shape[1];
    const float *X = ts_f32(logits);
    const int32_t *T = ts_i32(targets);

    /* Targets first, serially: a class out of range is a bug in the caller's data path. */
    int64_t kept = 0;
    for (int64_t r = 0; r < N; r++) {
        if (T[r] == ignore_index) continue;
        TS_CHECK(T[r] >= 0 && T[r] < K, "cross_entropy: target %d of row %lld is outside "
                 "[0, %lld) and is not ignore_index %d", (int)T[r], (long long)r, (long long)K,
                 ignore_index);
        kept++;
    }

    ts_tensor *lse = ts_new_f32(c, 1, TS_SHAPE(N));
    float *L = ts_f32(lse);
    double *row_loss = ts_arena_alloc(c->step, (size_t)(N ? N : 1) * sizeof(double)); /* (N) */
    const double e = label_smoothing;
#pragma omp parallel for if (N * K > CE_PAR)
    for (int64_t r = 0; r < N; r++) {
        const float *xr = X + r * K;
        float m = xr[0];
        /* The row maximum; simd lets the comparisons run over vector lanes. */
#pragma omp simd reduction(max : m)
        for (int64_t k = 1; k < K; k++) m = xr[k] > m ? xr[k] : m;
        double s = 0.0, sx_ = 0.0;
        for (int64_t k = 0; k < K; k++) {
            s += expf(xr[k] - m);
            sx_ += xr[k];
        }
        const double l = (double)m + log(s);
        L[r] = (float)l;
        if (T[r] == ignore_index) {
            row_loss[r] = 0.0;
            continue;
        }
        const double nll = l - xr[T[r]];
        const double smooth = (double)K * l - sx_; /* sum_k (lse - x_k) */
        row_loss[r] = (1.0 - e) * nll + e / (double)K * smooth;
    }
    /* The mean in a fixed order, so the loss does not depend on the thread count. */
    double total = 0.0;
    for (int64_t r = 0; r < N; r++) total += row_loss[r];

    ts_tensor *y = ts_new_f32(c, 1, TS_SHAPE(1));
    ts_f32(y)[0] = kept ? (float)(total / (double)kept) : NAN;
    ts_node *n = TS__RECORD(c, TS_OP_CROSS_ENTROPY, cross_entropy_backward, y, logits, targets);
    if (n) {
        n->saved[0] = lse;
        n->i[0] = ignore_index;
        n->i[1] = kept;
        n->f[0] = label_smoothing;
    }
    return y;
}
