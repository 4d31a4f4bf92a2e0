/* op_permute.c: permute and transpose, forward and backward.
 *
 * perm[i] names the input dim that becomes output dim i, as torch.Tensor.permute. The output
 * is materialised (tessera has no strided views): each output row (the last output dim) is
 * gathered from the input with that dim's input stride, and the backward scatters dy back the
 * same way. A permutation touches every element once, so threads can own output rows without
 * any two writing the same gradient element. transpose swaps two dims through permute and
 * records a permute node.
 *
 * What this file deliberately is not: a tuned transpose. There is no cache blocking; where a
 * product needs a transposed operand, matmul's TS_TRANS_A / TS_TRANS_B flags cost nothing.
 *
 * Shapes: a (d0, ..., d{n-1}), y (d{perm[0]}, ..., d{perm[n-1]}).
 */
#include "../tessera-impl.h"

#define PAR_MIN 32768

/* Walk y in order; for each output row call the kernel with the input offset of its start.
 * st[i] is the input stride of output dim i. scatter = 0: y[row] = a[gather]; scatter = 1:
 * da[gather] += dy[row]. */
static void permute_copy(float *a, float *y, int ndim, const int64_t *yshape, const int64_t *st,
                         int scatter) {
    int64_t L = yshape[ndim - 1], sl = st[ndim - 1];
    int64_t rows = ts__prod(yshape, 0, ndim - 1), N = rows * L;
#pragma omp parallel for if (N > PAR_MIN)
    for (int64_t row = 0; row < rows; row++) {
        /* Input offset of the row's first element: its multi-index times the strides. */
        int64_t off = 0, rem = row;
        for (int d = ndim - 2; d >= 0; d--) {
            off += (rem % yshape[d]) * st[d];
            rem /= yshape[d];
        }
        float *yr = y + row * L;
        const float *ar = a + off;
        if (!scatter) {
            if (sl == 1)
                for (int64_t j = 0; j < L; j++) yr[j] = ar[j];
            else
                for (int64_t j = 0; j < L; j++) yr[j] = ar[j * sl];
        } else {
            float *dr = a + off;
            if (sl == 1)
                for (int64_t j = 0; j < L; j++) dr[j] += yr[j];
            else
                for (int64_t j = 0; j < L; j++) dr[j * sl] += yr[j];
        }
    }
}

/* Input strides of the output dims. */
static void perm_strides(const ts_tensor *a, const int64_t *perm, int64_t *st) {
    int64_t in_st[TS_MAX_DIMS];
    int64_t s = 1;
    for (int d = a->ndim - 1; d >= 0; d--) {
        in_st[d] = s;
        s *= a->shape[d];
    }
    for (int i = 0; i < a->ndim; i++) st[i] = in_st[perm[i]];
}

static void permute_backward(ts_ctx *c, ts_node *n) {
    float *da = ts__grad(c, n->in[0]);
    if (!da) return;
    int64_t st[TS_MAX_DIMS];
    perm_strides(n->in[0], n->i, st);
    permute_copy(da, ts_f32(n->out->grad), n->out->ndim, n->out->shape, st, 1);
}

ts_tensor *ts_permute(ts_ctx *c, const ts_tensor *a, const int *perm) {
    char sa[96];
    ts__check_f32("permute", a);
    TS_CHECK(a->ndim >= 1, "permute: needs at least one dim, got %s",
             ts_shape_str(a, sa, sizeof sa));
    int64_t p[TS_MAX_DIMS], shape[TS_MAX_DIMS], st[TS_MAX_DIMS];
    int seen = 0;
    for (int i = 0; i < a->ndim; i++) {
        TS_CHECK(perm[i] >= 0 && perm[i] < a->ndim && !(seen & (1 << perm[i])),
                 "permute: perm[%d] = %d is not a permutation of the dims of %s", i, perm[i],
                 ts_shape_str(a, sa, sizeof sa));
        seen |= 1 << perm[i];
        p[i] = perm[i];
        shape[i] = a->shape[perm[i]];
    }
    ts_tensor *y = ts_new(c, TS_F32, a->ndim, shape);
    perm_strides(a, p, st);
    permute_copy(ts_f32(a), ts_f32(y), a->ndim, shape, st, 0);
    ts_node *n = TS__RECORD(c, TS_OP_PERMUTE, permute_backward, y, a);
    if (n)
        for (int i = 0; i < a->ndim; i++) n->i[i] = p[i];
    return y;
}

ts_tensor *ts_transpose(ts_ctx *c, const ts_tensor *a, int d0, int d1) {
    char sa[96];
    TS_CHECK(d0 >= -a->ndim && d0 < a->ndim && d1 >= -a->ndim && d1 < a->ndim,
             "transpose: dims %d and %d out of range for %s", d0, d1,
             ts_shape_str(a, sa, sizeof sa));
    if (d0 < 0) d0 += a->ndim;
    if (d1 < 0) d1 += a->ndim;
    int perm[TS_MAX_DIMS];
    for (int i = 0; i < a->ndim; i++) perm[i] = i;
    perm[d0] = d1;
    perm[d1] = d0;
    return ts_permute(c, a, perm);
}
