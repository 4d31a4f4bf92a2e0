/* tokenize_bins.c: uniform binning of normalised actions (RT-2, OpenVLA).
 *
 * Each value of a chunk is clipped to [-1, 1] and mapped to one of `bins` equal cells; the id is
 * the cell, decode gives its centre. One id per value, so a chunk of H x A values is H * A ids.
 */
#include "action.h"

#include <math.h>
#include <stdlib.h>

typedef struct bins_impl { int bins; } bins_impl;

void ts_act_tok_free(ts_act_tok *t) {
    if (t && t->free) t->free(t);
}

static int bins_encode(const ts_act_tok *t, const float *chunk, int32_t *ids) {
    int bins = ((const bins_impl *)t->impl)->bins, n = t->horizon * t->dim;
    for (int i = 0; i < n; i++) {
        float v = chunk[i];
        if (!(v > -1.0f)) v = -1.0f; /* NaN goes to the lowest cell */
        if (v > 1.0f) v = 1.0f;
        int k = (int)floorf((v + 1.0f) * 0.5f * (float)bins);
        ids[i] = k >= bins ? bins - 1 : k;
    }
    return n;
}

static ts_status bins_decode(const ts_act_tok *t, const int32_t *ids, int n, float *chunk,
                             ts_err *err) {
    int bins = ((const bins_impl *)t->impl)->bins, want = t->horizon * t->dim;
    if (n != want)
        return ts_fail(err, TS_ERR_DATA, "bins tokenizer: %d ids, a chunk of %d x %d needs %d", n,
                       t->horizon, t->dim, want);
    for (int i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= bins)
            return ts_fail(err, TS_ERR_DATA, "bins tokenizer: id %d at %d is outside 0..%d",
                           (int)ids[i], i, bins - 1);
        chunk[i] = ((float)ids[i] + 0.5f) * 2.0f / (float)bins - 1.0f;
    }
    return TS_OK;
}

static void bins_free(ts_act_tok *t) {
    free(t->impl);
    free(t);
}

ts_act_tok *ts_act_tok_bins_new(int horizon, int dim, int bins) {
    TS_CHECK(horizon >= 1 && dim >= 1 && bins >= 2, "bins tokenizer: %d x %d, %d bins", horizon,
             dim, bins);
    ts_act_tok *t = calloc(1, sizeof *t);
    bins_impl *b = calloc(1, sizeof *b);
    TS_CHECK(t && b, "out of memory");
    b->bins = bins;
    *t = (ts_act_tok){ "bins", horizon, dim, bins, horizon * dim, bins_encode, bins_decode,
                       bins_free, b };
    return t;
}
