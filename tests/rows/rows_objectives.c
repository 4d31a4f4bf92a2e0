/* Rows for the contrastive objectives of core/objectives/clip.c (see tests/rows.h): open_clip's
 * ClipLoss and SigLipLoss on raw embeddings, differentiated in the embeddings and in the
 * learned log-scale and bias. They are compositions of ops (op -1); the gradient check and the
 * parity test treat them as one function. */
#include "../rows.h"

static int mk_pair(ts_ctx *c, ts_rng *r, ts_tensor **in) {
    in[0] = row_randn(c, r, 2, TS_SHAPE(6, 8), 1.0f, 1);
    in[1] = row_randn(c, r, 2, TS_SHAPE(6, 8), 1.0f, 1);
    in[2] = row_randn(c, r, 1, TS_SHAPE(1), 0.3f, 1);
    ts_f32(in[2])[0] += 1.5f; /* a log-scale near open_clip's early values */
    in[3] = row_randn(c, r, 1, TS_SHAPE(1), 1.0f, 1);
    return 4;
}
static int mk_clip(ts_ctx *c, ts_rng *r, ts_tensor **in) {
    mk_pair(c, r, in);
    return 3; /* no bias */
}
static ts_tensor *fn_clip(ts_ctx *c, ts_tensor **in) {
    return ts_clip_loss(c, in[0], in[1], in[2]);
}
static ts_tensor *fn_siglip(ts_ctx *c, ts_tensor **in) {
    return ts_siglip_loss(c, in[0], in[1], in[2], in[3]);
}

/* all_gather alone (one process): a copy, and its backward passes dy through (N / n = 1). */
static int mk_rows(ts_ctx *c, ts_rng *r, ts_tensor **in) {
    in[0] = row_randn(c, r, 2, TS_SHAPE(5, 3), 1.0f, 1);
    return 1;
}
static ts_tensor *fn_gather(ts_ctx *c, ts_tensor **in) { return ts_all_gather(c, in[0]); }

const test_row rows_objectives[] = {
    { "all_gather", TS_OP_ALL_GATHER, mk_rows, fn_gather, 0, 1 },
    { "clip_loss", -1, mk_clip, fn_clip, 0, 1 },
    { "siglip_loss", -1, mk_pair, fn_siglip, 0, 1 },
    ROW_END,
};
