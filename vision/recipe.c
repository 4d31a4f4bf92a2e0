/* recipe.c: the recipe sections of the image towers ("model.vision" of a CLIP recipe).
 *
 * A section names its tower by type (vit or cswin) and either gives every size or names a
 * configuration (`config: ViT-B-16`, `config: CSWin-T`) whose values become the defaults of the
 * keys the section leaves out; the resolved recipe then holds the named values. The keys
 * follow open_clip's vision_cfg (image_size, patch_size, width, layers, heads, mlp_ratio) and
 * the official CSWin arguments (embed_dim, depth, num_heads, split_size).
 */
#include "vision.h"

#include <stddef.h>
#include <string.h>

#define COUNT(a) (int)(sizeof(a) / sizeof((a)[0]))

/* Set section.key=value in the recipe unless the recipe gave the key. */
static ts_status default_to(ts_recipe *r, const char *section, const char *key, const char *value,
                            ts_err *err) {
    char path[256], set[512];
    ts_pname(path, sizeof path, "%s.%s", section, key);
    if (ts_recipe_has(r, path)) return TS_OK;
    ts_pname(set, sizeof set, "%s=%s", path, value);
    return ts_recipe_set(r, set, err);
}

static ts_status where_fail(ts_recipe *r, const char *section, ts_err *err) {
    char where[512], msg[sizeof err->msg];
    snprintf(msg, sizeof msg, "%s", err->msg);
    return ts_fail(err, TS_ERR_RECIPE, "%s: %s: %s", ts_recipe_where(r, section, where,
                   sizeof where), section, msg);
}

/* ---- ViT ---- */

typedef struct vit_keys {
    int type;
    const char *config;
    int64_t image_size, patch_size, width, layers, heads, out_dim;
    double mlp_ratio, ln_eps, drop_path;
    int act, pool;
} vit_keys;

static const char *const vit_types[] = { "vit", NULL };
static const char *const acts[] = { "gelu", "quick_gelu", NULL };
static const char *const pools[] = { "token", "mean", NULL };
static const ts_key vit_table[] = {
    TS_KEY_CHOICE(vit_keys, type, NULL, vit_types, "encoder type"),
    TS_KEY(TS_KEY_STRING, vit_keys, config, "\"\"",
           "open_clip model config whose vision tower gives the defaults, e.g. ViT-B-16"),
    TS_KEY(TS_KEY_INT, vit_keys, image_size, "224", "square input side in pixels"),
    TS_KEY(TS_KEY_INT, vit_keys, patch_size, "16", "patch side"),
    TS_KEY(TS_KEY_INT, vit_keys, width, "768", "C"),
    TS_KEY(TS_KEY_INT, vit_keys, layers, "12", "transformer blocks"),
    TS_KEY(TS_KEY_INT, vit_keys, heads, "12", "attention heads"),
    TS_KEY(TS_KEY_FLOAT, vit_keys, mlp_ratio, "4.0", "MLP hidden width / C"),
    TS_KEY(TS_KEY_INT, vit_keys, out_dim, "512", "E, columns of proj"),
    TS_KEY_CHOICE(vit_keys, act, "gelu", acts, "MLP activation"),
    TS_KEY_CHOICE(vit_keys, pool, "token", pools, "class token or mean of the patches"),
    TS_KEY(TS_KEY_FLOAT, vit_keys, ln_eps, "1e-5", "layernorm epsilon"),
    TS_KEY(TS_KEY_FLOAT, vit_keys, drop_path, "0.0", "stochastic depth rate"),
};

ts_status ts_vit_cfg_parse(ts_recipe *r, const char *section, ts_vit_cfg *cfg, ts_err *err) {
    char path[256], num[64];
    const char *name = ts_recipe_str(r, ts_pname(path, sizeof path, "%s.config", section));
    ts_status st;
    if (name && name[0]) {
        ts_vit_cfg nc;
        if ((st = ts_vit_cfg_named(name, &nc, err))) return where_fail(r, section, err);
        if (nc.flavour != TS_VIT_OPEN_CLIP || nc.image_h != nc.image_w) {
            ts_fail(err, TS_ERR_RECIPE, "config %s is not an open_clip tower", name);
            return where_fail(r, section, err);
        }
        const char *keys[] = { "image_size", "patch_size", "width", "layers", "heads",
                               "out_dim" };
        int vals[] = { nc.image_h, nc.patch, nc.width, nc.layers, nc.heads, nc.out_dim };
        for (int i = 0; i < COUNT(keys); i++) {
            snprintf(num, sizeof num, "%d", vals[i]);
            if ((st = default_to(r, section, keys[i], num, err))) return st;
        }
        snprintf(num, sizeof num, "%.9g", (double)nc.mlp_ratio);
        if ((st = default_to(r, section, "mlp_ratio", num, err))) return st;
        if ((st = default_to(r, section, "act", nc.act == TS_ACT_QUICK_GELU ? "quick_gelu"
                                                                           : "gelu", err)))
            return st;
    }
    vit_keys k;
    memset(&k, 0, sizeof k);
    if ((st = ts_recipe_section(r, section, vit_table, COUNT(vit_table), &k, err))) return st;
    static const int64_t big = 1 << 20;
    if (k.image_size < 1 || k.image_size > big || k.patch_size < 1 || k.width < 1 ||
        k.width > big || k.layers < 0 || k.layers > 10000 || k.heads < 1 || k.out_dim < 0 ||
        k.out_dim > big) {
        ts_fail(err, TS_ERR_RECIPE, "a size is out of range");
        return where_fail(r, section, err);
    }
    *cfg = (ts_vit_cfg){
        .image_h = (int)k.image_size, .image_w = (int)k.image_size, .patch = (int)k.patch_size,
        .width = (int)k.width, .layers = (int)k.layers, .heads = (int)k.heads,
        .mlp_ratio = (float)k.mlp_ratio, .out_dim = (int)k.out_dim,
        .act = k.act ? TS_ACT_QUICK_GELU : TS_ACT_GELU,
        .pool = k.pool ? TS_VIT_POOL_MEAN : TS_VIT_POOL_TOKEN, .ln_eps = (float)k.ln_eps,
        .drop_path = (float)k.drop_path, .flavour = TS_VIT_OPEN_CLIP,
    };
    if ((st = ts_vit_cfg_check(cfg, err))) return where_fail(r, section, err);
    return TS_OK;
}

/* ---- CSWin ---- */

typedef struct cswin_keys {
    int type;
    const char *config;
    int64_t image_size, embed_dim, out_dim;
    ts_int_list depth, num_heads, split_size;
    double mlp_ratio, ln_eps, drop_path;
} cswin_keys;

static const char *const cswin_types[] = { "cswin", NULL };
static const ts_key cswin_table[] = {
    TS_KEY_CHOICE(cswin_keys, type, NULL, cswin_types, "encoder type"),
    TS_KEY(TS_KEY_STRING, cswin_keys, config, "\"\"",
           "official configuration giving the defaults: CSWin-T, CSWin-S, CSWin-B, CSWin-L"),
    TS_KEY(TS_KEY_INT, cswin_keys, image_size, "224", "square input side in pixels"),
    TS_KEY(TS_KEY_INT, cswin_keys, embed_dim, "64", "width of stage 1"),
    TS_KEY(TS_KEY_INT_LIST, cswin_keys, depth, "[1, 2, 21, 1]", "blocks per stage"),
    TS_KEY(TS_KEY_INT_LIST, cswin_keys, num_heads, "[2, 4, 8, 16]", "heads per stage"),
    TS_KEY(TS_KEY_INT_LIST, cswin_keys, split_size, "[1, 2, 7, 7]", "stripe width per stage"),
    TS_KEY(TS_KEY_FLOAT, cswin_keys, mlp_ratio, "4.0", "MLP hidden width / width"),
    TS_KEY(TS_KEY_INT, cswin_keys, out_dim, "512", "E, outputs of the head; 0 = pooled features"),
    TS_KEY(TS_KEY_FLOAT, cswin_keys, ln_eps, "1e-5", "layernorm epsilon"),
    TS_KEY(TS_KEY_FLOAT, cswin_keys, drop_path, "0.0", "stochastic depth of the last block"),
};

static void list4(char *buf, size_t n, const int v[4]) {
    snprintf(buf, n, "[%d, %d, %d, %d]", v[0], v[1], v[2], v[3]);
}

ts_status ts_cswin_cfg_parse(ts_recipe *r, const char *section, ts_cswin_cfg *cfg, ts_err *err) {
    char path[256], num[64];
    const char *name = ts_recipe_str(r, ts_pname(path, sizeof path, "%s.config", section));
    ts_status st;
    if (name && name[0]) {
        ts_cswin_cfg nc;
        if ((st = ts_cswin_cfg_named(name, &nc, err))) return where_fail(r, section, err);
        snprintf(num, sizeof num, "%d", nc.image_h);
        if ((st = default_to(r, section, "image_size", num, err))) return st;
        snprintf(num, sizeof num, "%d", nc.embed_dim);
        if ((st = default_to(r, section, "embed_dim", num, err))) return st;
        list4(num, sizeof num, nc.depth);
        if ((st = default_to(r, section, "depth", num, err))) return st;
        list4(num, sizeof num, nc.heads);
        if ((st = default_to(r, section, "num_heads", num, err))) return st;
        list4(num, sizeof num, nc.split);
        if ((st = default_to(r, section, "split_size", num, err))) return st;
    }
    cswin_keys k;
    memset(&k, 0, sizeof k);
    if ((st = ts_recipe_section(r, section, cswin_table, COUNT(cswin_table), &k, err))) return st;
    if (k.depth.n != 4 || k.num_heads.n != 4 || k.split_size.n != 4) {
        ts_fail(err, TS_ERR_RECIPE, "depth, num_heads and split_size need 4 values, one per "
                "stage");
        return where_fail(r, section, err);
    }
    static const int64_t big = 1 << 20;
    if (k.image_size < 1 || k.image_size > big || k.embed_dim < 1 || k.embed_dim > big ||
        k.out_dim < 0 || k.out_dim > big) {
        ts_fail(err, TS_ERR_RECIPE, "a size is out of range");
        return where_fail(r, section, err);
    }
    memset(cfg, 0, sizeof *cfg);
    cfg->image_h = cfg->image_w = (int)k.image_size;
    cfg->embed_dim = (int)k.embed_dim;
    for (int s = 0; s < 4; s++) {
        if (k.depth.v[s] < 0 || k.depth.v[s] > 1000 || k.num_heads.v[s] < 1 ||
            k.num_heads.v[s] > 1024 || k.split_size.v[s] < 1 || k.split_size.v[s] > big) {
            ts_fail(err, TS_ERR_RECIPE, "stage %d: depth, heads or stripe width out of range",
                    s + 1);
            return where_fail(r, section, err);
        }
        cfg->depth[s] = (int)k.depth.v[s];
        cfg->heads[s] = (int)k.num_heads.v[s];
        cfg->split[s] = (int)k.split_size.v[s];
    }
    cfg->mlp_ratio = (float)k.mlp_ratio;
    cfg->num_classes = (int)k.out_dim;
    cfg->ln_eps = (float)k.ln_eps;
    cfg->drop_path = (float)k.drop_path;
    if ((st = ts_cswin_cfg_check(cfg, err))) return where_fail(r, section, err);
    return TS_OK;
}
