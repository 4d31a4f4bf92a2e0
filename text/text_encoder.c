/* text_encoder.c: the CLIP text transformer, as open_clip's TextTransformer builds it, and a
 * BERT-style masked-language-modelling head.
 *
 * ids -> token_embedding -> + positional_embedding -> transformer.resblocks (causal for CLIP,
 * or bidirectional with padding keys masked) -> ln_final -> pool (the row of the largest id,
 * which is CLIP's <end_of_text>, or eos / first / last) -> @ text_projection. Everything is made
 * of core ops and core blocks, so the tape gives the backward. Beside the tower: open_clip's
 * model configs by name, the recipe section that builds one, the parameter count, a checkpoint
 * loader, and the pieces of masked-language pretraining (the head and the 80/10/10 masking).
 *
 * What this file is not: open_clip's rarer text options (an appended class token as CoCa,
 * layer scale, a biased projection, Hugging Face towers), and not the training task
 * (cli/task_mlm.c builds the corpus, the tokenizer and the loss).
 *
 * Shapes: B batch, L input tokens, T context length, C width, E out_dim, V vocabulary.
 */
#include "text.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- configurations by name ---- */

/* open_clip's model configs (open_clip_torch 3.3.0): text_cfg width, heads, layers (context 77,
 * vocabulary 49408 and mlp_ratio 4 in all of these) and the model's embed_dim. */
typedef struct named_cfg {
    const char *name;
    int width, heads, layers, out_dim;
} named_cfg;

static const named_cfg named[] = {
    { "RN50", 512, 8, 12, 1024 },
    { "ViT-S-32", 384, 6, 12, 384 },
    { "ViT-S-16", 384, 6, 12, 384 },
    { "ViT-M-32", 512, 8, 12, 512 },
    { "ViT-M-16", 512, 8, 12, 512 },
    { "ViT-B-32", 512, 8, 12, 512 },
    { "ViT-B-32-256", 512, 8, 12, 512 },
    { "ViT-B-16", 512, 8, 12, 512 },
    { "ViT-B-16-plus", 640, 10, 12, 640 },
    { "ViT-B-16-plus-240", 640, 10, 12, 640 },
    { "ViT-L-14", 768, 12, 12, 768 },
    { "ViT-L-14-336", 768, 12, 12, 768 },
    { "ViT-L-16", 768, 12, 12, 768 },
    { "ViT-H-14", 1024, 16, 24, 1024 },
    { "ViT-H-16", 1024, 16, 24, 1024 },
    { "ViT-g-14", 1024, 16, 24, 1024 },
    { "ViT-bigG-14", 1280, 20, 32, 1280 },
};
enum { NNAMED = (int)(sizeof named / sizeof named[0]) };

const char *const ts_text_cfg_names[] = {
    "RN50", "ViT-S-32", "ViT-S-16", "ViT-M-32", "ViT-M-16", "ViT-B-32", "ViT-B-32-256",
    "ViT-B-16", "ViT-B-16-plus", "ViT-B-16-plus-240", "ViT-L-14", "ViT-L-14-336", "ViT-L-16",
    "ViT-H-14", "ViT-H-16", "ViT-g-14", "ViT-bigG-14", NULL,
};
_Static_assert(sizeof ts_text_cfg_names / sizeof ts_text_cfg_names[0] == NNAMED + 1,
               "ts_text_cfg_names must list every named configuration");

ts_status ts_text_cfg_named(const char *name, ts_text_cfg *cfg, ts_err *err) {
    static const char quick[] = "-quickgelu";
    size_t n = strlen(name), q = sizeof quick - 1;
    int is_quick = n > q && strcmp(name + n - q, quick) == 0;
    size_t base = is_quick ? n - q : n;
    for (int i = 0; i < NNAMED; i++) {
        const named_cfg *d = &named[i];
        if (strlen(d->name) != base || strncmp(d->name, name, base) != 0) continue;
        *cfg = (ts_text_cfg){
            .context_length = TS_CLIP_CONTEXT, .vocab_size = 49408, .width = d->width,
            .layers = d->layers, .heads = d->heads, .mlp_ratio = 4.0f, .out_dim = d->out_dim,
            .act = is_quick ? TS_ACT_QUICK_GELU : TS_ACT_GELU, .causal = 1, .pad_mask = 0,
            .pad_id = 0, .eos_id = 49407, .pool = TS_TEXT_POOL_ARGMAX, .ln_eps = 1e-5f,
            .drop_path = 0.0f,
        };
        return TS_OK;
    }
    char list[1024];
    size_t len = 0;
    for (int i = 0; i < NNAMED && len < sizeof list; i++)
        len += (size_t)snprintf(list + len, sizeof list - len, "%s%s", i ? ", " : "",
                                named[i].name);
    return ts_fail(err, TS_ERR_RECIPE,
                   "unknown text configuration '%s'; valid: %s (each also with -quickgelu)", name,
                   list);
}

ts_status ts_text_cfg_check(const ts_text_cfg *cfg, ts_err *err) {
    if (cfg->context_length < 1)
        return ts_fail(err, TS_ERR_RECIPE, "text: context_length must be at least 1, got %d",
                       cfg->context_length);
    if (cfg->vocab_size < 1)
        return ts_fail(err, TS_ERR_RECIPE, "text: vocab_size must be at least 1, got %d",
                       cfg->vocab_size);
    if (cfg->layers < 0)
        return ts_fail(err, TS_ERR_RECIPE, "text: layers must be 0 or more, got %d", cfg->layers);
    if (cfg->width < 1 || cfg->heads < 1 || cfg->width % cfg->heads != 0)
        return ts_fail(err, TS_ERR_RECIPE, "text: width %d is not divisible by %d heads",
                       cfg->width, cfg->heads);
    if (!(cfg->mlp_ratio > 0.0f) || (int)(cfg->width * cfg->mlp_ratio) < 1)
        return ts_fail(err, TS_ERR_RECIPE, "text: mlp_ratio %g gives no hidden units",
                       (double)cfg->mlp_ratio);
    if (cfg->out_dim < 0)
        return ts_fail(err, TS_ERR_RECIPE, "text: out_dim must be 0 (no projection) or more, "
                       "got %d", cfg->out_dim);
    if (cfg->act != TS_ACT_GELU && cfg->act != TS_ACT_QUICK_GELU)
        return ts_fail(err, TS_ERR_RECIPE, "text: activation must be gelu or quick_gelu");
    if ((int)cfg->pool < TS_TEXT_POOL_ARGMAX || cfg->pool > TS_TEXT_POOL_LAST)
        return ts_fail(err, TS_ERR_RECIPE, "text: pooling must be argmax, eos, first or last");
    if (!(cfg->ln_eps > 0.0f))
        return ts_fail(err, TS_ERR_RECIPE, "text: ln_eps %g must be positive",
                       (double)cfg->ln_eps);
    if (!(cfg->drop_path >= 0.0f && cfg->drop_path < 1.0f))
        return ts_fail(err, TS_ERR_RECIPE, "text: drop_path %g is not in [0, 1)",
                       (double)cfg->drop_path);
    return TS_OK;
}

/* ---- the recipe section ---- */

/* The key table reads into this struct (the recipe's integer and float types); it is copied
 * into a ts_text_cfg afterwards. */
typedef struct text_keys {
    int type;
    const char *config;
    int64_t context_length, vocab_size, width, layers, heads, out_dim, pad_id, eos_id;
    double mlp_ratio, ln_eps, drop_path;
    int act, causal, pad_mask, pooling;
} text_keys;

static const char *const text_types[] = { "text", NULL };
static const char *const text_acts[] = { "gelu", "quick_gelu", NULL };
static const char *const text_pools[] = { "argmax", "eos", "first", "last", NULL };
static const ts_key text_key_table[] = {
    TS_KEY_CHOICE(text_keys, type, NULL, text_types, "encoder type"),
    TS_KEY(TS_KEY_STRING, text_keys, config, "\"\"",
           "open_clip model config whose text tower gives the defaults, e.g. ViT-B-32"),
    TS_KEY(TS_KEY_INT, text_keys, context_length, "77", "T, the longest token sequence"),
    TS_KEY(TS_KEY_INT, text_keys, vocab_size, "0", "V; 0 = the tokenizer's vocabulary"),
    TS_KEY(TS_KEY_INT, text_keys, width, "512", "C"),
    TS_KEY(TS_KEY_INT, text_keys, layers, "12", "transformer blocks"),
    TS_KEY(TS_KEY_INT, text_keys, heads, "8", "attention heads"),
    TS_KEY(TS_KEY_FLOAT, text_keys, mlp_ratio, "4.0", "MLP hidden width / C"),
    TS_KEY(TS_KEY_INT, text_keys, out_dim, "512", "E, text_projection columns; 0 = none"),
    TS_KEY_CHOICE(text_keys, act, "gelu", text_acts, "MLP activation"),
    TS_KEY(TS_KEY_BOOL, text_keys, causal, "true", "causal mask (CLIP) or bidirectional"),
    TS_KEY(TS_KEY_BOOL, text_keys, pad_mask, "true", "bidirectional: mask pad_id keys"),
    TS_KEY(TS_KEY_INT, text_keys, pad_id, "0", "the padding id"),
    TS_KEY(TS_KEY_INT, text_keys, eos_id, "49407", "the end-of-text id for pooling: eos"),
    TS_KEY_CHOICE(text_keys, pooling, "argmax", text_pools, "how tokens become one vector"),
    TS_KEY(TS_KEY_FLOAT, text_keys, ln_eps, "1e-5", "layernorm epsilon"),
    TS_KEY(TS_KEY_FLOAT, text_keys, drop_path, "0.0", "stochastic depth rate"),
};
enum { NKEYS = (int)(sizeof text_key_table / sizeof text_key_table[0]) };

ts_status ts_text_cfg_parse(ts_recipe *r, const char *section, int tokenizer_vocab,
                            ts_text_cfg *cfg, ts_err *err) {
    /* Which size keys the recipe gives, before the defaults are written into it. */
    static const char *const sized[] = { "context_length", "vocab_size", "width", "layers",
                                         "heads", "out_dim", "act" };
    enum { NSIZED = (int)(sizeof sized / sizeof sized[0]) };
    int given[NSIZED];
    char path[256], where[512], set[320];
    for (int i = 0; i < NSIZED; i++)
        given[i] = ts_recipe_has(r, ts_pname(path, sizeof path, "%s.%s", section, sized[i]));
    text_keys k;
    memset(&k, 0, sizeof k);
    ts_status st = ts_recipe_section(r, section, text_key_table, NKEYS, &k, err);
    if (st) return st;

    /* A named configuration replaces the defaults of the keys the recipe does not give, and the
     * resolved recipe is told so. */
    if (k.config && k.config[0]) {
        ts_text_cfg nc;
        if ((st = ts_text_cfg_named(k.config, &nc, err)))
            return ts_fail(err, TS_ERR_RECIPE, "%s: %s.config: %s",
                           ts_recipe_where(r, ts_pname(path, sizeof path, "%s.config", section),
                                           where, sizeof where),
                           section, err->msg);
        int64_t vals[] = { nc.context_length, nc.vocab_size, nc.width, nc.layers, nc.heads,
                           nc.out_dim };
        for (int i = 0; i < NSIZED; i++) {
            if (given[i]) continue;
            if (i < 6)
                ts_pname(set, sizeof set, "%s.%s=%lld", section, sized[i], (long long)vals[i]);
            else
                ts_pname(set, sizeof set, "%s.act=%s", section,
                         nc.act == TS_ACT_QUICK_GELU ? "quick_gelu" : "gelu");
            if ((st = ts_recipe_set(r, set, err))) return st;
        }
        int64_t *dst[] = { &k.context_length, &k.vocab_size, &k.width, &k.layers, &k.heads,
                           &k.out_dim };
        for (int i = 0; i < 6; i++)
            if (!given[i]) *dst[i] = vals[i];
        if (!given[6]) k.act = nc.act == TS_ACT_QUICK_GELU ? 1 : 0;
    }

    const char *vwhere = ts_recipe_where(r, ts_pname(path, sizeof path, "%s.vocab_size", section),
                                         where, sizeof where);
    if (k.vocab_size == 0) {
        if (tokenizer_vocab <= 0)
            return ts_fail(err, TS_ERR_RECIPE, "%s: %s.vocab_size is 0 (the tokenizer's) but "
                           "there is no tokenizer; give the number", vwhere, section);
        k.vocab_size = tokenizer_vocab;
    } else if (tokenizer_vocab > 0 && k.vocab_size != tokenizer_vocab) {
        return ts_fail(err, TS_ERR_RECIPE, "%s: %s.vocab_size is %lld but the tokenizer has "
                       "%d ids; set it to %d (or 0 for the tokenizer's)", vwhere, section,
                       (long long)k.vocab_size, tokenizer_vocab, tokenizer_vocab);
    }
    static const int32_t big = 1 << 30;
    if (k.context_length > big || k.vocab_size > big || k.width > big || k.layers > big ||
        k.heads > big || k.out_dim > big || k.pad_id < 0 || k.pad_id > big || k.eos_id < 0 ||
        k.eos_id > big)
        return ts_fail(err, TS_ERR_RECIPE, "%s: a size of %s is out of range",
                       ts_recipe_where(r, section, where, sizeof where), section);
    *cfg = (ts_text_cfg){
        .context_length = (int)k.context_length, .vocab_size = (int)k.vocab_size,
        .width = (int)k.width, .layers = (int)k.layers, .heads = (int)k.heads,
        .mlp_ratio = (float)k.mlp_ratio, .out_dim = (int)k.out_dim,
        .act = k.act == 1 ? TS_ACT_QUICK_GELU : TS_ACT_GELU, .causal = k.causal,
        .pad_mask = k.pad_mask, .pad_id = (int)k.pad_id, .eos_id = (int)k.eos_id,
        .pool = (ts_text_pool)k.pooling, .ln_eps = (float)k.ln_eps,
        .drop_path = (float)k.drop_path,
    };
    if ((st = ts_text_cfg_check(cfg, err)))
        return ts_fail(err, TS_ERR_RECIPE, "%s: %s: %s",
                       ts_recipe_where(r, section, where, sizeof where), section, err->msg);
    return TS_OK;
}

/* ---- parameter count ---- */

/* The sum of the shapes registered by ts_text_init, written out. */
int64_t ts_text_param_count(const ts_text_cfg *cfg) {
    int64_t C = cfg->width, T = cfg->context_length, V = cfg->vocab_size, E = cfg->out_dim;
    int64_t hid = (int64_t)(int)(cfg->width * cfg->mlp_ratio);
    int64_t block = 2 * C                 /* ln_1 */
                    + 3 * C * C + 3 * C   /* attn.in_proj */
                    + C * C + C           /* attn.out_proj */
                    + 2 * C               /* ln_2 */
                    + hid * C + hid       /* mlp.c_fc */
                    + C * hid + C;        /* mlp.c_proj */
    return T * C                          /* positional_embedding */
           + C * E                        /* text_projection */
           + V * C                        /* token_embedding */
           + cfg->layers * block
           + 2 * C;                       /* ln_final */
}

/* ---- building ---- */

/* One block built by ts_nn_block_init (open_clip names and order), initialised as
 * open_clip's TextTransformer.init_parameters initialises the text blocks. */
static void text_block_init(ts_nn_block *b, ts_params *p, const char *prefix,
                            const ts_text_cfg *cfg) {
    int C = cfg->width;
    float attn_std = 1.0f / sqrtf((float)C);
    float proj_std = attn_std / sqrtf(2.0f * (float)(cfg->layers > 0 ? cfg->layers : 1));
    float fc_std = 1.0f / sqrtf(2.0f * (float)C);
    ts_nn_block_init(b, p, prefix, C, cfg->heads, cfg->mlp_ratio, cfg->act, cfg->ln_eps,
                     cfg->drop_path);
    /* open_clip's text init: normal weights scaled by width and depth; biases as torch's */
    ts_param_set_init(p, b->attn.in_w, TS_INIT_N(attn_std));
    ts_param_set_init(p, b->attn.out.w, TS_INIT_N(proj_std));
    ts_param_set_init(p, b->mlp.fc.w, TS_INIT_N(fc_std));
    ts_param_set_init(p, b->mlp.proj.w, TS_INIT_N(proj_std));
}

void ts_text_init(ts_text *m, ts_params *p, const char *prefix, const ts_text_cfg *cfg) {
    ts_err err = { 0 };
    TS_CHECK(ts_text_cfg_check(cfg, &err) == TS_OK, "%s", err.msg);
    memset(m, 0, sizeof *m);
    m->cfg = *cfg;
    TS_CHECK(strlen(prefix) < sizeof m->prefix, "text: prefix '%s' is too long", prefix);
    strcpy(m->prefix, prefix);
    int C = cfg->width;
    char name[256];
    /* Registration follows open_clip's named_parameters(): the module's own tensors
     * (positional_embedding, text_projection), then token_embedding, the blocks, ln_final. */
    m->pos_embed = ts_param(p, ts_pname(name, sizeof name, "%spositional_embedding", prefix), 2,
                            TS_SHAPE(cfg->context_length, C), TS_INIT_N(0.01f),
                            TS_PARAM_NO_DECAY);
    if (cfg->out_dim > 0)
        m->proj = ts_param(p, ts_pname(name, sizeof name, "%stext_projection", prefix), 2,
                           TS_SHAPE(C, cfg->out_dim), TS_INIT_N(1.0f / sqrtf((float)C)), 0);
    m->tok_embed = ts_param(p, ts_pname(name, sizeof name, "%stoken_embedding.weight", prefix),
                            2, TS_SHAPE(cfg->vocab_size, C), TS_INIT_N(0.02f),
                            TS_PARAM_NO_DECAY);
    m->blocks = calloc((size_t)(cfg->layers > 0 ? cfg->layers : 1), sizeof *m->blocks);
    TS_CHECK(m->blocks != NULL, "out of memory");
    for (int l = 0; l < cfg->layers; l++)
        text_block_init(&m->blocks[l], p,
                        ts_pname(name, sizeof name, "%stransformer.resblocks.%d", prefix, l), cfg);
    ts_nn_layernorm_init(&m->ln_final, p, ts_pname(name, sizeof name, "%sln_final", prefix), C,
                         cfg->ln_eps);
}

void ts_text_free(ts_text *m) {
    if (!m) return;
    free(m->blocks);
    m->blocks = NULL;
}

/* ---- forward ---- */

/* The row of each sample that pooling takes, as flat indices b * L + row into (B * L). */
static ts_tensor *pool_rows(ts_ctx *c, const ts_text *m, const ts_tensor *ids) {
    int64_t B = ts_dim(ids, 0), L = ts_dim(ids, 1);
    ts_tensor *idx = ts_new(c, TS_I32, 1, TS_SHAPE(B));
    const int32_t *id = ts_i32(ids);
    for (int64_t b = 0; b < B; b++) {
        const int32_t *row = id + b * L;
        int64_t at = 0;
        switch (m->cfg.pool) {
        case TS_TEXT_POOL_ARGMAX: /* torch.argmax: the first of equal maxima */
            for (int64_t t = 1; t < L; t++)
                if (row[t] > row[at]) at = t;
            break;
        case TS_TEXT_POOL_EOS: /* (text == eos).int().argmax(): the first match, else 0 */
            for (int64_t t = 0; t < L; t++)
                if (row[t] == m->cfg.eos_id) {
                    at = t;
                    break;
                }
            break;
        case TS_TEXT_POOL_FIRST: at = 0; break;
        case TS_TEXT_POOL_LAST: at = L - 1; break;
        }
        ts_i32(idx)[b] = (int32_t)(b * L + at);
    }
    return idx;
}

ts_tensor *ts_text_forward(ts_ctx *c, const ts_text *m, const ts_tensor *ids,
                           const ts_tensor *key_pad, ts_tensor **tokens_out) {
    const ts_text_cfg *cfg = &m->cfg;
    char s[96];
    TS_CHECK(ids->dtype == TS_I32 && ids->ndim == 2 && ts_dim(ids, 1) >= 1 &&
                 ts_dim(ids, 1) <= cfg->context_length,
             "text: ids are %s %s, expected i32 (B, L) with 1 <= L <= %d",
             ts_dtype_name(ids->dtype), ts_shape_str(ids, s, sizeof s), cfg->context_length);
    int64_t B = ts_dim(ids, 0), L = ts_dim(ids, 1), C = cfg->width;
    for (int64_t i = 0; i < ids->numel; i++)
        TS_CHECK(ts_i32(ids)[i] >= 0 && ts_i32(ids)[i] < cfg->vocab_size,
                 "text: id %d at %lld is outside the vocabulary [0, %d)", ts_i32(ids)[i],
                 (long long)i, cfg->vocab_size);

    /* open_clip's TextTransformer adds positional_embedding[:L]. */
    ts_tensor *pos = L == cfg->context_length ? m->pos_embed : ts_slice(c, m->pos_embed, 0, 0, L);
    ts_tensor *x = ts_add(c, ts_embedding(c, m->tok_embed, ids), pos); /* (B, L, C) */

    /* Padding keys are masked only in the bidirectional tower (open_clip's use_pad_mask is
     * ignored with the causal mask). */
    if (!key_pad && !cfg->causal && cfg->pad_mask) {
        ts_tensor *kp = ts_new(c, TS_U8, 2, TS_SHAPE(B, L));
        uint8_t *d = kp->data;
        for (int64_t i = 0; i < B * L; i++) d[i] = ts_i32(ids)[i] == cfg->pad_id;
        key_pad = kp;
    }
    for (int l = 0; l < cfg->layers; l++)
        x = ts_nn_block_forward(c, &m->blocks[l], x, cfg->causal, key_pad);
    x = ts_nn_layernorm_forward(c, &m->ln_final, x);                  /* (B, L, C) */
    if (tokens_out) *tokens_out = x;

    ts_tensor *flat = ts_reshape(c, x, 2, TS_SHAPE(B * L, C));
    ts_tensor *pooled = ts_index_select(c, flat, 0, pool_rows(c, m, ids)); /* (B, C) */
    return m->proj ? ts_matmul(c, pooled, m->proj, 0) : pooled;        /* (B, E) */
}

/* ---- loading a checkpoint ---- */

/* The tensors of the tower, in registration order. */
static int text_tensors(const ts_text *m, ts_tensor **t) {
    int n = 0;
    t[n++] = m->pos_embed;
    if (m->proj) t[n++] = m->proj;
    t[n++] = m->tok_embed;
    for (int l = 0; l < m->cfg.layers; l++) {
        const ts_nn_block *b = &m->blocks[l];
        ts_tensor *bt[] = { b->ln_1.w, b->ln_1.b, b->attn.in_w, b->attn.in_b, b->attn.out.w,
                            b->attn.out.b, b->ln_2.w, b->ln_2.b, b->mlp.fc.w, b->mlp.fc.b,
                            b->mlp.proj.w, b->mlp.proj.b };
        for (size_t k = 0; k < sizeof bt / sizeof bt[0]; k++) t[n++] = bt[k];
    }
    t[n++] = m->ln_final.w;
    t[n++] = m->ln_final.b;
    return n;
}

ts_status ts_text_load(ts_text *m, const char *path, ts_err *err) {
    ts_st_file *f;
    ts_status st = ts_st_read(path, &f, err);
    if (st) return st;
    ts_tensor **t = malloc((size_t)(5 + 12 * m->cfg.layers) * sizeof *t);
    TS_CHECK(t != NULL, "out of memory");
    int n = text_tensors(m, t);
    char msg[4096];
    int bad = ts_st_check(f, t, n, NULL, NULL, msg, sizeof msg);
    if (bad) {
        st = ts_fail(err, TS_ERR_MISMATCH, "%s: %d text tensor%s do%s not match the model:%s",
                     path, bad, bad == 1 ? "" : "s", bad == 1 ? "es" : "", msg);
    } else {
        for (int i = 0; i < n; i++)
            ts_st_entry_to_f32(ts_st_find(f, t[i]->name), ts_f32(t[i]));
    }
    free(t);
    ts_st_close(f);
    return st;
}

/* ---- masked language modelling ---- */

void ts_mlm_head_init(ts_mlm_head *h, ts_params *p, const char *prefix, const ts_text *tower,
                      int tied) {
    int C = tower->cfg.width, V = tower->cfg.vocab_size;
    char name[256];
    memset(h, 0, sizeof *h);
    ts_nn_linear_init(&h->dense, p, ts_pname(name, sizeof name, "%sdense", prefix), C, C, 1);
    ts_nn_layernorm_init(&h->ln, p, ts_pname(name, sizeof name, "%slayer_norm", prefix), C,
                         tower->cfg.ln_eps);
    h->tied = tied;
    h->decoder = tied ? tower->tok_embed
                      : ts_param(p, ts_pname(name, sizeof name, "%sdecoder.weight", prefix), 2,
                                 TS_SHAPE(V, C), TS_INIT_N(0.02f), 0);
    h->bias = ts_param(p, ts_pname(name, sizeof name, "%sbias", prefix), 1, TS_SHAPE(V),
                       TS_INIT_0, TS_PARAM_NO_DECAY);
}

ts_tensor *ts_mlm_head_forward(ts_ctx *c, const ts_mlm_head *h, const ts_tensor *tokens) {
    ts_tensor *x = ts_bias_gelu(c, ts_linear(c, tokens, h->dense.w, NULL), h->dense.b);
    x = ts_nn_layernorm_forward(c, &h->ln, x);                 /* (..., C) */
    return ts_linear(c, x, h->decoder, h->bias);               /* (..., V) */
}

int64_t ts_mlm_mask(ts_rng *r, const ts_mlm_mask_cfg *cfg, int32_t *ids, int32_t *targets,
                    const uint8_t *special, int64_t B, int64_t L, int32_t ignore_index) {
    TS_CHECK(cfg->random_hi > cfg->random_lo || cfg->p_random <= 0.0f,
             "mlm: random ids [%d, %d) are empty", cfg->random_lo, cfg->random_hi);
    int64_t chosen = 0;
    for (int64_t b = 0; b < B; b++) {
        int32_t *id = ids + b * L, *tg = targets + b * L;
        const uint8_t *sp = special + b * L;
        int64_t in_row = 0, candidates = 0;
        for (int64_t t = 0; t < L; t++) {
            tg[t] = ignore_index;
            if (sp[t]) continue;
            candidates++;
            if (ts_rng_uniform(r) < cfg->mask_prob) {
                tg[t] = id[t];
                in_row++;
            }
        }
        if (in_row == 0 && candidates > 0 && cfg->at_least_one) {
            int64_t k = (int64_t)(ts_rng_next(r) % (uint64_t)candidates);
            for (int64_t t = 0; t < L; t++)
                if (!sp[t] && k-- == 0) {
                    tg[t] = id[t];
                    in_row = 1;
                    break;
                }
        }
        /* Replace the chosen ones: one draw decides mask / random / unchanged. */
        for (int64_t t = 0; t < L; t++) {
            if (tg[t] == ignore_index) continue;
            float u = ts_rng_uniform(r);
            if (u < cfg->p_mask) {
                id[t] = cfg->mask_id;
            } else if (u < cfg->p_mask + cfg->p_random) {
                uint64_t span = (uint64_t)(cfg->random_hi - cfg->random_lo);
                id[t] = cfg->random_lo + (int32_t)(ts_rng_next(r) % span);
            }
        }
        chosen += in_row;
    }
    return chosen;
}
