/* nn.c: the small building blocks every encoder is made of.
 *
 * Linear, layernorm, MLP, multi-head attention with torch's packed in_proj, the pre-norm
 * transformer block of open_clip, drop-path and the fixed sin-cos positional tables. Each block
 * is a struct of parameter pointers plus config, an *_init that registers the parameters under
 * ecosystem names, and a *_forward made of ops. There are no vtables here: a block is called by
 * name. What this file is not: a model. Models (ViT, CSWin, the text tower) live in their folders
 * and assemble these blocks.
 *
 * Shapes: B batch, T tokens, C width, H heads, D = C / H.
 */
#include "tessera-impl.h"

#include <math.h>
#include <stdlib.h>

/* ---- linear ---- */

void ts_nn_linear_init(ts_nn_linear *m, ts_params *p, const char *prefix, int in, int out,
                       int bias) {
    char name[256];
    /* torch.nn.Linear's defaults: kaiming-uniform(a = sqrt 5) for the weight, which is
     * U(-1/sqrt(in), 1/sqrt(in)), and the same bound for the bias */
    float bound = 1.0f / sqrtf((float)in);
    m->w = ts_param(p, ts_pname(name, sizeof name, "%s.weight", prefix), 2, TS_SHAPE(out, in),
                    TS_INIT_U(-bound, bound), 0);
    m->b = bias ? ts_param(p, ts_pname(name, sizeof name, "%s.bias", prefix), 1, TS_SHAPE(out),
                           TS_INIT_U(-bound, bound), TS_PARAM_NO_DECAY)
                : NULL;
}

ts_tensor *ts_nn_linear_forward(ts_ctx *c, const ts_nn_linear *m, const ts_tensor *x) {
    return ts_linear(c, x, m->w, m->b);
}

/* ---- layernorm ---- */

void ts_nn_layernorm_init(ts_nn_layernorm *m, ts_params *p, const char *prefix, int dim,
                          float eps) {
    char name[256];
    m->w = ts_param(p, ts_pname(name, sizeof name, "%s.weight", prefix), 1, TS_SHAPE(dim),
                    TS_INIT_1, TS_PARAM_NO_DECAY);
    m->b = ts_param(p, ts_pname(name, sizeof name, "%s.bias", prefix), 1, TS_SHAPE(dim),
                    TS_INIT_0, TS_PARAM_NO_DECAY);
    m->eps = eps;
}

ts_tensor *ts_nn_layernorm_forward(ts_ctx *c, const ts_nn_layernorm *m, const ts_tensor *x) {
    return ts_layernorm(c, x, m->w, m->b, m->eps);
}

/* ---- MLP ---- */

void ts_nn_mlp_init(ts_nn_mlp *m, ts_params *p, const char *prefix, int dim, int hidden,
                    ts_act act) {
    char name[256];
    ts_nn_linear_init(&m->fc, p, ts_pname(name, sizeof name, "%s.c_fc", prefix), dim, hidden, 1);
    ts_nn_linear_init(&m->proj, p, ts_pname(name, sizeof name, "%s.c_proj", prefix), hidden, dim,
                      1);
    m->act = act;
}

ts_tensor *ts_nn_mlp_forward(ts_ctx *c, const ts_nn_mlp *m, const ts_tensor *x) {
    ts_tensor *h;
    switch (m->act) {
    case TS_ACT_GELU: /* bias and GELU in one pass over the hidden activations */
        h = ts_bias_gelu(c, ts_linear(c, x, m->fc.w, NULL), m->fc.b);
        break;
    case TS_ACT_GELU_TANH: h = ts_gelu_tanh(c, ts_nn_linear_forward(c, &m->fc, x)); break;
    case TS_ACT_QUICK_GELU: h = ts_quick_gelu(c, ts_nn_linear_forward(c, &m->fc, x)); break;
    case TS_ACT_RELU: h = ts_relu(c, ts_nn_linear_forward(c, &m->fc, x)); break;
    default: TS_CHECK(0, "unknown activation %d", (int)m->act);
    }
    return ts_nn_linear_forward(c, &m->proj, h);
}

/* ---- multi-head attention ---- */

void ts_nn_mha_init(ts_nn_mha *m, ts_params *p, const char *prefix, int dim, int heads) {
    TS_CHECK(heads > 0 && dim % heads == 0, "attention %s: width %d is not divisible by %d heads",
             prefix, dim, heads);
    char name[256];
    /* xavier-uniform over the packed (3C, C) matrix, as torch.nn.MultiheadAttention does */
    float bound = sqrtf(6.0f / (float)(dim + 3 * dim));
    m->in_w = ts_param(p, ts_pname(name, sizeof name, "%s.in_proj_weight", prefix), 2,
                       TS_SHAPE(3 * dim, dim), TS_INIT_U(-bound, bound), 0);
    m->in_b = ts_param(p, ts_pname(name, sizeof name, "%s.in_proj_bias", prefix), 1,
                       TS_SHAPE(3 * dim), TS_INIT_0, TS_PARAM_NO_DECAY);
    /* out_proj: a Linear's weight, and a zero bias as MultiheadAttention resets it */
    float ob = 1.0f / sqrtf((float)dim);
    m->out.w = ts_param(p, ts_pname(name, sizeof name, "%s.out_proj.weight", prefix), 2,
                        TS_SHAPE(dim, dim), TS_INIT_U(-ob, ob), 0);
    m->out.b = ts_param(p, ts_pname(name, sizeof name, "%s.out_proj.bias", prefix), 1,
                        TS_SHAPE(dim), TS_INIT_0, TS_PARAM_NO_DECAY);
    m->dim = dim;
    m->heads = heads;
}

ts_tensor *ts_nn_mha_forward(ts_ctx *c, const ts_nn_mha *m, const ts_tensor *x, int causal,
                             const ts_tensor *key_pad) {
    int64_t C = m->dim, H = m->heads;
    char s[96];
    TS_CHECK(x->ndim == 3 && ts_dim(x, 2) == C, "attention: x is %s, expected (B, T, %lld)",
             ts_shape_str(x, s, sizeof s), (long long)C);
    /* The attention reads q, k and v straight out of the packed projection and writes the heads
     * side by side, so no permute or slice copies are made (op_attention.c). */
    ts_tensor *qkv = ts_linear(c, x, m->in_w, m->in_b);                 /* (B, T, 3C) */
    ts_tensor *o = ts__attention_packed(c, qkv, H, causal, key_pad, 0.0f); /* (B, T, C) */
    return ts_nn_linear_forward(c, &m->out, o);
}

/* ---- drop-path ---- */

/* Stochastic depth: each sample's residual branch is kept with probability 1 - p and scaled by
 * 1 / (1 - p), so the expectation is unchanged. The keep factors (B) are saved for backward. */
static void drop_path_backward(ts_ctx *c, ts_node *n) {
    ts_tensor *x = n->in[0];
    const float *keep = ts_f32(n->saved[0]), *dy = ts_f32(n->out->grad);
    float beta;
    float *dx = ts__grad_adopt(c, n, x, &beta); /* written over dy when it can */
    if (!dx) return;
    int64_t B = x->shape[0], per = x->numel / B;
    for (int64_t b = 0; b < B; b++)
        for (int64_t i = 0; i < per; i++)
            dx[b * per + i] = (beta == 0.0f ? 0.0f : dx[b * per + i]) + keep[b] * dy[b * per + i];
}

ts_tensor *ts_nn_drop_path(ts_ctx *c, const ts_tensor *x, float p) {
    if (!c->training || p <= 0.0f) return (ts_tensor *)x;
    TS_CHECK(p < 1.0f, "drop_path: probability %g must be below 1", p);
    ts__check_f32("drop_path", x);
    int64_t B = x->shape[0], per = x->numel / B;
    ts_tensor *keep = ts_new_f32(c, 1, TS_SHAPE(B));
    for (int64_t b = 0; b < B; b++)
        ts_f32(keep)[b] = ts_rng_uniform(&c->rng) >= p ? 1.0f / (1.0f - p) : 0.0f;
    ts_tensor *y = ts_new_like(c, x);
    const float *xd = ts_f32(x);
    float *yd = ts_f32(y);
    for (int64_t b = 0; b < B; b++)
        for (int64_t i = 0; i < per; i++) yd[b * per + i] = ts_f32(keep)[b] * xd[b * per + i];
    ts_node *n = TS__RECORD(c, TS_OP_DROP_PATH, drop_path_backward, y, x);
    if (n) n->saved[0] = keep;
    return y;
}

/* ---- transformer block ---- */

void ts_nn_block_init(ts_nn_block *m, ts_params *p, const char *prefix, int dim, int heads,
                      float mlp_ratio, ts_act act, float ln_eps, float drop_path) {
    char name[256];
    ts_nn_layernorm_init(&m->ln_1, p, ts_pname(name, sizeof name, "%s.ln_1", prefix), dim,
                         ln_eps);
    ts_nn_mha_init(&m->attn, p, ts_pname(name, sizeof name, "%s.attn", prefix), dim, heads);
    ts_nn_layernorm_init(&m->ln_2, p, ts_pname(name, sizeof name, "%s.ln_2", prefix), dim,
                         ln_eps);
    ts_nn_mlp_init(&m->mlp, p, ts_pname(name, sizeof name, "%s.mlp", prefix), dim,
                   (int)(dim * mlp_ratio), act);
    m->drop_path = drop_path;
}

ts_tensor *ts_nn_block_forward(ts_ctx *c, const ts_nn_block *m, const ts_tensor *x, int causal,
                               const ts_tensor *key_pad) {
    ts_tensor *h = ts_nn_mha_forward(c, &m->attn, ts_nn_layernorm_forward(c, &m->ln_1, x), causal,
                                     key_pad);
    x = ts_add(c, x, ts_nn_drop_path(c, h, m->drop_path));
    h = ts_nn_mlp_forward(c, &m->mlp, ts_nn_layernorm_forward(c, &m->ln_2, x));
    return ts_add(c, x, ts_nn_drop_path(c, h, m->drop_path));
}

/* ---- fixed positional tables ---- */

/* 1-d: row t is [sin(t w_0), ..., sin(t w_{C/2-1}), cos(t w_0), ...] with
 * w_i = 1 / 10000^(2i / C), the layout of MAE's get_1d_sincos_pos_embed_from_grid. */
static void sincos_row(float *out, int C, double pos) {
    int half = C / 2;
    for (int i = 0; i < half; i++) {
        double w = 1.0 / pow(10000.0, (double)i / half);
        out[i] = (float)sin(pos * w);
        out[half + i] = (float)cos(pos * w);
    }
}

void ts_pos_embed_sincos_1d(float *out, int T, int C) {
    TS_CHECK(C % 2 == 0, "sin-cos embedding needs an even width, got %d", C);
    for (int t = 0; t < T; t++) sincos_row(out + (size_t)t * C, C, t);
}

/* 2-d as MAE: the first half of the channels encodes the column (w) index, the second half the
 * row (h) index; with cls_token a zero row comes first. */
void ts_pos_embed_sincos_2d(float *out, int gh, int gw, int C, int cls_token) {
    TS_CHECK(C % 4 == 0, "2-d sin-cos embedding needs a width divisible by 4, got %d", C);
    if (cls_token) {
        memset(out, 0, (size_t)C * sizeof(float));
        out += C;
    }
    for (int i = 0; i < gh; i++)
        for (int j = 0; j < gw; j++) {
            float *row = out + ((size_t)i * gw + j) * C;
            sincos_row(row, C / 2, j);
            sincos_row(row + C / 2, C / 2, i);
        }
}
