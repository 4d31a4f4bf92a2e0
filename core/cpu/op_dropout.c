/* op_dropout.c: inverted dropout, forward and backward.
 *
 * In training each element is kept with probability 1 - p and scaled by 1/(1-p), so the
 * expected output equals the input and evaluation needs no rescaling. The keep mask is drawn
 * from the context's RNG stream, one uniform per element in order, so the same RNG state gives
 * the same mask (a resumed run, or the gradient check's repeated evaluations). The mask is
 * saved as u8 in the step arena for the backward: dx = dy * mask / (1 - p). Out of training,
 * or with p == 0, dropout is the identity and returns its input itself, as PyTorch does.
 *
 * What this file deliberately is not: a random stream per thread. Drawing the mask is serial
 * so that it does not depend on the thread count; applying it is parallel.
 *
 * Shapes: x (any), y like x, mask u8 like x.
 */
#include "../tessera-impl.h"

#define PAR_MIN 32768

static void dropout_backward(ts_ctx *c, ts_node *n) {
    float *dx = ts__grad(c, n->in[0]);
    if (!dx) return;
    const float *dy = ts_f32(n->out->grad);
    const uint8_t *m = n->saved[0]->data;
    float s = n->f[0];
    int64_t N = n->out->numel;
#pragma omp parallel for if (N > PAR_MIN)
    for (int64_t i = 0; i < N; i++) dx[i] += dy[i] * (s * (float)m[i]);
}

ts_tensor *ts_dropout(ts_ctx *c, const ts_tensor *x, float p) {
    ts__check_f32("dropout", x);
    TS_CHECK(p >= 0.0f && p <= 1.0f, "dropout: p = %g is not a probability", (double)p);
    if (!c->training || p == 0.0f) return (ts_tensor *)x;
    int64_t N = x->numel;
    ts_tensor *mask = ts_new(c, TS_U8, x->ndim, x->shape);
    uint8_t *m = mask->data;
    for (int64_t i = 0; i < N; i++) m[i] = ts_rng_uniform(&c->rng) >= p;
    float s = p < 1.0f ? 1.0f / (1.0f - p) : 0.0f; /* p == 1 drops everything */
    ts_tensor *y = ts_new(c, TS_F32, x->ndim, x->shape);
    const float *X = ts_f32(x);
    float *Y = ts_f32(y);
#pragma omp parallel for if (N > PAR_MIN)
    for (int64_t i = 0; i < N; i++) Y[i] = X[i] * (s * (float)m[i]);
    ts_node *n = TS__RECORD(c, TS_OP_DROPOUT, dropout_backward, y, x);
    if (n) {
        n->saved[0] = mask;
        n->f[0] = s;
    }
    return y;
}
