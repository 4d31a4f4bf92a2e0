/* task_mlm.c: masked-language pretraining of a bidirectional text encoder (model.type text_mlm).
 *
 * The encoder is the text tower of text/ built from the recipe's model.text section (causal
 * false, padding keys masked), the objective BERT's: 15% of the tokens that are not special
 * (start, end, padding) are chosen, 80% of those become a <mask> id, 10% a random id, 10% stay,
 * and the loss is the cross-entropy of the prediction head (text.h's ts_mlm_head, decoder tied to
 * the token embedding unless model.mlm.tied is false) on the chosen positions only: the others
 * carry ignore_index. The <mask> id is one past the tokenizer's vocabulary, so the tower's
 * vocab_size is the tokenizer's plus one.
 *
 * Data: the built-in corpus "shapes" writes sentences about two shapes and restates them the
 * other way round ("a small red square is above a big blue circle , so the big blue circle is
 * below the small red square"), so a masked word can be recovered from its other mention and the
 * relation from its inverse: a model that reads both directions can far exceed the unigram
 * baseline (always guessing the most frequent word). Sentences come from (seed, stream, batch
 * number), so the stream is endless, the same on every run and after a resume. Unless
 * data.tokenizer names a merges file, the tokenizer is trained at startup by the BPE trainer on
 * a fixed sample of the corpus (deterministic, no download). Evaluation masks a disjoint stream
 * and reports masked-token accuracy beside the unigram baseline of the same positions.
 *
 * What this file is not: a text data loader for files (loaders/ does that) or the encoder
 * registry of DESIGN.md's model/objective split; it is one built-in task.
 */
#include "cli.h"
#include "text.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct mlm_cfg {
    double mask_prob, p_mask, p_random;
    int tied;
} mlm_cfg;

static const ts_key mlm_keys[] = {
    TS_KEY(TS_KEY_FLOAT, mlm_cfg, mask_prob, "0.15", "share of the non-special tokens chosen"),
    TS_KEY(TS_KEY_FLOAT, mlm_cfg, p_mask, "0.8", "chosen tokens replaced by <mask>"),
    TS_KEY(TS_KEY_FLOAT, mlm_cfg, p_random, "0.1", "chosen tokens replaced by a random id"),
    TS_KEY(TS_KEY_BOOL, mlm_cfg, tied, "true", "decoder shares the token embedding"),
};

typedef struct mlm_data_cfg {
    int corpus;
    const char *tokenizer;
    int64_t bpe_vocab, bpe_sentences, batch_size, eval_batches;
} mlm_data_cfg;

static const char *const corpora[] = { "shapes", NULL };
static const ts_key data_keys[] = {
    TS_KEY_CHOICE(mlm_data_cfg, corpus, "shapes", corpora, "the built-in sentence generator"),
    TS_KEY(TS_KEY_STRING, mlm_data_cfg, tokenizer, "builtin",
           "builtin (train BPE on the corpus at startup) or a merges file"),
    TS_KEY(TS_KEY_INT, mlm_data_cfg, bpe_vocab, "1024", "builtin: BPE vocabulary size asked for"),
    TS_KEY(TS_KEY_INT, mlm_data_cfg, bpe_sentences, "4000", "builtin: sentences to train BPE on"),
    TS_KEY(TS_KEY_INT, mlm_data_cfg, batch_size, "64", "sentences per micro-batch"),
    TS_KEY(TS_KEY_INT, mlm_data_cfg, eval_batches, "8", "batches per evaluation"),
};

enum { IGNORE = -100 };

typedef struct mlm_task {
    ts_task base;
    mlm_cfg mc;
    mlm_data_cfg d;
    uint64_t seed;
    ts_tokenizer *tok;
    int32_t mask_id, sot, eot;
    ts_text tower;
    ts_mlm_head head;
} mlm_task;

/* ---- the built-in corpus ---- */

/* Every sentence has the same 20 words, so a word and its other mention sit at fixed distances
 * (the model can learn to look there by position alone); the padding after them still varies
 * with the context length. */
static const char *const sizes[] = { "small", "big", "tiny", "large" };
static const char *const colors[] = { "red", "blue", "green", "yellow",
                                      "purple", "orange", "black", "white" };
static const char *const shapes[] = { "square", "circle", "triangle", "star", "cube", "ball" };
/* Relations and their inverses, side by side. */
static const char *const relations[][2] = {
    { "above", "below" }, { "below", "above" }, { "behind", "before" }, { "before", "behind" },
    { "inside", "around" }, { "around", "inside" }, { "near", "near" },
};
#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static uint64_t pick(ts_rng *r, size_t n) { return ts_rng_next(r) % (uint64_t)n; }

/* One sentence into buf: two shapes, a relation, then the same stated from the other side. */
static void sentence(ts_rng *r, char *buf, size_t n) {
    const char *s1 = sizes[pick(r, COUNT(sizes))], *c1 = colors[pick(r, COUNT(colors))];
    const char *h1 = shapes[pick(r, COUNT(shapes))], *s2 = sizes[pick(r, COUNT(sizes))];
    const char *c2 = colors[pick(r, COUNT(colors))], *h2 = shapes[pick(r, COUNT(shapes))];
    size_t rel = pick(r, COUNT(relations));
    snprintf(buf, n, "a %s %s %s is %s a %s %s %s , so the %s %s %s is %s the %s %s %s", s1, c1,
             h1, relations[rel][0], s2, c2, h2, s2, c2, h2, relations[rel][1], s1, c1, h1);
}

static void stream_rng(const mlm_task *s, ts_rng *r, uint64_t stream, int64_t pos) {
    ts_rng_seed(r, s->seed ^ (stream * 0xd1b54a32d192ed03ull) ^ ((uint64_t)pos * 0x9e37ull) ^
                       0x6d6c6dull);
}

/* Train the BPE tokenizer on a fixed sample of the corpus (seed 0, its own stream): the
 * tokenizer does not depend on train.seed, so runs with other seeds share it. */
static ts_status builtin_tokenizer(mlm_task *s, ts_err *err) {
    const char *tmp = getenv("TMPDIR");
    char dir[512], corpus[600], merges[600];
    snprintf(dir, sizeof dir, "%s/tessera-mlm-XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
    if (!mkdtemp(dir)) return ts_fail(err, TS_ERR_IO, "%s: cannot make a temporary folder", dir);
    snprintf(corpus, sizeof corpus, "%s/corpus.txt", dir);
    snprintf(merges, sizeof merges, "%s/merges.txt.gz", dir);
    ts_status st = TS_OK;
    FILE *f = fopen(corpus, "w");
    if (!f) {
        st = ts_fail(err, TS_ERR_IO, "%s: cannot write the tokenizer corpus", corpus);
        goto done;
    }
    ts_rng r;
    ts_rng_seed(&r, 0x70636f7270757300ull);
    char line[512];
    for (int64_t i = 0; i < s->d.bpe_sentences; i++) {
        sentence(&r, line, sizeof line);
        fprintf(f, "%s\n", line);
    }
    if (fclose(f) != 0) {
        st = ts_fail(err, TS_ERR_IO, "%s: cannot write the tokenizer corpus", corpus);
        goto done;
    }
    const char *paths[] = { corpus };
    int n_merges = 0;
    if ((st = ts_bpe_train(paths, 1, (int)s->d.bpe_vocab, merges, &n_merges, err))) goto done;
    if ((st = ts_tokenizer_load(merges, &s->tok, err))) goto done;
    ts_log(TS_LOG_INFO, "text_mlm: BPE tokenizer trained on %lld built-in sentences: %d merges, "
           "vocabulary %d (+1 <mask>)", (long long)s->d.bpe_sentences, n_merges,
           ts_tokenizer_vocab_size(s->tok));
done:
    unlink(corpus);
    unlink(merges);
    rmdir(dir);
    return st;
}

/* ---- batches ---- */

typedef struct mlm_batch {
    ts_tensor *ids;     /* (B, L) i32, masked */
    ts_tensor *targets; /* (B * L) i32, the original id at chosen positions, IGNORE elsewhere */
    ts_tensor *key_pad; /* (B, L) u8, padding */
} mlm_batch;

/* Batch number pos of a stream (0 train, 1 eval): sentences, tokenised to L ids, masked. The
 * padding is found from each row's length, not from ids equal to pad_id, because a random
 * replacement may be id 0. */
static mlm_batch make_batch(mlm_task *s, ts_ctx *c, uint64_t stream, int64_t pos) {
    int64_t B = s->d.batch_size, L = s->tower.cfg.context_length;
    mlm_batch b;
    b.ids = ts_new(c, TS_I32, 2, TS_SHAPE(B, L));
    b.targets = ts_new(c, TS_I32, 1, TS_SHAPE(B * L));
    b.key_pad = ts_new(c, TS_U8, 2, TS_SHAPE(B, L));
    uint8_t *special = ts_arena_alloc(c->step, (size_t)(B * L));
    uint8_t *pad = b.key_pad->data;
    ts_rng r;
    stream_rng(s, &r, stream, pos);
    char line[512];
    for (int64_t i = 0; i < B; i++) {
        sentence(&r, line, sizeof line);
        int32_t *row = ts_i32(b.ids) + i * L;
        int n = ts_tokenizer_encode_context(s->tok, line, strlen(line), row, (int)L);
        for (int64_t t = 0; t < L; t++) {
            pad[i * L + t] = t >= n;
            special[i * L + t] = t >= n || row[t] == s->sot || row[t] == s->eot;
        }
    }
    ts_mlm_mask_cfg mcfg = {
        .mask_prob = (float)s->mc.mask_prob, .p_mask = (float)s->mc.p_mask,
        .p_random = (float)s->mc.p_random, .mask_id = s->mask_id, .random_lo = 0,
        .random_hi = s->sot, /* any id but the specials */
        .at_least_one = 1,
    };
    ts_mlm_mask(&r, &mcfg, ts_i32(b.ids), ts_i32(b.targets), special, B, L, IGNORE);
    return b;
}

/* Logits (B * L, V) of a masked batch. */
static ts_tensor *logits_of(mlm_task *s, ts_ctx *c, const mlm_batch *b) {
    int64_t B = ts_dim(b->ids, 0), L = ts_dim(b->ids, 1), V = s->tower.cfg.vocab_size;
    ts_tensor *tokens;
    ts_text_forward(c, &s->tower, b->ids, b->key_pad, &tokens);      /* tokens (B, L, C) */
    ts_tensor *logits = ts_mlm_head_forward(c, &s->head, tokens);     /* (B, L, V) */
    return ts_reshape(c, logits, 2, TS_SHAPE(B * L, V));
}

static ts_tensor *mlm_loss(ts_task *t, ts_ctx *c, int64_t pos, ts_metrics *m, ts_err *err) {
    (void)err;
    (void)m;
    mlm_task *s = t->impl;
    mlm_batch b = make_batch(s, c, 0, pos);
    return ts_cross_entropy(c, logits_of(s, c, &b), b.targets, IGNORE, 0.0f);
}

static ts_status mlm_eval(ts_task *t, ts_ctx *c, ts_metrics *m, ts_err *err) {
    (void)err;
    mlm_task *s = t->impl;
    int64_t V = s->tower.cfg.vocab_size, N = s->d.batch_size * s->tower.cfg.context_length;
    int64_t *count = calloc((size_t)V, sizeof *count);
    if (!count) return ts_fail(err, TS_ERR_NOMEM, "out of memory");
    int64_t ok = 0, total = 0;
    double loss = 0;
    for (int64_t i = 0; i < s->d.eval_batches; i++) {
        mlm_batch b = make_batch(s, c, 1, i);
        ts_tensor *logits = logits_of(s, c, &b);
        loss += ts_f32(ts_cross_entropy(c, logits, b.targets, IGNORE, 0.0f))[0];
        const float *lg = ts_f32(logits);
        const int32_t *y = ts_i32(b.targets);
        for (int64_t k = 0; k < N; k++) {
            if (y[k] == IGNORE) continue;
            const float *row = lg + k * V;
            int64_t best = 0;
            for (int64_t v = 1; v < V; v++)
                if (row[v] > row[best]) best = v;
            ok += best == y[k];
            count[y[k]]++;
            total++;
        }
        ts_ctx_reset(c);
    }
    /* The unigram baseline: the accuracy of always answering the most frequent target. */
    int64_t most = 0;
    for (int64_t v = 0; v < V; v++)
        if (count[v] > most) most = count[v];
    free(count);
    ts_metrics_set(m, "loss", loss / (double)s->d.eval_batches);
    ts_metrics_set(m, "masked_accuracy", total ? (double)ok / (double)total : 0.0);
    ts_metrics_set(m, "unigram_baseline", total ? (double)most / (double)total : 0.0);
    ts_metrics_set(m, "masked_tokens", (double)total);
    return TS_OK;
}

static void mlm_free(ts_task *t) {
    mlm_task *s = t->impl;
    ts_params_free(t->params);
    ts_text_free(&s->tower);
    ts_tokenizer_free(s->tok);
    free(s);
}

ts_status ts_task_mlm_new(ts_recipe *r, uint64_t seed, ts_task **out, ts_err *err) {
    *out = NULL;
    mlm_task *s = calloc(1, sizeof *s);
    if (!s) return ts_fail(err, TS_ERR_NOMEM, "out of memory");
    s->seed = seed;
    char where[512];
    ts_params *p = NULL;
    static const char *const model_keys[] = { "type", "text", "mlm", NULL };
    ts_status st = ts_recipe_only(r, "model", model_keys, err);
    if (!st)
        st = ts_recipe_section(r, "model.mlm", mlm_keys, (int)COUNT(mlm_keys), &s->mc, err);
    if (!st)
        st = ts_recipe_section(r, "data", data_keys, (int)COUNT(data_keys), &s->d, err);
    if (!st) st = ts_recipe_only(r, "eval", (const char *const[]){ NULL }, err); /* none */
    if (st) goto fail;
    if (!(s->mc.mask_prob > 0.0 && s->mc.mask_prob <= 1.0 && s->mc.p_mask >= 0.0 &&
          s->mc.p_random >= 0.0 && s->mc.p_mask + s->mc.p_random <= 1.0)) {
        st = ts_fail(err, TS_ERR_RECIPE, "%s: model.mlm: mask_prob must be in (0, 1], p_mask and "
                     "p_random non-negative with p_mask + p_random <= 1",
                     ts_recipe_where(r, "model.mlm", where, sizeof where));
        goto fail;
    }
    if (s->d.batch_size < 1 || s->d.eval_batches < 1 || s->d.bpe_vocab < 515 ||
        s->d.bpe_vocab > 49408 || s->d.bpe_sentences < 1) {
        st = ts_fail(err, TS_ERR_RECIPE, "%s: data.batch_size, eval_batches and bpe_sentences "
                     "must be positive, bpe_vocab in [515, 49408]",
                     ts_recipe_where(r, "data", where, sizeof where));
        goto fail;
    }

    if (!strcmp(s->d.tokenizer, "builtin")) st = builtin_tokenizer(s, err);
    else st = ts_tokenizer_load(s->d.tokenizer, &s->tok, err);
    if (st) goto fail;
    int tv = ts_tokenizer_vocab_size(s->tok);
    s->sot = ts_tokenizer_sot(s->tok);
    s->eot = ts_tokenizer_eot(s->tok);
    s->mask_id = tv; /* one past the tokenizer's ids */

    ts_text_cfg cfg;
    if ((st = ts_text_cfg_parse(r, "model.text", tv + 1, &cfg, err))) {
        if (strstr(err->msg, "vocab_size")) {
            size_t n = strlen(err->msg);
            snprintf(err->msg + n, sizeof err->msg - n, " (text_mlm: %d ids of the tokenizer "
                     "and its <mask> id)", tv);
        }
        goto fail;
    }
    if (cfg.causal) {
        st = ts_fail(err, TS_ERR_RECIPE, "%s: model.text.causal must be false for text_mlm (a "
                     "masked-language model reads both directions)",
                     ts_recipe_where(r, "model.text.causal", where, sizeof where));
        goto fail;
    }
    p = ts_params_new();
    ts_text_init(&s->tower, p, "", &cfg);
    ts_mlm_head_init(&s->head, p, "mlm_head.", &s->tower, s->mc.tied);
    if ((st = ts_params_finalize(p, seed, err))) goto fail;
    ts_log(TS_LOG_INFO, "text_mlm: bidirectional text encoder, width %d, %d layers, %d heads, "
           "context %d, vocabulary %d; %lld parameters", cfg.width, cfg.layers, cfg.heads,
           cfg.context_length, cfg.vocab_size, (long long)ts_params_numel(p, 1));
    s->base = (ts_task){ .type = "text_mlm", .params = p, .batch_size = s->d.batch_size,
                        .loss = mlm_loss, .eval = mlm_eval, .free = mlm_free, .impl = s };
    *out = &s->base;
    return TS_OK;
fail:
    ts_params_free(p);
    ts_text_free(&s->tower);
    ts_tokenizer_free(s->tok);
    free(s);
    return st;
}
