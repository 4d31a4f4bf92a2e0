/* gpu_common.h: what the GPU check programs share (gpu_parity.c, gpu_cpu_parity.c): the device,
 * the failure count, seeded Gaussian inputs, device copies with NaN-poisoned outputs, and the
 * relative error ||out - ref|| / ||ref|| that never lets a NaN pass. A program defines GPU_PROG
 * (its name, for messages) before including it; every function is static, for one program. */
#ifndef TS_GPU_COMMON_H
#define TS_GPU_COMMON_H

#include "../core/cuda/ts_cuda.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static ts_cuda *G;
static int failures;
static uint64_t rng = 0x9e3779b97f4a7c15ull;

static inline double uniform(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return ((double)(rng >> 11) + 0.5) / 9007199254740992.0;
}

static inline float *randn(int64_t n, float scale) {
    float *x = malloc((size_t)n * sizeof *x);
    for (int64_t i = 0; i < n; i++)
        x[i] = scale * (float)(sqrt(-2.0 * log(uniform())) * cos(6.283185307179586 * uniform()));
    return x;
}

static inline void die(ts_status st, const ts_err *err) {
    if (st) {
        fprintf(stderr, GPU_PROG ": %s\n", err->msg);
        exit(100);
    }
}

/* device copies of host data, and fresh NaN-poisoned outputs */
static inline void *dev(const void *h, size_t bytes) {
    ts_err err = { 0 };
    void *d = ts_cuda_alloc(G, bytes);
    if (!d) {
        fprintf(stderr, GPU_PROG ": the arena is full\n");
        exit(100);
    }
    if (h) die(ts_cuda_upload(G, d, h, bytes, &err), &err);
    else die(ts_cuda_fill_bytes(G, d, 0xff, bytes, &err), &err);
    return d;
}

static inline float *get(const float *d, int64_t n) {
    ts_err err = { 0 };
    float *h = malloc((size_t)n * sizeof *h);
    die(ts_cuda_download(G, h, d, (size_t)n * sizeof *h, &err), &err);
    return h;
}

/* ||a - ref|| / ||ref||, NaN when a holds a NaN */
static inline double rel(const float *a, const double *ref, int64_t n) {
    double d = 0, r = 0;
    for (int64_t i = 0; i < n; i++) {
        if (a[i] != a[i]) return NAN;
        d += ((double)a[i] - ref[i]) * ((double)a[i] - ref[i]);
        r += ref[i] * ref[i];
    }
    return r > 0 ? sqrt(d / r) : sqrt(d);
}

static inline void report(const char *what, double e, double tol) {
    int ok = e == e && e < tol;
    failures += !ok;
    printf("  %-44s rel %.2e  %s\n", what, e, ok ? "ok" : "FAIL");
}

static inline double *dzeros(int64_t n) { return calloc((size_t)n, sizeof(double)); }

/* Download the n floats at d and report their relative error against ref (limit 1e-5). */
static inline void expect(const char *what, const float *d, const double *ref, int64_t n) {
    float *h = get(d, n);
    report(what, rel(h, ref, n), 1e-5);
    free(h);
}

static inline double *dcopy(const float *h, int64_t n) {
    double *d = dzeros(n);
    for (int64_t i = 0; i < n; i++) d[i] = h[i];
    return d;
}

#endif
