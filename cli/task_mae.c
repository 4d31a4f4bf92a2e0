/* task_mae.c: masked-autoencoder pretraining of a ViT on built-in images (model.type mae).
 *
 * The model is vision/'s ts_mae built from the recipe's model section, whose keys are the
 * arguments of models_mae.py's MaskedAutoencoderViT (img_size, patch_size, embed_dim, depth,
 * num_heads, decoder_embed_dim, decoder_depth, decoder_num_heads, mlp_ratio, norm_pix_loss) plus
 * mask_ratio and ln_eps. The objective is MAE's: MSE on the removed patches.
 *
 * Data: the built-in set "shapes" paints, from (seed, stream, image number) alone, a textured
 * background (two colours mixed by a sinusoidal stripe pattern of random period, angle and
 * phase) with one to three filled shapes (disc, square, triangle) of random colour, size and
 * place, values in [-1, 1]. The stream is endless, the same on every run and after a resume;
 * evaluation draws a disjoint stream, so its images are held out. The masking noise of a batch
 * also comes from (seed, stream, batch number), not from the context's RNG.
 *
 * Evaluation reports, on the removed patches of the held-out images: the reconstruction loss,
 * the loss of predicting the mean patch (one patch, the mean of all removed patches of the
 * evaluation, the best constant guess) and the loss of predicting each image's mean visible
 * patch. A model that uses the visible patches beats both.
 *
 * With data.images: shards the images come instead from WebDataset shards (data.train) through
 * loaders/' pipeline with MAE's pretraining augmentation (RandomResizedCrop with scale
 * (0.2, 1), bicubic, a horizontal flip, ImageNet's mean and std), the stream position saved
 * with every checkpoint, and evaluation reads eval_batches batches of data.val.
 *
 * What this file is not: MAE's fine-tuning or linear probe.
 */
#include "cli.h"
#include "../loaders/loaders.h"
#include "../vision/vision.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct mae_model_cfg {
    int type;
    int64_t img_size, patch_size, embed_dim, depth, num_heads;
    int64_t decoder_embed_dim, decoder_depth, decoder_num_heads;
    double mlp_ratio, ln_eps, mask_ratio;
    int norm_pix_loss;
} mae_model_cfg;

static const char *const model_types[] = { "mae", NULL };
/* Defaults are MaskedAutoencoderViT's with mae_vit_base_patch16's encoder. */
static const ts_key model_keys[] = {
    TS_KEY_CHOICE(mae_model_cfg, type, NULL, model_types, "model type"),
    TS_KEY(TS_KEY_INT, mae_model_cfg, img_size, "224", "square image side in pixels"),
    TS_KEY(TS_KEY_INT, mae_model_cfg, patch_size, "16", "patch side P"),
    TS_KEY(TS_KEY_INT, mae_model_cfg, embed_dim, "768", "encoder width"),
    TS_KEY(TS_KEY_INT, mae_model_cfg, depth, "12", "encoder blocks"),
    TS_KEY(TS_KEY_INT, mae_model_cfg, num_heads, "12", "encoder heads"),
    TS_KEY(TS_KEY_INT, mae_model_cfg, decoder_embed_dim, "512", "decoder width"),
    TS_KEY(TS_KEY_INT, mae_model_cfg, decoder_depth, "8", "decoder blocks"),
    TS_KEY(TS_KEY_INT, mae_model_cfg, decoder_num_heads, "16", "decoder heads"),
    TS_KEY(TS_KEY_FLOAT, mae_model_cfg, mlp_ratio, "4.0", "MLP hidden width / width"),
    TS_KEY(TS_KEY_FLOAT, mae_model_cfg, ln_eps, "1e-6", "layernorm epsilon"),
    TS_KEY(TS_KEY_FLOAT, mae_model_cfg, mask_ratio, "0.75", "share of the patches removed"),
    TS_KEY(TS_KEY_BOOL, mae_model_cfg, norm_pix_loss, "false",
           "targets normalised per patch (mean, variance)"),
};

typedef struct mae_data_cfg {
    int images;
    int64_t batch_size, eval_batches, workers, shuffle_buffer;
    const char *train, *val;
    ts_float_list scale;
    double hflip;
    int on_bad;
} mae_data_cfg;

static const char *const image_sets[] = { "shapes", "shards", NULL };
static const char *const on_bad_names[] = { "skip", "fail", NULL };
static const ts_key data_keys[] = {
    TS_KEY_CHOICE(mae_data_cfg, images, "shapes", image_sets,
                  "the built-in image generator, or WebDataset shards (data.train, data.val)"),
    TS_KEY(TS_KEY_INT, mae_data_cfg, batch_size, "64", "images per micro-batch"),
    TS_KEY(TS_KEY_INT, mae_data_cfg, eval_batches, "4", "held-out batches per evaluation"),
    TS_KEY(TS_KEY_STRING, mae_data_cfg, train, "\"\"", "shards: training shards (brace pattern)"),
    TS_KEY(TS_KEY_STRING, mae_data_cfg, val, "\"\"", "shards: held-out shards"),
    TS_KEY(TS_KEY_INT, mae_data_cfg, workers, "2", "shards: loader threads"),
    TS_KEY(TS_KEY_INT, mae_data_cfg, shuffle_buffer, "1000", "shards: samples held for shuffling"),
    TS_KEY(TS_KEY_FLOAT_LIST, mae_data_cfg, scale, "[0.2, 1.0]",
           "shards: RandomResizedCrop area range (MAE's pretraining)"),
    TS_KEY(TS_KEY_FLOAT, mae_data_cfg, hflip, "0.5", "shards: horizontal flip probability"),
    TS_KEY_CHOICE(mae_data_cfg, on_bad, "skip", on_bad_names, "shards: a corrupt image"),
};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

typedef struct mae_task {
    ts_task base;
    mae_model_cfg mc;
    mae_data_cfg d;
    uint64_t seed;
    ts_mae model;
    ts_pipe *pipe;   /* shards: the training stream */
    ts_pipe_pos pos; /* where it starts when opened */
} mae_task;

/* ---- the built-in images ---- */

static void stream_rng(const mae_task *s, ts_rng *r, uint64_t stream, int64_t n) {
    ts_rng_seed(r, s->seed ^ (stream * 0xd1b54a32d192ed03ull) ^ ((uint64_t)n * 0x9e3779b97f4aull) ^
                       0x6d6165ull);
}

static float u01(ts_rng *r) { return ts_rng_uniform(r); }

/* Image number n of a stream into px (3, S, S), values in [-1, 1]. */
static void paint(const mae_task *s, uint64_t stream, int64_t n, float *px, int S) {
    ts_rng r;
    stream_rng(s, &r, stream, n);
    float c1[3], c2[3];
    for (int k = 0; k < 3; k++) c1[k] = u01(&r), c2[k] = u01(&r);
    /* Stripes: t = (1 + sin(2 pi (x cos a + y sin a) / period + phase)) / 2 mixes the colours. */
    float angle = 3.14159265f * u01(&r), period = (float)S * (0.4f + 0.6f * u01(&r));
    float phase = 6.2831853f * u01(&r), ca = cosf(angle), sa = sinf(angle);
    for (int y = 0; y < S; y++)
        for (int x = 0; x < S; x++) {
            float t = 0.5f + 0.5f * sinf(6.2831853f * (x * ca + y * sa) / period + phase);
            for (int k = 0; k < 3; k++)
                px[((size_t)k * S + y) * S + x] = c1[k] + (c2[k] - c1[k]) * t;
        }
    int shapes = 1 + (int)(ts_rng_next(&r) % 3);
    for (int i = 0; i < shapes; i++) {
        int kind = (int)(ts_rng_next(&r) % 3);
        float col[3] = { u01(&r), u01(&r), u01(&r) };
        float rad = S * (0.1f + 0.15f * u01(&r));
        float cx = S * (0.15f + 0.7f * u01(&r)), cy = S * (0.15f + 0.7f * u01(&r));
        for (int y = 0; y < S; y++)
            for (int x = 0; x < S; x++) {
                float dx = x + 0.5f - cx, dy = y + 0.5f - cy;
                int in;
                if (kind == 0) in = dx * dx + dy * dy <= rad * rad;          /* disc */
                else if (kind == 1) in = fabsf(dx) <= rad && fabsf(dy) <= rad; /* square */
                else in = dy <= rad && dy >= -rad && fabsf(dx) <= (dy + rad) * 0.6f; /* triangle */
                if (!in) continue;
                for (int k = 0; k < 3; k++) px[((size_t)k * S + y) * S + x] = col[k];
            }
    }
    for (int64_t i = 0; i < 3 * (int64_t)S * S; i++) px[i] = 2.0f * px[i] - 1.0f;
}

/* ---- images from shards ---- */

/* MAE's normalisation: ImageNet's mean and std (main_pretrain.py). */
static const float IMAGENET_MEAN[3] = { 0.485f, 0.456f, 0.406f };
static const float IMAGENET_STD[3] = { 0.229f, 0.224f, 0.225f };

static ts_status open_pipe(const mae_task *s, ts_pipe **out, const char *spec, int train,
                           int rank, int world, int64_t batch, const ts_pipe_pos *start,
                           ts_err *err) {
    ts_source *src = NULL;
    ts_status st = ts_wds_source_new(&src, spec, train, err);
    if (st) return st;
    ts_pipe_cfg pc = {
        .batch_size = (int)batch, .workers = (int)s->d.workers,
        .shuffle_buffer = train ? (int)s->d.shuffle_buffer : 0, .seed = s->seed,
        .rank = rank, .world = world, .epochs = train ? 0 : 1, .drop_last = 1,
        .on_bad = s->d.on_bad ? TS_ON_BAD_FAIL : TS_ON_BAD_SKIP,
        .xform = {
            .mode = train ? TS_XFORM_TRAIN : TS_XFORM_EVAL, .size = (int)s->mc.img_size,
            .scale = { (float)s->d.scale.v[0], (float)s->d.scale.v[1] },
            .hflip = train ? (float)s->d.hflip : 0.0f, .interp = TS_INTERP_BICUBIC,
            .mean = { IMAGENET_MEAN[0], IMAGENET_MEAN[1], IMAGENET_MEAN[2] },
            .std = { IMAGENET_STD[0], IMAGENET_STD[1], IMAGENET_STD[2] },
        },
    };
    return ts_pipe_open(out, src, &pc, start, err);
}

/* Batch number pos of a stream (0 train, 1 eval): images (B, 3, S, S) and noise (B, L). With
 * shards the images are the pipeline's next batch (pb), B its rows. */
static void make_batch(const mae_task *s, ts_ctx *c, uint64_t stream, int64_t pos,
                       ts_tensor **images, ts_tensor **noise, const ts_pipe_batch *pb) {
    int64_t B = pb ? pb->n : s->d.batch_size, S = s->mc.img_size, L = s->model.L;
    *images = pb ? ts_from_f32(c, 4, TS_SHAPE(B, 3, S, S), pb->images)
                 : ts_new_f32(c, 4, TS_SHAPE(B, 3, S, S));
    *noise = ts_new_f32(c, 2, TS_SHAPE(B, L));
    for (int64_t i = 0; i < B && !pb; i++)
        paint(s, stream, pos * B + i, ts_f32(*images) + i * 3 * S * S, (int)S);
    ts_rng r;
    stream_rng(s, &r, stream + 2, pos); /* masking noise: its own streams */
    for (int64_t i = 0; i < B * L; i++) ts_f32(*noise)[i] = ts_rng_uniform(&r);
}

/* ---- loss and evaluation ---- */

static ts_tensor *mae_loss(ts_task *t, ts_ctx *c, int64_t pos, ts_metrics *m, ts_err *err) {
    (void)err;
    (void)m;
    mae_task *s = t->impl;
    ts_tensor *images, *noise;
    ts_pipe_batch pb;
    if (s->d.images == 1) {
        if (!s->pipe) {
            int64_t B = s->d.batch_size, r = c->rank, w = c->world > 0 ? c->world : 1;
            if (open_pipe(s, &s->pipe, s->d.train, 1, (int)r, (int)w,
                          (r + 1) * B / w - r * B / w, &s->pos, err))
                return NULL;
        }
        if (ts_pipe_next(s->pipe, &pb, err)) return NULL;
        if (pb.n == 0) {
            ts_fail(err, TS_ERR_DATA, "%s: a training batch has no good images", s->d.train);
            return NULL;
        }
        int64_t counts[TS_BAD_COUNT], bad = 0;
        ts_pipe_bad_counts(s->pipe, counts);
        for (int i = 1; i < TS_BAD_COUNT; i++) bad += counts[i];
        if (m) ts_metrics_set(m, "bad_samples", (double)bad);
    }
    make_batch(s, c, 0, pos, &images, &noise, s->d.images == 1 ? &pb : NULL);
    return ts_mae_forward(c, &s->model, images, noise).loss;
}

static int mae_data_state(ts_task *t, int64_t v[8]) {
    mae_task *s = t->impl;
    ts_pipe_pos p = s->pipe ? ts_pipe_position(s->pipe) : s->pos;
    v[0] = p.epoch;
    v[1] = p.samples;
    return 2;
}

static ts_status mae_data_seek(ts_task *t, const int64_t *v, int n, ts_err *err) {
    mae_task *s = t->impl;
    if (n != 2 || v[0] < 0 || v[1] < 0)
        return ts_fail(err, TS_ERR_FORMAT, "data_stream of the checkpoint is not [epoch, "
                       "samples]");
    ts_pipe_close(s->pipe);
    s->pipe = NULL;
    s->pos = (ts_pipe_pos){ v[0], v[1] };
    return TS_OK;
}

static ts_status mae_eval(ts_task *t, ts_ctx *c, ts_metrics *m, ts_err *err) {
    mae_task *s = t->impl;
    int64_t B = s->d.batch_size, L = s->model.L, Q = (int64_t)s->mc.patch_size *
                                                        s->mc.patch_size * 3;
    /* For the mean patch: the sum of removed target patches and of their squares. */
    double *sum = calloc((size_t)Q, sizeof *sum), *vis = calloc((size_t)Q, sizeof *vis);
    if (!sum || !vis) {
        free(sum);
        free(vis);
        return ts_fail(err, TS_ERR_NOMEM, "out of memory");
    }
    double loss = 0.0, sq = 0.0, vis_err = 0.0;
    int64_t removed = 0, batches = 0;
    ts_pipe *p = NULL;
    ts_status st = TS_OK;
    if (s->d.images == 1 && s->d.val[0] &&
        (st = open_pipe(s, &p, s->d.val, 0, 0, 1, s->d.batch_size, NULL, err))) {
        free(sum);
        free(vis);
        return st;
    }
    if (s->d.images == 1 && !s->d.val[0]) { /* no held-out shards: nothing to evaluate */
        free(sum);
        free(vis);
        return TS_OK;
    }
    for (int64_t i = 0; i < s->d.eval_batches; i++) {
        ts_tensor *images, *noise;
        ts_pipe_batch pb;
        if (p) {
            if ((st = ts_pipe_next(p, &pb, err))) break;
            if (pb.n == 0) break; /* the held-out shards end */
            B = pb.n;
        }
        make_batch(s, c, 1, i, &images, &noise, p ? &pb : NULL);
        ts_mae_out o = ts_mae_forward(c, &s->model, images, noise);
        batches++;
        loss += ts_f32(o.loss)[0];
        const float *tg = ts_f32(o.target), *mask = ts_f32(o.mask);
        for (int64_t b = 0; b < B; b++) {
            /* This image's mean visible patch. */
            int64_t nv = 0;
            memset(vis, 0, (size_t)Q * sizeof *vis);
            for (int64_t l = 0; l < L; l++) {
                if (mask[b * L + l] != 0.0f) continue;
                for (int64_t q = 0; q < Q; q++) vis[q] += tg[(b * L + l) * Q + q];
                nv++;
            }
            for (int64_t q = 0; q < Q; q++) vis[q] /= (double)nv;
            for (int64_t l = 0; l < L; l++) {
                if (mask[b * L + l] == 0.0f) continue;
                const float *row = tg + (b * L + l) * Q;
                for (int64_t q = 0; q < Q; q++) {
                    sum[q] += row[q];
                    sq += (double)row[q] * row[q];
                    vis_err += (row[q] - vis[q]) * (row[q] - vis[q]);
                }
                removed++;
            }
        }
        ts_ctx_reset(c);
    }
    ts_pipe_close(p);
    if (!st && removed == 0)
        st = ts_fail(err, TS_ERR_DATA, "%s: no held-out images", s->d.val);
    if (st) {
        free(sum);
        free(vis);
        return st;
    }
    /* The best constant patch is the mean mu; its error is (sum |t|^2 - n |mu|^2) / (n Q). */
    double mu2 = 0.0;
    for (int64_t q = 0; q < Q; q++) mu2 += (sum[q] / (double)removed) * (sum[q] / (double)removed);
    free(sum);
    free(vis);
    ts_metrics_set(m, "loss", loss / (double)batches);
    ts_metrics_set(m, "mean_patch_loss", (sq - (double)removed * mu2) / ((double)removed * Q));
    ts_metrics_set(m, "visible_mean_loss", vis_err / ((double)removed * Q));
    ts_metrics_set(m, "removed_patches", (double)removed);
    return TS_OK;
}

static void mae_free(ts_task *t) {
    mae_task *s = t->impl;
    ts_pipe_close(s->pipe);
    ts_params_free(t->params);
    ts_mae_free(&s->model);
    free(s);
}

ts_status ts_task_mae_new(ts_recipe *r, uint64_t seed, ts_task **out, ts_err *err) {
    *out = NULL;
    mae_task *s = calloc(1, sizeof *s);
    if (!s) return ts_fail(err, TS_ERR_NOMEM, "out of memory");
    s->seed = seed;
    ts_params *p = NULL;
    char where[512];
    ts_status st = ts_recipe_section(r, "model", model_keys, (int)COUNT(model_keys), &s->mc, err);
    if (!st) st = ts_recipe_section(r, "data", data_keys, (int)COUNT(data_keys), &s->d, err);
    if (!st) st = ts_recipe_only(r, "eval", (const char *const[]){ NULL }, err); /* none */
    if (st) goto fail;
    if (s->d.images == 1 && (!s->d.train[0] || s->d.scale.n != 2 || s->d.workers < 1)) {
        st = ts_fail(err, TS_ERR_RECIPE, "%s: data.images shards needs data.train (and "
                     "data.scale two numbers, data.workers at least 1)",
                     ts_recipe_where(r, "data", where, sizeof where));
        goto fail;
    }
    if (s->d.batch_size < 1 || s->d.eval_batches < 1) {
        st = ts_fail(err, TS_ERR_RECIPE, "%s: data.batch_size and data.eval_batches must be "
                     "positive", ts_recipe_where(r, "data", where, sizeof where));
        goto fail;
    }
    const mae_model_cfg *mc = &s->mc;
    if (mc->img_size < 1 || mc->img_size > 4096 || mc->patch_size < 1 || mc->embed_dim > 65536 ||
        mc->decoder_embed_dim > 65536 || mc->depth > 1000 || mc->decoder_depth > 1000) {
        st = ts_fail(err, TS_ERR_RECIPE, "%s: model sizes out of range (img_size 1..4096, widths "
                     "up to 65536, depths up to 1000)",
                     ts_recipe_where(r, "model", where, sizeof where));
        goto fail;
    }
    ts_mae_cfg cfg = {
        .image_h = (int)mc->img_size, .image_w = (int)mc->img_size, .patch = (int)mc->patch_size,
        .width = (int)mc->embed_dim, .layers = (int)mc->depth, .heads = (int)mc->num_heads,
        .dec_width = (int)mc->decoder_embed_dim, .dec_layers = (int)mc->decoder_depth,
        .dec_heads = (int)mc->decoder_num_heads, .mlp_ratio = (float)mc->mlp_ratio,
        .ln_eps = (float)mc->ln_eps, .mask_ratio = mc->mask_ratio,
        .norm_pix_loss = mc->norm_pix_loss,
    };
    if ((st = ts_mae_cfg_check(&cfg, err))) {
        size_t n = strlen(err->msg);
        snprintf(err->msg + n, sizeof err->msg - n, " (%s)",
                 ts_recipe_where(r, "model", where, sizeof where));
        goto fail;
    }
    p = ts_params_new();
    ts_mae_init(&s->model, p, "", &cfg);
    if ((st = ts_params_finalize(p, seed, err))) goto fail;
    ts_mae_set_tables(&s->model);
    ts_log(TS_LOG_INFO, "mae: %dx%d images, patch %d (%d patches, %d visible); encoder width %d, "
           "%d blocks, %d heads; decoder width %d, %d blocks, %d heads; norm_pix_loss %s; %lld "
           "parameters", cfg.image_h, cfg.image_w, cfg.patch, s->model.L, s->model.len_keep,
           cfg.width, cfg.layers, cfg.heads, cfg.dec_width, cfg.dec_layers, cfg.dec_heads,
           cfg.norm_pix_loss ? "on" : "off", (long long)ts_params_numel(p, 1));
    s->base = (ts_task){ .type = "mae", .params = p, .batch_size = s->d.batch_size,
                        .loss = mae_loss, .eval = mae_eval, .free = mae_free, .impl = s };
    if (s->d.images == 1) {
        s->base.data_state = mae_data_state;
        s->base.data_seek = mae_data_seek;
    }
    *out = &s->base;
    return TS_OK;
fail:
    ts_params_free(p);
    ts_mae_free(&s->model);
    free(s);
    return st;
}
