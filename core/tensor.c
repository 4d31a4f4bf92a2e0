/* tensor.c: tensors, the context, the tape and the backward walk.
 *
 * The gradient rule, written once: a gradient accumulates (+=) into what is already there.
 * Parameter gradients live in the parameter arena and are zeroed by ts_params_zero_grad;
 * activation gradients live in the step arena and come into being the first time backward
 * reaches them: zeroed (ts__grad), written whole by a backward that sets every element
 * (ts__grad_fresh), or, where the input's gradient equals the output's, the output's own buffer
 * (ts__grad_share, ts__grad_adopt). Whichever way, a backward never loses what earlier
 * backwards put into a gradient, which is what makes reuse of a tensor by several ops and
 * gradient accumulation over micro-batches both correct.
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
    c->world = 1;
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

/* ---- gradient buffers during the backward walk ----
 *
 * Two things keep the walk's memory and traffic down. Recycling: once the walk has passed the
 * op that made a tensor, that tensor's gradient is dead, and its buffer goes to a spare list
 * that later gradients take from (best fit, the rest of a larger buffer staying spare). Sharing: an op whose input gradient equals its
 * output gradient (add, reshape) does not copy it; the input's gradient header points at the
 * same floats (ts__grad_share), and a backward that computes dx elementwise from dy may write dx
 * over dy (ts__grad_adopt). ts_backward_with's dy is shared the same way, as y's gradient, with
 * the caller as one more holder that never lets go. A shared buffer is copy-on-write:
 * ts__grad and ts__grad_fresh, the only ways a backward gets a writable gradient, give a tensor
 * whose buffer is shared its own copy first, so a write through one holder is never seen by
 * another. A shared buffer is recycled when its last holder dies (never the caller's); leaves
 * still sharing one at the end of the walk get their own copies, so after the walk no two
 * tensors hold one buffer and none holds the caller's. */

/* A gradient buffer that backward no longer needs, kept for the next gradient that fits in it. */
typedef struct spare_buf {
    struct spare_buf *next;
    int64_t numel;
    float *data;
} spare_buf;

/* One tensor that holds a shared buffer (NULL: the caller of ts_backward_with, read only). */
typedef struct share_holder {
    struct share_holder *next;
    ts_tensor *t;
} share_holder;

/* A buffer that two or more holders hold as a gradient. */
typedef struct grad_share {
    struct grad_share *next;
    float *data;
    share_holder *holders; /* two or more, all with the buffer's numel */
} grad_share;

/* What the walk keeps between nodes; lives in the step arena (c->tape.spare points here) and is
 * dropped with it. */
typedef struct walk_state {
    spare_buf *spare;
    grad_share *shared;
} walk_state;

static walk_state *state(ts_ctx *c) {
    if (!c->tape.spare) {
        walk_state *w = ts_arena_alloc(c->step, sizeof *w);
        memset(w, 0, sizeof *w);
        c->tape.spare = w;
    }
    return c->tape.spare;
}

/* The start of the smallest spare buffer that holds numel floats (best fit), or NULL. What is
 * left of a larger buffer stays spare (from the next 64-byte boundary on). */
static float *take_spare(ts_ctx *c, int64_t numel) {
    spare_buf **best = NULL;
    for (spare_buf **p = &state(c)->spare; *p; p = &(*p)->next)
        if ((*p)->numel >= numel && (!best || (*p)->numel < (*best)->numel)) best = p;
    if (!best) return NULL;
    float *d = (*best)->data;
    int64_t used = (numel + 15) / 16 * 16;
    if ((*best)->numel > used) {
        (*best)->data += used;
        (*best)->numel -= used;
    } else {
        *best = (*best)->next;
    }
#ifdef TS_ARENA_POISON
    /* as new arena memory: a backward that reads a gradient it never wrote sees NaN */
    memset(d, 0xff, (size_t)numel * sizeof(float));
#endif
    return d;
}

static void give_spare(ts_ctx *c, float *data, int64_t numel) {
    walk_state *w = state(c);
    spare_buf *s = ts_arena_alloc(c->step, sizeof *s);
    s->numel = numel;
    s->data = data;
    s->next = w->spare;
    w->spare = s;
}

static float *new_buffer(ts_ctx *c, int64_t numel) {
    float *d = take_spare(c, numel);
    return d ? d : ts_arena_alloc(c->step, (size_t)numel * sizeof(float));
}

static ts_tensor *new_grad(ts_ctx *c, ts_tensor *t) {
    ts_tensor *g = ts__header(c, TS_F32, t->ndim, t->shape);
    g->data = new_buffer(c, t->numel);
    t->grad = g;
    return g;
}

/* The share entry of a buffer, or NULL when one tensor holds it alone. */
static grad_share **find_share(ts_ctx *c, const float *data) {
    if (!c->tape.spare) return NULL;
    for (grad_share **p = &state(c)->shared; *p; p = &(*p)->next)
        if ((*p)->data == data) return p;
    return NULL;
}

static void add_holder(ts_ctx *c, grad_share *s, ts_tensor *t) {
    share_holder *h = ts_arena_alloc(c->step, sizeof *h);
    h->t = t;
    h->next = s->holders;
    s->holders = h;
}

/* A new share entry for data, first held by a (NULL: the caller). */
static grad_share *new_share(ts_ctx *c, float *data, ts_tensor *a) {
    walk_state *w = state(c);
    grad_share *s = ts_arena_alloc(c->step, sizeof *s);
    s->data = data;
    s->holders = NULL;
    add_holder(c, s, a);
    s->next = w->shared;
    w->shared = s;
    return s;
}

/* t stops holding the shared buffer *e: unlink it. A buffer left with one tensor holder is that
 * tensor's alone again; one left with the caller only is forgotten (it is the caller's). */
static void drop_holder(grad_share **e, const ts_tensor *t) {
    for (share_holder **h = &(*e)->holders; *h; h = &(*h)->next)
        if ((*h)->t == t) {
            *h = (*h)->next;
            break;
        }
    if (!(*e)->holders->next) *e = (*e)->next;
}

/* Give t its own copy of its gradient when the buffer is shared (copy-on-write). */
static void unshare(ts_ctx *c, ts_tensor *t) {
    grad_share **e = find_share(c, ts_f32(t->grad));
    if (!e) return;
    float *d = new_buffer(c, t->numel);
    memcpy(d, ts_f32(t->grad), (size_t)t->numel * sizeof(float));
    t->grad->data = d;
    drop_holder(e, t);
}

float *ts__grad(ts_ctx *c, ts_tensor *t) {
    if (!t || !t->requires_grad) return NULL;
    if (!t->grad)
        memset(new_grad(c, t)->data, 0, (size_t)t->numel * sizeof(float));
    else
        unshare(c, t);
    return ts_f32(t->grad);
}

float *ts__grad_fresh(ts_ctx *c, ts_tensor *t, float *beta) {
    *beta = 1.0f;
    if (!t || !t->requires_grad) return NULL;
    if (!t->grad) {
        new_grad(c, t);
        *beta = 0.0f;
    } else {
        unshare(c, t);
    }
    return ts_f32(t->grad);
}

/* t's gradient becomes a header over data, which holder already holds (NULL: the caller). */
static void share_into(ts_ctx *c, ts_tensor *t, float *data, ts_tensor *holder) {
    ts_tensor *g = ts__header(c, TS_F32, t->ndim, t->shape);
    g->data = data;
    t->grad = g;
    grad_share **e = find_share(c, data);
    add_holder(c, e ? *e : new_share(c, data, holder), t);
}

int ts__grad_share(ts_ctx *c, ts_node *n, ts_tensor *t) {
    ts_tensor *out = n->out;
    if (!t || !t->requires_grad || t->grad || t->name || t == out || !out->grad ||
        t->numel != out->numel)
        return 0;
    share_into(c, t, ts_f32(out->grad), out);
    return 1;
}

float *ts__grad_adopt(ts_ctx *c, ts_node *n, ts_tensor *t, float *beta) {
    if (t && n->out->grad && !find_share(c, ts_f32(n->out->grad)) && ts__grad_share(c, n, t)) {
        *beta = 0.0f;
        return ts_f32(t->grad);
    }
    return ts__grad_fresh(c, t, beta);
}

/* The walk has passed the op that made t: its gradient is dead. The buffer is recycled, or,
 * when others still hold it, left to them. */
static void retire_grad(ts_ctx *c, ts_tensor *t) {
    grad_share **e = find_share(c, ts_f32(t->grad));
    if (e)
        drop_holder(e, t);
    else
        give_spare(c, ts_f32(t->grad), t->numel);
    t->grad = NULL;
}

/* What the walk calls besides the backward functions (any may be NULL): hook before (done 0)
 * and after (done 1) each node it runs, passed after each tape position, run or skipped. */
typedef struct walk_calls {
    void (*hook)(const ts_node *n, int done, void *user);
    void (*passed)(int64_t pos, void *user);
    void *user;
} walk_calls;

static void walk_tape(ts_ctx *c, const walk_calls *w);

static void seed_loss(ts_ctx *c, ts_tensor *loss) {
    TS_CHECK(loss->numel == 1, "backward from a tensor of %lld elements (needs a scalar)",
             (long long)loss->numel);
    TS_CHECK(loss->requires_grad, "backward from a tensor that does not require grad");
    float *dl = ts__grad(c, loss);
    dl[0] += 1.0f;
}

void ts_backward(ts_ctx *c, ts_tensor *loss) {
    seed_loss(c, loss);
    walk_tape(c, &(walk_calls){ 0 });
}

void ts__backward_passing(ts_ctx *c, ts_tensor *loss, void (*passed)(int64_t pos, void *user),
                          void *user) {
    seed_loss(c, loss);
    walk_tape(c, &(walk_calls){ NULL, passed, user });
}

void ts_backward_with(ts_ctx *c, ts_tensor *y, const ts_tensor *dy) {
    ts__backward_with_hook(c, y, dy, NULL, NULL);
}

void ts__backward_with_hook(ts_ctx *c, ts_tensor *y, const ts_tensor *dy,
                            void (*hook)(const ts_node *n, int done, void *user), void *user) {
    ts__check_same_shape("backward", y, dy);
    ts__check_f32("backward", dy);
    TS_CHECK(y->requires_grad, "backward from a tensor that does not require grad");
    if (!y->grad && !y->name) {
        /* y's gradient is dy itself, held read-only: no copy (see the top of this section) */
        share_into(c, y, ts_f32(dy), NULL);
    } else {
        float *g = ts__grad(c, y);
        const float *d = ts_f32(dy);
        for (int64_t i = 0; i < y->numel; i++) g[i] += d[i];
    }
    walk_tape(c, &(walk_calls){ hook, NULL, user });
}

static void walk_tape(ts_ctx *c, const walk_calls *w) {
    int saved = c->grad_enabled;
    c->grad_enabled = 0; /* backward functions use ops without recording them */
    for (int64_t i = c->tape.n - 1; i >= 0; i--) {
        ts_node *n = c->tape.nodes[i];
        if (n->out->grad) {
            if (w->hook) w->hook(n, 0, w->user);
            n->backward(c, n);
            /* every consumer of out came later on the tape and is done: its gradient is dead */
            if (!n->out->name) retire_grad(c, n->out);
            if (w->hook) w->hook(n, 1, w->user);
        }
        if (w->passed) w->passed(i, w->user);
    }
    /* Whatever is still shared is held by leaves (and perhaps the caller): each leaf but the
     * last gets its own copy, and the last one too when the caller holds the buffer. */
    while (c->tape.spare && state(c)->shared) {
        share_holder *h = state(c)->shared->holders;
        while (!h->t) h = h->next;
        unshare(c, h->t);
    }
    c->grad_enabled = saved;
}
