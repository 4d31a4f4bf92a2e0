/* tensor.c: tensors, the context, the tape and the backward walk.
 *
 * The gradient rule, written once: every gradient accumulates (+=). Parameter gradients live
 * in the parameter arena and are zeroed by ts_params_zero_grad; activation gradients are
 * allocated zeroed in the step arena the first time backward reaches them. A backward function
 * therefore never overwrites a gradient, which is what makes reuse of a tensor by several ops
 * and gradient accumulation over micro-batches both correct.
 */
#include "tessera-impl.h"

#include <stdlib.h>

static const char *const op_names[] = {
#define TS__OP_NAME(name, str) str,
    TS_OP_LIST(TS__OP_NAME)
#undef TS__OP_NAME
};
_Static_assert(sizeof(op_names) / sizeof(op_names[0]) == TS_OP_COUNT, "every op has a name");

const char *ts_op_name(ts_op op) { return (op >= 0 && op < TS_OP_COUNT) ? op_names[op] : "?"; }

const char *ts_shape_str(const ts_tensor *t, char *buf, size_t n) {
    size_t k = 0;
    k += (size_t)snprintf(buf + k, n - k, "(");
    for (int i = 0; i < t->ndim && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, i ? ", %lld" : "%lld", (long long)t->shape[i]);
    if (k < n) snprintf(buf + k, n - k, ")");
    return buf;
}

int ts_same_shape(const ts_tensor *a, const ts_tensor *b) {
    if (a->ndim != b->ndim) return 0;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return 0;
    return 1;
}

void ts__check_same_shape(const char *op, const ts_tensor *a, const ts_tensor *b) {
    if (ts_same_shape(a, b)) return;
    char sa[96], sb[96];
    TS_CHECK(0, "%s: shapes differ: %s vs %s", op, ts_shape_str(a, sa, sizeof sa),
             ts_shape_str(b, sb, sizeof sb));
}

void ts__check_f32(const char *op, const ts_tensor *t) {
    TS_CHECK(t->dtype == TS_F32, "%s: expected f32, got %s", op, ts_dtype_name(t->dtype));
    TS_CHECK(t->device == TS_CPU, "%s: tensor is not on the CPU", op);
}

/* ---- context ---- */

ts_ctx *ts_ctx_new(ts_device device, size_t initial_bytes, uint64_t seed) {
    ts_ctx *c = calloc(1, sizeof *c);
    TS_CHECK(c != NULL, "out of memory");
    c->step = ts_arena_new("step", initial_bytes);
    c->device = device;
    ts_rng_seed(&c->rng, seed);
    c->grad_enabled = 1;
    c->training = 1;
    c->nthreads = 0;
    c->precision = TS_PREC_F32;
    return c;
}

void ts_ctx_free(ts_ctx *c) {
    if (!c) return;
    ts_arena_free(c->step);
    ts__cpu_cache_free(c->cpu_cache);
    free(c);
}

void ts_ctx_reset(ts_ctx *c) {
    ts_arena_reset(c->step);
    c->tape.nodes = NULL;
    c->tape.n = c->tape.cap = 0;
    c->tape.spare = NULL;
}

/* ---- tensors ---- */

ts_tensor *ts__header(ts_ctx *c, ts_dtype dtype, int ndim, const int64_t *shape) {
    TS_CHECK(ndim >= 0 && ndim <= TS_MAX_DIMS, "tensor with %d dims (at most %d)", ndim,
             TS_MAX_DIMS);
    ts_tensor *t = ts_arena_alloc(c->step, sizeof *t);
    memset(t, 0, sizeof *t);
    t->dtype = dtype;
    t->device = c->device;
    t->ndim = ndim;
    t->numel = 1;
    for (int i = 0; i < ndim; i++) {
        TS_CHECK(shape[i] >= 0, "negative dim %lld", (long long)shape[i]);
        t->shape[i] = shape[i];
        t->numel *= shape[i];
    }
    return t;
}

ts_tensor *ts_new(ts_ctx *c, ts_dtype dtype, int ndim, const int64_t *shape) {
    ts_tensor *t = ts__header(c, dtype, ndim, shape);
    t->data = ts_arena_alloc(c->step, (size_t)t->numel * ts_dtype_size(dtype));
    return t;
}

ts_tensor *ts_new_f32(ts_ctx *c, int ndim, const int64_t *shape) {
    return ts_new(c, TS_F32, ndim, shape);
}

ts_tensor *ts_zeros(ts_ctx *c, ts_dtype dtype, int ndim, const int64_t *shape) {
    ts_tensor *t = ts_new(c, dtype, ndim, shape);
    memset(t->data, 0, (size_t)t->numel * ts_dtype_size(dtype));
    return t;
}

ts_tensor *ts_new_like(ts_ctx *c, const ts_tensor *t) {
    return ts_new(c, t->dtype, t->ndim, t->shape);
}

ts_tensor *ts_from_f32(ts_ctx *c, int ndim, const int64_t *shape, const float *src) {
    ts_tensor *t = ts_new(c, TS_F32, ndim, shape);
    memcpy(t->data, src, (size_t)t->numel * sizeof(float));
    return t;
}

/* ---- tape ---- */

int ts__needs_grad(const ts_ctx *c, int nin, const ts_tensor *const *in) {
    if (!c->grad_enabled) return 0;
    for (int i = 0; i < nin; i++)
        if (in[i] && in[i]->requires_grad) return 1;
    return 0;
}

ts_node *ts__record(ts_ctx *c, ts_op op, void (*backward)(ts_ctx *, ts_node *), ts_tensor *out,
                    int nin, const ts_tensor *const *in) {
    TS_CHECK(nin <= TS__MAX_IN, "op %s has %d inputs (at most %d)", ts_op_name(op), nin,
             TS__MAX_IN);
    if (!ts__needs_grad(c, nin, in)) return NULL;
    ts_node *n = ts_arena_alloc(c->step, sizeof *n);
    memset(n, 0, sizeof *n);
    n->op = op;
    n->backward = backward;
    n->out = out;
    n->nin = nin;
    for (int i = 0; i < nin; i++) n->in[i] = (ts_tensor *)in[i];
    out->node = n;
    out->requires_grad = 1;
    ts_tape *tp = &c->tape;
    if (tp->n == tp->cap) {
        int64_t cap = tp->cap ? tp->cap * 2 : 256;
        ts_node **nodes = ts_arena_alloc(c->step, (size_t)cap * sizeof *nodes);
        if (tp->n) memcpy(nodes, tp->nodes, (size_t)tp->n * sizeof *nodes);
        tp->nodes = nodes;
        tp->cap = cap;
    }
    tp->nodes[tp->n++] = n;
    return n;
}

/* A gradient buffer that backward no longer needs, kept for the next gradient that fits in it.
 * The list lives in the step arena and is dropped with it. */
typedef struct spare_buf {
    struct spare_buf *next;
    int64_t numel;
    float *data;
} spare_buf;

/* The smallest spare buffer that holds numel floats (best fit), or NULL. */
static float *take_spare(ts_ctx *c, int64_t numel) {
    spare_buf **best = NULL;
    for (spare_buf **p = (spare_buf **)&c->tape.spare; *p; p = &(*p)->next)
        if ((*p)->numel >= numel && (!best || (*p)->numel < (*best)->numel)) best = p;
    if (!best) return NULL;
    float *d = (*best)->data;
    *best = (*best)->next;
    return d;
}

static void give_spare(ts_ctx *c, ts_tensor *g) {
    spare_buf *s = ts_arena_alloc(c->step, sizeof *s);
    s->numel = g->numel;
    s->data = ts_f32(g);
    s->next = c->tape.spare;
    c->tape.spare = s;
}

static ts_tensor *new_grad(ts_ctx *c, ts_tensor *t) {
    ts_tensor *g = ts__header(c, TS_F32, t->ndim, t->shape);
    g->data = take_spare(c, t->numel);
    if (!g->data) g->data = ts_arena_alloc(c->step, (size_t)t->numel * sizeof(float));
    t->grad = g;
    return g;
}

float *ts__grad(ts_ctx *c, ts_tensor *t) {
    if (!t || !t->requires_grad) return NULL;
    if (!t->grad) memset(new_grad(c, t)->data, 0, (size_t)t->numel * sizeof(float));
    return ts_f32(t->grad);
}

float *ts__grad_fresh(ts_ctx *c, ts_tensor *t, float *beta) {
    *beta = 1.0f;
    if (!t || !t->requires_grad) return NULL;
    if (!t->grad) {
        new_grad(c, t);
        *beta = 0.0f;
    }
    return ts_f32(t->grad);
}

static void walk_tape(ts_ctx *c);

void ts_backward(ts_ctx *c, ts_tensor *loss) {
    TS_CHECK(loss->numel == 1, "backward from a tensor of %lld elements (needs a scalar)",
             (long long)loss->numel);
    TS_CHECK(loss->requires_grad, "backward from a tensor that does not require grad");
    float *dl = ts__grad(c, loss);
    dl[0] += 1.0f;
    walk_tape(c);
}

void ts_backward_with(ts_ctx *c, ts_tensor *y, const ts_tensor *dy) {
    ts__check_same_shape("backward", y, dy);
    TS_CHECK(y->requires_grad, "backward from a tensor that does not require grad");
    float *g = ts__grad(c, y);
    const float *d = ts_f32(dy);
    for (int64_t i = 0; i < y->numel; i++) g[i] += d[i];
    walk_tape(c);
}

static void walk_tape(ts_ctx *c) {
    int saved = c->grad_enabled;
    c->grad_enabled = 0; /* backward functions use ops without recording them */
    for (int64_t i = c->tape.n - 1; i >= 0; i--) {
        ts_node *n = c->tape.nodes[i];
        if (!n->out->grad) continue;
        n->backward(c, n);
        /* every consumer of out came later on the tape and is done: its gradient is dead */
        if (!n->out->name) {
            give_spare(c, n->out->grad);
            n->out->grad = NULL;
        }
    }
    c->grad_enabled = saved;
}
