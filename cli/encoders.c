/* encoders.c: the towers of vision/ and text/ as ts_encoders, built from a recipe section by
 * its `type:` (vit, cswin, text). The registry of encoders: a new tower is one wrapper here and
 * one row in the table below.
 */
#include "cli.h"
#include "../text/text.h"
#include "../vision/vision.h"

#include <stdlib.h>
#include <string.h>

typedef struct enc_vit { ts_encoder base; ts_vit m; } enc_vit;
typedef struct enc_cswin { ts_encoder base; ts_cswin m; } enc_cswin;
typedef struct enc_text { ts_encoder base; ts_text m; } enc_text;

static ts_tensor *vit_fwd(ts_ctx *c, ts_encoder *e, const ts_batch *b, ts_tensor **tokens) {
    TS_CHECK(b->images, "vit encoder: the batch has no images");
    return ts_vit_forward(c, &((enc_vit *)e->impl)->m, b->images, tokens);
}
static void vit_free(ts_encoder *e) {
    ts_vit_free(&((enc_vit *)e->impl)->m);
    free(e->impl);
}
static ts_tensor *cswin_fwd(ts_ctx *c, ts_encoder *e, const ts_batch *b, ts_tensor **tokens) {
    TS_CHECK(b->images, "cswin encoder: the batch has no images");
    return ts_cswin_forward(c, &((enc_cswin *)e->impl)->m, b->images, tokens);
}
static void cswin_free(ts_encoder *e) {
    ts_cswin_free(&((enc_cswin *)e->impl)->m);
    free(e->impl);
}
static ts_tensor *text_fwd(ts_ctx *c, ts_encoder *e, const ts_batch *b, ts_tensor **tokens) {
    TS_CHECK(b->text, "text encoder: the batch has no token ids");
    return ts_text_forward(c, &((enc_text *)e->impl)->m, b->text, NULL, tokens);
}
static void text_free(ts_encoder *e) {
    ts_text_free(&((enc_text *)e->impl)->m);
    free(e->impl);
}

static ts_status make_vit(ts_recipe *r, const char *section, ts_params *p, const char *prefix,
                          const ts_enc_spec *spec, ts_encoder **out, ts_enc_info *info,
                          ts_err *err) {
    (void)spec;
    ts_vit_cfg cfg;
    ts_status st = ts_vit_cfg_parse(r, section, &cfg, err);
    if (st) return st;
    enc_vit *e = calloc(1, sizeof *e);
    if (!e) return ts_fail(err, TS_ERR_NOMEM, "out of memory");
    ts_vit_init(&e->m, p, prefix, &cfg);
    e->base = (ts_encoder){ "vit", cfg.out_dim ? cfg.out_dim : cfg.width, vit_fwd, vit_free, e };
    info->image_size = cfg.image_h;
    info->tokens = 1 + (cfg.image_h / cfg.patch) * (cfg.image_w / cfg.patch);
    info->token_width = cfg.width;
    info->grid_h = cfg.image_h / cfg.patch;
    info->grid_w = cfg.image_w / cfg.patch;
    info->grid_first = 1;
    snprintf(info->describe, sizeof info->describe, "ViT %dx%d patch %d, width %d, %d layers, "
             "%d heads, %lld parameters", cfg.image_h, cfg.image_w, cfg.patch, cfg.width,
             cfg.layers, cfg.heads, (long long)ts_vit_param_count(&cfg));
    *out = &e->base;
    return TS_OK;
}

static ts_status make_cswin(ts_recipe *r, const char *section, ts_params *p, const char *prefix,
                            const ts_enc_spec *spec, ts_encoder **out, ts_enc_info *info,
                            ts_err *err) {
    (void)spec;
    ts_cswin_cfg cfg;
    ts_status st = ts_cswin_cfg_parse(r, section, &cfg, err);
    if (st) return st;
    enc_cswin *e = calloc(1, sizeof *e);
    if (!e) return ts_fail(err, TS_ERR_NOMEM, "out of memory");
    if ((st = ts_cswin_init(&e->m, p, prefix, &cfg, err))) {
        free(e);
        return st;
    }
    e->base = (ts_encoder){ "cswin", cfg.num_classes ? cfg.num_classes : 8 * cfg.embed_dim,
                            cswin_fwd, cswin_free, e };
    info->image_size = cfg.image_h;
    info->tokens = (cfg.image_h / 32) * (cfg.image_w / 32);
    info->token_width = 8 * cfg.embed_dim;
    info->grid_h = cfg.image_h / 32;
    info->grid_w = cfg.image_w / 32;
    info->grid_first = 0;
    ts_cswin_describe(&cfg, info->describe, sizeof info->describe);
    *out = &e->base;
    return TS_OK;
}

static ts_status make_text(ts_recipe *r, const char *section, ts_params *p, const char *prefix,
                           const ts_enc_spec *spec, ts_encoder **out, ts_enc_info *info,
                           ts_err *err) {
    ts_text_cfg cfg;
    ts_status st = ts_text_cfg_parse(r, section, spec->tokenizer_vocab, &cfg, err);
    if (st) return st;
    enc_text *e = calloc(1, sizeof *e);
    if (!e) return ts_fail(err, TS_ERR_NOMEM, "out of memory");
    ts_text_init(&e->m, p, prefix, &cfg);
    e->base = (ts_encoder){ "text", cfg.out_dim ? cfg.out_dim : cfg.width, text_fwd, text_free,
                            e };
    info->context_length = cfg.context_length;
    snprintf(info->describe, sizeof info->describe, "text transformer: context %d, vocabulary "
             "%d, width %d, %d layers, %d heads, %lld parameters", cfg.context_length,
             cfg.vocab_size, cfg.width, cfg.layers, cfg.heads,
             (long long)ts_text_param_count(&cfg));
    *out = &e->base;
    return TS_OK;
}

/* ---- video: an image tower run frame by frame, a temporal embedding, pooling ---- */

typedef struct enc_video {
    ts_encoder base;
    ts_encoder *tower;
    ts_video_enc m;
} enc_video;

typedef struct video_keys {
    int type, pool;
    int64_t frames, heads, out_dim;
} video_keys;
static const char *const video_types[] = { "video", NULL };
static const char *const video_pools[] = { "mean", "attention", NULL };
static const ts_key video_table[] = {
    TS_KEY_CHOICE(video_keys, type, NULL, video_types, "encoder type"),
    TS_KEY(TS_KEY_INT, video_keys, frames, "8", "K, frames per clip (spread over the clip)"),
    TS_KEY_CHOICE(video_keys, pool, "mean", video_pools, "how the K frames become one vector"),
    TS_KEY(TS_KEY_INT, video_keys, heads, "8", "attention pooling: heads"),
    TS_KEY(TS_KEY_INT, video_keys, out_dim, "512", "E, the tower's output width"),
    { "tower", TS_KEY_SECTION, 0, NULL, NULL, "the image tower run on every frame (vit, cswin)" },
};

/* The frame encoder of ts_video_enc: the tower's forward on a batch of B K frames. */
static ts_tensor *video_frames(ts_ctx *c, const void *tower, const ts_tensor *images) {
    ts_encoder *t = (ts_encoder *)tower;
    ts_batch b = { .n = images->shape[0], .images = (ts_tensor *)images };
    return t->forward(c, t, &b, NULL);
}
static ts_tensor *video_fwd(ts_ctx *c, ts_encoder *e, const ts_batch *b, ts_tensor **tokens) {
    TS_CHECK(b->images && b->images->ndim == 5, "video encoder: the batch has no clips "
             "(n, K, 3, H, W)");
    return ts_video_enc_forward(c, &((enc_video *)e->impl)->m, b->images, tokens);
}
static void video_free(ts_encoder *e) {
    enc_video *v = e->impl;
    ts_encoder_free(v->tower);
    free(v);
}

static ts_status make_tower(ts_recipe *r, const char *section, ts_params *p,
                            const ts_enc_spec *spec, ts_encoder **out, ts_enc_info *info,
                            ts_err *err);

static ts_status make_video(ts_recipe *r, const char *section, ts_params *p, const char *prefix,
                            const ts_enc_spec *spec, ts_encoder **out, ts_enc_info *info,
                            ts_err *err) {
    (void)prefix;
    video_keys k;
    char sub[256], where[512];
    ts_status st = ts_recipe_section(r, section, video_table, (int)(sizeof video_table /
                                     sizeof video_table[0]), &k, err);
    if (st) return st;
    /* the tower projects to the video encoder's width: the section's out_dim */
    ts_pname(sub, sizeof sub, "%s.tower.out_dim", section);
    if (!ts_recipe_has(r, sub)) {
        char set[600];
        snprintf(set, sizeof set, "%s=%lld", sub, (long long)k.out_dim);
        if ((st = ts_recipe_set(r, set, err))) return st;
    }
    enc_video *v = calloc(1, sizeof *v);
    if (!v) return ts_fail(err, TS_ERR_NOMEM, "out of memory");
    ts_pname(sub, sizeof sub, "%s.tower", section);
    if ((st = make_tower(r, sub, p, spec, &v->tower, info, err))) {
        free(v);
        return st;
    }
    ts_video_enc_cfg vc = { .frames = (int)k.frames, .dim = v->tower->out_dim,
                            .pool = k.pool ? TS_VIDEO_ENC_ATTN : TS_VIDEO_ENC_MEAN,
                            .heads = (int)k.heads, .ln_eps = 1e-5f };
    if (k.frames < 1 || k.frames > 256 || (st = ts_video_enc_cfg_check(&vc, err))) {
        if (!st) ts_fail(err, TS_ERR_RECIPE, "frames must be 1..256");
        char msg[sizeof err->msg];
        snprintf(msg, sizeof msg, "%s", err->msg);
        ts_encoder_free(v->tower);
        free(v);
        return ts_fail(err, TS_ERR_RECIPE, "%s: %s: %s",
                       ts_recipe_where(r, section, where, sizeof where), section, msg);
    }
    ts_video_enc_init(&v->m, p, spec->prefix, &vc, video_frames, v->tower);
    v->base = (ts_encoder){ "video", v->tower->out_dim, video_fwd, video_free, v };
    info->frames = vc.frames;
    size_t n = strlen(info->describe);
    snprintf(info->describe + n, sizeof info->describe - n, "; video clips of %d frames, %s "
             "pooling", vc.frames, k.pool ? "attention" : "mean");
    *out = &v->base;
    return TS_OK;
}

typedef struct enc_row {
    const char *type;
    int modality; /* 0 image, 1 text */
    ts_status (*make)(ts_recipe *, const char *, ts_params *, const char *, const ts_enc_spec *,
                      ts_encoder **, ts_enc_info *, ts_err *);
} enc_row;

static const enc_row enc_rows[] = {
    { "vit", 0, make_vit },
    { "cswin", 0, make_cswin },
    { "video", 0, make_video },
    { "text", 1, make_text },
};

/* An image tower for a video encoder (vit or cswin, not another video). */
static ts_status make_tower(ts_recipe *r, const char *section, ts_params *p,
                            const ts_enc_spec *spec, ts_encoder **out, ts_enc_info *info,
                            ts_err *err) {
    char path[256], where[512];
    const char *type = ts_recipe_str(r, ts_pname(path, sizeof path, "%s.type", section));
    if (type && !strcmp(type, "vit")) return make_vit(r, section, p, spec->prefix, spec, out,
                                                      info, err);
    if (type && !strcmp(type, "cswin")) return make_cswin(r, section, p, spec->prefix, spec,
                                                          out, info, err);
    return ts_fail(err, TS_ERR_RECIPE, "%s: %s.type must be vit or cswin, the image tower run "
                   "on every frame", ts_recipe_where(r, path, where, sizeof where), section);
}

ts_status ts_factory_encoder(ts_recipe *r, const char *section, ts_params *p,
                             const ts_enc_spec *spec, ts_encoder **out, ts_enc_info *info,
                             ts_err *err) {
    *out = NULL;
    memset(info, 0, sizeof *info);
    char path[256], where[512], valid[256] = "";
    size_t k = 0;
    int n = (int)(sizeof enc_rows / sizeof enc_rows[0]);
    for (int i = 0; i < n; i++)
        if (enc_rows[i].modality == spec->modality)
            k += (size_t)snprintf(valid + k, sizeof valid - k, "%s%s", k ? ", " : "",
                                  enc_rows[i].type);
    const char *type = ts_recipe_str(r, ts_pname(path, sizeof path, "%s.type", section));
    if (!type)
        return ts_fail(err, TS_ERR_RECIPE, "%s: missing required key %s.type (valid: %s)",
                       ts_recipe_path(r), section, valid);
    for (int i = 0; i < n; i++)
        if (enc_rows[i].modality == spec->modality && !strcmp(type, enc_rows[i].type)) {
            info->modality = spec->modality;
            return enc_rows[i].make(r, section, p, spec->prefix, spec, out, info, err);
        }
    return ts_fail(err, TS_ERR_RECIPE, "%s: %s.type '%s' is not a %s encoder tessera knows "
                   "(valid: %s)", ts_recipe_where(r, path, where, sizeof where), section, type,
                   spec->modality ? "text" : "image", valid);
}
