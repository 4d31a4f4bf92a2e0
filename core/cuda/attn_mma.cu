/* attn_mma.cu: attention on the tensor cores by mma.sync (m16n8k16, bf16 in, float32
 * accumulation), FlashAttention-2's schedule, for heads of 64, reading q, k and v where
 * in_proj wrote them (packed (B T, 3 W) rows) and writing the output packed (B T, W), as
 * out_proj reads it: no head-layout passes, and the scores never leave registers.
 *
 * Forward: a block of 4 warps takes 64 queries of one (batch, head), each warp 16 of them,
 * with its q rows as A fragments in registers; it walks the keys in tiles of 64 that the block
 * stages in shared memory (rows padded to 72 elements, so that the 8 rows a fragment's lanes
 * read fall in different banks). Scores are mma products into registers; the online softmax
 * (running max and sum per row, in base 2) rescales the output accumulators, and the
 * probabilities, rounded to bf16, are the A fragments of the product with v as they lie (the
 * accumulator layout of two 16 x 8 tiles is the A layout of one 16 x 16). The row logsumexp is
 * kept for the backward.
 *
 * Backward: a block takes 64 keys, each warp 16, and walks the query tiles (from its own keys
 * on when causal): S^T = K Q^T and dP^T = V dO^T per warp, P^T from the logsumexp, dS^T =
 * scale P^T (dP^T - delta) with delta = rowsum(dO o O) from a first pass; dV += P^T dO and
 * dK += dS^T Q stay in registers over all query tiles and are written once; dS^T goes through
 * shared memory so that each warp can form 16 queries' dQ = dS K over the block's 64 keys,
 * added to a float32 buffer with atomics (then rounded into dqkv's q columns).
 *
 * The masks are the CLIP towers': causal or none (keys past T are never seen).
 */
#include "cuda_impl.h"

#include <cuda_bf16.h>

#include "attn_mma_kernels.h"

/* the grids hold the problem (B H blocks in y, B T H / 8 in x) and the rows' 16-byte loads
 * (qkv, dy) and 4-byte stores (y, dqkv) are aligned */
static ts_status packed_args(int64_t B, int64_t T, int64_t H, const void *in16, const void *in16b,
                             const void *out4, const void *out4b, ts_err *err) {
    if (B < 1 || T < 1 || H < 1 || B * H > 65535 || B * T * H / 8 > 0x7fffffff)
        return ts__cuda_fail(err, TS_ERR_USAGE, "cuda attention (packed): batch %lld, %lld "
                             "tokens, %lld heads (batch x heads up to 65535)", (long long)B,
                             (long long)T, (long long)H);
    if (((uintptr_t)in16 | (uintptr_t)in16b) % 16 || ((uintptr_t)out4 | (uintptr_t)out4b) % 4)
        return ts__cuda_fail(err, TS_ERR_USAGE, "cuda attention (packed): qkv and dy must be "
                             "16-byte aligned, y and dqkv 4-byte aligned");
    return TS_OK;
}

ts_status ts_cuda_attention_packed(ts_cuda *g, const uint16_t *qkv, uint16_t *y, float *lse,
                                   int64_t B, int64_t T, int64_t H, int causal, float scale,
                                   ts_err *err) {
    ts_status st = packed_args(B, T, H, qkv, qkv, y, y, err);
    if (st) return st;
    if (scale <= 0.0f) scale = 0.125f;
    dim3 grid((unsigned)((T + AR - 1) / AR), (unsigned)(B * H));
    attn_fwd_kernel<<<grid, 32 * AW, 0, g->stream>>>(qkv, y, lse, T, H, causal, scale * LOG2E);
    TS_CU_LAUNCHED("attention (packed)");
    return TS_OK;
}

ts_status ts_cuda_attention_packed_backward(ts_cuda *g, const uint16_t *qkv, const uint16_t *y,
                                            const float *lse, const uint16_t *dy,
                                            uint16_t *dqkv, float *dq_acc, float *delta,
                                            int64_t B, int64_t T, int64_t H, int causal,
                                            float scale, ts_err *err) {
    ts_status st = packed_args(B, T, H, qkv, dy, y, dqkv, err);
    if (st) return st;
    if (scale <= 0.0f) scale = 0.125f;
    int64_t W = H * AD;
    TS_CU(cudaMemsetAsync(dq_acc, 0, (size_t)(B * T * W) * sizeof(float), g->stream),
          "attention backward (packed): clearing dq");
    attn_delta_kernel<<<(unsigned)((B * T * H + 7) / 8), 256, 0, g->stream>>>(y, dy, delta, B, T,
                                                                             H);
    TS_CU_LAUNCHED("attention backward (packed): delta");
    dim3 grid((unsigned)((T + AR - 1) / AR), (unsigned)(B * H));
    attn_bwd_kernel<<<grid, 32 * AW, 0, g->stream>>>(qkv, dy, lse, delta, dqkv, dq_acc, T, H,
                                                     causal, scale, scale * LOG2E);
    TS_CU_LAUNCHED("attention backward (packed)");
    attn_dq_kernel<<<grid_for(B * T * W, 256), 256, 0, g->stream>>>(dq_acc, dqkv, B * T, W);
    TS_CU_LAUNCHED("attention backward (packed): dq");
    return TS_OK;
}
