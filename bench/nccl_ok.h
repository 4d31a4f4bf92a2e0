/* nccl_ok.h: the error checks of the NCCL bench programs (nccl_smoke, nccl_one).
 *
 * CUDA_OK and NCCL_OK print the failing call with the runtime's message, prefixed with the
 * program's name (NCCL_BENCH_NAME, defined before this header), and return 1 from the calling
 * function. Only CUDA's and NCCL's headers are needed, so nccl_one still builds with nvcc alone.
 */
#ifndef TS_BENCH_NCCL_OK_H
#define TS_BENCH_NCCL_OK_H

#include <cuda_runtime_api.h>
#include <nccl.h>
#include <stdio.h>

#define CUDA_OK(x)                                                                           \
    do {                                                                                     \
        cudaError_t e_ = (x);                                                                \
        if (e_ != cudaSuccess) {                                                             \
            fprintf(stderr, "%s: %s: %s\n", NCCL_BENCH_NAME, #x, cudaGetErrorString(e_));    \
            return 1;                                                                        \
        }                                                                                    \
    } while (0)
#define NCCL_OK(x)                                                                           \
    do {                                                                                     \
        ncclResult_t r_ = (x);                                                               \
        if (r_ != ncclSuccess) {                                                             \
            fprintf(stderr, "%s: %s: %s\n", NCCL_BENCH_NAME, #x, ncclGetErrorString(r_));    \
            return 1;                                                                        \
        }                                                                                    \
    } while (0)

#endif
