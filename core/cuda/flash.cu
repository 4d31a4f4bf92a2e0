/* flash.cu: tiled attention on the tensor cores (FlashAttention-2's schedule), forward and
 * backward, for heads of 64 with bf16 q, k, v.
 *
 * Forward: a block of 4 warps takes 64 query rows of one (batch, head); each warp owns 16 rows
 * and walks the keys in tiles of 64 (K and V staged in shared memory by the whole block): scores
 * by WMMA bf16 products with float32 accumulation, the online softmax (running max and sum per
 * row, float32), the probabilities rounded to bf16 for the product with V, the output tile kept
 * in float32 in shared memory and rescaled per tile. Scores never reach device memory; the
 * logsumexp of each row is kept for the backward. A causal block stops at its last row's keys.
 *
 * Backward: a block takes 64 keys, each warp 16 of them, and walks the query tiles: it
 * recomputes the probabilities from q, k and the logsumexp, forms dS = P (dP - delta) with
 * delta = rowsum(dO o O) computed by a first pass, accumulates dK and dV for its keys in
 * registers over all query tiles (written once, added to the outputs); then each warp takes 16
 * of the tile's queries over the block's 64 keys and adds them to dQ with float32 atomics (so
 * dq's sums are in no fixed order; dk, dv and the forward are deterministic).
 *
 * Masks and the edge cases are the reference kernel's (attention.cu): causal (query i sees keys
 * j <= i, Tq == Tk), key padding (B, Tk) u8, and a row with every key masked gives zeros and a
 * logsumexp of 0.
 */
#include "cuda_impl.h"

#include <cuda_bf16.h>
#include <mma.h>

using namespace nvcuda;

#define FD 64                   /* head size */
#define FB 64                   /* rows (queries or keys) of a tile */
#define FWARPS 4
#define FTHREADS (32 * FWARPS)  /* each warp: 16 rows */

typedef __nv_bfloat16 bf16;
typedef wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc_t;

/* rows [r0, r0 + FB) of a (rows, FD) bf16 matrix into shared memory, zeros past `rows` */
static __device__ void load_tile(bf16 *dst, const uint16_t *src, int64_t r0, int64_t rows) {
    const int per_row = FD * 2 / 16; /* 16-byte pieces */
    for (int e = threadIdx.x; e < FB * per_row; e += blockDim.x) {
        int r = e / per_row, c = e % per_row;
        uint4 v = make_uint4(0, 0, 0, 0);
        if (r0 + r < rows) v = ((const uint4 *)(src + (r0 + r) * FD))[c];
        ((uint4 *)(dst + r * FD))[c] = v;
    }
}

static __device__ __forceinline__ int is_masked(const uint8_t *pad, int64_t b, int64_t Tk,
                                                int64_t i, int64_t j, int causal) {
    return j >= Tk || (causal && j > i) || (pad && pad[b * Tk + j]);
}

/* acc (16 x 16 per fragment, n fragments side by side) = a (16 x K) @ b (K x 16 n) */

static __global__ void __launch_bounds__(FTHREADS)
flash_fwd_kernel(const uint16_t *q, const uint16_t *k, const uint16_t *v, const uint8_t *pad,
                 float *y, float *lse, int64_t H, int64_t Tq, int64_t Tk, int causal,
                 float scale) {
    extern __shared__ __align__(128) unsigned char smem[];
    bf16 *Qs = (bf16 *)smem, *Ks = Qs + FB * FD, *Vs = Ks + FB * FD;
    float *Sall = (float *)(Vs + FB * FD);             /* FWARPS x 16 x FB */
    bf16 *Pall = (bf16 *)(Sall + FWARPS * 16 * FB);    /* FWARPS x 16 x FB */
    float *Oall = (float *)(Pall + FWARPS * 16 * FB);  /* FWARPS x 16 x FD */
    float *mrow = Oall + FWARPS * 16 * FD, *lrow = mrow + FB, *arow = lrow + FB;
    int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int64_t bh = blockIdx.y, b = bh / H, q0 = (int64_t)blockIdx.x * FB;
    const uint16_t *qb = q + bh * Tq * FD, *kb = k + bh * Tk * FD, *vb = v + bh * Tk * FD;
    float *Sw = Sall + w * 16 * FB, *Ow = Oall + w * 16 * FD;
    bf16 *Pw = Pall + w * 16 * FB;
    load_tile(Qs, qb, q0, Tq);
    for (int e = lane; e < 16 * FD; e += 32) Ow[e] = 0.0f;
    if (threadIdx.x < FB) mrow[threadIdx.x] = -INFINITY, lrow[threadIdx.x] = 0.0f;
    int64_t kend = causal ? (q0 + FB < Tk ? q0 + FB : Tk) : Tk;
    int r = lane >> 1, c0 = (lane & 1) * (FB / 2);
    int64_t i = q0 + w * 16 + r;
    for (int64_t k0 = 0; k0 < kend; k0 += FB) {
        __syncthreads(); /* the previous tile is no longer read; Q and the stats are written */
        load_tile(Ks, kb, k0, Tk);
        load_tile(Vs, vb, k0, Tk);
        __syncthreads();
        /* S (16 x FB) = Q_w K^T */
        for (int n = 0; n < FB / 16; n++) {
            acc_t acc;
            wmma::fill_fragment(acc, 0.0f);
            for (int kk = 0; kk < FD / 16; kk++) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> fa;
                wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> fb;
                wmma::load_matrix_sync(fa, Qs + (w * 16) * FD + kk * 16, FD);
                wmma::load_matrix_sync(fb, Ks + (n * 16) * FD + kk * 16, FD);
                wmma::mma_sync(acc, fa, fb, acc);
            }
            wmma::store_matrix_sync(Sw + n * 16, acc, FB, wmma::mem_row_major);
        }
        __syncwarp();
        /* the online softmax: two lanes a row, half the tile's keys each */
        /* lane L starts at column L of its half: the 32 lanes read 32 different banks */
        float mx = -INFINITY;
        for (int t = 0; t < FB / 2; t++) {
            int c = c0 + ((t + lane) & (FB / 2 - 1));
            float s = is_masked(pad, b, Tk, i, k0 + c, causal) ? -INFINITY : Sw[r * FB + c] * scale;
            Sw[r * FB + c] = s;
            mx = fmaxf(mx, s);
        }
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        float m_old = mrow[w * 16 + r], m_new = fmaxf(m_old, mx);
        float alpha = m_new == -INFINITY ? 1.0f : __expf(m_old - m_new);
        float sum = 0.0f;
        for (int t = 0; t < FB / 2; t++) {
            int c = c0 + ((t + lane) & (FB / 2 - 1));
            float s = Sw[r * FB + c];
            float p = s == -INFINITY ? 0.0f : __expf(s - m_new);
            sum += p;
            Pw[r * FB + c] = __float2bfloat16_rn(p);
        }
        sum += __shfl_xor_sync(0xffffffffu, sum, 1);
        __syncwarp();
        if ((lane & 1) == 0) {
            mrow[w * 16 + r] = m_new;
            lrow[w * 16 + r] = lrow[w * 16 + r] * alpha + sum;
            arow[w * 16 + r] = alpha;
        }
        __syncwarp();
        /* O_w = alpha O_w + P V */
        for (int n = 0; n < FD / 16; n++) {
            acc_t acc;
            wmma::fill_fragment(acc, 0.0f);
            for (int kk = 0; kk < FB / 16; kk++) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> fa;
                wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> fb;
                wmma::load_matrix_sync(fa, Pw + kk * 16, FB);
                wmma::load_matrix_sync(fb, Vs + (kk * 16) * FD + n * 16, FD);
                wmma::mma_sync(acc, fa, fb, acc);
            }
            wmma::store_matrix_sync(Sw + n * 16, acc, FD, wmma::mem_row_major);
        }
        __syncwarp();
        for (int e = lane; e < 16 * FD; e += 32) Ow[e] = Ow[e] * arow[w * 16 + e / FD] + Sw[e];
        __syncwarp();
    }
    __syncthreads();
    for (int e = lane; e < 16 * FD; e += 32) {
        int rr = e / FD;
        int64_t ii = q0 + w * 16 + rr;
        float l = lrow[w * 16 + rr];
        if (ii < Tq) y[(bh * Tq + ii) * FD + e % FD] = l > 0.0f ? Ow[e] / l : 0.0f;
    }
    if (lane < 16) {
        int64_t ii = q0 + w * 16 + lane;
        float l = lrow[w * 16 + lane];
        if (ii < Tq) lse[bh * Tq + ii] = l > 0.0f ? mrow[w * 16 + lane] + logf(l) : 0.0f;
    }
}

/* delta = rowsum(dO o O): a warp a row */
static __global__ void flash_delta_kernel(const uint16_t *dy, const float *y, float *delta,
                                          int64_t rows) {
    int64_t row = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (row >= rows) return;
    float s = 0.0f;
    for (int d = lane; d < FD; d += 32) {
        uint16_t u = dy[row * FD + d];
        s += __bfloat162float(__ushort_as_bfloat16(u)) * y[row * FD + d];
    }
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (lane == 0) delta[row] = s;
}

static __global__ void __launch_bounds__(FTHREADS)
flash_bwd_kernel(const uint16_t *q, const uint16_t *k, const uint16_t *v, const uint8_t *pad,
                 const uint16_t *dy, const float *lse, const float *delta, float *dq, float *dk,
                 float *dv, int64_t H, int64_t Tq, int64_t Tk, int causal, float scale) {
    extern __shared__ __align__(128) unsigned char smem[];
    bf16 *Ks = (bf16 *)smem, *Vs = Ks + FB * FD, *Qs = Vs + FB * FD, *dOs = Qs + FB * FD;
    float *Sall = (float *)(dOs + FB * FD);           /* FWARPS x 16 x FB: S^T, then scratch */
    float *Dall = Sall + FWARPS * 16 * FB;            /* FWARPS x 16 x FB: dP^T */
    bf16 *Pall = (bf16 *)(Dall + FWARPS * 16 * FB);   /* FWARPS x 16 x FB: P^T */
    bf16 *dSall = Pall + FWARPS * 16 * FB;            /* FWARPS x 16 x FB: dS^T */
    float *lse_s = (float *)(dSall + FWARPS * 16 * FB), *delta_s = lse_s + FB;
    int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int64_t bh = blockIdx.y, b = bh / H, k0 = (int64_t)blockIdx.x * FB;
    const uint16_t *qb = q + bh * Tq * FD, *kb = k + bh * Tk * FD, *vb = v + bh * Tk * FD;
    const uint16_t *dyb = dy + bh * Tq * FD;
    float *Sw = Sall + w * 16 * FB, *Dw = Dall + w * 16 * FB;
    bf16 *Pw = Pall + w * 16 * FB, *dSw = dSall + w * 16 * FB;
    load_tile(Ks, kb, k0, Tk);
    load_tile(Vs, vb, k0, Tk);
    acc_t dK[FD / 16], dV[FD / 16];
    for (int n = 0; n < FD / 16; n++) {
        wmma::fill_fragment(dK[n], 0.0f);
        wmma::fill_fragment(dV[n], 0.0f);
    }
    for (int64_t q0 = causal ? k0 : 0; q0 < Tq; q0 += FB) {
        __syncthreads(); /* the previous query tile and dS^T are no longer read */
        load_tile(Qs, qb, q0, Tq);
        load_tile(dOs, dyb, q0, Tq);
        if (threadIdx.x < FB) {
            int64_t ii = q0 + threadIdx.x;
            lse_s[threadIdx.x] = ii < Tq ? lse[bh * Tq + ii] : 0.0f;
            delta_s[threadIdx.x] = ii < Tq ? delta[bh * Tq + ii] : 0.0f;
        }
        __syncthreads();
        /* S^T_w (16 keys x FB queries) = K_w Q^T, dP^T_w = V_w dO^T */
        for (int n = 0; n < FB / 16; n++) {
            acc_t s, dp;
            wmma::fill_fragment(s, 0.0f);
            wmma::fill_fragment(dp, 0.0f);
            for (int kk = 0; kk < FD / 16; kk++) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> fa;
                wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> fb;
                wmma::load_matrix_sync(fa, Ks + (w * 16) * FD + kk * 16, FD);
                wmma::load_matrix_sync(fb, Qs + (n * 16) * FD + kk * 16, FD);
                wmma::mma_sync(s, fa, fb, s);
                wmma::load_matrix_sync(fa, Vs + (w * 16) * FD + kk * 16, FD);
                wmma::load_matrix_sync(fb, dOs + (n * 16) * FD + kk * 16, FD);
                wmma::mma_sync(dp, fa, fb, dp);
            }
            wmma::store_matrix_sync(Sw + n * 16, s, FB, wmma::mem_row_major);
            wmma::store_matrix_sync(Dw + n * 16, dp, FB, wmma::mem_row_major);
        }
        __syncwarp();
        /* P^T and dS^T = scale P^T o (dP^T - delta) */
        for (int e = lane; e < 16 * FB; e += 32) {
            int rr = e / FB, c = e % FB;
            int64_t j = k0 + w * 16 + rr, ii = q0 + c;
            float p = 0.0f;
            if (ii < Tq && !is_masked(pad, b, Tk, ii, j, causal))
                p = __expf(Sw[e] * scale - lse_s[c]);
            Pw[e] = __float2bfloat16_rn(p);
            dSw[e] = __float2bfloat16_rn(scale * p * (Dw[e] - delta_s[c]));
        }
        __syncwarp();
        /* dV_w += P^T dO, dK_w += dS^T Q */
        for (int n = 0; n < FD / 16; n++)
            for (int kk = 0; kk < FB / 16; kk++) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> fa;
                wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> fb;
                wmma::load_matrix_sync(fa, Pw + kk * 16, FB);
                wmma::load_matrix_sync(fb, dOs + (kk * 16) * FD + n * 16, FD);
                wmma::mma_sync(dV[n], fa, fb, dV[n]);
                wmma::load_matrix_sync(fa, dSw + kk * 16, FB);
                wmma::load_matrix_sync(fb, Qs + (kk * 16) * FD + n * 16, FD);
                wmma::mma_sync(dK[n], fa, fb, dK[n]);
            }
        /* dQ += dS K: warp w takes query rows w*16.. over the tile's 64 keys (dS^T of all the
         * warps: dSall is (FB keys, FB queries)) and adds them to dq */
        __syncthreads();
        for (int n = 0; n < FD / 16; n++) {
            acc_t acc;
            wmma::fill_fragment(acc, 0.0f);
            for (int kk = 0; kk < FB / 16; kk++) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::col_major> fa;
                wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> fb;
                wmma::load_matrix_sync(fa, dSall + (kk * 16) * FB + w * 16, FB);
                wmma::load_matrix_sync(fb, Ks + (kk * 16) * FD + n * 16, FD);
                wmma::mma_sync(acc, fa, fb, acc);
            }
            wmma::store_matrix_sync(Sw, acc, 16, wmma::mem_row_major);
            __syncwarp();
            for (int e = lane; e < 256; e += 32) {
                int64_t ii = q0 + w * 16 + e / 16;
                if (ii < Tq) atomicAdd(&dq[(bh * Tq + ii) * FD + n * 16 + e % 16], Sw[e]);
            }
            __syncwarp();
        }
    }
    /* dK, dV of this warp's keys, added to the outputs */
    for (int part = 0; part < 2; part++) {
        for (int n = 0; n < FD / 16; n++)
            wmma::store_matrix_sync(Sw + n * 16, part ? dV[n] : dK[n], FD, wmma::mem_row_major);
        __syncwarp();
        float *out = part ? dv : dk;
        for (int e = lane; e < 16 * FD; e += 32) {
            int64_t j = k0 + w * 16 + e / FD;
            if (j < Tk) out[(bh * Tk + j) * FD + e % FD] += Sw[e];
        }
        __syncwarp();
    }
}

static const size_t FWD_SMEM = 3 * FB * FD * 2 + FWARPS * 16 * FB * (4 + 2) +
                               FWARPS * 16 * FD * 4 + 3 * FB * 4;
static const size_t BWD_SMEM = 4 * FB * FD * 2 + FWARPS * 16 * FB * (4 + 4 + 2 + 2) +
                               2 * FB * 4;

static ts_status flash_args(ts_cuda *g, int64_t B, int64_t H, int64_t Tq, int64_t Tk, int64_t D,
                            int causal, float *scale, ts_err *err) {
    (void)g;
    if (D != FD)
        return ts__cuda_fail(err, TS_ERR_UNSUPPORTED, "cuda flash attention: heads of %d, not "
                             "%lld", FD, (long long)D);
    if (B < 1 || H < 1 || Tq < 1 || Tk < 1 || B * H > 65535 || (causal && Tq != Tk))
        return ts__cuda_fail(err, TS_ERR_USAGE, "cuda flash attention: %lld x %lld heads, Tq "
                             "%lld, Tk %lld%s", (long long)B, (long long)H, (long long)Tq,
                             (long long)Tk, causal ? ", causal" : "");
    if (*scale <= 0.0f) *scale = 1.0f / sqrtf((float)D);
    return TS_OK;
}

ts_status ts_cuda_flash_attention(ts_cuda *g, const uint16_t *q, const uint16_t *k,
                                  const uint16_t *v, const uint8_t *key_pad, float *y,
                                  float *lse, int64_t B, int64_t H, int64_t Tq, int64_t Tk,
                                  int64_t D, int causal, float scale, ts_err *err) {
    ts_status st = flash_args(g, B, H, Tq, Tk, D, causal, &scale, err);
    if (st) return st;
    TS_CU(cudaFuncSetAttribute(flash_fwd_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               (int)FWD_SMEM), "flash attention (shared memory)");
    dim3 grid((unsigned)((Tq + FB - 1) / FB), (unsigned)(B * H));
    flash_fwd_kernel<<<grid, FTHREADS, FWD_SMEM, g->stream>>>(q, k, v, key_pad, y, lse, H, Tq,
                                                              Tk, causal, scale);
    TS_CU_LAUNCHED("flash attention");
    return TS_OK;
}

ts_status ts_cuda_flash_attention_backward(ts_cuda *g, const uint16_t *q, const uint16_t *k,
                                           const uint16_t *v, const uint8_t *key_pad,
                                           const float *y, const float *lse, const uint16_t *dy,
                                           float *dq, float *dk, float *dv, int64_t B,
                                           int64_t H, int64_t Tq, int64_t Tk, int64_t D,
                                           int causal, float scale, ts_err *err) {
    ts_status st = flash_args(g, B, H, Tq, Tk, D, causal, &scale, err);
    if (st) return st;
    int64_t rows = B * H * Tq;
    if (rows > (int64_t)g->scratch_floats)
        return ts__cuda_fail(err, TS_ERR_USAGE, "cuda flash attention backward: %lld rows "
                             "exceed the scratch", (long long)rows);
    float *delta = g->scratch;
    flash_delta_kernel<<<(unsigned)((rows + 7) / 8), 256, 0, g->stream>>>(dy, y, delta, rows);
    TS_CU_LAUNCHED("flash attention backward (delta)");
    TS_CU(cudaFuncSetAttribute(flash_bwd_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               (int)BWD_SMEM), "flash attention backward (shared memory)");
    dim3 grid((unsigned)((Tk + FB - 1) / FB), (unsigned)(B * H));
    flash_bwd_kernel<<<grid, FTHREADS, BWD_SMEM, g->stream>>>(q, k, v, key_pad, dy, lse, delta,
                                                              dq, dk, dv, H, Tq, Tk, causal,
                                                              scale);
    TS_CU_LAUNCHED("flash attention backward");
    return TS_OK;
}
