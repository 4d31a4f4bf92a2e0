/* attention.cu: scaled dot-product attention on the device, forward and backward.
 *
 * The same function as the CPU op (core/cpu/op_attention.c): softmax(scale q k^T + masks) v
 * with a causal mask (query i sees keys j <= i) and a key-padding mask (B, Tk) u8, nonzero =
 * padding; the forward keeps the per-row logsumexp for the backward, which recomputes the
 * probabilities (as FlashAttention does) instead of storing them.
 *
 * This first version is plain rather than fast: a block per query row (forward, dq) or per key
 * row (dk, dv), scores in shared memory, products by loops. It is the reference the tiled
 * tensor-core kernel will be checked against, and it is deterministic (no atomics): every sum
 * runs in a fixed order. A row whose keys are all masked gives zeros and a logsumexp of 0, as
 * the CPU op writes (no probability of such a row is ever recomputed).
 */
#include "cuda_impl.h"

#include <math.h>

#define AT 128 /* threads per block */

static __device__ int masked(const uint8_t *pad, int64_t b, int64_t Tk, int64_t i, int64_t j,
                             int causal) {
    return (causal && j > i) || (pad && pad[b * Tk + j]);
}

/* block (i, bh): y_i and lse_i. Shared: q_i (D), scores (Tk). */
static __global__ void attn_fwd(const float *q, const float *k, const float *v,
                                const uint8_t *pad, float *y, float *lse, int64_t H, int64_t Tq,
                                int64_t Tk, int64_t D, int causal, float scale) {
    extern __shared__ float smem[];
    __shared__ float sh[32];
    float *qs = smem, *p = smem + D;
    int64_t i = blockIdx.x, bh = blockIdx.y, b = bh / H;
    const float *qi = q + (bh * Tq + i) * D, *K = k + bh * Tk * D, *V = v + bh * Tk * D;
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) qs[d] = qi[d];
    __syncthreads();
    float m = -INFINITY;
    for (int64_t j = threadIdx.x; j < Tk; j += blockDim.x) {
        float s = -INFINITY;
        if (!masked(pad, b, Tk, i, j, causal)) {
            s = 0.0f;
            for (int64_t d = 0; d < D; d++) s += qs[d] * K[j * D + d];
            s *= scale;
        }
        p[j] = s;
        m = fmaxf(m, s);
    }
    m = block_max(m, sh);
    float sum = 0.0f;
    for (int64_t j = threadIdx.x; j < Tk; j += blockDim.x) {
        float e = p[j] == -INFINITY ? 0.0f : expf(p[j] - m);
        p[j] = e;
        sum += e;
    }
    sum = block_sum(sum, sh); /* its barriers make every p[j] visible below */
    float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
        float acc = 0.0f;
        for (int64_t j = 0; j < Tk; j++) acc += p[j] * V[j * D + d];
        y[(bh * Tq + i) * D + d] = acc * inv;
    }
    if (threadIdx.x == 0) lse[bh * Tq + i] = sum > 0.0f ? m + logf(sum) : 0.0f;
}

/* delta_i = dy_i . y_i, one thread per row */
static __global__ void attn_delta(const float *y, const float *dy, float *delta, int64_t rows,
                                  int64_t D) {
    for (int64_t r = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; r < rows;
         r += (int64_t)gridDim.x * blockDim.x) {
        float s = 0.0f;
        for (int64_t d = 0; d < D; d++) s += dy[r * D + d] * y[r * D + d];
        delta[r] = s;
    }
}

/* P_ij = exp(s_ij - lse_i), for a key the row sees (so the row is not empty) */
static __device__ float prob(float s, float l) { return expf(s - l); }

/* block (i, bh): dq_i += scale sum_j dS_ij k_j, dS_ij = P_ij (dy_i . v_j - delta_i).
 * Shared: q_i, dy_i (2D), dS (Tk). */
static __global__ void attn_dq(const float *q, const float *k, const float *v,
                               const uint8_t *pad, const float *lse, const float *delta,
                               const float *dy, float *dq, int64_t H, int64_t Tq, int64_t Tk,
                               int64_t D, int causal, float scale) {
    extern __shared__ float smem[];
    float *qs = smem, *dys = smem + D, *ds = smem + 2 * D;
    int64_t i = blockIdx.x, bh = blockIdx.y, b = bh / H, row = bh * Tq + i;
    const float *K = k + bh * Tk * D, *V = v + bh * Tk * D;
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
        qs[d] = q[row * D + d];
        dys[d] = dy[row * D + d];
    }
    __syncthreads();
    float l = lse[row], dl = delta[row];
    for (int64_t j = threadIdx.x; j < Tk; j += blockDim.x) {
        float g = 0.0f;
        if (!masked(pad, b, Tk, i, j, causal)) {
            float s = 0.0f, dp = 0.0f;
            for (int64_t d = 0; d < D; d++) {
                s += qs[d] * K[j * D + d];
                dp += dys[d] * V[j * D + d];
            }
            g = prob(s * scale, l) * (dp - dl);
        }
        ds[j] = g;
    }
    __syncthreads();
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
        float acc = 0.0f;
        for (int64_t j = 0; j < Tk; j++) acc += ds[j] * K[j * D + d];
        dq[row * D + d] += scale * acc;
    }
}

/* block (j, bh): dv_j += sum_i P_ij dy_i, dk_j += scale sum_i dS_ij q_i.
 * Shared: k_j, v_j (2D), P and dS (2 Tq). */
static __global__ void attn_dkv(const float *q, const float *k, const float *v,
                                const uint8_t *pad, const float *lse, const float *delta,
                                const float *dy, float *dk, float *dv, int64_t H, int64_t Tq,
                                int64_t Tk, int64_t D, int causal, float scale) {
    extern __shared__ float smem[];
    float *ks = smem, *vs = smem + D, *P = smem + 2 * D, *dS = smem + 2 * D + Tq;
    int64_t j = blockIdx.x, bh = blockIdx.y, b = bh / H, krow = bh * Tk + j;
    if (pad && pad[b * Tk + j]) return; /* a padded key: nothing flows to it (whole block) */
    const float *Q = q + bh * Tq * D, *dY = dy + bh * Tq * D;
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
        ks[d] = k[krow * D + d];
        vs[d] = v[krow * D + d];
    }
    __syncthreads();
    for (int64_t i = threadIdx.x; i < Tq; i += blockDim.x) {
        float pi = 0.0f, gi = 0.0f;
        if (!(causal && j > i)) {
            float s = 0.0f, dp = 0.0f;
            for (int64_t d = 0; d < D; d++) {
                s += Q[i * D + d] * ks[d];
                dp += dY[i * D + d] * vs[d];
            }
            pi = prob(s * scale, lse[bh * Tq + i]);
            gi = pi * (dp - delta[bh * Tq + i]);
        }
        P[i] = pi;
        dS[i] = gi;
    }
    __syncthreads();
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
        float av = 0.0f, ak = 0.0f;
        for (int64_t i = 0; i < Tq; i++) {
            av += P[i] * dY[i * D + d];
            ak += dS[i] * Q[i * D + d];
        }
        dv[krow * D + d] += av;
        dk[krow * D + d] += scale * ak;
    }
}

static ts_status check(const ts_cuda *g, int64_t B, int64_t H, int64_t Tq, int64_t Tk,
                       int64_t D, int causal, size_t shared, ts_err *err) {
    (void)g;
    if (B < 1 || H < 1 || Tq < 1 || Tk < 1 || D < 1 || Tq > 65535 || Tk > 65535 ||
        B * H > 65535 || (causal && Tq != Tk))
        return ts__cuda_fail(err, TS_ERR_USAGE, "cuda attention: B %lld, H %lld, Tq %lld, Tk "
                             "%lld, D %lld%s", (long long)B, (long long)H, (long long)Tq,
                             (long long)Tk, (long long)D, causal ? ", causal" : "");
    if (shared + 32 * sizeof(float) > 48 * 1024) /* and the reductions' static 32 floats */
        return ts__cuda_fail(err, TS_ERR_UNSUPPORTED, "cuda attention: %lld keys or queries of "
                             "%lld are more than this kernel holds in shared memory",
                             (long long)(Tq > Tk ? Tq : Tk), (long long)D);
    return TS_OK;
}

ts_status ts_cuda_attention(ts_cuda *g, const float *q, const float *k, const float *v,
                            const uint8_t *key_pad, float *y, float *lse, int64_t B, int64_t H,
                            int64_t Tq, int64_t Tk, int64_t D, int causal, float scale,
                            ts_err *err) {
    size_t shared = (size_t)(D + Tk) * sizeof(float);
    ts_status st = check(g, B, H, Tq, Tk, D, causal, shared, err);
    if (st) return st;
    if (!(scale > 0.0f)) scale = 1.0f / sqrtf((float)D);
    attn_fwd<<<dim3((unsigned)Tq, (unsigned)(B * H)), AT, shared, g->stream>>>(
        q, k, v, key_pad, y, lse, H, Tq, Tk, D, causal, scale);
    TS_CU_LAUNCHED("attention");
    return TS_OK;
}

ts_status ts_cuda_attention_backward(ts_cuda *g, const float *q, const float *k, const float *v,
                                     const uint8_t *key_pad, const float *y, const float *lse,
                                     const float *dy, float *dq, float *dk, float *dv,
                                     int64_t B, int64_t H, int64_t Tq, int64_t Tk, int64_t D,
                                     int causal, float scale, ts_err *err) {
    size_t sq = dq ? (size_t)(2 * D + Tk) * sizeof(float) : 0;
    size_t skv = dk ? (size_t)(2 * D + 2 * Tq) * sizeof(float) : 0;
    if (!dk != !dv)
        return ts__cuda_fail(err, TS_ERR_USAGE, "cuda attention backward: dk and dv together");
    ts_status st = check(g, B, H, Tq, Tk, D, causal, sq > skv ? sq : skv, err);
    if (st) return st;
    if (B * H * Tq > (int64_t)g->scratch_floats)
        return ts__cuda_fail(err, TS_ERR_USAGE, "cuda attention backward: %lld query rows",
                             (long long)(B * H * Tq));
    if (!(scale > 0.0f)) scale = 1.0f / sqrtf((float)D);
    float *delta = g->scratch;
    int64_t rows = B * H * Tq;
    attn_delta<<<(unsigned)((rows + 255) / 256 < 65535 ? (rows + 255) / 256 : 65535), 256, 0,
                 g->stream>>>(y, dy, delta, rows, D);
    TS_CU_LAUNCHED("attention backward (delta)");
    if (dq) {
        attn_dq<<<dim3((unsigned)Tq, (unsigned)(B * H)), AT, sq, g->stream>>>(
            q, k, v, key_pad, lse, delta, dy, dq, H, Tq, Tk, D, causal, scale);
        TS_CU_LAUNCHED("attention backward (dq)");
    }
    if (dk) {
        attn_dkv<<<dim3((unsigned)Tk, (unsigned)(B * H)), AT, skv, g->stream>>>(
            q, k, v, key_pad, lse, delta, dy, dk, dv, H, Tq, Tk, D, causal, scale);
        TS_CU_LAUNCHED("attention backward (dk, dv)");
    }
    return TS_OK;
}
