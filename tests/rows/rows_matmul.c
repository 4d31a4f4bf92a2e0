/* Rows for matmul and linear: plain, transposed operands, batched, with bias. */
#include "../rows.h"

static int mk_mm(ts_ctx *c, ts_rng *r, ts_tensor **in) {
    in[0] = row_randn(c, r, 3, TS_SHAPE(2, 3, 4), 1.0f, 1);
    in[1] = row_randn(c, r, 2, TS_SHAPE(4, 5), 1.0f, 1);
    return 2;
}
static ts_tensor *fn_mm(ts_ctx *c, ts_tensor **in) { return ts_matmul(c, in[0], in[1], 0); }

static int mk_mm_tt(ts_ctx *c, ts_rng *r, ts_tensor **in) {
    in[0] = row_randn(c, r, 2, TS_SHAPE(4, 3), 1.0f, 1);
    in[1] = row_randn(c, r, 2, TS_SHAPE(5, 4), 1.0f, 1);
    return 2;
}
static ts_tensor *fn_mm_tt(ts_ctx *c, ts_tensor **in) {
    return ts_matmul(c, in[0], in[1], TS_TRANS_A | TS_TRANS_B);
}

static int mk_bmm(ts_ctx *c, ts_rng *r, ts_tensor **in) {
    in[0] = row_randn(c, r, 4, TS_SHAPE(2, 2, 3, 4), 1.0f, 1);
    in[1] = row_randn(c, r, 4, TS_SHAPE(2, 2, 5, 4), 1.0f, 1);
    return 2;
}
static ts_tensor *fn_bmm(ts_ctx *c, ts_tensor **in) {
    return ts_matmul(c, in[0], in[1], TS_TRANS_B);
}

static int mk_bmm_ta(ts_ctx *c, ts_rng *r, ts_tensor **in) {
    in[0] = row_randn(c, r, 3, TS_SHAPE(3, 4, 2), 1.0f, 1);
    in[1] = row_randn(c, r, 3, TS_SHAPE(3, 4, 5), 1.0f, 1);
    return 2;
}
static ts_tensor *fn_bmm_ta(ts_ctx *c, ts_tensor **in) {
    return ts_matmul(c, in[0], in[1], TS_TRANS_A);
}

static int mk_linear(ts_ctx *c, ts_rng *r, ts_tensor **in) {
    in[0] = row_randn(c, r, 3, TS_SHAPE(2, 3, 6), 1.0f, 1);
    in[1] = row_randn(c, r, 2, TS_SHAPE(4, 6), 0.5f, 1);
    in[2] = row_randn(c, r, 1, TS_SHAPE(4), 1.0f, 1);
    return 3;
}
static ts_tensor *fn_linear(ts_ctx *c, ts_tensor **in) { return ts_linear(c, in[0], in[1], in[2]); }

const test_row rows_matmul[] = {
    { "matmul", TS_OP_MATMUL, mk_mm, fn_mm, 0, 1 },
    { "matmul_tt", TS_OP_MATMUL, mk_mm_tt, fn_mm_tt, 0, 1 },
    { "bmm_tb", TS_OP_MATMUL, mk_bmm, fn_bmm, 0, 1 },
    { "bmm_ta", TS_OP_MATMUL, mk_bmm_ta, fn_bmm_ta, 0, 1 },
    { "linear", TS_OP_MATMUL, mk_linear, fn_linear, 0, 1 },
    ROW_END,
};
