/* Rows for the shape group (see tests/rows.h): reshape, permute and transpose, concat (middle,
 * first and last dim, and more inputs than one tape node holds), slice, embedding and
 * index_select. */
#include "../rows.h"

static int mk_234(ts_ctx *c, ts_rng *r, ts_tensor **in) {
    in[0] = row_randn(c, r, 3, TS_SHAPE(2, 3, 4), 1.0f, 1);
    return 1;
}
static int mk_2345(ts_ctx *c, ts_rng *r, ts_tensor **in) {
    in[0] = row_randn(c, r, 4, TS_SHAPE(2, 3, 4, 5), 1.0f, 1);
    return 1;
}

/* reshape followed by a scale, so the reshape output's own gradient is exercised too. */
static ts_tensor *fn_reshape(ts_ctx *c, ts_tensor **in) {
    return ts_reshape(c, in[0], 2, TS_SHAPE(4, -1));
}
static ts_tensor *fn_reshape_chain(ts_ctx *c, ts_tensor **in) {
    ts_tensor *y = ts_reshape(c, in[0], 4, TS_SHAPE(2, 2, 3, 2));
    return ts_reshape(c, ts_scale(c, y, 2.0f), 2, TS_SHAPE(6, 4));
}

static ts_tensor *fn_permute(ts_ctx *c, ts_tensor **in) {
    return ts_permute(c, in[0], (const int[]){ 2, 0, 3, 1 });
}
static ts_tensor *fn_permute_heads(ts_ctx *c, ts_tensor **in) {
    return ts_permute(c, in[0], (const int[]){ 0, 2, 1, 3 });
}
static ts_tensor *fn_transpose(ts_ctx *c, ts_tensor **in) { return ts_transpose(c, in[0], 0, -1); }

static int mk_cat_mid(ts_ctx *c, ts_rng *r, ts_tensor **in) {
    in[0] = row_randn(c, r, 3, TS_SHAPE(2, 3, 4), 1.0f, 1);
    in[1] = row_randn(c, r, 3, TS_SHAPE(2, 1, 4), 1.0f, 1);
    in[2] = row_randn(c, r, 3, TS_SHAPE(2, 2, 4), 1.0f, 1);
    return 3;
}
static ts_tensor *fn_cat_mid(ts_ctx *c, ts_tensor **in) { return ts_concat(c, in, 3, 1); }

static int mk_cat_first(ts_ctx *c, ts_rng *r, ts_tensor **in) {
    in[0] = row_randn(c, r, 2, TS_SHAPE(1, 5), 1.0f, 1);
    in[1] = row_randn(c, r, 2, TS_SHAPE(3, 5), 1.0f, 1);
    return 2;
}
static ts_tensor *fn_cat_first(ts_ctx *c, ts_tensor **in) { return ts_concat(c, in, 2, 0); }

static int mk_cat_last(ts_ctx *c, ts_rng *r, ts_tensor **in) {
    in[0] = row_randn(c, r, 3, TS_SHAPE(2, 3, 2), 1.0f, 1);
    in[1] = row_randn(c, r, 3, TS_SHAPE(2, 3, 3), 1.0f, 0); /* a constant input */
    return 2;
}
static ts_tensor *fn_cat_last(ts_ctx *c, ts_tensor **in) { return ts_concat(c, in, 2, -1); }

static int mk_cat_many(ts_ctx *c, ts_rng *r, ts_tensor **in) {
    for (int k = 0; k < 6; k++)
        in[k] = row_randn(c, r, 3, TS_SHAPE(2, 1 + k % 2, 3), 1.0f, 1);
    return 6;
}
static ts_tensor *fn_cat_many(ts_ctx *c, ts_tensor **in) { return ts_concat(c, in, 6, 1); }

static int mk_354(ts_ctx *c, ts_rng *r, ts_tensor **in) {
    in[0] = row_randn(c, r, 3, TS_SHAPE(3, 5, 4), 1.0f, 1);
    return 1;
}
static ts_tensor *fn_slice_mid(ts_ctx *c, ts_tensor **in) { return ts_slice(c, in[0], 1, 1, 4); }
static ts_tensor *fn_slice_first(ts_ctx *c, ts_tensor **in) { return ts_slice(c, in[0], 0, 2, 3); }
static ts_tensor *fn_slice_last(ts_ctx *c, ts_tensor **in) {
    return ts_slice(c, in[0], -1, -3, 4);
}

static int mk_emb(ts_ctx *c, ts_rng *r, ts_tensor **in) {
    in[0] = row_randn(c, r, 2, TS_SHAPE(7, 5), 1.0f, 1);
    in[1] = row_randint(c, r, 2, TS_SHAPE(2, 6), 7); /* 12 ids of 7: some repeat */
    return 2;
}
static ts_tensor *fn_emb(ts_ctx *c, ts_tensor **in) { return ts_embedding(c, in[0], in[1]); }

static int mk_isel(ts_ctx *c, ts_rng *r, ts_tensor **in) {
    in[0] = row_randn(c, r, 3, TS_SHAPE(3, 5, 4), 1.0f, 1);
    in[1] = row_randint(c, r, 1, TS_SHAPE(7), 5); /* 7 indices of 5: some repeat */
    return 2;
}
static ts_tensor *fn_isel(ts_ctx *c, ts_tensor **in) { return ts_index_select(c, in[0], 1, in[1]); }
static int mk_isel0(ts_ctx *c, ts_rng *r, ts_tensor **in) {
    in[0] = row_randn(c, r, 2, TS_SHAPE(4, 6), 1.0f, 1);
    in[1] = row_randint(c, r, 1, TS_SHAPE(5), 4);
    return 2;
}
static ts_tensor *fn_isel0(ts_ctx *c, ts_tensor **in) { return ts_index_select(c, in[0], 0, in[1]); }

const test_row rows_shape[] = {
    { "reshape", TS_OP_RESHAPE, mk_234, fn_reshape, 0, 1 },
    { "reshape_chain", TS_OP_RESHAPE, mk_234, fn_reshape_chain, 0, 1 },
    { "permute_4d", TS_OP_PERMUTE, mk_2345, fn_permute, 0, 1 },
    { "permute_heads", TS_OP_PERMUTE, mk_2345, fn_permute_heads, 0, 1 },
    { "transpose", TS_OP_PERMUTE, mk_234, fn_transpose, 0, 1 },
    { "concat_mid", TS_OP_CONCAT, mk_cat_mid, fn_cat_mid, 0, 1 },
    { "concat_first", TS_OP_CONCAT, mk_cat_first, fn_cat_first, 0, 1 },
    { "concat_last", TS_OP_CONCAT, mk_cat_last, fn_cat_last, 0, 1 },
    { "concat_many", TS_OP_CONCAT, mk_cat_many, fn_cat_many, 0, 1 },
    { "slice_mid", TS_OP_SLICE, mk_354, fn_slice_mid, 0, 1 },
    { "slice_first", TS_OP_SLICE, mk_354, fn_slice_first, 0, 1 },
    { "slice_last", TS_OP_SLICE, mk_354, fn_slice_last, 0, 1 },
    { "embedding", TS_OP_EMBEDDING, mk_emb, fn_emb, 0, 1 },
    { "index_select", TS_OP_INDEX_SELECT, mk_isel, fn_isel, 0, 1 },
    { "index_select_dim0", TS_OP_INDEX_SELECT, mk_isel0, fn_isel0, 0, 1 },
    ROW_END,
};
