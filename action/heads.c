/* heads.c: action heads, observation tokens to a chunk of actions.
 *
 * Every head is a stack of pre-norm decoder blocks laid out as torch's
 * nn.TransformerDecoderLayer(d_model=W, nhead, dim_feedforward=mlp_ratio*W, dropout,
 * activation="gelu", batch_first=True, norm_first=True) inside nn.TransformerDecoder(...,
 * norm=LayerNorm(W)):
 *     x = x + self_attn(norm1(x));  x = x + multihead_attn(norm2(x), memory);
 *     x = x + linear2(dropout(gelu(linear1(norm3(x)))));   and decoder.norm at the end,
 * so a PyTorch state_dict of that module loads by name (PREFIX.decoder.layers.N.*). The memory
 * is the observation tokens projected to W (PREFIX.cond_proj). What the blocks read and what
 * comes out differs by kind:
 *   diffusion: the noised chunk (H tokens: PREFIX.input_proj A -> W, plus PREFIX.pos_embed),
 *              the memory led by a timestep token (Diffusion Policy's SinusoidalPosEmb(W), then
 *              PREFIX.time_mlp.0 Linear(W, 4W), Mish, PREFIX.time_mlp.2 Linear(4W, W)); the
 *              readout PREFIX.head (W -> A) predicts epsilon or the clean chunk.
 *   tokens:    BOS and the chunk's ids (PREFIX.tok_embed of vocab + 2 rows: the tokenizer's ids,
 *              then BOS and EOS; plus PREFIX.pos_embed), causal self-attention, the readout
 *              PREFIX.head (W -> vocab + 2) gives the next id.
 *   l1:        H learned queries (PREFIX.queries) and the readout PREFIX.head (W -> A).
 */
#include "action.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define HEAD_LN_EPS 1e-5f
#define IGNORE_ID (-100)

typedef struct xattn {
    ts_tensor *in_w, *in_b; /* (3W, W), (3W): q, k, v stacked as torch packs them */
    ts_nn_linear out;
    int dim, heads;
} xattn;

typedef struct dec_layer {
    ts_nn_mha self_attn;
    xattn cross;
    ts_nn_linear linear1, linear2;
    ts_nn_layernorm norm1, norm2, norm3;
} dec_layer;

struct ts_action_head {
    ts_head_cfg cfg;
    int V;                    /* tokens: the tokenizer's vocabulary; BOS = V, EOS = V + 1 */
    int T;                    /* tokens: input positions (max_len + 1) */
    ts_nn_linear cond_proj, input_proj, time0, time2, readout;
    ts_tensor *pos, *tok_embed, *queries;
    dec_layer *layers;
    ts_nn_layernorm norm;
    dec_layer *den_layers;    /* diffusion: the denoiser's blocks */
    ts_nn_layernorm den_norm;
    ts_diffusion sched;
};

/* ---- building ---- */

static void xattn_init(xattn *m, ts_params *p, const char *prefix, int dim, int heads) {
    char name[256];
    float bound = sqrtf(6.0f / (float)(dim + 3 * dim)); /* xavier_uniform_ of torch's MHA */
    m->in_w = ts_param(p, ts_pname(name, sizeof name, "%s.in_proj_weight", prefix), 2,
                       TS_SHAPE(3 * dim, dim), TS_INIT_U(-bound, bound), 0);
    m->in_b = ts_param(p, ts_pname(name, sizeof name, "%s.in_proj_bias", prefix), 1,
                       TS_SHAPE(3 * dim), TS_INIT_0, TS_PARAM_NO_DECAY);
    ts_nn_linear_init(&m->out, p, ts_pname(name, sizeof name, "%s.out_proj", prefix), dim, dim, 1);
    ts_param_set_init(p, m->out.b, TS_INIT_0);
    m->dim = dim;
    m->heads = heads;
}

ts_action_head *ts_action_head_new(ts_params *p, const char *prefix, const ts_head_cfg *cfg) {
    TS_CHECK(cfg->width > 0 && cfg->heads > 0 && cfg->width % cfg->heads == 0 && cfg->depth > 0,
             "action head: width %d, heads %d, depth %d", cfg->width, cfg->heads, cfg->depth);
    TS_CHECK(cfg->horizon > 0 && cfg->action_dim > 0 && cfg->cond_dim > 0,
             "action head: horizon %d, action_dim %d, cond_dim %d", cfg->horizon,
             cfg->action_dim, cfg->cond_dim);
    ts_action_head *h = calloc(1, sizeof *h);
    TS_CHECK(h != NULL, "out of memory");
    h->cfg = *cfg;
    int W = cfg->width, H = cfg->horizon, A = cfg->action_dim;
    int hidden = (int)(cfg->mlp_ratio * (float)W + 0.5f);
    char name[256];
    ts_nn_linear_init(&h->cond_proj, p, ts_pname(name, sizeof name, "%s.cond_proj", prefix),
                      cfg->cond_dim, W, 1);
    int out = A;
    if (cfg->kind == TS_HEAD_DIFFUSION) {
        TS_CHECK(cfg->train_steps >= 1 && cfg->infer_steps >= 1 &&
                 cfg->infer_steps <= cfg->train_steps, "action head: %d DDIM steps of %d",
                 cfg->infer_steps, cfg->train_steps);
        ts_diffusion_init(&h->sched, cfg->train_steps, (ts_pred_kind)cfg->prediction, 1);
        ts_nn_linear_init(&h->input_proj, p, ts_pname(name, sizeof name, "%s.input_proj", prefix),
                          A, W, 1);
        ts_nn_linear_init(&h->time0, p, ts_pname(name, sizeof name, "%s.time_mlp.0", prefix), W,
                          4 * W, 1);
        ts_nn_linear_init(&h->time2, p, ts_pname(name, sizeof name, "%s.time_mlp.2", prefix),
                          4 * W, W, 1);
        h->pos = ts_param(p, ts_pname(name, sizeof name, "%s.pos_embed", prefix), 3,
                          TS_SHAPE(1, H, W), TS_INIT_N(0.02f), TS_PARAM_NO_DECAY);
        h->queries = ts_param(p, ts_pname(name, sizeof name, "%s.queries", prefix), 3,
                              TS_SHAPE(1, H, W), TS_INIT_N(0.02f), TS_PARAM_NO_DECAY);
    } else if (cfg->kind == TS_HEAD_TOKENS) {
        TS_CHECK(cfg->tok && cfg->tok->horizon == H && cfg->tok->dim == A,
                 "action head: the tokens head needs a tokenizer of chunks %d x %d", H, A);
        h->V = cfg->tok->vocab;
        h->T = cfg->tok->max_len + 1;
        out = h->V + 2;
        h->tok_embed = ts_param(p, ts_pname(name, sizeof name, "%s.tok_embed", prefix), 2,
                                TS_SHAPE(h->V + 2, W), TS_INIT_N(0.02f), TS_PARAM_NO_DECAY);
        h->pos = ts_param(p, ts_pname(name, sizeof name, "%s.pos_embed", prefix), 3,
                          TS_SHAPE(1, h->T, W), TS_INIT_N(0.02f), TS_PARAM_NO_DECAY);
    } else {
        TS_CHECK(cfg->kind == TS_HEAD_L1, "action head: kind %d", cfg->kind);
        h->queries = ts_param(p, ts_pname(name, sizeof name, "%s.queries", prefix), 3,
                              TS_SHAPE(1, H, W), TS_INIT_N(0.02f), TS_PARAM_NO_DECAY);
    }
    h->layers = calloc((size_t)cfg->depth, sizeof *h->layers);
    h->den_layers = calloc((size_t)cfg->depth, sizeof *h->den_layers);
    TS_CHECK(h->layers && h->den_layers, "out of memory");
    for (int l = 0; l < (cfg->kind == TS_HEAD_DIFFUSION ? 2 : 1) * cfg->depth; l++) {
        int den = l >= cfg->depth;
        dec_layer *L = den ? &h->den_layers[l - cfg->depth] : &h->layers[l];
        char pre[200];
        snprintf(pre, sizeof pre, "%s.%s.layers.%d", prefix, den ? "denoiser" : "decoder",
                 den ? l - cfg->depth : l);
        ts_nn_mha_init(&L->self_attn, p, ts_pname(name, sizeof name, "%s.self_attn", pre), W,
                       cfg->heads);
        xattn_init(&L->cross, p, ts_pname(name, sizeof name, "%s.multihead_attn", pre), W,
                   cfg->heads);
        ts_nn_linear_init(&L->linear1, p, ts_pname(name, sizeof name, "%s.linear1", pre), W,
                          hidden, 1);
        ts_nn_linear_init(&L->linear2, p, ts_pname(name, sizeof name, "%s.linear2", pre), hidden,
                          W, 1);
        ts_nn_layernorm_init(&L->norm1, p, ts_pname(name, sizeof name, "%s.norm1", pre), W,
                             HEAD_LN_EPS);
        ts_nn_layernorm_init(&L->norm2, p, ts_pname(name, sizeof name, "%s.norm2", pre), W,
                             HEAD_LN_EPS);
        ts_nn_layernorm_init(&L->norm3, p, ts_pname(name, sizeof name, "%s.norm3", pre), W,
                             HEAD_LN_EPS);
    }
    ts_nn_layernorm_init(&h->norm, p, ts_pname(name, sizeof name, "%s.decoder.norm", prefix), W,
                         HEAD_LN_EPS);
    if (cfg->kind == TS_HEAD_DIFFUSION)
        ts_nn_layernorm_init(&h->den_norm, p,
                             ts_pname(name, sizeof name, "%s.denoiser.norm", prefix), W,
                             HEAD_LN_EPS);
    ts_nn_linear_init(&h->readout, p, ts_pname(name, sizeof name, "%s.head", prefix), W, out, 1);
    return h;
}

void ts_action_head_free(ts_action_head *h) {
    if (!h) return;
    ts_diffusion_free(&h->sched);
    free(h->layers);
    free(h->den_layers);
    free(h);
}

/* ---- the decoder ---- */

/* Cross-attention of x (B, Tq, W) to mem (B, Tk, W) with torch's packed in_proj: q from its
 * first W rows, k and v together from the other 2W (one product), attention on them as they
 * are laid out, then out_proj. */
static ts_tensor *xattn_forward(ts_ctx *c, const xattn *m, const ts_tensor *x,
                                const ts_tensor *mem) {
    int64_t W = m->dim;
    ts_tensor *wq = ts_slice(c, m->in_w, 0, 0, W), *bq = ts_slice(c, m->in_b, 0, 0, W);
    ts_tensor *wkv = ts_slice(c, m->in_w, 0, W, 3 * W);
    ts_tensor *bkv = ts_slice(c, m->in_b, 0, W, 3 * W);
    ts_tensor *o = ts_attention_kv(c, ts_linear(c, x, wq, bq), ts_linear(c, mem, wkv, bkv),
                                   m->heads, NULL, 0.0f);
    return ts_nn_linear_forward(c, &m->out, o);
}

static ts_tensor *time_embedding(ts_ctx *c, int64_t n, const int32_t *t, int W);

/* (1, T, W) -> (n, T, W), the same rows for every sample (the gradient sums over n). */
static ts_tensor *broadcast_batch(ts_ctx *c, ts_tensor *x, int64_t n) {
    int64_t T = ts_dim(x, 1), W = ts_dim(x, 2);
    return ts_add(c, ts_zeros(c, TS_F32, 3, TS_SHAPE(n, T, W)), ts_reshape(c, x, 2,
                                                                           TS_SHAPE(T, W)));
}

/* The blocks of layers over x with memory mem, then the final norm: (n, T, W). x may have a
 * batch of 1 (the same tokens for every sample): the first self-attention, which sees x only,
 * then runs once, and its result is broadcast to the memory's batch n. */
static ts_tensor *blocks(ts_ctx *c, const ts_action_head *h, const dec_layer *layers,
                         const ts_nn_layernorm *norm, ts_tensor *x, const ts_tensor *mem,
                         int causal) {
    float p = h->cfg.dropout;
    for (int l = 0; l < h->cfg.depth; l++) {
        const dec_layer *L = &layers[l];
        ts_tensor *a = ts_nn_mha_forward(c, &L->self_attn, ts_nn_layernorm_forward(c, &L->norm1, x),
                                         causal, NULL);
        x = ts_add(c, x, ts_dropout(c, a, p));
        if (ts_dim(x, 0) != ts_dim(mem, 0)) x = broadcast_batch(c, x, ts_dim(mem, 0));
        a = xattn_forward(c, &L->cross, ts_nn_layernorm_forward(c, &L->norm2, x), mem);
        x = ts_add(c, x, ts_dropout(c, a, p));
        /* linear1 then GELU as one fused bias + GELU after the bias-free product */
        a = ts_bias_gelu(c, ts_linear(c, ts_nn_layernorm_forward(c, &L->norm3, x), L->linear1.w,
                                      NULL), L->linear1.b);
        a = ts_nn_linear_forward(c, &L->linear2, ts_dropout(c, a, p));
        x = ts_add(c, x, ts_dropout(c, a, p));
    }
    return ts_nn_layernorm_forward(c, norm, x);
}

static ts_tensor *decode(ts_ctx *c, const ts_action_head *h, ts_tensor *x, const ts_tensor *mem,
                         int causal) {
    return ts_nn_linear_forward(c, &h->readout, blocks(c, h, h->layers, &h->norm, x, mem, causal));
}

/* diffusion and l1: the learned queries read the observation: (n, H, W). The queries are the
 * same for every sample, and so is the first block's self-attention over them unless dropout
 * draws a different mask per sample: without it, that part runs once for the batch. */
static ts_tensor *readout_context(ts_ctx *c, const ts_action_head *h, const ts_tensor *cond) {
    ts_tensor *mem = ts_nn_linear_forward(c, &h->cond_proj, cond);
    ts_tensor *q = h->queries; /* (1, H, W) */
    if (c->training && h->cfg.dropout > 0.0f) q = broadcast_batch(c, q, ts_dim(cond, 0));
    return blocks(c, h, h->layers, &h->norm, q, mem, 0);
}

/* diffusion: the denoiser over the noised chunk given the context (n, H, W) */
static ts_tensor *denoise(ts_ctx *c, const ts_action_head *h, const ts_tensor *ctx,
                          const ts_tensor *x, const int32_t *timesteps) {
    int64_t n = ts_dim(ctx, 0), H = h->cfg.horizon;
    int W = h->cfg.width;
    ts_tensor *te = time_embedding(c, n, timesteps, W);
    te = ts_nn_linear_forward(c, &h->time2, ts_mish(c, ts_nn_linear_forward(c, &h->time0, te)));
    te = ts_reshape(c, te, 3, TS_SHAPE(n, 1, W));
    ts_tensor *mem = ts_concat(c, (ts_tensor *[]){ te, (ts_tensor *)ctx }, 2, 1);
    ts_tensor *in = ts_add(c, ts_nn_linear_forward(c, &h->input_proj, x), ctx);
    in = ts_add(c, in, ts_reshape(c, h->pos, 2, TS_SHAPE(H, W)));
    /* the time embedding on every step's token, as well as in the memory */
    ts_tensor *rep[256];
    TS_CHECK(H <= 256, "action head: horizon %lld", (long long)H);
    for (int64_t k = 0; k < H; k++) rep[k] = te;
    in = ts_add(c, in, ts_concat(c, rep, (int)H, 1));
    return ts_nn_linear_forward(c, &h->readout, blocks(c, h, h->den_layers, &h->den_norm, in, mem,
                                                       0));
}

/* Diffusion Policy's SinusoidalPosEmb(W) of the timesteps: (n, W) = [sin(t f), cos(t f)] with
 * f_i = exp(-i log(10000) / (W/2 - 1)). */
static ts_tensor *time_embedding(ts_ctx *c, int64_t n, const int32_t *t, int W) {
    ts_tensor *e = ts_new_f32(c, 2, TS_SHAPE(n, W));
    int half = W / 2;
    double k = log(10000.0) / (double)(half > 1 ? half - 1 : 1);
    for (int64_t i = 0; i < n; i++)
        for (int j = 0; j < half; j++) {
            float f = (float)exp(-(double)j * k), a = (float)t[i] * f;
            ts_f32(e)[i * W + j] = sinf(a);
            ts_f32(e)[i * W + half + j] = cosf(a);
        }
    for (int64_t i = 0; W % 2 && i < n; i++) ts_f32(e)[i * W + W - 1] = 0.0f;
    return e;
}

ts_tensor *ts_action_head_forward(ts_ctx *c, ts_action_head *h, const ts_tensor *cond,
                                  const ts_tensor *x, const int32_t *timesteps) {
    const ts_head_cfg *cfg = &h->cfg;
    char s[96];
    TS_CHECK(cond->ndim == 3 && ts_dim(cond, 2) == cfg->cond_dim,
             "action head: cond is %s, expected (n, T, %d)", ts_shape_str(cond, s, sizeof s),
             cfg->cond_dim);
    int64_t n = ts_dim(cond, 0);
    int W = cfg->width;
    if (cfg->kind == TS_HEAD_DIFFUSION) {
        TS_CHECK(x && x->ndim == 3 && ts_dim(x, 0) == n && ts_dim(x, 1) == cfg->horizon &&
                 ts_dim(x, 2) == cfg->action_dim, "action head: x_t is %s",
                 x ? ts_shape_str(x, s, sizeof s) : "NULL");
        return denoise(c, h, readout_context(c, h, cond), x, timesteps);
    }
    if (cfg->kind == TS_HEAD_L1)
        return ts_nn_linear_forward(c, &h->readout, readout_context(c, h, cond));
    ts_tensor *mem = ts_nn_linear_forward(c, &h->cond_proj, cond);
    if (cfg->kind == TS_HEAD_TOKENS) {
        TS_CHECK(x && x->ndim == 2 && x->dtype == TS_I32 && ts_dim(x, 0) == n &&
                 ts_dim(x, 1) <= h->T, "action head: ids are %s (at most %d per row)",
                 x ? ts_shape_str(x, s, sizeof s) : "NULL", h->T);
        int64_t T = ts_dim(x, 1);
        ts_tensor *pos = T == h->T ? h->pos : ts_slice(c, h->pos, 1, 0, T);
        ts_tensor *in = ts_add(c, ts_embedding(c, h->tok_embed, x), ts_reshape(c, pos, 2,
                                                                               TS_SHAPE(T, W)));
        return decode(c, h, in, mem, 1);
    }
    (void)W;
    TS_CHECK(0, "action head: kind %d", cfg->kind);
    return NULL;
}

/* ---- losses ---- */

/* sum(w * e) / sum(w) over (n, H, A) with w the mask broadcast over H (all 1 without one). */
static ts_tensor *masked_mean(ts_ctx *c, ts_tensor *e, const ts_tensor *mask) {
    int64_t n = ts_dim(e, 0), H = ts_dim(e, 1), A = ts_dim(e, 2);
    if (!mask) return ts_mean(c, e, TS_ALL);
    ts_tensor *w = ts_new_f32(c, 3, TS_SHAPE(n, H, A));
    double total = 0;
    for (int64_t i = 0; i < n; i++)
        for (int64_t t = 0; t < H; t++)
            for (int64_t j = 0; j < A; j++) {
                float v = ts_f32(mask)[i * A + j];
                ts_f32(w)[(i * H + t) * A + j] = v;
                total += v;
            }
    return ts_scale(c, ts_sum(c, ts_mul(c, e, w), TS_ALL), total > 0 ? (float)(1.0 / total) : 0.f);
}

ts_tensor *ts_action_head_loss(ts_ctx *c, ts_action_head *h, const ts_tensor *cond,
                               const ts_tensor *actions, const ts_tensor *mask, ts_metrics *m) {
    const ts_head_cfg *cfg = &h->cfg;
    int64_t n = ts_dim(cond, 0), H = cfg->horizon, A = cfg->action_dim;
    char s[96];
    TS_CHECK(actions->ndim == 3 && ts_dim(actions, 0) == n && ts_dim(actions, 1) == H &&
             ts_dim(actions, 2) == A, "action head: actions are %s, expected (%lld, %lld, %lld)",
             ts_shape_str(actions, s, sizeof s), (long long)n, (long long)H, (long long)A);
    if (cfg->kind == TS_HEAD_DIFFUSION && cfg->noise_samples > 1) {
        /* K noised copies of every chunk against the same observation tokens */
        int K = cfg->noise_samples;
        ts_tensor *cs[64], *as[64], *ms[64];
        TS_CHECK(K <= 64, "action head: at most 64 noise samples");
        for (int k = 0; k < K; k++) {
            cs[k] = (ts_tensor *)cond;
            as[k] = (ts_tensor *)actions;
            ms[k] = (ts_tensor *)mask;
        }
        cond = ts_concat(c, cs, K, 0);
        actions = ts_concat(c, as, K, 0);
        if (mask) mask = ts_concat(c, ms, K, 0);
        n *= K;
    }
    if (cfg->kind == TS_HEAD_DIFFUSION) {
        int64_t nm = H * A;
        int32_t *t = ts_arena_alloc(c->step, (size_t)n * sizeof *t);
        ts_tensor *eps = ts_new_f32(c, 3, TS_SHAPE(n, H, A));
        ts_tensor *xt = ts_new_f32(c, 3, TS_SHAPE(n, H, A));
        for (int64_t i = 0; i < n; i++) t[i] = (int32_t)(ts_rng_next(&c->rng) % (uint64_t)cfg->train_steps);
        for (int64_t i = 0; i < n * nm; i++) ts_f32(eps)[i] = ts_rng_normal(&c->rng);
        ts_diffusion_add_noise(&h->sched, ts_f32(actions), ts_f32(eps), t, n, nm, ts_f32(xt));
        ts_tensor *pred = ts_action_head_forward(c, h, cond, xt, t);
        const ts_tensor *target = cfg->prediction == TS_PRED_EPSILON ? eps : actions;
        ts_tensor *d = ts_sub(c, pred, target);
        ts_tensor *loss = masked_mean(c, ts_mul(c, d, d), mask);
        if (m) ts_metrics_set(m, "diffusion_mse", ts_f32(loss)[0]);
        return loss;
    }
    if (cfg->kind == TS_HEAD_L1) {
        ts_tensor *pred = ts_action_head_forward(c, h, cond, NULL, NULL);
        ts_tensor *d = ts_sub(c, pred, actions);
        ts_tensor *a = ts_add(c, ts_relu(c, d), ts_relu(c, ts_scale(c, d, -1.0f)));
        ts_tensor *loss = masked_mean(c, a, mask);
        if (m) ts_metrics_set(m, "action_l1", ts_f32(loss)[0]);
        return loss;
    }
    /* tokens: inputs BOS t0 .. t(k-1) EOS.., targets t0 .. t(k-1) EOS ignored.. */
    const ts_act_tok *tok = cfg->tok;
    int T = h->T;
    ts_tensor *in = ts_new(c, TS_I32, 2, TS_SHAPE(n, T));
    ts_tensor *tg = ts_new(c, TS_I32, 1, TS_SHAPE(n * T));
    int32_t *ids = ts_arena_alloc(c->step, (size_t)tok->max_len * sizeof *ids);
    for (int64_t i = 0; i < n; i++) {
        int k = tok->encode(tok, ts_f32(actions) + i * H * A, ids);
        int32_t *row = ts_i32(in) + i * T, *trow = ts_i32(tg) + i * T;
        row[0] = h->V; /* BOS */
        for (int j = 1; j < T; j++) row[j] = j - 1 < k ? ids[j - 1] : h->V + 1;
        for (int j = 0; j < T; j++) trow[j] = j < k ? ids[j] : j == k ? h->V + 1 : IGNORE_ID;
    }
    ts_tensor *logits = ts_action_head_forward(c, h, cond, in, NULL);
    logits = ts_reshape(c, logits, 2, TS_SHAPE(n * T, h->V + 2));
    ts_tensor *loss = ts_cross_entropy(c, logits, tg, IGNORE_ID, 0.0f);
    if (m) {
        int64_t right = 0, counted = 0, K = h->V + 2;
        for (int64_t r = 0; r < n * T; r++) {
            int32_t y = ts_i32(tg)[r];
            if (y == IGNORE_ID) continue;
            const float *z = ts_f32(logits) + r * K;
            int64_t best = 0;
            for (int64_t k = 1; k < K; k++)
                if (z[k] > z[best]) best = k;
            right += best == y;
            counted++;
        }
        ts_metrics_set(m, "token_accuracy", counted ? (double)right / counted : 0.0);
    }
    return loss;
}

/* ---- inference ---- */

void ts_action_head_predict(ts_ctx *c, ts_action_head *h, const ts_tensor *cond, uint64_t seed,
                            float *out, int64_t *bad) {
    const ts_head_cfg *cfg = &h->cfg;
    int64_t n = ts_dim(cond, 0), H = cfg->horizon, A = cfg->action_dim, nm = H * A;
    int grad = c->grad_enabled, training = c->training;
    c->grad_enabled = 0;
    c->training = 0;
    if (cfg->kind == TS_HEAD_DIFFUSION) {
        ts_rng r;
        ts_rng_seed(&r, seed);
        for (int64_t i = 0; i < n * nm; i++) out[i] = ts_rng_normal(&r);
        int k = cfg->infer_steps;
        int32_t *ts = malloc((size_t)k * sizeof *ts), *tv = malloc((size_t)n * sizeof *tv);
        TS_CHECK(ts && tv, "out of memory");
        ts_diffusion_ddim_timesteps(&h->sched, k, ts);
        ts_tensor *ctx = readout_context(c, h, cond); /* once: it does not depend on x_t */
        for (int s = 0; s < k; s++) {
            ts_tensor *x = ts_from_f32(c, 3, TS_SHAPE(n, H, A), out);
            for (int64_t i = 0; i < n; i++) tv[i] = ts[s];
            ts_tensor *mo = denoise(c, h, ctx, x, tv);
            ts_diffusion_ddim_step(&h->sched, k, ts[s], ts_f32(mo), out, n * nm);
        }
        free(ts);
        free(tv);
    } else if (cfg->kind == TS_HEAD_L1) {
        ts_tensor *y = ts_action_head_forward(c, h, cond, NULL, NULL);
        memcpy(out, y->data, (size_t)(n * nm) * sizeof(float));
    } else {
        /* greedy decoding, the prefix run again for each new id */
        const ts_act_tok *tok = cfg->tok;
        int T = h->T, K = h->V + 2, fixed = !strcmp(tok->type, "bins");
        int32_t *seq = malloc((size_t)n * T * sizeof *seq);
        int *len = calloc((size_t)n, sizeof *len), *done = calloc((size_t)n, sizeof *done);
        TS_CHECK(seq && len && done, "out of memory");
        for (int64_t i = 0; i < n; i++) seq[i * T] = h->V;
        for (int j = 1; j < T; j++) {
            ts_tensor *in = ts_new(c, TS_I32, 2, TS_SHAPE(n, j));
            for (int64_t i = 0; i < n; i++)
                memcpy(ts_i32(in) + i * j, seq + i * T, (size_t)j * sizeof *seq);
            ts_tensor *logits = ts_action_head_forward(c, h, cond, in, NULL);
            for (int64_t i = 0; i < n; i++) {
                const float *z = ts_f32(logits) + ((size_t)i * j + j - 1) * K;
                int best = 0;
                /* a fixed-length tokenizer never ends early; BOS is never predicted */
                int last = fixed ? h->V : h->V + 2;
                for (int k = 1; k < last; k++)
                    if (k != h->V && z[k] > z[best]) best = k;
                if (!done[i] && best == h->V + 1) done[i] = 1;
                if (!done[i]) len[i]++;
                seq[i * T + j] = best;
            }
        }
        for (int64_t i = 0; i < n; i++) {
            ts_err err = { 0 };
            if (tok->decode(tok, seq + i * T + 1, len[i], out + i * nm, &err)) {
                memset(out + i * nm, 0, (size_t)nm * sizeof(float));
                if (bad) (*bad)++;
            }
        }
        free(seq);
        free(len);
        free(done);
    }
    ts_ctx_reset(c);
    c->grad_enabled = grad;
    c->training = training;
}

/* ---- the objective ---- */

static ts_tensor *obj_loss(ts_ctx *c, ts_objective *o, const ts_embeds *e, ts_metrics *m) {
    TS_CHECK(e->tokens && e->batch && e->batch->actions,
             "action objective: needs observation tokens and the batch's actions");
    return ts_action_head_loss(c, o->impl, e->tokens, e->batch->actions, e->batch->action_mask, m);
}

static void obj_free(ts_objective *o) { free(o); }

ts_objective *ts_objective_action_new(ts_action_head *h, float weight) {
    ts_objective *o = calloc(1, sizeof *o);
    TS_CHECK(o != NULL, "out of memory");
    static const char *const names[] = TS_HEAD_KIND_NAMES;
    *o = (ts_objective){ names[h->cfg.kind], weight, obj_loss, NULL, obj_free, h };
    return o;
}
