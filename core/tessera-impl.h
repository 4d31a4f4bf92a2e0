/* tessera-impl.h: what the files of core/ share and nobody else includes.
 *
 * The tape node layout, helpers that ops use to record themselves and to reach their input
 * gradients, the OpenMP thread helpers, and the bf16 switch of the matmul. Not a public API:
 * names here start with ts__.
 */
#ifndef TESSERA_IMPL_H
#define TESSERA_IMPL_H

#include "tessera.h"

#include <string.h>

/* A tape node: which op made out from which inputs, and what its backward needs.
 * Saved tensors live in the step arena with everything else of the step. */
#define TS__MAX_IN 4
struct ts_node {
    ts_op op;
    void (*backward)(ts_ctx *c, ts_node *n);
    ts_tensor *out;
    ts_tensor *in[TS__MAX_IN];
    int nin;
    ts_tensor *saved[4];  /* op-specific: e.g. layernorm's mean and rstd */
    int64_t i[8];         /* op-specific integer arguments */
    float f[4];           /* op-specific float arguments */
    void *p;              /* op-specific pointer (e.g. a permutation array in the arena) */
};

/* True when an op with these inputs must be recorded. */
int ts__needs_grad(const ts_ctx *c, int nin, const ts_tensor *const *in);
/* Record node for out when ts__needs_grad; returns NULL otherwise. Inputs that are NULL are
 * skipped. The node is zeroed except op, backward, out, in. */
ts_node *ts__record(ts_ctx *c, ts_op op, void (*backward)(ts_ctx *, ts_node *), ts_tensor *out,
                    int nin, const ts_tensor *const *in);
#define TS__RECORD(c, op, bw, out, ...)                                                      \
    ts__record((c), (op), (bw), (out), (int)(sizeof((const ts_tensor *[]){ __VA_ARGS__ }) /  \
                                             sizeof(ts_tensor *)),                           \
               (const ts_tensor *const[]){ __VA_ARGS__ })
/* The gradient buffer of t for accumulation (+=), or NULL when t does not need one.
 * Activation grads are allocated zeroed in the step arena on first use. */
float *ts__grad(ts_ctx *c, ts_tensor *t);
/* The same for a backward that writes every element of the gradient in one pass (a product
 * with beta): when the buffer is new it is not zeroed and *beta is 0 (write, =); when it
 * already holds a gradient *beta is 1 (accumulate, +=). */
float *ts__grad_fresh(ts_ctx *c, ts_tensor *t, float *beta);
/* For a backward whose input gradient equals its output gradient (add, reshape): when t has
 * no gradient yet (and is not a parameter), t's gradient becomes a header over n->out's
 * gradient buffer, without a copy, and 1 is returned; otherwise 0 and nothing changes (the
 * caller adds dy through ts__grad). A shared buffer is copy-on-write: ts__grad and
 * ts__grad_fresh give a holder its own copy before returning a pointer it may write, so no
 * holder ever sees another's writes. (tensor.c explains the bookkeeping.) */
int ts__grad_share(ts_ctx *c, ts_node *n, ts_tensor *t);
/* For a backward that computes t's gradient elementwise from dy = n->out->grad (dx[i] from
 * dy[i] and inputs only): like ts__grad_fresh, but when t has no gradient yet and nobody else
 * holds dy's buffer, the buffer returned is dy's own (*beta 0), so dx may be written over dy in
 * place, element i after dy[i] is read. Every other read of dy must come first. */
float *ts__grad_adopt(ts_ctx *c, ts_node *n, ts_tensor *t, float *beta);

/* ts_backward_with, with hook (when not NULL) called before (done 0) and after (done 1) each
 * node that the walk runs, for a profiler. */
void ts__backward_with_hook(ts_ctx *c, ts_tensor *y, const ts_tensor *dy,
                            void (*hook)(const ts_node *n, int done, void *user), void *user);

/* ts_backward, calling passed(pos, user) after the walk has passed tape position pos (nodes are
 * walked from the last position down to 0; pos is passed whether its node ran or had no
 * gradient to propagate). Once pos is passed, no later backward function adds to the gradient
 * of a tensor whose first use on the tape is at pos or after (core/buckets.c builds on this). */
void ts__backward_passing(ts_ctx *c, ts_tensor *loss, void (*passed)(int64_t pos, void *user),
                          void *user);

/* Where parameter i's data starts in each section of the parameter block (in floats); its
 * slot runs to the next parameter's offset (or the section's end): 64-byte padding included. */
size_t ts__params_offset(const ts_params *p, int i);

/* Internal allocation of a tensor header (no data) in the step arena. */
ts_tensor *ts__header(ts_ctx *c, ts_dtype dtype, int ndim, const int64_t *shape);

/* Product of shape[from..to). */
static inline int64_t ts__prod(const int64_t *shape, int from, int to) {
    int64_t p = 1;
    for (int i = from; i < to; i++) p *= shape[i];
    return p;
}

/* Abort with both shapes when a and b differ. */
void ts__check_same_shape(const char *op, const ts_tensor *a, const ts_tensor *b);
/* Abort unless t is a CPU f32 tensor. */
void ts__check_f32(const char *op, const ts_tensor *t);

/* Matmul kernel on raw pointers (row-major). Used by ops that need a product inside
 * (attention, conv). C = alpha * op(A) @ op(B) + beta * C.
 * Thread safety: in float32 precision it is dnnl_sgemm and may be called from inside an OpenMP
 * parallel region (it then runs on the calling thread). In bf16 precision it allocates in the
 * step arena and fills the context's primitive cache, so it must not be called from parallel
 * code: such callers pass a copy of the context with precision TS_PREC_F32. */
void ts__gemm(ts_ctx *c, int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha,
              const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
              int64_t ldc);

/* Scaled-dot-product attention straight on torch's packed in_proj output, for nn's MHA:
 * qkv (B, T, 3C) with columns [q | k | v], heads side by side in each (C = heads * D);
 * returns y (B, T, C), heads side by side. The same as slicing q, k, v out, permuting each to
 * (B, H, T, D), ts_attention and permuting back, without those copies. Records an ATTENTION
 * node whose input is qkv. key_pad, causal and scale as ts_attention. */
ts_tensor *ts__attention_packed(ts_ctx *c, const ts_tensor *qkv, int64_t heads, int causal,
                                const ts_tensor *key_pad, float scale);

/* Free the CPU backend's primitive cache of a context (called by ts_ctx_free). */
void ts__cpu_cache_free(void *cache);

#endif
