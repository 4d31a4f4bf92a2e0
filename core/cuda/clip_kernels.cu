/* clip_kernels.cu: the CLIP model's own kernels on the device (core/cuda/clip_model.cu uses
 * them): patch extraction, token assembly and embedding, the head layout of attention, the
 * scaled (and causal) row softmax of attention scores, row gathers, row L2 normalisation, the
 * logit scale. Each backward adds to its gradient buffers, as ts_cuda.h's kernels do; sums over
 * the batch run in a fixed order, except the token-embedding gradient (atomic adds: rows of a
 * vocabulary repeat in any order within a batch).
 */
#include "cuda_impl.h"

/* ---- patches and tokens ---- */

/* images (B, 3, S, S) -> rows (B * np, 3 P P) in the conv weight's (c, kh, kw) order */
static __global__ void patchify_kernel(const float *img, float *out, int64_t B, int64_t S,
                                       int64_t P) {
    int64_t g = S / P, np = g * g, cols = 3 * P * P;
    FOR_EACH(i, B * np * cols) {
        int64_t col = i % cols, row = i / cols;
        int64_t b = row / np, p = row % np, py = p / g, px = p % g;
        int64_t c = col / (P * P), ky = (col / P) % P, kx = col % P;
        out[i] = img[((b * 3 + c) * S + py * P + ky) * S + px * P + kx];
    }
}

ts_status ts_cuda_patchify(ts_cuda *g, const float *images, float *rows, int64_t B, int64_t S,
                           int64_t P, ts_err *err) {
    if (P < 1 || S % P)
        return ts__cuda_fail(err, TS_ERR_USAGE, "cuda patchify: patch %lld does not divide %lld",
                             (long long)P, (long long)S);
    patchify_kernel<<<grid_for(B * S * S * 3, 256), 256, 0, g->stream>>>(images, rows, B, S, P);
    TS_CU_LAUNCHED("patchify");
    return TS_OK;
}

/* x (B, T, W): row 0 = cls + pos[0], row t = emb[b, t - 1] + pos[t] */
static __global__ void vit_tokens_kernel(const float *emb, const float *cls, const float *pos,
                                         float *x, int64_t B, int64_t T, int64_t W) {
    FOR_EACH(i, B * T * W) {
        int64_t w = i % W, t = (i / W) % T, b = i / (T * W);
        float e = t == 0 ? cls[w] : emb[(b * (T - 1) + t - 1) * W + w];
        x[i] = e + pos[t * W + w];
    }
}

/* the batch sums of the class and position rows: thread (t, w) walks the batch in order */
static __global__ void vit_tokens_backward_kernel(const float *dx, float *demb, float *dcls,
                                                  float *dpos, int64_t B, int64_t T,
                                                  int64_t W) {
    FOR_EACH(i, T * W) {
        int64_t w = i % W, t = i / W;
        float s = 0.0f;
        for (int64_t b = 0; b < B; b++) {
            float d = dx[(b * T + t) * W + w];
            s += d;
            if (t > 0) demb[(b * (T - 1) + t - 1) * W + w] = d;
        }
        dpos[i] += s;
        if (t == 0) dcls[w] += s;
    }
}

ts_status ts_cuda_vit_tokens(ts_cuda *g, const float *emb, const float *cls, const float *pos,
                             float *x, int64_t B, int64_t T, int64_t W, ts_err *err) {
    vit_tokens_kernel<<<grid_for(B * T * W, 256), 256, 0, g->stream>>>(emb, cls, pos, x, B, T,
                                                                       W);
    TS_CU_LAUNCHED("vit tokens");
    return TS_OK;
}

ts_status ts_cuda_vit_tokens_backward(ts_cuda *g, const float *dx, float *demb, float *dcls,
                                      float *dpos, int64_t B, int64_t T, int64_t W,
                                      ts_err *err) {
    vit_tokens_backward_kernel<<<grid_for(T * W, 128), 128, 0, g->stream>>>(dx, demb, dcls,
                                                                           dpos, B, T, W);
    TS_CU_LAUNCHED("vit tokens backward");
    return TS_OK;
}

/* x (B, T, W) = table[ids[b, t]] + pos[t] */
static __global__ void embed_kernel(const int32_t *ids, const float *table, const float *pos,
                                    float *x, int64_t B, int64_t T, int64_t W) {
    FOR_EACH(i, B * T * W) {
        int64_t w = i % W, bt = i / W, t = bt % T;
        x[i] = table[(int64_t)ids[bt] * W + w] + pos[t * W + w];
    }
}

static __global__ void embed_pos_backward_kernel(const float *dx, float *dpos, int64_t B,
                                                 int64_t T, int64_t W) {
    FOR_EACH(i, T * W) {
        float s = 0.0f;
        for (int64_t b = 0; b < B; b++) s += dx[b * T * W + i];
        dpos[i] += s;
    }
}

static __global__ void embed_table_backward_kernel(const int32_t *ids, const float *dx,
                                                   float *dtable, int64_t n, int64_t W) {
    FOR_EACH(i, n * W) atomicAdd(&dtable[(int64_t)ids[i / W] * W + i % W], dx[i]);
}

ts_status ts_cuda_embed(ts_cuda *g, const int32_t *ids, const float *table, const float *pos,
                        float *x, int64_t B, int64_t T, int64_t W, ts_err *err) {
    embed_kernel<<<grid_for(B * T * W, 256), 256, 0, g->stream>>>(ids, table, pos, x, B, T, W);
    TS_CU_LAUNCHED("embedding");
    return TS_OK;
}

ts_status ts_cuda_embed_backward(ts_cuda *g, const int32_t *ids, const float *dx,
                                 float *dtable, float *dpos, int64_t B, int64_t T, int64_t W,
                                 ts_err *err) {
    embed_pos_backward_kernel<<<grid_for(T * W, 128), 128, 0, g->stream>>>(dx, dpos, B, T, W);
    TS_CU_LAUNCHED("embedding backward (positions)");
    embed_table_backward_kernel<<<grid_for(B * T * W, 256), 256, 0, g->stream>>>(ids, dx, dtable,
                                                                                B * T, W);
    TS_CU_LAUNCHED("embedding backward (table)");
    return TS_OK;
}

/* ---- the head layout ---- */

/* packed (B, T, G, H, D) <-> per-head (G, B, H, T, D): part j of the packed rows (q, k, v for
 * G = 3) becomes the j-th (B, H, T, D) block. to_heads overwrites its output; from_heads adds
 * to it when acc is set. */
/* blockIdx.y walks the packed rows (b, t), the x threads the row's G H D columns: the index
 * arithmetic is per row, and 32-bit per column */
template <typename T>
static __global__ void heads_kernel(const float *src, T *dst, int64_t B, int64_t T_, int G,
                                    int H, int D, int to_heads, int acc) {
    int cols = G * H * D;
    for (int64_t r = blockIdx.y; r < B * T_; r += gridDim.y) {
        int64_t b = r / T_, t = r % T_;
        for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < cols;
             c += gridDim.x * blockDim.x) {
            int d = c % D, h = (c / D) % H, j = c / (D * H);
            int64_t i = r * cols + c, o = (((j * B + b) * H + h) * T_ + t) * D + d;
            if (to_heads) put(&dst[o], src[i]);
            else if (acc) put(&dst[i], (float)dst[i] + src[o]);
            else put(&dst[i], src[o]);
        }
    }
}

static dim3 heads_grid(int64_t rows, int64_t cols) {
    return dim3((unsigned)((cols + 255) / 256), (unsigned)(rows < 65535 ? rows : 65535));
}

ts_status ts_cuda_heads(ts_cuda *g, const float *src, float *dst, int64_t B, int64_t T,
                        int64_t G, int64_t H, int64_t D, int to_heads, int acc, ts_err *err) {
    heads_kernel<<<heads_grid(B * T, G * H * D), 256, 0, g->stream>>>(src, dst, B, T, (int)G,
                                                                      (int)H, (int)D, to_heads,
                                                                      acc);
    TS_CU_LAUNCHED("heads");
    return TS_OK;
}

ts_status ts_cuda_heads_bf16(ts_cuda *g, const float *src, uint16_t *dst, int64_t B, int64_t T,
                             int64_t G, int64_t H, int64_t D, int to_heads, ts_err *err) {
    heads_kernel<<<heads_grid(B * T, G * H * D), 256, 0, g->stream>>>(src, dst, B, T, (int)G,
                                                                      (int)H, (int)D, to_heads,
                                                                      0);
    TS_CU_LAUNCHED("heads (bf16)");
    return TS_OK;
}

static __global__ void gelu_bf16_kernel(const float *x, uint16_t *y, int64_t n) {
    FOR_EACH(i, n) put(&y[i], x[i] * normcdff(x[i]));
}

ts_status ts_cuda_gelu_bf16(ts_cuda *g, const float *x, uint16_t *y, int64_t n, ts_err *err) {
    gelu_bf16_kernel<<<grid_for(n, 256), 256, 0, g->stream>>>(x, y, n);
    TS_CU_LAUNCHED("gelu (bf16)");
    return TS_OK;
}

/* ---- attention scores ---- */

/* Row r of (R, T) scores, rows ld apart (query i = r % T): p = softmax(scale s) over keys j
 * (j <= i when causal), zeros past the diagonal and in the pitch's padding. One block a row. */
static __global__ void attn_softmax_kernel(const float *s, float *p, uint16_t *p16, int64_t T,
                                           int64_t ld, float scale, int causal) {
    __shared__ float sh[32];
    int64_t r = blockIdx.x;
    int64_t n = causal ? r % T + 1 : T;
    const float *x = s + r * ld;
    float *y = p + r * ld;
    float m = -INFINITY;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) m = fmaxf(m, scale * x[j]);
    m = block_max(m, sh);
    float sum = 0.0f;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) sum += expf(scale * x[j] - m);
    sum = block_sum(sum, sh);
    float inv = 1.0f / sum;
    for (int64_t j = threadIdx.x; j < ld; j += blockDim.x) {
        float v = j < n ? expf(scale * x[j] - m) * inv : 0.0f;
        y[j] = v;
        if (p16) put(&p16[r * ld + j], v);
    }
}

/* ds = scale p (dp - sum_j dp_j p_j) (masked entries have p = 0, so ds = 0) */
template <typename T_>
static __global__ void attn_softmax_backward_kernel(const float *p, const float *dp, T_ *ds,
                                                    int64_t T, int64_t ld, float scale) {
    __shared__ float sh[32];
    int64_t r = blockIdx.x;
    const float *y = p + r * ld, *dy = dp + r * ld;
    float dot = 0.0f;
    for (int64_t j = threadIdx.x; j < T; j += blockDim.x) dot += dy[j] * y[j];
    dot = block_sum(dot, sh);
    for (int64_t j = threadIdx.x; j < ld; j += blockDim.x)
        put(&ds[r * ld + j], j < T ? scale * y[j] * (dy[j] - dot) : 0.0f);
}

/* The same two for rows of up to 1024 (32 V) in the pitch: one warp a row, the row in
 * registers, 8 rows a block */
#define SM_WARPS 8
template <int V>
static __global__ void __launch_bounds__(32 * SM_WARPS)
attn_softmax_warp_kernel(const float *s, float *p, uint16_t *p16, int64_t R, int64_t T, int ld,
                         float scale, int causal) {
    int64_t r = (int64_t)blockIdx.x * SM_WARPS + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (r >= R) return;
    int64_t n = causal ? r % T + 1 : T;
    const float *x = s + r * ld;
    float v[V], m = -INFINITY, sum = 0.0f;
#pragma unroll
    for (int i = 0; i < V; i++) {
        int j = lane + 32 * i;
        v[i] = j < n ? scale * x[j] : -INFINITY;
        m = fmaxf(m, v[i]);
    }
    m = warp_max(m);
#pragma unroll
    for (int i = 0; i < V; i++) {
        v[i] = lane + 32 * i < n ? expf(v[i] - m) : 0.0f;
        sum += v[i];
    }
    float inv = 1.0f / warp_sum(sum);
#pragma unroll
    for (int i = 0; i < V; i++) {
        int j = lane + 32 * i;
        if (j >= ld) continue;
        p[r * ld + j] = v[i] * inv;
        if (p16) put(&p16[r * ld + j], v[i] * inv);
    }
}

template <typename T_, int V>
static __global__ void __launch_bounds__(32 * SM_WARPS)
attn_softmax_backward_warp_kernel(const float *p, const float *dp, T_ *ds, int64_t R, int64_t T,
                                  int ld, float scale) {
    int64_t r = (int64_t)blockIdx.x * SM_WARPS + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (r >= R) return;
    float y[V], dy[V], dot = 0.0f;
#pragma unroll
    for (int i = 0; i < V; i++) {
        int j = lane + 32 * i;
        y[i] = j < T ? p[r * ld + j] : 0.0f;
        dy[i] = j < T ? dp[r * ld + j] : 0.0f;
        dot += y[i] * dy[i];
    }
    dot = warp_sum(dot);
#pragma unroll
    for (int i = 0; i < V; i++) {
        int j = lane + 32 * i;
        if (j < ld) put(&ds[r * ld + j], j < T ? scale * y[i] * (dy[i] - dot) : 0.0f);
    }
}

/* launch the warp kernels where the pitch allows: 0 when it is over 1024 */
static int softmax_warp(ts_cuda *g, const float *scores, float *p, uint16_t *p16, int64_t R,
                        int64_t T, int64_t ld, float scale, int causal) {
    unsigned blocks = (unsigned)((R + SM_WARPS - 1) / SM_WARPS);
    int l = (int)ld;
#define SM_FWD(V)                                                                            \
    attn_softmax_warp_kernel<V><<<blocks, 32 * SM_WARPS, 0, g->stream>>>(scores, p, p16, R, T, \
                                                                         l, scale, causal)
    int launched = TS_CU_ROW_LAUNCH(ld, SM_FWD);
#undef SM_FWD
    return launched;
}

template <typename T_>
static int softmax_backward_warp(ts_cuda *g, const float *p, const float *dp, T_ *ds, int64_t R,
                                 int64_t T, int64_t ld, float scale) {
    unsigned blocks = (unsigned)((R + SM_WARPS - 1) / SM_WARPS);
    int l = (int)ld;
#define SM_BWD(V)                                                                            \
    attn_softmax_backward_warp_kernel<T_, V><<<blocks, 32 * SM_WARPS, 0, g->stream>>>(       \
        p, dp, ds, R, T, l, scale)
    int launched = TS_CU_ROW_LAUNCH(ld, SM_BWD);
#undef SM_BWD
    return launched;
}

/* a launch a row: R fits the grid, and the pitch holds the row */
static ts_status softmax_args(int64_t R, int64_t T, int64_t ld, ts_err *err) {
    if (R < 1 || T < 1 || R > 0x7fffffff || ld < T)
        return ts__cuda_fail(err, TS_ERR_USAGE, "cuda attention softmax: %lld rows of %lld, "
                             "pitch %lld", (long long)R, (long long)T, (long long)ld);
    return TS_OK;
}

ts_status ts_cuda_attn_softmax(ts_cuda *g, const float *scores, float *p, int64_t R, int64_t T,
                               int64_t ld, float scale, int causal, ts_err *err) {
    ts_status st = softmax_args(R, T, ld, err);
    if (st) return st;
    if (!softmax_warp(g, scores, p, NULL, R, T, ld, scale, causal))
        attn_softmax_kernel<<<(unsigned)R, 128, 0, g->stream>>>(scores, p, NULL, T, ld, scale,
                                                                causal);
    TS_CU_LAUNCHED("attention softmax");
    return TS_OK;
}

ts_status ts_cuda_attn_softmax_bf16(ts_cuda *g, const float *scores, float *p, uint16_t *p16,
                                    int64_t R, int64_t T, int64_t ld, float scale, int causal,
                                    ts_err *err) {
    ts_status st = softmax_args(R, T, ld, err);
    if (st) return st;
    if (!softmax_warp(g, scores, p, p16, R, T, ld, scale, causal))
        attn_softmax_kernel<<<(unsigned)R, 128, 0, g->stream>>>(scores, p, p16, T, ld, scale,
                                                                causal);
    TS_CU_LAUNCHED("attention softmax (bf16)");
    return TS_OK;
}

ts_status ts_cuda_attn_softmax_backward(ts_cuda *g, const float *p, const float *dp, float *ds,
                                        int64_t R, int64_t T, int64_t ld, float scale,
                                        ts_err *err) {
    ts_status st = softmax_args(R, T, ld, err);
    if (st) return st;
    if (!softmax_backward_warp(g, p, dp, ds, R, T, ld, scale))
        attn_softmax_backward_kernel<<<(unsigned)R, 128, 0, g->stream>>>(p, dp, ds, T, ld,
                                                                          scale);
    TS_CU_LAUNCHED("attention softmax backward");
    return TS_OK;
}

ts_status ts_cuda_attn_softmax_backward_bf16(ts_cuda *g, const float *p, const float *dp,
                                             uint16_t *ds, int64_t R, int64_t T, int64_t ld,
                                             float scale, ts_err *err) {
    ts_status st = softmax_args(R, T, ld, err);
    if (st) return st;
    if (!softmax_backward_warp(g, p, dp, ds, R, T, ld, scale))
        attn_softmax_backward_kernel<<<(unsigned)R, 128, 0, g->stream>>>(p, dp, ds, T, ld,
                                                                          scale);
    TS_CU_LAUNCHED("attention softmax backward (bf16)");
    return TS_OK;
}

/* ---- rows ---- */

/* y[b] = x[b, idx[b]] for x (B, T, W); the backward adds dy[b] to dx[b, idx[b]] */
static __global__ void gather_kernel(const float *x, const int32_t *idx, float *y, int64_t B,
                                     int64_t T, int64_t W) {
    FOR_EACH(i, B * W) y[i] = x[(i / W * T + idx[i / W]) * W + i % W];
}

static __global__ void gather_backward_kernel(const float *dy, const int32_t *idx, float *dx,
                                              int64_t B, int64_t T, int64_t W) {
    FOR_EACH(i, B * W) dx[(i / W * T + idx[i / W]) * W + i % W] += dy[i];
}

ts_status ts_cuda_gather_rows(ts_cuda *g, const float *x, const int32_t *idx, float *y,
                              int64_t B, int64_t T, int64_t W, ts_err *err) {
    gather_kernel<<<grid_for(B * W, 256), 256, 0, g->stream>>>(x, idx, y, B, T, W);
    TS_CU_LAUNCHED("gather rows");
    return TS_OK;
}

ts_status ts_cuda_gather_rows_backward(ts_cuda *g, const float *dy, const int32_t *idx,
                                       float *dx, int64_t B, int64_t T, int64_t W,
                                       ts_err *err) {
    gather_backward_kernel<<<grid_for(B * W, 256), 256, 0, g->stream>>>(dy, idx, dx, B, T, W);
    TS_CU_LAUNCHED("gather rows backward");
    return TS_OK;
}

/* y = x / max(||x||, 1e-12) per row (torch.nn.functional.normalize); n (R) keeps the norm */
static __global__ void l2norm_kernel(const float *x, float *y, float *n, int64_t C) {
    __shared__ float sh[32];
    const float *xr = x + blockIdx.x * C;
    float s = 0.0f;
    for (int64_t j = threadIdx.x; j < C; j += blockDim.x) s += xr[j] * xr[j];
    s = block_sum(s, sh);
    float nr = fmaxf(sqrtf(s), 1e-12f);
    for (int64_t j = threadIdx.x; j < C; j += blockDim.x) y[blockIdx.x * C + j] = xr[j] / nr;
    if (threadIdx.x == 0) n[blockIdx.x] = nr;
}

/* dx += (dy - y sum(dy y)) / n, or dy / n where the norm was clamped */
static __global__ void l2norm_backward_kernel(const float *y, const float *n, const float *dy,
                                              float *dx, int64_t C) {
    __shared__ float sh[32];
    const float *yr = y + blockIdx.x * C, *dyr = dy + blockIdx.x * C;
    float s = 0.0f;
    for (int64_t j = threadIdx.x; j < C; j += blockDim.x) s += yr[j] * dyr[j];
    s = block_sum(s, sh);
    float nr = n[blockIdx.x];
    if (nr <= 1e-12f) s = 0.0f;
    for (int64_t j = threadIdx.x; j < C; j += blockDim.x)
        dx[blockIdx.x * C + j] += (dyr[j] - yr[j] * s) / nr;
}

ts_status ts_cuda_l2_normalize(ts_cuda *g, const float *x, float *y, float *norms, int64_t R,
                               int64_t C, ts_err *err) {
    l2norm_kernel<<<(unsigned)R, TS_CU_ROW_THREADS, 0, g->stream>>>(x, y, norms, C);
    TS_CU_LAUNCHED("l2 normalize");
    return TS_OK;
}

ts_status ts_cuda_l2_normalize_backward(ts_cuda *g, const float *y, const float *norms,
                                        const float *dy, float *dx, int64_t R, int64_t C,
                                        ts_err *err) {
    l2norm_backward_kernel<<<(unsigned)R, TS_CU_ROW_THREADS, 0, g->stream>>>(y, norms, dy, dx,
                                                                            C);
    TS_CU_LAUNCHED("l2 normalize backward");
    return TS_OK;
}

/* ---- the logit scale ---- */

/* y = exp(ls) x */
static __global__ void exp_scale_kernel(const float *x, const float *ls, float *y, int64_t n) {
    float s = expf(ls[0]);
    FOR_EACH(i, n) y[i] = s * x[i];
}

/* dx += exp(ls) dy; dls += exp(ls) sum(dy x), one block */
static __global__ void exp_scale_backward_kernel(const float *x, const float *ls,
                                                 const float *dy, float *dx, float *dls,
                                                 int64_t n) {
    __shared__ float sh[32];
    float s = expf(ls[0]), acc = 0.0f;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
        acc += dy[i] * x[i];
        if (dx) dx[i] += s * dy[i];
    }
    acc = block_sum(acc, sh);
    if (threadIdx.x == 0 && dls) dls[0] += s * acc;
}

ts_status ts_cuda_exp_scale(ts_cuda *g, const float *x, const float *ls, float *y, int64_t n,
                            ts_err *err) {
    exp_scale_kernel<<<grid_for(n, 256), 256, 0, g->stream>>>(x, ls, y, n);
    TS_CU_LAUNCHED("exp scale");
    return TS_OK;
}

ts_status ts_cuda_exp_scale_backward(ts_cuda *g, const float *x, const float *ls,
                                     const float *dy, float *dx, float *dls, int64_t n,
                                     ts_err *err) {
    exp_scale_backward_kernel<<<1, 1024, 0, g->stream>>>(x, ls, dy, dx, dls, n);
    TS_CU_LAUNCHED("exp scale backward");
    return TS_OK;
}

static __global__ void clamp_kernel(float *x, int64_t n, float lo, float hi) {
    FOR_EACH(i, n) x[i] = fminf(fmaxf(x[i], lo), hi);
}

ts_status ts_cuda_clamp(ts_cuda *g, float *x, int64_t n, float lo, float hi, ts_err *err) {
    clamp_kernel<<<grid_for(n, 256), 256, 0, g->stream>>>(x, n, lo, hi);
    TS_CU_LAUNCHED("clamp");
    return TS_OK;
}

static __global__ void fill_kernel(float *x, int64_t n, float v) {
    FOR_EACH(i, n) x[i] = v;
}

ts_status ts_cuda_fill(ts_cuda *g, float *x, int64_t n, float v, ts_err *err) {
    fill_kernel<<<grid_for(n, 256), 256, 0, g->stream>>>(x, n, v);
    TS_CU_LAUNCHED("fill");
    return TS_OK;
}
