/* op_concat.c: concatenation along one dim, forward and backward.
 *
 * Along dim d every input is seen as (O, L_k * I): O the product of the dims before d, L_k its
 * own size along d, I the product of the dims after d. The output row o is then the inputs'
 * rows o laid end to end, so both directions are runs of memcpy-like loops. The backward adds
 * each input's part of dy into that input's gradient.
 *
 * A tape node holds at most TS__MAX_IN inputs, so a concat of more tensors is built as a tree
 * of concats of at most that many; the intermediate copies are the price of keeping the node
 * layout fixed. What this file deliberately is not: stack (reshape each input to add a size-1
 * dim, then concat) or a concat that writes into a preallocated output.
 *
 * Shapes: xs[k] (..., L_k, ...) with equal other dims; y (..., sum_k L_k, ...).
 */
#include "../tessera-impl.h"

#define PAR_MIN 32768

static void concat_backward(ts_ctx *c, ts_node *n) {
    int64_t O = n->i[0], Ly = n->out->numel / (O ? O : 1); /* Ly = sum_k L_k * I */
    const float *dy = ts_f32(n->out->grad);
    int64_t off = 0;
    for (int k = 0; k < n->nin; k++) {
        ts_tensor *x = n->in[k];
        int64_t w = x->numel / (O ? O : 1); /* L_k * I */
        float *dx = ts__grad(c, x);
        if (dx) {
#pragma omp parallel for if (x->numel > PAR_MIN)
            for (int64_t o = 0; o < O; o++) {
                const float *src = dy + o * Ly + off;
                float *dst = dx + o * w;
                for (int64_t j = 0; j < w; j++) dst[j] += src[j];
            }
        }
        off += w;
    }
}

/* One node's worth of inputs: n <= TS__MAX_IN. */
static ts_tensor *concat_node(ts_ctx *c, ts_tensor *const *xs, int n, int dim) {
    const ts_tensor *x0 = xs[0];
    char s0[96], sk[96];
    int64_t shape[TS_MAX_DIMS];
    for (int i = 0; i < x0->ndim; i++) shape[i] = x0->shape[i];
    shape[dim] = 0;
    for (int k = 0; k < n; k++) {
        const ts_tensor *x = xs[k];
        ts__check_f32("concat", x);
        int ok = x->ndim == x0->ndim;
        for (int i = 0; ok && i < x0->ndim; i++) ok = i == dim || x->shape[i] == x0->shape[i];
        TS_CHECK(ok, "concat: input %d %s does not match input 0 %s outside dim %d", k,
                 ts_shape_str(x, sk, sizeof sk), ts_shape_str(x0, s0, sizeof s0), dim);
        shape[dim] += x->shape[dim];
    }
    ts_tensor *y = ts_new(c, TS_F32, x0->ndim, shape);
    int64_t O = ts__prod(shape, 0, dim), I = ts__prod(shape, dim + 1, x0->ndim);
    int64_t Ly = shape[dim] * I;
    float *Y = ts_f32(y);
    int64_t off = 0;
    for (int k = 0; k < n; k++) {
        const float *X = ts_f32(xs[k]);
        int64_t w = xs[k]->shape[dim] * I;
#pragma omp parallel for if (xs[k]->numel > PAR_MIN)
        for (int64_t o = 0; o < O; o++) {
            const float *src = X + o * w;
            float *dst = Y + o * Ly + off;
            for (int64_t j = 0; j < w; j++) dst[j] = src[j];
        }
        off += w;
    }
    const ts_tensor *in[TS__MAX_IN];
    for (int k = 0; k < n; k++) in[k] = xs[k];
    ts_node *nd = ts__record(c, TS_OP_CONCAT, concat_backward, y, n, in);
    if (nd) nd->i[0] = O;
    return y;
}

ts_tensor *ts_concat(ts_ctx *c, ts_tensor *const *xs, int n, int dim) {
    TS_CHECK(n >= 1, "concat: needs at least one input, got %d", n);
    char s0[96];
    int nd = xs[0]->ndim;
    TS_CHECK(dim >= -nd && dim < nd, "concat: dim %d out of range for %s", dim,
             ts_shape_str(xs[0], s0, sizeof s0));
    if (dim < 0) dim += nd;
    if (n <= TS__MAX_IN) return concat_node(c, xs, n, dim);
    /* More inputs than a node holds: concat groups of TS__MAX_IN, then concat the groups. */
    int ng = (n + TS__MAX_IN - 1) / TS__MAX_IN;
    ts_tensor **parts = ts_arena_alloc(c->step, (size_t)ng * sizeof *parts);
    for (int g = 0; g < ng; g++) {
        int k0 = g * TS__MAX_IN, k1 = k0 + TS__MAX_IN < n ? k0 + TS__MAX_IN : n;
        parts[g] = concat_node(c, xs + k0, k1 - k0, dim);
    }
    return ts_concat(c, parts, ng, dim);
}
