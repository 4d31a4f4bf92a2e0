/* matmul.cu: row-major products through cuBLASLt (column-major), float32 accumulation.
 *
 * A row-major (R, C) matrix is the column-major (C, R) one, its transpose, so the row-major
 * y = op(a) @ op(b) is the column-major y^T = op(b)^T @ op(a)^T: cuBLASLt is called with b
 * first and a second, y^T of N rows and M columns, and the bias (N) is the epilogue's bias per
 * row of y^T. Descriptors are made per call (microseconds); a plan cache belongs with the
 * trainer's device path.
 */
#include "cuda_impl.h"

#include <cuda_bf16.h>

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

static ts_status matmul(ts_cuda *g, ts_cuda_dtype dt, const void *a, const void *b,
                        const float *bias, float *y, int64_t M, int64_t N, int64_t K, int flags,
                        float alpha, float beta, int count, int64_t sa, int64_t sb, int64_t sy,
                        int64_t lda, int64_t ldb, int64_t ldy, ts_err *err) {
    if (M < 1 || N < 1 || K < 1 || count < 1 || (count > 1 && bias))
        return ts__cuda_fail(err, TS_ERR_USAGE, "cuda matmul: %lld x %lld x %lld, %d batched%s",
                             (long long)M, (long long)N, (long long)K, count,
                             count > 1 && bias ? " with a bias" : "");
    ts_status st = TS_OK;
    cublasLtMatmulDesc_t op = NULL;
    cublasLtMatrixLayout_t la = NULL, lb = NULL, ly = NULL;
    cublasLtMatmulPreference_t pref = NULL;
    cudaDataType_t in = dt == TS_CUDA_BF16 ? CUDA_R_16BF : CUDA_R_32F;
    int ta = (flags & TS_TRANS_A) != 0, tb = (flags & TS_TRANS_B) != 0;
    /* the column-major operands: first b (op T when b is stored (N, K)), then a */
    cublasOperation_t opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N, opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N;
    int returned = 0;
    cublasLtMatmulHeuristicResult_t heur;
    LT(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F), "descriptor");
    LT(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &opb, sizeof opb),
       "transa");
    LT(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &opa, sizeof opa),
       "transb");
    if (bias) {
        cublasLtEpilogue_t ep = CUBLASLT_EPILOGUE_BIAS;
        cudaDataType_t bt = CUDA_R_32F;
        LT(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE, &ep, sizeof ep),
           "epilogue");
        LT(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias,
                                          sizeof bias), "bias");
        LT(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt,
                                          sizeof bt), "bias type");
    }
    /* b stored row-major: (K, N) is column-major (N, K) with ld N; (N, K) is (K, N), ld K */
    if (!ldb) ldb = tb ? K : N;
    if (!lda) lda = ta ? M : K;
    if (!ldy) ldy = N;
    LT(cublasLtMatrixLayoutCreate(&lb, in, tb ? K : N, tb ? N : K, ldb), "layout b");
    /* a stored row-major: (M, K) is column-major (K, M), ld K; (K, M) is (M, K), ld M */
    LT(cublasLtMatrixLayoutCreate(&la, in, ta ? M : K, ta ? K : M, lda), "layout a");
    LT(cublasLtMatrixLayoutCreate(&ly, CUDA_R_32F, N, M, ldy), "layout y");
    LT(batch_layout(lb, count, sb), "batch b");
    LT(batch_layout(la, count, sa), "batch a");
    LT(batch_layout(ly, count, sy), "batch y");
    LT(cublasLtMatmulPreferenceCreate(&pref), "preference");
    LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                            &g->workspace_bytes, sizeof g->workspace_bytes),
       "workspace");
    {
        uint32_t al[3] = { alignment(b), alignment(a), alignment(y) };
        LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                                                &al[0], sizeof al[0]), "alignment");
        LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                                                &al[1], sizeof al[1]), "alignment");
        LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                                                &al[2], sizeof al[2]), "alignment");
        LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
                                                &al[2], sizeof al[2]), "alignment");
    }
    LT(cublasLtMatmulAlgoGetHeuristic(g->lt, op, lb, la, ly, ly, pref, 1, &heur, &returned),
       "heuristic");
    if (returned < 1) {
        st = ts__cuda_fail(err, TS_ERR_UNSUPPORTED, "cuda: cuBLASLt has no algorithm for %lld "
                           "x %lld x %lld", (long long)M, (long long)N, (long long)K);
        goto out;
    }
    LT(cublasLtMatmul(g->lt, op, &alpha, b, lb, a, la, &beta, y, ly, y, ly, &heur.algo,
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
    return matmul(g, dt, a, b, bias, y, M, N, K, flags, 1.0f, beta, 1, 0, 0, 0, 0, 0, 0, err);
}

ts_status ts_cuda_matmul_batched(ts_cuda *g, ts_cuda_dtype dt, const void *a, const void *b,
                                 float *y, int64_t M, int64_t N, int64_t K, int flags,
                                 float alpha, float beta, int count, int64_t stride_a,
                                 int64_t stride_b, int64_t stride_y, int64_t ld_a, int64_t ld_b,
                                 int64_t ld_y, ts_err *err) {
    return matmul(g, dt, a, b, NULL, y, M, N, K, flags, alpha, beta, count, stride_a, stride_b,
                  stride_y, ld_a, ld_b, ld_y, err);
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
