/* Rows for the act group: the GELU family, softmax and log-softmax, on 3-d inputs (see
 * tests/rows.h; the Python cases are in parity/cases_act.py). */
#include "../rows.h"

/* x (2, 3, 5) for the elementwise and row-wise ops. */
static int mk_x(ts_ctx *c, ts_rng *r, ts_tensor **in) {
    in[0] = row_randn(c, r, 3, TS_SHAPE(2, 3, 5), 1.5f, 1);
    return 1;
}
/* x (2, 3, 5) spread wide: Mish's branches above 20 and far below 0. */
static int mk_x_wide(ts_ctx *c, ts_rng *r, ts_tensor **in) {
    in[0] = row_randn(c, r, 3, TS_SHAPE(2, 3, 5), 40.0f, 1);
    return 1;
}
/* x (2, 3, 6) and bias (6). */
static int mk_xb(ts_ctx *c, ts_rng *r, ts_tensor **in) {
    in[0] = row_randn(c, r, 3, TS_SHAPE(2, 3, 6), 1.5f, 1);
    in[1] = row_randn(c, r, 1, TS_SHAPE(6), 0.5f, 1);
    return 2;
}

static ts_tensor *fn_gelu(ts_ctx *c, ts_tensor **in) { return ts_gelu(c, in[0]); }
static ts_tensor *fn_gelu_tanh(ts_ctx *c, ts_tensor **in) { return ts_gelu_tanh(c, in[0]); }
static ts_tensor *fn_bias_gelu(ts_ctx *c, ts_tensor **in) { return ts_bias_gelu(c, in[0], in[1]); }
static ts_tensor *fn_quick_gelu(ts_ctx *c, ts_tensor **in) { return ts_quick_gelu(c, in[0]); }
static ts_tensor *fn_mish(ts_ctx *c, ts_tensor **in) { return ts_mish(c, in[0]); }
static ts_tensor *fn_softmax(ts_ctx *c, ts_tensor **in) { return ts_softmax(c, in[0]); }
static ts_tensor *fn_log_softmax(ts_ctx *c, ts_tensor **in) { return ts_log_softmax(c, in[0]); }

const test_row rows_act[] = {
    { "gelu", TS_OP_GELU, mk_x, fn_gelu, 0, 1 },
    { "gelu_tanh", TS_OP_GELU_TANH, mk_x, fn_gelu_tanh, 0, 1 },
    { "bias_gelu", TS_OP_BIAS_GELU, mk_xb, fn_bias_gelu, 0, 1 },
    { "quick_gelu", TS_OP_QUICK_GELU, mk_x, fn_quick_gelu, 0, 1 },
    { "mish", TS_OP_MISH, mk_x, fn_mish, 0, 1 },
    { "mish_wide", TS_OP_MISH, mk_x_wide, fn_mish, 0, 1 },
    { "softmax", TS_OP_SOFTMAX, mk_x, fn_softmax, 0, 1 },
    { "log_softmax", TS_OP_LOG_SOFTMAX, mk_x, fn_log_softmax, 0, 1 },
    ROW_END,
};
