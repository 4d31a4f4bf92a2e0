/* task_vla.c: vision-language-action policies trained on robot demonstrations (model.type vla).
 *
 * Data: one HDF5 file of demonstrations (data.train) in the robomimic / LIBERO layout or
 * robosuite's raw one, or a weighted mixture of several (data.mix.NAME: {path, weight}) whose
 * action and low-dimensional observation sizes may differ: they are padded to the largest and
 * the padded action dimensions are masked out of the loss, as Octo does. Which datasets are the
 * actions, the low-dimensional observations and the camera images is named in the recipe. The
 * demonstrations are read into memory once (Diffusion Policy's replay buffer) and cut into
 * windows as its SequenceSampler does: n_obs_steps observations and a chunk of horizon actions
 * from the same start, padded at the episode ends by repeating the first or last step.
 * Training windows are drawn from (seed, batch number, row) alone, so a resumed run sees the
 * batches it would have seen. Validation windows are the demos of data.val_filter, or the last
 * data.holdout share of every demo.
 *
 * Normalisation: per dataset, actions and low-dimensional observations are mapped per
 * dimension (minmax to [-1, 1], meanstd, or OpenVLA's 1st/99th percentiles) with statistics
 * fitted on the training windows' steps once; the statistics are buffers of the model
 * (normalizer.NAME.{action,lowdim}.{scale,offset}), saved in every checkpoint and used to
 * invert the predicted actions at inference.
 *
 * Model: the observation becomes a sequence of tokens of width model.cond_dim: the tokens of
 * every camera image and observation step through the image tower (vit or cswin; all its
 * tokens or only the pooled one), the instruction's pooled embedding through the text tower,
 * and each low-dimensional observation step through an MLP; each group is projected to
 * cond_dim and a learned position embedding is added over the whole sequence. Instead of the
 * tower's tokens the policy may see spatial-softmax keypoints of its token grid (robomimic's
 * SpatialSoftmax: where on the picture each learned feature is), and the instruction may
 * modulate the image tokens first (FiLM, as RT-1 does), so that the keypoints can follow the
 * object the instruction names. The action head
 * (action/: diffusion, tokens or l1) predicts the chunk from them. The towers use open_clip's
 * parameter names (visual.*, token_embedding, transformer.*, ...), so `tessera finetune --from`
 * a tessera CLIP checkpoint starts them from it; model.freeze_vision / freeze_text hold them.
 *
 * Evaluation: the action error of the predicted chunks on validation windows in the data's
 * units, beside the error of always predicting the training mean action, and, with
 * eval.rollout.task, the closed-loop success rate of the policy in a built-in simulated task.
 * A trained policy (ts_vla_load: `tessera eval rollout`, `embed`) is built from its checkpoint
 * alone, whose buffers give each dataset's action and observation sizes, the normalisers and
 * the FAST tokenizer: it runs where its demonstrations are not.
 */
#include "cli.h"
#include "../action/action.h"
#include "../loaders/loaders.h"
#include "../text/text.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))
#define VLA_MAX_DS 8
#define VLA_MAX_CAMS 4

/* ---- recipe ---- */

typedef struct vla_model_cfg {
    int type;
    int64_t cond_dim, proprio_hidden;
    int image_tokens;
    int64_t keypoints;
    int film, freeze_vision, freeze_text;
} vla_model_cfg;

static const char *const model_types[] = { "vla", NULL };
enum { IMG_ALL, IMG_POOLED, IMG_KEYPOINTS };
static const char *const image_token_names[] = { "all", "pooled", "keypoints", NULL };
static const ts_key model_keys[] = {
    TS_KEY_CHOICE(vla_model_cfg, type, NULL, model_types, "model type"),
    TS_KEY(TS_KEY_INT, vla_model_cfg, cond_dim, "256", "width of the observation tokens"),
    TS_KEY(TS_KEY_INT, vla_model_cfg, proprio_hidden, "256",
           "hidden width of the low-dimensional observation MLP"),
    TS_KEY_CHOICE(vla_model_cfg, image_tokens, "all", image_token_names,
                  "image tokens given to the head: every token of the tower, the pooled one, "
                  "or spatial-softmax keypoints over the tower's grid (one token each)"),
    TS_KEY(TS_KEY_INT, vla_model_cfg, keypoints, "32",
           "image_tokens keypoints: keypoints per image"),
    TS_KEY(TS_KEY_BOOL, vla_model_cfg, film, "false",
           "modulate the image tokens by the instruction (FiLM, as RT-1 does)"),
    TS_KEY(TS_KEY_BOOL, vla_model_cfg, freeze_vision, "false", "hold the image tower fixed"),
    TS_KEY(TS_KEY_BOOL, vla_model_cfg, freeze_text, "false", "hold the text tower fixed"),
    { "vision", TS_KEY_SECTION, 0, NULL, NULL, "the image tower (type: vit or cswin); absent: "
      "no images" },
    { "text", TS_KEY_SECTION, 0, NULL, NULL, "the instruction's text tower (type: text); "
      "absent: the instruction is not used" },
    { "head", TS_KEY_SECTION, 0, NULL, NULL, "the action head (type: diffusion, tokens, l1)" },
};

typedef struct vla_head_cfg {
    int type;
    int64_t width, depth, heads, train_steps, infer_steps, noise_samples, bins, fast_vocab;
    double mlp_ratio, dropout, fast_scale;
    int prediction, tokenizer;
} vla_head_cfg;

static const char *const head_types[] = TS_HEAD_KIND_NAMES;
static const char *const pred_names[] = { "epsilon", "sample", NULL };
static const char *const tok_names[] = { "bins", "fast", NULL };
static const ts_key head_keys[] = {
    TS_KEY_CHOICE(vla_head_cfg, type, "diffusion", head_types, "the kind of action head"),
    TS_KEY(TS_KEY_INT, vla_head_cfg, width, "256", "width of the head's decoder"),
    TS_KEY(TS_KEY_INT, vla_head_cfg, depth, "4", "decoder blocks"),
    TS_KEY(TS_KEY_INT, vla_head_cfg, heads, "4", "attention heads"),
    TS_KEY(TS_KEY_FLOAT, vla_head_cfg, mlp_ratio, "4.0", "MLP hidden width / width"),
    TS_KEY(TS_KEY_FLOAT, vla_head_cfg, dropout, "0.0", "dropout in the decoder"),
    TS_KEY(TS_KEY_INT, vla_head_cfg, train_steps, "100", "diffusion: DDPM training timesteps"),
    TS_KEY(TS_KEY_INT, vla_head_cfg, infer_steps, "10", "diffusion: DDIM sampling steps"),
    TS_KEY(TS_KEY_INT, vla_head_cfg, noise_samples, "1",
           "diffusion: noised copies of each chunk per batch (the observation encoded once)"),
    TS_KEY_CHOICE(vla_head_cfg, prediction, "epsilon", pred_names,
                  "diffusion: what the denoiser predicts"),
    TS_KEY_CHOICE(vla_head_cfg, tokenizer, "bins", tok_names,
                  "tokens: uniform bins per value, or FAST (DCT + BPE, trained on the data)"),
    TS_KEY(TS_KEY_INT, vla_head_cfg, bins, "256", "tokens/bins: bins over [-1, 1]"),
    TS_KEY(TS_KEY_FLOAT, vla_head_cfg, fast_scale, "10", "tokens/fast: DCT coefficient scale"),
    TS_KEY(TS_KEY_INT, vla_head_cfg, fast_vocab, "1024", "tokens/fast: BPE vocabulary"),
};

typedef struct vla_data_cfg {
    const char *train, *actions, *lowdim, *images, *filter, *val_filter, *tokenizer;
    int64_t batch_size, horizon, n_obs_steps, n_action_steps, context_length;
    double holdout;
    int normalize, skip_bad;
} vla_data_cfg;

static const char *const norm_names[] = TS_NORM_KIND_NAMES;
static const ts_key data_keys[] = {
    TS_KEY(TS_KEY_STRING, vla_data_cfg, train, "\"\"",
           "HDF5 file of demonstrations (or data.mix for several)"),
    { "mix", TS_KEY_SECTION, 0, NULL, NULL,
      "several HDF5 files by name: {path: FILE, weight: W}, sampled by weight" },
    TS_KEY(TS_KEY_STRING, vla_data_cfg, actions, "actions", "the actions' dataset in a demo"),
    TS_KEY(TS_KEY_STRING, vla_data_cfg, lowdim, "\"\"",
           "low-dimensional observations, comma-separated (obs/robot0_eef_pos, states)"),
    TS_KEY(TS_KEY_STRING, vla_data_cfg, images, "\"\"",
           "camera images (uint8 HxWxC), comma-separated (obs/agentview_image)"),
    TS_KEY(TS_KEY_STRING, vla_data_cfg, filter, "\"\"",
           "training demos: the list at mask/FILTER; \"\" = every demo"),
    TS_KEY(TS_KEY_STRING, vla_data_cfg, val_filter, "\"\"",
           "validation demos: the list at mask/VAL_FILTER; \"\" = data.holdout"),
    TS_KEY(TS_KEY_FLOAT, vla_data_cfg, holdout, "0.0",
           "with no val_filter: the last share of every demo held out for validation"),
    TS_KEY(TS_KEY_STRING, vla_data_cfg, tokenizer, "\"\"",
           "BPE merges of the instruction's tokenizer (with model.text)"),
    TS_KEY(TS_KEY_INT, vla_data_cfg, context_length, "0",
           "instruction tokens (0: the text tower's context)"),
    TS_KEY(TS_KEY_INT, vla_data_cfg, batch_size, "64", "windows per batch"),
    TS_KEY(TS_KEY_INT, vla_data_cfg, horizon, "16", "actions per predicted chunk (H)"),
    TS_KEY(TS_KEY_INT, vla_data_cfg, n_obs_steps, "1", "observation steps per window (To)"),
    TS_KEY(TS_KEY_INT, vla_data_cfg, n_action_steps, "8",
           "actions executed per prediction in closed loop (Ta)"),
    TS_KEY_CHOICE(vla_data_cfg, normalize, "minmax", norm_names,
                  "normalisation of actions and low-dimensional observations"),
    TS_KEY(TS_KEY_BOOL, vla_data_cfg, skip_bad, "false",
           "leave out (and count) demos with a missing or malformed dataset"),
};

typedef struct vla_mix_cfg {
    const char *path, *actions, *lowdim, *images;
    double weight;
} vla_mix_cfg;
static const ts_key mix_keys[] = {
    TS_KEY(TS_KEY_STRING, vla_mix_cfg, path, NULL, "HDF5 file of demonstrations"),
    TS_KEY(TS_KEY_FLOAT, vla_mix_cfg, weight, "1.0", "sampling weight"),
    TS_KEY(TS_KEY_STRING, vla_mix_cfg, actions, "\"\"", "this file's actions (\"\": data.actions)"),
    TS_KEY(TS_KEY_STRING, vla_mix_cfg, lowdim, "\"\"",
           "this file's low-dimensional observations (\"\": data.lowdim; - for none)"),
    TS_KEY(TS_KEY_STRING, vla_mix_cfg, images, "\"\"",
           "this file's cameras, as many as data.images names (\"\": data.images)"),
};

typedef struct vla_eval_cfg {
    int64_t max_windows;
} vla_eval_cfg;
static const ts_key eval_keys[] = {
    TS_KEY(TS_KEY_INT, vla_eval_cfg, max_windows, "512",
           "validation windows whose action error is measured (0: all)"),
    { "rollout", TS_KEY_SECTION, 0, NULL, NULL,
      "closed-loop evaluation: {task: reach2d, episodes: N, seed: S}" },
};

typedef struct vla_rollout_cfg {
    const char *task;
    int64_t episodes, seed, targets;
} vla_rollout_cfg;
static const ts_key rollout_keys[] = {
    TS_KEY(TS_KEY_STRING, vla_rollout_cfg, task, "\"\"", "the simulated task (reach2d); \"\": none"),
    TS_KEY(TS_KEY_INT, vla_rollout_cfg, episodes, "50", "episodes per evaluation"),
    TS_KEY(TS_KEY_INT, vla_rollout_cfg, seed, "1000000",
           "seed of the first episode (away from the demonstrations' seeds)"),
    TS_KEY(TS_KEY_INT, vla_rollout_cfg, targets, "3", "reach2d: targets per episode"),
};

/* ---- the replay buffer ---- */

typedef struct vla_demo {
    int64_t len, split;    /* steps; the first split steps are for training */
    float *actions;        /* (len, A_ds) */
    float *lowdim;         /* (len, D_ds) or NULL */
    uint8_t *images[VLA_MAX_CAMS]; /* (len, H, W, C) */
    char *instruction;     /* or NULL */
    int val;               /* a validation demo (data.val_filter) */
    char name[32];         /* demo_N */
} vla_demo;

typedef struct vla_window { int ds, demo; int64_t start; } vla_window;

typedef struct vla_ds {
    char name[64];
    char path[4096];
    const char *actions, *lowdim, *images; /* dataset names in this file */
    double weight;
    int A, D;              /* this dataset's action and low-dimensional sizes */
    int ndemo;
    vla_demo *demos;
    vla_window *train, *val;
    int64_t ntrain, nval;
    ts_normalizer act_norm, low_norm;
    float *act_mean;       /* (A) the training mean action, raw units */
    ts_tensor *buf[4];     /* normalizer.NAME.{action.scale, action.offset, lowdim.scale, ...} */
} vla_ds;

typedef struct vla_task {
    ts_task base;
    vla_model_cfg mc;
    vla_head_cfg hc;
    vla_data_cfg d;
    vla_eval_cfg ev;
    vla_rollout_cfg ro;
    uint64_t seed;
    int nds;
    vla_ds ds[VLA_MAX_DS];
    double weight_cdf[VLA_MAX_DS];
    int ncam, img_h, img_w, A, D, H, To, Ta, L;
    char cam_names[VLA_MAX_CAMS][128];
    /* the model */
    ts_encoder *vision, *text;
    ts_enc_info vinfo, tinfo;
    ts_tokenizer *tok;
    ts_nn_linear img_proj, txt_proj;
    ts_nn_linear film;     /* instruction -> (gamma, beta) over the image token width */
    ts_nn_linear kp;       /* image token -> keypoint logits (a 1x1 convolution) */
    ts_nn_linear low_fc1, low_fc2;
    ts_tensor *obs_pos;    /* (Tc, cond_dim) */
    int img_tokens, Tc;
    ts_act_tok *atok;
    ts_action_head *head;
    ts_tensor *tok_text;   /* the trained FAST tokenizer's text, a byte per value */
    int64_t skipped_demos;
} vla_task;

static const float IMG_MEAN[3] = { 0.48145466f, 0.4578275f, 0.40821073f };
static const float IMG_STD[3] = { 0.26862954f, 0.26130258f, 0.27577711f };

static uint64_t mix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static int split_keys(const char *s, char out[][128], int max) {
    int n = 0;
    const char *p = s;
    while (*p && n < max + 1) {
        while (*p == ' ' || *p == ',') p++;
        if (!*p) break;
        const char *q = p;
        while (*q && *q != ',') q++;
        const char *e = q;
        while (e > p && e[-1] == ' ') e--;
        if (n < max) snprintf(out[n], 128, "%.*s", (int)(e - p), p);
        n++;
        p = q;
    }
    return n;
}

/* Read one HDF5 file into ds. */
static ts_status load_ds(vla_task *s, vla_ds *ds, ts_recipe *r, ts_err *err) {
    char low[TS_TRAJ_MAX_KEYS][128], cams[VLA_MAX_CAMS][128];
    int nlow = strcmp(ds->lowdim, "-") ? split_keys(ds->lowdim, low, TS_TRAJ_MAX_KEYS) : 0;
    int ncam = split_keys(ds->images, cams, VLA_MAX_CAMS);
    if (ncam != s->ncam)
        return ts_fail(err, TS_ERR_RECIPE, "data.mix.%s: %d cameras, data.images names %d",
                       ds->name, ncam, s->ncam);
    char where[512] = "data.lowdim";
    if (nlow > TS_TRAJ_MAX_KEYS)
        return ts_fail(err, TS_ERR_RECIPE, "%s: at most %d low-dimensional keys",
                       r ? ts_recipe_where(r, "data.lowdim", where, sizeof where) : where,
                       TS_TRAJ_MAX_KEYS);
    ts_traj_spec spec = { 0 };
    spec.actions = ds->actions;
    for (int k = 0; k < nlow; k++) spec.lowdim[k] = low[k];
    spec.n_lowdim = nlow;
    for (int k = 0; k < s->ncam; k++) spec.images[k] = cams[k];
    spec.n_images = s->ncam;
    spec.filter = NULL;
    spec.horizon = 1;
    spec.skip_bad = s->d.skip_bad;
    ts_traj *t = NULL;
    ts_status st = ts_traj_open(&t, ds->path, &spec, err);
    if (st) return st;
    s->skipped_demos += ts_traj_num_skipped(t);
    ds->A = (int)ts_traj_action_dim(t);
    ds->D = nlow ? (int)ts_traj_lowdim_total(t) : 0;
    int ih[VLA_MAX_CAMS], iw[VLA_MAX_CAMS];
    for (int k = 0; k < s->ncam; k++) {
        int ch;
        ts_traj_image_shape(t, k, &ih[k], &iw[k], &ch);
        if (ch != 3) {
            st = ts_fail(err, TS_ERR_DATA, "%s: %s has %d channels per pixel; cameras are RGB "
                         "(H, W, 3)", ds->path, cams[k], ch);
            goto out;
        }
        if (ih[k] != s->img_h || iw[k] != s->img_w)
            ts_log(TS_LOG_INFO, "vla: %s: %s is %dx%d, resized to the tower's %dx%d", ds->path,
                   cams[k], iw[k], ih[k], s->img_w, s->img_h);
    }
    /* which demos are for training and which for validation */
    ts_traj *tf = NULL, *tv = NULL;
    if (s->d.filter[0] || s->d.val_filter[0]) {
        ts_traj_spec fs = spec;
        if (s->d.filter[0]) {
            fs.filter = s->d.filter;
            if ((st = ts_traj_open(&tf, ds->path, &fs, err))) goto out;
        }
        if (s->d.val_filter[0]) {
            fs.filter = s->d.val_filter;
            if ((st = ts_traj_open(&tv, ds->path, &fs, err))) {
                ts_traj_close(tf);
                goto out;
            }
        }
    }
    ds->ndemo = ts_traj_num_demos(t);
    ds->demos = calloc((size_t)ds->ndemo, sizeof *ds->demos);
    if (!ds->demos) {
        st = ts_fail(err, TS_ERR_NOMEM, "out of memory");
        goto out2;
    }
    for (int d = 0; d < ds->ndemo; d++) {
        vla_demo *dm = &ds->demos[d];
        const char *name = ts_traj_demo_name(t, d);
        int in_train = !tf, in_val = 0;
        for (int i = 0; tf && i < ts_traj_num_demos(tf); i++)
            if (!strcmp(ts_traj_demo_name(tf, i), name)) in_train = 1;
        for (int i = 0; tv && i < ts_traj_num_demos(tv); i++)
            if (!strcmp(ts_traj_demo_name(tv, i), name)) in_val = 1;
        if (in_val) in_train = 0;
        dm->len = ts_traj_demo_len(t, d);
        dm->val = in_val;
        snprintf(dm->name, sizeof dm->name, "%s", name);
        dm->split = in_train ? (s->d.val_filter[0] ? dm->len
                                                   : (int64_t)((1.0 - s->d.holdout) * dm->len))
                             : 0;
        if (!in_train && !in_val) dm->len = 0; /* in neither list: not used */
        if (!dm->len) continue;
        dm->actions = malloc((size_t)dm->len * ds->A * sizeof(float));
        dm->lowdim = ds->D ? malloc((size_t)dm->len * ds->D * sizeof(float)) : NULL;
        uint8_t *imgs[TS_TRAJ_MAX_KEYS] = { 0 };
        int ok = dm->actions && (!ds->D || dm->lowdim);
        for (int k = 0; k < s->ncam; k++) {
            dm->images[k] = malloc((size_t)dm->len * s->img_h * s->img_w * 3);
            int same = ih[k] == s->img_h && iw[k] == s->img_w;
            imgs[k] = same ? dm->images[k] : malloc((size_t)dm->len * ih[k] * iw[k] * 3);
            ok = ok && imgs[k] && dm->images[k];
        }
        if (!ok) {
            st = ts_fail(err, TS_ERR_NOMEM, "%s: %s: out of memory reading %lld steps", ds->path,
                         name, (long long)dm->len);
            goto out2;
        }
        st = ts_traj_read(t, d, 0, (int)dm->len, dm->actions, dm->lowdim, imgs, err);
        for (int k = 0; k < s->ncam; k++) {
            if (imgs[k] == dm->images[k]) continue;
            /* another size: every frame resized (antialiased bilinear) to the tower's */
            ts_image_u8 in, o;
            ts_image_u8_init(&o);
            for (int64_t f = 0; !st && f < dm->len; f++) {
                in = (ts_image_u8){ iw[k], ih[k], imgs[k] + (size_t)f * ih[k] * iw[k] * 3, 0 };
                st = ts_image_resize(&o, &in, s->img_w, s->img_h, TS_INTERP_BILINEAR, err);
                if (!st)
                    memcpy(dm->images[k] + (size_t)f * s->img_h * s->img_w * 3, o.data,
                           (size_t)s->img_h * s->img_w * 3);
            }
            ts_image_u8_free(&o);
            free(imgs[k]);
        }
        if (st) goto out2;
        const char *ins = ts_traj_instruction(t, d);
        if (ins) dm->instruction = strdup(ins);
        if (s->text && !ins) {
            st = ts_fail(err, TS_ERR_DATA, "%s: %s has no language instruction (attribute "
                         "language_instruction) but the model has a text tower", ds->path, name);
            goto out2;
        }
    }
out2:
    ts_traj_close(tf);
    ts_traj_close(tv);
out:
    ts_traj_close(t);
    return st;
}

/* The windows of every demo (Diffusion Policy's SequenceSampler with pad_before To - 1 and
 * pad_after Ta - 1): training windows lie in the first split steps, validation windows in the
 * rest (or in the whole of a validation demo). */
static ts_status make_windows(vla_task *s, vla_ds *ds, ts_err *err) {
    int64_t H = s->H, pb = s->To - 1, pa = s->Ta - 1;
    for (int pass = 0; pass < 2; pass++) {
        int64_t nt = 0, nv = 0;
        for (int d = 0; d < ds->ndemo; d++) {
            const vla_demo *dm = &ds->demos[d];
            if (!dm->len) continue;
            /* training: starts -pb .. split - H + pa */
            for (int64_t st = -pb; st <= dm->split - H + pa && dm->split > 0; st++) {
                if (pass) ds->train[nt] = (vla_window){ ds - s->ds, d, st };
                nt++;
            }
            int64_t v0 = dm->val ? -pb : dm->split;
            for (int64_t st = v0; dm->split < dm->len && st <= dm->len - H + pa; st++) {
                if (st < 0 && !dm->val) continue;
                if (pass) ds->val[nv] = (vla_window){ ds - s->ds, d, st };
                nv++;
            }
        }
        if (!pass) {
            if (!nt)
                return ts_fail(err, TS_ERR_DATA, "%s: no training window of %lld steps (demos "
                               "too short for data.horizon, or none selected)", ds->path,
                               (long long)H);
            ds->ntrain = nt;
            ds->nval = nv;
            ds->train = malloc((size_t)nt * sizeof *ds->train);
            ds->val = malloc((size_t)(nv ? nv : 1) * sizeof *ds->val);
            if (!ds->train || !ds->val) return ts_fail(err, TS_ERR_NOMEM, "out of memory");
        }
    }
    return TS_OK;
}

/* Fit the normalisers on the training steps. */
static ts_status fit_stats(vla_task *s, vla_ds *ds, ts_err *err) {
    int64_t n = 0;
    for (int d = 0; d < ds->ndemo; d++) n += ds->demos[d].split;
    float *a = malloc((size_t)(n ? n : 1) * ds->A * sizeof(float));
    float *l = malloc((size_t)(n ? n : 1) * (ds->D ? ds->D : 1) * sizeof(float));
    ds->act_mean = calloc((size_t)ds->A, sizeof(float));
    if (!a || !l || !ds->act_mean) {
        free(a);
        free(l);
        return ts_fail(err, TS_ERR_NOMEM, "out of memory");
    }
    int64_t k = 0;
    for (int d = 0; d < ds->ndemo; d++) {
        const vla_demo *dm = &ds->demos[d];
        memcpy(a + k * ds->A, dm->actions, (size_t)dm->split * ds->A * sizeof(float));
        if (ds->D) memcpy(l + k * ds->D, dm->lowdim, (size_t)dm->split * ds->D * sizeof(float));
        k += dm->split;
    }
    for (int64_t i = 0; i < n; i++)
        for (int j = 0; j < ds->A; j++) ds->act_mean[j] += a[i * ds->A + j] / (float)n;
    for (int64_t i = 0; i < n * ds->A; i++)
        if (!isfinite(a[i])) {
            free(a);
            free(l);
            return ts_fail(err, TS_ERR_DATA, "%s: %s holds a NaN or an infinity", ds->path,
                           ds->actions);
        }
    ts_norm_fit(&ds->act_norm, (ts_norm_kind)s->d.normalize, a, n, ds->A);
    if (ds->D) ts_norm_fit(&ds->low_norm, (ts_norm_kind)s->d.normalize, l, n, ds->D);
    free(a);
    free(l);
    return TS_OK;
}

static void ds_free(vla_task *s, vla_ds *ds);

/* ---- observations to tokens ---- */

/* Raw observations of n rows: images (n, ncam, To, h, w, 3) u8, lowdim (n, To, D) raw values
 * of dataset ds[i] (padded with zeros to D), instruction ids (n, L). */
typedef struct vla_obs {
    int64_t n;
    uint8_t *images;
    float *lowdim;
    int32_t *ids;
    int *ds;
} vla_obs;

static void obs_free(vla_obs *o) {
    free(o->images);
    free(o->lowdim);
    free(o->ids);
    free(o->ds);
    memset(o, 0, sizeof *o);
}

static ts_status obs_alloc(const vla_task *s, vla_obs *o, int64_t n, ts_err *err) {
    memset(o, 0, sizeof *o);
    o->n = n;
    size_t img = (size_t)n * s->ncam * s->To * s->img_h * s->img_w * 3;
    o->images = s->ncam ? malloc(img) : NULL;
    o->lowdim = s->D ? calloc((size_t)n * s->To * s->D, sizeof(float)) : NULL;
    o->ids = s->text ? calloc((size_t)n * s->L, sizeof(int32_t)) : NULL;
    o->ds = calloc((size_t)n, sizeof(int));
    if ((s->ncam && !o->images) || (s->D && !o->lowdim) || (s->text && !o->ids) || !o->ds) {
        obs_free(o);
        return ts_fail(err, TS_ERR_NOMEM, "out of memory for %lld observations", (long long)n);
    }
    return TS_OK;
}

static int64_t clamp_step(int64_t t, int64_t len) { return t < 0 ? 0 : t >= len ? len - 1 : t; }

/* Row i of o from window w; actions (H, A) normalised and mask (A) when not NULL. */
static void fill_window(vla_task *s, vla_obs *o, int64_t i, const vla_window *w, float *actions,
                        float *mask) {
    const vla_ds *ds = &s->ds[w->ds];
    const vla_demo *dm = &ds->demos[w->demo];
    o->ds[i] = w->ds;
    size_t fr = (size_t)s->img_h * s->img_w * 3;
    for (int k = 0; k < s->To; k++) {
        int64_t t = clamp_step(w->start + k, dm->len);
        for (int cam = 0; cam < s->ncam; cam++)
            memcpy(o->images + (((size_t)i * s->ncam + cam) * s->To + k) * fr,
                   dm->images[cam] + (size_t)t * fr, fr);
        if (ds->D)
            memcpy(o->lowdim + ((size_t)i * s->To + k) * s->D, dm->lowdim + t * ds->D,
                   (size_t)ds->D * sizeof(float));
    }
    if (s->text) {
        const char *ins = dm->instruction ? dm->instruction : "";
        ts_tokenizer_encode_context(s->tok, ins, strlen(ins), o->ids + i * s->L, s->L);
    }
    if (actions) {
        for (int h = 0; h < s->H; h++) {
            int64_t t = clamp_step(w->start + h, dm->len);
            float *row = actions + (size_t)h * s->A;
            memset(row, 0, (size_t)s->A * sizeof(float));
            memcpy(row, dm->actions + t * ds->A, (size_t)ds->A * sizeof(float));
            ts_norm_apply(&ds->act_norm, row, 1);
        }
    }
    if (mask)
        for (int j = 0; j < s->A; j++) mask[j] = j < ds->A ? 1.0f : 0.0f;
}

/* The observation tokens (n, Tc, cond_dim) of o. */
static ts_tensor *encode_obs(ts_ctx *c, vla_task *s, const vla_obs *o) {
    int64_t n = o->n;
    ts_tensor *parts[3], *instr = NULL, *txt = NULL;
    int np = 0;
    if (s->text) {
        ts_tensor *ids = ts_new(c, TS_I32, 2, TS_SHAPE(n, s->L));
        memcpy(ids->data, o->ids, (size_t)n * s->L * sizeof(int32_t));
        ts_batch b = { .n = n, .text = ids };
        instr = s->text->forward(c, s->text, &b, NULL);                 /* (n, E) */
        txt = ts_nn_linear_forward(c, &s->txt_proj,
                                   ts_reshape(c, instr, 3, TS_SHAPE(n, 1, ts_dim(instr, -1))));
    }
    if (s->ncam) {
        int64_t ni = n * s->ncam * s->To, hw = (int64_t)s->img_h * s->img_w;
        ts_tensor *img = ts_new_f32(c, 4, TS_SHAPE(ni, 3, s->img_h, s->img_w));
        float *x = ts_f32(img);
        for (int64_t i = 0; i < ni; i++) {
            const uint8_t *src = o->images + (size_t)i * hw * 3;
            for (int ch = 0; ch < 3; ch++) {
                float *dst = x + ((size_t)i * 3 + ch) * hw;
                for (int64_t p = 0; p < hw; p++)
                    dst[p] = ((float)src[p * 3 + ch] / 255.0f - IMG_MEAN[ch]) / IMG_STD[ch];
            }
        }
        ts_batch b = { .n = ni, .images = img };
        int grid = s->mc.image_tokens != IMG_POOLED;
        ts_tensor *tokens = NULL;
        ts_tensor *pooled = s->vision->forward(c, s->vision, &b, grid ? &tokens : NULL);
        ts_tensor *f = grid ? tokens : pooled;
        int64_t width = ts_dim(f, -1), per = grid ? ts_dim(f, 1) : 1;
        if (s->mc.film && instr) {
            f = ts_reshape(c, f, 3, TS_SHAPE(n, s->ncam * s->To * per, width));
            f = ts_film(c, &s->film, f, instr);
            f = ts_reshape(c, f, 3, TS_SHAPE(ni, per, width));
        }
        if (s->mc.image_tokens == IMG_KEYPOINTS) {
            f = ts_spatial_softmax(c, &s->kp, ts_slice(c, f, 1, s->vinfo.grid_first,
                                                       s->vinfo.grid_first +
                                                           (int64_t)s->vinfo.grid_h *
                                                               s->vinfo.grid_w),
                                   s->vinfo.grid_h, s->vinfo.grid_w);
            width = 2;
        }
        f = ts_reshape(c, f, 3, TS_SHAPE(n, s->ncam * s->To * s->img_tokens, width));
        parts[np++] = ts_nn_linear_forward(c, &s->img_proj, f);
    }
    if (txt) parts[np++] = txt;
    if (s->D) {
        ts_tensor *low = ts_new_f32(c, 3, TS_SHAPE(n, s->To, s->D));
        float *x = ts_f32(low);
        for (int64_t i = 0; i < n; i++) {
            const vla_ds *ds = &s->ds[o->ds[i]];
            for (int k = 0; k < s->To; k++) {
                float *row = x + ((size_t)i * s->To + k) * s->D;
                memcpy(row, o->lowdim + ((size_t)i * s->To + k) * s->D, (size_t)s->D * sizeof(float));
                if (ds->D) ts_norm_apply(&ds->low_norm, row, 1); /* its first ds->D values */
                for (int j = ds->D; j < s->D; j++) row[j] = 0.0f;
            }
        }
        ts_tensor *h = ts_relu(c, ts_nn_linear_forward(c, &s->low_fc1, low));
        parts[np++] = ts_nn_linear_forward(c, &s->low_fc2, h);
    }
    ts_tensor *cond = np == 1 ? parts[0] : ts_concat(c, parts, np, 1);
    return ts_add(c, cond, s->obs_pos);
}

/* ---- training ---- */

static const vla_window *draw_window(const vla_task *s, uint64_t pos, int64_t row) {
    uint64_t h = mix64(s->seed ^ mix64(pos * 0x100000001b3ull + (uint64_t)row));
    double u = (double)(h >> 11) / 9007199254740992.0;
    int d = 0;
    while (d < s->nds - 1 && u >= s->weight_cdf[d]) d++;
    uint64_t h2 = mix64(h);
    return &s->ds[d].train[h2 % (uint64_t)s->ds[d].ntrain];
}

static ts_tensor *vla_loss(ts_task *t, ts_ctx *c, int64_t pos, ts_metrics *m, ts_err *err) {
    vla_task *s = t->impl;
    if (!s->ds[0].ntrain) {
        ts_fail(err, TS_ERR_USAGE, "vla: a policy loaded to run has no training data");
        return NULL;
    }
    int64_t B = s->d.batch_size, r0 = B * c->rank / c->world, r1 = B * (c->rank + 1) / c->world;
    int64_t n = r1 - r0;
    vla_obs o;
    if (obs_alloc(s, &o, n, err)) return NULL;
    ts_tensor *act = ts_new_f32(c, 3, TS_SHAPE(n, s->H, s->A));
    ts_tensor *mask = ts_new_f32(c, 2, TS_SHAPE(n, s->A));
    for (int64_t i = 0; i < n; i++)
        fill_window(s, &o, i, draw_window(s, (uint64_t)pos, r0 + i),
                    ts_f32(act) + i * s->H * s->A, ts_f32(mask) + i * s->A);
    ts_tensor *cond = encode_obs(c, s, &o);
    obs_free(&o);
    return ts_action_head_loss(c, s->head, cond, act, s->nds > 1 ? mask : NULL, m);
}

/* Predict the chunks of o into out (n, H, A) in each row's dataset units. */
static void predict_raw(ts_ctx *c, vla_task *s, const vla_obs *o, uint64_t seed, float *out,
                        int64_t *bad) {
    int grad = c->grad_enabled, training = c->training;
    c->grad_enabled = 0;
    c->training = 0;
    ts_tensor *cond = encode_obs(c, s, o);
    ts_action_head_predict(c, s->head, cond, seed, out, bad);
    for (int64_t i = 0; i < o->n; i++)
        for (int h = 0; h < s->H; h++) ts_norm_invert(&s->ds[o->ds[i]].act_norm,
                                                      out + ((size_t)i * s->H + h) * s->A, 1);
    ts_ctx_reset(c);
    c->grad_enabled = grad;
    c->training = training;
}

/* Mean squared error of the predicted chunks of validation windows, in the data's units,
 * beside that of predicting the training mean action. */
static ts_status val_error(ts_ctx *c, vla_task *s, double *mse, double *mean_mse,
                           int64_t *windows, ts_err *err) {
    int64_t total = 0;
    for (int d = 0; d < s->nds; d++) total += s->ds[d].nval;
    *mse = *mean_mse = NAN;
    *windows = 0;
    if (!total) return TS_OK;
    int64_t want = s->ev.max_windows > 0 && s->ev.max_windows < total ? s->ev.max_windows : total;
    int64_t bs = s->d.batch_size;
    double se = 0, sm = 0, cnt = 0;
    float *pred = malloc((size_t)bs * s->H * s->A * sizeof(float));
    const vla_window **w = malloc((size_t)bs * sizeof *w);
    if (!pred || !w) {
        free(pred);
        free(w);
        return ts_fail(err, TS_ERR_NOMEM, "out of memory");
    }
    for (int64_t i0 = 0; i0 < want; i0 += bs) {
        int64_t n = want - i0 < bs ? want - i0 : bs;
        vla_obs o;
        if (obs_alloc(s, &o, n, err)) {
            free(pred);
            free(w);
            return err->code;
        }
        for (int64_t i = 0; i < n; i++) {
            /* evenly spread over all validation windows, dataset after dataset */
            int64_t k = (i0 + i) * total / want, d = 0;
            while (k >= s->ds[d].nval) k -= s->ds[d++].nval;
            w[i] = &s->ds[d].val[k];
            fill_window(s, &o, i, w[i], NULL, NULL);
        }
        predict_raw(c, s, &o, s->seed ^ 0x5eedull ^ (uint64_t)i0, pred, NULL);
        for (int64_t i = 0; i < n; i++) {
            const vla_ds *ds = &s->ds[o.ds[i]];
            const vla_demo *dm = &ds->demos[w[i]->demo];
            for (int h = 0; h < s->H; h++) {
                int64_t t = clamp_step(w[i]->start + h, dm->len);
                for (int j = 0; j < ds->A; j++) {
                    double y = dm->actions[t * ds->A + j];
                    double e = pred[((size_t)i * s->H + h) * s->A + j] - y;
                    double em = ds->act_mean[j] - y;
                    se += e * e;
                    sm += em * em;
                    cnt += 1;
                }
            }
        }
        obs_free(&o);
    }
    free(pred);
    free(w);
    *mse = se / cnt;
    *mean_mse = sm / cnt;
    *windows = want;
    return TS_OK;
}

static ts_status vla_eval(ts_task *t, ts_ctx *c, ts_metrics *m, ts_err *err) {
    vla_task *s = t->impl;
    double mse, mean_mse;
    int64_t nw;
    ts_status st = val_error(c, s, &mse, &mean_mse, &nw, err);
    if (st) return st;
    if (nw) {
        ts_metrics_set(m, "val_action_mse", mse);
        ts_metrics_set(m, "val_mean_action_mse", mean_mse);
    }
    if (s->ro.task[0]) {
        ts_vla_rollout_result res;
        if ((st = ts_vla_rollout(t, c, s->ro.task, (int)s->ro.episodes, (uint64_t)s->ro.seed,
                                 NULL, &res, err)))
            return st;
        ts_metrics_set(m, "rollout_success", res.success_rate);
    }
    return TS_OK;
}

/* ---- closed loop ---- */

static void reach2d_lowdim(const ts_reach2d *e, const int *src, const int *num, int n, float *out) {
    float pr[TS_REACH2D_PROPRIO];
    ts_reach2d_proprio(e, pr);
    for (int k = 0, o = 0; k < n; o += num[k], k++) memcpy(out + o, pr + src[k], (size_t)num[k] * sizeof(float));
}

ts_status ts_vla_rollout(ts_task *t, ts_ctx *c, const char *task, int episodes, uint64_t seed,
                         const ts_vla_rollout_opts *opts, ts_vla_rollout_result *res,
                         ts_err *err) {
    TS_CHECK(t && !strcmp(t->type, "vla"), "ts_vla_rollout: not a vla task");
    vla_task *s = t->impl;
    memset(res, 0, sizeof *res);
    if (strcmp(task, "reach2d") != 0)
        return ts_fail(err, TS_ERR_USAGE, "unknown simulated task '%s' (valid: reach2d)", task);
    if (episodes < 1) return ts_fail(err, TS_ERR_USAGE, "episodes must be at least 1");
    ts_reach2d_cfg rc = ts_reach2d_cfg_default();
    rc.size = s->img_h;
    rc.n_targets = opts && opts->targets > 0 ? opts->targets : (int)s->ro.targets;
    /* the low-dimensional keys the policy reads, as reach2d's writer names them */
    char lk[TS_TRAJ_MAX_KEYS][128];
    int nlk = strcmp(s->ds[0].lowdim, "-") ? split_keys(s->ds[0].lowdim, lk, TS_TRAJ_MAX_KEYS) : 0;
    int lsrc[TS_TRAJ_MAX_KEYS], lnum[TS_TRAJ_MAX_KEYS], dsum = 0;
    for (int k = 0; k < nlk && k < TS_TRAJ_MAX_KEYS; k++) {
        lsrc[k] = !strcmp(lk[k], "obs/agent_pos") ? 0 : !strcmp(lk[k], "obs/agent_vel") ? 2
                  : !strcmp(lk[k], "obs/proprio") ? 0 : -1;
        lnum[k] = !strcmp(lk[k], "obs/proprio") ? 4 : 2;
        if (lsrc[k] < 0)
            return ts_fail(err, TS_ERR_USAGE, "reach2d has no low-dimensional observation '%s' "
                           "(it has obs/agent_pos, obs/agent_vel, obs/proprio)", lk[k]);
        dsum += lnum[k];
    }
    if (s->ncam != 1 || s->img_h != s->img_w || s->D != dsum || s->A != 2)
        return ts_fail(err, TS_ERR_USAGE, "reach2d needs a policy of one camera image, its "
                       "low-dimensional observations and 2-d actions (this one has %d cameras, "
                       "%d low-dimensional values and %d-d actions)", s->ncam, s->D, s->A);
    int n = episodes;
    ts_reach2d **env = calloc((size_t)n, sizeof *env);
    int *done = calloc((size_t)n, sizeof(int));
    int64_t *rows = calloc((size_t)n, sizeof(int64_t));
    size_t fr = (size_t)s->img_h * s->img_w * 3;
    uint8_t *hist = malloc((size_t)n * s->To * fr);          /* the last To frames */
    float *lhist = malloc((size_t)n * s->To * s->D * sizeof(float));
    float *pred = malloc((size_t)n * s->H * s->A * sizeof(float));
    ts_status st = TS_OK;
    if (!env || !done || !rows || !hist || !lhist || !pred) {
        st = ts_fail(err, TS_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (int e = 0; e < n; e++) {
        env[e] = ts_reach2d_new(&rc);
        if (!env[e]) {
            st = ts_fail(err, TS_ERR_NOMEM, "out of memory");
            goto out;
        }
        ts_reach2d_reset(env[e], seed + (uint64_t)e);
        /* the history starts as copies of the first observation */
        for (int k = 0; k < s->To; k++) {
            ts_reach2d_render(env[e], hist + ((size_t)e * s->To + k) * fr);
            reach2d_lowdim(env[e], lsrc, lnum, nlk, lhist + ((size_t)e * s->To + k) * s->D);
        }
    }
    for (int round = 0;; round++) {
        int64_t na = 0;
        for (int e = 0; e < n; e++)
            if (!done[e]) rows[na++] = e;
        if (!na) break;
        vla_obs o;
        if ((st = obs_alloc(s, &o, na, err))) goto out;
        for (int64_t i = 0; i < na; i++) {
            int e = (int)rows[i];
            memcpy(o.images + (size_t)i * s->To * fr, hist + (size_t)e * s->To * fr,
                   (size_t)s->To * fr);
            memcpy(o.lowdim + (size_t)i * s->To * s->D, lhist + (size_t)e * s->To * s->D,
                   (size_t)s->To * s->D * sizeof(float));
            if (s->text) {
                /* the instruction: the episode's own, or another episode's (an ablation) */
                int src = opts && opts->instruction_shift
                              ? (e + opts->instruction_shift) % n : e;
                char buf[256];
                ts_reach2d *other = env[src];
                const char *ins = ts_reach2d_instruction(other);
                if (opts && opts->instruction) ins = opts->instruction;
                snprintf(buf, sizeof buf, "%s", ins);
                ts_tokenizer_encode_context(s->tok, buf, strlen(buf), o.ids + i * s->L, s->L);
            }
        }
        predict_raw(c, s, &o, seed ^ mix64((uint64_t)round + 1), pred, &res->undecodable);
        obs_free(&o);
        for (int64_t i = 0; i < na; i++) {
            int e = (int)rows[i];
            /* Diffusion Policy executes actions To-1 .. To-1+Ta-1 of the chunk */
            for (int k = 0; k < s->Ta && !done[e]; k++) {
                int h = s->To - 1 + k;
                if (h >= s->H) break;
                done[e] = ts_reach2d_step(env[e], pred + ((size_t)i * s->H + h) * s->A);
                memmove(hist + (size_t)e * s->To * fr, hist + ((size_t)e * s->To + 1) * fr,
                        (size_t)(s->To - 1) * fr);
                memmove(lhist + (size_t)e * s->To * s->D, lhist + ((size_t)e * s->To + 1) * s->D,
                        (size_t)(s->To - 1) * s->D * sizeof(float));
                ts_reach2d_render(env[e], hist + ((size_t)e * s->To + s->To - 1) * fr);
                reach2d_lowdim(env[e], lsrc, lnum, nlk,
                               lhist + ((size_t)e * s->To + s->To - 1) * s->D);
            }
        }
    }
    for (int e = 0; e < n; e++) {
        int ok = ts_reach2d_success(env[e]);
        res->successes += ok;
        res->steps += ts_reach2d_steps(env[e]);
    }
    res->episodes = n;
    res->success_rate = (double)res->successes / n;
out:
    for (int e = 0; env && e < n; e++) ts_reach2d_free(env[e]);
    free(env);
    free(done);
    free(rows);
    free(hist);
    free(lhist);
    free(pred);
    return st;
}

/* ---- embeddings of windows ---- */

int ts_vla_embed_dim(const ts_task *t) {
    TS_CHECK(t && !strcmp(t->type, "vla"), "ts_vla_embed_dim: not a vla task");
    return (int)((const vla_task *)t->impl)->mc.cond_dim;
}

ts_status ts_vla_embed_file(ts_task *t, ts_ctx *c, const char *path, float **out, int64_t *n,
                            char ***ids, ts_err *err) {
    TS_CHECK(t && !strcmp(t->type, "vla"), "ts_vla_embed_file: not a vla task");
    vla_task *s = t->impl;
    *out = NULL;
    *n = 0;
    *ids = NULL;
    /* the file's demos as one more dataset, every window of every demo for validation */
    if (s->nds >= VLA_MAX_DS) return ts_fail(err, TS_ERR_USAGE, "too many datasets");
    vla_ds *ds = &s->ds[s->nds];
    memset(ds, 0, sizeof *ds);
    snprintf(ds->name, sizeof ds->name, "embed");
    snprintf(ds->path, sizeof ds->path, "%s", path);
    ds->actions = s->ds[0].actions;
    ds->lowdim = s->ds[0].lowdim;
    ds->images = s->ds[0].images;
    const char *vf = s->d.val_filter, *ff = s->d.filter;
    s->d.val_filter = "";
    s->d.filter = "";
    double ho = s->d.holdout;
    s->d.holdout = 1.0;
    ts_status st = load_ds(s, ds, NULL, err);
    s->d.val_filter = vf;
    s->d.filter = ff;
    s->d.holdout = ho;
    if (!st && (ds->A != s->ds[0].A || ds->D != s->ds[0].D))
        st = ts_fail(err, TS_ERR_DATA, "%s: actions of %d and low-dimensional observations of "
                     "%d values; the model was trained on %d and %d", path, ds->A, ds->D,
                     s->ds[0].A, s->ds[0].D);
    /* one window per step: the observation at that step */
    if (!st) {
        int64_t nw = 0;
        for (int d = 0; d < ds->ndemo; d++) nw += ds->demos[d].len;
        ds->val = malloc((size_t)(nw ? nw : 1) * sizeof *ds->val);
        if (!ds->val) st = ts_fail(err, TS_ERR_NOMEM, "out of memory");
        for (int d = 0; !st && d < ds->ndemo; d++)
            for (int64_t k = 0; k < ds->demos[d].len; k++)
                ds->val[ds->nval++] = (vla_window){ s->nds, d, k };
    }
    if (st) goto out;
    /* the model's statistics, not the file's */
    ds->act_norm = s->ds[0].act_norm;
    ds->low_norm = s->ds[0].low_norm;
    int64_t nw = ds->nval, bs = s->d.batch_size, E = s->mc.cond_dim;
    *out = malloc((size_t)(nw ? nw : 1) * E * sizeof(float));
    *ids = calloc((size_t)(nw ? nw : 1), sizeof(char *));
    if (!*out || !*ids) {
        st = ts_fail(err, TS_ERR_NOMEM, "out of memory");
        goto out;
    }
    int grad = c->grad_enabled, training = c->training;
    c->grad_enabled = 0;
    c->training = 0;
    s->nds++;
    for (int64_t i0 = 0; i0 < nw && !st; i0 += bs) {
        int64_t m = nw - i0 < bs ? nw - i0 : bs;
        vla_obs o;
        if ((st = obs_alloc(s, &o, m, err))) break;
        for (int64_t i = 0; i < m; i++) fill_window(s, &o, i, &ds->val[i0 + i], NULL, NULL);
        ts_tensor *cond = encode_obs(c, s, &o);
        ts_tensor *pooled = ts_mean(c, cond, 1);
        memcpy(*out + i0 * E, ts_f32(pooled), (size_t)m * E * sizeof(float));
        for (int64_t i = 0; i < m; i++) {
            char id[160];
            const vla_window *w = &ds->val[i0 + i];
            snprintf(id, sizeof id, "%s/%lld", ds->demos[w->demo].name, (long long)w->start);
            (*ids)[i0 + i] = strdup(id);
        }
        obs_free(&o);
        ts_ctx_reset(c);
    }
    s->nds--;
    c->grad_enabled = grad;
    c->training = training;
    *n = nw;
out:
    ds->act_norm = (ts_normalizer){ 0 };
    ds->low_norm = (ts_normalizer){ 0 };
    ds_free(s, ds);
    return st;
}

/* ---- building and freeing ---- */

static void ds_free(vla_task *s, vla_ds *ds) {
    for (int d = 0; ds->demos && d < ds->ndemo; d++) {
        vla_demo *dm = &ds->demos[d];
        free(dm->actions);
        free(dm->lowdim);
        for (int k = 0; k < VLA_MAX_CAMS; k++) free(dm->images[k]);
        free(dm->instruction);
    }
    (void)s;
    free(ds->demos);
    free(ds->train);
    free(ds->val);
    free(ds->act_mean);
    ts_norm_free(&ds->act_norm);
    ts_norm_free(&ds->low_norm);
    memset(ds, 0, sizeof *ds);
}

static void vla_free(ts_task *t) {
    vla_task *s = t->impl;
    for (int d = 0; d < s->nds; d++) ds_free(s, &s->ds[d]);
    ts_action_head_free(s->head);
    ts_act_tok_free(s->atok);
    ts_encoder_free(s->vision);
    ts_encoder_free(s->text);
    ts_tokenizer_free(s->tok);
    ts_params_free(s->base.params);
    free(s);
}

static int starts_with(const char *s, const char *p) { return !strncmp(s, p, strlen(p)); }

/* The normalisers' state into the buffers (after finalize), or back (after a load). */
static void stats_to_buffers(vla_task *s) {
    for (int d = 0; d < s->nds; d++) {
        vla_ds *ds = &s->ds[d];
        memcpy(ts_f32(ds->buf[0]), ds->act_norm.scale, (size_t)ds->A * sizeof(float));
        memcpy(ts_f32(ds->buf[1]), ds->act_norm.offset, (size_t)ds->A * sizeof(float));
        if (ds->D) {
            memcpy(ts_f32(ds->buf[2]), ds->low_norm.scale, (size_t)ds->D * sizeof(float));
            memcpy(ts_f32(ds->buf[3]), ds->low_norm.offset, (size_t)ds->D * sizeof(float));
        }
    }
}

void ts_vla_stats_from_buffers(ts_task *t) {
    TS_CHECK(t && !strcmp(t->type, "vla"), "ts_vla_stats_from_buffers: not a vla task");
    vla_task *s = t->impl;
    for (int d = 0; d < s->nds; d++) {
        vla_ds *ds = &s->ds[d];
        memcpy(ds->act_norm.scale, ts_f32(ds->buf[0]), (size_t)ds->A * sizeof(float));
        memcpy(ds->act_norm.offset, ts_f32(ds->buf[1]), (size_t)ds->A * sizeof(float));
        if (ds->D) {
            memcpy(ds->low_norm.scale, ts_f32(ds->buf[2]), (size_t)ds->D * sizeof(float));
            memcpy(ds->low_norm.offset, ts_f32(ds->buf[3]), (size_t)ds->D * sizeof(float));
        }
    }
}

static ts_status build_fast(vla_task *s, ts_err *err) {
    int64_t n = 0;
    for (int d = 0; d < s->nds; d++) n += s->ds[d].ntrain;
    /* at most 20000 chunks, spread evenly */
    int64_t m = n < 20000 ? n : 20000;
    float *chunks = malloc((size_t)m * s->H * s->A * sizeof(float));
    if (!chunks) return ts_fail(err, TS_ERR_NOMEM, "out of memory");
    vla_obs o;
    ts_status st = obs_alloc(s, &o, 1, err);
    for (int64_t i = 0; !st && i < m; i++) {
        int64_t k = i * n / m, d = 0;
        while (k >= s->ds[d].ntrain) k -= s->ds[d++].ntrain;
        fill_window(s, &o, 0, &s->ds[d].train[k], chunks + i * s->H * s->A, NULL);
    }
    obs_free(&o);
    ts_fast_cfg fc = ts_fast_cfg_default();
    fc.scale = (float)s->hc.fast_scale;
    fc.vocab = (int)s->hc.fast_vocab;
    if (!st) st = ts_act_tok_fast_train(&s->atok, chunks, m, s->H, s->A, &fc, err);
    free(chunks);
    return st;
}

/* A dataset of a trained policy without its data: its sizes from the checkpoint's normaliser
 * buffers (f: the weights), placeholders for the statistics that the load replaces. */
static ts_status ds_from_checkpoint(vla_task *s, vla_ds *ds, ts_st_file *f, const char *weights,
                                    ts_err *err) {
    char name[160];
    snprintf(name, sizeof name, "normalizer.%s.action.scale", ds->name);
    const ts_st_entry *a = ts_st_find(f, name);
    if (!a || a->ndim != 1)
        return ts_fail(err, TS_ERR_MISMATCH, "%s: no %s: not the checkpoint of this recipe's "
                       "policy", weights, name);
    snprintf(name, sizeof name, "normalizer.%s.lowdim.scale", ds->name);
    const ts_st_entry *l = ts_st_find(f, name);
    ds->A = (int)a->shape[0];
    ds->D = l && l->ndim == 1 ? (int)l->shape[0] : 0;
    ts_norm_fit(&ds->act_norm, (ts_norm_kind)s->d.normalize, NULL, 0, ds->A);
    if (ds->D) ts_norm_fit(&ds->low_norm, (ts_norm_kind)s->d.normalize, NULL, 0, ds->D);
    ds->act_mean = calloc((size_t)ds->A, sizeof(float));
    if (!ds->act_mean) return ts_fail(err, TS_ERR_NOMEM, "out of memory");
    return TS_OK;
}

/* The FAST tokenizer kept in the checkpoint (action_tokenizer.fast, a byte per value). */
static ts_status fast_from_checkpoint(vla_task *s, ts_st_file *f, const char *weights,
                                      ts_err *err) {
    const ts_st_entry *e = ts_st_find(f, "action_tokenizer.fast");
    if (!e || e->ndim != 1)
        return ts_fail(err, TS_ERR_MISMATCH, "%s: no action_tokenizer.fast: the recipe's head "
                       "uses FAST tokens", weights);
    float *v = malloc((size_t)e->shape[0] * sizeof(float));
    char *text = malloc((size_t)e->shape[0] + 1);
    if (!v || !text) {
        free(v);
        free(text);
        return ts_fail(err, TS_ERR_NOMEM, "out of memory");
    }
    ts_st_entry_to_f32(e, v);
    for (int64_t i = 0; i < e->shape[0]; i++) text[i] = (char)(unsigned char)v[i];
    text[e->shape[0]] = 0;
    ts_status st = ts_act_tok_fast_load(&s->atok, text, weights, err);
    free(v);
    free(text);
    return st;
}

static ts_status vla_new(ts_recipe *r, uint64_t seed, ts_st_file *ckpt, const char *weights,
                         ts_task **out, ts_err *err);

ts_status ts_task_vla_new(ts_recipe *r, uint64_t seed, ts_task **out, ts_err *err) {
    return vla_new(r, seed, NULL, NULL, out, err);
}

/* ckpt NULL: a policy to train on the recipe's data. Otherwise a trained policy to run: the
 * data are not read; the sizes and the tokenizer come from the checkpoint ckpt (weights: its
 * path, for messages), whose values the caller then loads. */
static ts_status vla_new(ts_recipe *r, uint64_t seed, ts_st_file *ckpt, const char *weights,
                         ts_task **out, ts_err *err) {
    *out = NULL;
    vla_task *s = calloc(1, sizeof *s);
    if (!s) return ts_fail(err, TS_ERR_NOMEM, "out of memory");
    ts_params *p = ts_params_new();
    s->base = (ts_task){ .type = "vla", .params = p, .loss = vla_loss, .eval = vla_eval,
                         .free = vla_free, .impl = s };
    s->seed = seed;
    char where[512];
    ts_status st = ts_recipe_section(r, "model", model_keys, COUNT(model_keys), &s->mc, err);
    if (!st) st = ts_recipe_section(r, "model.head", head_keys, COUNT(head_keys), &s->hc, err);
    if (!st) st = ts_recipe_section(r, "data", data_keys, COUNT(data_keys), &s->d, err);
    if (!st) st = ts_recipe_section(r, "eval", eval_keys, COUNT(eval_keys), &s->ev, err);
    if (!st) st = ts_recipe_section(r, "eval.rollout", rollout_keys, COUNT(rollout_keys), &s->ro,
                                    err);
    if (st) goto fail;
    s->H = (int)s->d.horizon;
    s->To = (int)s->d.n_obs_steps;
    s->Ta = (int)s->d.n_action_steps;
    if (s->H < 1 || s->H > 256 || s->To < 1 || s->To > 16 || s->Ta < 1 || s->To - 1 + s->Ta > s->H
        || s->d.batch_size < 1 || s->d.holdout < 0 || s->d.holdout >= 1 || s->mc.cond_dim < 1) {
        st = ts_fail(err, TS_ERR_RECIPE, "%s: need 1 <= data.horizon <= 256, 1 <= n_obs_steps "
                     "<= 16, n_action_steps >= 1 with n_obs_steps - 1 + n_action_steps <= "
                     "horizon, batch_size >= 1, 0 <= holdout < 1, model.cond_dim >= 1",
                     ts_recipe_where(r, "data", where, sizeof where));
        goto fail;
    }
    /* the towers: their sizes decide the image size and the instruction's context */
    if (ts_recipe_has(r, "model.text")) {
        if (!s->d.tokenizer[0]) {
            st = ts_fail(err, TS_ERR_RECIPE, "%s: model.text needs data.tokenizer (the BPE "
                         "merges of the instructions; `tessera data synth reach2d` writes one)",
                         ts_recipe_where(r, "data.tokenizer", where, sizeof where));
            goto fail;
        }
        if ((st = ts_tokenizer_load(s->d.tokenizer, &s->tok, err))) {
            char msg[sizeof err->msg];
            snprintf(msg, sizeof msg, "%s", err->msg);
            st = ts_fail(err, st, "%s: data.tokenizer: %s",
                         ts_recipe_where(r, "data.tokenizer", where, sizeof where), msg);
            goto fail;
        }
        ts_enc_spec tspec = { 1, "", ts_tokenizer_vocab_size(s->tok) };
        if ((st = ts_factory_encoder(r, "model.text", p, &tspec, &s->text, &s->tinfo, err)))
            goto fail;
        s->L = s->d.context_length ? (int)s->d.context_length : s->tinfo.context_length;
        if (s->L < 2 || s->L > s->tinfo.context_length) {
            st = ts_fail(err, TS_ERR_RECIPE, "%s: data.context_length %d is outside 2..%d (the "
                         "text tower's)", ts_recipe_where(r, "data.context_length", where,
                                                          sizeof where), s->L,
                         s->tinfo.context_length);
            goto fail;
        }
    }
    s->ncam = split_keys(s->d.images, s->cam_names, VLA_MAX_CAMS);
    if (s->ncam > VLA_MAX_CAMS) {
        st = ts_fail(err, TS_ERR_RECIPE, "%s: at most %d cameras",
                     ts_recipe_where(r, "data.images", where, sizeof where), VLA_MAX_CAMS);
        goto fail;
    }
    if (s->ncam && !ts_recipe_has(r, "model.vision")) {
        st = ts_fail(err, TS_ERR_RECIPE, "%s: data.images names cameras but the model has no "
                     "image tower (model.vision)", ts_recipe_where(r, "data.images", where,
                                                                   sizeof where));
        goto fail;
    }
    if (ts_recipe_has(r, "model.vision")) {
        if (!s->ncam) {
            st = ts_fail(err, TS_ERR_RECIPE, "%s: model.vision needs camera images "
                         "(data.images)", ts_recipe_where(r, "model.vision", where, sizeof where));
            goto fail;
        }
        ts_enc_spec vs = { 0, "visual.", 0 };
        if ((st = ts_factory_encoder(r, "model.vision", p, &vs, &s->vision, &s->vinfo, err)))
            goto fail;
        if (s->vinfo.frames) {
            st = ts_fail(err, TS_ERR_RECIPE, "%s: a video tower takes clips; a policy's "
                         "observation steps go through an image tower (vit or cswin)",
                         ts_recipe_where(r, "model.vision", where, sizeof where));
            goto fail;
        }
        s->img_h = s->img_w = s->vinfo.image_size;
    }
    /* the data */
    const char *mix[VLA_MAX_DS + 1];
    int nmix = ts_recipe_keys(r, "data.mix", mix, VLA_MAX_DS + 1);
    if (nmix > VLA_MAX_DS || (nmix && s->d.train[0]) || (!nmix && !s->d.train[0])) {
        st = ts_fail(err, TS_ERR_RECIPE, "%s: give data.train (one HDF5 file) or data.mix (up to "
                     "%d, by name), not both", ts_recipe_where(r, "data", where, sizeof where),
                     VLA_MAX_DS);
        goto fail;
    }
    double wsum = 0;
    if (!nmix) {
        snprintf(s->ds[0].name, sizeof s->ds[0].name, "data");
        snprintf(s->ds[0].path, sizeof s->ds[0].path, "%s", s->d.train);
        s->ds[0].actions = s->d.actions;
        s->ds[0].lowdim = s->d.lowdim;
        s->ds[0].images = s->d.images;
        s->ds[0].weight = 1;
        s->nds = 1;
    }
    for (int i = 0; i < nmix; i++) {
        char sec[160];
        vla_mix_cfg mc;
        snprintf(sec, sizeof sec, "data.mix.%s", mix[i]);
        if ((st = ts_recipe_section(r, sec, mix_keys, COUNT(mix_keys), &mc, err))) goto fail;
        if (!(mc.weight > 0)) {
            st = ts_fail(err, TS_ERR_RECIPE, "%s: the weight must be positive",
                         ts_recipe_where(r, sec, where, sizeof where));
            goto fail;
        }
        snprintf(s->ds[i].name, sizeof s->ds[i].name, "%s", mix[i]);
        snprintf(s->ds[i].path, sizeof s->ds[i].path, "%s", mc.path);
        s->ds[i].actions = mc.actions[0] ? mc.actions : s->d.actions;
        s->ds[i].lowdim = mc.lowdim[0] ? mc.lowdim : s->d.lowdim;
        s->ds[i].images = mc.images[0] ? mc.images : s->d.images;
        s->ds[i].weight = mc.weight;
        s->nds = i + 1;
    }
    for (int d = 0; d < s->nds; d++) {
        if (ckpt) {
            if ((st = ds_from_checkpoint(s, &s->ds[d], ckpt, weights, err))) goto fail;
        } else {
            if ((st = load_ds(s, &s->ds[d], r, err))) goto fail;
            if ((st = make_windows(s, &s->ds[d], err))) goto fail;
            if ((st = fit_stats(s, &s->ds[d], err))) goto fail;
        }
        if (s->ds[d].A > s->A) s->A = s->ds[d].A;
        if (s->ds[d].D > s->D) s->D = s->ds[d].D;
        wsum += s->ds[d].weight;
    }
    for (int d = 0; d < s->nds; d++)
        s->weight_cdf[d] = (d ? s->weight_cdf[d - 1] : 0) + s->ds[d].weight / wsum;
    if (s->skipped_demos)
        ts_log(TS_LOG_WARN, "vla: %lld demos left out as malformed (data.skip_bad)",
               (long long)s->skipped_demos);
    /* the observation tokens */
    int C = (int)s->mc.cond_dim;
    s->img_tokens = 0;
    s->Tc = 0;
    if (s->vision) {
        int kind = s->mc.image_tokens;
        int width = kind == IMG_POOLED ? s->vision->out_dim : s->vinfo.token_width;
        s->img_tokens = kind == IMG_ALL ? s->vinfo.tokens : kind == IMG_POOLED ? 1
                                                                              : (int)s->mc.keypoints;
        if (kind == IMG_KEYPOINTS) {
            if (s->mc.keypoints < 1 || s->mc.keypoints > 4096 || !s->vinfo.grid_h) {
                st = ts_fail(err, TS_ERR_RECIPE, "%s: %lld keypoints (1..4096, on an image tower "
                             "with a token grid)", ts_recipe_where(r, "model.keypoints", where,
                                                                   sizeof where),
                             (long long)s->mc.keypoints);
                goto fail;
            }
            ts_nn_linear_init(&s->kp, p, "obs.keypoints", width, (int)s->mc.keypoints, 1);
        }
        if (s->mc.film && !s->text) {
            st = ts_fail(err, TS_ERR_RECIPE, "%s: FiLM modulates the image tokens by the "
                         "instruction: it needs model.text", ts_recipe_where(r, "model.film",
                                                                             where,
                                                                             sizeof where));
            goto fail;
        }
        if (s->mc.film) {
            /* zero-initialised: the modulation starts as the identity */
            ts_nn_linear_init(&s->film, p, "obs.film", s->text->out_dim, 2 * width, 1);
            ts_param_set_init(p, s->film.w, TS_INIT_0);
            ts_param_set_init(p, s->film.b, TS_INIT_0);
        }
        ts_nn_linear_init(&s->img_proj, p, "obs.image_proj", kind == IMG_KEYPOINTS ? 2 : width,
                          C, 1);
        s->Tc += s->ncam * s->To * s->img_tokens;
    }
    if (s->text) {
        ts_nn_linear_init(&s->txt_proj, p, "obs.text_proj", s->text->out_dim, C, 1);
        s->Tc += 1;
    }
    if (s->D) {
        ts_nn_linear_init(&s->low_fc1, p, "obs.lowdim.0", s->D, (int)s->mc.proprio_hidden, 1);
        ts_nn_linear_init(&s->low_fc2, p, "obs.lowdim.2", (int)s->mc.proprio_hidden, C, 1);
        s->Tc += s->To;
    }
    if (!s->Tc) {
        st = ts_fail(err, TS_ERR_RECIPE, "%s: the policy observes nothing: give camera images "
                     "with model.vision, low-dimensional observations (data.lowdim) or an "
                     "instruction with model.text", ts_recipe_where(r, "data", where,
                                                                    sizeof where));
        goto fail;
    }
    s->obs_pos = ts_param(p, "obs.pos_embed", 2, TS_SHAPE(s->Tc, C), TS_INIT_N(0.02f),
                          TS_PARAM_NO_DECAY);
    /* the action head */
    if (s->hc.type == TS_HEAD_TOKENS) {
        if (s->hc.tokenizer == 0) {
            if (s->hc.bins < 2 || s->hc.bins > 65536) {
                st = ts_fail(err, TS_ERR_RECIPE, "%s: bins must be 2..65536",
                             ts_recipe_where(r, "model.head.bins", where, sizeof where));
                goto fail;
            }
            s->atok = ts_act_tok_bins_new(s->H, s->A, (int)s->hc.bins);
        } else if ((st = ckpt ? fast_from_checkpoint(s, ckpt, weights, err)
                              : build_fast(s, err))) {
            goto fail;
        }
        if (s->hc.tokenizer == 1) {
            char *text = ts_act_tok_fast_save(s->atok);
            if (!text) {
                st = ts_fail(err, TS_ERR_NOMEM, "out of memory");
                goto fail;
            }
            int64_t len = (int64_t)strlen(text);
            s->tok_text = ts_param(p, "action_tokenizer.fast", 1, TS_SHAPE(len), TS_INIT_0,
                                   TS_PARAM_BUFFER);
            free(text);
        }
    }
    ts_head_cfg hc = { .kind = s->hc.type, .horizon = s->H, .action_dim = s->A, .cond_dim = C,
                       .width = (int)s->hc.width, .depth = (int)s->hc.depth,
                       .heads = (int)s->hc.heads, .mlp_ratio = (float)s->hc.mlp_ratio,
                       .dropout = (float)s->hc.dropout, .train_steps = (int)s->hc.train_steps,
                       .infer_steps = (int)s->hc.infer_steps, .prediction = s->hc.prediction,
                       .noise_samples = (int)s->hc.noise_samples,
                       .tok = s->atok };
    if (hc.width < 1 || hc.heads < 1 || hc.width % hc.heads || hc.depth < 1 ||
        hc.train_steps < 1 || hc.infer_steps < 1 || hc.infer_steps > hc.train_steps ||
        hc.noise_samples < 1 || hc.noise_samples > 64) {
        st = ts_fail(err, TS_ERR_RECIPE, "%s: width must be a multiple of heads, depth >= 1, "
                     "1 <= infer_steps <= train_steps, 1 <= noise_samples <= 64", ts_recipe_where(r, "model.head", where,
                                                                        sizeof where));
        goto fail;
    }
    s->head = ts_action_head_new(p, "head", &hc);
    /* the normalisers, stored with the weights */
    for (int d = 0; d < s->nds; d++) {
        vla_ds *ds = &s->ds[d];
        const char *part[4] = { "action.scale", "action.offset", "lowdim.scale", "lowdim.offset" };
        for (int k = 0; k < (ds->D ? 4 : 2); k++) {
            char name[160];
            snprintf(name, sizeof name, "normalizer.%s.%s", ds->name, part[k]);
            ds->buf[k] = ts_param(p, name, 1, TS_SHAPE(k < 2 ? ds->A : ds->D), TS_INIT_0,
                                  TS_PARAM_BUFFER);
        }
    }
    /* frozen towers; norms, biases and embeddings without weight decay */
    for (int i = 0; i < ts_params_count(p); i++) {
        ts_tensor *t = ts_params_get(p, i);
        int flags = ts_params_flags(p, i);
        if (flags & TS_PARAM_BUFFER) continue;
        if (t->ndim < 2 || strstr(t->name, "embed") || strstr(t->name, "positional") ||
            strstr(t->name, "class_embedding"))
            flags |= TS_PARAM_NO_DECAY;
        if (s->mc.freeze_vision && starts_with(t->name, "visual.")) flags |= TS_PARAM_FROZEN;
        if (s->mc.freeze_text && s->text && !starts_with(t->name, "visual.") &&
            !starts_with(t->name, "obs.") && !starts_with(t->name, "head.") &&
            !starts_with(t->name, "normalizer."))
            flags |= TS_PARAM_FROZEN;
        ts_param_set_flags(p, t, flags);
    }
    if ((st = ts_params_finalize(p, seed, err))) goto fail;
    stats_to_buffers(s);
    if (s->tok_text) {
        char *text = ts_act_tok_fast_save(s->atok);
        for (int64_t i = 0; i < s->tok_text->numel; i++)
            ts_f32(s->tok_text)[i] = (float)(unsigned char)text[i];
        free(text);
    }
    s->base.batch_size = s->d.batch_size;
    int64_t ntrain = 0, nval = 0;
    for (int d = 0; d < s->nds && !ckpt; d++) {
        ntrain += s->ds[d].ntrain;
        nval += s->ds[d].nval;
        ts_log(TS_LOG_INFO, "vla: %s: %s, %d demos, actions %d, low-dim %d, %lld training and "
               "%lld validation windows", s->ds[d].name, s->ds[d].path, s->ds[d].ndemo,
               s->ds[d].A, s->ds[d].D, (long long)s->ds[d].ntrain, (long long)s->ds[d].nval);
    }
    if (s->vision) ts_log(TS_LOG_INFO, "vla: image tower %s", s->vinfo.describe);
    if (s->text) ts_log(TS_LOG_INFO, "vla: text tower %s", s->tinfo.describe);
    ts_log(TS_LOG_INFO, "vla: %d observation tokens of %d; %s head, chunks of %d x %d, %s",
           s->Tc, C, head_types[s->hc.type], s->H, s->A,
           s->atok ? s->atok->type : "no tokenizer");
    *out = &s->base;
    return TS_OK;
fail:
    vla_free(&s->base);
    return st;
}

/* ---- a trained policy from a checkpoint ---- */

ts_status ts_vla_load(const char *checkpoint, const char *const *sets, int nsets, ts_task **task,
                      ts_recipe **recipe, char *weights, size_t wcap, ts_err *err) {
    *task = NULL;
    *recipe = NULL;
    char dir[4096], rpath[4200];
    struct stat sb;
    ts_status st;
    if (stat(checkpoint, &sb) != 0)
        return ts_fail(err, TS_ERR_IO, "%s: no such checkpoint", checkpoint);
    if (S_ISDIR(sb.st_mode)) {
        if ((st = ts_ckpt_find(checkpoint, dir, sizeof dir, err))) return st;
        snprintf(weights, wcap, "%s/model.safetensors", dir);
    } else {
        snprintf(weights, wcap, "%s", checkpoint);
        snprintf(dir, sizeof dir, "%s", checkpoint);
        char *slash = strrchr(dir, '/');
        if (slash) *slash = 0;
        else snprintf(dir, sizeof dir, ".");
    }
    snprintf(rpath, sizeof rpath, "%s/recipe.yaml", dir);
    if ((st = ts_recipe_load(rpath, recipe, err))) return st;
    for (int i = 0; i < nsets; i++)
        if ((st = ts_recipe_set(*recipe, sets[i], err))) return st;
    const char *type = ts_recipe_str(*recipe, "model.type");
    if (!type || strcmp(type, "vla") != 0)
        return ts_fail(err, TS_ERR_RECIPE, "%s: model.type is %s, not vla", rpath,
                       type ? type : "missing");
    int64_t seed = 0;
    const char *sv = ts_recipe_str(*recipe, "train.seed");
    if (sv) seed = strtoll(sv, NULL, 10);
    /* the policy's sizes, normalisers and action tokenizer come from the checkpoint: the
     * demonstrations it was trained on need not be at hand */
    ts_st_file *f;
    if ((st = ts_st_read(weights, &f, err))) return st;
    st = vla_new(*recipe, (uint64_t)seed, f, weights, task, err);
    ts_st_close(f);
    if (st) return st;
    if ((st = ts_ckpt_load_model((*task)->params, weights, 0, err))) return st;
    ts_vla_stats_from_buffers(*task);
    return TS_OK;
}
