/* op_reshape.c: reshape, forward and backward.
 *
 * Every tensor is contiguous, so a reshape never moves data: the output is a new tensor header
 * (its own shape, its own grad, its own tape node) over the input's data. That is safe because
 * no op writes its inputs in place. The backward hands dy's buffer to the input as its gradient
 * when the input has none yet (ts__grad_share), and otherwise adds dy, element for element, into
 * the input's gradient, which has the same layout.
 *
 * What this file deliberately is not: a view mechanism. There are no strides; a reshape that
 * would need a different element order is a permute (op_permute.c).
 *
 * Shapes: a (any), y (shape) with the same number of elements; one dim of shape may be -1.
 */
#include "../tessera-impl.h"

#define PAR_MIN 32768

static void reshape_backward(ts_ctx *c, ts_node *n) {
    /* da is dy with another shape: a that has no gradient yet takes dy's buffer, no copy */
    if (ts__grad_share(c, n, n->in[0])) return;
    float *da = ts__grad(c, n->in[0]);
    if (!da) return;
    const float *dy = ts_f32(n->out->grad);
    int64_t N = n->out->numel;
#pragma omp parallel for if (N > PAR_MIN)
    for (int64_t i = 0; i < N; i++) da[i] += dy[i];
}

ts_tensor *ts_reshape(ts_ctx *c, const ts_tensor *a, int ndim, const int64_t *shape) {
    char sa[96];
    TS_CHECK(ndim >= 1 && ndim <= TS_MAX_DIMS, "reshape: %d dims asked for %s (1 to %d)", ndim,
             ts_shape_str(a, sa, sizeof sa), TS_MAX_DIMS);
    int64_t s[TS_MAX_DIMS], known = 1;
    int infer = -1;
    for (int i = 0; i < ndim; i++) {
        s[i] = shape[i];
        if (s[i] == -1) {
            TS_CHECK(infer < 0, "reshape: more than one -1 in the shape asked for %s",
                     ts_shape_str(a, sa, sizeof sa));
            infer = i;
        } else {
            TS_CHECK(s[i] >= 0, "reshape: dim %d is %lld", i, (long long)s[i]);
            known *= s[i];
        }
    }
    if (infer >= 0) {
        TS_CHECK(known > 0 && a->numel % known == 0, "reshape: cannot infer the -1 dim: %s has "
                 "%lld elements, the other dims make %lld", ts_shape_str(a, sa, sizeof sa),
                 (long long)a->numel, (long long)known);
        s[infer] = a->numel / known;
        known *= s[infer];
    }
    ts_tensor *y = ts__header(c, a->dtype, ndim, s);
    char sy[96];
    TS_CHECK(y->numel == a->numel, "reshape: %s has %lld elements, %s has %lld",
             ts_shape_str(a, sa, sizeof sa), (long long)a->numel,
             ts_shape_str(y, sy, sizeof sy), (long long)y->numel);
    y->data = a->data;
    y->device = a->device;
    if (a->dtype == TS_F32) TS__RECORD(c, TS_OP_RESHAPE, reshape_backward, y, a);
    return y;
}
