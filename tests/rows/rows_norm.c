/* Rows for the norm group: layernorm with and without affine parameters, batchnorm1d in
 * training and eval mode, and softmax cross-entropy plain, with ignored rows, with label
 * smoothing and with both (see tests/rows.h; the Python cases are in parity/cases_norm.py). */
#include "../rows.h"

#include <math.h>

/* ---- layernorm: x (2, 3, 8), w and b (8) ---- */

static int mk_ln(ts_ctx *c, ts_rng *r, ts_tensor **in) {
    in[0] = row_randn(c, r, 3, TS_SHAPE(2, 3, 8), 1.0f, 1);
    in[1] = row_randn(c, r, 1, TS_SHAPE(8), 1.0f, 1);
    in[2] = row_randn(c, r, 1, TS_SHAPE(8), 1.0f, 1);
    return 3;
}
static ts_tensor *fn_ln(ts_ctx *c, ts_tensor **in) {
    return ts_layernorm(c, in[0], in[1], in[2], 1e-5f);
}

static int mk_ln_plain(ts_ctx *c, ts_rng *r, ts_tensor **in) {
    in[0] = row_randn(c, r, 3, TS_SHAPE(2, 3, 8), 1.0f, 1);
    return 1;
}
static ts_tensor *fn_ln_plain(ts_ctx *c, ts_tensor **in) {
    return ts_layernorm(c, in[0], NULL, NULL, 1e-5f);
}

/* ---- batchnorm1d: x (6, 5), w and b (5), running mean and variance (5) without grad ---- */

static int mk_bn(ts_ctx *c, ts_rng *r, ts_tensor **in) {
    in[0] = row_randn(c, r, 2, TS_SHAPE(6, 5), 1.0f, 1);
    in[1] = row_randn(c, r, 1, TS_SHAPE(5), 1.0f, 1);
    in[2] = row_randn(c, r, 1, TS_SHAPE(5), 1.0f, 1);
    in[3] = row_randn(c, r, 1, TS_SHAPE(5), 0.5f, 0);
    in[4] = row_randn(c, r, 1, TS_SHAPE(5), 1.0f, 0);
    for (int j = 0; j < 5; j++) ts_f32(in[4])[j] = 0.5f + fabsf(ts_f32(in[4])[j]);
    return 5;
}
static ts_tensor *bn(ts_ctx *c, ts_tensor **in, int training) {
    int keep = c->training;
    c->training = training;
    ts_tensor *y = ts_batchnorm1d(c, in[0], in[1], in[2], in[3], in[4], 0.1f, 1e-5f);
    c->training = keep;
    return y;
}
static ts_tensor *fn_bn_train(ts_ctx *c, ts_tensor **in) { return bn(c, in, 1); }
static ts_tensor *fn_bn_eval(ts_ctx *c, ts_tensor **in) { return bn(c, in, 0); }

/* ---- cross_entropy: logits (6, 5), i32 targets (6) ---- */

static int mk_ce(ts_ctx *c, ts_rng *r, ts_tensor **in) {
    in[0] = row_randn(c, r, 2, TS_SHAPE(6, 5), 1.0f, 1);
    in[1] = row_randint(c, r, 1, TS_SHAPE(6), 5);
    return 2;
}
/* Rows 1 and 4 carry the ignore value -100. */
static int mk_ce_ign(ts_ctx *c, ts_rng *r, ts_tensor **in) {
    mk_ce(c, r, in);
    ts_i32(in[1])[1] = -100;
    ts_i32(in[1])[4] = -100;
    return 2;
}
static ts_tensor *fn_ce(ts_ctx *c, ts_tensor **in) {
    return ts_cross_entropy(c, in[0], in[1], -100, 0.0f);
}
static ts_tensor *fn_ce_smooth(ts_ctx *c, ts_tensor **in) {
    return ts_cross_entropy(c, in[0], in[1], -100, 0.1f);
}
/* Both at once, with a class index (1) as the ignore value, which torch allows. */
static int mk_ce_both(ts_ctx *c, ts_rng *r, ts_tensor **in) {
    mk_ce(c, r, in);
    ts_i32(in[1])[0] = 1;
    ts_i32(in[1])[3] = 1;
    return 2;
}
static ts_tensor *fn_ce_both(ts_ctx *c, ts_tensor **in) {
    return ts_cross_entropy(c, in[0], in[1], 1, 0.2f);
}

const test_row rows_norm[] = {
    { "layernorm", TS_OP_LAYERNORM, mk_ln, fn_ln, 0, 1 },
    { "layernorm_noaffine", TS_OP_LAYERNORM, mk_ln_plain, fn_ln_plain, 0, 1 },
    { "batchnorm1d_train", TS_OP_BATCHNORM1D, mk_bn, fn_bn_train, 0, 1 },
    { "batchnorm1d_eval", TS_OP_BATCHNORM1D, mk_bn, fn_bn_eval, 0, 1 },
    { "cross_entropy", TS_OP_CROSS_ENTROPY, mk_ce, fn_ce, 0, 1 },
    { "cross_entropy_ignore", TS_OP_CROSS_ENTROPY, mk_ce_ign, fn_ce, 0, 1 },
    { "cross_entropy_smooth", TS_OP_CROSS_ENTROPY, mk_ce, fn_ce_smooth, 0, 1 },
    { "cross_entropy_ignore_smooth", TS_OP_CROSS_ENTROPY, mk_ce_both, fn_ce_both, 0, 1 },
    ROW_END,
};
