/* op_all_gather.c: the rows of a tensor from every rank of a data-parallel run, forward and
 * backward (ts_all_gather in tessera.h).
 *
 * Forward: one all-gather of the ranks' rows in rank order (ts_dist_allgather_f32). Backward:
 * every rank computed the same loss from the same gathered rows, so every rank holds the same
 * dy; this rank's rows of it, scaled by N / n, go to x. The trainer then sums the ranks'
 * gradients weighted by n / N, which leaves the gradient of one process over all N rows, with
 * no collective in the backward.
 *
 * Shapes: x (n, ...) -> y (N, ...), N the sum of the ranks' n.
 */
#include "../tessera-impl.h"

#include <string.h>

static void all_gather_backward(ts_ctx *c, ts_node *n) {
    ts_tensor *x = n->in[0];
    float *dx = ts__grad(c, x);
    if (!dx) return;
    const float *dy = ts_f32(n->out->grad) + n->i[0];
    const float s = n->f[0];
    for (int64_t i = 0; i < x->numel; i++) dx[i] += s * dy[i];
}

ts_tensor *ts_all_gather(ts_ctx *c, const ts_tensor *x) {
    ts__check_f32("all_gather", x);
    TS_CHECK(x->ndim >= 1, "all_gather: x has no rows");
    int world = c->dist ? ts_dist_world(c->dist) : 1, rank = c->dist ? ts_dist_rank(c->dist) : 0;
    int64_t *counts = ts_arena_alloc(c->step, (size_t)world * sizeof *counts);
    ts_err err = { 0 };
    /* the row counts first, then the rows: ranks may hold different numbers of rows */
    if (ts_dist_allgather_f32(c->dist, NULL, x->shape[0], NULL, counts, &err))
        ts_dist_abort(c->dist, 1, "%s", err.msg);
    int64_t N = 0, off = 0;
    for (int r = 0; r < world; r++) {
        N += counts[r];
        if (r < rank) off += counts[r];
    }
    int64_t shape[TS_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[0] = N;
    ts_tensor *y = ts_new(c, TS_F32, x->ndim, shape);
    if (ts_dist_allgather_f32(c->dist, ts_f32(x), x->numel, ts_f32(y), NULL, &err))
        ts_dist_abort(c->dist, 1, "%s", err.msg);
    ts_node *n = TS__RECORD(c, TS_OP_ALL_GATHER, all_gather_backward, y, x);
    if (n) {
        n->i[0] = off * (x->shape[0] ? x->numel / x->shape[0] : 0); /* first float of ours */
        n->f[0] = x->shape[0] ? (float)((double)N / (double)x->shape[0]) : 0.0f;
    }
    return y;
}
