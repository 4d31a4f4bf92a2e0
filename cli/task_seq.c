/* task_seq.c: the built-in synthetic sequence task of the quickstart.
 *
 * A small bidirectional transformer reads T random tokens and predicts, at every position, the
 * token of a target sequence derived from the input: the input reversed, sorted, or copied.
 * Each sample is generated on its own from (seed, stream, batch number, sample index), so the
 * data stream is endless, needs no files, is the same on every run and after a resume, and
 * any rank of a data-parallel run can build its share of a global batch without the rest: rank
 * r of N takes samples [r*B/N, (r+1)*B/N). Evaluation uses a disjoint stream, always whole
 * batches, and reports token and whole-sequence accuracy (chance is 1/vocab per token).
 *
 * It is a demonstration and a test of the trainer, not a benchmark of anything else.
 */
#include "cli.h"

#include <stdlib.h>
#include <string.h>

typedef struct seq_model_cfg {
    int type;
    int64_t width, layers, heads;
    double mlp_ratio, ln_eps, drop_path;
    int act;
} seq_model_cfg;

typedef struct seq_data_cfg {
    int task;
    int64_t vocab, seq_len, batch_size, eval_batches;
} seq_data_cfg;

static const char *const model_types[] = { "seq_transformer", NULL };
static const char *const acts[] = { "gelu", "gelu_tanh", "quick_gelu", "relu", NULL };
static const ts_key model_keys[] = {
    TS_KEY_CHOICE(seq_model_cfg, type, NULL, model_types, "model type"),
    TS_KEY(TS_KEY_INT, seq_model_cfg, width, "64", "model width C"),
    TS_KEY(TS_KEY_INT, seq_model_cfg, layers, "2", "transformer blocks"),
    TS_KEY(TS_KEY_INT, seq_model_cfg, heads, "4", "attention heads"),
    TS_KEY(TS_KEY_FLOAT, seq_model_cfg, mlp_ratio, "4.0", "MLP hidden width / C"),
    TS_KEY(TS_KEY_FLOAT, seq_model_cfg, ln_eps, "1e-5", "layernorm epsilon"),
    TS_KEY(TS_KEY_FLOAT, seq_model_cfg, drop_path, "0.0", "stochastic depth rate"),
    TS_KEY_CHOICE(seq_model_cfg, act, "gelu", acts, "MLP activation"),
};

enum { SEQ_REVERSE, SEQ_SORT, SEQ_COPY };
static const char *const seq_tasks[] = { "reverse", "sort", "copy", NULL };
static const ts_key data_keys[] = {
    TS_KEY_CHOICE(seq_data_cfg, task, "reverse", seq_tasks, "what the target is"),
    TS_KEY(TS_KEY_INT, seq_data_cfg, vocab, "16", "token values"),
    TS_KEY(TS_KEY_INT, seq_data_cfg, seq_len, "12", "tokens per sequence"),
    TS_KEY(TS_KEY_INT, seq_data_cfg, batch_size, "64", "sequences per micro-batch"),
    TS_KEY(TS_KEY_INT, seq_data_cfg, eval_batches, "8", "batches per evaluation"),
};

typedef struct seq_task {
    ts_task base;
    seq_model_cfg m;
    seq_data_cfg d;
    uint64_t seed;
    ts_tensor *tok_emb;  /* (V, C) */
    ts_tensor *pos_emb;  /* (T, C) */
    ts_nn_block *blocks; /* layers */
    ts_nn_layernorm ln_final;
    ts_nn_linear head;   /* (V, C) */
} seq_task;

/* splitmix64's finaliser: every input bit changes every output bit with probability 1/2. */
static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Inputs (B, T) and targets (B*T) of samples [lo, hi) of batch number pos of a stream, B =
 * hi - lo. Sample i of a batch depends on (seed, stream, pos, i) only. */
static void make_batch(const seq_task *s, ts_ctx *c, uint64_t stream, int64_t pos, int64_t lo,
                       int64_t hi, ts_tensor **x, ts_tensor **y) {
    int64_t B = hi - lo, T = s->d.seq_len, V = s->d.vocab;
    *x = ts_new(c, TS_I32, 2, TS_SHAPE(B, T));
    *y = ts_new(c, TS_I32, 1, TS_SHAPE(B * T));
    uint64_t batch_key = mix64(mix64(s->seed ^ (stream * 0xd1b54a32d192ed03ull)) + (uint64_t)pos);
    int32_t *xi = ts_i32(*x), *yi = ts_i32(*y);
    for (int64_t b = 0; b < B; b++) {
        ts_rng r;
        ts_rng_seed(&r, mix64(batch_key + (uint64_t)(lo + b) * 0x9e3779b97f4a7c15ull));
        int32_t *in = xi + b * T, *out = yi + b * T;
        for (int64_t t = 0; t < T; t++) in[t] = (int32_t)(ts_rng_next(&r) % (uint64_t)V);
        switch (s->d.task) {
        case SEQ_REVERSE:
            for (int64_t t = 0; t < T; t++) out[t] = in[T - 1 - t];
            break;
        case SEQ_COPY: memcpy(out, in, (size_t)T * sizeof *out); break;
        case SEQ_SORT: {
            int64_t count[1024] = { 0 };
            for (int64_t t = 0; t < T; t++) count[in[t]]++;
            int64_t k = 0;
            for (int64_t v = 0; v < V; v++)
                while (count[v]--) out[k++] = (int32_t)v;
            break;
        }
        }
    }
}

static ts_tensor *logits_of(seq_task *s, ts_ctx *c, const ts_tensor *x) {
    int64_t B = ts_dim(x, 0), T = ts_dim(x, 1), V = s->d.vocab;
    ts_tensor *h = ts_add(c, ts_embedding(c, s->tok_emb, x), s->pos_emb); /* (B, T, C) */
    for (int64_t l = 0; l < s->m.layers; l++)
        h = ts_nn_block_forward(c, &s->blocks[l], h, 0, NULL);
    h = ts_nn_layernorm_forward(c, &s->ln_final, h);
    ts_tensor *logits = ts_nn_linear_forward(c, &s->head, h);            /* (B, T, V) */
    return ts_reshape(c, logits, 2, TS_SHAPE(B * T, V));
}

static ts_tensor *seq_loss(ts_task *t, ts_ctx *c, int64_t pos, ts_metrics *m, ts_err *err) {
    (void)err;
    seq_task *s = t->impl;
    ts_tensor *x, *y;
    int64_t B = s->d.batch_size; /* the global batch; this rank builds its share of it */
    int64_t N = c->world > 1 ? c->world : 1;
    make_batch(s, c, 0, pos, c->rank * B / N, (c->rank + 1) * B / N, &x, &y);
    ts_tensor *loss = ts_cross_entropy(c, logits_of(s, c, x), y, -100, 0.0f);
    (void)m;
    return loss;
}

static ts_status seq_eval(ts_task *t, ts_ctx *c, ts_metrics *m, ts_err *err) {
    (void)err;
    seq_task *s = t->impl;
    int64_t B = s->d.batch_size, T = s->d.seq_len, V = s->d.vocab;
    int64_t tok_ok = 0, seq_ok = 0;
    double loss = 0;
    for (int64_t i = 0; i < s->d.eval_batches; i++) {
        ts_tensor *x, *y;
        make_batch(s, c, 1, i, 0, B, &x, &y);
        ts_tensor *logits = logits_of(s, c, x);
        loss += ts_f32(ts_cross_entropy(c, logits, y, -100, 0.0f))[0];
        const float *lg = ts_f32(logits);
        for (int64_t b = 0; b < B; b++) {
            int all = 1;
            for (int64_t k = 0; k < T; k++) {
                const float *row = lg + (b * T + k) * V;
                int64_t best = 0;
                for (int64_t v = 1; v < V; v++)
                    if (row[v] > row[best]) best = v;
                int ok = best == ts_i32(y)[b * T + k];
                tok_ok += ok;
                all &= ok;
            }
            seq_ok += all;
        }
        ts_ctx_reset(c);
    }
    ts_metrics_set(m, "loss", loss / (double)s->d.eval_batches);
    ts_metrics_set(m, "accuracy", (double)tok_ok / (double)(s->d.eval_batches * B * T));
    ts_metrics_set(m, "seq_accuracy", (double)seq_ok / (double)(s->d.eval_batches * B));
    return TS_OK;
}

static void seq_free(ts_task *t) {
    seq_task *s = t->impl;
    ts_params_free(t->params);
    free(s->blocks);
    free(s);
}

ts_status ts_task_seq_new(ts_recipe *r, uint64_t seed, ts_task **out, ts_err *err) {
    seq_task *s = calloc(1, sizeof *s);
    if (!s) return ts_fail(err, TS_ERR_NOMEM, "out of memory");
    ts_status st = ts_recipe_section(r, "model", model_keys,
                                     (int)(sizeof model_keys / sizeof model_keys[0]), &s->m, err);
    if (!st)
        st = ts_recipe_section(r, "data", data_keys, (int)(sizeof data_keys / sizeof data_keys[0]),
                               &s->d, err);
    if (!st) st = ts_recipe_only(r, "eval", (const char *const[]){ NULL }, err); /* none */
    if (st) {
        free(s);
        return st;
    }
    char where[512];
    if (s->m.width <= 0 || s->m.heads <= 0 || s->m.width % s->m.heads != 0 ||
        s->m.layers < 0) {
        st = ts_fail(err, TS_ERR_RECIPE, "%s: model.width %lld must be a positive multiple "
                     "of model.heads %lld", ts_recipe_where(r, "model.width", where,
                     sizeof where), (long long)s->m.width, (long long)s->m.heads);
        free(s);
        return st;
    }
    if (s->d.vocab < 2 || s->d.vocab > 1024 || s->d.seq_len < 1 || s->d.batch_size < 1) {
        free(s);
        return ts_fail(err, TS_ERR_RECIPE, "%s: data.vocab must be in [2, 1024], data.seq_len "
                       "and data.batch_size positive", ts_recipe_where(r, "data", where,
                       sizeof where));
    }
    s->seed = seed;
    int64_t C = s->m.width, V = s->d.vocab, T = s->d.seq_len;
    ts_params *p = ts_params_new();
    s->tok_emb = ts_param(p, "token_embedding.weight", 2, TS_SHAPE(V, C), TS_INIT_N(0.02f),
                          TS_PARAM_NO_DECAY);
    s->pos_emb = ts_param(p, "positional_embedding", 2, TS_SHAPE(T, C), TS_INIT_N(0.01f),
                          TS_PARAM_NO_DECAY);
    s->blocks = calloc((size_t)s->m.layers, sizeof *s->blocks);
    char name[128];
    static const ts_act act_of[] = { TS_ACT_GELU, TS_ACT_GELU_TANH, TS_ACT_QUICK_GELU,
                                     TS_ACT_RELU };
    for (int64_t l = 0; l < s->m.layers; l++)
        ts_nn_block_init(&s->blocks[l], p,
                         ts_pname(name, sizeof name, "transformer.resblocks.%lld", (long long)l),
                         (int)C, (int)s->m.heads, (float)s->m.mlp_ratio, act_of[s->m.act],
                         (float)s->m.ln_eps, (float)s->m.drop_path);
    ts_nn_layernorm_init(&s->ln_final, p, "ln_final", (int)C, (float)s->m.ln_eps);
    ts_nn_linear_init(&s->head, p, "head", (int)C, (int)V, 1);
    if ((st = ts_params_finalize(p, seed, err))) {
        ts_params_free(p);
        free(s->blocks);
        free(s);
        return st;
    }
    s->base = (ts_task){ .type = "seq_transformer", .params = p, .batch_size = s->d.batch_size,
                        .loss = seq_loss, .eval = seq_eval, .free = seq_free, .impl = s };
    *out = &s->base;
    return TS_OK;
}
