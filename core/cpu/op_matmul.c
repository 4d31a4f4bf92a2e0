/* op_matmul.c: matrix products on the CPU through oneDNN, forward and backward.
 *
 * float32 products go to dnnl_sgemm, which picks its AVX-512/AVX2 kernels by CPU feature and
 * takes transposes as flags. In bf16 precision the inputs are rounded to bf16 and multiplied by
 * oneDNN's matmul primitive with float32 accumulation and output (AMX or AVX512-BF16 where the
 * CPU has them; on a CPU with neither, dnnl_sgemm on the bf16-rounded operands, which gives a
 * bf16 product's numbers); those primitives are created once per shape and kept in the
 * context's cache.
 * This file never multiplies matrices with its own loops.
 *
 * Shapes: a (..., M, K), b (K, N) or (..., K, N), y (..., M, N); TS_TRANS_A / TS_TRANS_B mean
 * the stored matrix is the transpose.
 */
#include "../tessera-impl.h"

#include <oneapi/dnnl/dnnl.h>
#include <stdlib.h>

/* ---- bf16 matmul primitives, cached per shape ---- */

typedef struct prim_entry {
    int64_t key[9];
    dnnl_primitive_t prim;
    dnnl_memory_desc_t a_md, b_md, c_md;
    int unusable; /* the CPU has no bf16 kernel: float32 kernels on bf16-rounded operands */
} prim_entry;

typedef struct cpu_cache {
    dnnl_engine_t engine;
    dnnl_stream_t stream;
    prim_entry *e;
    int n, cap;
    int warned;
} cpu_cache;

void ts__cpu_cache_free(void *cache) {
    cpu_cache *cc = cache;
    if (!cc) return;
    for (int i = 0; i < cc->n; i++)
        if (cc->e[i].prim) dnnl_primitive_destroy(cc->e[i].prim);
    free(cc->e);
    if (cc->stream) dnnl_stream_destroy(cc->stream);
    if (cc->engine) dnnl_engine_destroy(cc->engine);
    free(cc);
}

static cpu_cache *get_cache(ts_ctx *c) {
    if (!c->cpu_cache) {
        cpu_cache *cc = calloc(1, sizeof *cc);
        TS_CHECK(cc != NULL, "out of memory");
        TS_CHECK(dnnl_engine_create(&cc->engine, dnnl_cpu, 0) == dnnl_success,
                 "oneDNN: cannot create the CPU engine");
        TS_CHECK(dnnl_stream_create(&cc->stream, cc->engine, dnnl_stream_default_flags) ==
                     dnnl_success,
                 "oneDNN: cannot create a stream");
        c->cpu_cache = cc;
    }
    return c->cpu_cache;
}

/* The primitive for C(M,N) = alpha * op(A) op(B) + beta * C with bf16 A, B and f32 C,
 * described through strides so that transposes cost nothing. */
static prim_entry *bf16_prim(ts_ctx *c, int ta, int tb, int64_t M, int64_t N, int64_t K,
                             float alpha, int64_t lda, int64_t ldb, float beta, int64_t ldc) {
    cpu_cache *cc = get_cache(c);
    union { float f; int32_t i; } ua = { alpha }, ub = { beta };
    int64_t key[9] = { ta, tb, M, N, K, lda, ldb, ldc, ((int64_t)ua.i << 32) ^ (uint32_t)ub.i };
    for (int i = 0; i < cc->n; i++)
        if (memcmp(cc->e[i].key, key, sizeof key) == 0) return &cc->e[i];
    if (cc->n == cc->cap) {
        cc->cap = cc->cap ? cc->cap * 2 : 32;
        cc->e = realloc(cc->e, (size_t)cc->cap * sizeof *cc->e);
        TS_CHECK(cc->e != NULL, "out of memory");
    }
    prim_entry *e = &cc->e[cc->n++];
    memset(e, 0, sizeof *e);
    memcpy(e->key, key, sizeof key);
    dnnl_dims_t ad = { M, K }, bd = { K, N }, cd = { M, N };
    dnnl_dims_t as = { ta ? 1 : lda, ta ? lda : 1 };
    dnnl_dims_t bs = { tb ? 1 : ldb, tb ? ldb : 1 };
    dnnl_dims_t cs = { ldc, 1 };
    dnnl_memory_desc_init_by_strides(&e->a_md, 2, ad, dnnl_bf16, as);
    dnnl_memory_desc_init_by_strides(&e->b_md, 2, bd, dnnl_bf16, bs);
    dnnl_memory_desc_init_by_strides(&e->c_md, 2, cd, dnnl_f32, cs);
    dnnl_matmul_desc_t md;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t po = NULL;
    dnnl_primitive_desc_t pd = NULL;
    int ok = dnnl_matmul_desc_init(&md, &e->a_md, &e->b_md, NULL, &e->c_md) == dnnl_success;
    ok = ok && dnnl_primitive_attr_create(&attr) == dnnl_success;
    if (ok && alpha != 1.0f) ok = dnnl_primitive_attr_set_output_scales(attr, 1, 0, &alpha) ==
                                  dnnl_success;
    if (ok && beta != 0.0f) {
        ok = dnnl_post_ops_create(&po) == dnnl_success &&
             dnnl_post_ops_append_sum(po, beta) == dnnl_success &&
             dnnl_primitive_attr_set_post_ops(attr, po) == dnnl_success;
    }
    ok = ok && dnnl_primitive_desc_create(&pd, &md, attr, cc->engine, NULL) == dnnl_success;
    ok = ok && dnnl_primitive_create(&e->prim, pd) == dnnl_success;
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (po) dnnl_post_ops_destroy(po);
    if (attr) dnnl_primitive_attr_destroy(attr);
    if (!ok) {
        e->unusable = 1;
        if (!cc->warned) {
            cc->warned = 1;
            ts_log(TS_LOG_WARN, "oneDNN has no bf16 matmul for this CPU: bf16 products run as "
                   "float32 products of bf16-rounded operands");
        }
    }
    return e;
}

static uint16_t *to_bf16(ts_ctx *c, const float *src, int64_t rows, int64_t cols, int64_t ld) {
    uint16_t *dst = ts_arena_alloc(c->step, (size_t)(rows * ld) * sizeof(uint16_t));
#pragma omp parallel for if (rows * cols > 65536)
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < cols; j++) dst[r * ld + j] = ts_f32_to_bf16(src[r * ld + j]);
    return dst;
}

/* src (or its bf16 copy src16) rounded to bf16 and widened back to float32, same layout */
static const float *bf16_valued(ts_ctx *c, const float *src, const uint16_t *src16,
                                int64_t rows, int64_t cols, int64_t ld) {
    float *dst = ts_arena_alloc(c->step, (size_t)(rows * ld) * sizeof(float));
#pragma omp parallel for if (rows * cols > 65536)
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < cols; j++)
            dst[r * ld + j] = ts_bf16_to_f32(src16 ? src16[r * ld + j]
                                                   : ts_f32_to_bf16(src[r * ld + j]));
    return dst;
}

static void sgemm(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                  int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc);

/* C = alpha * op(A) op(B) + beta * C in bf16 with f32 accumulation. A16 / B16, when not NULL,
 * are A / B already rounded to bf16 (same layout); otherwise they are rounded here. Where
 * oneDNN has no bf16 matmul for the CPU (AVX2 alone), the float32 kernels multiply the
 * bf16-rounded operands: a product of two bf16 values is exact in float32, so the numbers are
 * a bf16 product's, up to the order of the float32 sums, on every machine. */
static void gemm_bf16(ts_ctx *c, int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha,
                     const float *A, const uint16_t *A16, int64_t lda, const float *B,
                     const uint16_t *B16, int64_t ldb, float beta, float *C, int64_t ldc) {
    prim_entry *e = bf16_prim(c, ta, tb, M, N, K, alpha, lda, ldb, beta, ldc);
    if (e->unusable) {
        sgemm(ta, tb, M, N, K, alpha, bf16_valued(c, A, A16, ta ? K : M, ta ? M : K, lda), lda,
              bf16_valued(c, B, B16, tb ? N : K, tb ? K : N, ldb), ldb, beta, C, ldc);
        return;
    }
    cpu_cache *cc = c->cpu_cache;
    /* stored shapes: A is (M,K) or (K,M) with row stride lda; same for B */
    const uint16_t *a16 = A16 ? A16 : to_bf16(c, A, ta ? K : M, ta ? M : K, lda);
    const uint16_t *b16 = B16 ? B16 : to_bf16(c, B, tb ? N : K, tb ? K : N, ldb);
    dnnl_memory_t am, bm, cm;
    dnnl_memory_create(&am, &e->a_md, cc->engine, (void *)a16);
    dnnl_memory_create(&bm, &e->b_md, cc->engine, (void *)b16);
    dnnl_memory_create(&cm, &e->c_md, cc->engine, C);
    dnnl_exec_arg_t args[3] = { { DNNL_ARG_SRC, am }, { DNNL_ARG_WEIGHTS, bm },
                                { DNNL_ARG_DST, cm } };
    TS_CHECK(dnnl_primitive_execute(e->prim, cc->stream, 3, args) == dnnl_success,
             "oneDNN bf16 matmul failed (%lld x %lld x %lld)", (long long)M, (long long)N,
             (long long)K);
    dnnl_stream_wait(cc->stream);
    dnnl_memory_destroy(am);
    dnnl_memory_destroy(bm);
    dnnl_memory_destroy(cm);
}

static void sgemm(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                  int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    dnnl_status_t st = dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', M, N, K, alpha, A, lda, B, ldb,
                                  beta, C, ldc);
    TS_CHECK(st == dnnl_success, "dnnl_sgemm failed with status %d (M=%lld N=%lld K=%lld)",
             (int)st, (long long)M, (long long)N, (long long)K);
}

void ts__gemm(ts_ctx *c, int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha,
              const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
              int64_t ldc) {
    if (M == 0 || N == 0) return;
    if (c->precision == TS_PREC_BF16 && K > 0)
        gemm_bf16(c, ta, tb, M, N, K, alpha, A, NULL, lda, B, NULL, ldb, beta, C, ldc);
    else
        sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

/* ts__gemm with an optional bf16 copy of A (used in bf16 precision only). */
static void gemm_a16(ts_ctx *c, int ta, int tb, int64_t M, int64_t N, int64_t K, const float *A,
                     const uint16_t *A16, int64_t lda, const float *B, int64_t ldb, float beta,
                     float *C, int64_t ldc) {
    if (M == 0 || N == 0) return;
    if (c->precision == TS_PREC_BF16 && K > 0)
        gemm_bf16(c, ta, tb, M, N, K, 1.0f, A, A16, lda, B, NULL, ldb, beta, C, ldc);
    else
        sgemm(ta, tb, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc);
}

/* ---- the op ---- */

/* Geometry of one product, shared by forward and backward. */
typedef struct mm_geom {
    int64_t batch, M, N, K;
    int ta, tb, b_batched;
} mm_geom;

static mm_geom geometry(const ts_tensor *a, const ts_tensor *b, int flags) {
    mm_geom g = { 0 };
    char sa[96], sb[96];
    g.ta = !!(flags & TS_TRANS_A);
    g.tb = !!(flags & TS_TRANS_B);
    TS_CHECK(a->ndim >= 2 && b->ndim >= 2, "matmul: needs 2-d or more, got %s and %s",
             ts_shape_str(a, sa, sizeof sa), ts_shape_str(b, sb, sizeof sb));
    int64_t ar = a->shape[a->ndim - 2], ac = a->shape[a->ndim - 1];
    int64_t br = b->shape[b->ndim - 2], bc = b->shape[b->ndim - 1];
    g.M = g.ta ? ac : ar;
    g.K = g.ta ? ar : ac;
    int64_t kb = g.tb ? bc : br;
    g.N = g.tb ? br : bc;
    TS_CHECK(g.K == kb, "matmul: inner dims differ: a %s%s, b %s%s",
             ts_shape_str(a, sa, sizeof sa), g.ta ? "^T" : "", ts_shape_str(b, sb, sizeof sb),
             g.tb ? "^T" : "");
    g.batch = ts__prod(a->shape, 0, a->ndim - 2);
    g.b_batched = b->ndim > 2;
    if (g.b_batched) {
        TS_CHECK(b->ndim == a->ndim, "matmul: batched b %s must have a's leading dims %s",
                 ts_shape_str(b, sb, sizeof sb), ts_shape_str(a, sa, sizeof sa));
        for (int i = 0; i < a->ndim - 2; i++)
            TS_CHECK(a->shape[i] == b->shape[i], "matmul: leading dims differ: %s vs %s",
                     ts_shape_str(a, sa, sizeof sa), ts_shape_str(b, sb, sizeof sb));
    } else if (!g.ta) {
        /* a (..., M, K) @ b (K, N): one product over all rows */
        g.M *= g.batch;
        g.batch = 1;
    }
    return g;
}

/* C_i = alpha*op(A_i) op(B_i) + beta*C_i over the batch; B shared when !b_batched. */
static void gemm_batched(ts_ctx *c, const mm_geom *g, int ta, int tb, int64_t M, int64_t N,
                         int64_t K, const float *A, int64_t lda, int64_t sa, const float *B,
                         int64_t ldb, int64_t sb, float beta, float *C, int64_t sc) {
    for (int64_t i = 0; i < g->batch; i++)
        ts__gemm(c, ta, tb, M, N, K, 1.0f, A + i * sa, lda, B + i * sb, ldb, beta, C + i * sc, N);
}

static void matmul_backward(ts_ctx *c, ts_node *n) {
    ts_tensor *a = n->in[0], *b = n->in[1], *bias = n->nin > 2 ? n->in[2] : NULL;
    mm_geom g = geometry(a, b, (int)n->i[0]);
    const float *A = ts_f32(a), *B = ts_f32(b), *dY = ts_f32(n->out->grad);
    /* The products write the input gradients whole, so new gradient buffers are written (beta
     * 0) rather than zeroed and added to. */
    float ba, bb;
    float *dA = ts__grad_fresh(c, a, &ba), *dB = ts__grad_fresh(c, b, &bb);
    float *dbias = bias ? ts__grad(c, bias) : NULL;
    int64_t M = g.M, N = g.N, K = g.K;
    int64_t lda = g.ta ? M : K, ldb = g.tb ? K : N;
    int64_t sA = M * K, sB = g.b_batched ? K * N : 0, sY = M * N;
    if (K == 0 || M == 0 || N == 0) { /* an empty product: nothing flows, but buffers are set */
        if (dA && ba == 0.0f) memset(dA, 0, (size_t)a->numel * sizeof(float));
        if (dB && bb == 0.0f) memset(dB, 0, (size_t)b->numel * sizeof(float));
        ba = bb = 1.0f;
    }
    /* In bf16 precision dY takes part in both products: round it to bf16 once. */
    const int dy16 = c->precision == TS_PREC_BF16 && dA && dB && M > 0 && N > 0 && K > 0;
    for (int64_t i = 0; i < g.batch; i++) {
        const float *Ai = A + i * sA, *Bi = B + i * sB, *dYi = dY + i * sY;
        const uint16_t *dY16 = dy16 ? to_bf16(c, dYi, M, N, N) : NULL;
        /* a b shared by the whole batch collects every slice's gradient: += after the first */
        float bbi = (!g.b_batched && i > 0) ? 1.0f : bb;
        if (dA) {
            if (!g.ta) /* dA (M,K) = dY (M,N) opB(B)^T */
                gemm_a16(c, 0, !g.tb, M, K, N, dYi, dY16, N, Bi, ldb, ba, dA + i * sA, K);
            else       /* dA (K,M) = opB(B) (K,N) dY^T (N,M) */
                ts__gemm(c, g.tb, 1, K, M, N, 1.0f, Bi, ldb, dYi, N, ba, dA + i * sA, M);
        }
        if (dB) {
            if (!g.tb) /* dB (K,N) = opA(A)^T (K,M) dY (M,N) */
                ts__gemm(c, !g.ta, 0, K, N, M, 1.0f, Ai, lda, dYi, N, bbi, dB + i * sB, N);
            else       /* dB (N,K) = dY^T (N,M) opA(A) (M,K) */
                gemm_a16(c, 1, g.ta, N, K, M, dYi, dY16, N, Ai, lda, bbi, dB + i * sB, K);
        }
    }
    if (dbias) {
        /* column sums of dY (rows, N): each thread owns a band of columns, so the order of the
         * additions, and the result, do not depend on the number of threads */
        int64_t rows = g.batch * M;
#pragma omp parallel for schedule(static) if (rows * N > 65536)
        for (int64_t j0 = 0; j0 < N; j0 += 64) {
            int64_t j1 = j0 + 64 < N ? j0 + 64 : N;
            for (int64_t r = 0; r < rows; r++) {
                const float *row = dY + r * N;
                for (int64_t j = j0; j < j1; j++) dbias[j] += row[j];
            }
        }
    }
}

static ts_tensor *matmul_impl(ts_ctx *c, const ts_tensor *a, const ts_tensor *b,
                              const ts_tensor *bias, int flags) {
    ts__check_f32("matmul", a);
    ts__check_f32("matmul", b);
    mm_geom g = geometry(a, b, flags);
    int64_t shape[TS_MAX_DIMS];
    for (int i = 0; i < a->ndim - 2; i++) shape[i] = a->shape[i];
    shape[a->ndim - 2] = g.ta ? a->shape[a->ndim - 1] : a->shape[a->ndim - 2];
    shape[a->ndim - 1] = g.N;
    ts_tensor *y = ts_new(c, TS_F32, a->ndim, shape);
    float *Y = ts_f32(y);
    int64_t lda = g.ta ? g.M : g.K, ldb = g.tb ? g.K : g.N;
    if (bias) {
        TS_CHECK(bias->ndim == 1 && bias->shape[0] == g.N, "matmul: bias has %lld elements, "
                 "output has %lld columns", (long long)bias->numel, (long long)g.N);
        int64_t rows = y->numel / g.N;
        const float *bb = ts_f32(bias);
        for (int64_t r = 0; r < rows; r++) memcpy(Y + r * g.N, bb, (size_t)g.N * sizeof(float));
    }
    gemm_batched(c, &g, g.ta, g.tb, g.M, g.N, g.K, ts_f32(a), lda, g.M * g.K, ts_f32(b), ldb,
                 g.b_batched ? g.K * g.N : 0, bias ? 1.0f : 0.0f, Y, g.M * g.N);
    ts_node *n = bias ? TS__RECORD(c, TS_OP_MATMUL, matmul_backward, y, a, b, bias)
                      : TS__RECORD(c, TS_OP_MATMUL, matmul_backward, y, a, b);
    if (n) n->i[0] = flags;
    return y;
}

ts_tensor *ts_matmul(ts_ctx *c, const ts_tensor *a, const ts_tensor *b, int flags) {
    return matmul_impl(c, a, b, NULL, flags);
}

ts_tensor *ts_linear(ts_ctx *c, const ts_tensor *x, const ts_tensor *w, const ts_tensor *bias) {
    TS_CHECK(w->ndim == 2, "linear: weight must be 2-d (out, in)");
    return matmul_impl(c, x, w, bias, TS_TRANS_B);
}
