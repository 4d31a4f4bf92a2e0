/* nccl_smoke.c: the GPU all-reduce of data parallelism, set up as tessera will set it up.
 *
 * Every rank joins the job with ts_dist_init (MPI under mpirun or srun, or alone), rank 0 makes
 * an NCCL unique id and broadcasts it with ts_dist_broadcast, each rank takes the GPU of its
 * local rank and joins the NCCL communicator. Then a sum all-reduce of floats is checked
 * (rank r contributes r + 1 everywhere, so every element must be N(N+1)/2) and timed over
 * gradient-sized buffers, printed as nccl-tests prints it: algorithm bandwidth (bytes / time)
 * and bus bandwidth (algbw * 2(N-1)/N, what each link carries in a ring all-reduce).
 *
 * With one GPU it is a smoke test of the set-up (NCCL copies locally, no link is measured); on
 * one machine with several GPUs, mpirun -np G bench/nccl_smoke measures NVLink. It is a bench
 * program built when CUDA and NCCL are found, not a test, and not yet the trainer's path: the
 * CUDA backend's gradients will be all-reduced by these same calls (docs/distributed.md).
 *
 *   [mpirun -np G] nccl_smoke [max MiB, default 256]
 */
#include "tessera.h"

#define NCCL_BENCH_NAME "nccl_smoke"
#include "nccl_ok.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int run(ts_dist *d, size_t max_mib) {
    int ndev = 0;
    CUDA_OK(cudaGetDeviceCount(&ndev));
    if (ndev == 0) {
        fprintf(stderr, "nccl_smoke: no GPU\n");
        return 1;
    }
    CUDA_OK(cudaSetDevice(d->local_rank % ndev));
    ncclUniqueId id;
    if (d->rank == 0) NCCL_OK(ncclGetUniqueId(&id));
    ts_err err = { 0 };
    if (ts_dist_broadcast(d, &id, sizeof id, 0, &err)) {
        fprintf(stderr, "nccl_smoke: %s\n", err.msg);
        return 1;
    }
    ncclComm_t comm;
    NCCL_OK(ncclCommInitRank(&comm, d->world, id, d->rank));
    cudaStream_t stream;
    CUDA_OK(cudaStreamCreate(&stream));
    size_t max_n = max_mib << 18; /* floats */
    float *buf = NULL, *host = malloc(max_n * sizeof *host);
    if (!host) return 1;
    CUDA_OK(cudaMalloc((void **)&buf, max_n * sizeof *buf));

    /* correctness on the largest size */
    for (size_t i = 0; i < max_n; i++) host[i] = (float)(d->rank + 1);
    CUDA_OK(cudaMemcpy(buf, host, max_n * sizeof *buf, cudaMemcpyHostToDevice));
    NCCL_OK(ncclAllReduce(buf, buf, max_n, ncclFloat, ncclSum, comm, stream));
    CUDA_OK(cudaStreamSynchronize(stream));
    CUDA_OK(cudaMemcpy(host, buf, max_n * sizeof *buf, cudaMemcpyDeviceToHost));
    float want = (float)d->world * (float)(d->world + 1) / 2;
    size_t bad = 0;
    for (size_t i = 0; i < max_n; i++) bad += host[i] != want;
    if (d->rank == 0) {
        int v = 0;
        ncclGetVersion(&v);
        printf("NCCL %d, %d rank(s), %d GPU(s) on rank 0's machine: all-reduce of %zu floats "
               "%s (expected %g everywhere)\n", v, d->world, ndev, max_n,
               bad ? "WRONG" : "correct", want);
        printf("%12s %10s %12s %12s\n", "bytes", "time_us", "algbw_GB/s", "busbw_GB/s");
    }
    for (size_t bytes = 1 << 20; bytes <= max_n * sizeof(float); bytes *= 4) {
        size_t n = bytes / sizeof(float);
        int iters = 20;
        NCCL_OK(ncclAllReduce(buf, buf, n, ncclFloat, ncclSum, comm, stream)); /* warm-up */
        CUDA_OK(cudaStreamSynchronize(stream));
        if (ts_dist_barrier(d, "timing", &err)) return 1;
        double t0 = now_s();
        for (int i = 0; i < iters; i++)
            NCCL_OK(ncclAllReduce(buf, buf, n, ncclFloat, ncclSum, comm, stream));
        CUDA_OK(cudaStreamSynchronize(stream));
        double t = (now_s() - t0) / iters;
        double algbw = (double)bytes / t / 1e9;
        double busbw = algbw * 2.0 * (d->world - 1) / d->world;
        if (d->rank == 0) printf("%12zu %10.1f %12.2f %12.2f\n", bytes, t * 1e6, algbw, busbw);
    }
    CUDA_OK(cudaFree(buf));
    free(host);
    ncclCommDestroy(comm);
    cudaStreamDestroy(stream);
    return bad ? 1 : 0;
}

int main(int argc, char **argv) {
    size_t max_mib = argc > 1 ? (size_t)atol(argv[1]) : 256;
    if (max_mib < 1) max_mib = 1;
    ts_dist d;
    ts_err err = { 0 };
    if (ts_dist_init(&d, &argc, &argv, &err)) {
        fprintf(stderr, "nccl_smoke: %s\n", err.msg);
        return 1;
    }
    int rc = run(&d, max_mib);
    if (rc && d.world > 1) ts_dist_abort(&d, rc, "the NCCL smoke test failed");
    ts_dist_finalize(&d);
    return rc;
}
