// emu_cuda.h: a host emulation of the CUDA features that tessera's kernels use, so that the
// kernels' own source runs on the CPU in tests where there is no GPU (CI has none).
//
// Every CUDA thread of a block is a host thread; __syncthreads is a barrier of the block's
// threads and the warp operations (__shfl_xor_sync, mma.sync) barriers of the warp's 32, with
// mma.sync m16n8k16 computed from the fragments the 32 lanes hold, in the PTX ISA's layout (row
// groupID = lane / 4, column pair 2 (lane % 4); A's registers: rows g and g + 8, columns c and
// c + 8; B's: rows c and c + 8 of column g; the accumulator's: rows g and g + 8). Blocks run one
// after another, so __shared__ arrays can be static. atomicAdd takes a lock. A test includes
// this header, defines TS_CU_EMULATE and includes the kernels' header; launch() runs a grid.
// What this checks is the kernels' index and fragment arithmetic, masks, bounds and tile
// edges; speed and the hardware itself are bench/gpu_check.sh's.
#ifndef TS_EMU_CUDA_H
#define TS_EMU_CUDA_H
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <functional>
#include <mutex>
#include <thread>
#include <vector>

// ---- the emulated CUDA features ----
struct dim3 {
    unsigned x, y, z;
    dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
struct uint4 {
    uint32_t x, y, z, w;
};
static inline uint4 make_uint4(uint32_t a, uint32_t b, uint32_t c, uint32_t d) {
    return uint4{ a, b, c, d };
}
static thread_local dim3 threadIdx, blockIdx;
static dim3 gridDim, blockDim;
#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))

enum { MAX_WARPS = 8 };
static pthread_barrier_t block_bar, warp_bar[MAX_WARPS];
static float xbuf[MAX_WARPS][32];
static uint32_t frag_a[MAX_WARPS][32][4], frag_b[MAX_WARPS][32][2];
static float frag_c[MAX_WARPS][32][4];
static std::mutex atomic_mu;

static inline int warp_of_thread() { return (int)(threadIdx.x >> 5); }
static inline void __syncthreads() { pthread_barrier_wait(&block_bar); }
static inline float __shfl_xor_sync(unsigned, float v, int o) {
    int w = warp_of_thread(), l = (int)(threadIdx.x & 31);
    xbuf[w][l] = v;
    pthread_barrier_wait(&warp_bar[w]);
    float r = xbuf[w][l ^ o];
    pthread_barrier_wait(&warp_bar[w]);
    return r;
}
static inline float bf16_to_float(uint16_t u) {
    uint32_t b = (uint32_t)u << 16;
    float f;
    memcpy(&f, &b, 4);
    return f;
}
static inline uint16_t float_to_bf16(float f) { // round to nearest even, NaN kept
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}
static inline float get(const uint16_t *p) { return bf16_to_float(*p); }
static inline float get(const float *p) { return *p; }
static inline void put(uint16_t *p, float v) { *p = float_to_bf16(v); }
static inline void put(float *p, float v) { *p = v; }
static inline void atomicAdd(float *p, float v) {
    std::lock_guard<std::mutex> g(atomic_mu);
    *p += v;
}
#include "cuda/device_common.h"

// d (16 x 8) += a (16 x 16) b (16 x 8), from the fragments of the warp's 32 lanes
static inline void mma16816(float *d, const uint32_t *a, uint32_t b0, uint32_t b1) {
    int w = warp_of_thread(), l = (int)(threadIdx.x & 31);
    for (int i = 0; i < 4; i++) frag_a[w][l][i] = a[i], frag_c[w][l][i] = d[i];
    frag_b[w][l][0] = b0, frag_b[w][l][1] = b1;
    pthread_barrier_wait(&warp_bar[w]);
    float A[16][16], B[16][8];
    for (int t = 0; t < 32; t++) {
        int g = t >> 2, c = (t & 3) * 2;
        for (int h = 0; h < 2; h++) {
            A[g][c + h] = bf16_to_float((uint16_t)(frag_a[w][t][0] >> (16 * h)));
            A[g + 8][c + h] = bf16_to_float((uint16_t)(frag_a[w][t][1] >> (16 * h)));
            A[g][c + 8 + h] = bf16_to_float((uint16_t)(frag_a[w][t][2] >> (16 * h)));
            A[g + 8][c + 8 + h] = bf16_to_float((uint16_t)(frag_a[w][t][3] >> (16 * h)));
            B[c + h][g] = bf16_to_float((uint16_t)(frag_b[w][t][0] >> (16 * h)));
            B[c + 8 + h][g] = bf16_to_float((uint16_t)(frag_b[w][t][1] >> (16 * h)));
        }
    }
    int g = l >> 2, c = (l & 3) * 2;
    float out[4];
    for (int e = 0; e < 4; e++) {
        int row = g + 8 * (e >> 1), col = c + (e & 1);
        float s = frag_c[w][l][e];
        for (int k = 0; k < 16; k++) s += A[row][k] * B[k][col];
        out[e] = s;
    }
    pthread_barrier_wait(&warp_bar[w]);
    for (int e = 0; e < 4; e++) d[e] = out[e];
}

// ldmatrix .x4 (and .trans): lanes 8i .. 8i + 7 give the rows of matrix i; lane l receives in
// f[i] matrix i's row l/4, columns 2(l%4) and 2(l%4) + 1 (with .trans: column l/4, rows 2(l%4)
// and 2(l%4) + 1). The rows must be 16-byte aligned, as the hardware wants.
static const uint16_t *ldsm_rows[MAX_WARPS][32];
static inline void ldsm(uint32_t f[4], const uint16_t *row, int trans) {
    int w = warp_of_thread(), l = (int)(threadIdx.x & 31);
    if ((uintptr_t)row % 16) {
        fprintf(stderr, "ldmatrix: lane %d's row address is not 16-byte aligned\n", l);
        abort();
    }
    ldsm_rows[w][l] = row;
    pthread_barrier_wait(&warp_bar[w]);
    for (int i = 0; i < 4; i++) {
        const uint16_t *const *m = ldsm_rows[w] + 8 * i;
        int g = l >> 2, c = (l & 3) * 2;
        f[i] = trans ? (uint32_t)m[c][g] | (uint32_t)m[c + 1][g] << 16
                     : (uint32_t)m[g][c] | (uint32_t)m[g][c + 1] << 16;
    }
    pthread_barrier_wait(&warp_bar[w]);
}
static inline void ldsm_x4(uint32_t f[4], const uint16_t *row) { ldsm(f, row, 0); }
static inline void ldsm_x4_trans(uint32_t f[4], const uint16_t *row) { ldsm(f, row, 1); }

// two floats as bf16, lo in the low half
static inline uint32_t pack2(float lo, float hi) {
    return (uint32_t)float_to_bf16(lo) | (uint32_t)float_to_bf16(hi) << 16;
}

// a launch: the grid's blocks one after another, each block's threads at once
static void launch(dim3 grid, unsigned threads, const std::function<void()> &kernel) {
    gridDim = grid;
    blockDim = dim3(threads);
    pthread_barrier_init(&block_bar, NULL, threads);
    for (unsigned w = 0; w < threads / 32; w++) pthread_barrier_init(&warp_bar[w], NULL, 32);
    for (unsigned by = 0; by < grid.y; by++)
        for (unsigned bx = 0; bx < grid.x; bx++) {
            std::vector<std::thread> th;
            for (unsigned t = 0; t < threads; t++)
                th.emplace_back([&kernel, t, bx, by]() {
                    threadIdx = dim3(t);
                    blockIdx = dim3(bx, by);
                    kernel();
                });
            for (auto &x : th) x.join();
        }
    pthread_barrier_destroy(&block_bar);
    for (unsigned w = 0; w < threads / 32; w++) pthread_barrier_destroy(&warp_bar[w]);
}

// ---- checking: seeded normal values, relative error, a row of the report ----
static int failures = 0;
static uint64_t rng = 0x9e3779b97f4a7c15ull;
static double gauss() {
    auto u01 = []() {
        rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
        return ((double)(rng >> 11) + 0.5) / 9007199254740992.0;
    };
    double u = u01(), v = u01();
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}
static double rel(const std::vector<double> &a, const std::vector<double> &ref) {
    double n = 0, d = 0;
    for (size_t i = 0; i < a.size(); i++)
        n += (a[i] - ref[i]) * (a[i] - ref[i]), d += ref[i] * ref[i];
    return d > 0 ? sqrt(n / d) : sqrt(n);
}
static void report(const char *what, double e, double tol) {
    int ok = e == e && e < tol;
    failures += !ok;
    printf("  %-46s rel %.2e  %s\n", what, e, ok ? "ok" : "FAIL");
}

// n seeded normal values as float32
static inline std::vector<float> randv(int64_t n) {
    std::vector<float> v((size_t)n);
    for (auto &x : v) x = (float)gauss();
    return v;
}
// a shape for the call it is written in (tessera.h's TS_SHAPE is a C compound literal)
#define SH(...) std::vector<int64_t>{ __VA_ARGS__ }.data()

#endif
