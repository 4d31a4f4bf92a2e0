/* nccl_one.c: the NCCL all-reduce on one GPU, with nothing but CUDA and NCCL.
 *
 * bench/nccl_smoke sets NCCL up as the trainer will (MPI ranks, the unique id broadcast over
 * ts_dist) and so links all of libtessera with MPI and oneDNN. A bare GPU machine has neither,
 * so bench/gpu_check.sh builds this file with nvcc alone: one process makes a unique id
 * (ncclGetUniqueId), joins a communicator of one rank with it (ncclCommInitRank, world 1: the
 * same calls every rank of a real job makes), and runs a sum all-reduce of sizes from 4 KiB to
 * the maximum, out of place, into a buffer poisoned with NaN first. With one rank the sum is
 * the input itself, so every element of the result is checked against what was sent. Each size
 * is timed with CUDA events over 20 calls after a warm-up, printed as nccl-tests prints it:
 * algorithm bandwidth (bytes / time) and bus bandwidth (algbw * 2(N-1)/N, zero for one rank by
 * that definition: nothing crosses a link). The last line is a summary for gpu_check.sh.
 *
 * It is a smoke test of the NCCL set-up on one GPU, not a measurement of links: that needs
 * several GPUs (mpirun -np G bench/nccl_smoke). Without a GPU it says so and exits 2.
 *
 *   nccl_one [max MiB, default 256]
 */
#define NCCL_BENCH_NAME "nccl_one"
#include "nccl_ok.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Sum all-reduce of n floats from send to recv (poisoned first); the number of elements of
 * recv that differ from host, the values sent, into *bad. */
static int check(ncclComm_t comm, cudaStream_t s, float *send, float *recv, float *host,
                 size_t n, size_t *bad) {
    for (size_t i = 0; i < n; i++) host[i] = (float)(i % 1009) - 504.0f;
    CUDA_OK(cudaMemcpy(send, host, n * sizeof *host, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemset(recv, 0xff, n * sizeof *recv)); /* NaN */
    NCCL_OK(ncclAllReduce(send, recv, n, ncclFloat, ncclSum, comm, s));
    CUDA_OK(cudaStreamSynchronize(s));
    float *got = malloc(n * sizeof *got);
    if (!got) return 1;
    CUDA_OK(cudaMemcpy(got, recv, n * sizeof *got, cudaMemcpyDeviceToHost));
    *bad = 0;
    for (size_t i = 0; i < n; i++) *bad += got[i] != host[i];
    free(got);
    return 0;
}

/* Seconds per call into *t: 20 calls timed by CUDA events after one warm-up. */
static int timed(ncclComm_t comm, cudaStream_t s, float *send, float *recv, size_t n,
                 double *t) {
    cudaEvent_t a, b;
    CUDA_OK(cudaEventCreate(&a));
    CUDA_OK(cudaEventCreate(&b));
    NCCL_OK(ncclAllReduce(send, recv, n, ncclFloat, ncclSum, comm, s));
    CUDA_OK(cudaEventRecord(a, s));
    for (int i = 0; i < 20; i++) NCCL_OK(ncclAllReduce(send, recv, n, ncclFloat, ncclSum, comm, s));
    CUDA_OK(cudaEventRecord(b, s));
    CUDA_OK(cudaEventSynchronize(b));
    float ms = 0;
    CUDA_OK(cudaEventElapsedTime(&ms, a, b));
    *t = ms * 1e-3 / 20;
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    return 0;
}

static int run(size_t max_bytes) {
    int v = 0;
    NCCL_OK(ncclGetVersion(&v));
    ncclUniqueId id;
    NCCL_OK(ncclGetUniqueId(&id));
    ncclComm_t comm;
    NCCL_OK(ncclCommInitRank(&comm, 1, id, 0));
    cudaStream_t s;
    CUDA_OK(cudaStreamCreate(&s));
    size_t max_n = max_bytes / sizeof(float);
    float *send = NULL, *recv = NULL, *host = malloc(max_n * sizeof *host);
    if (!host) return 1;
    CUDA_OK(cudaMalloc((void **)&send, max_n * sizeof *send));
    CUDA_OK(cudaMalloc((void **)&recv, max_n * sizeof *recv));
    printf("NCCL %d, 1 rank (ncclCommInitRank, world 1)\n", v);
    printf("%12s %8s %10s %12s %12s\n", "bytes", "check", "time_us", "algbw_GB/s", "busbw_GB/s");
    size_t bad_total = 0;
    double last_algbw = 0;
    for (size_t bytes = 4096; bytes <= max_bytes; bytes *= 4) {
        size_t n = bytes / sizeof(float), bad = 0;
        double t = 0;
        if (check(comm, s, send, recv, host, n, &bad) || timed(comm, s, send, recv, n, &t))
            return 1;
        bad_total += bad;
        last_algbw = (double)bytes / t / 1e9;
        printf("%12zu %8s %10.1f %12.2f %12.2f\n", bytes, bad ? "WRONG" : "ok", t * 1e6,
               last_algbw, 0.0);
    }
    printf("nccl_one: %s, algbw %.1f GB/s at the largest size\n",
           bad_total ? "WRONG sums" : "sums correct", last_algbw);
    cudaFree(send);
    cudaFree(recv);
    free(host);
    cudaStreamDestroy(s);
    ncclCommDestroy(comm);
    return bad_total ? 1 : 0;
}

int main(int argc, char **argv) {
    long mib = argc > 1 ? atol(argv[1]) : 256;
    if (argc > 2 || mib < 1 || mib > 16384) {
        fprintf(stderr, "usage: nccl_one [max MiB, 1..16384, default 256]\n");
        return 2;
    }
    int ndev = 0;
    cudaError_t e = cudaGetDeviceCount(&ndev);
    if (e != cudaSuccess || ndev == 0) {
        fprintf(stderr, "nccl_one: no usable GPU (%s): the NCCL smoke test needs one\n",
                e != cudaSuccess ? cudaGetErrorString(e) : "no device");
        return 2;
    }
    if (cudaSetDevice(0) != cudaSuccess) {
        fprintf(stderr, "nccl_one: cannot use GPU 0\n");
        return 2;
    }
    return run((size_t)mib << 20);
}
