/* buckets.c: gradient buckets, handed over as soon as backward has finished them.
 *
 * The gradient section of the parameter block is cut into contiguous slices (buckets) from the
 * last registered parameter backwards: models register their parameters in forward order, so
 * backward finishes the gradients of the last ones first, and the first bucket can be reduced
 * across ranks while backward is still working through the early layers (PyTorch DDP's
 * gradient buckets, without its re-bucketing by observed order).
 *
 * When is a gradient final? Backward walks the tape from the last node to the first, and only a
 * node that took a parameter as input adds to its gradient. So once the walk has passed the
 * first node that used a parameter (its lowest tape position), nothing adds to that gradient
 * any more; a bucket is final once the walk has passed the first use of each of its
 * parameters. Before every walk the tape is scanned once to find that position per bucket; a
 * parameter used several times (tied weights) simply makes its bucket final later, and one not
 * used at all is final from the start.
 *
 * What this file is not: a communication layer. It says when a slice is final and calls the
 * caller's function; the trainer starts the all-reduce (core/dist.c).
 */
#include "tessera-impl.h"

#include <stdlib.h>

struct ts_grad_buckets {
    float *base;    /* the gradient section */
    size_t section; /* its length in floats */
    int n;
    size_t *start;  /* (n + 1) section offsets: bucket k is [start[k + 1], start[k]), descending */
    int64_t *ready; /* (n) tape position after whose passing bucket k is final (this walk) */
    /* the walk in progress */
    int next;       /* the next bucket to hand over */
    void (*fn)(int k, float *grad, int64_t n, void *user);
    void (*poll)(void *user);
    void *user;
};

ts_grad_buckets *ts_grad_buckets_new(const ts_params *p, size_t bucket_bytes) {
    ts_grad_buckets *b = calloc(1, sizeof *b);
    int np = ts_params_count(p);
    TS_CHECK(b != NULL, "out of memory");
    b->base = ts_params_section(p, 1, &b->section);
    b->start = malloc((size_t)(np + 1) * sizeof *b->start);
    b->ready = malloc((size_t)(np ? np : 1) * sizeof *b->ready);
    TS_CHECK(b->start && b->ready, "out of memory");
    size_t want = bucket_bytes / sizeof(float) > 0 ? bucket_bytes / sizeof(float) : 1;
    /* from the end of the section down, closing a bucket at a parameter boundary once it
     * holds at least want floats */
    b->start[0] = b->section;
    for (int i = np - 1; i >= 0; i--) {
        size_t off = ts__params_offset(p, i);
        if (b->start[b->n] - off >= want || i == 0) b->start[++b->n] = i == 0 ? 0 : off;
    }
    return b;
}

void ts_grad_buckets_free(ts_grad_buckets *b) {
    if (!b) return;
    free(b->start);
    free(b->ready);
    free(b);
}

int ts_grad_buckets_count(const ts_grad_buckets *b) { return b->n; }

float *ts_grad_buckets_slice(const ts_grad_buckets *b, int k, int64_t *n) {
    TS_CHECK(k >= 0 && k < b->n, "bucket %d of %d", k, b->n);
    *n = (int64_t)(b->start[k] - b->start[k + 1]);
    return b->base + b->start[k + 1];
}

/* The bucket whose slice holds section offset off (buckets are in descending order). */
static int bucket_of(const ts_grad_buckets *b, size_t off) {
    int lo = 0, hi = b->n - 1;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (off >= b->start[mid + 1]) hi = mid;
        else lo = mid + 1;
    }
    return lo;
}

/* For every bucket the lowest tape position that uses one of its parameters (tape.n: none).
 * A parameter is recognised by its gradient living in this block's gradient section. */
static void scan_tape(ts_grad_buckets *b, const ts_ctx *c) {
    for (int k = 0; k < b->n; k++) b->ready[k] = c->tape.n;
    for (int64_t i = c->tape.n - 1; i >= 0; i--) {
        const ts_node *nd = c->tape.nodes[i];
        for (int j = 0; j < nd->nin; j++) {
            const ts_tensor *t = nd->in[j];
            if (!t || !t->grad || !t->requires_grad) continue;
            const float *g = ts_f32(t->grad);
            if (g < b->base || g >= b->base + b->section) continue;
            b->ready[bucket_of(b, (size_t)(g - b->base))] = i;
        }
    }
}

static void hand_over(ts_grad_buckets *b, int64_t passed) {
    while (b->next < b->n && b->ready[b->next] >= passed) {
        int64_t n;
        float *g = ts_grad_buckets_slice(b, b->next, &n);
        b->fn(b->next++, g, n, b->user);
    }
}

static void on_pass(int64_t pos, void *user) {
    ts_grad_buckets *b = user;
    hand_over(b, pos);
    if (b->poll) b->poll(b->user);
}

void ts_backward_buckets(ts_ctx *c, ts_tensor *loss, ts_grad_buckets *b,
                         void (*ready)(int k, float *grad, int64_t n, void *user),
                         void (*poll)(void *user), void *user) {
    scan_tape(b, c);
    b->next = 0;
    b->fn = ready;
    b->poll = poll;
    b->user = user;
    ts__backward_passing(c, loss, on_pass, b);
    hand_over(b, INT64_MIN); /* whatever is left: the walk is over */
}
