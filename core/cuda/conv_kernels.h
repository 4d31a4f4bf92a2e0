/* conv_kernels.h: the kernels of conv.cu (see there), in a header of their own so that
 * tests/emu_conv.cpp runs the same source on the CPU under the host emulation of
 * tests/emu_cuda.h, against the CPU backend's ts_conv2d and ts_dwconv2d. Included by conv.cu
 * alone.
 *
 * Layouts are NCHW, as the CPU ops'. Every output element is one thread's, written once, and
 * every sum is in a fixed order: the kernels are deterministic. Backward kernels add to their
 * gradients (+=), as the CPU backend's gradients accumulate.
 */
#ifndef TS_CONV_KERNELS_H
#define TS_CONV_KERNELS_H

/* The geometry, as ts_cuda_conv plus the output size. */
typedef struct conv_geom {
    int64_t B, C, H, W, Cout, kh, kw, Ho, Wo;
    int64_t stride, pad;
} conv_geom;

/* The output position (row or column) whose tap k reads input position i, or -1 when no
 * output's does (the gradient kernels gather through it) */
static __device__ __forceinline__ int64_t tap_out(int64_t i, int64_t k, const conv_geom *g,
                                                  int64_t n_out) {
    int64_t r = i + g->pad - k;
    if (r < 0 || r % g->stride) return -1;
    return r / g->stride < n_out ? r / g->stride : -1;
}

/* The gradient of input position (ih, iw): over the taps (ki, kj) in order whose output
 * (oh, ow) read it, the sum of a[tap sa] b[tap sb + oh Wo + ow] (tap = ki kw + kj) */
static __device__ __forceinline__ float gather_taps(int64_t ih, int64_t iw, const conv_geom *g,
                                                    const float *a, int64_t sa, const float *b,
                                                    int64_t sb) {
    float acc = 0.0f;
    for (int64_t ki = 0; ki < g->kh; ki++) {
        int64_t oh = tap_out(ih, ki, g, g->Ho);
        if (oh < 0) continue;
        for (int64_t kj = 0; kj < g->kw; kj++) {
            int64_t ow = tap_out(iw, kj, g, g->Wo), tap = ki * g->kw + kj;
            if (ow >= 0) acc += a[tap * sa] * b[tap * sb + oh * g->Wo + ow];
        }
    }
    return acc;
}

/* ---- depthwise (CSWin's LePE) ---- */

/* y (B, C, Ho, Wo) = bias + taps of w (C, 1, kh, kw) over x, zero padding; the taps in the
 * CPU op's order (kernel rows, then columns) */
static __global__ void dw_forward_kernel(const float *x, const float *w, const float *bias,
                                         float *y, conv_geom g) {
    FOR_EACH(i, g.B * g.C * g.Ho * g.Wo) {
        int64_t ow = i % g.Wo, t = i / g.Wo, oh = t % g.Ho, p = t / g.Ho, ch = p % g.C;
        const float *xp = x + p * g.H * g.W, *wp = w + ch * g.kh * g.kw;
        float acc = bias ? bias[ch] : 0.0f;
        for (int64_t ki = 0; ki < g.kh; ki++) {
            int64_t ih = oh * g.stride - g.pad + ki;
            if (ih < 0 || ih >= g.H) continue;
            for (int64_t kj = 0; kj < g.kw; kj++) {
                int64_t iw = ow * g.stride - g.pad + kj;
                if (iw >= 0 && iw < g.W) acc += wp[ki * g.kw + kj] * xp[ih * g.W + iw];
            }
        }
        y[i] = acc;
    }
}

/* dx (B, C, H, W) += the taps' weights times the dy each input value fed: one thread per
 * input value gathers them (no atomics) */
static __global__ void dw_dx_kernel(const float *w, const float *dy, float *dx, conv_geom g) {
    FOR_EACH(i, g.B * g.C * g.H * g.W) {
        int64_t iw = i % g.W, t = i / g.W, ih = t % g.H, p = t / g.H, ch = p % g.C;
        const float *dyp = dy + p * g.Ho * g.Wo, *wp = w + ch * g.kh * g.kw;
        dx[i] += gather_taps(ih, iw, &g, wp, 1, dyp, 0);
    }
}

/* dw (C, 1, kh, kw) += the sum over images and outputs of dy times the input under the tap:
 * block (tap, channel) sums its channel's B Ho Wo terms, each thread a strided share, then
 * the block's fixed tree */
static __global__ void dw_dw_kernel(const float *x, const float *dy, float *dw, conv_geom g) {
    __shared__ float sh[32];
    int64_t tap = blockIdx.x, ch = blockIdx.y, ki = tap / g.kw, kj = tap % g.kw;
    int64_t per = g.Ho * g.Wo;
    float acc = 0.0f;
    for (int64_t j = threadIdx.x; j < g.B * per; j += blockDim.x) {
        int64_t b = j / per, q = j % per, oh = q / g.Wo, ow = q % g.Wo;
        int64_t ih = oh * g.stride - g.pad + ki, iw = ow * g.stride - g.pad + kj;
        if (ih >= 0 && ih < g.H && iw >= 0 && iw < g.W)
            acc += dy[(b * g.C + ch) * per + q] * x[((b * g.C + ch) * g.H + ih) * g.W + iw];
    }
    acc = block_sum(acc, sh);
    if (threadIdx.x == 0) dw[ch * g.kh * g.kw + tap] += acc;
}

/* ---- both ---- */

/* db (C) += the sum of dy (B, C, P) over images and positions: block c sums channel c */
static __global__ void channel_sum_kernel(const float *dy, float *db, int64_t B, int64_t C,
                                          int64_t P) {
    __shared__ float sh[32];
    int64_t ch = blockIdx.x;
    float acc = 0.0f;
    for (int64_t j = threadIdx.x; j < B * P; j += blockDim.x)
        acc += dy[(j / P * C + ch) * P + j % P];
    acc = block_sum(acc, sh);
    if (threadIdx.x == 0) db[ch] += acc;
}

/* y (B, C, P) += bias (C) */
static __global__ void channel_bias_kernel(float *y, const float *bias, int64_t B, int64_t C,
                                           int64_t P) {
    FOR_EACH(i, B * C * P) y[i] += bias[i / P % C];
}

/* ---- general (the stems, patch embedding): im2col and its adjoint ---- */

/* cols (nb, K, P) of images b0 .. b0 + nb - 1: cols[k][p] with k = (ci kh + ki) kw + kj and
 * p = oh Wo + ow is x[ci][oh stride - pad + ki][ow stride - pad + kj], 0 outside */
static __global__ void im2col_kernel(const float *x, float *cols, conv_geom g, int64_t b0,
                                     int64_t nb) {
    int64_t K = g.C * g.kh * g.kw, P = g.Ho * g.Wo;
    FOR_EACH(i, nb * K * P) {
        int64_t p = i % P, t = i / P, k = t % K, b = b0 + t / K;
        int64_t kj = k % g.kw, ki = k / g.kw % g.kh, ci = k / (g.kw * g.kh);
        int64_t ih = p / g.Wo * g.stride - g.pad + ki, iw = p % g.Wo * g.stride - g.pad + kj;
        cols[i] = ih >= 0 && ih < g.H && iw >= 0 && iw < g.W
                      ? x[((b * g.C + ci) * g.H + ih) * g.W + iw]
                      : 0.0f;
    }
}

/* dx (images b0 .. b0 + nb - 1) += the entries of dcols (nb, K, P) that im2col took from each
 * input value: one thread per input value gathers them, taps in order */
static __global__ void col2im_kernel(const float *dcols, float *dx, conv_geom g, int64_t b0,
                                     int64_t nb) {
    int64_t K = g.C * g.kh * g.kw, P = g.Ho * g.Wo;
    FOR_EACH(i, nb * g.C * g.H * g.W) {
        int64_t iw = i % g.W, t = i / g.W, ih = t % g.H, t2 = t / g.H, ci = t2 % g.C;
        int64_t bl = t2 / g.C;
        const float one = 1.0f;
        dx[(b0 * g.C) * g.H * g.W + i] +=
            gather_taps(ih, iw, &g, &one, 0, dcols + (bl * K + ci * g.kh * g.kw) * P, P);
    }
}

#endif
