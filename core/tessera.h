/* tessera.h: the public core of tessera.
 *
 * Tensors, the two arenas (parameters and step), the context that every op takes first, the
 * autograd tape, the op functions, nn building blocks, optimizers and schedules, safetensors
 * checkpoints, recipes and the trainer loop. Everything here is usable from C11 alone; the CUDA
 * backend plugs in behind the same functions.
 *
 * What this header deliberately is not: a general array library. There are no strided views;
 * every tensor is contiguous, and an op that needs another layout materialises it (permute is
 * an op with a backward like any other).
 *
 * Shape letters used in comments: B batch, T tokens, C channels/width, H heads, D head width,
 * M/K/N matrix dims, V vocabulary, K classes where it is a loss.
 *
 * Errors: programming errors (a shape mismatch inside an op) stop with TS_CHECK, printing file
 * and line. Everything that comes from outside (files, recipes, data) returns a ts_status and
 * leaves a message in a ts_err that names the file, key or sample at fault.
 */
#ifndef TESSERA_H
#define TESSERA_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------------------------------- */
/* Status codes and errors                                                                  */

/* One table gives the codes and their messages, so the two cannot drift. */
#define TS_STATUS_LIST(X)                                                                    \
    X(TS_OK, "ok")                                                                           \
    X(TS_ERR_IO, "input/output error")                                                       \
    X(TS_ERR_FORMAT, "malformed file")                                                       \
    X(TS_ERR_MISMATCH, "does not match the model")                                           \
    X(TS_ERR_RECIPE, "invalid recipe")                                                       \
    X(TS_ERR_USAGE, "invalid usage")                                                         \
    X(TS_ERR_NOMEM, "out of memory")                                                         \
    X(TS_ERR_DATA, "invalid data")                                                           \
    X(TS_ERR_UNSUPPORTED, "not supported by this build")                                    \
    X(TS_ERR_INTERRUPTED, "interrupted")

typedef enum {
#define TS__STATUS_ENUM(name, msg) name,
    TS_STATUS_LIST(TS__STATUS_ENUM)
#undef TS__STATUS_ENUM
    TS_STATUS_COUNT
} ts_status;

/* The short message of a status code ("malformed file"). Never NULL. */
const char *ts_status_str(ts_status s);

/* The last error of an operation: its code and a message naming the file, key or sample. */
typedef struct ts_err {
    ts_status code;
    char msg[1024];
} ts_err;

/* Record an error in e (which may be NULL) and return code. printf-style message; its
 * arguments may include e->msg itself, to wrap an earlier error. */
ts_status ts_fail(ts_err *e, ts_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Stop the program with file:line and the message when cond is false (programming errors). */
#define TS_CHECK(cond, ...)                                                                  \
    do {                                                                                     \
        if (!(cond)) ts__check_failed(__FILE__, __LINE__, #cond, __VA_ARGS__);               \
    } while (0)
void ts__check_failed(const char *file, int line, const char *cond, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 4, 5)));

/* ---------------------------------------------------------------------------------------- */
/* Logging: the one global is the sink.                                                    */

typedef enum { TS_LOG_DEBUG, TS_LOG_INFO, TS_LOG_WARN, TS_LOG_ERROR } ts_log_level;
typedef void (*ts_log_sink)(ts_log_level level, const char *msg, void *user);
void ts_log_set_sink(ts_log_sink sink, void *user); /* NULL restores stderr */
void ts_log_set_level(ts_log_level min_level);
void ts_log(ts_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---------------------------------------------------------------------------------------- */
/* Dtypes, devices, tensors                                                                  */

typedef enum { TS_F32, TS_BF16, TS_F16, TS_I32, TS_I64, TS_U8, TS_DTYPE_COUNT } ts_dtype;
typedef enum { TS_CPU, TS_CUDA } ts_device;

size_t ts_dtype_size(ts_dtype t);
const char *ts_dtype_name(ts_dtype t);  /* safetensors spelling: "F32", "BF16", ... */
int ts_dtype_from_name(const char *name, ts_dtype *out); /* 0 on success */

#define TS_MAX_DIMS 6

typedef struct ts_node ts_node;
typedef struct ts_tensor ts_tensor;
typedef struct ts_recipe ts_recipe;

/* A contiguous tensor. Tensors made by ops live in the step arena of their context;
 * parameters live in the parameter arena. Nobody frees a tensor by itself. */
struct ts_tensor {
    ts_dtype dtype;
    ts_device device;
    int ndim;
    int64_t shape[TS_MAX_DIMS];
    int64_t numel;
    void *data;
    ts_tensor *grad;     /* same shape, f32; NULL until backward reaches it (params: preset) */
    ts_node *node;       /* the tape node that produced this tensor, NULL for leaves */
    int requires_grad;   /* leaves: set by the owner; op outputs: any input requires grad */
    const char *name;    /* dotted parameter name, NULL for activations */
};

static inline float *ts_f32(const ts_tensor *t) { return (float *)t->data; }
static inline int32_t *ts_i32(const ts_tensor *t) { return (int32_t *)t->data; }
static inline int64_t ts_dim(const ts_tensor *t, int i) { return t->shape[i < 0 ? t->ndim + i : i]; }

/* bf16 conversions (round to nearest even; NaN stays NaN). */
static inline uint16_t ts_f32_to_bf16(float f) {
    union { float f; uint32_t u; } v = { f };
    if ((v.u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((v.u >> 16) | 0x40u);
    uint32_t lsb = (v.u >> 16) & 1u;
    return (uint16_t)((v.u + 0x7fffu + lsb) >> 16);
}
static inline float ts_bf16_to_f32(uint16_t h) {
    union { uint32_t u; float f; } v = { (uint32_t)h << 16 };
    return v.f;
}

/* "(2, 3, 4)" into buf; returns buf. For error messages. */
const char *ts_shape_str(const ts_tensor *t, char *buf, size_t n);
int ts_same_shape(const ts_tensor *a, const ts_tensor *b);

/* ---------------------------------------------------------------------------------------- */
/* Arenas                                                                                   */

/* A bump allocator made of blocks. Allocations are 64-byte aligned. Reset keeps the memory;
 * after the first reset the blocks are merged into one block of the high-water size, so later
 * steps of the same shape never call malloc. Growth after that is logged once. */
typedef struct ts_arena ts_arena;
ts_arena *ts_arena_new(const char *name, size_t initial_bytes);
void ts_arena_free(ts_arena *a); /* NULL is a no-op */
void *ts_arena_alloc(ts_arena *a, size_t bytes);
void ts_arena_reset(ts_arena *a);
size_t ts_arena_used(const ts_arena *a);
size_t ts_arena_high_water(const ts_arena *a); /* peak bytes in use since creation */
size_t ts_arena_capacity(const ts_arena *a);
size_t ts_arena_mallocs(const ts_arena *a);   /* how many blocks were ever malloc'ed */

/* ---------------------------------------------------------------------------------------- */
/* RNG: a counter-based stream (splitmix64 seeding a xoshiro256**), saved in checkpoints.   */

typedef struct ts_rng { uint64_t s[4]; } ts_rng;
void ts_rng_seed(ts_rng *r, uint64_t seed);
uint64_t ts_rng_next(ts_rng *r);
float ts_rng_uniform(ts_rng *r);            /* [0, 1) */
float ts_rng_normal(ts_rng *r);             /* N(0, 1), Box-Muller */

/* ---------------------------------------------------------------------------------------- */
/* Context and tape                                                                          */

typedef enum { TS_PREC_F32, TS_PREC_BF16 } ts_precision;

typedef struct ts_tape {
    ts_node **nodes; /* in step arena */
    int64_t n, cap;
    void *spare;     /* gradient buffers that backward has finished with, for reuse */
} ts_tape;

/* Everything an op needs: where its outputs go, whether to record, which device, which RNG.
 * One context per model replica; none of it is global. */
typedef struct ts_ctx {
    ts_arena *step;        /* activations and temporaries of one step */
    ts_tape tape;
    ts_device device;
    ts_rng rng;            /* dropout, masking */
    int grad_enabled;      /* record ops on the tape */
    int training;          /* dropout, batch norm statistics, drop-path */
    int nthreads;          /* OpenMP threads for this context */
    ts_precision precision; /* matmul precision: f32, or bf16 inputs with f32 accumulation */
    ts_err err;
    void *cpu_cache;       /* the CPU backend's primitives, created once per shape */
    int rank, world;       /* this replica's place in a data-parallel run (0 of 1 alone) */
    struct ts_dist *dist;  /* its group of ranks (ts_all_gather), or NULL alone */
} ts_ctx;

/* Make a context with a step arena of initial_bytes (grows on the first step). */
ts_ctx *ts_ctx_new(ts_device device, size_t initial_bytes, uint64_t seed);
void ts_ctx_free(ts_ctx *c);
/* Drop every activation and the tape: call after the optimizer step and after inference. */
void ts_ctx_reset(ts_ctx *c);

/* A new uninitialised tensor in the step arena. */
ts_tensor *ts_new(ts_ctx *c, ts_dtype dtype, int ndim, const int64_t *shape);
ts_tensor *ts_new_f32(ts_ctx *c, int ndim, const int64_t *shape);
ts_tensor *ts_zeros(ts_ctx *c, ts_dtype dtype, int ndim, const int64_t *shape);
ts_tensor *ts_new_like(ts_ctx *c, const ts_tensor *t);
/* Shape helpers: ts_new_f32v(c, 3, (int64_t[]){B, T, C}) reads better with this macro: */
#define TS_SHAPE(...) ((const int64_t[]){ __VA_ARGS__ })
#define TS_NDIM(...) ((int)(sizeof((int64_t[]){ __VA_ARGS__ }) / sizeof(int64_t)))
/* Copy host data into a new f32 tensor in the step arena. */
ts_tensor *ts_from_f32(ts_ctx *c, int ndim, const int64_t *shape, const float *src);

/* Walk the tape from loss (a scalar) backwards, accumulating into every grad on the way.
 * Parameter grads accumulate across calls (gradient accumulation); zero them with
 * ts_params_zero_grad. loss must have been produced with grad enabled. The gradient of an op's
 * output is dead once the walk has passed the op that made it: its buffer is reused for later
 * gradients and out->grad is set to NULL. Only leaves (parameters, inputs) keep their grads. */
void ts_backward(ts_ctx *c, ts_tensor *loss);
/* The same walk from any tensor y with upstream gradient dy (same shape as y, f32). dy is read
 * in place during the walk, never written and not copied, so it must not be a gradient buffer
 * of the same graph; once the walk returns, no gradient refers to dy's data. */
void ts_backward_with(ts_ctx *c, ts_tensor *y, const ts_tensor *dy);

/* ---------------------------------------------------------------------------------------- */
/* Ops. Every op takes the context first, allocates its output in the step arena and, when
 * grad is enabled and an input requires grad, records a tape node. The op table (ts_op_*)
 * names every op once; tests check that each has a gradient-check row.                    */

#define TS_OP_LIST(X)                                                                        \
    X(MATMUL, "matmul")                                                                      \
    X(ADD, "add")                                                                            \
    X(SUB, "sub")                                                                            \
    X(MUL, "mul")                                                                            \
    X(SCALE, "scale")                                                                        \
    X(SUM, "sum")                                                                            \
    X(MEAN, "mean")                                                                          \
    X(RESHAPE, "reshape")                                                                    \
    X(PERMUTE, "permute")                                                                    \
    X(CONCAT, "concat")                                                                      \
    X(SLICE, "slice")                                                                        \
    X(EMBEDDING, "embedding")                                                                \
    X(INDEX_SELECT, "index_select")                                                          \
    X(LAYERNORM, "layernorm")                                                                \
    X(GELU, "gelu")                                                                          \
    X(GELU_TANH, "gelu_tanh")                                                                \
    X(BIAS_GELU, "bias_gelu")                                                                \
    X(QUICK_GELU, "quick_gelu")                                                              \
    X(MISH, "mish")                                                                          \
    X(SOFTMAX, "softmax")                                                                    \
    X(LOG_SOFTMAX, "log_softmax")                                                            \
    X(CROSS_ENTROPY, "cross_entropy")                                                        \
    X(BATCHNORM1D, "batchnorm1d")                                                            \
    X(ATTENTION, "attention")                                                                \
    X(DROPOUT, "dropout")                                                                    \
    X(L2_NORMALIZE, "l2_normalize")                                                          \
    X(CONV2D, "conv2d")                                                                      \
    X(DWCONV2D, "dwconv2d")                                                                  \
    X(RELU, "relu")                                                                          \
    X(DROP_PATH, "drop_path")                                                                \
    X(STRIPE_ATTENTION, "stripe_attention")                                                  \
    X(EXP, "exp")                                                                            \
    X(LOG_SIGMOID, "log_sigmoid")                                                            \
    X(ALL_GATHER, "all_gather")

typedef enum {
#define TS__OP_ENUM(name, str) TS_OP_##name,
    TS_OP_LIST(TS__OP_ENUM)
#undef TS__OP_ENUM
    TS_OP_COUNT
} ts_op;
const char *ts_op_name(ts_op op);

/* matmul flags */
enum { TS_TRANS_A = 1, TS_TRANS_B = 2 };

/* y = op(a) @ op(b) (+ bias).
 * a: (..., M, K) or (..., K, M) with TS_TRANS_A; b: (K, N), or (..., K, N) with the same leading
 * dims as a (batched); with TS_TRANS_B b is (N, K) / (..., N, K). bias: (N) or NULL.
 * Returns (..., M, N). Transposes go to the library; nothing is materialised. */
ts_tensor *ts_matmul(ts_ctx *c, const ts_tensor *a, const ts_tensor *b, int flags);
ts_tensor *ts_linear(ts_ctx *c, const ts_tensor *x, const ts_tensor *w, const ts_tensor *bias);
/* linear as torch.nn.functional.linear: x (..., K), w (N, K), bias (N) or NULL -> (..., N) */

/* Elementwise with broadcasting over leading dims: b's shape equals a trailing part of a's
 * shape (b may also be a one-element tensor). Output has a's shape. */
ts_tensor *ts_add(ts_ctx *c, const ts_tensor *a, const ts_tensor *b);
ts_tensor *ts_sub(ts_ctx *c, const ts_tensor *a, const ts_tensor *b);
ts_tensor *ts_mul(ts_ctx *c, const ts_tensor *a, const ts_tensor *b);
ts_tensor *ts_scale(ts_ctx *c, const ts_tensor *a, float s); /* s * a */
ts_tensor *ts_relu(ts_ctx *c, const ts_tensor *a);
ts_tensor *ts_exp(ts_ctx *c, const ts_tensor *a);         /* e^a */
ts_tensor *ts_log_sigmoid(ts_ctx *c, const ts_tensor *a); /* log(1 / (1 + e^-a)), stable */

/* Reductions. dim = -1 .. ndim-1 reduces that dim (kept out of the shape); TS_ALL reduces to a
 * scalar of shape (1). */
enum { TS_ALL = 1000 };
ts_tensor *ts_sum(ts_ctx *c, const ts_tensor *a, int dim);
ts_tensor *ts_mean(ts_ctx *c, const ts_tensor *a, int dim);

/* Shape ops. reshape keeps the data (numel must match; one -1 allowed). permute materialises
 * the new layout: perm[i] is the input dim that becomes output dim i. */
ts_tensor *ts_reshape(ts_ctx *c, const ts_tensor *a, int ndim, const int64_t *shape);
ts_tensor *ts_permute(ts_ctx *c, const ts_tensor *a, const int *perm);
ts_tensor *ts_transpose(ts_ctx *c, const ts_tensor *a, int d0, int d1);
ts_tensor *ts_concat(ts_ctx *c, ts_tensor *const *xs, int n, int dim);
ts_tensor *ts_slice(ts_ctx *c, const ts_tensor *a, int dim, int64_t start, int64_t end);

/* Embedding lookup: table (V, C), ids i32 of any shape (...) -> (..., C). */
ts_tensor *ts_embedding(ts_ctx *c, const ts_tensor *table, const ts_tensor *ids);
/* index_select along dim with i32 indices (n) -> a's shape with shape[dim] = n. */
ts_tensor *ts_index_select(ts_ctx *c, const ts_tensor *a, int dim, const ts_tensor *idx);

/* Layernorm over the last dim: x (..., C), w and b (C) or NULL. */
ts_tensor *ts_layernorm(ts_ctx *c, const ts_tensor *x, const ts_tensor *w, const ts_tensor *b,
                        float eps);
ts_tensor *ts_gelu(ts_ctx *c, const ts_tensor *x);       /* exact erf form */
ts_tensor *ts_gelu_tanh(ts_ctx *c, const ts_tensor *x);  /* tanh approximation */
ts_tensor *ts_bias_gelu(ts_ctx *c, const ts_tensor *x, const ts_tensor *bias); /* gelu(x+b) */
ts_tensor *ts_quick_gelu(ts_ctx *c, const ts_tensor *x); /* x * sigmoid(1.702 x) */
ts_tensor *ts_mish(ts_ctx *c, const ts_tensor *x);       /* x * tanh(softplus(x)) */
ts_tensor *ts_softmax(ts_ctx *c, const ts_tensor *x);     /* over the last dim */
ts_tensor *ts_log_softmax(ts_ctx *c, const ts_tensor *x); /* over the last dim */
/* Mean softmax cross-entropy of logits (N, K) against i32 targets (N); targets equal to
 * ignore_index are left out of the mean; label smoothing as torch defines it. Returns (1). */
ts_tensor *ts_cross_entropy(ts_ctx *c, const ts_tensor *logits, const ts_tensor *targets,
                            int ignore_index, float label_smoothing);
/* Batch norm over (N, C). In training mode uses batch statistics and updates running_mean and
 * running_var (unbiased) with momentum; in eval mode uses the running statistics. */
ts_tensor *ts_batchnorm1d(ts_ctx *c, const ts_tensor *x, const ts_tensor *w, const ts_tensor *b,
                          ts_tensor *running_mean, ts_tensor *running_var, float momentum,
                          float eps);
/* Scaled dot-product attention, one fused op. q (B, H, Tq, D), k and v (B, H, Tk, D).
 * causal: position i attends to j <= i. key_pad: NULL or u8/i32 (B, Tk), nonzero = padding
 * (masked out). scale <= 0 means 1/sqrt(D). Returns (B, H, Tq, D). */
ts_tensor *ts_attention(ts_ctx *c, const ts_tensor *q, const ts_tensor *k, const ts_tensor *v,
                        int causal, const ts_tensor *key_pad, float scale);
/* Cross-attention straight on the projections as linear layers give them: q (B, Tq, C) and
 * kv (B, Tk, 2C) with columns [k | v], heads side by side in each (C = heads * D); returns
 * (B, Tq, C), heads side by side. The same as splitting and permuting q, k, v to
 * (B, heads, T, D), ts_attention (not causal) and permuting back, without those copies.
 * key_pad and scale as ts_attention. */
ts_tensor *ts_attention_kv(ts_ctx *c, const ts_tensor *q, const ts_tensor *kv, int64_t heads,
                           const ts_tensor *key_pad, float scale);
/* CSWin's cross-shaped window attention with LePE, one fused op (gather windows, attend, add
 * LePE, scatter back). qkv (B, map_h * map_w, 3C) is a map's qkv projection, tokens row-major,
 * columns [q | k | v] with the heads side by side in each (C = heads * D). With sw > 0 (heads
 * even, sw dividing map_h and map_w), heads [0, heads/2) attend within stripes sw columns wide
 * spanning the full height and heads [heads/2, heads) within stripes sw rows high spanning the
 * full width (the official code's branches 0 and 1); with sw == 0 every head attends the whole
 * map. LePE adds a 3x3 depthwise convolution of v computed inside each window, with zero
 * padding at the window's edges: lepe_w (C, 1, 3, 3), lepe_b (C), either NULL (no LePE, or no
 * bias); the official get_v weights of the branches, stacked in channel order. scale <= 0 means
 * 1/sqrt(D). Returns (B, map_h * map_w, C), heads side by side. */
ts_tensor *ts_stripe_attention(ts_ctx *c, const ts_tensor *qkv, const ts_tensor *lepe_w,
                               const ts_tensor *lepe_b, int64_t map_h, int64_t map_w,
                               int64_t heads, int64_t sw, float scale);
/* Inverted dropout with probability p; identity when not training or p == 0. */
ts_tensor *ts_dropout(ts_ctx *c, const ts_tensor *x, float p);
/* The rows of x (n, ...) of every rank of c->dist, in rank order: (N, ...) with N the sum of the
 * ranks' n; alone, a copy of x. For losses that every rank computes over the gathered rows, as
 * open_clip's gather_with_grad: every rank holds the same dy, and the backward gives x this
 * rank's rows of dy times N / n, so that the trainer's sum of the ranks' gradients weighted by
 * their shares of the batch (n / N) is the gradient of one process with all N rows. A failed
 * collective ends the job (ts_dist_abort). */
ts_tensor *ts_all_gather(ts_ctx *c, const ts_tensor *x);
/* x / max(||x||_2, eps) over the last dim. */
ts_tensor *ts_l2_normalize(ts_ctx *c, const ts_tensor *x, float eps);
/* conv2d, NCHW: x (B, Cin, H, W), w (Cout, Cin, kh, kw), bias (Cout) or NULL. */
ts_tensor *ts_conv2d(ts_ctx *c, const ts_tensor *x, const ts_tensor *w, const ts_tensor *bias,
                     int stride, int padding);
/* depthwise conv2d, NCHW: x (B, C, H, W), w (C, 1, kh, kw), bias (C) or NULL. */
ts_tensor *ts_dwconv2d(ts_ctx *c, const ts_tensor *x, const ts_tensor *w, const ts_tensor *bias,
                       int stride, int padding);

/* ---------------------------------------------------------------------------------------- */
/* Parameters: one arena for data, gradients and optimizer state.                           */

typedef enum {
    TS_INIT_ZEROS, TS_INIT_ONES, TS_INIT_NORMAL, TS_INIT_UNIFORM, TS_INIT_CONST
} ts_init_kind;
typedef struct ts_init { ts_init_kind kind; float a, b; } ts_init; /* normal: std=a; uniform: [a,b) */
#define TS_INIT_N(std) ((ts_init){ TS_INIT_NORMAL, (std), 0.0f })
#define TS_INIT_U(lo, hi) ((ts_init){ TS_INIT_UNIFORM, (lo), (hi) })
#define TS_INIT_0 ((ts_init){ TS_INIT_ZEROS, 0.0f, 0.0f })
#define TS_INIT_1 ((ts_init){ TS_INIT_ONES, 0.0f, 0.0f })

/* Parameter flags */
enum {
    TS_PARAM_NO_DECAY = 1,  /* excluded from weight decay (norms, biases, embeddings) */
    TS_PARAM_BUFFER = 2,    /* not trained (running statistics): no grad, no optimizer */
    TS_PARAM_FROZEN = 4,    /* trainable in general but held fixed in this run (a frozen
                             * encoder): no grad is computed and the optimizer skips it */
    TS_PARAM_RUNNING = 8,   /* with TS_PARAM_BUFFER: a statistic that every rank updates from
                             * its own rows (batch norm's running mean and variance); the
                             * trainer averages it over the ranks after every step */
};

/* The set of parameters of a model. Modules register parameters (name, shape, init) while the
 * model is built; ts_params_finalize allocates one block for all data, grads and two optimizer
 * state slots, then initialises the data from the seed. Tensors returned by ts_param have no
 * data until finalize. */
typedef struct ts_params ts_params;
ts_params *ts_params_new(void);
void ts_params_free(ts_params *p);
ts_tensor *ts_param(ts_params *p, const char *name, int ndim, const int64_t *shape, ts_init init,
                    int flags);
/* Change the initialiser of a registered parameter before finalize: for a model that builds a
 * block from the shared nn init and then initialises some of its weights its own way. */
void ts_param_set_init(ts_params *p, const ts_tensor *t, ts_init init);
/* Change the flags of a registered parameter before finalize: for a task whose optimizer rule
 * is not the modules' (the CLIP task applies open_clip's weight-decay rule to every tensor).
 * TS_PARAM_BUFFER cannot be set or cleared this way (it decides whether a gradient exists). */
void ts_param_set_flags(ts_params *p, const ts_tensor *t, int flags);
ts_status ts_params_finalize(ts_params *p, uint64_t seed, ts_err *err);
int ts_params_count(const ts_params *p);
ts_tensor *ts_params_get(const ts_params *p, int i);
ts_tensor *ts_params_find(const ts_params *p, const char *name);
int ts_params_flags(const ts_params *p, int i);
float *ts_params_state(const ts_params *p, int i, int slot); /* slot 0/1: optimizer moments */
int64_t ts_params_numel(const ts_params *p, int trainable_only);
void ts_params_zero_grad(ts_params *p);
size_t ts_params_bytes(const ts_params *p);
/* The contiguous section of the parameter block that holds every parameter's data (section 0)
 * or gradient (section 1), padding included, and its length in floats into *n. One all-reduce
 * over the gradient section reduces every gradient at once. Valid after finalize. */
float *ts_params_section(const ts_params *p, int section, size_t *n);

/* Gradient buckets (core/buckets.c): the gradient section cut into contiguous slices of about
 * bucket_bytes, starting from the last registered parameter (the first whose gradients
 * backward finishes), so that each slice can be reduced across ranks while backward is still
 * computing the others, as PyTorch DDP's buckets are. A parameter never straddles two buckets;
 * padding goes with the parameter before it. Built once per model, after finalize. */
typedef struct ts_grad_buckets ts_grad_buckets;
ts_grad_buckets *ts_grad_buckets_new(const ts_params *p, size_t bucket_bytes);
void ts_grad_buckets_free(ts_grad_buckets *b); /* NULL is a no-op */
int ts_grad_buckets_count(const ts_grad_buckets *b);
/* Bucket k's slice of the gradient section: *n floats from the returned pointer. */
float *ts_grad_buckets_slice(const ts_grad_buckets *b, int k, int64_t *n);
/* ts_backward(c, loss) that hands each bucket to ready(k, grad, n, user) as soon as no later
 * part of the walk adds to any gradient in it (the walk has passed the first tape use of each
 * of its parameters), and calls poll(user) (may be NULL) after every tape position, so that a
 * caller's communication advances while backward computes. Buckets are handed over in order
 * 0, 1, 2... whatever the order in which they become final, so that every rank of a run starts
 * its reductions in the same order; each exactly once per call, the last ones when the walk
 * ends. What ready does with the slice must leave it alone until the caller waits for it. */
void ts_backward_buckets(ts_ctx *c, ts_tensor *loss, ts_grad_buckets *b,
                         void (*ready)(int k, float *grad, int64_t n, void *user),
                         void (*poll)(void *user), void *user);
/* A printf-style name builder for modules: ts_pname(buf, "%s.attn.in_proj_weight", prefix). */
const char *ts_pname(char *buf, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* ---------------------------------------------------------------------------------------- */
/* nn blocks (plain functions, no vtables)                                                  */

typedef enum { TS_ACT_GELU, TS_ACT_GELU_TANH, TS_ACT_QUICK_GELU, TS_ACT_RELU } ts_act;

typedef struct ts_nn_linear { ts_tensor *w; /* (out, in) */ ts_tensor *b; /* (out) or NULL */ } ts_nn_linear;
void ts_nn_linear_init(ts_nn_linear *m, ts_params *p, const char *prefix, int in, int out, int bias);
ts_tensor *ts_nn_linear_forward(ts_ctx *c, const ts_nn_linear *m, const ts_tensor *x);

typedef struct ts_nn_layernorm { ts_tensor *w, *b; /* (C) */ float eps; } ts_nn_layernorm;
void ts_nn_layernorm_init(ts_nn_layernorm *m, ts_params *p, const char *prefix, int dim, float eps);
ts_tensor *ts_nn_layernorm_forward(ts_ctx *c, const ts_nn_layernorm *m, const ts_tensor *x);

/* MLP as open_clip names it: c_fc (C -> hidden), activation, c_proj (hidden -> C). */
typedef struct ts_nn_mlp { ts_nn_linear fc, proj; ts_act act; } ts_nn_mlp;
void ts_nn_mlp_init(ts_nn_mlp *m, ts_params *p, const char *prefix, int dim, int hidden, ts_act act);
ts_tensor *ts_nn_mlp_forward(ts_ctx *c, const ts_nn_mlp *m, const ts_tensor *x);

/* Multi-head attention with the packed projection of torch.nn.MultiheadAttention:
 * in_proj_weight (3C, C), in_proj_bias (3C), out_proj.weight (C, C), out_proj.bias (C). */
typedef struct ts_nn_mha {
    ts_tensor *in_w, *in_b;
    ts_nn_linear out;
    int dim, heads;
} ts_nn_mha;
void ts_nn_mha_init(ts_nn_mha *m, ts_params *p, const char *prefix, int dim, int heads);
/* x (B, T, C) self-attention; key_pad NULL or (B, T) nonzero = padding. */
ts_tensor *ts_nn_mha_forward(ts_ctx *c, const ts_nn_mha *m, const ts_tensor *x, int causal,
                             const ts_tensor *key_pad);

/* Pre-norm transformer block (open_clip's ResidualAttentionBlock):
 * x = x + drop_path(attn(ln_1(x))); x = x + drop_path(mlp(ln_2(x))). */
typedef struct ts_nn_block {
    ts_nn_layernorm ln_1, ln_2;
    ts_nn_mha attn;
    ts_nn_mlp mlp;
    float drop_path;
} ts_nn_block;
void ts_nn_block_init(ts_nn_block *m, ts_params *p, const char *prefix, int dim, int heads,
                      float mlp_ratio, ts_act act, float ln_eps, float drop_path);
ts_tensor *ts_nn_block_forward(ts_ctx *c, const ts_nn_block *m, const ts_tensor *x, int causal,
                               const ts_tensor *key_pad);
/* Stochastic depth per sample: in training, zero a sample's branch with probability p and
 * scale survivors by 1/(1-p). x (B, ...). */
ts_tensor *ts_nn_drop_path(ts_ctx *c, const ts_tensor *x, float p);

/* Positional embeddings (fixed tables written into out, row-major). */
void ts_pos_embed_sincos_1d(float *out /* (T, C) */, int T, int C);
void ts_pos_embed_sincos_2d(float *out /* (gh*gw, C) */, int gh, int gw, int C, int cls_token);

/* ---------------------------------------------------------------------------------------- */
/* Optimizers and schedules                                                                  */

typedef enum { TS_OPTIM_ADAMW, TS_OPTIM_SGD } ts_optim_kind;
typedef struct ts_optim_cfg {
    ts_optim_kind kind;
    float lr, beta1, beta2, eps, weight_decay, momentum;
} ts_optim_cfg;
typedef struct ts_optim {
    ts_optim_cfg cfg;
    int64_t t; /* steps taken */
} ts_optim;
void ts_optim_init(ts_optim *o, const ts_optim_cfg *cfg);
/* One update of every trainable parameter with learning rate lr. Decay is skipped for
 * parameters flagged TS_PARAM_NO_DECAY. */
void ts_optim_step(ts_optim *o, ts_params *p, float lr);
/* Scale all grads so their global L2 norm is at most max_norm; returns the norm before. */
float ts_clip_grad_norm(ts_params *p, float max_norm);

typedef enum { TS_SCHED_CONSTANT, TS_SCHED_COSINE, TS_SCHED_LINEAR } ts_sched_kind;
typedef struct ts_sched {
    ts_sched_kind kind;
    float base_lr, min_lr;
    int64_t warmup, total;
} ts_sched;
/* LR at step (0-based): linear warmup from base_lr/warmup, then constant / cosine / linear decay
 * to min_lr at total. */
float ts_sched_lr(const ts_sched *s, int64_t step);

/* ---------------------------------------------------------------------------------------- */
/* safetensors                                                                               */

/* A read safetensors file: its tensors by name, metadata strings. Data is owned by the file. */
typedef struct ts_st_file ts_st_file;
typedef struct ts_st_entry {
    const char *name;
    ts_dtype dtype;
    int ndim;
    int64_t shape[TS_MAX_DIMS];
    const void *data;
    size_t nbytes;
} ts_st_entry;
ts_status ts_st_read(const char *path, ts_st_file **out, ts_err *err);
void ts_st_close(ts_st_file *f);
int ts_st_count(const ts_st_file *f);
const ts_st_entry *ts_st_get(const ts_st_file *f, int i);
const ts_st_entry *ts_st_find(const ts_st_file *f, const char *name);
const char *ts_st_meta(const ts_st_file *f, const char *key); /* NULL when absent */
/* Convert an F32, BF16 or F16 entry to float32 into dst (numel floats). Entry data is packed,
 * not aligned, so this is the way to read it. */
void ts_st_entry_to_f32(const ts_st_entry *e, float *dst);
/* Check that f holds each of the n tensors t[i] by name, with a float dtype (F32, BF16, F16)
 * and t[i]'s shape, or a shape that accept (may be NULL) takes for t[i]. Each problem appends
 * "\n  NAME: why (model SHAPE, file SHAPE)" to msg (cap bytes, always NUL-terminated). Returns
 * the number of problems; a loader copies nothing unless it is 0. */
int ts_st_check(const ts_st_file *f, ts_tensor *const *t, int n,
                int (*accept)(const ts_tensor *t, const ts_st_entry *e, void *user), void *user,
                char *msg, size_t cap);

/* Writing: collect entries, then write atomically (temporary file, fsync, rename). The data
 * pointers must stay valid until ts_st_write returns. */
typedef struct ts_st_writer ts_st_writer;
ts_st_writer *ts_st_writer_new(void);
void ts_st_writer_free(ts_st_writer *w);
void ts_st_writer_add(ts_st_writer *w, const char *name, ts_dtype dtype, int ndim,
                      const int64_t *shape, const void *data);
void ts_st_writer_meta(ts_st_writer *w, const char *key, const char *value);
ts_status ts_st_write(ts_st_writer *w, const char *path, ts_err *err);

/* Write a file atomically: data to path.tmp.PID, fsync, rename over path, fsync the folder. */
ts_status ts_write_atomic(const char *path, const void *data, size_t n, ts_err *err);

/* Create the folder dir and the parents it lacks (mkdir -p). An error (TS_ERR_IO) names the
 * first part that could not be made ("cannot create PART: reason"), or says that dir exists
 * and is not a folder. */
ts_status ts_mkdirs(const char *dir, ts_err *err);

/* ---------------------------------------------------------------------------------------- */
/* Checkpoints                                                                               */

/* A run directory holds checkpoints/step_NNNNNNNN/ folders, each with model.safetensors (every
 * parameter and buffer by name, metadata "tessera.format": "1"), optim.safetensors (moments by
 * parameter name, "NAME.exp_avg", "NAME.exp_avg_sq" or "NAME.momentum_buffer"), state.json (step,
 * RNG, data position) and recipe.yaml (the resolved recipe), and checkpoints/latest naming the
 * newest complete one. A checkpoint is written into a temporary folder, every file fsync'ed, the
 * folder renamed into place and only then latest replaced (atomically), so a crash at any moment
 * leaves the previous checkpoint whole. Older checkpoints beyond keep are removed. */
typedef struct ts_ckpt_meta { const char *key, *value; } ts_ckpt_meta;
ts_status ts_ckpt_save(const char *run_dir, int64_t step, const ts_params *p, const ts_optim *o,
                       const char *state_json, const char *recipe_yaml, const ts_ckpt_meta *meta,
                       int nmeta, int keep, ts_err *err);
/* The folder of the newest complete checkpoint of run_dir (or run_dir itself when it is a
 * checkpoint folder) into out. TS_ERR_IO when there is none. */
ts_status ts_ckpt_find(const char *dir, char *out, size_t n, ts_err *err);
/* Load parameters by name from a safetensors file. Every parameter must be present with the same
 * shape (F32, BF16 or F16 in the file); unexpected tensors are errors too unless allow_extra.
 * Every mismatch is reported by name in one message; nothing is changed when any is found. */
ts_status ts_ckpt_load_model(ts_params *p, const char *path, int allow_extra, ts_err *err);
ts_status ts_ckpt_load_optim(ts_params *p, ts_optim *o, const char *path, ts_err *err);
/* Fine-tuning: load from a safetensors file (or the model.safetensors of a run or checkpoint
 * folder) every parameter of p that the file has under the same name with the same shape;
 * the others keep their initial values, and so do those whose names start with one of
 * keep_prefixes (NULL-terminated, or NULL: none), e.g. the new data's statistics. The report lists the names, one per line: loaded
 * (in the file and the model), fresh (in the model only, or of another shape in the file:
 * the shapes are given) and ignored (in the file only). Each list is malloc'ed text (freed by
 * ts_ckpt_match_free); the counts are exact. */
typedef struct ts_ckpt_match {
    int loaded, fresh, ignored;
    char *loaded_names, *fresh_names, *ignored_names;
    char file[4096];  /* the safetensors file that was read */
} ts_ckpt_match;
ts_status ts_ckpt_load_matching(ts_params *p, const char *path, const char *const *keep_prefixes,
                                ts_ckpt_match *m, ts_err *err);
void ts_ckpt_match_free(ts_ckpt_match *m);
/* Read a whole text file (malloc'ed, NUL-terminated). */
ts_status ts_read_text(const char *path, char **out, ts_err *err);

/* ---------------------------------------------------------------------------------------- */
/* Processes of a data-parallel run (core/dist.c)                                           */

/* The group of processes that train one model, one rank each. Built with MPI and started by a
 * launcher (mpirun, srun), ts_dist_init joins the MPI job; otherwise the group is this process
 * alone (rank 0 of 1) and every collective returns at once. Caller-owned: init, then finalize.
 * Passing NULL where a ts_dist is expected means a group of one. */
typedef struct ts_dist {
    int rank, world;              /* this process and the group size */
    int local_rank, local_world;  /* the same among the ranks on this machine */
    double timeout_s;             /* a collective that takes longer aborts the job (0: never) */
    double comm_s;                /* seconds spent waiting in collectives since init */
    int initialized;              /* MPI was initialised by ts_dist_init */
    void *pending;                /* private: nonblocking all-reduces in flight */
    int npending, cap_pending;
} ts_dist;

/* 1 when this build has MPI. */
int ts_dist_available(void);
/* Join the job a launcher started, or make a group of one. TESSERA_MPI=1 forces MPI_Init
 * (a singleton run), TESSERA_MPI=0 forbids it. TS_ERR_UNSUPPORTED when a launcher started
 * several processes but the build has no MPI (they would all train alone). */
ts_status ts_dist_init(ts_dist *d, int *argc, char ***argv, ts_err *err);
void ts_dist_finalize(ts_dist *d); /* NULL and a group of one are no-ops */
int ts_dist_rank(const ts_dist *d);  /* 0 for NULL */
int ts_dist_world(const ts_dist *d); /* 1 for NULL */
/* In-place sums over all ranks: afterwards every rank holds the same n values. */
ts_status ts_dist_allreduce_sum_f32(ts_dist *d, float *buf, int64_t n, ts_err *err);
ts_status ts_dist_allreduce_sum_f64(ts_dist *d, double *buf, int64_t n, ts_err *err);
/* The same sum started without waiting, for overlapping it with computation: buf must be left
 * alone until ts_dist_wait returns. ts_dist_progress lets the reductions in flight advance
 * (MPI moves the data of a nonblocking collective only inside its calls) and returns at once,
 * ending the job (ts_dist_abort) if one failed; ts_dist_wait waits for all of them, against the
 * collective timeout like every collective (what names them in its message). Started
 * reductions must be waited for before any other collective, and every rank must start the
 * same reductions in the same order. */
ts_status ts_dist_allreduce_start_f32(ts_dist *d, float *buf, int64_t n, ts_err *err);
void ts_dist_progress(ts_dist *d);
ts_status ts_dist_wait(ts_dist *d, const char *what, ts_err *err);
/* Every rank's n floats, in rank order, into recv (the sum of all ranks' n); counts (world)
 * receives each rank's n when not NULL. Ranks may give different n. With recv NULL only the
 * counts are gathered. */
ts_status ts_dist_allgather_f32(ts_dist *d, const float *send, int64_t n, float *recv,
                                int64_t *counts, ts_err *err);
/* Copy bytes from rank root's buf into every other rank's buf. */
ts_status ts_dist_broadcast(ts_dist *d, void *buf, size_t bytes, int root, ts_err *err);
/* Wait until every rank arrives; what names the wait in a timeout message. */
ts_status ts_dist_barrier(ts_dist *d, const char *what, ts_err *err);
/* Print "tessera: error: rank R: MESSAGE" and end the whole job (MPI_Abort) with code. Called
 * when a collective times out: the other ranks died or hang, so nothing can be undone. */
void ts_dist_abort(ts_dist *d, int code, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 3, 4)));

/* ---------------------------------------------------------------------------------------- */
/* The trainer                                                                               */

/* Named scalars of one step or one evaluation (loss, accuracy, ...). */
#define TS_METRICS_MAX 16
typedef struct ts_metrics {
    int n;
    const char *name[TS_METRICS_MAX]; /* static strings */
    double value[TS_METRICS_MAX];
} ts_metrics;
void ts_metrics_set(ts_metrics *m, const char *name, double value);

/* ---------------------------------------------------------------------------------------- */
/* Batches, encoders and objectives: the two plug-in points of a model                       */

/* One micro-batch as the encoders see it. Tensors live in the step arena. */
typedef struct ts_batch {
    int64_t n;             /* samples */
    ts_tensor *images;     /* (n, 3, H, W) f32, or NULL */
    ts_tensor *text;       /* (n, L) i32 token ids, or NULL */
    const int64_t *labels; /* (n), or NULL */
    const int64_t *index;  /* (n) each sample's position in its data stream, or NULL */
    ts_tensor *actions;    /* (n, H, A) f32 normalised action chunks, or NULL */
    ts_tensor *action_mask; /* (n, A) f32 1/0: the action dimensions a sample has, or NULL */
} ts_batch;

/* An encoder: one modality of a batch -> a pooled embedding (n, out_dim), and with tokens_out
 * not NULL its token sequence. cli/factory.c builds them from a recipe's `type:`. */
typedef struct ts_encoder ts_encoder;
struct ts_encoder {
    const char *type; /* "vit", "cswin", "text", ... */
    int out_dim;      /* width of the pooled embedding */
    ts_tensor *(*forward)(ts_ctx *c, ts_encoder *e, const ts_batch *b, ts_tensor **tokens_out);
    void (*free)(ts_encoder *e);
    void *impl;
};
void ts_encoder_free(ts_encoder *e); /* NULL is a no-op */

/* What the encoders produced for one micro-batch, as the objectives read it. */
typedef struct ts_embeds {
    const ts_batch *batch;
    ts_tensor *image, *text; /* pooled embeddings (n, E) before normalisation, or NULL */
    ts_tensor *tokens;       /* observation tokens (n, T, C) for an action head, or NULL */
} ts_embeds;

/* An objective: embeddings -> a scalar loss (1), with its own parameters (a logit scale,
 * projection heads) registered when it is made. A recipe may combine several with weights; the
 * task sums weight * loss. after_step (optional) runs after every optimizer step. */
typedef struct ts_objective ts_objective;
struct ts_objective {
    const char *type; /* "clip", "siglip", "protoclip", ... */
    float weight;
    ts_tensor *(*loss)(ts_ctx *c, ts_objective *o, const ts_embeds *e, ts_metrics *m);
    void (*after_step)(ts_objective *o);
    void (*free)(ts_objective *o);
    void *impl;
};
void ts_objective_free(ts_objective *o); /* NULL is a no-op */

/* CLIP's contrastive objectives (core/objectives/clip.c), as open_clip's ClipLoss and
 * SigLipLoss compute them. Both L2-normalise the embeddings (eps 1e-12, F.normalize) and scale
 * the similarities by exp(logit_scale), a learned scalar named "logit_scale" (shape (), as
 * open_clip's state_dict has it).
 *   clip:   logits = exp(s) * img @ txt^T; loss = (CE(logits, i) + CE(logits^T, i)) / 2 with
 *           targets i = 0..n-1; after each optimizer step s is clamped to [0, log(max_scale)]
 *           as open_clip's training loop does.
 *   siglip: logits = exp(s) * img @ txt^T + b with a learned "logit_bias" (shape ());
 *           loss = -sum(log_sigmoid(z * logits)) / n with z = 1 on the diagonal, -1 elsewhere.
 * In a run of several ranks (c->dist) both embeddings are gathered from every rank first
 * (ts_all_gather) and the loss is over the global batch, as open_clip's gather_with_grad. */
typedef struct ts_clip_cfg {
    int siglip;             /* 0: InfoNCE (clip), 1: sigmoid (siglip) */
    float init_logit_scale; /* clip: log(1 / 0.07); siglip: log(10) */
    float init_logit_bias;  /* siglip: -10 */
    float max_logit_scale;  /* clip: 100 (the clamp of log-scale at log(100)); 0: no clamp */
} ts_clip_cfg;
/* open_clip's defaults for clip (siglip = 0) or siglip (1). */
ts_clip_cfg ts_clip_cfg_default(int siglip);
/* Register the objective's parameters in p (before ts_params_finalize) and make it. */
ts_objective *ts_objective_clip_new(ts_params *p, const ts_clip_cfg *cfg, float weight);
/* The losses as plain functions of tensors: img and txt (n, E) raw embeddings, logit_scale
 * and logit_bias one-element tensors (log-scale and bias). Record on the tape like any op. */
ts_tensor *ts_clip_loss(ts_ctx *c, const ts_tensor *img, const ts_tensor *txt,
                        const ts_tensor *logit_scale);
ts_tensor *ts_siglip_loss(ts_ctx *c, const ts_tensor *img, const ts_tensor *txt,
                          const ts_tensor *logit_scale, const ts_tensor *logit_bias);

/* k-means (core/kmeans.c) of x (n, d) into k clusters (1 <= k <= n), as faiss's Clustering
 * with its defaults does it: k distinct random points start (or k-means++ seeding), iters
 * rounds of assigning each point to its nearest centroid (squared L2, ties to the lower index)
 * and moving each centroid to the mean of its points, no normalisation; a centroid left empty
 * takes over half of a larger cluster (faiss's split: a copy of that centroid, the two nudged
 * apart by 1/1024 of their coordinates); beyond 256 points per centroid the rounds run on a
 * random subset of 256 k points. Then every point's label is its nearest final centroid. The
 * same seed gives the same centroids (k, d) and labels (n) on any number of threads. Returns
 * the sum of the squared distances of the points to their centroids. */
typedef enum {
    TS_KMEANS_RANDOM,   /* faiss's seeding: k distinct points drawn at random */
    TS_KMEANS_PLUSPLUS, /* k-means++: each next seed drawn by squared distance to the nearest */
} ts_kmeans_init;
typedef struct ts_kmeans_cfg {
    int64_t k;           /* clusters */
    int iters;           /* rounds (faiss.Kmeans' niter) */
    ts_kmeans_init init;
    uint64_t seed;
    int nthreads;        /* OpenMP threads; 0: OpenMP's default */
} ts_kmeans_cfg;
double ts_kmeans(const float *x, int64_t n, int64_t d, const ts_kmeans_cfg *cfg,
                 float *centroids, int32_t *labels);

/* Read a 2-D NumPy .npy file of float32, float16 or float64 (little-endian, C order) into a
 * malloc'ed float32 array (*rows x *cols, the caller frees). Errors name the file: TS_ERR_IO,
 * TS_ERR_FORMAT (not .npy, truncated, not 2-D), TS_ERR_UNSUPPORTED (another dtype,
 * big-endian, Fortran order). */
ts_status ts_npy_read_f32(const char *path, float **out, int64_t *rows, int64_t *cols,
                          ts_err *err);

/* ProtoCLIP's prototype objective (core/objectives/protoclip.c), as "Prototypical Contrastive
 * Language Image Pretraining" (Chen et al.) and its official code (megvii-research/protoclip)
 * define it. The paper's total loss is w_clip * L_clip + w_proto * (L_i2t + L_t2i) / 2 +
 * w_external * (L_i2e + L_t2e) / 2; the first term is the clip objective above, which the task
 * combines with this one, and this objective computes the other two with their weights.
 *
 * Each modality has a projection head (ts_protoclip_head below) from its raw pooled embedding
 * (n, E) to L2-normalised features f (n, proj_dim). Parameters, named as the official
 * state_dict names them: "image_projection_head.0.weight", ".0.bias", ".1.weight", ".1.bias",
 * ".1.running_mean", ".1.running_var" (buffers), ".3.weight", ".3.bias", the same under
 * "text_projection_head", and "logit_scale_proto" (shape (), a log-scale initialised to
 * log(1/0.07) and clamped to [0, log(max_logit_scale)] after every optimizer step, as the
 * official loop clamps it). All of them are excluded from weight decay, as the official
 * optimizer groups exclude "projection_head" and "logit_scale". Not kept: BatchNorm's
 * num_batches_tracked (an integer that momentum 0.1 never reads), and the official code's
 * image head starting as a copy of the text head: here each head draws its own weights.
 *
 * Episodes. At the start of each one the task runs the encoders without grad over the
 * episode's n samples and hands their raw embeddings to ts_protoclip_episode, which projects
 * them with the heads in eval mode (the official feature extraction runs model.eval()),
 * clusters each modality by k-means (ts_kmeans) into K teacher prototypes (the centroids, not
 * normalised, as faiss.Kmeans leaves them), keeps each sample's cluster label by its episode
 * position, and builds the student prototypes by Prototype Back Translation (PBT): the image
 * student prototypes C_img<-txt are the means of the image features grouped by the text
 * labels (ts_protoclip_pbt), and the other way round. Then in every batch, with
 * s = exp(logit_scale_proto) and p = batch->index[i] sample i's position in the episode:
 *   L_i2t = softCE(s f_img @ C_img<-txt^T, softmax(C_txt[lab_txt[p]] @ C_txt^T / T))
 *   L_t2i = softCE(s f_txt @ C_txt<-img^T, softmax(C_img[lab_img[p]] @ C_img^T / T))
 * with softCE(z, q) = mean over samples of -sum_k q_k log softmax(z)_k. An external teacher
 * (precomputed features of the episode's samples, e.g. RoBERTa text features) is clustered
 * too and its labels translated into both spaces; its losses use hard labels, as the official
 * loop calls them with no teacher temperature:
 *   L_i2e = CE(s f_img @ C_img<-ext^T, lab_ext[p]),
 *   L_t2e = CE(s f_txt @ C_txt<-ext^T, lab_ext[p]).
 * In a run of several ranks each rank's loss is over its own samples; every rank must call
 * ts_protoclip_episode with the same episode and seed (k-means is deterministic, whatever the
 * thread count, so all ranks get the same prototypes). */
#define TS_PROTOCLIP_MAX_LAYERS 4
typedef struct ts_protoclip_cfg {
    int64_t k;                  /* prototypes per modality (20000); an episode needs n >= k */
    int kmeans_iters;           /* k-means iterations (20) */
    int kmeans_redo;            /* k-means runs from different seeds, the lowest error kept (1) */
    ts_kmeans_init kmeans_init; /* seeding (TS_KMEANS_RANDOM: faiss's, as the official code) */
    int proj_dim;               /* width of the projected features (128) */
    int hidden_dim;             /* hidden width of the heads (2048) */
    int proj_layers;            /* Linear-BatchNorm1d-ReLU blocks before the last Linear (1);
                                 * 0: the head is one Linear; at most TS_PROTOCLIP_MAX_LAYERS */
    float target_temperature;   /* T of the teacher's softmax (0.01); <= 0: hard labels */
    float init_logit_scale;     /* initial logit_scale_proto: log(1 / 0.07) */
    float max_logit_scale;      /* clamp of exp(logit_scale_proto) (100); 0: no clamp */
    float w_proto;              /* weight of (L_i2t + L_t2i) / 2 (1) */
    float w_external;           /* weight of (L_i2e + L_t2e) / 2 when a teacher is given (1) */
    int pbt;                    /* 1: PBT student prototypes; 0: the other modality's centroids
                                 * (the official code without --PBT; no external teacher then) */
} ts_protoclip_cfg;
/* The defaults of the official ProtoCLIP runs (README: --k 20000 --kmeans-max-iter 20
 * --projection-dim 128 --target-temperature 0.01 --PBT --w-proto 1 --w-proto-external 1;
 * hidden width 2048, one block and one k-means run as its argument defaults). */
ts_protoclip_cfg ts_protoclip_cfg_default(void);
/* Register the heads (image_dim and text_dim wide inputs) and logit_scale_proto in p (before
 * ts_params_finalize) and make the objective. Its loss() needs e->image, e->text and
 * e->batch->index (positions in the current episode) and aborts before the first episode. */
ts_objective *ts_objective_protoclip_new(ts_params *p, const ts_protoclip_cfg *cfg,
                                         int image_dim, int text_dim, float weight);
/* Start an episode: img (n, image_dim) and txt (n, text_dim) are the raw pooled embeddings of
 * the episode's samples in episode order; ext (n, ext_dim) the external teacher's features of
 * the same samples, or NULL. Projects, clusters (seeded by seed) and builds the prototypes as
 * described above; NaNs in the projected features become 0 as the official code does. Uses
 * c's thread count and precision, not its step arena. Errors: TS_ERR_USAGE when n < k (naming
 * both), TS_ERR_DATA when ext holds a NaN or an infinity. */
ts_status ts_protoclip_episode(ts_objective *o, ts_ctx *c, const float *img, const float *txt,
                               int64_t n, const float *ext, int64_t ext_dim, uint64_t seed,
                               ts_err *err);
/* The cluster labels (n) of the current episode, by position: which 0 image, 1 text,
 * 2 external teacher. NULL before the first episode (or without a teacher). */
const int32_t *ts_protoclip_labels(const ts_objective *o, int which, int64_t *n);
/* The prototypes (k, width) of the current episode: which 0 image, 1 text, 2 external teacher
 * (the centroids), 3 image from text, 4 text from image, 5 image from the teacher, 6 text from
 * the teacher (the PBT students). NULL when absent; *width gets the row width. */
const float *ts_protoclip_prototypes(const ts_objective *o, int which, int64_t *width);

/* A projection head: Linear(E, hidden) - BatchNorm1d(hidden) - ReLU, layers times, then
 * Linear(hidden, out), all with biases, output L2-normalised (eps 1e-12) over the last dim.
 * Parameter names PREFIX.{3l}.weight/bias (the Linears), PREFIX.{3l+1}.weight/bias/
 * running_mean/running_var (the norms; eps 1e-5, momentum 0.1, batch statistics when
 * c->training), as torch numbers an nn.Sequential; initialised as torch's defaults. */
typedef struct ts_protoclip_head {
    int layers;
    ts_nn_linear fc[TS_PROTOCLIP_MAX_LAYERS + 1]; /* (hidden, in) ... last (out, hidden) */
    ts_tensor *bn_w[TS_PROTOCLIP_MAX_LAYERS], *bn_b[TS_PROTOCLIP_MAX_LAYERS];       /* (hidden) */
    ts_tensor *bn_mean[TS_PROTOCLIP_MAX_LAYERS], *bn_var[TS_PROTOCLIP_MAX_LAYERS]; /* (hidden) */
} ts_protoclip_head;
void ts_protoclip_head_init(ts_protoclip_head *h, ts_params *p, const char *prefix, int in,
                            int hidden, int out, int layers);
/* x (n, in) -> normalised features (n, out). */
ts_tensor *ts_protoclip_head_forward(ts_ctx *c, const ts_protoclip_head *h, const ts_tensor *x);
/* The prototype loss as a plain function, recorded on the tape: f (B, D) student features,
 * c_student (K, D) and c_teacher (K, D') prototypes (constants), labels (B) i32 teacher
 * cluster labels, logit_scale a one-element log-scale. With temperature > 0 the soft
 * cross-entropy of exp(logit_scale) f @ c_student^T against softmax(c_teacher[labels] @
 * c_teacher^T / temperature); otherwise the cross-entropy against labels (c_teacher unused,
 * may be NULL). Returns (1). */
ts_tensor *ts_protoclip_proto_loss(ts_ctx *c, const ts_tensor *f, const ts_tensor *c_student,
                                   const ts_tensor *c_teacher, const ts_tensor *labels,
                                   const ts_tensor *logit_scale, float temperature);
/* Prototype Back Translation: out (k, d) row j = mean of the rows of feat (n, d) whose label
 * is j, zero for a label that no row has. labels in [0, k). */
void ts_protoclip_pbt(const float *feat, const int32_t *labels, int64_t n, int64_t d, int64_t k,
                      float *out);

/* What the trainer trains: parameters, a deterministic data stream and a loss. The trainer knows
 * nothing else of the model. loss() builds micro-batch number pos of the stream (the same pos
 * gives the same batch, which is what makes resuming exact), runs the model and returns a scalar;
 * NULL with err set on a data error. eval() (optional) fills metrics with grad disabled.
 * Data parallelism: batch_size is the global batch. In a run of c->world ranks, loss() should
 * build only samples [rank*B/world, (rank+1)*B/world) of global batch pos (rank = c->rank) and
 * return their mean loss; the trainer weights each rank's gradient by its share. A task that
 * builds the whole batch on every rank gets the same result, only without the speed-up. */
typedef struct ts_task ts_task;
struct ts_optim_recipe;
struct ts_task {
    const char *type;
    ts_params *params;
    int64_t batch_size;   /* samples per micro-batch */
    ts_tensor *(*loss)(ts_task *t, ts_ctx *c, int64_t pos, ts_metrics *m, ts_err *err);
    ts_status (*eval)(ts_task *t, ts_ctx *c, ts_metrics *m, ts_err *err);
    void (*free)(ts_task *t);
    void *impl;
    /* Optional (NULL: none). after_step runs after every optimizer step (open_clip clamps its
     * logit scale there). A task that reads a data stream (files through loaders/) saves where
     * the stream stands with every checkpoint: data_state writes up to 8 numbers and returns
     * their count; data_seek gets them back on resume, before the first loss(). */
    void (*after_step)(ts_task *t);
    int (*data_state)(ts_task *t, int64_t v[8]);
    ts_status (*data_seek)(ts_task *t, const int64_t *v, int n, ts_err *err);
    /* Optional: training on the CUDA device (train.device: cuda), for a task whose model has
     * an implementation there. device_open builds it from params and their AdamW moments (a
     * resumed run's, or zeros), or says which recipe key keeps this run off the device; bf16
     * picks bf16 products. device_step reads the next micro-batch and runs forward, backward
     * and AdamW step `step` (1, 2, ...) at rate lr there, and the task's after_step rule;
     * loss gets the batch's loss. device_sync copies the parameters and moments back into
     * params (before an evaluation or a checkpoint); device_close frees the device.
     * device_check says what device_open would refuse in the recipe, without a device
     * (tessera train --check). */
    ts_status (*device_open)(ts_task *t, ts_recipe *r, const struct ts_optim_recipe *oc,
                             int bf16, ts_err *err);
    ts_status (*device_check)(ts_task *t, ts_recipe *r, ts_err *err);
    ts_status (*device_step)(ts_task *t, int64_t step, float lr, float *loss, ts_metrics *m,
                             ts_err *err);
    ts_status (*device_sync)(ts_task *t, ts_err *err);
    void (*device_close)(ts_task *t);
};

typedef struct ts_train_cfg {
    int64_t steps, accum, log_every, eval_every, ckpt_every, keep, seed, threads;
    const char *out_dir;
    int precision;     /* 0 f32, 1 bf16 */
    int device;        /* 0 cpu, 1 cuda */
    int deterministic;
    double collective_timeout_s; /* several ranks: a collective waits at most this long */
    int overlap_allreduce;       /* several ranks: reduce gradient buckets during backward */
    double bucket_mib;           /* the size of those buckets */
} ts_train_cfg;
typedef struct ts_optim_recipe {
    int name;          /* 0 adamw, 1 sgd */
    double lr, min_lr, beta1, beta2, eps, weight_decay, momentum, clip_grad_norm;
    int schedule;      /* 0 cosine, 1 linear, 2 constant */
    int64_t warmup;
} ts_optim_recipe;
ts_status ts_train_parse(ts_recipe *r, ts_train_cfg *train, ts_optim_recipe *optim, ts_err *err);
/* 1 when this build has the CUDA backend (train.device: cuda can be asked for), else 0 */
int ts_have_cuda(void);

typedef struct ts_train_opts {
    const char *resume;                /* run or checkpoint folder, or NULL */
    volatile int *stop;                /* set by a signal handler: save and return */
    int progress;                      /* redraw one progress line (a terminal) */
    ts_dist *dist;                     /* the ranks of a data-parallel run, or NULL: alone */
} ts_train_opts;
/* Run the training loop of the recipe on task. Returns TS_OK at the end of the run,
 * TS_ERR_INTERRUPTED after saving a checkpoint when *stop was set, or an error.
 * With opts->dist of several ranks, every rank calls ts_train: each computes its share of every
 * global batch, the gradients are summed across ranks weighted by the shares (so the update is
 * that of one process with the global batch), and rank 0 alone writes the run folder; the others
 * wait for each checkpoint at a barrier. An error on one rank must end the job (ts_dist_abort),
 * since the others would wait for it until the collective timeout. */
ts_status ts_train(ts_recipe *r, const ts_train_cfg *train, const ts_optim_recipe *optim,
                   ts_task *task, const ts_train_opts *opts, ts_err *err);
/* What keeps a train.device: cuda run of this recipe off the device, for `world` processes:
 * the trainer's conditions and the task's (device_check), as the error that ts_train would
 * give, naming the recipe key; TS_OK where the device would be opened. Needs no device. */
ts_status ts_train_device_check(ts_recipe *r, const ts_train_cfg *train,
                                const ts_optim_recipe *optim, ts_task *task, int world,
                                ts_err *err);

/* ---------------------------------------------------------------------------------------- */
/* Recipes: YAML files (libyaml) with one parse function per section.                       */

/* A loaded recipe: the YAML tree with the file name and the line of every node, plus the
 * command-line overrides applied to it. Sections are read into config structs by key tables;
 * every default applied is written back into the tree, so ts_recipe_dump gives the resolved
 * recipe that is saved beside each checkpoint. */
typedef struct ts_recipe ts_recipe;

ts_status ts_recipe_load(const char *path, ts_recipe **out, ts_err *err);
/* The same from text in memory; name stands for the file name in messages. */
ts_status ts_recipe_parse(const char *text, const char *name, ts_recipe **out, ts_err *err);
void ts_recipe_free(ts_recipe *r); /* NULL is a no-op */
const char *ts_recipe_path(const ts_recipe *r);
/* Apply one override "a.b.c=value"; the value is read as YAML (a scalar, or a flow list such as
 * [1, 2]). Missing maps on the way are created; whether the key is allowed is checked when its
 * section is parsed, and the message then says it came from --set. */
ts_status ts_recipe_set(ts_recipe *r, const char *assignment, ts_err *err);

typedef enum {
    TS_KEY_INT,        /* int64_t */
    TS_KEY_FLOAT,      /* double */
    TS_KEY_BOOL,       /* int: true/false, yes/no, on/off */
    TS_KEY_STRING,     /* const char *, owned by the recipe */
    TS_KEY_ENUM,       /* int: index into choices */
    TS_KEY_INT_LIST,   /* ts_int_list */
    TS_KEY_FLOAT_LIST, /* ts_float_list */
    TS_KEY_SECTION,    /* a nested map read by its own table (nothing stored; offset 0) */
} ts_key_type;

#define TS_LIST_MAX 32
typedef struct ts_int_list { int n; int64_t v[TS_LIST_MAX]; } ts_int_list;
typedef struct ts_float_list { int n; double v[TS_LIST_MAX]; } ts_float_list;

/* One key of a section: its name, type, where it goes in the config struct, its default as
 * YAML text (NULL: required) and, for enums, the NULL-terminated list of choices. */
typedef struct ts_key {
    const char *name;
    ts_key_type type;
    size_t offset;
    const char *def;
    const char *const *choices;
    const char *help;
} ts_key;
#define TS_KEY(type_, struct_, field, def_, help_) \
    { #field, type_, offsetof(struct_, field), def_, NULL, help_ }
#define TS_KEY_CHOICE(struct_, field, def_, choices_, help_) \
    { #field, TS_KEY_ENUM, offsetof(struct_, field), def_, choices_, help_ }

/* Read the map at the dotted path section ("train", "model.text") into cfg by the key table.
 * Errors (TS_ERR_RECIPE), each naming file:line and the dotted key: a key not in the table
 * (listing the valid ones), a value of the wrong type or out of the choices (listing them), a
 * required key that is missing, a section that is not a map. A missing section is an empty
 * map (all defaults). */
ts_status ts_recipe_section(ts_recipe *r, const char *section, const ts_key *keys, int nkeys,
                            void *cfg, ts_err *err);
/* Check that the map at section (NULL or "" = top level) has only the named keys
 * (NULL-terminated); an unknown one is an error naming file:line and the valid names. */
ts_status ts_recipe_only(const ts_recipe *r, const char *section, const char *const *names,
                         ts_err *err);
int ts_recipe_has(const ts_recipe *r, const char *path);
/* The keys of the map at section (NULL or "" = the top level) in file order, at most max of
 * them, into names (pointers owned by the recipe); 0 when it is absent or not a map. */
int ts_recipe_keys(const ts_recipe *r, const char *section, const char **names, int max);
/* The scalar at path as text, or NULL when absent or not a scalar. */
const char *ts_recipe_str(const ts_recipe *r, const char *path);
/* "file:line" of the node at path (or of the file when absent), for messages. */
const char *ts_recipe_where(const ts_recipe *r, const char *path, char *buf, size_t n);
/* The resolved recipe as YAML text; malloc'ed, the caller frees. Loading it again gives the
 * same configuration. */
char *ts_recipe_dump(const ts_recipe *r);

#ifdef __cplusplus
}
#endif
#endif /* TESSERA_H */
