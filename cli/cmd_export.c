/* cmd_export.c: the `tessera export` verb: a checkpoint in another library's layout.
 *
 * `tessera export hf --checkpoint RUN|CKPT --out DIR` writes the CLIP model of a checkpoint
 * (model.type clip, ViT image tower) as HuggingFace transformers' CLIPModel loads it with
 * from_pretrained(DIR): DIR/model.safetensors under transformers' names (float32, metadata
 * format "pt"), DIR/config.json as CLIPConfig reads it, and DIR/preprocessor_config.json for
 * CLIPImageProcessor (resize the shorter side, centre crop, CLIP's mean and std). The map from
 * open_clip's names, which tessera's checkpoints use, to transformers' (N a block):
 *
 *   visual.conv1.weight                      vision_model.embeddings.patch_embedding.weight
 *   visual.class_embedding                   vision_model.embeddings.class_embedding
 *   visual.positional_embedding              vision_model.embeddings.position_embedding.weight
 *   visual.ln_pre                            vision_model.pre_layrnorm (transformers' spelling)
 *   visual.transformer.resblocks.N           vision_model.encoder.layers.N
 *   visual.ln_post                           vision_model.post_layernorm
 *   visual.proj (C, E)                       visual_projection.weight (E, C), transposed
 *   token_embedding.weight                   text_model.embeddings.token_embedding.weight
 *   positional_embedding                     text_model.embeddings.position_embedding.weight
 *   transformer.resblocks.N                  text_model.encoder.layers.N
 *   ln_final                                 text_model.final_layer_norm
 *   text_projection (C, E)                   text_projection.weight (E, C), transposed
 *   logit_scale                              logit_scale
 *
 * and inside a block: ln_1 -> layer_norm1, ln_2 -> layer_norm2, mlp.c_fc -> mlp.fc1,
 * mlp.c_proj -> mlp.fc2, attn.out_proj -> self_attn.out_proj, and attn.in_proj_weight (3C, C)
 * and in_proj_bias (3C) cut by rows into self_attn.q_proj, k_proj and v_proj.
 *
 * Pooling: transformers' text model takes the row of the first eos_token_id (or the largest id
 * when eos_token_id is the legacy 2); config.json's eos_token_id is the tokenizer's
 * <end_of_text>, the last id of the vocabulary, which is also the largest id of every row the
 * CLIP tokenizer writes, so it picks the row tessera's argmax pooling picks.
 *
 * What it is not: an exporter of towers CLIPModel has no place for (CSWin, mean pooling, a
 * bidirectional text tower: each is an error that says so), of SigLIP's logit_bias (dropped
 * with a warning), or of the tokenizer files (vocab.json, merges.txt).
 * Exit codes: 0 written, 1 runtime failure (the checkpoint, the model, the output folder),
 * 2 usage.
 */
#include "cli.h"
#include "../loaders/loaders.h"
#include "../text/text.h"
#include "../vision/vision.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void export_usage(FILE *out) {
    fprintf(out,
            "usage: tessera export hf --checkpoint RUN|CKPT --out DIR\n"
            "\n"
            "Write a checkpoint in another library's layout.\n"
            "\n"
            "  hf    a CLIP model (model.type clip with a ViT image tower) as HuggingFace\n"
            "        transformers' CLIPModel: DIR/model.safetensors with transformers' names,\n"
            "        DIR/config.json (CLIPConfig) and DIR/preprocessor_config.json\n"
            "        (CLIPImageProcessor); load it with CLIPModel.from_pretrained(DIR)\n"
            "\n"
            "options:\n"
            "  --checkpoint PATH  a run folder (its latest checkpoint) or one checkpoint folder\n"
            "  --out DIR          the folder to write (made if missing; files in it replaced)\n"
            "  -h, --help         this help\n"
            "\n"
            "Exit status: 0 ok, 1 runtime failure, 2 usage error.\n");
}

/* ---- the tensors to write ---- */

#define MAX_OUT 4096

typedef struct exporter {
    const ts_st_file *f;
    const char *path;       /* of the checkpoint's model.safetensors, for messages */
    ts_st_writer *w;
    float *bufs[MAX_OUT];   /* owned copies, alive until the file is written */
    int nbufs;
    int nout;               /* tensors added to the writer (it copies their names) */
    char *used;             /* per entry of f: taken by some output tensor */
} exporter;

/* The entry called name with exactly the shape given (ndim dims), or an error naming both. */
static ts_status take(exporter *x, const char *name, int ndim, const int64_t *shape,
                      const ts_st_entry **out, ts_err *err) {
    const ts_st_entry *e = ts_st_find(x->f, name);
    if (!e) return ts_fail(err, TS_ERR_FORMAT, "%s: no tensor %s", x->path, name);
    int ok = e->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++) ok = e->shape[i] == shape[i];
    if (!ok || (e->dtype != TS_F32 && e->dtype != TS_BF16 && e->dtype != TS_F16)) {
        char want[128] = "", got[128] = "";
        size_t k = 0;
        for (int i = 0; i < ndim; i++)
            k += (size_t)snprintf(want + k, sizeof want - k, "%s%lld", i ? ", " : "",
                                  (long long)shape[i]);
        k = 0;
        for (int i = 0; i < e->ndim; i++)
            k += (size_t)snprintf(got + k, sizeof got - k, "%s%lld", i ? ", " : "",
                                  (long long)e->shape[i]);
        return ts_fail(err, TS_ERR_FORMAT, "%s: %s is (%s) %s, the recipe's model needs (%s) "
                       "float", x->path, name, got, ts_dtype_name(e->dtype), want);
    }
    for (int i = 0; i < ts_st_count(x->f); i++)
        if (ts_st_get(x->f, i) == e) x->used[i] = 1;
    *out = e;
    return TS_OK;
}

static float *new_buf(exporter *x, int64_t n, ts_err *err) {
    TS_CHECK(x->nbufs < MAX_OUT, "export: more than %d tensors", MAX_OUT);
    float *b = malloc((size_t)(n > 0 ? n : 1) * sizeof *b);
    if (!b) ts_fail(err, TS_ERR_NOMEM, "out of memory");
    else x->bufs[x->nbufs++] = b;
    return b;
}

static void add(exporter *x, const char *name, int ndim, const int64_t *shape, const float *data) {
    ts_st_writer_add(x->w, name, TS_F32, ndim, shape, data);
    x->nout++;
}

/* dst = src under a new name (a float32 copy). */
static ts_status copy(exporter *x, const char *dst, const char *src, int ndim,
                      const int64_t *shape, ts_err *err) {
    const ts_st_entry *e;
    ts_status st = take(x, src, ndim, shape, &e, err);
    if (st) return st;
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    float *b = new_buf(x, n, err);
    if (!b) return err->code;
    ts_st_entry_to_f32(e, b);
    add(x, dst, ndim, shape, b);
    return TS_OK;
}

/* dst (E, C) = src (C, E) transposed: open_clip applies x @ proj, transformers a Linear. */
static ts_status transpose(exporter *x, const char *dst, const char *src, int64_t C, int64_t E,
                           ts_err *err) {
    const ts_st_entry *e;
    ts_status st = take(x, src, 2, TS_SHAPE(C, E), &e, err);
    if (st) return st;
    float *a = new_buf(x, C * E, err), *b = a ? new_buf(x, C * E, err) : NULL;
    if (!b) return err->code;
    ts_st_entry_to_f32(e, a);
    for (int64_t i = 0; i < C; i++)
        for (int64_t j = 0; j < E; j++) b[j * C + i] = a[i * E + j];
    add(x, dst, 2, TS_SHAPE(E, C), b);
    return TS_OK;
}

/* One pre-norm block of width C and MLP width I, open_clip's names under src, transformers'
 * under dst. */
static ts_status block(exporter *x, const char *dst, const char *src, int64_t C, int64_t I,
                       ts_err *err) {
    static const struct { const char *to, *from; int is_w; } rename[] = {
        { "layer_norm1.weight", "ln_1.weight", 0 },    { "layer_norm1.bias", "ln_1.bias", 0 },
        { "layer_norm2.weight", "ln_2.weight", 0 },    { "layer_norm2.bias", "ln_2.bias", 0 },
        { "self_attn.out_proj.weight", "attn.out_proj.weight", 1 },
        { "self_attn.out_proj.bias", "attn.out_proj.bias", 0 },
    };
    char a[512], b[512];
    ts_status st = TS_OK;
    for (size_t i = 0; i < sizeof rename / sizeof rename[0] && !st; i++)
        st = copy(x, ts_pname(a, sizeof a, "%s.%s", dst, rename[i].to),
                  ts_pname(b, sizeof b, "%s.%s", src, rename[i].from), rename[i].is_w ? 2 : 1,
                  rename[i].is_w ? TS_SHAPE(C, C) : TS_SHAPE(C), err);
    if (!st) st = copy(x, ts_pname(a, sizeof a, "%s.mlp.fc1.weight", dst),
                       ts_pname(b, sizeof b, "%s.mlp.c_fc.weight", src), 2, TS_SHAPE(I, C), err);
    if (!st) st = copy(x, ts_pname(a, sizeof a, "%s.mlp.fc1.bias", dst),
                       ts_pname(b, sizeof b, "%s.mlp.c_fc.bias", src), 1, TS_SHAPE(I), err);
    if (!st) st = copy(x, ts_pname(a, sizeof a, "%s.mlp.fc2.weight", dst),
                       ts_pname(b, sizeof b, "%s.mlp.c_proj.weight", src), 2, TS_SHAPE(C, I), err);
    if (!st) st = copy(x, ts_pname(a, sizeof a, "%s.mlp.fc2.bias", dst),
                       ts_pname(b, sizeof b, "%s.mlp.c_proj.bias", src), 1, TS_SHAPE(C), err);
    if (st) return st;
    /* the packed projection: rows [0, C) are q, [C, 2C) k, [2C, 3C) v */
    const ts_st_entry *w, *bias;
    if ((st = take(x, ts_pname(b, sizeof b, "%s.attn.in_proj_weight", src), 2,
                   TS_SHAPE(3 * C, C), &w, err)))
        return st;
    if ((st = take(x, ts_pname(b, sizeof b, "%s.attn.in_proj_bias", src), 1, TS_SHAPE(3 * C),
                   &bias, err)))
        return st;
    float *W = new_buf(x, 3 * C * C, err), *B = W ? new_buf(x, 3 * C, err) : NULL;
    if (!B) return err->code;
    ts_st_entry_to_f32(w, W);
    ts_st_entry_to_f32(bias, B);
    static const char qkv[3] = { 'q', 'k', 'v' };
    for (int k = 0; k < 3; k++) {
        add(x, ts_pname(a, sizeof a, "%s.self_attn.%c_proj.weight", dst, qkv[k]), 2,
            TS_SHAPE(C, C), W + k * C * C);
        add(x, ts_pname(a, sizeof a, "%s.self_attn.%c_proj.bias", dst, qkv[k]), 1, TS_SHAPE(C),
            B + k * C);
    }
    return TS_OK;
}

/* ---- config.json ---- */

/* transformers' ACT2FN name of an activation. */
static const char *hf_act(ts_act a) {
    switch (a) {
    case TS_ACT_GELU: return "gelu";
    case TS_ACT_QUICK_GELU: return "quick_gelu";
    case TS_ACT_GELU_TANH: return "gelu_pytorch_tanh";
    case TS_ACT_RELU: return "relu";
    }
    return NULL;
}

/* A float as the short decimal it was written as (1e-5, not 9.99999974737875e-06). */
static double dec(float v) {
    char s[32];
    snprintf(s, sizeof s, "%.7g", (double)v);
    return strtod(s, NULL);
}

static char *config_json(const ts_vit_cfg *vc, const ts_text_cfg *tc, int V, int eos) {
    cJSON *o = cJSON_CreateObject();
    cJSON *arch = cJSON_AddArrayToObject(o, "architectures");
    cJSON_AddItemToArray(arch, cJSON_CreateString("CLIPModel"));
    cJSON_AddStringToObject(o, "model_type", "clip");
    cJSON_AddNumberToObject(o, "projection_dim", vc->out_dim);
    cJSON_AddNumberToObject(o, "logit_scale_init_value", 2.6592);
    cJSON_AddStringToObject(o, "torch_dtype", "float32");
    cJSON *t = cJSON_AddObjectToObject(o, "text_config");
    cJSON_AddStringToObject(t, "model_type", "clip_text_model");
    cJSON_AddNumberToObject(t, "vocab_size", V);
    cJSON_AddNumberToObject(t, "hidden_size", tc->width);
    cJSON_AddNumberToObject(t, "intermediate_size", (int)(tc->width * tc->mlp_ratio));
    cJSON_AddNumberToObject(t, "projection_dim", tc->out_dim);
    cJSON_AddNumberToObject(t, "num_hidden_layers", tc->layers);
    cJSON_AddNumberToObject(t, "num_attention_heads", tc->heads);
    cJSON_AddNumberToObject(t, "max_position_embeddings", tc->context_length);
    cJSON_AddStringToObject(t, "hidden_act", hf_act(tc->act));
    cJSON_AddNumberToObject(t, "layer_norm_eps", dec(tc->ln_eps));
    cJSON_AddNumberToObject(t, "attention_dropout", 0.0);
    cJSON_AddNumberToObject(t, "pad_token_id", tc->pad_id);
    cJSON_AddNumberToObject(t, "bos_token_id", V - 2); /* <start_of_text> */
    cJSON_AddNumberToObject(t, "eos_token_id", eos);
    cJSON *v = cJSON_AddObjectToObject(o, "vision_config");
    cJSON_AddStringToObject(v, "model_type", "clip_vision_model");
    cJSON_AddNumberToObject(v, "hidden_size", vc->width);
    cJSON_AddNumberToObject(v, "intermediate_size", (int)(vc->width * vc->mlp_ratio));
    cJSON_AddNumberToObject(v, "projection_dim", vc->out_dim);
    cJSON_AddNumberToObject(v, "num_hidden_layers", vc->layers);
    cJSON_AddNumberToObject(v, "num_attention_heads", vc->heads);
    cJSON_AddNumberToObject(v, "num_channels", 3);
    cJSON_AddNumberToObject(v, "image_size", vc->image_h);
    cJSON_AddNumberToObject(v, "patch_size", vc->patch);
    cJSON_AddStringToObject(v, "hidden_act", hf_act(vc->act));
    cJSON_AddNumberToObject(v, "layer_norm_eps", dec(vc->ln_eps));
    cJSON_AddNumberToObject(v, "attention_dropout", 0.0);
    char *s = cJSON_Print(o);
    cJSON_Delete(o);
    return s;
}

/* CLIPImageProcessor: the eval transform of the CLIP task (resize the shorter side with the
 * recipe's filter, centre crop, CLIP's mean and std). resample is PIL's: 3 bicubic, 2 bilinear. */
static char *preprocessor_json(int S, int bicubic) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "image_processor_type", "CLIPImageProcessor");
    cJSON_AddBoolToObject(o, "do_resize", 1);
    cJSON_AddNumberToObject(cJSON_AddObjectToObject(o, "size"), "shortest_edge", S);
    cJSON_AddNumberToObject(o, "resample", bicubic ? 3 : 2);
    cJSON_AddBoolToObject(o, "do_center_crop", 1);
    cJSON *crop = cJSON_AddObjectToObject(o, "crop_size");
    cJSON_AddNumberToObject(crop, "height", S);
    cJSON_AddNumberToObject(crop, "width", S);
    cJSON_AddBoolToObject(o, "do_rescale", 1);
    cJSON_AddNumberToObject(o, "rescale_factor", 1.0 / 255.0);
    cJSON_AddBoolToObject(o, "do_normalize", 1);
    cJSON *mean = cJSON_AddArrayToObject(o, "image_mean"), *std = cJSON_AddArrayToObject(o, "image_std");
    for (int c = 0; c < 3; c++) {
        char s[32];
        snprintf(s, sizeof s, "%.8g", (double)TS_CLIP_MEAN[c]);
        cJSON_AddItemToArray(mean, cJSON_CreateNumber(strtod(s, NULL)));
        snprintf(s, sizeof s, "%.8g", (double)TS_CLIP_STD[c]);
        cJSON_AddItemToArray(std, cJSON_CreateNumber(strtod(s, NULL)));
    }
    cJSON_AddBoolToObject(o, "do_convert_rgb", 1);
    char *s = cJSON_Print(o);
    cJSON_Delete(o);
    return s;
}

/* ---- the export ---- */

static ts_status export_hf(const char *ckpt, const char *out_dir, ts_err *err) {
    char ck[4096], path[4200], where[512];
    ts_recipe *r = NULL;
    ts_st_file *f = NULL;
    exporter x = { 0 };
    char *cfg_s = NULL, *pre_s = NULL;
    ts_status st = ts_ckpt_find(ckpt, ck, sizeof ck, err);
    if (st) return st;
    snprintf(path, sizeof path, "%s/recipe.yaml", ck);
    if ((st = ts_recipe_load(path, &r, err))) goto done;
    const char *type = ts_recipe_str(r, "model.type");
    if (!type || strcmp(type, "clip")) {
        st = ts_fail(err, TS_ERR_UNSUPPORTED, "%s: model.type is %s; export hf writes CLIP models "
                     "(model.type clip) only", ts_recipe_where(r, "model.type", where, sizeof where),
                     type ? type : "missing");
        goto done;
    }
    const char *vtype = ts_recipe_str(r, "model.vision.type");
    if (!vtype || strcmp(vtype, "vit")) {
        st = ts_fail(err, TS_ERR_UNSUPPORTED, "%s: the image tower is %s; transformers' CLIPModel "
                     "has a ViT image tower only, so export hf needs model.vision.type vit",
                     ts_recipe_where(r, "model.vision.type", where, sizeof where),
                     vtype ? vtype : "missing");
        goto done;
    }
    snprintf(path, sizeof path, "%s/model.safetensors", ck);
    if ((st = ts_st_read(path, &f, err))) goto done;
    const ts_st_entry *tok = ts_st_find(f, "token_embedding.weight");
    if (!tok || tok->ndim != 2) {
        st = ts_fail(err, TS_ERR_FORMAT, "%s: no token_embedding.weight (V, C): not a CLIP "
                     "checkpoint with the text tower at the top level", path);
        goto done;
    }
    int V = (int)tok->shape[0];
    ts_vit_cfg vc;
    ts_text_cfg tc;
    if ((st = ts_vit_cfg_parse(r, "model.vision", &vc, err))) goto done;
    if ((st = ts_text_cfg_parse(r, "model.text", V, &tc, err))) goto done;
    /* what CLIPModel can hold */
    const char *why = NULL;
    if (vc.flavour != TS_VIT_OPEN_CLIP) why = "the image tower has timm's layout";
    else if (vc.pool != TS_VIT_POOL_TOKEN)
        why = "the image tower pools the mean of the patches (CLIPModel pools the class token)";
    else if (vc.image_h != vc.image_w) why = "the image is not square";
    else if (vc.out_dim <= 0 || tc.out_dim != vc.out_dim)
        why = "the two towers do not both project to one embedding width";
    else if (!tc.causal) why = "the text tower is bidirectional (CLIPModel's is causal)";
    else if (tc.pool != TS_TEXT_POOL_ARGMAX && tc.pool != TS_TEXT_POOL_EOS)
        why = "the text tower pools the first or last row (CLIPModel pools at <end_of_text>)";
    else if (tc.pool == TS_TEXT_POOL_EOS && tc.eos_id == 2)
        why = "eos_id 2 is transformers' legacy value that pools the largest id instead";
    else if (!hf_act(vc.act) || !hf_act(tc.act)) why = "an activation transformers has no name for";
    if (why) {
        st = ts_fail(err, TS_ERR_UNSUPPORTED, "%s: %s; transformers' CLIPModel cannot hold this "
                     "model", ts_recipe_where(r, "model", where, sizeof where), why);
        goto done;
    }
    /* pooling: the tokenizer's <end_of_text>, the last id (checked when the file is at hand) */
    int eos = tc.pool == TS_TEXT_POOL_EOS ? tc.eos_id : V - 1;
    const char *tpath = ts_recipe_str(r, "data.tokenizer");
    ts_tokenizer *tk = NULL;
    ts_err terr = { 0 };
    if (tpath && ts_tokenizer_load(tpath, &tk, &terr) == TS_OK) {
        int tv = ts_tokenizer_vocab_size(tk), te = ts_tokenizer_eot(tk);
        ts_tokenizer_free(tk);
        if (tv != V || (tc.pool == TS_TEXT_POOL_ARGMAX && te != V - 1)) {
            st = ts_fail(err, TS_ERR_FORMAT, "%s: the tokenizer has %d tokens and <end_of_text> "
                         "%d, the checkpoint's token_embedding %d rows", tpath, tv, te, V);
            goto done;
        }
    } else {
        ts_log(TS_LOG_INFO, "export: the tokenizer %s is not readable (%s); eos_token_id %d, the "
               "last id of the vocabulary, as the CLIP tokenizer lays it out", tpath ? tpath : "",
               terr.msg, eos);
    }

    x.f = f;
    x.path = path;
    x.w = ts_st_writer_new();
    x.used = calloc((size_t)ts_st_count(f) + 1, 1);
    if (!x.used) {
        st = ts_fail(err, TS_ERR_NOMEM, "out of memory");
        goto done;
    }
    int64_t C = vc.width, P = vc.patch, T = 1 + (int64_t)(vc.image_h / P) * (vc.image_w / P);
    int64_t E = vc.out_dim, Ct = tc.width, L = tc.context_length;
    int64_t Iv = (int64_t)(vc.width * vc.mlp_ratio), It = (int64_t)(tc.width * tc.mlp_ratio);
    char a[256], b[256];
    if (!st) st = copy(&x, "vision_model.embeddings.patch_embedding.weight", "visual.conv1.weight",
                       4, TS_SHAPE(C, 3, P, P), err);
    if (!st) st = copy(&x, "vision_model.embeddings.class_embedding", "visual.class_embedding", 1,
                       TS_SHAPE(C), err);
    if (!st) st = copy(&x, "vision_model.embeddings.position_embedding.weight",
                       "visual.positional_embedding", 2, TS_SHAPE(T, C), err);
    if (!st) st = copy(&x, "vision_model.pre_layrnorm.weight", "visual.ln_pre.weight", 1,
                       TS_SHAPE(C), err);
    if (!st) st = copy(&x, "vision_model.pre_layrnorm.bias", "visual.ln_pre.bias", 1,
                       TS_SHAPE(C), err);
    for (int l = 0; l < vc.layers && !st; l++)
        st = block(&x, ts_pname(a, sizeof a, "vision_model.encoder.layers.%d", l),
                   ts_pname(b, sizeof b, "visual.transformer.resblocks.%d", l), C, Iv, err);
    if (!st) st = copy(&x, "vision_model.post_layernorm.weight", "visual.ln_post.weight", 1,
                       TS_SHAPE(C), err);
    if (!st) st = copy(&x, "vision_model.post_layernorm.bias", "visual.ln_post.bias", 1,
                       TS_SHAPE(C), err);
    if (!st) st = transpose(&x, "visual_projection.weight", "visual.proj", C, E, err);
    if (!st) st = copy(&x, "text_model.embeddings.token_embedding.weight",
                       "token_embedding.weight", 2, TS_SHAPE(V, Ct), err);
    if (!st) st = copy(&x, "text_model.embeddings.position_embedding.weight",
                       "positional_embedding", 2, TS_SHAPE(L, Ct), err);
    for (int l = 0; l < tc.layers && !st; l++)
        st = block(&x, ts_pname(a, sizeof a, "text_model.encoder.layers.%d", l),
                   ts_pname(b, sizeof b, "transformer.resblocks.%d", l), Ct, It, err);
    if (!st) st = copy(&x, "text_model.final_layer_norm.weight", "ln_final.weight", 1,
                       TS_SHAPE(Ct), err);
    if (!st) st = copy(&x, "text_model.final_layer_norm.bias", "ln_final.bias", 1, TS_SHAPE(Ct),
                       err);
    if (!st) st = transpose(&x, "text_projection.weight", "text_projection", Ct, E, err);
    if (!st) st = copy(&x, "logit_scale", "logit_scale", 0, NULL, err);
    if (st) goto done;
    /* everything in the checkpoint has a place, or is said to be left behind */
    for (int i = 0; i < ts_st_count(f); i++) {
        const char *n = ts_st_get(f, i)->name;
        if (x.used[i]) continue;
        if (!strcmp(n, "logit_bias")) {
            ts_log(TS_LOG_WARN, "export: %s: logit_bias (a SigLIP objective) has no place in "
                   "CLIPModel and is left out", path);
            continue;
        }
        st = ts_fail(err, TS_ERR_UNSUPPORTED, "%s: tensor %s has no place in transformers' "
                     "CLIPModel", path, n);
        goto done;
    }

    if ((st = ts_mkdirs(out_dir, err))) goto done;
    ts_st_writer_meta(x.w, "format", "pt"); /* transformers refuses safetensors without it */
    snprintf(path, sizeof path, "%s/model.safetensors", out_dir);
    if ((st = ts_st_write(x.w, path, err))) goto done;
    cfg_s = config_json(&vc, &tc, V, eos);
    const char *interp = ts_recipe_str(r, "data.interpolation");
    pre_s = preprocessor_json(vc.image_h, !interp || strcmp(interp, "bilinear"));
    if (!cfg_s || !pre_s) {
        st = ts_fail(err, TS_ERR_NOMEM, "out of memory");
        goto done;
    }
    snprintf(path, sizeof path, "%s/config.json", out_dir);
    if ((st = ts_write_atomic(path, cfg_s, strlen(cfg_s), err))) goto done;
    snprintf(path, sizeof path, "%s/preprocessor_config.json", out_dir);
    if ((st = ts_write_atomic(path, pre_s, strlen(pre_s), err))) goto done;
    ts_log(TS_LOG_INFO, "export: %s -> %s: transformers CLIPModel, %d tensors; ViT %dpx patch %d "
           "width %d, %d layers; text context %d width %d, %d layers, vocabulary %d, "
           "eos_token_id %d; projection %lld", ck, out_dir, x.nout, vc.image_h, vc.patch,
           vc.width, vc.layers, tc.context_length, tc.width, tc.layers, V, eos, (long long)E);
done:
    free(cfg_s);
    free(pre_s);
    for (int i = 0; i < x.nbufs; i++) free(x.bufs[i]);
    free(x.used);
    ts_st_writer_free(x.w);
    ts_st_close(f);
    ts_recipe_free(r);
    return st;
}

int ts_cmd_export(int argc, char **argv) {
    const char *format = NULL, *ckpt = NULL, *out = NULL;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            export_usage(stdout);
            return 0;
        } else if (!strcmp(a, "--checkpoint") || !strcmp(a, "--out")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "tessera export: %s needs a value\n", a);
                return 2;
            }
            if (!strcmp(a, "--out")) out = argv[++i];
            else ckpt = argv[++i];
        } else if (!strncmp(a, "--checkpoint=", 13)) {
            ckpt = a + 13;
        } else if (!strncmp(a, "--out=", 6)) {
            out = a + 6;
        } else if (a[0] == '-') {
            fprintf(stderr, "tessera export: unknown option %s (see tessera export --help)\n", a);
            return 2;
        } else if (!format) {
            format = a;
        } else {
            fprintf(stderr, "tessera export: one format only (got %s and %s)\n", format, a);
            return 2;
        }
    }
    if (!format) {
        export_usage(stderr);
        return 2;
    }
    if (strcmp(format, "hf")) {
        fprintf(stderr, "tessera export: unknown format '%s' (valid: hf)\n", format);
        return 2;
    }
    if (!ckpt || !out || !*ckpt || !*out) {
        fprintf(stderr, "tessera export hf: needs --checkpoint RUN|CKPT and --out DIR (see "
                "tessera export --help)\n");
        return 2;
    }
    ts_err err = { 0 };
    ts_status st = export_hf(ckpt, out, &err);
    if (st) {
        fprintf(stderr, "tessera: error: %s\n", err.msg);
        return st == TS_ERR_USAGE ? 2 : 1;
    }
    printf("%s/model.safetensors\n%s/config.json\n%s/preprocessor_config.json\n", out, out, out);
    return 0;
}
