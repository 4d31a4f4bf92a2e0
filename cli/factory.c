/* factory.c: recipe `type:` strings to tasks. The only file that knows them all. */
#include "cli.h"

#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BPE_NAME "bpe_simple_vocab_16e6.txt.gz"

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
    { "vla", ts_task_vla_new, "vision-language-action policy on HDF5 robot demonstrations" },
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

char *ts_find_clip_merges(char *looked, size_t cap) {
    const char *env = getenv("TESSERA_BPE");
    looked[0] = 0;
    if (env && *env) {
        snprintf(looked, cap, "$TESSERA_BPE=%s", env);
        return access(env, R_OK) == 0 ? strdup(env) : NULL;
    }
    const char *home = getenv("HOME"), *venv = getenv("VIRTUAL_ENV");
    char pats[8][512];
    int n = 0;
    snprintf(pats[n++], 512, "./" BPE_NAME);
    if (venv) snprintf(pats[n++], 512, "%s/lib/python3*/site-packages/*/" BPE_NAME, venv);
    if (home) snprintf(pats[n++], 512, "%s/.local/lib/python3*/site-packages/*/" BPE_NAME, home);
    snprintf(pats[n++], 512, "/usr/local/lib/python3*/*-packages/*/" BPE_NAME);
    snprintf(pats[n++], 512, "/usr/lib/python3*/*-packages/*/" BPE_NAME);
    if (home) snprintf(pats[n++], 512, "%s/.cache/clip/" BPE_NAME, home);
    char *found = NULL;
    size_t used = 0;
    for (int i = 0; i < n && !found; i++) {
        used += (size_t)snprintf(looked + used, used < cap ? cap - used : 0, "%s%s",
                                 i ? ", " : "", pats[i]);
        if (used >= cap) used = cap - 1;
        glob_t g;
        if (glob(pats[i], 0, NULL, &g) == 0) {
            for (size_t k = 0; k < g.gl_pathc && !found; k++)
                if (strstr(g.gl_pathv[k], "/open_clip/") || strstr(g.gl_pathv[k], "/clip/") ||
                    i == 0)
                    found = strdup(g.gl_pathv[k]);
            globfree(&g);
        }
    }
    return found;
}

