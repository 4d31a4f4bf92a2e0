/* op_embedding.c: embedding lookup and index_select, forward and backward.
 *
 * Both are one gather: seen as (O, L, I), the output row (o, k) is the input row (o, idx[k]).
 * An embedding is the case O = 1, L = V, I = C over every id. The backward scatter-adds dy rows
 * into the gradient rows they came from; the same id may appear many times, so threads own
 * column blocks (and, for index_select, whole outer rows) rather than ids, and no two threads
 * ever add into the same element. Indices out of range stop the program with the offending
 * index: ids are checked by the tokenizer and the loaders before they reach an op.
 *
 * What this file deliberately is not: a sparse gradient (the table's gradient is dense), a
 * padding_idx or max_norm embedding, or a gather with per-element indices.
 *
 * Shapes: embedding table (V, C), ids i32 (...), y (..., C).
 *         index_select a (..., L, ...), idx i32 (n), y (..., n, ...).
 */
#include "../tessera-impl.h"

#define PAR_MIN 32768
#define COL_BLOCK 256

/* Y (O, n, I) = A (O, L, I) [:, idx, :]. */
static void gather(float *Y, const float *A, const int32_t *idx, int64_t O, int64_t L,
                   int64_t n, int64_t I) {
#pragma omp parallel for collapse(2) if (O * n * I > PAR_MIN)
    for (int64_t o = 0; o < O; o++)
        for (int64_t k = 0; k < n; k++) {
            const float *src = A + (o * L + idx[k]) * I;
            float *dst = Y + (o * n + k) * I;
            for (int64_t j = 0; j < I; j++) dst[j] = src[j];
        }
}

/* dA (O, L, I) [:, idx, :] += dY (O, n, I), race-free: a task owns (o, column block). */
static void scatter_add(float *dA, const float *dY, const int32_t *idx, int64_t O, int64_t L,
                        int64_t n, int64_t I) {
    int64_t nb = (I + COL_BLOCK - 1) / COL_BLOCK;
#pragma omp parallel for collapse(2) if (O * n * I > PAR_MIN)
    for (int64_t o = 0; o < O; o++)
        for (int64_t b = 0; b < nb; b++) {
            int64_t j0 = b * COL_BLOCK, j1 = j0 + COL_BLOCK < I ? j0 + COL_BLOCK : I;
            for (int64_t k = 0; k < n; k++) {
                float *dst = dA + (o * L + idx[k]) * I;
                const float *src = dY + (o * n + k) * I;
                for (int64_t j = j0; j < j1; j++) dst[j] += src[j];
            }
        }
}

static void check_ids(const char *op, const ts_tensor *ids, int64_t L) {
    TS_CHECK(ids->dtype == TS_I32, "%s: indices must be i32, got %s", op,
             ts_dtype_name(ids->dtype));
    const int32_t *p = ts_i32(ids);
    for (int64_t i = 0; i < ids->numel; i++)
        TS_CHECK(p[i] >= 0 && p[i] < L, "%s: index %d at position %lld is outside [0, %lld)",
                 op, (int)p[i], (long long)i, (long long)L);
}

/* Node ints: O, L, n, I. in[1] holds the indices. */
static void gather_backward(ts_ctx *c, ts_node *n) {
    float *da = ts__grad(c, n->in[0]);
    if (!da) return;
    scatter_add(da, ts_f32(n->out->grad), ts_i32(n->in[1]), n->i[0], n->i[1], n->i[2], n->i[3]);
}

ts_tensor *ts_embedding(ts_ctx *c, const ts_tensor *table, const ts_tensor *ids) {
    char st[96], si[96];
    ts__check_f32("embedding", table);
    TS_CHECK(table->ndim == 2 && ids->ndim + 1 <= TS_MAX_DIMS,
             "embedding: table %s must be (V, C) and ids %s at most %d-d",
             ts_shape_str(table, st, sizeof st), ts_shape_str(ids, si, sizeof si),
             TS_MAX_DIMS - 1);
    int64_t V = table->shape[0], C = table->shape[1];
    check_ids("embedding", ids, V);
    int64_t shape[TS_MAX_DIMS];
    for (int i = 0; i < ids->ndim; i++) shape[i] = ids->shape[i];
    shape[ids->ndim] = C;
    ts_tensor *y = ts_new(c, TS_F32, ids->ndim + 1, shape);
    gather(ts_f32(y), ts_f32(table), ts_i32(ids), 1, V, ids->numel, C);
    ts_node *n = TS__RECORD(c, TS_OP_EMBEDDING, gather_backward, y, table, ids);
    if (n) {
        n->i[0] = 1;
        n->i[1] = V;
        n->i[2] = ids->numel;
        n->i[3] = C;
    }
    return y;
}

ts_tensor *ts_index_select(ts_ctx *c, const ts_tensor *a, int dim, const ts_tensor *idx) {
    char sa[96], si[96];
    ts__check_f32("index_select", a);
    TS_CHECK(dim >= -a->ndim && dim < a->ndim && idx->ndim == 1,
             "index_select: dim %d of %s with indices %s (must be 1-d)", dim,
             ts_shape_str(a, sa, sizeof sa), ts_shape_str(idx, si, sizeof si));
    if (dim < 0) dim += a->ndim;
    int64_t L = a->shape[dim];
    check_ids("index_select", idx, L);
    int64_t shape[TS_MAX_DIMS];
    for (int i = 0; i < a->ndim; i++) shape[i] = a->shape[i];
    shape[dim] = idx->numel;
    ts_tensor *y = ts_new(c, TS_F32, a->ndim, shape);
    int64_t O = ts__prod(a->shape, 0, dim), I = ts__prod(a->shape, dim + 1, a->ndim);
    gather(ts_f32(y), ts_f32(a), ts_i32(idx), O, L, idx->numel, I);
    ts_node *n = TS__RECORD(c, TS_OP_INDEX_SELECT, gather_backward, y, a, idx);
    if (n) {
        n->i[0] = O;
        n->i[1] = L;
        n->i[2] = idx->numel;
        n->i[3] = I;
    }
    return y;
}
