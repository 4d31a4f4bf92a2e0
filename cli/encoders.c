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

typedef struct enc_row {
    const char *type;
    int modality; /* 0 image, 1 text */
    ts_status (*make)(ts_recipe *, const char *, ts_params *, const char *, const ts_enc_spec *,
                      ts_encoder **, ts_enc_info *, ts_err *);
} enc_row;

static const enc_row enc_rows[] = {
    { "vit", 0, make_vit },
    { "cswin", 0, make_cswin },
    { "text", 1, make_text },
};

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
