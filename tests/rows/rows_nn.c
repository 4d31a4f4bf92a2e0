/* Rows for the nn blocks (parity with torch modules), drop-path, and the optimizers.
 *
 * Module rows take the block's parameters as inputs, in the order the Python cases list them,
 * and assemble the block struct around them; they run in the gradient check too. Optimizer rows
 * apply three AdamW or SGD steps with given gradients and compare the parameters with
 * torch.optim's (output only: an optimizer has no backward).
 */
#include "../rows.h"

#include <string.h>

/* ---- drop-path ---- */

static int mk_drop_path(ts_ctx *c, ts_rng *r, ts_tensor **in) {
    in[0] = row_randn(c, r, 3, TS_SHAPE(8, 3, 4), 1.0f, 1);
    return 1;
}
static ts_tensor *fn_drop_path(ts_ctx *c, ts_tensor **in) {
    return ts_nn_drop_path(c, in[0], 0.5f);
}

/* ---- MLP ---- */

static int mk_mlp(ts_ctx *c, ts_rng *r, ts_tensor **in) {
    in[0] = row_randn(c, r, 3, TS_SHAPE(2, 3, 6), 1.0f, 1);
    in[1] = row_randn(c, r, 2, TS_SHAPE(12, 6), 0.4f, 1);
    in[2] = row_randn(c, r, 1, TS_SHAPE(12), 0.1f, 1);
    in[3] = row_randn(c, r, 2, TS_SHAPE(6, 12), 0.3f, 1);
    in[4] = row_randn(c, r, 1, TS_SHAPE(6), 0.1f, 1);
    return 5;
}
static ts_tensor *mlp_with(ts_ctx *c, ts_tensor **in, ts_act act) {
    ts_nn_mlp m = { { in[1], in[2] }, { in[3], in[4] }, act };
    return ts_nn_mlp_forward(c, &m, in[0]);
}
static ts_tensor *fn_mlp_gelu(ts_ctx *c, ts_tensor **in) { return mlp_with(c, in, TS_ACT_GELU); }
static ts_tensor *fn_mlp_quick(ts_ctx *c, ts_tensor **in) {
    return mlp_with(c, in, TS_ACT_QUICK_GELU);
}

/* ---- multi-head attention: x, in_proj_weight, in_proj_bias, out_proj.weight, out_proj.bias,
 * [key padding (B, T) i32] ---- */

enum { MHA_B = 2, MHA_T = 5, MHA_C = 8, MHA_H = 2 };

static int mk_mha(ts_ctx *c, ts_rng *r, ts_tensor **in) {
    in[0] = row_randn(c, r, 3, TS_SHAPE(MHA_B, MHA_T, MHA_C), 1.0f, 1);
    in[1] = row_randn(c, r, 2, TS_SHAPE(3 * MHA_C, MHA_C), 0.4f, 1);
    in[2] = row_randn(c, r, 1, TS_SHAPE(3 * MHA_C), 0.1f, 1);
    in[3] = row_randn(c, r, 2, TS_SHAPE(MHA_C, MHA_C), 0.4f, 1);
    in[4] = row_randn(c, r, 1, TS_SHAPE(MHA_C), 0.1f, 1);
    return 5;
}
static int mk_mha_pad(ts_ctx *c, ts_rng *r, ts_tensor **in) {
    mk_mha(c, r, in);
    in[5] = ts_zeros(c, TS_I32, 2, TS_SHAPE(MHA_B, MHA_T));
    ts_i32(in[5])[MHA_T - 1] = 1;               /* sample 0: last key is padding */
    ts_i32(in[5])[MHA_T + MHA_T - 2] = 1;       /* sample 1: two last keys */
    ts_i32(in[5])[MHA_T + MHA_T - 1] = 1;
    return 6;
}
static ts_tensor *mha_with(ts_ctx *c, ts_tensor **in, int causal, const ts_tensor *pad) {
    ts_nn_mha m = { in[1], in[2], { in[3], in[4] }, MHA_C, MHA_H };
    return ts_nn_mha_forward(c, &m, in[0], causal, pad);
}
static ts_tensor *fn_mha(ts_ctx *c, ts_tensor **in) { return mha_with(c, in, 0, NULL); }
static ts_tensor *fn_mha_causal(ts_ctx *c, ts_tensor **in) { return mha_with(c, in, 1, NULL); }
static ts_tensor *fn_mha_pad(ts_ctx *c, ts_tensor **in) { return mha_with(c, in, 0, in[5]); }

/* ---- transformer block: x, ln_1 (w, b), attn (in_w, in_b, out_w, out_b), ln_2 (w, b),
 * mlp (fc_w, fc_b, proj_w, proj_b) ---- */

static int mk_block(ts_ctx *c, ts_rng *r, ts_tensor **in) {
    in[0] = row_randn(c, r, 3, TS_SHAPE(MHA_B, MHA_T, MHA_C), 1.0f, 1);
    in[1] = row_randn(c, r, 1, TS_SHAPE(MHA_C), 0.2f, 1);
    in[2] = row_randn(c, r, 1, TS_SHAPE(MHA_C), 0.2f, 1);
    for (int i = 0; i < MHA_C; i++) ts_f32(in[1])[i] += 1.0f;
    in[3] = row_randn(c, r, 2, TS_SHAPE(3 * MHA_C, MHA_C), 0.4f, 1);
    in[4] = row_randn(c, r, 1, TS_SHAPE(3 * MHA_C), 0.1f, 1);
    in[5] = row_randn(c, r, 2, TS_SHAPE(MHA_C, MHA_C), 0.4f, 1);
    in[6] = row_randn(c, r, 1, TS_SHAPE(MHA_C), 0.1f, 1);
    in[7] = row_randn(c, r, 1, TS_SHAPE(MHA_C), 0.2f, 1);
    in[8] = row_randn(c, r, 1, TS_SHAPE(MHA_C), 0.2f, 1);
    for (int i = 0; i < MHA_C; i++) ts_f32(in[7])[i] += 1.0f;
    in[9] = row_randn(c, r, 2, TS_SHAPE(4 * MHA_C, MHA_C), 0.3f, 1);
    in[10] = row_randn(c, r, 1, TS_SHAPE(4 * MHA_C), 0.1f, 1);
    in[11] = row_randn(c, r, 2, TS_SHAPE(MHA_C, 4 * MHA_C), 0.2f, 1);
    in[12] = row_randn(c, r, 1, TS_SHAPE(MHA_C), 0.1f, 1);
    return 13;
}
static ts_tensor *block_with(ts_ctx *c, ts_tensor **in, ts_act act, int causal) {
    ts_nn_block m = {
        .ln_1 = { in[1], in[2], 1e-5f },
        .ln_2 = { in[7], in[8], 1e-5f },
        .attn = { in[3], in[4], { in[5], in[6] }, MHA_C, MHA_H },
        .mlp = { { in[9], in[10] }, { in[11], in[12] }, act },
        .drop_path = 0.0f,
    };
    return ts_nn_block_forward(c, &m, in[0], causal, NULL);
}
static ts_tensor *fn_block(ts_ctx *c, ts_tensor **in) { return block_with(c, in, TS_ACT_GELU, 0); }
static ts_tensor *fn_block_quick_causal(ts_ctx *c, ts_tensor **in) {
    return block_with(c, in, TS_ACT_QUICK_GELU, 1);
}

/* ---- optimizers: p0 (n), grads (3, n) -> p after three steps ---- */

static ts_tensor *run_optim(ts_ctx *c, ts_tensor **in, ts_optim_cfg cfg, int no_decay) {
    int64_t n = in[0]->numel;
    ts_params *p = ts_params_new();
    ts_tensor *w = ts_param(p, "w", 1, TS_SHAPE(n), TS_INIT_0, no_decay ? TS_PARAM_NO_DECAY : 0);
    TS_CHECK(ts_params_finalize(p, 0, NULL) == TS_OK, "finalize");
    memcpy(w->data, in[0]->data, (size_t)n * sizeof(float));
    ts_optim o;
    ts_optim_init(&o, &cfg);
    for (int s = 0; s < 3; s++) {
        memcpy(w->grad->data, ts_f32(in[1]) + s * n, (size_t)n * sizeof(float));
        ts_optim_step(&o, p, cfg.lr);
    }
    ts_tensor *y = ts_from_f32(c, 1, TS_SHAPE(n), ts_f32(w));
    ts_params_free(p);
    return y;
}
static ts_tensor *fn_adamw(ts_ctx *c, ts_tensor **in) {
    ts_optim_cfg cfg = { TS_OPTIM_ADAMW, 1e-2f, 0.9f, 0.95f, 1e-6f, 0.1f, 0.0f };
    return run_optim(c, in, cfg, 0);
}
static ts_tensor *fn_adamw_nodecay(ts_ctx *c, ts_tensor **in) {
    ts_optim_cfg cfg = { TS_OPTIM_ADAMW, 1e-2f, 0.9f, 0.95f, 1e-6f, 0.1f, 0.0f };
    return run_optim(c, in, cfg, 1);
}
static ts_tensor *fn_sgd(ts_ctx *c, ts_tensor **in) {
    ts_optim_cfg cfg = { TS_OPTIM_SGD, 5e-2f, 0, 0, 0, 1e-2f, 0.9f };
    return run_optim(c, in, cfg, 0);
}

/* ---- fixed sin-cos position tables (the input is a placeholder: the tables take none) ---- */

static ts_tensor *fn_sincos_1d(ts_ctx *c, ts_tensor **in) {
    (void)in;
    ts_tensor *y = ts_new_f32(c, 2, TS_SHAPE(7, 12));
    ts_pos_embed_sincos_1d(ts_f32(y), 7, 12);
    return y;
}
static ts_tensor *fn_sincos_2d(ts_ctx *c, ts_tensor **in) {
    (void)in;
    ts_tensor *y = ts_new_f32(c, 2, TS_SHAPE(1 + 3 * 4, 16));
    ts_pos_embed_sincos_2d(ts_f32(y), 3, 4, 16, 1);
    return y;
}

const test_row rows_nn[] = {
    { "pos_sincos_1d", -1, NULL, fn_sincos_1d, 0, 1 },
    { "pos_sincos_2d_cls", -1, NULL, fn_sincos_2d, 0, 1 },
    { "drop_path", TS_OP_DROP_PATH, mk_drop_path, fn_drop_path, 0, 0 },
    { "nn_mlp_gelu", -1, mk_mlp, fn_mlp_gelu, 0, 1 },
    { "nn_mlp_quick_gelu", -1, mk_mlp, fn_mlp_quick, 0, 1 },
    { "nn_mha", -1, mk_mha, fn_mha, 0, 1 },
    { "nn_mha_causal", -1, mk_mha, fn_mha_causal, 0, 1 },
    { "nn_mha_key_padding", -1, mk_mha_pad, fn_mha_pad, 0, 1 },
    { "nn_block", -1, mk_block, fn_block, 0, 1 },
    { "nn_block_quick_gelu_causal", -1, mk_block, fn_block_quick_causal, 0, 1 },
    { "optim_adamw", -1, NULL, fn_adamw, 0, 1 },
    { "optim_adamw_no_decay", -1, NULL, fn_adamw_nodecay, 0, 1 },
    { "optim_sgd_momentum", -1, NULL, fn_sgd, 0, 1 },
    ROW_END,
};
