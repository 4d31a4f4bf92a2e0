/* Rows for the elementwise group (see tests/rows.h): add, sub, mul with each kind of
 * broadcast, scale, relu, sum and mean over every dim and over everything, L2 normalisation
 * and dropout. The grad_share rows are small graphs in which add and reshape hand one gradient
 * buffer to several tensors and scale and mul write over it (tensor.c's copy-on-write), with a
 * tensor used twice by one op. */
#include "../rows.h"

/* a (2, 3, 4) against b of the given shape, both differentiated. */
static int mk_bin(ts_ctx *c, ts_rng *r, ts_tensor **in, int bnd, const int64_t *bshape) {
    in[0] = row_randn(c, r, 3, TS_SHAPE(2, 3, 4), 1.0f, 1);
    in[1] = row_randn(c, r, bnd, bshape, 1.0f, 1);
    return 2;
}
static int mk_same(ts_ctx *c, ts_rng *r, ts_tensor **in) {
    return mk_bin(c, r, in, 3, TS_SHAPE(2, 3, 4));
}
static int mk_last(ts_ctx *c, ts_rng *r, ts_tensor **in) {
    return mk_bin(c, r, in, 1, TS_SHAPE(4));
}
static int mk_tail2(ts_ctx *c, ts_rng *r, ts_tensor **in) {
    return mk_bin(c, r, in, 2, TS_SHAPE(3, 4));
}
static int mk_one(ts_ctx *c, ts_rng *r, ts_tensor **in) {
    return mk_bin(c, r, in, 1, TS_SHAPE(1));
}
static ts_tensor *fn_add(ts_ctx *c, ts_tensor **in) { return ts_add(c, in[0], in[1]); }
static ts_tensor *fn_sub(ts_ctx *c, ts_tensor **in) { return ts_sub(c, in[0], in[1]); }
static ts_tensor *fn_mul(ts_ctx *c, ts_tensor **in) { return ts_mul(c, in[0], in[1]); }

static int mk_x(ts_ctx *c, ts_rng *r, ts_tensor **in) {
    in[0] = row_randn(c, r, 3, TS_SHAPE(2, 3, 4), 1.0f, 1);
    return 1;
}
static ts_tensor *fn_scale(ts_ctx *c, ts_tensor **in) { return ts_scale(c, in[0], -1.5f); }

/* relu: inputs kept at least 0.1 away from the kink so finite differences do not cross it. */
static int mk_relu(ts_ctx *c, ts_rng *r, ts_tensor **in) {
    in[0] = row_randn(c, r, 3, TS_SHAPE(2, 3, 4), 1.0f, 1);
    float *x = ts_f32(in[0]);
    for (int64_t i = 0; i < in[0]->numel; i++) x[i] += x[i] >= 0 ? 0.1f : -0.1f;
    return 1;
}
static ts_tensor *fn_relu(ts_ctx *c, ts_tensor **in) { return ts_relu(c, in[0]); }

static ts_tensor *fn_exp(ts_ctx *c, ts_tensor **in) { return ts_exp(c, in[0]); }
/* log_sigmoid over a wide range, both tails included (the stable form is what is tested). */
static int mk_logsig(ts_ctx *c, ts_rng *r, ts_tensor **in) {
    in[0] = row_randn(c, r, 3, TS_SHAPE(2, 3, 4), 6.0f, 1);
    return 1;
}
static ts_tensor *fn_logsig(ts_ctx *c, ts_tensor **in) { return ts_log_sigmoid(c, in[0]); }

static ts_tensor *fn_sum0(ts_ctx *c, ts_tensor **in) { return ts_sum(c, in[0], 0); }
static ts_tensor *fn_sum1(ts_ctx *c, ts_tensor **in) { return ts_sum(c, in[0], 1); }
static ts_tensor *fn_sum_last(ts_ctx *c, ts_tensor **in) { return ts_sum(c, in[0], -1); }
static ts_tensor *fn_sum_all(ts_ctx *c, ts_tensor **in) { return ts_sum(c, in[0], TS_ALL); }
static ts_tensor *fn_mean0(ts_ctx *c, ts_tensor **in) { return ts_mean(c, in[0], 0); }
static ts_tensor *fn_mean1(ts_ctx *c, ts_tensor **in) { return ts_mean(c, in[0], 1); }
static ts_tensor *fn_mean2(ts_ctx *c, ts_tensor **in) { return ts_mean(c, in[0], 2); }
static ts_tensor *fn_mean_all(ts_ctx *c, ts_tensor **in) { return ts_mean(c, in[0], TS_ALL); }

static ts_tensor *fn_l2n(ts_ctx *c, ts_tensor **in) { return ts_l2_normalize(c, in[0], 1e-12f); }
/* Rows 2 and 3 are small enough that eps = 0.5 clamps their denominator. */
static int mk_l2n_eps(ts_ctx *c, ts_rng *r, ts_tensor **in) {
    in[0] = row_randn(c, r, 2, TS_SHAPE(4, 5), 1.0f, 1);
    float *x = ts_f32(in[0]);
    for (int j = 10; j < 20; j++) x[j] *= 0.05f;
    return 1;
}
static ts_tensor *fn_l2n_eps(ts_ctx *c, ts_tensor **in) { return ts_l2_normalize(c, in[0], 0.5f); }

static int mk_drop(ts_ctx *c, ts_rng *r, ts_tensor **in) {
    in[0] = row_randn(c, r, 2, TS_SHAPE(6, 8), 1.0f, 1);
    return 1;
}
static ts_tensor *fn_drop(ts_ctx *c, ts_tensor **in) { return ts_dropout(c, in[0], 0.3f); }

static ts_tensor *fn_add_self(ts_ctx *c, ts_tensor **in) { return ts_add(c, in[0], in[0]); }
static ts_tensor *fn_sub_self(ts_ctx *c, ts_tensor **in) { return ts_sub(c, in[0], in[0]); }
static ts_tensor *fn_mul_self(ts_ctx *c, ts_tensor **in) { return ts_mul(c, in[0], in[0]); }
/* h = a + b; y = (2 h) * b + h: dy reaches h twice and b three times */
static ts_tensor *fn_share_chain(ts_ctx *c, ts_tensor **in) {
    ts_tensor *h = ts_add(c, in[0], in[1]);
    return ts_add(c, ts_mul(c, ts_scale(c, h, 2.0f), in[1]), h);
}
/* y = reshape(3 reshape(a, (24)), (2, 3, 4)) + a, then y * a + y */
static ts_tensor *fn_share_reshape(ts_ctx *c, ts_tensor **in) {
    ts_tensor *f = ts_scale(c, ts_reshape(c, in[0], 1, TS_SHAPE(24)), 3.0f);
    ts_tensor *y = ts_add(c, ts_reshape(c, f, 3, TS_SHAPE(2, 3, 4)), in[0]);
    return ts_add(c, ts_mul(c, y, in[0]), y);
}

const test_row rows_elementwise[] = {
    { "add", TS_OP_ADD, mk_same, fn_add, 0, 1 },
    { "add_bcast_last", TS_OP_ADD, mk_last, fn_add, 0, 1 },
    { "add_bcast_tail2", TS_OP_ADD, mk_tail2, fn_add, 0, 1 },
    { "add_scalar", TS_OP_ADD, mk_one, fn_add, 0, 1 },
    { "sub", TS_OP_SUB, mk_same, fn_sub, 0, 1 },
    { "sub_bcast_tail2", TS_OP_SUB, mk_tail2, fn_sub, 0, 1 },
    { "sub_scalar", TS_OP_SUB, mk_one, fn_sub, 0, 1 },
    { "mul", TS_OP_MUL, mk_same, fn_mul, 0, 1 },
    { "mul_bcast_last", TS_OP_MUL, mk_last, fn_mul, 0, 1 },
    { "mul_bcast_tail2", TS_OP_MUL, mk_tail2, fn_mul, 0, 1 },
    { "mul_scalar", TS_OP_MUL, mk_one, fn_mul, 0, 1 },
    { "scale", TS_OP_SCALE, mk_x, fn_scale, 0, 1 },
    { "relu", TS_OP_RELU, mk_relu, fn_relu, 0, 1 },
    { "exp", TS_OP_EXP, mk_x, fn_exp, 0, 1 },
    { "log_sigmoid", TS_OP_LOG_SIGMOID, mk_logsig, fn_logsig, 0, 1 },
    { "sum_dim0", TS_OP_SUM, mk_x, fn_sum0, 0, 1 },
    { "sum_dim1", TS_OP_SUM, mk_x, fn_sum1, 0, 1 },
    { "sum_dim_last", TS_OP_SUM, mk_x, fn_sum_last, 0, 1 },
    { "sum_all", TS_OP_SUM, mk_x, fn_sum_all, 0, 1 },
    { "mean_dim0", TS_OP_MEAN, mk_x, fn_mean0, 0, 1 },
    { "mean_dim1", TS_OP_MEAN, mk_x, fn_mean1, 0, 1 },
    { "mean_dim2", TS_OP_MEAN, mk_x, fn_mean2, 0, 1 },
    { "mean_all", TS_OP_MEAN, mk_x, fn_mean_all, 0, 1 },
    { "l2_normalize", TS_OP_L2_NORMALIZE, mk_x, fn_l2n, 0, 1 },
    { "l2_normalize_eps", TS_OP_L2_NORMALIZE, mk_l2n_eps, fn_l2n_eps, 0, 1 },
    { "dropout", TS_OP_DROPOUT, mk_drop, fn_drop, 0, 0 },
    { "add_self", TS_OP_ADD, mk_x, fn_add_self, 0, 0 },
    { "sub_self", TS_OP_SUB, mk_x, fn_sub_self, 0, 0 },
    { "mul_self", TS_OP_MUL, mk_x, fn_mul_self, 0, 0 },
    { "grad_share_chain", TS_OP_ADD, mk_same, fn_share_chain, 0, 0 },
    { "grad_share_reshape", TS_OP_RESHAPE, mk_x, fn_share_reshape, 0, 0 },
    ROW_END,
};
