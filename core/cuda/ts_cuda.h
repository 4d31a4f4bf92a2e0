/* ts_cuda.h: the CUDA backend's device layer: a device, its stream, a bump arena, cuBLASLt
 * products and the kernels of the CPU backend's core ops (forward and backward).
 *
 * Every pointer below is device memory from ts_cuda_alloc, every tensor is row-major and
 * contiguous, and every call is queued on the device's one stream: a result is on the device
 * when the call returns and readable by the host after ts_cuda_download (or ts_cuda_sync).
 * Gradients are accumulated (+=) into their buffers, as the CPU backend's backward does, so
 * a caller zeroes them once per step (ts_cuda_zero). Reductions over rows (weight and bias
 * gradients, the cross-entropy mean) sum in a fixed order: the results do not depend on the
 * launch configuration or on timing (the exceptions, atomic sums and the timed choice of a
 * product's algorithm, are named where they are). Those sums, the cross-entropy's row losses
 * and the attention backward's row terms share one scratch buffer of the device, which is safe
 * because everything runs on its one stream.
 *
 * This layer is what the trainer's device path is built on; tests/gpu_parity.c checks every
 * kernel against a float64 reference on the host, and bench/gpu_clip_step the CLIP model below
 * against open_clip (bench/gpu_check.sh runs both on a GPU; docs/gpu.md has the numbers).
 * attention.cu is the plain, deterministic reference attention; attn_mma.cu the tensor-core
 * one that the CLIP model uses. What it is not yet: a ts_ctx on the device (op-level dispatch
 * of the tape's ops).
 */
#ifndef TS_CUDA_H
#define TS_CUDA_H

#include "../tessera.h"

#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ts_cuda ts_cuda;

/* Open device `device` with an arena of arena_bytes (one cudaMalloc, no managed memory) and a
 * cuBLASLt workspace; arena_bytes 0: nine tenths of the device memory free at that moment.
 * TS_ERR_UNSUPPORTED names the reason when there is no usable device. */
ts_status ts_cuda_open(ts_cuda **out, int device, size_t arena_bytes, ts_err *err);
void ts_cuda_close(ts_cuda *g);
/* "NVIDIA H100 80GB HBM3, compute capability 9.0, 132 SMs, 79.1 GiB" */
const char *ts_cuda_describe(const ts_cuda *g);

/* Bump allocation from the arena, 256-byte aligned; NULL when the arena is full. */
void *ts_cuda_alloc(ts_cuda *g, size_t bytes);
size_t ts_cuda_arena_used(const ts_cuda *g);
void ts_cuda_reset(ts_cuda *g); /* everything allocated since open is released */

ts_status ts_cuda_upload(ts_cuda *g, void *dst, const void *src, size_t bytes, ts_err *err);
ts_status ts_cuda_download(ts_cuda *g, void *dst, const void *src, size_t bytes, ts_err *err);
ts_status ts_cuda_fill_bytes(ts_cuda *g, void *dst, int byte, size_t bytes, ts_err *err);
ts_status ts_cuda_zero(ts_cuda *g, void *dst, size_t bytes, ts_err *err);
ts_status ts_cuda_sync(ts_cuda *g, ts_err *err);

/* ---- uploads that overlap the compute stream ----
 * A batch goes to the device while the device still trains on the one before: the host
 * buffers are page-locked (ts_cuda_pin; the data pipeline's batch buffers, through its
 * on_buffer hook), and the device holds TS_CUDA_LANES destinations. An upload into a lane
 * runs on a copy stream of its own once the compute stream is done with that lane's last
 * contents, and the compute stream waits for it before reading it:
 *
 *     ts_cuda_lane_upload(g, k ^ 1, next...)     the next batch, behind the current one
 *     ts_cuda_lane_use(g, k)                     the compute stream waits for lane k's copy
 *     ... kernels reading lane k ...
 *     ts_cuda_lane_release(g, k)                 lane k may be overwritten after these
 *     ts_cuda_lane_wait_host(g, k ^ 1)           before the host reuses next's source
 *
 * Unpinned sources work too (the copy is then synchronous for the host). */
#define TS_CUDA_LANES 2
/* Page-lock host memory for asynchronous copies; an error leaves it as it was, and usable. */
ts_status ts_cuda_pin(ts_cuda *g, void *host, size_t bytes, ts_err *err);
/* Undo ts_cuda_pin once the lanes' copies are done (none or a failed pin: nothing to undo). */
void ts_cuda_unpin(ts_cuda *g, void *host);
ts_status ts_cuda_lane_upload(ts_cuda *g, int lane, void *dst, const void *src, size_t bytes,
                              ts_err *err);
ts_status ts_cuda_lane_use(ts_cuda *g, int lane, ts_err *err);
ts_status ts_cuda_lane_release(ts_cuda *g, int lane, ts_err *err);
ts_status ts_cuda_lane_wait_host(ts_cuda *g, int lane, ts_err *err);

/* ---- products (cuBLASLt, float32 accumulation) ---- */

typedef enum { TS_CUDA_F32, TS_CUDA_BF16 } ts_cuda_dtype;

/* y (M, N) float32 = op(a) @ op(b) (+ bias (N)), beta 0 (y overwritten) or 1 (y +=).
 * a: (M, K), or (K, M) with TS_TRANS_A; b: (K, N), or (N, K) with TS_TRANS_B (tessera.h's
 * flags). dt: the type of a and b (bf16 as raw 16-bit values). float32 inputs are multiplied
 * in full float32 (no TF32). */
ts_status ts_cuda_matmul(ts_cuda *g, ts_cuda_dtype dt, const void *a, const void *b,
                         const float *bias, float *y, int64_t M, int64_t N, int64_t K,
                         int flags, float beta, ts_err *err);
/* `count` products y_i = alpha op(a_i) @ op(b_i) + beta y_i, the i-th matrices stride_a,
 * stride_b and stride_y elements after the first (attention's per-head products); ld_a, ld_b,
 * ld_y: the row pitch of each as stored (elements; 0: packed); count >= 1, alpha != 0. */
ts_status ts_cuda_matmul_batched(ts_cuda *g, ts_cuda_dtype dt, const void *a, const void *b,
                                 float *y, int64_t M, int64_t N, int64_t K, int flags,
                                 float alpha, float beta, int count, int64_t stride_a,
                                 int64_t stride_b, int64_t stride_y, int64_t ld_a, int64_t ld_b,
                                 int64_t ld_y, ts_err *err);
/* The general product: y (M, N) = alpha op(a) @ op(b) + bias + beta c, with y (and c and the
 * bias) in `out`'s type: bf16 is rounded to nearest even from the float32 sums (once; with a
 * bias, cuBLASLt's epilogue may round before and after adding it). `count` products are
 * strided as ts_cuda_matmul_batched's (a bias only with count 1); c is stored as y is, with
 * y's pitch and stride. Zero fields take their defaults: alpha 0 is read as 1, count 0 as 1, a
 * pitch 0 as packed, c NULL as y itself; y must not overlap a, b or itself across the batch.
 * The algorithm cuBLASLt chose is kept per shape. For batched products that overwrite y
 * (beta 0, no c), the first call of a shape times the heuristic's first 8 candidates on its own
 * operands (waiting for the device) and keeps the fastest: two processes may keep different
 * ones, so such products are not bit for bit the same from run to run. */
typedef struct {
    ts_cuda_dtype out;
    const void *bias; /* N values of out's type, or NULL */
    const void *c;
    float alpha, beta;
    int count;
    int64_t stride_a, stride_b, stride_y;
    int64_t ld_a, ld_b, ld_y;
} ts_cuda_mm;
ts_status ts_cuda_matmul_ex(ts_cuda *g, ts_cuda_dtype dt, const void *a, const void *b, void *y,
                            int64_t M, int64_t N, int64_t K, int flags, const ts_cuda_mm *o,
                            ts_err *err);
/* bf16 (round to nearest even) copy of n floats, for the bf16 products */
ts_status ts_cuda_to_bf16(ts_cuda *g, const float *x, uint16_t *y, int64_t n, ts_err *err);

/* ---- elementwise ---- */

/* y = a + b, b broadcast over a's leading dims: b has nb elements and nb divides na */
ts_status ts_cuda_add(ts_cuda *g, const float *a, const float *b, float *y, int64_t na,
                      int64_t nb, ts_err *err);
/* GELU, the exact erf form: y = x Phi(x); dx += dy (Phi(x) + x phi(x)) */
ts_status ts_cuda_gelu(ts_cuda *g, const float *x, float *y, int64_t n, ts_err *err);
ts_status ts_cuda_gelu_backward(ts_cuda *g, const float *x, const float *dy, float *dx,
                                int64_t n, ts_err *err);
/* The other activations of the CPU backend, with its formulas: QuickGELU x sigmoid(1.702 x)
 * (op_quick_gelu.c), GELU's tanh approximation (op_gelu_tanh.c), Mish x tanh(softplus(x))
 * (op_mish.c); the backward adds dy * f'(x) to dx. */
typedef enum { TS_CUDA_QUICK_GELU, TS_CUDA_GELU_TANH, TS_CUDA_MISH } ts_cuda_act;
ts_status ts_cuda_activation(ts_cuda *g, ts_cuda_act a, const float *x, float *y, int64_t n,
                             ts_err *err);
ts_status ts_cuda_activation_backward(ts_cuda *g, ts_cuda_act a, const float *x,
                                     const float *dy, float *dx, int64_t n, ts_err *err);
/* y = gelu(x + b) over R rows of C; dx += g, db += sum over rows of g (either may be NULL) */
ts_status ts_cuda_bias_gelu(ts_cuda *g, const float *x, const float *b, float *y, int64_t R,
                            int64_t C, ts_err *err);
ts_status ts_cuda_bias_gelu_backward(ts_cuda *g, const float *x, const float *b,
                                     const float *dy, float *dx, float *db, int64_t R,
                                     int64_t C, ts_err *err);

/* db (C) += the column sums of dy (R, C), in a fixed order (a bias's gradient) */
ts_status ts_cuda_bias_grad(ts_cuda *g, const float *dy, float *db, int64_t R, int64_t C,
                            ts_err *err);
/* the same from bf16 dy (a gradient written by a bf16 product) */
ts_status ts_cuda_bias_grad_bf16(ts_cuda *g, const uint16_t *dy, float *db, int64_t R,
                                 int64_t C, ts_err *err);
/* dx = dy gelu'(x) (overwritten), and a bf16 copy into dx16 when not NULL */
ts_status ts_cuda_gelu_backward_set(ts_cuda *g, const float *x, const float *dy, float *dx,
                                    uint16_t *dx16, int64_t n, ts_err *err);
/* GELU (exact) from bf16 to bf16, and its backward dx = dy gelu'(x) with x, dy and dx bf16
 * (dx overwritten; dx == dy allowed): the MLP's pre-activation and gradients as bf16 products
 * write them */
ts_status ts_cuda_gelu_bf16io(ts_cuda *g, const uint16_t *x, uint16_t *y, int64_t n,
                              ts_err *err);
ts_status ts_cuda_gelu_backward_bf16io(ts_cuda *g, const uint16_t *x, const uint16_t *dy,
                                       uint16_t *dx, int64_t n, ts_err *err);

/* ---- rows ---- */

/* Layernorm over the last dim of R rows of C: y = (x - mean) rstd w + b (w, b may be NULL);
 * mean and rstd (R) are kept for the backward. */
ts_status ts_cuda_layernorm(ts_cuda *g, const float *x, const float *w, const float *b,
                            float *y, float *mean, float *rstd, int64_t R, int64_t C, float eps,
                            ts_err *err);
/* the same, y written as bf16 (an operand of the next product) */
ts_status ts_cuda_layernorm_bf16(ts_cuda *g, const float *x, const float *w, const float *b,
                                 uint16_t *y, float *mean, float *rstd, int64_t R, int64_t C,
                                 float eps, ts_err *err);
/* dx, dw, db += (each may be NULL) */
ts_status ts_cuda_layernorm_backward(ts_cuda *g, const float *x, const float *w,
                                     const float *mean, const float *rstd, const float *dy,
                                     float *dx, float *dw, float *db, int64_t R, int64_t C,
                                     ts_err *err);
/* the same, and dx16 (may be NULL) gets a bf16 copy of dx after the addition (the operand of
 * the products that the gradient flows into next) */
ts_status ts_cuda_layernorm_backward_bf16(ts_cuda *g, const float *x, const float *w,
                                          const float *mean, const float *rstd,
                                          const float *dy, float *dx, uint16_t *dx16, float *dw,
                                          float *db, int64_t R, int64_t C, ts_err *err);
/* softmax over the last dim; backward dx += y (dy - sum(dy y)) */
ts_status ts_cuda_softmax(ts_cuda *g, const float *x, float *y, int64_t R, int64_t C,
                          ts_err *err);
ts_status ts_cuda_softmax_backward(ts_cuda *g, const float *y, const float *dy, float *dx,
                                   int64_t R, int64_t C, ts_err *err);
/* log-softmax over R rows of C (op_log_softmax.c): y = x - max - log(sum exp(x - max)); the
 * backward adds dy - exp(y) sum(dy) to dx, from y */
ts_status ts_cuda_log_softmax(ts_cuda *g, const float *x, float *y, int64_t R, int64_t C,
                              ts_err *err);
ts_status ts_cuda_log_softmax_backward(ts_cuda *g, const float *y, const float *dy, float *dx,
                                       int64_t R, int64_t C, ts_err *err);
/* Mean softmax cross-entropy of logits (N, K) against targets (N) with torch's ignore_index
 * and label_smoothing: loss (1 float) is written (NaN when a target other than ignore_index
 * lies outside [0, K), where the CPU op stops with an error); the backward adds
 * dloss * d(loss)/d(logits) to dlogits (dloss: one float on the device), nothing to ignored
 * rows. */
ts_status ts_cuda_cross_entropy(ts_cuda *g, const float *logits, const int32_t *targets,
                                float *loss, int64_t N, int64_t K, int ignore_index,
                                float smoothing, ts_err *err);
ts_status ts_cuda_cross_entropy_backward(ts_cuda *g, const float *logits,
                                         const int32_t *targets, const float *dloss,
                                         float *dlogits, int64_t N, int64_t K,
                                         int ignore_index, float smoothing, ts_err *err);

/* ---- attention (core/cuda/attention.cu) ---- */

/* softmax(scale q k^T + masks) v with q (B, H, Tq, D), k and v (B, H, Tk, D), as ts_attention:
 * causal (query i sees keys j <= i; Tq == Tk), key_pad (B, Tk) u8 nonzero = padding, or NULL;
 * scale <= 0: 1/sqrt(D). y (B, H, Tq, D) and lse (B, H, Tq) (kept for the backward) are
 * written; a row with every key masked gives zeros and lse 0, as the CPU op. The backward adds
 * to dq, and to dk and dv (both or neither). This version keeps a row of scores in shared
 * memory (48 KiB): D + Tk floats forward, 2 D + Tk for dq and 2 D + 2 Tq for dk, dv (Tk up to
 * about 12000 and Tq up to about 6000 at D 64). */
ts_status ts_cuda_attention(ts_cuda *g, const float *q, const float *k, const float *v,
                            const uint8_t *key_pad, float *y, float *lse, int64_t B, int64_t H,
                            int64_t Tq, int64_t Tk, int64_t D, int causal, float scale,
                            ts_err *err);
ts_status ts_cuda_attention_backward(ts_cuda *g, const float *q, const float *k, const float *v,
                                     const uint8_t *key_pad, const float *y, const float *lse,
                                     const float *dy, float *dq, float *dk, float *dv,
                                     int64_t B, int64_t H, int64_t Tq, int64_t Tk, int64_t D,
                                     int causal, float scale, ts_err *err);

/* The same function on the tensor cores (core/cuda/flash.cu), FlashAttention-2's schedule: q,
 * k, v and dy are bf16 (B, H, T, 64) (heads of 64 only: TS_ERR_UNSUPPORTED otherwise), y, lse
 * and the gradients float32, the scores never stored; the backward adds to dq (float32 atomics:
 * its sums are in no fixed order), dk and dv. B H <= 65535; causal needs Tq == Tk. */
ts_status ts_cuda_flash_attention(ts_cuda *g, const uint16_t *q, const uint16_t *k,
                                  const uint16_t *v, const uint8_t *key_pad, float *y,
                                  float *lse, int64_t B, int64_t H, int64_t Tq, int64_t Tk,
                                  int64_t D, int causal, float scale, ts_err *err);
ts_status ts_cuda_flash_attention_backward(ts_cuda *g, const uint16_t *q, const uint16_t *k,
                                           const uint16_t *v, const uint8_t *key_pad,
                                           const float *y, const float *lse, const uint16_t *dy,
                                           float *dq, float *dk, float *dv, int64_t B,
                                           int64_t H, int64_t Tq, int64_t Tk, int64_t D,
                                           int causal, float scale, ts_err *err);

/* Attention on the tensor cores by mma.sync (core/cuda/attn_mma.cu, FlashAttention-2's
 * schedule, scores only ever in registers), reading q, k and v where in_proj wrote them: qkv is
 * (B T, 3 W) bf16 rows with W = H 64 (heads of 64; B H up to 65535; qkv and dy 16-byte
 * aligned, y and dqkv 4-byte aligned, as the arena's buffers are), head h's q at column
 * h 64, its k at W + h 64 and its v at 2 W + h 64. y (B T, W) bf16 gets head h's output at
 * column h 64 (packed, as out_proj reads it) and lse (B, H, T) float32 the rows' logsumexp.
 * causal: query i sees keys j <= i. scale <= 0: 1/8.
 * The backward takes y, lse and dy (B T, W) bf16 and overwrites dqkv (B T, 3 W) bf16 with the
 * gradients of q, k and v in the same places; dq_acc (B T W floats) and delta (B H T floats) are
 * its scratch. dk and dv are sums in a fixed order; dq is added up with float32 atomics (in no
 * fixed order). */
ts_status ts_cuda_attention_packed(ts_cuda *g, const uint16_t *qkv, uint16_t *y, float *lse,
                                   int64_t B, int64_t T, int64_t H, int causal, float scale,
                                   ts_err *err);
ts_status ts_cuda_attention_packed_backward(ts_cuda *g, const uint16_t *qkv, const uint16_t *y,
                                            const float *lse, const uint16_t *dy,
                                            uint16_t *dqkv, float *dq_acc, float *delta,
                                            int64_t B, int64_t T, int64_t H, int causal,
                                            float scale, ts_err *err);

/* ---- optimizer ---- */

/* One AdamW step (torch.optim.AdamW) over n values at step t >= 1: the CPU backend's formula
 * (core/optim.c), bias corrections in double on the host; not bit-identical to it (both
 * compilers may fuse multiply-adds). */
ts_status ts_cuda_adamw(ts_cuda *g, float *p, const float *grad, float *m, float *v, int64_t n,
                        int64_t t, float lr, float beta1, float beta2, float eps,
                        float weight_decay, ts_err *err);

/* ---- the CLIP model's own kernels (core/cuda/clip_kernels.cu) ---- */

/* images (B, 3, S, S) -> rows (B * (S/P)^2, 3 P P), the conv weight's (c, kh, kw) order */
ts_status ts_cuda_patchify(ts_cuda *g, const float *images, float *rows, int64_t B, int64_t S,
                           int64_t P, ts_err *err);
/* x (B, T, W): row 0 = cls + pos[0], row t = emb (B, T - 1, W) row t - 1 + pos[t]; the
 * backward overwrites demb and adds to dcls and dpos */
ts_status ts_cuda_vit_tokens(ts_cuda *g, const float *emb, const float *cls, const float *pos,
                             float *x, int64_t B, int64_t T, int64_t W, ts_err *err);
ts_status ts_cuda_vit_tokens_backward(ts_cuda *g, const float *dx, float *demb, float *dcls,
                                      float *dpos, int64_t B, int64_t T, int64_t W,
                                      ts_err *err);
/* x (B, T, W) = table[ids] + pos; the backward adds to dtable (atomics) and dpos */
ts_status ts_cuda_embed(ts_cuda *g, const int32_t *ids, const float *table, const float *pos,
                        float *x, int64_t B, int64_t T, int64_t W, ts_err *err);
ts_status ts_cuda_embed_backward(ts_cuda *g, const int32_t *ids, const float *dx,
                                 float *dtable, float *dpos, int64_t B, int64_t T, int64_t W,
                                 ts_err *err);
/* packed rows (B, T, G, H, D) -> G blocks (B, H, T, D) (to_heads, overwriting), or back
 * (adding when acc); _bf16 writes bf16 (overwriting) */
ts_status ts_cuda_heads(ts_cuda *g, const float *src, float *dst, int64_t B, int64_t T,
                        int64_t G, int64_t H, int64_t D, int to_heads, int acc, ts_err *err);
ts_status ts_cuda_heads_bf16(ts_cuda *g, const float *src, uint16_t *dst, int64_t B, int64_t T,
                             int64_t G, int64_t H, int64_t D, int to_heads, ts_err *err);
/* y = gelu(x) (exact) as bf16 */
ts_status ts_cuda_gelu_bf16(ts_cuda *g, const float *x, uint16_t *y, int64_t n, ts_err *err);
/* p = softmax(scale s) over rows of T keys stored ld >= T apart (row r is query r % T; causal:
 * keys <= query, the rest 0; columns T..ld-1 are written 0); the backward writes
 * ds = scale p (dp - sum(dp p)) (in place allowed: ds == dp) */
ts_status ts_cuda_attn_softmax(ts_cuda *g, const float *scores, float *p, int64_t R, int64_t T,
                               int64_t ld, float scale, int causal, ts_err *err);
ts_status ts_cuda_attn_softmax_backward(ts_cuda *g, const float *p, const float *dp, float *ds,
                                        int64_t R, int64_t T, int64_t ld, float scale,
                                        ts_err *err);
/* the same two, p also written as bf16 (p16), ds only as bf16 */
ts_status ts_cuda_attn_softmax_bf16(ts_cuda *g, const float *scores, float *p, uint16_t *p16,
                                    int64_t R, int64_t T, int64_t ld, float scale, int causal,
                                    ts_err *err);
ts_status ts_cuda_attn_softmax_backward_bf16(ts_cuda *g, const float *p, const float *dp,
                                             uint16_t *ds, int64_t R, int64_t T, int64_t ld,
                                             float scale, ts_err *err);
/* y (B, W) = x (B, T, W) at row idx[b]; the backward adds dy there */
ts_status ts_cuda_gather_rows(ts_cuda *g, const float *x, const int32_t *idx, float *y,
                              int64_t B, int64_t T, int64_t W, ts_err *err);
ts_status ts_cuda_gather_rows_backward(ts_cuda *g, const float *dy, const int32_t *idx,
                                       float *dx, int64_t B, int64_t T, int64_t W, ts_err *err);
/* y = x / max(||x||, 1e-12) per row, norms (R) kept; the backward adds to dx */
ts_status ts_cuda_l2_normalize(ts_cuda *g, const float *x, float *y, float *norms, int64_t R,
                               int64_t C, ts_err *err);
ts_status ts_cuda_l2_normalize_backward(ts_cuda *g, const float *y, const float *norms,
                                        const float *dy, float *dx, int64_t R, int64_t C,
                                        ts_err *err);

/* ---- CSWin's cross-shaped window attention (stripe.cu) ---- */

/* B images of Hm x Wm tokens, C channels, `heads` heads; sw > 0: the first half of the heads
 * attend in stripes sw columns wide and the full height, the second half in stripes sw rows
 * high and the full width (sw divides the map, heads even); sw 0: the whole map, every head.
 * scale <= 0: 1/sqrt(head size). */
typedef struct {
    int64_t B, Hm, Wm, C, heads, sw;
    float scale;
} ts_cuda_stripe;
/* floats of the work area for s, or 0 when s is not a valid geometry */
int64_t ts_cuda_stripe_work(const ts_cuda_stripe *s);
/* As ts_stripe_attention: qkv (B, Hm Wm, 3C) packed [q | k | v] with the heads side by side,
 * LePE's lepe_w (C, 1, 3, 3) and lepe_b (C) (either NULL: none, or no bias), out (B, Hm Wm, C)
 * overwritten. work: ts_cuda_stripe_work(s) floats; the backward reads what the forward left
 * there (the same s) and adds to dqkv, dlepe_w and dlepe_b (each may be NULL). */
ts_status ts_cuda_stripe_attention(ts_cuda *g, const float *qkv, const float *lepe_w,
                                   const float *lepe_b, float *out, const ts_cuda_stripe *s,
                                   float *work, ts_err *err);
ts_status ts_cuda_stripe_attention_backward(ts_cuda *g, const float *lepe_w, const float *dout,
                                            float *dqkv, float *dlepe_w, float *dlepe_b,
                                            const ts_cuda_stripe *s, float *work, ts_err *err);

/* ---- elementwise, sums, layouts, batch norm (tensor.cu), the CPU ops' semantics ---- */

/* y = a op b with b (nb values) repeating every nb of a's na (ts_add, ts_sub, ts_mul: b a
 * bias over rows, a scalar, or a's size); the backward adds to da and db (either may be
 * NULL), db summing over the repeats in a fixed order */
typedef enum { TS_CUDA_BIN_ADD, TS_CUDA_BIN_SUB, TS_CUDA_BIN_MUL } ts_cuda_binop;
ts_status ts_cuda_binary(ts_cuda *g, ts_cuda_binop op, const float *a, const float *b,
                         float *y, int64_t na, int64_t nb, ts_err *err);
ts_status ts_cuda_binary_backward(ts_cuda *g, ts_cuda_binop op, const float *a,
                                  const float *b, const float *dy, float *da, float *db,
                                  int64_t na, int64_t nb, ts_err *err);
/* y = s x (ts_scale), max(x, 0) (ts_relu; slope 0 at 0), e^x (ts_exp, whose backward reads
 * y), log sigmoid(x) (ts_log_sigmoid, torch's stable form); the backward adds to dx */
typedef enum { TS_CUDA_UN_SCALE, TS_CUDA_UN_RELU, TS_CUDA_UN_EXP, TS_CUDA_UN_LOG_SIGMOID }
    ts_cuda_unop;
ts_status ts_cuda_unary(ts_cuda *g, ts_cuda_unop op, const float *x, float *y, int64_t n,
                        float s, ts_err *err);
ts_status ts_cuda_unary_backward(ts_cuda *g, ts_cuda_unop op, const float *x, const float *y,
                                 const float *dy, float *dx, int64_t n, float s, ts_err *err);
/* y (O, I) = scale times the sum of a (O, R, I) over R: ts_sum and ts_mean (scale 1/R) over
 * one dim (or all: O = I = 1); the backward adds scale dy, broadcast over R, to da */
ts_status ts_cuda_reduce(ts_cuda *g, const float *a, float *y, int64_t O, int64_t R,
                         int64_t I, float scale, ts_err *err);
ts_status ts_cuda_reduce_backward(ts_cuda *g, const float *dy, float *da, int64_t O, int64_t R,
                                  int64_t I, float scale, ts_err *err);
/* y = x (ndim of shape, at most 8) permuted as ts_permute (perm[i]: the input dim that becomes
 * output dim i), overwriting y or added to it (acc): the backward is the inverse permutation
 * of dy added to dx */
ts_status ts_cuda_permute(ts_cuda *g, const float *x, float *y, int ndim, const int64_t *shape,
                          const int *perm, int acc, ts_err *err);
/* Rows [y_at, y_at + n) of y (O, Dy, I) = rows [x_at, x_at + n) of x (O, Dx, I), overwritten
 * or added (acc): ts_slice and ts_concat along a dim of Dx / Dy rows, and their backward */
ts_status ts_cuda_copy_rows(ts_cuda *g, const float *x, int64_t Dx, int64_t x_at, float *y,
                            int64_t Dy, int64_t y_at, int64_t O, int64_t n, int64_t I, int acc,
                            ts_err *err);
/* y (O, n, I) = rows idx (n) of a (O, L, I): ts_index_select along a dim of L rows, and
 * ts_embedding (O = 1, L the vocabulary, I the width); an index outside [0, L) gives a row of
 * NaN (check ids on the host). The backward adds dy's rows to da's, a thread per (o, column)
 * walking the indices in order as the CPU op does: deterministic, and slow for long index
 * lists (n steps a thread). */
ts_status ts_cuda_index_rows(ts_cuda *g, const float *a, const int32_t *idx, float *y,
                             int64_t O, int64_t L, int64_t n, int64_t I, ts_err *err);
ts_status ts_cuda_index_rows_backward(ts_cuda *g, const float *dy, const int32_t *idx,
                                      float *da, int64_t O, int64_t L, int64_t n, int64_t I,
                                      ts_err *err);
/* Inverted dropout as ts_dropout's function: x[i] kept (mask[i] = 1) with probability 1 - p
 * and scaled by 1 / (1 - p); p == 1 drops everything. The mask is drawn from a hash of (seed,
 * i), the same for the same seed whatever the launch, not from the CPU's RNG stream; the
 * backward adds dy mask / (1 - p) to dx. */
ts_status ts_cuda_dropout(ts_cuda *g, const float *x, float *y, uint8_t *mask, int64_t n,
                          float p, uint64_t seed, ts_err *err);
ts_status ts_cuda_dropout_backward(ts_cuda *g, const float *dy, const uint8_t *mask, float *dx,
                                   int64_t n, float p, ts_err *err);
/* ts_attention_kv's function: q (B, Tq, C) and kv (B, Tk, 2C) with columns [k | v], heads side
 * by side (C = heads D), key_pad (B, Tk) u8 (nonzero: padding) or NULL; y (B, Tq, C)
 * overwritten. Composed of
 * permutes into the head layout, the attention kernels and a permute back. work: the floats
 * of ts_cuda_attention_kv_work (0: a bad geometry), which the backward reads as the forward
 * left it; the backward needs a second area dwork of the same size and adds to dq and dkv
 * (either may be NULL). */
int64_t ts_cuda_attention_kv_work(int64_t B, int64_t Tq, int64_t Tk, int64_t C, int64_t heads);
ts_status ts_cuda_attention_kv(ts_cuda *g, const float *q, const float *kv,
                               const uint8_t *key_pad, float *y, int64_t B, int64_t Tq,
                               int64_t Tk, int64_t C, int64_t heads, float scale, float *work,
                               ts_err *err);
ts_status ts_cuda_attention_kv_backward(ts_cuda *g, const uint8_t *key_pad, const float *dy,
                                        float *dq, float *dkv, int64_t B, int64_t Tq,
                                        int64_t Tk, int64_t C, int64_t heads, float scale,
                                        float *dwork, float *work, ts_err *err);
/* ts_batchnorm1d over x (N, C): batch statistics when training or without running ones (both
 * NULL), which training updates with momentum (the variance unbiased); mean and rstd (C) are
 * written for the backward. w, b may be NULL. The backward adds to dx, dw and db (each may be
 * NULL), batch_stats as the forward had them. */
ts_status ts_cuda_batchnorm1d(ts_cuda *g, const float *x, const float *w, const float *b,
                              float *running_mean, float *running_var, int training,
                              float momentum, float eps, float *y, float *mean, float *rstd,
                              int64_t N, int64_t C, ts_err *err);
ts_status ts_cuda_batchnorm1d_backward(ts_cuda *g, const float *x, const float *w,
                                       const float *dy, const float *mean, const float *rstd,
                                       int batch_stats, float *dx, float *dw, float *db,
                                       int64_t N, int64_t C, ts_err *err);

/* ---- convolutions (conv.cu), NCHW as the CPU backend's ---- */

/* x (B, C, H, W); the kernel kh x kw with the same stride and zero padding on both axes; Cout
 * the output channels of ts_cuda_conv2d (unused by the depthwise convolution). */
typedef struct {
    int64_t B, C, H, W, Cout, kh, kw;
    int stride, pad;
} ts_cuda_conv;
/* The output side, as the CPU ops: (H + 2 pad - kh) / stride + 1, or 0 for a geometry that is
 * not a convolution (no channels, the kernel past the padded input, stride < 1, pad < 0) */
int64_t ts_cuda_conv_out(const ts_cuda_conv *c, int64_t *wo);
/* Depthwise, as ts_dwconv2d (CSWin's LePE): w (C, 1, kh, kw), bias (C) or NULL, y (B, C, Ho,
 * Wo) overwritten. The backward adds to dx, dw and db, each of which may be NULL. */
ts_status ts_cuda_dwconv2d(ts_cuda *g, const float *x, const float *w, const float *bias,
                           float *y, const ts_cuda_conv *c, ts_err *err);
ts_status ts_cuda_dwconv2d_backward(ts_cuda *g, const float *x, const float *w,
                                    const float *dy, float *dx, float *dw, float *db,
                                    const ts_cuda_conv *c, ts_err *err);
/* General, as ts_conv2d (stems, patch embedding): w (Cout, C, kh, kw), bias (Cout) or NULL, y
 * (B, Cout, Ho, Wo) overwritten; im2col into cols, then float32 products (cuBLASLt) per image.
 * cols: scratch of cols_floats floats, at least C kh kw Ho Wo (one image's columns); as many
 * images go at once as it holds. The backward adds to dx, dw and db (each may be NULL); its
 * weight gradient sums the images in order. */
ts_status ts_cuda_conv2d(ts_cuda *g, const float *x, const float *w, const float *bias,
                         float *y, const ts_cuda_conv *c, float *cols, int64_t cols_floats,
                         ts_err *err);
ts_status ts_cuda_conv2d_backward(ts_cuda *g, const float *x, const float *w, const float *dy,
                                  float *dx, float *dw, float *db, const ts_cuda_conv *c,
                                  float *cols, int64_t cols_floats, ts_err *err);
/* y = exp(ls[0]) x; the backward adds to dx and dls (either may be NULL) */
ts_status ts_cuda_exp_scale(ts_cuda *g, const float *x, const float *ls, float *y, int64_t n,
                            ts_err *err);
ts_status ts_cuda_exp_scale_backward(ts_cuda *g, const float *x, const float *ls,
                                     const float *dy, float *dx, float *dls, int64_t n,
                                     ts_err *err);
ts_status ts_cuda_clamp(ts_cuda *g, float *x, int64_t n, float lo, float hi, ts_err *err);
ts_status ts_cuda_fill(ts_cuda *g, float *x, int64_t n, float v, ts_err *err);

/* ---- a CLIP model trained on the device (core/cuda/clip_model.cu) ---- */

/* open_clip's CLIP: a VisionTransformer (class token, no conv bias, ln_pre, ln_post, proj) and
 * its text transformer (causal, argmax pooling, ln_final, text_projection), exact GELU,
 * layernorm eps 1e-5, ClipLoss. Parameter names as open_clip's state_dict. */
typedef struct ts_cuda_clip_config {
    int64_t image_size, patch, width, layers, heads;     /* vision */
    int64_t context, vocab, text_width, text_layers, text_heads;
    int64_t embed;
    int flash_attention;   /* 1: attention by the tensor-core kernels of attn_mma.cu
                              (ts_cuda_attention_packed) where they apply (bf16, heads of 64);
                              0: per-head cuBLASLt products around a row softmax */
} ts_cuda_clip_config;

typedef struct ts_cuda_clip ts_cuda_clip;

/* Everything (parameters, moments, the activations of a batch of `batch`) is allocated from
 * g's arena now; dt: the operand type of the towers' products (bf16 keeps a bf16 copy of the
 * parameters). The parameters start at zero: set each (ts_cuda_clip_set), then call
 * ts_cuda_clip_params_ready. */
ts_status ts_cuda_clip_new(ts_cuda *g, const ts_cuda_clip_config *c, int64_t batch,
                           ts_cuda_dtype dt, ts_cuda_clip **out, ts_err *err);
void ts_cuda_clip_free(ts_cuda_clip *m);
int ts_cuda_clip_param_count(const ts_cuda_clip *m);
const char *ts_cuda_clip_param(const ts_cuda_clip *m, int i, int64_t *numel); /* NULL past */
int64_t ts_cuda_clip_param_total(const ts_cuda_clip *m);
/* host <-> device by name: values, or (get with grad) the gradients of the last backward */
ts_status ts_cuda_clip_set(ts_cuda_clip *m, const char *name, const float *host, int64_t n,
                           ts_err *err);
ts_status ts_cuda_clip_get(ts_cuda_clip *m, const char *name, int grad, float *host, int64_t n,
                           ts_err *err);
ts_status ts_cuda_clip_params_ready(ts_cuda_clip *m, ts_err *err);
/* AdamW's moments of parameter `name` (slot 0: first, 1: second), host <-> device, so that a
 * run can be checkpointed and resumed */
ts_status ts_cuda_clip_set_moment(ts_cuda_clip *m, const char *name, int slot,
                                  const float *host, int64_t n, ts_err *err);
ts_status ts_cuda_clip_get_moment(ts_cuda_clip *m, const char *name, int slot, float *host,
                                  int64_t n, ts_err *err);
/* Which towers run attn_mma.cu's tensor-core attention: 1 the vision tower, 2 the text tower
 * (flash_attention asked for, bf16, heads of 64, batch x heads up to 65535), or 0 */
int ts_cuda_clip_tensor_core_towers(const ts_cuda_clip *m);
/* 1 when parameter i is in the weight-decayed group (open_clip's rule), else 0 */
int ts_cuda_clip_param_decayed(const ts_cuda_clip *m, int i);
/* One forward and backward: images (B, 3, S, S) float32 on the device, ids (B, context) on
 * the host (each in [0, vocab); a row is pooled at its largest id). The gradients are
 * overwritten; loss (may be NULL, which skips the wait for it) gets ClipLoss. */
ts_status ts_cuda_clip_forward_backward(ts_cuda_clip *m, const float *images,
                                        const int32_t *ids, float *loss, ts_err *err);
/* torch.optim.AdamW over the weight-decayed group and the rest (no decay), step t >= 1, then
 * open_clip's clamp of logit_scale to [0, ln 100] */
ts_status ts_cuda_clip_adamw(ts_cuda_clip *m, int64_t t, float lr, float beta1, float beta2,
                             float eps, float weight_decay, ts_err *err);
/* Profiling: while on, every call of a step waits for the device and its time is booked to its
 * phase and function (slower steps, a breakdown of where the time goes); turning it on clears
 * the table; print divides by `steps`. */
void ts_cuda_clip_profile(ts_cuda_clip *m, int on);
void ts_cuda_clip_profile_print(const ts_cuda_clip *m, FILE *f, int steps);

#ifdef __cplusplus
}
#endif

#endif
