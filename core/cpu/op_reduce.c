/* op_reduce.c: sum and mean over one dim or over everything, on the CPU, forward and backward.
 *
 * Reducing dim d of a tensor sees it as (O, R, I): O the product of the dims before d, R the
 * reduced dim, I the product of the dims after it. The output (O, I) drops dim d from the
 * shape; TS_ALL reduces the whole tensor (O = 1, I = 1) to shape (1), and so does reducing the
 * only dim of a 1-d tensor, because tessera has no 0-d tensors. Sums over contiguous runs
 * (I == 1) accumulate in double; sums over strided runs add whole rows of I floats, which
 * vectorises.
 *
 * What this file deliberately is not: a general reduction engine. There is no keepdim, no
 * reduction over several dims at once (reshape first) and no max/min/prod.
 */
#include "../tessera-impl.h"

#include <omp.h>

#define PAR_MIN 32768
#define BLOCK 1024

/* Geometry of one reduction: a (O, R, I) -> y (O, I). */
typedef struct red_geom { int64_t O, R, I; } red_geom;

static void reduce_backward(ts_ctx *c, ts_node *n) {
    float *da = ts__grad(c, n->in[0]);
    if (!da) return;
    const float *dy = ts_f32(n->out->grad);
    int64_t O = n->i[0], R = n->i[1], I = n->i[2], N = O * R * I;
    float s = n->f[0];
    if (I == 1) {
        /* da (O, R) += s * dy (O) broadcast along each row, in blocks of the row. */
        int64_t nb = (R + BLOCK - 1) / BLOCK;
#pragma omp parallel for collapse(2) if (N > PAR_MIN)
        for (int64_t o = 0; o < O; o++)
            for (int64_t b = 0; b < nb; b++) {
                float g = s * dy[o];
                int64_t r1 = (b + 1) * BLOCK < R ? (b + 1) * BLOCK : R;
                float *d = da + o * R;
                for (int64_t r = b * BLOCK; r < r1; r++) d[r] += g;
            }
        return;
    }
    /* da (O, R, I) += s * dy (O, I) for every r. */
#pragma omp parallel for collapse(2) if (N > PAR_MIN)
    for (int64_t o = 0; o < O; o++)
        for (int64_t r = 0; r < R; r++) {
            float *d = da + (o * R + r) * I;
            const float *g = dy + o * I;
            for (int64_t i = 0; i < I; i++) d[i] += s * g[i];
        }
}

/* Y (O, I) = s * sum_r A (O, R, I). */
static void reduce_forward(float *Y, const float *A, red_geom g, float s) {
    int64_t O = g.O, R = g.R, I = g.I, N = O * R * I;
    if (I == 1) {
        if (O == 1 && N > PAR_MIN) {
            /* One long run: fixed ranges per thread, partial sums added in thread order. */
            double part[256] = { 0 };
            int nt = omp_get_max_threads();
            if (nt > 256) nt = 256;
#pragma omp parallel num_threads(nt)
            {
                int t = omp_get_thread_num(), tn = omp_get_num_threads();
                int64_t r0 = R * t / tn, r1 = R * (t + 1) / tn;
                double acc = 0;
#pragma omp simd reduction(+ : acc)
                for (int64_t r = r0; r < r1; r++) acc += A[r];
                part[t] = acc;
            }
            double acc = 0;
            for (int t = 0; t < nt; t++) acc += part[t];
            Y[0] = (float)(s * acc);
            return;
        }
#pragma omp parallel for if (N > PAR_MIN)
        for (int64_t o = 0; o < O; o++) {
            const float *a = A + o * R;
            double acc = 0;
#pragma omp simd reduction(+ : acc)
            for (int64_t r = 0; r < R; r++) acc += a[r];
            Y[o] = (float)(s * acc);
        }
        return;
    }
    /* Strided runs: add whole rows of I, a block of columns per task. */
    int64_t nb = (I + BLOCK - 1) / BLOCK;
#pragma omp parallel for collapse(2) if (N > PAR_MIN)
    for (int64_t o = 0; o < O; o++)
        for (int64_t b = 0; b < nb; b++) {
            int64_t i0 = b * BLOCK, i1 = i0 + BLOCK < I ? i0 + BLOCK : I;
            float *y = Y + o * I;
            for (int64_t i = i0; i < i1; i++) y[i] = 0.0f;
            for (int64_t r = 0; r < R; r++) {
                const float *a = A + (o * R + r) * I;
                for (int64_t i = i0; i < i1; i++) y[i] += a[i];
            }
            for (int64_t i = i0; i < i1; i++) y[i] *= s;
        }
}

static ts_tensor *reduce(ts_ctx *c, ts_op op, const ts_tensor *a, int dim) {
    const char *name = ts_op_name(op);
    char sa[96];
    ts__check_f32(name, a);
    red_geom g;
    int64_t shape[TS_MAX_DIMS] = { 1 };
    int ndim = 1;
    if (dim == TS_ALL) {
        g = (red_geom){ 1, a->numel, 1 };
    } else {
        TS_CHECK(dim >= -a->ndim && dim < a->ndim, "%s: dim %d out of range for %s", name, dim,
                 ts_shape_str(a, sa, sizeof sa));
        if (dim < 0) dim += a->ndim;
        g = (red_geom){ ts__prod(a->shape, 0, dim), a->shape[dim],
                        ts__prod(a->shape, dim + 1, a->ndim) };
        ndim = 0;
        for (int i = 0; i < a->ndim; i++)
            if (i != dim) shape[ndim++] = a->shape[i];
        if (ndim == 0) shape[ndim++] = 1; /* no 0-d tensors: a scalar has shape (1) */
    }
    float s = op == TS_OP_MEAN ? 1.0f / (float)g.R : 1.0f;
    ts_tensor *y = ts_new(c, TS_F32, ndim, shape);
    reduce_forward(ts_f32(y), ts_f32(a), g, s);
    ts_node *n = TS__RECORD(c, op, reduce_backward, y, a);
    if (n) {
        n->i[0] = g.O;
        n->i[1] = g.R;
        n->i[2] = g.I;
        n->f[0] = s;
    }
    return y;
}

ts_tensor *ts_sum(ts_ctx *c, const ts_tensor *a, int dim) { return reduce(c, TS_OP_SUM, a, dim); }

ts_tensor *ts_mean(ts_ctx *c, const ts_tensor *a, int dim) {
    return reduce(c, TS_OP_MEAN, a, dim);
}
