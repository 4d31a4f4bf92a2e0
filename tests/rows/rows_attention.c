/* Rows for the fused attention op: plain, causal, key padding (u8, with a batch whose keys are
 * all padding), causal with padding, Tq != Tk with i32 padding, and a custom scale. T = 140 is
 * one block (the op takes sequences of up to 256 tokens whole); the _long rows have T = 300,
 * more than one block of queries (64) and of keys (256), with short last blocks, so the online
 * softmax across key blocks, the block skipping of the causal mask, a key block that is all
 * padding and the two-pass backward of a single head are exercised too. The _short rows (at
 * most 32 queries and keys) take the op's short-sequence loops instead of block products: plain,
 * causal with padding, and Tq != Tk with D = 24 and a batch whose keys are all padding. The _kv
 * rows are ts_attention_kv on projections laid out as (B, T, C) and (B, T, 2C). D is small to
 * keep the gradient check cheap. */
#include "../rows.h"

static ts_tensor *pad_mask(ts_ctx *c, ts_dtype dt, int64_t B, int64_t T,
                           int (*padded)(int64_t b, int64_t j)) {
    ts_tensor *m = ts_new(c, dt, 2, TS_SHAPE(B, T));
    for (int64_t b = 0; b < B; b++)
        for (int64_t j = 0; j < T; j++) {
            int p = padded(b, j);
            if (dt == TS_U8) ((uint8_t *)m->data)[b * T + j] = (uint8_t)p;
            else ts_i32(m)[b * T + j] = p;
        }
    return m;
}

static void qkv(ts_ctx *c, ts_rng *r, ts_tensor **in, int64_t B, int64_t H, int64_t Tq,
                int64_t Tk, int64_t D) {
    in[0] = row_randn(c, r, 4, TS_SHAPE(B, H, Tq, D), 1.0f, 1);
    in[1] = row_randn(c, r, 4, TS_SHAPE(B, H, Tk, D), 1.0f, 1);
    in[2] = row_randn(c, r, 4, TS_SHAPE(B, H, Tk, D), 1.0f, 1);
}

/* Batch 0 pads its last 10 keys, batch 1 the whole first key block and its last 5, batch 2
 * every key (its rows must come out zero, not NaN). The Python cases build the same masks. */
static int pad_u8(int64_t b, int64_t j) {
    return b == 0 ? j >= 130 : b == 1 ? (j < 128 || j >= 135) : 1;
}
/* Tq != Tk: batch 0 pads keys 5..9 and 135.., batch 1 nothing. */
static int pad_i32(int64_t b, int64_t j) { return b == 0 && ((j >= 5 && j < 10) || j >= 135); }
/* With the causal mask: batch 0 pads keys 0..2, so queries 0..2 see nothing at all. */
static int pad_causal(int64_t b, int64_t j) { return b == 0 && j < 3; }
/* Tq != Tk, short: batch 0 pads keys 7.., batch 1 nothing, batch 2 every key. */
static int pad_short(int64_t b, int64_t j) { return b == 0 ? j >= 7 : b == 2; }

static int mk_attn(ts_ctx *c, ts_rng *r, ts_tensor **in) {
    qkv(c, r, in, 2, 2, 140, 140, 8);
    return 3;
}
static ts_tensor *fn_attn(ts_ctx *c, ts_tensor **in) {
    return ts_attention(c, in[0], in[1], in[2], 0, NULL, 0.0f);
}
static ts_tensor *fn_attn_causal(ts_ctx *c, ts_tensor **in) {
    return ts_attention(c, in[0], in[1], in[2], 1, NULL, 0.0f);
}

static int mk_attn_pad(ts_ctx *c, ts_rng *r, ts_tensor **in) {
    qkv(c, r, in, 3, 1, 140, 140, 8);
    in[3] = pad_mask(c, TS_U8, 3, 140, pad_u8);
    return 4;
}
static ts_tensor *fn_attn_pad(ts_ctx *c, ts_tensor **in) {
    return ts_attention(c, in[0], in[1], in[2], 0, in[3], 0.0f);
}

static int mk_attn_causal_pad(ts_ctx *c, ts_rng *r, ts_tensor **in) {
    qkv(c, r, in, 2, 1, 140, 140, 8);
    in[3] = pad_mask(c, TS_U8, 2, 140, pad_causal);
    return 4;
}
static ts_tensor *fn_attn_causal_pad(ts_ctx *c, ts_tensor **in) {
    return ts_attention(c, in[0], in[1], in[2], 1, in[3], 0.0f);
}

static int mk_attn_cross(ts_ctx *c, ts_rng *r, ts_tensor **in) {
    qkv(c, r, in, 2, 2, 20, 140, 8);
    in[3] = pad_mask(c, TS_I32, 2, 140, pad_i32);
    return 4;
}

/* One (batch, head) pair (at T = 300 the backward takes its two-pass path, blocks spread over
 * threads). */
static int mk_attn_scale(ts_ctx *c, ts_rng *r, ts_tensor **in) {
    qkv(c, r, in, 1, 1, 140, 140, 8);
    return 3;
}
static int mk_attn_short(ts_ctx *c, ts_rng *r, ts_tensor **in) {
    qkv(c, r, in, 2, 2, 16, 16, 8);
    return 3;
}
static int mk_attn_short_causal_pad(ts_ctx *c, ts_rng *r, ts_tensor **in) {
    qkv(c, r, in, 2, 1, 32, 32, 8);
    in[3] = pad_mask(c, TS_U8, 2, 32, pad_causal);
    return 4;
}
static int mk_attn_short_cross(ts_ctx *c, ts_rng *r, ts_tensor **in) {
    qkv(c, r, in, 3, 2, 16, 10, 24);
    in[3] = pad_mask(c, TS_I32, 3, 10, pad_short);
    return 4;
}

/* ts_attention_kv: q (B, Tq, C) and kv (B, Tk, 2C) with 2 heads; short (Tk 10, pad_short)
 * and one-block (Tk 140, pad_i32) key lengths. */
static int mk_attn_kv(ts_ctx *c, ts_rng *r, ts_tensor **in) {
    in[0] = row_randn(c, r, 3, TS_SHAPE(3, 16, 12), 1.0f, 1);
    in[1] = row_randn(c, r, 3, TS_SHAPE(3, 10, 24), 1.0f, 1);
    in[2] = pad_mask(c, TS_I32, 3, 10, pad_short);
    return 3;
}
static int mk_attn_kv_block(ts_ctx *c, ts_rng *r, ts_tensor **in) {
    in[0] = row_randn(c, r, 3, TS_SHAPE(2, 40, 8), 1.0f, 1);
    in[1] = row_randn(c, r, 3, TS_SHAPE(2, 140, 16), 1.0f, 1);
    in[2] = pad_mask(c, TS_I32, 2, 140, pad_i32);
    return 3;
}
static ts_tensor *fn_attn_kv(ts_ctx *c, ts_tensor **in) {
    return ts_attention_kv(c, in[0], in[1], 2, in[2], 0.0f);
}

static ts_tensor *fn_attn_scale(ts_ctx *c, ts_tensor **in) {
    return ts_attention(c, in[0], in[1], in[2], 0, NULL, 0.2f);
}

/* T = 300: batch 0 pads keys 0..2 and the whole second key block (256..), batch 1 keys 290... */
static int pad_long(int64_t b, int64_t j) { return b == 0 ? (j < 3 || j >= 256) : j >= 290; }

static int mk_attn_long(ts_ctx *c, ts_rng *r, ts_tensor **in) {
    qkv(c, r, in, 2, 2, 300, 300, 8);
    return 3;
}
static int mk_attn_long_pad(ts_ctx *c, ts_rng *r, ts_tensor **in) {
    qkv(c, r, in, 2, 1, 300, 300, 8);
    in[3] = pad_mask(c, TS_U8, 2, 300, pad_long);
    return 4;
}
static int mk_attn_long_one(ts_ctx *c, ts_rng *r, ts_tensor **in) {
    qkv(c, r, in, 1, 1, 300, 300, 8);
    return 3;
}

const test_row rows_attention[] = {
    { "attention", TS_OP_ATTENTION, mk_attn, fn_attn, 0, 1 },
    { "attention_causal", TS_OP_ATTENTION, mk_attn, fn_attn_causal, 0, 1 },
    { "attention_keypad", TS_OP_ATTENTION, mk_attn_pad, fn_attn_pad, 0, 1 },
    { "attention_causal_keypad", TS_OP_ATTENTION, mk_attn_causal_pad, fn_attn_causal_pad, 0, 1 },
    { "attention_cross", TS_OP_ATTENTION, mk_attn_cross, fn_attn_pad, 0, 1 },
    { "attention_scale", TS_OP_ATTENTION, mk_attn_scale, fn_attn_scale, 0, 1 },
    { "attention_long", TS_OP_ATTENTION, mk_attn_long, fn_attn, 0, 1 },
    { "attention_long_causal_keypad", TS_OP_ATTENTION, mk_attn_long_pad, fn_attn_causal_pad, 0,
      1 },
    { "attention_long_causal_one", TS_OP_ATTENTION, mk_attn_long_one, fn_attn_causal, 0, 1 },
    { "attention_short", TS_OP_ATTENTION, mk_attn_short, fn_attn, 0, 1 },
    { "attention_short_causal_keypad", TS_OP_ATTENTION, mk_attn_short_causal_pad,
      fn_attn_causal_pad, 0, 1 },
    { "attention_short_cross", TS_OP_ATTENTION, mk_attn_short_cross, fn_attn_pad, 0, 1 },
    { "attention_kv", TS_OP_ATTENTION, mk_attn_kv, fn_attn_kv, 0, 1 },
    { "attention_kv_block", TS_OP_ATTENTION, mk_attn_kv_block, fn_attn_kv, 0, 1 },
    ROW_END,
};
