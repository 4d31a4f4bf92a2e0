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
};

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

#endif
