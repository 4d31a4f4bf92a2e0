/* tensor.cu: elementwise ops, sums over a dim, layouts (permute, the row copies of slice and
 * concat) and batch norm, with the CPU ops' semantics (ts_add, ts_sub and ts_mul with their
 * broadcast of b over a's rows, ts_scale, ts_relu, ts_exp, ts_log_sigmoid; ts_sum and ts_mean;
 * ts_permute, ts_slice and ts_concat; ts_index_select and ts_embedding; ts_dropout's function
 * with the device's own random mask; ts_batchnorm1d; ts_attention_kv, composed of these
 * layouts and attention.cu).
 *
 * Sums over a contiguous dim give each row a block (a fixed tree); sums over a strided dim
 * give each output a thread that walks its column in order, neighbouring threads reading
 * neighbouring values. A broadcast operand's gradient and batch norm's statistics and gradient
 * sums give each column a block; batch norm keeps its sums in the device's scratch between
 * the two backward kernels.
 */
#include "cuda_impl.h"

#include "tensor_kernels.h"

static ts_status dims_check(const char *what, int64_t O, int64_t R, int64_t I, ts_err *err) {
    if (O < 1 || R < 1 || I < 1)
        return ts__cuda_fail(err, TS_ERR_USAGE, "cuda %s: (%lld, %lld, %lld) is empty", what,
                             (long long)O, (long long)R, (long long)I);
    return TS_OK;
}

static ts_status ew_check(const char *what, int op, int nops, int64_t na, int64_t nb,
                          ts_err *err) {
    if (op < 0 || op >= nops || na < 1 || nb < 1 || na % nb)
        return ts__cuda_fail(err, TS_ERR_USAGE, "cuda %s: op %d, %lld values against %lld",
                             what, op, (long long)na, (long long)nb);
    return TS_OK;
}

ts_status ts_cuda_binary(ts_cuda *g, ts_cuda_binop op, const float *a, const float *b,
                         float *y, int64_t na, int64_t nb, ts_err *err) {
    ts_status st = ew_check("binary", (int)op, 3, na, nb, err);
    if (st) return st;
    binary_kernel<<<grid_for(na, 256), 256, 0, g->stream>>>((int)op, a, b, y, na, nb);
    TS_CU_LAUNCHED("binary");
    return TS_OK;
}

ts_status ts_cuda_binary_backward(ts_cuda *g, ts_cuda_binop op, const float *a,
                                  const float *b, const float *dy, float *da, float *db,
                                  int64_t na, int64_t nb, ts_err *err) {
    ts_status st = ew_check("binary backward", (int)op, 3, na, nb, err);
    if (st) return st;
    if (db && nb == na)
        binary_db_flat_kernel<<<grid_for(na, 256), 256, 0, g->stream>>>((int)op, a, dy, db,
                                                                        na);
    else if (db)
        binary_db_kernel<<<grid_for(nb, 1), TS_CU_ROW_THREADS, 0, g->stream>>>((int)op, a, dy,
                                                                             db, na, nb);
    if (db) TS_CU_LAUNCHED("binary backward (db)");
    if (da) {
        binary_da_kernel<<<grid_for(na, 256), 256, 0, g->stream>>>((int)op, b, dy, da, na, nb);
        TS_CU_LAUNCHED("binary backward (da)");
    }
    return TS_OK;
}

ts_status ts_cuda_unary(ts_cuda *g, ts_cuda_unop op, const float *x, float *y, int64_t n,
                        float s, ts_err *err) {
    ts_status st = ew_check("unary", (int)op, 4, n, 1, err);
    if (st) return st;
    unary_kernel<<<grid_for(n, 256), 256, 0, g->stream>>>((int)op, x, y, n, s);
    TS_CU_LAUNCHED("unary");
    return TS_OK;
}

ts_status ts_cuda_unary_backward(ts_cuda *g, ts_cuda_unop op, const float *x, const float *y,
                                 const float *dy, float *dx, int64_t n, float s, ts_err *err) {
    ts_status st = ew_check("unary backward", (int)op, 4, n, 1, err);
    if (st) return st;
    unary_backward_kernel<<<grid_for(n, 256), 256, 0, g->stream>>>((int)op, x, y, dy, dx, n, s);
    TS_CU_LAUNCHED("unary backward");
    return TS_OK;
}

ts_status ts_cuda_reduce(ts_cuda *g, const float *a, float *y, int64_t O, int64_t R,
                         int64_t I, float scale, ts_err *err) {
    ts_status st = dims_check("reduce", O, R, I, err);
    if (st) return st;
    if (I == 1)
        reduce_rows_kernel<<<grid_for(O, 1), TS_CU_ROW_THREADS, 0, g->stream>>>(a, y, O, R,
                                                                              scale);
    else
        reduce_cols_kernel<<<grid_for(O * I, 256), 256, 0, g->stream>>>(a, y, O, R, I, scale);
    TS_CU_LAUNCHED("reduce");
    return TS_OK;
}

ts_status ts_cuda_reduce_backward(ts_cuda *g, const float *dy, float *da, int64_t O, int64_t R,
                                  int64_t I, float scale, ts_err *err) {
    ts_status st = dims_check("reduce backward", O, R, I, err);
    if (st) return st;
    reduce_backward_kernel<<<grid_for(O * R * I, 256), 256, 0, g->stream>>>(dy, da, O, R, I,
                                                                            scale);
    TS_CU_LAUNCHED("reduce backward");
    return TS_OK;
}

ts_status ts_cuda_permute(ts_cuda *g, const float *x, float *y, int ndim, const int64_t *shape,
                          const int *perm, int acc, ts_err *err) {
    if (ndim < 1 || ndim > TS_CU_PERMUTE_DIMS)
        return ts__cuda_fail(err, TS_ERR_USAGE, "cuda permute: %d dims (1 to %d)", ndim,
                             TS_CU_PERMUTE_DIMS);
    perm_geom p;
    int64_t in_stride[TS_CU_PERMUTE_DIMS];
    int seen = 0;
    p.ndim = ndim, p.n = 1;
    for (int d = ndim - 1; d >= 0; d--) {
        if (shape[d] < 1)
            return ts__cuda_fail(err, TS_ERR_USAGE, "cuda permute: dim %d is %lld", d,
                                 (long long)shape[d]);
        in_stride[d] = p.n;
        p.n *= shape[d];
    }
    for (int d = 0; d < ndim; d++) {
        if (perm[d] < 0 || perm[d] >= ndim || (seen >> perm[d] & 1))
            return ts__cuda_fail(err, TS_ERR_USAGE, "cuda permute: perm[%d] = %d is not a "
                                 "permutation of %d dims", d, perm[d], ndim);
        seen |= 1 << perm[d];
        p.shape[d] = shape[perm[d]], p.stride[d] = in_stride[perm[d]];
    }
    permute_kernel<<<grid_for(p.n, 256), 256, 0, g->stream>>>(x, y, p, acc);
    TS_CU_LAUNCHED("permute");
    return TS_OK;
}

ts_status ts_cuda_copy_rows(ts_cuda *g, const float *x, int64_t Dx, int64_t x_at, float *y,
                            int64_t Dy, int64_t y_at, int64_t O, int64_t n, int64_t I, int acc,
                            ts_err *err) {
    if (O < 1 || I < 1 || n < 0 || x_at < 0 || y_at < 0 || x_at + n > Dx || y_at + n > Dy)
        return ts__cuda_fail(err, TS_ERR_USAGE, "cuda copy_rows: rows [%lld, %lld) of %lld to "
                             "[%lld, %lld) of %lld", (long long)x_at, (long long)(x_at + n),
                             (long long)Dx, (long long)y_at, (long long)(y_at + n),
                             (long long)Dy);
    if (!n) return TS_OK;
    copy_rows_kernel<<<grid_for(O * n * I, 256), 256, 0, g->stream>>>(x, Dx, x_at, y, Dy, y_at,
                                                                      O, n, I, acc);
    TS_CU_LAUNCHED("copy_rows");
    return TS_OK;
}

ts_status ts_cuda_index_rows(ts_cuda *g, const float *a, const int32_t *idx, float *y,
                             int64_t O, int64_t L, int64_t n, int64_t I, ts_err *err) {
    ts_status st = dims_check("index_rows", O, L, I, err);
    if (st || n < 1) return st;
    index_rows_kernel<<<grid_for(O * n * I, 256), 256, 0, g->stream>>>(a, idx, y, O, L, n, I);
    TS_CU_LAUNCHED("index_rows");
    return TS_OK;
}

ts_status ts_cuda_index_rows_backward(ts_cuda *g, const float *dy, const int32_t *idx,
                                      float *da, int64_t O, int64_t L, int64_t n, int64_t I,
                                      ts_err *err) {
    ts_status st = dims_check("index_rows backward", O, L, I, err);
    if (st || n < 1) return st;
    index_rows_backward_kernel<<<grid_for(O * I, 128), 128, 0, g->stream>>>(dy, idx, da, O, L,
                                                                            n, I);
    TS_CU_LAUNCHED("index_rows backward");
    return TS_OK;
}

ts_status ts_cuda_dropout(ts_cuda *g, const float *x, float *y, uint8_t *mask, int64_t n,
                          float p, uint64_t seed, ts_err *err) {
    if (n < 1 || !(p >= 0.0f && p <= 1.0f))
        return ts__cuda_fail(err, TS_ERR_USAGE, "cuda dropout: %lld values, p = %g",
                             (long long)n, (double)p);
    float scale = p < 1.0f ? 1.0f / (1.0f - p) : 0.0f; /* p == 1 drops everything */
    dropout_kernel<<<grid_for(n, 256), 256, 0, g->stream>>>(x, y, mask, n, p, scale, seed);
    TS_CU_LAUNCHED("dropout");
    return TS_OK;
}

ts_status ts_cuda_dropout_backward(ts_cuda *g, const float *dy, const uint8_t *mask, float *dx,
                                   int64_t n, float p, ts_err *err) {
    if (n < 1 || !(p >= 0.0f && p <= 1.0f))
        return ts__cuda_fail(err, TS_ERR_USAGE, "cuda dropout backward: %lld values, p = %g",
                             (long long)n, (double)p);
    float scale = p < 1.0f ? 1.0f / (1.0f - p) : 0.0f;
    dropout_backward_kernel<<<grid_for(n, 256), 256, 0, g->stream>>>(dy, mask, dx, n, scale);
    TS_CU_LAUNCHED("dropout backward");
    return TS_OK;
}

ts_status ts_cuda_batchnorm1d(ts_cuda *g, const float *x, const float *w, const float *b,
                              float *running_mean, float *running_var, int training,
                              float momentum, float eps, float *y, float *mean, float *rstd,
                              int64_t N, int64_t C, ts_err *err) {
    int batch_stats = training || !running_mean;
    if (N < 1 || C < 1 || (batch_stats && N < 2) || !running_mean != !running_var)
        return ts__cuda_fail(err, TS_ERR_USAGE, "cuda batchnorm1d: x (%lld, %lld)%s%s",
                             (long long)N, (long long)C,
                             batch_stats && N < 2 ? ": batch statistics need two rows" : "",
                             !running_mean != !running_var ? ": one running statistic" : "");
    if (batch_stats)
        bn_stats_kernel<<<grid_for(C, 1), TS_CU_ROW_THREADS, 0, g->stream>>>(
            x, mean, rstd, training ? running_mean : NULL, training ? running_var : NULL, N, C,
            momentum, eps);
    else
        bn_eval_stats_kernel<<<grid_for(C, 256), 256, 0, g->stream>>>(running_mean,
                                                                      running_var, mean, rstd,
                                                                      C, eps);
    TS_CU_LAUNCHED("batchnorm1d statistics");
    bn_forward_kernel<<<grid_for(N * C, 256), 256, 0, g->stream>>>(x, w, b, mean, rstd, y, N,
                                                                   C);
    TS_CU_LAUNCHED("batchnorm1d");
    return TS_OK;
}

ts_status ts_cuda_batchnorm1d_backward(ts_cuda *g, const float *x, const float *w,
                                       const float *dy, const float *mean, const float *rstd,
                                       int batch_stats, float *dx, float *dw, float *db,
                                       int64_t N, int64_t C, ts_err *err) {
    if (N < 1 || C < 1 || (size_t)(2 * C) > g->scratch_floats)
        return ts__cuda_fail(err, TS_ERR_USAGE, "cuda batchnorm1d backward: x (%lld, %lld)",
                             (long long)N, (long long)C);
    bn_sums_kernel<<<grid_for(C, 1), TS_CU_ROW_THREADS, 0, g->stream>>>(x, dy, mean, rstd,
                                                                      g->scratch, dw, db, N, C);
    TS_CU_LAUNCHED("batchnorm1d backward (sums)");
    if (dx) {
        bn_dx_kernel<<<grid_for(N * C, 256), 256, 0, g->stream>>>(x, w, dy, mean, rstd,
                                                                  g->scratch, dx, N, C,
                                                                  batch_stats);
        TS_CU_LAUNCHED("batchnorm1d backward (dx)");
    }
    return TS_OK;
}

/* ---- cross-attention on the projections (ts_attention_kv's function) ---- */

int64_t ts_cuda_attention_kv_work(int64_t B, int64_t Tq, int64_t Tk, int64_t C, int64_t heads) {
    if (B < 1 || Tq < 1 || Tk < 1 || heads < 1 || C < heads || C % heads) return 0;
    return 2 * B * Tq * C + 3 * B * Tk * C + B * heads * Tq;
}

/* the work area: q, y (B, H, Tq, D), k, v (B, H, Tk, D), a (B Tk, C) row buffer, lse (B H Tq) */
typedef struct kv_work {
    float *q, *y, *k, *v, *rows, *lse;
} kv_work;

static kv_work kv_parts(float *w, int64_t B, int64_t Tq, int64_t Tk, int64_t C) {
    kv_work p;
    p.q = w, p.y = p.q + B * Tq * C, p.k = p.y + B * Tq * C, p.v = p.k + B * Tk * C;
    p.rows = p.v + B * Tk * C, p.lse = p.rows + B * Tk * C;
    return p;
}

/* (B, a, b, D) -> (B, b, a, D): rows (B, T, H, D) to heads (B, H, T, D), or back */
static ts_status swap12(ts_cuda *g, const float *x, float *y, int64_t B, int64_t a, int64_t b,
                        int64_t D, int acc, ts_err *err) {
    const int64_t shape[4] = { B, a, b, D };
    const int perm[4] = { 0, 2, 1, 3 };
    return ts_cuda_permute(g, x, y, 4, shape, perm, acc, err);
}

ts_status ts_cuda_attention_kv(ts_cuda *g, const float *q, const float *kv,
                               const uint8_t *key_pad, float *y, int64_t B, int64_t Tq,
                               int64_t Tk, int64_t C, int64_t heads, float scale, float *work,
                               ts_err *err) {
    if (!ts_cuda_attention_kv_work(B, Tq, Tk, C, heads))
        return ts__cuda_fail(err, TS_ERR_USAGE, "cuda attention_kv: B %lld, Tq %lld, Tk %lld, "
                             "C %lld, %lld heads", (long long)B, (long long)Tq, (long long)Tk,
                             (long long)C, (long long)heads);
    int64_t H = heads, D = C / H;
    kv_work p = kv_parts(work, B, Tq, Tk, C);
    ts_status st;
    if ((st = swap12(g, q, p.q, B, Tq, H, D, 0, err)) ||
        (st = ts_cuda_copy_rows(g, kv, 2, 0, p.rows, 1, 0, B * Tk, 1, C, 0, err)) ||
        (st = swap12(g, p.rows, p.k, B, Tk, H, D, 0, err)) ||
        (st = ts_cuda_copy_rows(g, kv, 2, 1, p.rows, 1, 0, B * Tk, 1, C, 0, err)) ||
        (st = swap12(g, p.rows, p.v, B, Tk, H, D, 0, err)) ||
        (st = ts_cuda_attention(g, p.q, p.k, p.v, key_pad, p.y, p.lse, B, H, Tq, Tk, D, 0,
                                scale, err)))
        return st;
    return swap12(g, p.y, y, B, H, Tq, D, 0, err);
}

ts_status ts_cuda_attention_kv_backward(ts_cuda *g, const uint8_t *key_pad, const float *dy,
                                        float *dq, float *dkv, int64_t B, int64_t Tq,
                                        int64_t Tk, int64_t C, int64_t heads, float scale,
                                        float *dwork, float *work, ts_err *err) {
    if (!ts_cuda_attention_kv_work(B, Tq, Tk, C, heads))
        return ts__cuda_fail(err, TS_ERR_USAGE, "cuda attention_kv backward: B %lld, Tq %lld, "
                             "Tk %lld, C %lld, %lld heads", (long long)B, (long long)Tq,
                             (long long)Tk, (long long)C, (long long)heads);
    int64_t H = heads, D = C / H;
    kv_work p = kv_parts(work, B, Tq, Tk, C), d = kv_parts(dwork, B, Tq, Tk, C);
    size_t nq = (size_t)(B * Tq * C) * sizeof(float), nk = (size_t)(B * Tk * C) * sizeof(float);
    ts_status st;
    /* d.y: dy in heads; d.q, d.k, d.v: the gradients in heads (the kernels add) */
    if ((st = swap12(g, dy, d.y, B, Tq, H, D, 0, err)) ||
        (st = ts_cuda_zero(g, d.q, nq, err)) || (st = ts_cuda_zero(g, d.k, 2 * nk, err)) ||
        (st = ts_cuda_attention_backward(g, p.q, p.k, p.v, key_pad, p.y, p.lse, d.y, d.q, d.k,
                                         d.v, B, H, Tq, Tk, D, 0, scale, err)))
        return st;
    if (dq && (st = swap12(g, d.q, dq, B, H, Tq, D, 1, err)))
        return st;
    if (!dkv) return TS_OK;
    /* back to rows, then added into kv's k and v columns */
    for (int j = 0; j < 2; j++) {
        if ((st = swap12(g, j ? d.v : d.k, d.rows, B, H, Tk, D, 0, err)) ||
            (st = ts_cuda_copy_rows(g, d.rows, 1, 0, dkv, 2, j, B * Tk, 1, C, 1, err)))
            return st;
    }
    return TS_OK;
}
