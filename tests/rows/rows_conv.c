/* Rows for conv2d (im2col + gemm) and depthwise conv2d: stride 1 with padding, stride 2
 * (with and without bias, an odd size that does not tile), patch embedding (kernel == stride,
 * padding 0), and for depthwise the LePE case (3x3, padding 1), stride 2 and a 5x5 kernel on a
 * wider row. */
#include "../rows.h"

static int mk_conv_s1p1(ts_ctx *c, ts_rng *r, ts_tensor **in) {
    in[0] = row_randn(c, r, 4, TS_SHAPE(2, 3, 7, 6), 1.0f, 1);
    in[1] = row_randn(c, r, 4, TS_SHAPE(4, 3, 3, 3), 0.5f, 1);
    in[2] = row_randn(c, r, 1, TS_SHAPE(4), 1.0f, 1);
    return 3;
}
static ts_tensor *fn_conv_s1p1(ts_ctx *c, ts_tensor **in) {
    return ts_conv2d(c, in[0], in[1], in[2], 1, 1);
}

static int mk_conv_s2(ts_ctx *c, ts_rng *r, ts_tensor **in) {
    in[0] = row_randn(c, r, 4, TS_SHAPE(2, 3, 9, 8), 1.0f, 1);
    in[1] = row_randn(c, r, 4, TS_SHAPE(5, 3, 3, 3), 0.5f, 1);
    return 2;
}
static ts_tensor *fn_conv_s2(ts_ctx *c, ts_tensor **in) {
    return ts_conv2d(c, in[0], in[1], NULL, 2, 1);
}

static int mk_conv_s2_bias(ts_ctx *c, ts_rng *r, ts_tensor **in) {
    in[0] = row_randn(c, r, 4, TS_SHAPE(1, 2, 9, 10), 1.0f, 1);
    in[1] = row_randn(c, r, 4, TS_SHAPE(3, 2, 3, 2), 0.5f, 1);
    in[2] = row_randn(c, r, 1, TS_SHAPE(3), 1.0f, 1);
    return 3;
}
static ts_tensor *fn_conv_s2_bias(ts_ctx *c, ts_tensor **in) {
    return ts_conv2d(c, in[0], in[1], in[2], 2, 0);
}

static int mk_conv_patch(ts_ctx *c, ts_rng *r, ts_tensor **in) {
    in[0] = row_randn(c, r, 4, TS_SHAPE(2, 3, 8, 12), 1.0f, 1);
    in[1] = row_randn(c, r, 4, TS_SHAPE(6, 3, 4, 4), 0.5f, 1);
    in[2] = row_randn(c, r, 1, TS_SHAPE(6), 1.0f, 1);
    return 3;
}
static int mk_conv_patch_nobias(ts_ctx *c, ts_rng *r, ts_tensor **in) {
    mk_conv_patch(c, r, in);
    return 2;
}
static ts_tensor *fn_conv_patch(ts_ctx *c, ts_tensor **in) {
    return ts_conv2d(c, in[0], in[1], in[2], 4, 0);
}
static ts_tensor *fn_conv_patch_nobias(ts_ctx *c, ts_tensor **in) {
    return ts_conv2d(c, in[0], in[1], NULL, 4, 0);
}

static int mk_dw_3x3(ts_ctx *c, ts_rng *r, ts_tensor **in) {
    in[0] = row_randn(c, r, 4, TS_SHAPE(2, 4, 7, 9), 1.0f, 1);
    in[1] = row_randn(c, r, 4, TS_SHAPE(4, 1, 3, 3), 0.5f, 1);
    in[2] = row_randn(c, r, 1, TS_SHAPE(4), 1.0f, 1);
    return 3;
}
static ts_tensor *fn_dw_3x3(ts_ctx *c, ts_tensor **in) {
    return ts_dwconv2d(c, in[0], in[1], in[2], 1, 1);
}

static int mk_dw_s2(ts_ctx *c, ts_rng *r, ts_tensor **in) {
    in[0] = row_randn(c, r, 4, TS_SHAPE(2, 3, 9, 8), 1.0f, 1);
    in[1] = row_randn(c, r, 4, TS_SHAPE(3, 1, 3, 3), 0.5f, 1);
    return 2;
}
static ts_tensor *fn_dw_s2(ts_ctx *c, ts_tensor **in) {
    return ts_dwconv2d(c, in[0], in[1], NULL, 2, 1);
}

static int mk_dw_5x5(ts_ctx *c, ts_rng *r, ts_tensor **in) {
    in[0] = row_randn(c, r, 4, TS_SHAPE(1, 2, 6, 21), 1.0f, 1);
    in[1] = row_randn(c, r, 4, TS_SHAPE(2, 1, 5, 5), 0.5f, 1);
    in[2] = row_randn(c, r, 1, TS_SHAPE(2), 1.0f, 1);
    return 3;
}
static ts_tensor *fn_dw_5x5(ts_ctx *c, ts_tensor **in) {
    return ts_dwconv2d(c, in[0], in[1], in[2], 1, 2);
}

const test_row rows_conv[] = {
    { "conv2d_s1p1", TS_OP_CONV2D, mk_conv_s1p1, fn_conv_s1p1, 0, 1 },
    { "conv2d_s2", TS_OP_CONV2D, mk_conv_s2, fn_conv_s2, 0, 1 },
    { "conv2d_s2_bias", TS_OP_CONV2D, mk_conv_s2_bias, fn_conv_s2_bias, 0, 1 },
    { "conv2d_patch", TS_OP_CONV2D, mk_conv_patch, fn_conv_patch, 0, 1 },
    { "conv2d_patch_nobias", TS_OP_CONV2D, mk_conv_patch_nobias, fn_conv_patch_nobias, 0, 1 },
    { "dwconv2d_3x3", TS_OP_DWCONV2D, mk_dw_3x3, fn_dw_3x3, 0, 1 },
    { "dwconv2d_s2", TS_OP_DWCONV2D, mk_dw_s2, fn_dw_s2, 0, 1 },
    { "dwconv2d_5x5", TS_OP_DWCONV2D, mk_dw_5x5, fn_dw_5x5, 0, 1 },
    ROW_END,
};
