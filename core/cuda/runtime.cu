/* runtime.cu: the device, its stream, the arena and the copies. */
#include "cuda_impl.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TS_CU_WORKSPACE ((size_t)64 << 20)  /* cuBLASLt's workspace */
#define TS_CU_SCRATCH ((size_t)16 << 20)    /* floats of partial sums */
#define TS_CU_ALIGN 256

ts_status ts__cuda_fail(ts_err *err, ts_status code, const char *fmt, ...) {
    if (err) {
        /* formatted aside first, as ts_fail: a caller may wrap err->msg itself */
        char msg[sizeof err->msg];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        memcpy(err->msg, msg, sizeof msg);
        err->code = code;
    }
    return code;
}

ts_status ts_cuda_open(ts_cuda **out, int device, size_t arena_bytes, ts_err *err) {
    *out = NULL;
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0)
        return ts__cuda_fail(err, TS_ERR_UNSUPPORTED, "cuda: no usable GPU (%s)",
                             e != cudaSuccess ? cudaGetErrorString(e) : "none found");
    if (device < 0 || device >= n)
        return ts__cuda_fail(err, TS_ERR_USAGE, "cuda: device %d of %d", device, n);
    TS_CU(cudaSetDevice(device), "cudaSetDevice");
    if (arena_bytes == 0) {
        size_t free_b = 0, total_b = 0;
        TS_CU(cudaMemGetInfo(&free_b, &total_b), "cudaMemGetInfo");
        arena_bytes = free_b / 10 * 9;
    }
    ts_cuda *g = (ts_cuda *)calloc(1, sizeof *g);
    if (!g) return ts__cuda_fail(err, TS_ERR_NOMEM, "out of memory");
    g->device = device;
    ts_status st = TS_OK;
    cudaDeviceProp prop;
    if ((e = cudaGetDeviceProperties(&prop, device)) != cudaSuccess ||
        (e = cudaStreamCreateWithFlags(&g->stream, cudaStreamNonBlocking)) != cudaSuccess ||
        (e = cudaMalloc((void **)&g->arena, arena_bytes)) != cudaSuccess ||
        (e = cudaMalloc(&g->workspace, TS_CU_WORKSPACE)) != cudaSuccess ||
        (e = cudaMalloc((void **)&g->scratch, TS_CU_SCRATCH * sizeof(float))) != cudaSuccess) {
        st = ts__cuda_fail(err, e == cudaErrorMemoryAllocation ? TS_ERR_NOMEM : TS_ERR_IO,
                           "cuda: opening device %d (arena %zu MiB): %s", device,
                           arena_bytes >> 20, cudaGetErrorString(e));
        ts_cuda_close(g);
        return st;
    }
    g->cap = arena_bytes;
    g->workspace_bytes = TS_CU_WORKSPACE;
    g->scratch_floats = TS_CU_SCRATCH;
    if (cublasLtCreate(&g->lt) != CUBLAS_STATUS_SUCCESS) {
        ts_cuda_close(g);
        return ts__cuda_fail(err, TS_ERR_IO, "cuda: cublasLtCreate failed");
    }
    snprintf(g->describe, sizeof g->describe,
             "%.120s, compute capability %d.%d, %d SMs, %.1f GiB", prop.name, prop.major,
             prop.minor, prop.multiProcessorCount, (double)prop.totalGlobalMem / (1u << 30));
    *out = g;
    return TS_OK;
}

void ts_cuda_close(ts_cuda *g) {
    if (!g) return;
    if (g->copy) {
        cudaStreamSynchronize(g->copy);
        for (int k = 0; k < TS_CUDA_LANES; k++) {
            cudaEventDestroy(g->arrived[k]);
            cudaEventDestroy(g->consumed[k]);
        }
        cudaStreamDestroy(g->copy);
    }
    if (g->lt) cublasLtDestroy(g->lt);
    ts__cuda_plans_free(g);
    cudaFree(g->scratch);
    cudaFree(g->workspace);
    cudaFree(g->arena);
    if (g->stream) cudaStreamDestroy(g->stream);
    free(g);
}

const char *ts_cuda_describe(const ts_cuda *g) { return g->describe; }

void *ts_cuda_alloc(ts_cuda *g, size_t bytes) {
    size_t at = (g->used + TS_CU_ALIGN - 1) / TS_CU_ALIGN * TS_CU_ALIGN;
    if (at > g->cap || bytes > g->cap - at) return NULL;
    g->used = at + bytes;
    return g->arena + at;
}

size_t ts_cuda_arena_used(const ts_cuda *g) { return g->used; }
void ts_cuda_reset(ts_cuda *g) { g->used = 0; }

ts_status ts_cuda_upload(ts_cuda *g, void *dst, const void *src, size_t bytes, ts_err *err) {
    TS_CU(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, g->stream), "upload");
    return TS_OK;
}

ts_status ts_cuda_download(ts_cuda *g, void *dst, const void *src, size_t bytes, ts_err *err) {
    TS_CU(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, g->stream), "download");
    TS_CU(cudaStreamSynchronize(g->stream), "download");
    return TS_OK;
}

ts_status ts_cuda_fill_bytes(ts_cuda *g, void *dst, int byte, size_t bytes, ts_err *err) {
    TS_CU(cudaMemsetAsync(dst, byte, bytes, g->stream), "fill");
    return TS_OK;
}

ts_status ts_cuda_zero(ts_cuda *g, void *dst, size_t bytes, ts_err *err) {
    return ts_cuda_fill_bytes(g, dst, 0, bytes, err);
}

ts_status ts_cuda_sync(ts_cuda *g, ts_err *err) {
    TS_CU(cudaStreamSynchronize(g->stream), "synchronize");
    return TS_OK;
}

/* ---- the lanes ---- */

ts_status ts_cuda_pin(ts_cuda *g, void *host, size_t bytes, ts_err *err) {
    (void)g;
    cudaError_t e = cudaHostRegister(host, bytes, cudaHostRegisterDefault);
    if (e == cudaSuccess) return TS_OK;
    cudaGetLastError(); /* not an error of the next kernel launch */
    return ts__cuda_fail(err, TS_ERR_IO, "cuda: page-locking %zu MiB of host memory: %s",
                         bytes >> 20, cudaGetErrorString(e));
}

void ts_cuda_unpin(ts_cuda *g, void *host) {
    if (g->copy) cudaStreamSynchronize(g->copy); /* no copy still reads it */
    if (cudaHostUnregister(host) != cudaSuccess) cudaGetLastError(); /* it was never pinned */
}

/* As TS_CU, for the lanes: a failure is not left behind for the next kernel launch's check
 * (the next step's error is the staging's own, as ts_cuda.h promises) */
#define TS_CU_LANE(call, what)                                                              \
    do {                                                                                   \
        cudaError_t e_ = (call);                                                           \
        if (e_ != cudaSuccess) {                                                           \
            cudaGetLastError();                                                            \
            return ts__cuda_fail(err, TS_ERR_IO, "cuda: %s: %s", (what),                    \
                                 cudaGetErrorString(e_));                                  \
        }                                                                                  \
    } while (0)

static ts_status lanes_open(ts_cuda *g, int lane, ts_err *err) {
    if (lane < 0 || lane >= TS_CUDA_LANES)
        return ts__cuda_fail(err, TS_ERR_USAGE, "cuda: lane %d of %d", lane, TS_CUDA_LANES);
    if (g->copy) return TS_OK;
    cudaEvent_t ev[2 * TS_CUDA_LANES] = { 0 };
    cudaStream_t copy = NULL;
    cudaError_t e = cudaSuccess;
    for (int k = 0; k < 2 * TS_CUDA_LANES && e == cudaSuccess; k++)
        e = cudaEventCreateWithFlags(&ev[k], cudaEventDisableTiming);
    if (e == cudaSuccess) e = cudaStreamCreateWithFlags(&copy, cudaStreamNonBlocking);
    if (e != cudaSuccess) { /* nothing half made stays behind */
        for (int k = 0; k < 2 * TS_CUDA_LANES; k++)
            if (ev[k]) cudaEventDestroy(ev[k]);
        TS_CU_LANE(e, "the copy stream and its events");
    }
    for (int k = 0; k < TS_CUDA_LANES; k++)
        g->arrived[k] = ev[2 * k], g->consumed[k] = ev[2 * k + 1];
    g->copy = copy;
    return TS_OK;
}

ts_status ts_cuda_lane_upload(ts_cuda *g, int lane, void *dst, const void *src, size_t bytes,
                              ts_err *err) {
    ts_status st = lanes_open(g, lane, err);
    if (st) return st;
    /* an event never recorded is complete: the first upload into a lane waits for nothing */
    TS_CU_LANE(cudaStreamWaitEvent(g->copy, g->consumed[lane], 0), "lane upload");
    TS_CU_LANE(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, g->copy), "lane upload");
    TS_CU_LANE(cudaEventRecord(g->arrived[lane], g->copy), "lane upload");
    return TS_OK;
}

ts_status ts_cuda_lane_use(ts_cuda *g, int lane, ts_err *err) {
    ts_status st = lanes_open(g, lane, err);
    if (st) return st;
    TS_CU_LANE(cudaStreamWaitEvent(g->stream, g->arrived[lane], 0), "lane use");
    return TS_OK;
}

ts_status ts_cuda_lane_release(ts_cuda *g, int lane, ts_err *err) {
    ts_status st = lanes_open(g, lane, err);
    if (st) return st;
    TS_CU_LANE(cudaEventRecord(g->consumed[lane], g->stream), "lane release");
    return TS_OK;
}

ts_status ts_cuda_lane_wait_host(ts_cuda *g, int lane, ts_err *err) {
    ts_status st = lanes_open(g, lane, err);
    if (st) return st;
    TS_CU_LANE(cudaEventSynchronize(g->arrived[lane]), "lane copy");
    return TS_OK;
}
