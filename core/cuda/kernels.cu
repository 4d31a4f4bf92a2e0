/* kernels.cu: the elementwise, row and optimizer kernels of ts_cuda.h.
 *
 * Row kernels give one block of TS_CU_ROW_THREADS threads to a row, their sums through
 * cuda_impl.h's block_sum (warp shuffles, then one warp over the warps' sums); layernorm gives
 * rows of up to 1024 one warp each, the row held in registers. Either way a row's result depends
 * only on its length. Sums over rows (weight, bias gradients) are per-column partial sums over
 * fixed chunks of rows into the device's scratch, then added in a fixed order (add_parts).
 */
#include "cuda_impl.h"

#include <math.h>

#define RT TS_CU_ROW_THREADS
#define GELU_RSQRT2PI 0.39894228040143268f

/* ---- elementwise ---- */

static __global__ void add_kernel(const float *a, const float *b, float *y, int64_t na,
                                  int64_t nb) {
    FOR_EACH(i, na) y[i] = a[i] + b[i % nb];
}

ts_status ts_cuda_add(ts_cuda *g, const float *a, const float *b, float *y, int64_t na,
                      int64_t nb, ts_err *err) {
    if (nb < 1 || na % nb)
        return ts__cuda_fail(err, TS_ERR_USAGE, "cuda add: %lld elements do not repeat %lld",
                             (long long)na, (long long)nb);
    add_kernel<<<grid_for(na, 256), 256, 0, g->stream>>>(a, b, y, na, nb);
    TS_CU_LAUNCHED("add");
    return TS_OK;
}

/* GELU's slope: Phi(x) + x phi(x) */
static __device__ float dgelu(float x) {
    return normcdff(x) + x * GELU_RSQRT2PI * expf(-0.5f * x * x);
}

static __global__ void gelu_kernel(const float *x, float *y, int64_t n) {
    FOR_EACH(i, n) y[i] = x[i] * normcdff(x[i]);
}

static __global__ void gelu_backward_kernel(const float *x, const float *dy, float *dx,
                                            int64_t n) {
    FOR_EACH(i, n) dx[i] += dy[i] * dgelu(x[i]);
}

ts_status ts_cuda_gelu(ts_cuda *g, const float *x, float *y, int64_t n, ts_err *err) {
    gelu_kernel<<<grid_for(n, 256), 256, 0, g->stream>>>(x, y, n);
    TS_CU_LAUNCHED("gelu");
    return TS_OK;
}

ts_status ts_cuda_gelu_backward(ts_cuda *g, const float *x, const float *dy, float *dx,
                                int64_t n, ts_err *err) {
    gelu_backward_kernel<<<grid_for(n, 256), 256, 0, g->stream>>>(x, dy, dx, n);
    TS_CU_LAUNCHED("gelu backward");
    return TS_OK;
}

/* ---- QuickGELU, GELU (tanh), Mish ---- */

#define QGELU_K 1.702f
#define GELU_TANH_K 0.79788456080286536f
#define GELU_TANH_A 0.044715f

/* f(x) of activation a, and (with d) its slope */
static __device__ float act_value(ts_cuda_act a, float x, float *d) {
    if (a == TS_CUDA_QUICK_GELU) {
        float s = 1.0f / (1.0f + expf(-QGELU_K * x));
        if (d) *d = s + QGELU_K * x * s * (1.0f - s);
        return x * s;
    }
    if (a == TS_CUDA_GELU_TANH) {
        float x2 = x * x, t = tanhf(GELU_TANH_K * (x + GELU_TANH_A * x2 * x));
        if (d) *d = 0.5f * (1.0f + t) +
                    0.5f * x * (1.0f - t * t) * GELU_TANH_K * (1.0f + 3.0f * GELU_TANH_A * x2);
        return 0.5f * x * (1.0f + t);
    }
    /* Mish: with e = exp(x) (capped at exp(20), where tanh(softplus) is 1 in float),
     * tanh(softplus(x)) = n / (n + 2), n = e (e + 2); sigmoid(x) = e / (1 + e) */
    float e = x <= -87.0f ? 0.0f : expf(fminf(x, 20.0f)), n = e * (e + 2.0f);
    float t = n / (n + 2.0f);
    if (d) *d = t + x * (1.0f - t * t) * (e / (1.0f + e));
    return x * t;
}

static __global__ void activation_kernel(ts_cuda_act a, const float *x, float *y, int64_t n) {
    FOR_EACH(i, n) y[i] = act_value(a, x[i], NULL);
}

static __global__ void activation_backward_kernel(ts_cuda_act a, const float *x,
                                                  const float *dy, float *dx, int64_t n) {
    FOR_EACH(i, n) {
        float d;
        act_value(a, x[i], &d);
        dx[i] += dy[i] * d;
    }
}

static ts_status act_check(ts_cuda_act a, ts_err *err) {
    if (a == TS_CUDA_QUICK_GELU || a == TS_CUDA_GELU_TANH || a == TS_CUDA_MISH) return TS_OK;
    return ts__cuda_fail(err, TS_ERR_USAGE, "cuda activation: unknown kind %d", (int)a);
}

ts_status ts_cuda_activation(ts_cuda *g, ts_cuda_act a, const float *x, float *y, int64_t n,
                             ts_err *err) {
    ts_status st = act_check(a, err);
    if (st) return st;
    activation_kernel<<<grid_for(n, 256), 256, 0, g->stream>>>(a, x, y, n);
    TS_CU_LAUNCHED("activation");
    return TS_OK;
}

ts_status ts_cuda_activation_backward(ts_cuda *g, ts_cuda_act a, const float *x,
                                     const float *dy, float *dx, int64_t n, ts_err *err) {
    ts_status st = act_check(a, err);
    if (st) return st;
    activation_backward_kernel<<<grid_for(n, 256), 256, 0, g->stream>>>(a, x, dy, dx, n);
    TS_CU_LAUNCHED("activation backward");
    return TS_OK;
}

static __global__ void bias_gelu_kernel(const float *x, const float *b, float *y, int64_t n,
                                        int64_t C) {
    FOR_EACH(i, n) {
        float z = x[i] + b[i % C];
        y[i] = z * normcdff(z);
    }
}

ts_status ts_cuda_bias_gelu(ts_cuda *g, const float *x, const float *b, float *y, int64_t R,
                            int64_t C, ts_err *err) {
    bias_gelu_kernel<<<grid_for(R * C, 256), 256, 0, g->stream>>>(x, b, y, R * C, C);
    TS_CU_LAUNCHED("bias_gelu");
    return TS_OK;
}

/* ---- sums over rows, in a fixed order ---- */

/* Rows per chunk so that the partial rows of width `width` fit the scratch (the caller checks
 * that one fits: fits_scratch). */
static int fits_scratch(const ts_cuda *g, int64_t width) {
    return width <= (int64_t)g->scratch_floats;
}

static int64_t chunk_rows(const ts_cuda *g, int64_t R, int64_t width) {
    int64_t chunks = (R + 63) / 64;
    int64_t fit = (int64_t)g->scratch_floats / (width > 0 ? width : 1);
    if (chunks > fit) chunks = fit > 0 ? fit : 1;
    if (chunks > 65535) chunks = 65535; /* the grid's y dimension */
    return (R + chunks - 1) / chunks;
}

/* out[j] += sum over chunks k of part[k * W + j]: thread (x, y) of a block of 32 columns sums
 * the chunks k = y mod 8 in order, then the 8 sums are added in order (a fixed order for a
 * given nchunk) */
static __global__ void add_parts_kernel(const float *part, int64_t nchunk, int64_t W,
                                        float *out) {
    __shared__ float sh[8][33];
    int64_t j = blockIdx.x * 32 + threadIdx.x;
    float s = 0.0f;
    if (j < W)
        for (int64_t k = threadIdx.y; k < nchunk; k += 8) s += part[k * W + j];
    sh[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && j < W) {
        float t = 0.0f;
        for (int i = 0; i < 8; i++) t += sh[i][threadIdx.x];
        out[j] += t;
    }
}

static void add_parts(ts_cuda *g, const float *part, int64_t nchunk, int64_t W, float *out) {
    add_parts_kernel<<<(unsigned)((W + 31) / 32), dim3(32, 8), 0, g->stream>>>(part, nchunk, W,
                                                                                out);
}

/* bias_gelu backward: thread j of chunk k walks rows [k * rows, ...) of column j */
static __global__ void bias_gelu_backward_kernel(const float *x, const float *b,
                                                 const float *dy, float *dx, float *part,
                                                 int64_t R, int64_t C, int64_t rows) {
    int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x, k = blockIdx.y;
    if (j >= C) return;
    int64_t r0 = k * rows, r1 = r0 + rows < R ? r0 + rows : R;
    float s = 0.0f, bj = b[j];
    for (int64_t r = r0; r < r1; r++) {
        float gr = dy[r * C + j] * dgelu(x[r * C + j] + bj);
        if (dx) dx[r * C + j] += gr;
        s += gr;
    }
    if (part) part[k * C + j] = s;
}

ts_status ts_cuda_bias_gelu_backward(ts_cuda *g, const float *x, const float *b,
                                     const float *dy, float *dx, float *db, int64_t R,
                                     int64_t C, ts_err *err) {
    if ((!dx && !db) || R < 1 || C < 1) return TS_OK;
    if (!fits_scratch(g, C) || R > 0x7fffffff)
        return ts__cuda_fail(err, TS_ERR_USAGE, "cuda bias_gelu backward: %lld x %lld",
                             (long long)R, (long long)C);
    int64_t rows = chunk_rows(g, R, C), nchunk = (R + rows - 1) / rows;
    dim3 grid((unsigned)((C + 127) / 128), (unsigned)nchunk);
    bias_gelu_backward_kernel<<<grid, 128, 0, g->stream>>>(x, b, dy, dx, db ? g->scratch : NULL,
                                                          R, C, rows);
    TS_CU_LAUNCHED("bias_gelu backward");
    if (db) {
        add_parts(g, g->scratch, nchunk, C, db);
        TS_CU_LAUNCHED("bias_gelu backward (bias)");
    }
    return TS_OK;
}

/* db (C) += the column sums of dy (R, C): thread j of chunk k walks its rows of column j */
template <typename T>
static __global__ void colsum_kernel(const T *dy, float *part, int64_t R, int64_t C,
                                     int64_t rows) {
    int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x, k = blockIdx.y;
    if (j >= C) return;
    int64_t r0 = k * rows, r1 = r0 + rows < R ? r0 + rows : R;
    float s = 0.0f;
    for (int64_t r = r0; r < r1; r++) s += get(&dy[r * C + j]);
    part[k * C + j] = s;
}

template <typename T>
static ts_status bias_grad(ts_cuda *g, const T *dy, float *db, int64_t R, int64_t C,
                           ts_err *err) {
    if (R < 1 || C < 1) return TS_OK;
    if (!fits_scratch(g, C) || R > 0x7fffffff)
        return ts__cuda_fail(err, TS_ERR_USAGE, "cuda bias grad: %lld x %lld", (long long)R,
                             (long long)C);
    int64_t rows = chunk_rows(g, R, C), nchunk = (R + rows - 1) / rows;
    dim3 grid((unsigned)((C + 127) / 128), (unsigned)nchunk);
    colsum_kernel<<<grid, 128, 0, g->stream>>>(dy, g->scratch, R, C, rows);
    TS_CU_LAUNCHED("bias grad");
    add_parts(g, g->scratch, nchunk, C, db);
    TS_CU_LAUNCHED("bias grad (sum)");
    return TS_OK;
}

ts_status ts_cuda_bias_grad(ts_cuda *g, const float *dy, float *db, int64_t R, int64_t C,
                            ts_err *err) {
    return bias_grad(g, dy, db, R, C, err);
}

ts_status ts_cuda_bias_grad_bf16(ts_cuda *g, const uint16_t *dy, float *db, int64_t R,
                                 int64_t C, ts_err *err) {
    return bias_grad(g, dy, db, R, C, err);
}

/* dx = dy gelu'(x), overwritten, and its bf16 copy (dx16, may be NULL) */
static __global__ void gelu_backward_set_kernel(const float *x, const float *dy, float *dx,
                                                uint16_t *dx16, int64_t n) {
    FOR_EACH(i, n) {
        float v = dy[i] * dgelu(x[i]);
        dx[i] = v;
        if (dx16) put(&dx16[i], v);
    }
}

ts_status ts_cuda_gelu_backward_set(ts_cuda *g, const float *x, const float *dy, float *dx,
                                    uint16_t *dx16, int64_t n, ts_err *err) {
    gelu_backward_set_kernel<<<grid_for(n, 256), 256, 0, g->stream>>>(x, dy, dx, dx16, n);
    TS_CU_LAUNCHED("gelu backward");
    return TS_OK;
}

/* Eight bf16 values as one 16-byte word (element 2i in the low half of word i) */
static __device__ __forceinline__ void unpack8(uint4 u, float *f) {
    const uint32_t w[4] = { u.x, u.y, u.z, u.w };
    for (int i = 0; i < 4; i++) {
        f[2 * i] = __uint_as_float(w[i] << 16);
        f[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
    }
}

static __device__ __forceinline__ uint4 pack8(const float *f) {
    uint32_t w[4];
    for (int i = 0; i < 4; i++)
        w[i] = (uint32_t)__bfloat16_as_ushort(__float2bfloat16_rn(f[2 * i])) |
               (uint32_t)__bfloat16_as_ushort(__float2bfloat16_rn(f[2 * i + 1])) << 16;
    return make_uint4(w[0], w[1], w[2], w[3]);
}

/* y = gelu(x) (back: 0) or y = dy gelu'(x) (back: 1), bf16 throughout: the first n8 groups of
 * eight by 16-byte words, two words a thread with both loads issued before the arithmetic,
 * the rest one by one */
static __global__ void gelu_bf16io_kernel(const uint16_t *x, const uint16_t *dy, uint16_t *y,
                                          int64_t n, int64_t n8, int back) {
    const uint4 *x8 = (const uint4 *)x, *dy8 = (const uint4 *)dy;
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n8; i += 2 * stride) {
        int64_t at[2] = { i, i + stride };
        int two = at[1] < n8;
        uint4 zero = make_uint4(0, 0, 0, 0), xw[2], dw[2];
        xw[0] = x8[at[0]];
        xw[1] = two ? x8[at[1]] : zero;
        if (back) {
            dw[0] = dy8[at[0]];
            dw[1] = two ? dy8[at[1]] : zero;
        }
#pragma unroll
        for (int h = 0; h < 2; h++) {
            if (h == 1 && !two) break;
            float f[8], d[8];
            unpack8(xw[h], f);
            if (back) {
                unpack8(dw[h], d);
#pragma unroll
                for (int k = 0; k < 8; k++) f[k] = d[k] * dgelu(f[k]);
            } else {
#pragma unroll
                for (int k = 0; k < 8; k++) f[k] = f[k] * normcdff(f[k]);
            }
            ((uint4 *)y)[at[h]] = pack8(f);
        }
    }
    FOR_EACH(i, n - 8 * n8) {
        int64_t j = 8 * n8 + i;
        float v = get(&x[j]);
        put(&y[j], back ? get(&dy[j]) * dgelu(v) : v * normcdff(v));
    }
}

static ts_status gelu_bf16io(ts_cuda *g, const uint16_t *x, const uint16_t *dy, uint16_t *y,
                             int64_t n, ts_err *err) {
    if (n < 1) return TS_OK;
    uintptr_t at = (uintptr_t)x | (uintptr_t)y | (uintptr_t)dy;
    int64_t n8 = at % 16 ? 0 : n / 8;
    gelu_bf16io_kernel<<<grid_for(n8 > 0 ? (n8 + 1) / 2 : n, 256), 256, 0, g->stream>>>(
        x, dy, y, n, n8, dy != NULL);
    TS_CU_LAUNCHED(dy ? "gelu backward (bf16)" : "gelu (bf16 to bf16)");
    return TS_OK;
}

ts_status ts_cuda_gelu_bf16io(ts_cuda *g, const uint16_t *x, uint16_t *y, int64_t n,
                              ts_err *err) {
    return gelu_bf16io(g, x, NULL, y, n, err);
}

ts_status ts_cuda_gelu_backward_bf16io(ts_cuda *g, const uint16_t *x, const uint16_t *dy,
                                       uint16_t *dx, int64_t n, ts_err *err) {
    if (!dy) return ts__cuda_fail(err, TS_ERR_USAGE, "cuda gelu backward: no dy");
    return gelu_bf16io(g, x, dy, dx, n, err);
}

/* ---- layernorm ---- */

template <typename T>
static __global__ void layernorm_kernel(const float *x, const float *w, const float *b, T *y,
                                        float *mean, float *rstd, int64_t C, float eps) {
    __shared__ float sh[32];
    const float *xr = x + blockIdx.x * C;
    T *yr = y + blockIdx.x * C;
    float s = 0.0f;
    for (int64_t j = threadIdx.x; j < C; j += blockDim.x) s += xr[j];
    float mu = block_sum(s, sh) / (float)C;
    float q = 0.0f;
    for (int64_t j = threadIdx.x; j < C; j += blockDim.x) {
        float d = xr[j] - mu;
        q += d * d;
    }
    float rs = rsqrtf(block_sum(q, sh) / (float)C + eps);
    for (int64_t j = threadIdx.x; j < C; j += blockDim.x) {
        float v = (xr[j] - mu) * rs;
        put(&yr[j], v * (w ? w[j] : 1.0f) + (b ? b[j] : 0.0f));
    }
    if (threadIdx.x == 0) {
        mean[blockIdx.x] = mu;
        rstd[blockIdx.x] = rs;
    }
}

/* Rows of up to 1024 (32 V) values: one warp a row, lane l holding columns l + 32 i in
 * registers, so x is read once; 8 rows a block */
#define LN_WARPS 8
template <typename T, int V>
static __global__ void __launch_bounds__(32 * LN_WARPS)
layernorm_warp_kernel(const float *x, const float *w, const float *b, T *y, float *mean,
                      float *rstd, int64_t R, int C, float eps) {
    int64_t r = (int64_t)blockIdx.x * LN_WARPS + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (r >= R) return;
    const float *xr = x + r * C;
    float v[V], s = 0.0f;
#pragma unroll
    for (int i = 0; i < V; i++) {
        int j = lane + 32 * i;
        v[i] = j < C ? xr[j] : 0.0f;
        s += v[i];
    }
    float mu = warp_sum(s) / (float)C, q = 0.0f;
#pragma unroll
    for (int i = 0; i < V; i++) {
        float d = lane + 32 * i < C ? v[i] - mu : 0.0f;
        q += d * d;
    }
    float rs = rsqrtf(warp_sum(q) / (float)C + eps);
    T *yr = y + r * C;
#pragma unroll
    for (int i = 0; i < V; i++) {
        int j = lane + 32 * i;
        if (j < C) put(&yr[j], (v[i] - mu) * rs * (w ? w[j] : 1.0f) + (b ? b[j] : 0.0f));
    }
    if (lane == 0) {
        mean[r] = mu;
        rstd[r] = rs;
    }
}

/* the warp kernel for C <= 1024 (0 launched: C is larger) */
template <typename T>
static int layernorm_warp(ts_cuda *g, const float *x, const float *w, const float *b, T *y,
                          float *mean, float *rstd, int64_t R, int64_t C, float eps) {
    unsigned blocks = (unsigned)((R + LN_WARPS - 1) / LN_WARPS);
    int c = (int)C;
#define LN_FWD(V)                                                                            \
    layernorm_warp_kernel<T, V><<<blocks, 32 * LN_WARPS, 0, g->stream>>>(x, w, b, y, mean, \
                                                                         rstd, R, c, eps)
    int launched = TS_CU_ROW_LAUNCH(C, LN_FWD);
#undef LN_FWD
    return launched;
}

/* The grid of a one-block-per-row kernel over R rows of C: 0 when there is nothing to do; an
 * error for more rows than a grid holds. */
static ts_status row_grid(int64_t R, int64_t C, const char *what, unsigned *rows, ts_err *err) {
    *rows = 0;
    if (R < 1 || C < 1) return TS_OK;
    if (R > 0x7fffffff)
        return ts__cuda_fail(err, TS_ERR_USAGE, "cuda %s: %lld rows", what, (long long)R);
    *rows = (unsigned)R;
    return TS_OK;
}

ts_status ts_cuda_layernorm(ts_cuda *g, const float *x, const float *w, const float *b,
                            float *y, float *mean, float *rstd, int64_t R, int64_t C, float eps,
                            ts_err *err) {
    unsigned rows;
    ts_status st = row_grid(R, C, "layernorm", &rows, err);
    if (st || !rows) return st;
    if (!layernorm_warp(g, x, w, b, y, mean, rstd, R, C, eps))
        layernorm_kernel<<<rows, RT, 0, g->stream>>>(x, w, b, y, mean, rstd, C, eps);
    TS_CU_LAUNCHED("layernorm");
    return TS_OK;
}

ts_status ts_cuda_layernorm_bf16(ts_cuda *g, const float *x, const float *w, const float *b,
                                 uint16_t *y, float *mean, float *rstd, int64_t R, int64_t C,
                                 float eps, ts_err *err) {
    unsigned rows;
    ts_status st = row_grid(R, C, "layernorm", &rows, err);
    if (st || !rows) return st;
    if (!layernorm_warp(g, x, w, b, y, mean, rstd, R, C, eps))
        layernorm_kernel<<<rows, RT, 0, g->stream>>>(x, w, b, y, mean, rstd, C, eps);
    TS_CU_LAUNCHED("layernorm (bf16)");
    return TS_OK;
}

/* dx = rstd (dxh - mean(dxh) - xh mean(dxh xh)), dxh = dy w, xh = (x - mean) rstd */
static __global__ void layernorm_dx_kernel(const float *x, const float *w, const float *mean,
                                           const float *rstd, const float *dy, float *dx,
                                           uint16_t *dx16, int64_t C) {
    __shared__ float sh[32];
    const float *xr = x + blockIdx.x * C, *dyr = dy + blockIdx.x * C;
    float *dxr = dx + blockIdx.x * C;
    float mu = mean[blockIdx.x], rs = rstd[blockIdx.x], s1 = 0.0f, s2 = 0.0f;
    for (int64_t j = threadIdx.x; j < C; j += blockDim.x) {
        float dxh = dyr[j] * (w ? w[j] : 1.0f), xh = (xr[j] - mu) * rs;
        s1 += dxh;
        s2 += dxh * xh;
    }
    float m1 = block_sum(s1, sh) / (float)C, m2 = block_sum(s2, sh) / (float)C;
    for (int64_t j = threadIdx.x; j < C; j += blockDim.x) {
        float dxh = dyr[j] * (w ? w[j] : 1.0f), xh = (xr[j] - mu) * rs;
        float v = dxr[j] + rs * (dxh - m1 - xh * m2);
        dxr[j] = v;
        if (dx16) put(&dx16[blockIdx.x * C + j], v);
    }
}

/* part[k, j] = sum over chunk k of dy xh (dw) and part[nchunk + k, j] of dy (db) */
static __global__ void layernorm_dwdb_kernel(const float *x, const float *mean,
                                             const float *rstd, const float *dy, float *part,
                                             int64_t R, int64_t C, int64_t rows,
                                             int64_t nchunk) {
    int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x, k = blockIdx.y;
    if (j >= C) return;
    int64_t r0 = k * rows, r1 = r0 + rows < R ? r0 + rows : R;
    float sw = 0.0f, sb = 0.0f;
    for (int64_t r = r0; r < r1; r++) {
        float d = dy[r * C + j];
        sw += d * (x[r * C + j] - mean[r]) * rstd[r];
        sb += d;
    }
    part[k * C + j] = sw;
    part[(nchunk + k) * C + j] = sb;
}

/* dx (and its bf16 copy) for rows of up to 1024 (32 V) values, one warp a row as the
 * forward, the row's x and dy held in registers between the two sums and the update */
template <int V>
static __global__ void __launch_bounds__(32 * LN_WARPS)
layernorm_dx_warp_kernel(const float *x, const float *w, const float *mean, const float *rstd,
                         const float *dy, float *dx, uint16_t *dx16, int64_t R, int C) {
    int64_t r = (int64_t)blockIdx.x * LN_WARPS + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (r >= R) return;
    const float *xr = x + r * C, *dyr = dy + r * C;
    float mu = mean[r], rs = rstd[r], xh[V], g[V], s1 = 0.0f, s2 = 0.0f;
#pragma unroll
    for (int i = 0; i < V; i++) {
        int j = lane + 32 * i;
        xh[i] = j < C ? (xr[j] - mu) * rs : 0.0f;
        g[i] = j < C ? dyr[j] * (w ? w[j] : 1.0f) : 0.0f;
        s1 += g[i];
        s2 += g[i] * xh[i];
    }
    float m1 = warp_sum(s1) / (float)C, m2 = warp_sum(s2) / (float)C;
    float *dxr = dx + r * C;
#pragma unroll
    for (int i = 0; i < V; i++) {
        int j = lane + 32 * i;
        if (j >= C) continue;
        float v = dxr[j] + rs * (g[i] - m1 - xh[i] * m2);
        dxr[j] = v;
        if (dx16) put(&dx16[r * C + j], v);
    }
}

/* the warp kernel for dx where C <= 1024; 0 when C is larger */
static int layernorm_dx_warp(ts_cuda *g, const float *x, const float *w, const float *mean,
                             const float *rstd, const float *dy, float *dx, uint16_t *dx16,
                             int64_t R, int64_t C) {
    unsigned blocks = (unsigned)((R + LN_WARPS - 1) / LN_WARPS);
    int c = (int)C;
#define LN_BWD(V)                                                                            \
    layernorm_dx_warp_kernel<V><<<blocks, 32 * LN_WARPS, 0, g->stream>>>(x, w, mean, rstd, dy, \
                                                                         dx, dx16, R, c)
    int launched = TS_CU_ROW_LAUNCH(C, LN_BWD);
#undef LN_BWD
    return launched;
}

ts_status ts_cuda_layernorm_backward(ts_cuda *g, const float *x, const float *w,
                                     const float *mean, const float *rstd, const float *dy,
                                     float *dx, float *dw, float *db, int64_t R, int64_t C,
                                     ts_err *err) {
    return ts_cuda_layernorm_backward_bf16(g, x, w, mean, rstd, dy, dx, NULL, dw, db, R, C,
                                           err);
}

ts_status ts_cuda_layernorm_backward_bf16(ts_cuda *g, const float *x, const float *w,
                                          const float *mean, const float *rstd,
                                          const float *dy, float *dx, uint16_t *dx16, float *dw,
                                          float *db, int64_t R, int64_t C, ts_err *err) {
    if (R < 1 || C < 1) return TS_OK;
    if (R > 0x7fffffff || ((dw || db) && !fits_scratch(g, 2 * C)))
        return ts__cuda_fail(err, TS_ERR_USAGE, "cuda layernorm backward: %lld x %lld",
                             (long long)R, (long long)C);
    if (dx) {
        if (!layernorm_dx_warp(g, x, w, mean, rstd, dy, dx, dx16, R, C))
            layernorm_dx_kernel<<<(unsigned)R, RT, 0, g->stream>>>(x, w, mean, rstd, dy, dx,
                                                                  dx16, C);
        TS_CU_LAUNCHED("layernorm backward");
    }
    if (dw || db) {
        int64_t rows = chunk_rows(g, R, 2 * C), nchunk = (R + rows - 1) / rows;
        dim3 grid((unsigned)((C + 127) / 128), (unsigned)nchunk);
        layernorm_dwdb_kernel<<<grid, 128, 0, g->stream>>>(x, mean, rstd, dy, g->scratch, R, C,
                                                          rows, nchunk);
        TS_CU_LAUNCHED("layernorm backward (weights)");
        if (dw) add_parts(g, g->scratch, nchunk, C, dw);
        if (db) add_parts(g, g->scratch + nchunk * C, nchunk, C, db);
        TS_CU_LAUNCHED("layernorm backward (sums)");
    }
    return TS_OK;
}

/* ---- softmax ---- */

/* The maximum m of the row's C values and the sum of exp(x - m), for every thread. */
static __device__ void row_max_sumexp(const float *xr, int64_t C, float *sh, float *m_out,
                                      float *s_out) {
    float m = -INFINITY;
    for (int64_t j = threadIdx.x; j < C; j += blockDim.x) m = fmaxf(m, xr[j]);
    m = block_max(m, sh);
    float s = 0.0f;
    for (int64_t j = threadIdx.x; j < C; j += blockDim.x) s += expf(xr[j] - m);
    *m_out = m;
    *s_out = block_sum(s, sh);
}

static __global__ void softmax_kernel(const float *x, float *y, int64_t C) {
    __shared__ float sh[32];
    const float *xr = x + blockIdx.x * C;
    float *yr = y + blockIdx.x * C;
    float m, s;
    row_max_sumexp(xr, C, sh, &m, &s);
    float inv = 1.0f / s;
    for (int64_t j = threadIdx.x; j < C; j += blockDim.x) yr[j] = expf(xr[j] - m) * inv;
}

static __global__ void softmax_backward_kernel(const float *y, const float *dy, float *dx,
                                               int64_t C) {
    __shared__ float sh[32];
    const float *yr = y + blockIdx.x * C, *dyr = dy + blockIdx.x * C;
    float *dxr = dx + blockIdx.x * C;
    float s = 0.0f;
    for (int64_t j = threadIdx.x; j < C; j += blockDim.x) s += dyr[j] * yr[j];
    s = block_sum(s, sh);
    for (int64_t j = threadIdx.x; j < C; j += blockDim.x) dxr[j] += yr[j] * (dyr[j] - s);
}

/* log-softmax: y = x - (m + log s) */
static __global__ void log_softmax_kernel(const float *x, float *y, int64_t C) {
    __shared__ float sh[32];
    const float *xr = x + blockIdx.x * C;
    float *yr = y + blockIdx.x * C;
    float m, s;
    row_max_sumexp(xr, C, sh, &m, &s);
    float lse = m + logf(s);
    for (int64_t j = threadIdx.x; j < C; j += blockDim.x) yr[j] = xr[j] - lse;
}

static __global__ void log_softmax_backward_kernel(const float *y, const float *dy, float *dx,
                                                   int64_t C) {
    __shared__ float sh[32];
    const float *yr = y + blockIdx.x * C, *dyr = dy + blockIdx.x * C;
    float *dxr = dx + blockIdx.x * C;
    float s = 0.0f;
    for (int64_t j = threadIdx.x; j < C; j += blockDim.x) s += dyr[j];
    s = block_sum(s, sh);
    for (int64_t j = threadIdx.x; j < C; j += blockDim.x) dxr[j] += dyr[j] - expf(yr[j]) * s;
}

ts_status ts_cuda_log_softmax(ts_cuda *g, const float *x, float *y, int64_t R, int64_t C,
                              ts_err *err) {
    unsigned rows;
    ts_status st = row_grid(R, C, "log_softmax", &rows, err);
    if (st || !rows) return st;
    log_softmax_kernel<<<rows, RT, 0, g->stream>>>(x, y, C);
    TS_CU_LAUNCHED("log_softmax");
    return TS_OK;
}

ts_status ts_cuda_log_softmax_backward(ts_cuda *g, const float *y, const float *dy, float *dx,
                                       int64_t R, int64_t C, ts_err *err) {
    unsigned rows;
    ts_status st = row_grid(R, C, "log_softmax backward", &rows, err);
    if (st || !rows) return st;
    log_softmax_backward_kernel<<<rows, RT, 0, g->stream>>>(y, dy, dx, C);
    TS_CU_LAUNCHED("log_softmax backward");
    return TS_OK;
}

ts_status ts_cuda_softmax(ts_cuda *g, const float *x, float *y, int64_t R, int64_t C,
                          ts_err *err) {
    unsigned rows;
    ts_status st = row_grid(R, C, "softmax", &rows, err);
    if (st || !rows) return st;
    softmax_kernel<<<rows, RT, 0, g->stream>>>(x, y, C);
    TS_CU_LAUNCHED("softmax");
    return TS_OK;
}

ts_status ts_cuda_softmax_backward(ts_cuda *g, const float *y, const float *dy, float *dx,
                                   int64_t R, int64_t C, ts_err *err) {
    unsigned rows;
    ts_status st = row_grid(R, C, "softmax backward", &rows, err);
    if (st || !rows) return st;
    softmax_backward_kernel<<<rows, RT, 0, g->stream>>>(y, dy, dx, C);
    TS_CU_LAUNCHED("softmax backward");
    return TS_OK;
}

/* ---- cross-entropy ---- */

/* Row i: loss_i = (1 - eps)(lse - x_t) + eps (lse - mean_k x_k), 0 for an ignored row;
 * rowloss[i] and counted[i] (1 or 0). */
static __global__ void ce_rows_kernel(const float *logits, const int32_t *t, float *rowloss,
                                      float *counted, int64_t K, int ignore, float eps) {
    __shared__ float sh[32];
    const float *xr = logits + blockIdx.x * K;
    int ti = t[blockIdx.x];
    float m, s, sx = 0.0f;
    row_max_sumexp(xr, K, sh, &m, &s);
    for (int64_t j = threadIdx.x; j < K; j += blockDim.x) sx += xr[j];
    sx = block_sum(sx, sh);
    if (threadIdx.x == 0) {
        int skip = ti == ignore, bad = !skip && (ti < 0 || ti >= K);
        float lse = m + logf(s);
        /* a target outside [0, K) makes the loss NaN: the CPU op refuses it, and a NaN loss
         * stops the trainer instead of training on it */
        rowloss[blockIdx.x] = skip ? 0.0f : bad ? NAN
                                   : (1.0f - eps) * (lse - xr[ti]) + eps * (lse - sx / (float)K);
        counted[blockIdx.x] = skip || bad ? 0.0f : 1.0f;
    }
}

/* One block: out[0] = sum(a) / sum(c) in a fixed order (NaN when nothing counted, as torch) */
static __global__ void mean_kernel(const float *a, const float *c, int64_t n, float *out) {
    __shared__ float sh[32];
    float s = 0.0f, k = 0.0f;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
        s += a[i];
        k += c[i];
    }
    s = block_sum(s, sh);
    k = block_sum(k, sh);
    if (threadIdx.x == 0) out[0] = s / k;
}

ts_status ts_cuda_cross_entropy(ts_cuda *g, const float *logits, const int32_t *targets,
                                float *loss, int64_t N, int64_t K, int ignore_index,
                                float smoothing, ts_err *err) {
    if (N < 1 || 2 * N > (int64_t)g->scratch_floats || K < 1)
        return ts__cuda_fail(err, TS_ERR_USAGE, "cuda cross-entropy: %lld rows of %lld",
                             (long long)N, (long long)K);
    float *rowloss = g->scratch, *counted = g->scratch + N;
    ce_rows_kernel<<<(unsigned)N, RT, 0, g->stream>>>(logits, targets, rowloss, counted, K,
                                                      ignore_index, smoothing);
    TS_CU_LAUNCHED("cross-entropy");
    mean_kernel<<<1, 1024, 0, g->stream>>>(rowloss, counted, N, loss);
    TS_CU_LAUNCHED("cross-entropy (mean)");
    return TS_OK;
}

static __global__ void count_kernel(const int32_t *t, int64_t N, int64_t K, int ignore,
                                    float *out) {
    __shared__ float sh[32];
    float k = 0.0f;
    for (int64_t i = threadIdx.x; i < N; i += blockDim.x)
        k += t[i] != ignore && t[i] >= 0 && t[i] < K ? 1.0f : 0.0f;
    k = block_sum(k, sh);
    if (threadIdx.x == 0) out[0] = k;
}

/* dlogits[i, k] += dloss / count (softmax_k - (1 - eps)[k == t] - eps / K) */
static __global__ void ce_backward_kernel(const float *logits, const int32_t *t,
                                          const float *dloss, const float *count, float *dx,
                                          int64_t K, int ignore, float eps) {
    __shared__ float sh[32];
    int ti = t[blockIdx.x];
    if (ti == ignore || ti < 0 || ti >= K) return; /* the whole block leaves together */
    const float *xr = logits + blockIdx.x * K;
    float *dxr = dx + blockIdx.x * K;
    float m, s;
    row_max_sumexp(xr, K, sh, &m, &s);
    float inv = 1.0f / s, scale = dloss[0] / count[0];
    for (int64_t j = threadIdx.x; j < K; j += blockDim.x) {
        float p = expf(xr[j] - m) * inv - eps / (float)K - (j == ti ? 1.0f - eps : 0.0f);
        dxr[j] += scale * p;
    }
}

ts_status ts_cuda_cross_entropy_backward(ts_cuda *g, const float *logits,
                                         const int32_t *targets, const float *dloss,
                                         float *dlogits, int64_t N, int64_t K,
                                         int ignore_index, float smoothing, ts_err *err) {
    if (N < 1 || K < 1) return TS_OK;
    if (N > 0x7fffffff)
        return ts__cuda_fail(err, TS_ERR_USAGE, "cuda cross-entropy backward: %lld rows",
                             (long long)N);
    count_kernel<<<1, 1024, 0, g->stream>>>(targets, N, K, ignore_index, g->scratch);
    TS_CU_LAUNCHED("cross-entropy backward (count)");
    ce_backward_kernel<<<(unsigned)N, RT, 0, g->stream>>>(logits, targets, dloss, g->scratch,
                                                          dlogits, K, ignore_index, smoothing);
    TS_CU_LAUNCHED("cross-entropy backward");
    return TS_OK;
}

/* ---- AdamW ---- */

static __global__ void adamw_kernel(float *p, const float *grad, float *m, float *v, int64_t n,
                                    float b1, float b2, float eps, float step, float rbc2,
                                    float shrink) {
    FOR_EACH(i, n) {
        float gi = grad[i];
        m[i] = b1 * m[i] + (1.0f - b1) * gi;
        v[i] = b2 * v[i] + (1.0f - b2) * gi * gi;
        float denom = sqrtf(v[i]) * rbc2 + eps;
        p[i] = p[i] * shrink - step * (m[i] / denom);
    }
}

ts_status ts_cuda_adamw(ts_cuda *g, float *p, const float *grad, float *m, float *v, int64_t n,
                        int64_t t, float lr, float beta1, float beta2, float eps,
                        float weight_decay, ts_err *err) {
    if (t < 1) return ts__cuda_fail(err, TS_ERR_USAGE, "cuda adamw: step %lld", (long long)t);
    /* the bias corrections in double on the host, as core/optim.c computes them */
    double bc1 = 1.0 - pow((double)beta1, (double)t), bc2 = 1.0 - pow((double)beta2, (double)t);
    float step = (float)(lr / bc1), rbc2 = (float)(1.0 / sqrt(bc2));
    float shrink = 1.0f - lr * weight_decay;
    adamw_kernel<<<grid_for(n, 256), 256, 0, g->stream>>>(p, grad, m, v, n, beta1, beta2, eps,
                                                          step, rbc2, shrink);
    TS_CU_LAUNCHED("adamw");
    return TS_OK;
}
