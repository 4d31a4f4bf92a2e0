/* op_slice.c: a contiguous range along one dim, forward and backward.
 *
 * slice(a, d, start, end) keeps indices start .. end-1 of dim d, as a.narrow(d, start,
 * end - start) in PyTorch; negative start and end count from the end of the dim. Seen as
 * (O, L, I) the output is (O, end - start, I): each output row is one contiguous run of the
 * input row, and the backward adds dy into the same run of the input's gradient.
 *
 * What this file deliberately is not: a strided or stepped slice, or a view. The output is a
 * copy, like every other op's.
 *
 * Shapes: a (..., L, ...), y (..., end - start, ...).
 */
#include "../tessera-impl.h"

#define PAR_MIN 32768

static void slice_backward(ts_ctx *c, ts_node *n) {
    float *da = ts__grad(c, n->in[0]);
    if (!da) return;
    int64_t O = n->i[0], L = n->i[1], I = n->i[2], start = n->i[3], len = n->i[4];
    int64_t w = len * I;
    const float *dy = ts_f32(n->out->grad);
#pragma omp parallel for if (n->out->numel > PAR_MIN)
    for (int64_t o = 0; o < O; o++) {
        float *dst = da + o * L * I + start * I;
        const float *src = dy + o * w;
        for (int64_t j = 0; j < w; j++) dst[j] += src[j];
    }
}

ts_tensor *ts_slice(ts_ctx *c, const ts_tensor *a, int dim, int64_t start, int64_t end) {
    char sa[96];
    ts__check_f32("slice", a);
    TS_CHECK(dim >= -a->ndim && dim < a->ndim, "slice: dim %d out of range for %s", dim,
             ts_shape_str(a, sa, sizeof sa));
    if (dim < 0) dim += a->ndim;
    int64_t L = a->shape[dim];
    if (start < 0) start += L;
    if (end < 0) end += L;
    TS_CHECK(start >= 0 && start <= end && end <= L,
             "slice: range [%lld, %lld) does not fit dim %d of %s", (long long)start,
             (long long)end, dim, ts_shape_str(a, sa, sizeof sa));
    int64_t shape[TS_MAX_DIMS];
    for (int i = 0; i < a->ndim; i++) shape[i] = a->shape[i];
    shape[dim] = end - start;
    ts_tensor *y = ts_new(c, TS_F32, a->ndim, shape);
    int64_t O = ts__prod(a->shape, 0, dim), I = ts__prod(a->shape, dim + 1, a->ndim);
    int64_t w = (end - start) * I;
    const float *A = ts_f32(a);
    float *Y = ts_f32(y);
#pragma omp parallel for if (y->numel > PAR_MIN)
    for (int64_t o = 0; o < O; o++) {
        const float *src = A + o * L * I + start * I;
        float *dst = Y + o * w;
        for (int64_t j = 0; j < w; j++) dst[j] = src[j];
    }
    ts_node *n = TS__RECORD(c, TS_OP_SLICE, slice_backward, y, a);
    if (n) {
        n->i[0] = O;
        n->i[1] = L;
        n->i[2] = I;
        n->i[3] = start;
        n->i[4] = end - start;
    }
    return y;
}
