/* cuda_impl.h: what the CUDA sources share (internal to core/cuda). */
#ifndef TS_CUDA_IMPL_H
#define TS_CUDA_IMPL_H

#include "ts_cuda.h"

#include <cublasLt.h>
#include <cuda_runtime.h>

struct ts_cuda {
    int device;
    cudaStream_t stream;
    cublasLtHandle_t lt;
    void *workspace;        /* cuBLASLt's */
    size_t workspace_bytes;
    char *arena;
    size_t cap, used;
    float *scratch;         /* per-chunk partial sums of the row reductions, cross-entropy row
                               losses, attention's per-row delta (one stream: one at a time) */
    size_t scratch_floats;
    char describe[256];
    struct ts__cuda_plan *plans; /* cuBLASLt's algorithm per product shape (matmul.cu) */
    int nplans, cap_plans;
    /* the lanes' uploads (ts_cuda_lane_*): their stream, created on first use, and per lane
     * the copy's end and the compute stream's last use of the destination */
    cudaStream_t copy;
    cudaEvent_t arrived[TS_CUDA_LANES], consumed[TS_CUDA_LANES];
};

/* matmul.cu: the cached algorithms go with the device */
void ts__cuda_plans_free(ts_cuda *g);

/* Record a failure in err (may be NULL) and return code. */
ts_status ts__cuda_fail(ts_err *err, ts_status code, const char *fmt, ...);

/* Return from the calling function with an error naming what failed. */
#define TS_CU(call, what)                                                                   \
    do {                                                                                   \
        cudaError_t e_ = (call);                                                           \
        if (e_ != cudaSuccess)                                                             \
            return ts__cuda_fail(err, TS_ERR_IO, "cuda: %s: %s", (what),                    \
                                 cudaGetErrorString(e_));                                  \
    } while (0)
/* After a kernel launch: a bad configuration shows here. */
#define TS_CU_LAUNCHED(what) TS_CU(cudaGetLastError(), (what))

/* Threads per block of the row kernels (a multiple of 32). */
#define TS_CU_ROW_THREADS 256

#ifdef __CUDACC__
#include <cuda_bf16.h>

/* Blocks for n elements at `threads` a block (a grid-stride loop covers the rest). */
static inline unsigned grid_for(int64_t n, int threads) {
    int64_t b = (n + threads - 1) / threads;
    return (unsigned)(b < 1 ? 1 : b > 65535 ? 65535 : b);
}

/* Store a float as float32, or as bf16 (round to nearest even). */
static __device__ __forceinline__ void put(float *p, float v) { *p = v; }
static __device__ __forceinline__ void put(uint16_t *p, float v) {
    *p = __bfloat16_as_ushort(__float2bfloat16_rn(v));
}
/* Load a float32, or a bf16 as float32. */
static __device__ __forceinline__ float get(const float *p) { return *p; }
static __device__ __forceinline__ float get(const uint16_t *p) {
    return __bfloat162float(__ushort_as_bfloat16(*p));
}

/* The warp-per-row kernels' launch: LAUNCH(V) with V the values a lane holds of a row of n
 * (n <= 32 V: 4, 8, 16, 24 or 32; a lane's values past n are padding that leaves every sum
 * as it is), and 1; or 0 for rows over 1024, which the block-per-row kernels take. */
#define TS_CU_ROW_LAUNCH(n, LAUNCH)                                                         \
    ((n) <= 128    ? (LAUNCH(4), 1)                                                        \
     : (n) <= 256  ? (LAUNCH(8), 1)                                                        \
     : (n) <= 512  ? (LAUNCH(16), 1)                                                       \
     : (n) <= 768  ? (LAUNCH(24), 1)                                                       \
     : (n) <= 1024 ? (LAUNCH(32), 1)                                                       \
                   : 0)

#include "device_common.h"
#endif

#endif
