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

ts_status ts_cuda_matmul(ts_cuda *g, ts_cuda_dtype dt, const void *a, const void *b,
                         const float *bias, float *y, int64_t M, int64_t N, int64_t K,
                         int flags, float beta, ts_err *err) {
    if (M < 1 || N < 1 || K < 1)
        return ts__cuda_fail(err, TS_ERR_USAGE, "cuda matmul: %lld x %lld x %lld",
                             (long long)M, (long long)N, (long long)K);
    ts_status st = TS_OK;
    cublasLtMatmulDesc_t op = NULL;
    cublasLtMatrixLayout_t la = NULL, lb = NULL, ly = NULL;
    cublasLtMatmulPreference_t pref = NULL;
    cudaDataType_t in = dt == TS_CUDA_BF16 ? CUDA_R_16BF : CUDA_R_32F;
    int ta = (flags & TS_TRANS_A) != 0, tb = (flags & TS_TRANS_B) != 0;
    /* the column-major operands: first b (op T when b is stored (N, K)), then a */
    cublasOperation_t opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N, opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N;
    float alpha = 1.0f;
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
    LT(cublasLtMatrixLayoutCreate(&lb, in, tb ? K : N, tb ? N : K, tb ? K : N), "layout b");
    /* a stored row-major: (M, K) is column-major (K, M), ld K; (K, M) is (M, K), ld M */
    LT(cublasLtMatrixLayoutCreate(&la, in, ta ? M : K, ta ? K : M, ta ? M : K), "layout a");
    LT(cublasLtMatrixLayoutCreate(&ly, CUDA_R_32F, N, M, N), "layout y");
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
