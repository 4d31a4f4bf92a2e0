/* factory.c: recipe `type:` strings to tasks. The only file that knows them all. */
#include "cli.h"

#include <stdlib.h>
#include <string.h>

typedef struct factory_row {
    const char *type;
    ts_status (*make)(ts_recipe *r, uint64_t seed, ts_task **out, ts_err *err);
    const char *what;
} factory_row;

static const factory_row rows[] = {
    { "seq_transformer", ts_task_seq_new, "transformer on a synthetic sequence task" },
    { "text_mlm", ts_task_mlm_new, "bidirectional text encoder, masked-language objective" },
    { "mae", ts_task_mae_new, "ViT masked autoencoder on built-in images" },
    { "clip", ts_task_clip_new, "image and text towers, contrastive objectives, WebDataset shards" },
};

ts_status ts_factory_task(ts_recipe *r, uint64_t seed, ts_task **out, ts_err *err) {
    *out = NULL;
    const char *type = ts_recipe_str(r, "model.type");
    char where[512], valid[512] = "";
    size_t k = 0;
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        k += (size_t)snprintf(valid + k, sizeof valid - k, "%s%s", i ? ", " : "", rows[i].type);
    if (!type)
        return ts_fail(err, TS_ERR_RECIPE, "%s: missing required key model.type (valid: %s)",
                       ts_recipe_path(r), valid);
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        if (!strcmp(type, rows[i].type)) return rows[i].make(r, seed, out, err);
    return ts_fail(err, TS_ERR_RECIPE, "%s: model.type '%s' is not a model tessera knows "
                   "(valid: %s)", ts_recipe_where(r, "model.type", where, sizeof where), type,
                   valid);
}

void ts_task_free(ts_task *t) {
    if (t && t->free) t->free(t);
}
