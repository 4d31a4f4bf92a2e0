/* ts_cuda.h: the CUDA backend's device layer: a device, its stream, a bump arena, cuBLASLt
 * products and the kernels of the CPU backend's core ops (forward and backward).
 *
 * Every pointer below is device memory from ts_cuda_alloc, every tensor is row-major and
 * contiguous, and every call is queued on the device's one stream: a result is on the device
 * when the call returns and readable by the host after ts_cuda_download (or ts_cuda_sync).
 * Gradients are accumulated (+=) into their buffers, as the CPU backend's backward does, so
 * a caller zeroes them once per step (ts_cuda_zero). Reductions over rows (weight and bias
 * gradients, the cross-entropy mean) sum in a fixed order: the results do not depend on the
 * launch configuration or on timing. Those sums, the cross-entropy's row losses and the
 * attention backward's row terms share one scratch buffer of the device, which is safe because
 * everything runs on its one stream.
 *
 * This layer is what the trainer's device path is built on; tests/gpu_parity.c checks every
 * kernel against a float64 reference on the host (bench/gpu_check.sh runs it on a GPU).
 * What it is not yet: a tiled tensor-core attention (attention.cu is the plain, deterministic
 * reference version) or a ts_ctx on the device.
 */
#ifndef TS_CUDA_H
#define TS_CUDA_H

#include "../tessera.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ts_cuda ts_cuda;

/* Open device `device` with an arena of arena_bytes (one cudaMalloc, no managed memory) and a
 * cuBLASLt workspace. TS_ERR_UNSUPPORTED names the reason when there is no usable device. */
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

/* ---- products (cuBLASLt, float32 accumulation) ---- */

typedef enum { TS_CUDA_F32, TS_CUDA_BF16 } ts_cuda_dtype;

/* y (M, N) float32 = op(a) @ op(b) (+ bias (N)), beta 0 (y overwritten) or 1 (y +=).
 * a: (M, K), or (K, M) with TS_TRANS_A; b: (K, N), or (N, K) with TS_TRANS_B (tessera.h's
 * flags). dt: the type of a and b (bf16 as raw 16-bit values). float32 inputs are multiplied
 * in full float32 (no TF32). */
ts_status ts_cuda_matmul(ts_cuda *g, ts_cuda_dtype dt, const void *a, const void *b,
                         const float *bias, float *y, int64_t M, int64_t N, int64_t K,
                         int flags, float beta, ts_err *err);
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
/* y = gelu(x + b) over R rows of C; dx += g, db += sum over rows of g (either may be NULL) */
ts_status ts_cuda_bias_gelu(ts_cuda *g, const float *x, const float *b, float *y, int64_t R,
                            int64_t C, ts_err *err);
ts_status ts_cuda_bias_gelu_backward(ts_cuda *g, const float *x, const float *b,
                                     const float *dy, float *dx, float *db, int64_t R,
                                     int64_t C, ts_err *err);

/* ---- rows ---- */

/* Layernorm over the last dim of R rows of C: y = (x - mean) rstd w + b (w, b may be NULL);
 * mean and rstd (R) are kept for the backward. */
ts_status ts_cuda_layernorm(ts_cuda *g, const float *x, const float *w, const float *b,
                            float *y, float *mean, float *rstd, int64_t R, int64_t C, float eps,
                            ts_err *err);
/* dx, dw, db += (each may be NULL) */
ts_status ts_cuda_layernorm_backward(ts_cuda *g, const float *x, const float *w,
                                     const float *mean, const float *rstd, const float *dy,
                                     float *dx, float *dw, float *db, int64_t R, int64_t C,
                                     ts_err *err);
/* softmax over the last dim; backward dx += y (dy - sum(dy y)) */
ts_status ts_cuda_softmax(ts_cuda *g, const float *x, float *y, int64_t R, int64_t C,
                          ts_err *err);
ts_status ts_cuda_softmax_backward(ts_cuda *g, const float *y, const float *dy, float *dx,
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

/* ---- optimizer ---- */

/* One AdamW step (torch.optim.AdamW) over n values at step t >= 1: the CPU backend's formula
 * (core/optim.c), bias corrections in double on the host; not bit-identical to it (both
 * compilers may fuse multiply-adds). */
ts_status ts_cuda_adamw(ts_cuda *g, float *p, const float *grad, float *m, float *v, int64_t n,
                        int64_t t, float lr, float beta1, float beta2, float eps,
                        float weight_decay, ts_err *err);

#ifdef __cplusplus
}
#endif

#endif
