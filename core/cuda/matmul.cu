/* matmul.cu: row-major products through cuBLASLt (column-major), float32 accumulation.
 *
 * A row-major (R, C) matrix is the column-major (C, R) one, its transpose, so the row-major
 * y = op(a) @ op(b) is the column-major y^T = op(b)^T @ op(a)^T: cuBLASLt is called with b
 * first and a second, y^T of N rows and M columns, and the bias (N) is the epilogue's bias per
 * row of y^T. Descriptors are made per call (microseconds); the algorithm cuBLASLt's heuristic
 * picks, the costly part, is kept per shape in the device's plan list.
 */
#include "cuda_impl.h"

#include <cuda_bf16.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The largest power of two up to 256 that divides the address: cuBLASLt assumes 256-byte
 * alignment unless told otherwise, and a view into a larger tensor (a slice of packed q, k, v)
 * has less. */
static uint32_t alignment(const void *p) {
    uintptr_t a = (uintptr_t)p;
    uint32_t al = 256;
    while (al > 1 && a % al) al >>= 1;
    return al;
}

#define LT(call, what)                                                                      \
    do {                                                                                   \
        cublasStatus_t s_ = (call);                                                        \
        if (s_ != CUBLAS_STATUS_SUCCESS) {                                                 \
            st = ts__cuda_fail(err, TS_ERR_IO, "cuda: cuBLASLt %s: status %d (%lld x %lld x " \
                               "%lld)", (what), (int)s_, (long long)M, (long long)N,        \
                               (long long)K);                                              \
            goto out;                                                                      \
        }                                                                                  \
    } while (0)

/* Batched layouts: `count` matrices `stride` elements apart (count 1: one matrix). */
static cublasStatus_t batch_layout(cublasLtMatrixLayout_t l, int count, int64_t stride) {
    if (count <= 1) return CUBLAS_STATUS_SUCCESS;
    cublasStatus_t s = cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT,
                                                        &count, sizeof count);
    if (s != CUBLAS_STATUS_SUCCESS) return s;
    return cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET,
                                            &stride, sizeof stride);
}

/* What cuBLASLt's choice of algorithm depends on: everything but the addresses (beyond their
 * alignment) and alpha, beta. Zeroed before it is filled, so that memcmp compares it. */
typedef struct {
    int in, out, ta, tb, count, bias, tuned;
    int64_t M, N, K, sa, sb, sy, lda, ldb, ldy;
    uint32_t al[4];
} plan_key;

struct ts__cuda_plan {
    plan_key k;
    cublasLtMatmulAlgo_t algo;
};

void ts__cuda_plans_free(ts_cuda *g) {
    free(g->plans);
    g->plans = NULL;
    g->nplans = g->cap_plans = 0;
}

#define TUNE_CANDIDATES 8

/* The index of the fastest of n candidate algorithms for this product (y overwritten, so
 * running it changes nothing the call would not): each run 3 times after one warm-up, timed
 * with events on the stream; a candidate that fails is passed over. */
static int fastest(ts_cuda *g, cublasLtMatmulDesc_t op, cublasLtMatrixLayout_t lb,
                   cublasLtMatrixLayout_t la, cublasLtMatrixLayout_t ly, const void *a,
                   const void *b, void *y, const float *alpha, const float *beta,
                   const cublasLtMatmulHeuristicResult_t *heur, int n) {
    cudaEvent_t e0 = NULL, e1 = NULL;
    int best = 0;
    float best_ms = INFINITY;
    if (cudaEventCreate(&e0) != cudaSuccess || cudaEventCreate(&e1) != cudaSuccess) goto done;
    for (int i = 0; i < n; i++) {
        if (heur[i].state != CUBLAS_STATUS_SUCCESS) continue;
        int ok = 1;
        for (int rep = 0; rep < 4 && ok; rep++) {
            if (rep == 1) ok = cudaEventRecord(e0, g->stream) == cudaSuccess;
            ok = ok && cublasLtMatmul(g->lt, op, alpha, b, lb, a, la, beta, y, ly, y, ly,
                                      &heur[i].algo, g->workspace, g->workspace_bytes,
                                      g->stream) == CUBLAS_STATUS_SUCCESS;
        }
        float ms = 0.0f;
        ok = ok && cudaEventRecord(e1, g->stream) == cudaSuccess &&
             cudaEventSynchronize(e1) == cudaSuccess &&
             cudaEventElapsedTime(&ms, e0, e1) == cudaSuccess;
        if (ok && ms < best_ms) {
            best_ms = ms;
            best = i;
        }
    }
done:
    if (e0) cudaEventDestroy(e0);
    if (e1) cudaEventDestroy(e1);
    cudaGetLastError(); /* a failed candidate leaves nothing behind for the next launch */
    return best;
}

static ts_status matmul(ts_cuda *g, ts_cuda_dtype dt, const void *a, const void *b, void *y,
                        int64_t M, int64_t N, int64_t K, int flags, const ts_cuda_mm *o,
                        ts_err *err) {
    const void *bias = o->bias, *c = o->c ? o->c : y;
    int count = o->count > 0 ? o->count : 1;
    float alpha = o->alpha != 0.0f ? o->alpha : 1.0f, beta = o->beta;
    if (M < 1 || N < 1 || K < 1 || o->count < 0 || (count > 1 && bias))
        return ts__cuda_fail(err, TS_ERR_USAGE, "cuda matmul: %lld x %lld x %lld, %d batched%s",
                             (long long)M, (long long)N, (long long)K, count,
                             count > 1 && bias ? " with a bias" : "");
    ts_status st = TS_OK;
    cublasLtMatmulDesc_t op = NULL;
    cublasLtMatrixLayout_t la = NULL, lb = NULL, ly = NULL;
    cublasLtMatmulPreference_t pref = NULL;
    cudaDataType_t in = dt == TS_CUDA_BF16 ? CUDA_R_16BF : CUDA_R_32F;
    cudaDataType_t out = o->out == TS_CUDA_BF16 ? CUDA_R_16BF : CUDA_R_32F;
    int ta = (flags & TS_TRANS_A) != 0, tb = (flags & TS_TRANS_B) != 0;
    /* the column-major operands: first b (op T when b is stored (N, K)), then a */
    cublasOperation_t opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N, opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N;
    /* b stored row-major: (K, N) is column-major (N, K) with ld N; (N, K) is (K, N), ld K;
     * a stored row-major: (M, K) is column-major (K, M), ld K; (K, M) is (M, K), ld M */
    int64_t ldb = o->ld_b ? o->ld_b : tb ? K : N, lda = o->ld_a ? o->ld_a : ta ? M : K;
    int64_t ldy = o->ld_y ? o->ld_y : N;
    plan_key key;
    int at = 0; /* the plan's index */
    memset(&key, 0, sizeof key);
    key.in = (int)dt, key.out = (int)o->out, key.ta = ta, key.tb = tb, key.count = count;
    key.bias = bias != NULL, key.M = M, key.N = N, key.K = K;
    /* batched products that overwrite y have their candidates timed (below); the others keep
     * the heuristic's first choice, under a key of their own */
    int tune = count > 1 && beta == 0.0f && c == y;
    key.tuned = tune;
    if (count > 1) key.sa = o->stride_a, key.sb = o->stride_b, key.sy = o->stride_y;
    key.lda = lda, key.ldb = ldb, key.ldy = ldy;
    key.al[0] = alignment(b), key.al[1] = alignment(a), key.al[2] = alignment(c);
    key.al[3] = alignment(y);
    LT(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F), "descriptor");
    LT(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &opb, sizeof opb),
       "transa");
    LT(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &opa, sizeof opa),
       "transb");
    if (bias) {
        cublasLtEpilogue_t ep = CUBLASLT_EPILOGUE_BIAS;
        LT(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE, &ep, sizeof ep),
           "epilogue");
        LT(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias,
                                          sizeof bias), "bias");
        LT(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &out,
                                          sizeof out), "bias type");
    }
    LT(cublasLtMatrixLayoutCreate(&lb, in, tb ? K : N, tb ? N : K, ldb), "layout b");
    LT(cublasLtMatrixLayoutCreate(&la, in, ta ? M : K, ta ? K : M, lda), "layout a");
    LT(cublasLtMatrixLayoutCreate(&ly, out, N, M, ldy), "layout y");
    LT(batch_layout(lb, count, o->stride_b), "batch b");
    LT(batch_layout(la, count, o->stride_a), "batch a");
    LT(batch_layout(ly, count, o->stride_y), "batch y");
    while (at < g->nplans && memcmp(&g->plans[at].k, &key, sizeof key)) at++;
    if (at == g->nplans) {
        int returned = 0, best = 0;
        cublasLtMatmulHeuristicResult_t heur[TUNE_CANDIDATES];
        LT(cublasLtMatmulPreferenceCreate(&pref), "preference");
        LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                &g->workspace_bytes, sizeof g->workspace_bytes),
           "workspace");
        static const cublasLtMatmulPreferenceAttributes_t which[4] = {
            CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
            CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES
        };
        for (int i = 0; i < 4; i++)
            LT(cublasLtMatmulPreferenceSetAttribute(pref, which[i], &key.al[i], sizeof key.al[i]),
               "alignment");
        /* batched products that overwrite y (attention's small per-head ones, where the
         * heuristic's first choice can be far from the best) time the candidates on this
         * very call's operands, once per shape */
        LT(cublasLtMatmulAlgoGetHeuristic(g->lt, op, lb, la, ly, ly, pref,
                                          tune ? TUNE_CANDIDATES : 1, heur, &returned),
           "heuristic");
        if (returned < 1) {
            st = ts__cuda_fail(err, TS_ERR_UNSUPPORTED, "cuda: cuBLASLt has no algorithm for "
                               "%lld x %lld x %lld", (long long)M, (long long)N, (long long)K);
            goto out;
        }
        if (tune && returned > 1)
            best = fastest(g, op, lb, la, ly, a, b, y, &alpha, &beta, heur, returned);
        if (g->nplans == g->cap_plans) {
            int cap = g->cap_plans ? 2 * g->cap_plans : 64;
            struct ts__cuda_plan *p = (struct ts__cuda_plan *)realloc(g->plans,
                                                                      (size_t)cap * sizeof *p);
            if (!p) {
                st = ts__cuda_fail(err, TS_ERR_NOMEM, "cuda matmul: out of host memory");
                goto out;
            }
            g->plans = p;
            g->cap_plans = cap;
        }
        g->plans[at].k = key;
        g->plans[at].algo = heur[best].algo;
        g->nplans++;
    }
    LT(cublasLtMatmul(g->lt, op, &alpha, b, lb, a, la, &beta, c, ly, y, ly, &g->plans[at].algo,
                      g->workspace, g->workspace_bytes, g->stream), "matmul");
out:
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (ly) cublasLtMatrixLayoutDestroy(ly);
    if (la) cublasLtMatrixLayoutDestroy(la);
    if (lb) cublasLtMatrixLayoutDestroy(lb);
    if (op) cublasLtMatmulDescDestroy(op);
    return st;
}

ts_status ts_cuda_matmul(ts_cuda *g, ts_cuda_dtype dt, const void *a, const void *b,
                         const float *bias, float *y, int64_t M, int64_t N, int64_t K,
                         int flags, float beta, ts_err *err) {
    ts_cuda_mm o;
    memset(&o, 0, sizeof o);
    o.out = TS_CUDA_F32, o.bias = bias, o.beta = beta;
    return matmul(g, dt, a, b, y, M, N, K, flags, &o, err);
}

ts_status ts_cuda_matmul_batched(ts_cuda *g, ts_cuda_dtype dt, const void *a, const void *b,
                                 float *y, int64_t M, int64_t N, int64_t K, int flags,
                                 float alpha, float beta, int count, int64_t stride_a,
                                 int64_t stride_b, int64_t stride_y, int64_t ld_a, int64_t ld_b,
                                 int64_t ld_y, ts_err *err) {
    if (count < 1 || alpha == 0.0f)
        return ts__cuda_fail(err, TS_ERR_USAGE, "cuda matmul: %d batched, alpha %g", count,
                             (double)alpha);
    ts_cuda_mm o;
    memset(&o, 0, sizeof o);
    o.out = TS_CUDA_F32, o.alpha = alpha, o.beta = beta, o.count = count;
    o.stride_a = stride_a, o.stride_b = stride_b, o.stride_y = stride_y;
    o.ld_a = ld_a, o.ld_b = ld_b, o.ld_y = ld_y;
    return matmul(g, dt, a, b, y, M, N, K, flags, &o, err);
}

ts_status ts_cuda_matmul_ex(ts_cuda *g, ts_cuda_dtype dt, const void *a, const void *b, void *y,
                            int64_t M, int64_t N, int64_t K, int flags, const ts_cuda_mm *o,
                            ts_err *err) {
    return matmul(g, dt, a, b, y, M, N, K, flags, o, err);
}

static __global__ void to_bf16_kernel(const float *x, uint16_t *y, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        y[i] = __bfloat16_as_ushort(__float2bfloat16_rn(x[i]));
}

ts_status ts_cuda_to_bf16(ts_cuda *g, const float *x, uint16_t *y, int64_t n, ts_err *err) {
    if (n < 1) return TS_OK;
    int64_t blocks = (n + 255) / 256;
    to_bf16_kernel<<<(unsigned)(blocks < 65535 ? blocks : 65535), 256, 0, g->stream>>>(x, y, n);
    TS_CU_LAUNCHED("to_bf16");
    return TS_OK;
}
