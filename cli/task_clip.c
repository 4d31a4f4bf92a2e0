/* task_clip.c: CLIP-style contrastive pretraining of an image tower and a text tower on
 * WebDataset shards of image-caption pairs (model.type clip).
 *
 * The model is open_clip's CLIP: model.vision names an image tower (vit, cswin) registered
 * under "visual.", model.text a text tower registered at the top level, both projecting to
 * model.embed_dim, so that parameter names are open_clip's and its checkpoints load by name
 * (model.init_from). The objectives (objective.clip, objective.siglip, with weights) add their
 * own parameters (logit_scale, logit_bias); the loss is the weighted sum.
 *
 * Data: the shards of data.train through loaders/' pipeline (worker threads decode, augment as
 * open_clip's train transform, and tokenize the caption in the prepare hook), endless, its
 * position saved with every checkpoint. Samples that are bad (corrupt image, missing caption)
 * are skipped and counted, or stop the run (data.on_bad). Evaluation reads data.val once with
 * the eval transform: zero-shot classification for each entry of eval.zeroshot (class names,
 * prompt templates averaged as open_clip's build_zero_shot_classifier does, labels from the
 * sample's .json field of the entry's name or its .cls), and image-text retrieval recall@1/5/10
 * both ways, where the caption of image i is text i and a text tied with the right one (the same
 * caption) does not push it down.
 *
 * ProtoCLIP (objective.protoclip, usually beside objective.clip): training runs in episodes of
 * episode_size samples. At the start of each, a second pipeline opened where the training
 * stream stands reads the episode's samples (the same batches training then gets, since the
 * stream is deterministic), the towers embed them without grad, and the objective clusters them
 * (ts_protoclip_episode); each training row then finds its episode position by its stream
 * position. A resumed run clusters a fresh episode from the resume point (the prototypes are
 * not saved), so its losses follow the uninterrupted run's only up to that re-clustering. With
 * several ranks each reads its part of the episode from its own shards, the embeddings of all
 * ranks are gathered, and every rank runs the same k-means over all of them.
 *
 * Weight decay of the towers follows open_clip's training script (open_clip_train/main.py), not
 * the flags the modules register: every tensor is decayed except those of fewer than 2 dimensions
 * or whose name contains "bn", "ln", "bias" or "logit_scale". So the positional tables, the token
 * embedding and the projections are decayed as open_clip decays them, and a run with open_clip's
 * optimizer settings (betas 0.9 / 0.98, eps 1e-6, weight decay 0.2) follows its loss curve
 * (tests/parity/clip_curve.py). The objectives' own tensors keep their objective's flags
 * (ProtoCLIP's heads are not decayed, as in the official optimizer groups).
 *
 * Outside training, the verbs `tessera embed` and `tessera eval` open a trained model from a run
 * or checkpoint folder (ts_clip_load: its resolved recipe, then its weights), encode images and
 * texts with it, and evaluate it on data named on the command line through the same
 * ts_clip_evaluate that the training-time evaluation calls.
 *
 * What this file is not: the gather of embeddings across ranks (each rank's loss is over its
 * own samples), or ProtoCLIP's external teacher from a recipe (the objective takes one through
 * ts_protoclip_episode; reading it aligned with a streamed dataset is not built).
 */
#include "cli.h"
#include "../loaders/loaders.h"
#include "../text/text.h"
#include "../vision/vision.h"
#ifdef TS_HAVE_CUDA
#include "cuda/ts_cuda.h"
#endif

#include <cjson/cJSON.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#define COUNT(a) (int)(sizeof(a) / sizeof((a)[0]))
#define ZS_MAX TS_CLIP_ZS_MAX /* zero-shot entries */
#define TOK_POOL 16 /* tokenizers shared by the worker threads */

/* ---- recipe ---- */

typedef struct clip_model_cfg {
    int type;
    int64_t embed_dim;
    const char *init_from;
} clip_model_cfg;

static const char *const model_types[] = { "clip", NULL };
static const ts_key model_keys[] = {
    TS_KEY_CHOICE(clip_model_cfg, type, NULL, model_types, "model type"),
    TS_KEY(TS_KEY_INT, clip_model_cfg, embed_dim, "512", "width of the shared embedding"),
    { "vision", TS_KEY_SECTION, 0, NULL, NULL, "the image tower (type: vit or cswin)" },
    { "text", TS_KEY_SECTION, 0, NULL, NULL, "the text tower (type: text)" },
    TS_KEY(TS_KEY_STRING, clip_model_cfg, init_from, "\"\"",
           "safetensors file of weights to start from (open_clip names); \"\" = none"),
};

typedef struct clip_data_cfg {
    const char *train, *val, *tokenizer;
    int64_t batch_size, workers, shuffle_buffer;
    int on_bad, interpolation;
    ts_float_list scale;
    double hflip;
} clip_data_cfg;

static const char *const on_bad_names[] = { "skip", "fail", NULL };
static const char *const interp_names[] = { "bilinear", "bicubic", NULL };
static const ts_key data_keys[] = {
    TS_KEY(TS_KEY_STRING, clip_data_cfg, train, NULL,
           "training shards, a brace pattern as open_clip takes it: dir/train-{000000..000007}.tar"),
    TS_KEY(TS_KEY_STRING, clip_data_cfg, val, "\"\"", "held-out shards for evaluation"),
    TS_KEY(TS_KEY_STRING, clip_data_cfg, tokenizer, "\"\"",
           "BPE merges file (gzip or text); \"\" = CLIP's, found as `tessera tokenize` finds it"),
    TS_KEY(TS_KEY_INT, clip_data_cfg, batch_size, "256", "image-caption pairs per micro-batch"),
    TS_KEY(TS_KEY_INT, clip_data_cfg, workers, "2", "loader threads"),
    TS_KEY(TS_KEY_INT, clip_data_cfg, shuffle_buffer, "1000", "samples held for shuffling"),
    TS_KEY_CHOICE(clip_data_cfg, on_bad, "skip", on_bad_names,
                  "a corrupt sample: skip and count it, or stop the run"),
    TS_KEY_CHOICE(clip_data_cfg, interpolation, "bicubic", interp_names, "resize filter"),
    TS_KEY(TS_KEY_FLOAT_LIST, clip_data_cfg, scale, "[0.9, 1.0]",
           "RandomResizedCrop area range (open_clip's)"),
    TS_KEY(TS_KEY_FLOAT, clip_data_cfg, hflip, "0.0", "horizontal flip probability"),
};

typedef struct clip_eval_cfg {
    int retrieval;
    int64_t max_samples;
} clip_eval_cfg;

static const ts_key eval_keys[] = {
    TS_KEY(TS_KEY_BOOL, clip_eval_cfg, retrieval, "true", "image-text retrieval recall@1/5/10"),
    TS_KEY(TS_KEY_INT, clip_eval_cfg, max_samples, "0", "held-out samples to use; 0 = all"),
    { "zeroshot", TS_KEY_SECTION, 0, NULL, NULL,
      "zero-shot tasks by name: {classes: FILE, templates: FILE, label: json field or cls}" },
};

typedef struct zs_cfg {
    const char *classes, *templates, *label;
} zs_cfg;

static const ts_key zs_keys[] = {
    TS_KEY(TS_KEY_STRING, zs_cfg, classes, NULL, "class names, one a line"),
    TS_KEY(TS_KEY_STRING, zs_cfg, templates, "\"\"",
           "prompt templates with {} for the class, one a line; \"\" = \"a photo of a {}.\""),
    TS_KEY(TS_KEY_STRING, zs_cfg, label, "\"\"",
           "where the label is: a field of the sample's .json, or cls; \"\" = the task's name"),
};

typedef struct obj_cfg {
    double weight;
} obj_cfg;
static const ts_key obj_keys[] = {
    TS_KEY(TS_KEY_FLOAT, obj_cfg, weight, "1.0", "weight of this loss in the sum"),
};

typedef struct proto_cfg {
    double weight, target_temperature, w_proto;
    int64_t k, kmeans_iters, kmeans_redo, episode_size, proj_dim, hidden_dim;
    int pbt;
} proto_cfg;
static const ts_key proto_keys[] = {
    TS_KEY(TS_KEY_FLOAT, proto_cfg, weight, "1.0", "weight of the ProtoCLIP loss in the sum"),
    TS_KEY(TS_KEY_INT, proto_cfg, k, "20000", "prototypes (k-means clusters) per modality"),
    TS_KEY(TS_KEY_INT, proto_cfg, kmeans_iters, "20", "k-means iterations"),
    TS_KEY(TS_KEY_INT, proto_cfg, kmeans_redo, "1", "k-means runs, the best kept"),
    TS_KEY(TS_KEY_INT, proto_cfg, episode_size, "200000",
           "samples per episode: clustered, then trained on"),
    TS_KEY(TS_KEY_INT, proto_cfg, proj_dim, "128", "width of the projection heads' output"),
    TS_KEY(TS_KEY_INT, proto_cfg, hidden_dim, "2048", "hidden width of the projection heads"),
    TS_KEY(TS_KEY_FLOAT, proto_cfg, target_temperature, "0.01", "teacher softmax temperature"),
    TS_KEY(TS_KEY_FLOAT, proto_cfg, w_proto, "1.0", "weight of (L_i2t + L_t2i) / 2 inside it"),
    TS_KEY(TS_KEY_BOOL, proto_cfg, pbt, "true", "Prototypical Back Translation"),
};

/* ---- the task ---- */

typedef struct zs_task {
    char name[64];
    char metric_top1[96], metric_top5[96];
    int cls;            /* the label is the sample's .cls */
    char field[64];     /* else this .json field */
    int nclasses;
    char **classes;
    int ntemplates;
    char **templates;
} zs_task;

typedef struct clip_task {
    ts_task base;
    clip_model_cfg mc;
    clip_data_cfg d;
    clip_eval_cfg ev;
    uint64_t seed;
    ts_encoder *vision, *text;
    ts_enc_info vinfo, tinfo;
    ts_objective *obj[4];
    int nobj;
    /* tokenizers for the prepare hook: one per thread at a time */
    ts_tokenizer *tok[TOK_POOL];
    pthread_mutex_t tok_lock[TOK_POOL];
    int ntok;
    int ctx_len;
    zs_task zs[ZS_MAX];
    int nzs;
    /* the training stream */
    ts_pipe *pipe;
    ts_pipe_pos pos; /* where the stream starts when opened */
    int64_t bad_logged;
    /* ProtoCLIP's episodes: the stream positions of the episode's rows, in order */
    ts_objective *proto;
    int64_t episode_size, ep_n, ep_used, ep_count, ep_off; /* ep_off: our first row's place */
    int64_t *ep_keys;
    int64_t *index; /* (batch) episode positions of the current batch */
#ifdef TS_HAVE_CUDA
    /* train.device: cuda */
    ts_cuda *gpu;
    ts_cuda_clip *dm;
    float *d_images[TS_CUDA_LANES]; /* (B, 3, S, S) on the device, one batch a lane */
    int32_t *ids[TS_CUDA_LANES];    /* (B, ctx_len) on the host */
    int lane;         /* the lane of the next step's batch */
    int staged;       /* that batch is in its lane (or on its way), or staged_st says why not */
    ts_status staged_st;
    ts_err staged_err;
    ts_pipe_pos staged_pos; /* the stream's position after it */
    int pin_failed;   /* page-locking a batch buffer failed (said once) */
    float beta1, beta2, eps, weight_decay;
#endif
} clip_task;

/* Row layout written by the prepare hook: ctx_len token ids, then one label per zero-shot task. */
static size_t row_bytes(const clip_task *s) {
    return (size_t)(s->ctx_len + s->nzs) * sizeof(int32_t);
}

static ts_status prepare(void *user, const ts_sample *smp, void *row, ts_err *err) {
    clip_task *s = user;
    int32_t *ids = row;
    /* a free tokenizer: start at a slot picked by the row address, wait on it if all are busy */
    int k0 = (int)(((uintptr_t)row >> 6) % (uintptr_t)s->ntok), k = -1;
    for (int i = 0; i < s->ntok && k < 0; i++)
        if (!pthread_mutex_trylock(&s->tok_lock[(k0 + i) % s->ntok])) k = (k0 + i) % s->ntok;
    if (k < 0) pthread_mutex_lock(&s->tok_lock[k = k0]);
    if (smp->has_text)
        ts_tokenizer_encode_context(s->tok[k], (const char *)smp->text.data, smp->text.n, ids,
                                    s->ctx_len);
    else /* zero-shot data need no caption: its row is never read */
        memset(ids, 0, (size_t)s->ctx_len * sizeof *ids);
    pthread_mutex_unlock(&s->tok_lock[k]);
    int32_t *labels = ids + s->ctx_len;
    if (s->nzs == 0) return TS_OK;
    cJSON *j = NULL;
    ts_status st = TS_OK;
    for (int z = 0; z < s->nzs && !st; z++) {
        const zs_task *t = &s->zs[z];
        labels[z] = -1;
        if (t->cls) {
            if (smp->has_label) labels[z] = (int32_t)smp->label;
            continue;
        }
        if (!smp->has_json) continue;
        if (!j && !(j = cJSON_Parse((const char *)smp->json.data))) {
            st = ts_fail(err, TS_ERR_DATA, "%s: the .json is not valid JSON", smp->where);
            break;
        }
        cJSON *v = cJSON_GetObjectItem(j, t->field);
        if (cJSON_IsNumber(v)) labels[z] = (int32_t)v->valuedouble;
        if (labels[z] < -1 || labels[z] >= t->nclasses)
            st = ts_fail(err, TS_ERR_DATA, "%s: .json field %s is %d, not a class of %d",
                         smp->where, t->field, labels[z], t->nclasses);
    }
    cJSON_Delete(j);
    return st;
}

/* The pipeline of the training stream (train) or of evaluation: open_clip's train or eval
 * transform at the image tower's size, the caption tokenized by the prepare hook. */
static ts_pipe_cfg pipe_cfg(const clip_task *s, int train, int rank, int world, int64_t batch) {
    return (ts_pipe_cfg){
        .batch_size = (int)batch, .workers = (int)s->d.workers,
        .shuffle_buffer = train ? (int)s->d.shuffle_buffer : 0, .seed = s->seed,
        .rank = rank, .world = world, .epochs = train ? 0 : 1, .drop_last = train,
        .on_bad = s->d.on_bad ? TS_ON_BAD_FAIL : TS_ON_BAD_SKIP, .need_text = 1,
        .xform = {
            .mode = train ? TS_XFORM_TRAIN : TS_XFORM_EVAL, .size = s->vinfo.image_size,
            .scale = { (float)s->d.scale.v[0], (float)s->d.scale.v[1] },
            .hflip = train ? (float)s->d.hflip : 0.0f,
            .interp = s->d.interpolation ? TS_INTERP_BICUBIC : TS_INTERP_BILINEAR,
            .frames = s->vinfo.frames,
        },
        .prepare = prepare, .prepare_user = (void *)s, .prepare_bytes = row_bytes(s),
    };
}

#ifdef TS_HAVE_CUDA
static void pin_buffer(void *user, void *buf, size_t bytes, int release);
#endif

static ts_status open_pipe(clip_task *s, ts_pipe **out, const char *spec, int train, int rank,
                           int world, int64_t batch, const ts_pipe_pos *start, ts_err *err) {
    ts_source *src = NULL;
    ts_status st = ts_wds_source_new(&src, spec, train, err);
    if (st) return st;
    ts_pipe_cfg pc = pipe_cfg(s, train, rank, world, batch);
#ifdef TS_HAVE_CUDA
    if (train && s->gpu) pc.on_buffer = pin_buffer, pc.on_buffer_user = s;
#endif
    return ts_pipe_open(out, src, &pc, start, err);
}

/* n preprocessed images (n, 3, S, S), or video clips (n, K, 3, S, S), as a tensor. */
static ts_tensor *images_tensor(const clip_task *s, ts_ctx *c, int64_t n, const float *data) {
    int64_t S = s->vinfo.image_size, K = s->vinfo.frames;
    return K > 0 ? ts_from_f32(c, 5, TS_SHAPE(n, K, 3, S, S), data)
                 : ts_from_f32(c, 4, TS_SHAPE(n, 3, S, S), data);
}

/* The encoders and objectives on one batch of the pipeline. */
static ts_batch make_batch(clip_task *s, ts_ctx *c, const ts_pipe_batch *pb) {
    int64_t n = pb->n, L = s->ctx_len;
    ts_batch b = { .n = n, .index = pb->sample_index };
    b.images = images_tensor(s, c, n, pb->images);
    b.text = ts_new(c, TS_I32, 2, TS_SHAPE(n, L));
    size_t rb = row_bytes(s);
    for (int64_t i = 0; i < n; i++)
        memcpy(ts_i32(b.text) + i * L, pb->extra + (size_t)i * rb, (size_t)L * sizeof(int32_t));
    return b;
}

/* Where the training stream stands: after the last batch trained on. */
static ts_pipe_pos train_position(const clip_task *s) {
#ifdef TS_HAVE_CUDA
    if (s->dm) return s->pos; /* the device's pipeline is a batch ahead (clip_device_step) */
#endif
    return s->pipe ? ts_pipe_position(s->pipe) : s->pos;
}

static void log_bad(clip_task *s, ts_metrics *m) {
    int64_t counts[TS_BAD_COUNT], total = 0;
    ts_pipe_bad_counts(s->pipe, counts);
    for (int i = 1; i < TS_BAD_COUNT; i++) total += counts[i];
    if (m) ts_metrics_set(m, "bad_samples", (double)total);
    if (total > s->bad_logged) {
        char line[512] = "";
        size_t k = 0;
        for (int i = 1; i < TS_BAD_COUNT && k < sizeof line; i++)
            if (counts[i])
                k += (size_t)snprintf(line + k, sizeof line - k, "%s%lld %s", k ? ", " : "",
                                      (long long)counts[i], ts_bad_reason_str(i));
        ts_log(TS_LOG_WARN, "skipped %lld bad training samples so far (%s)", (long long)total,
               line);
        s->bad_logged = total;
    }
}

/* A row's place in the stream, as one ordered number. */
static int64_t stream_key(int64_t epoch, int64_t sample) { return (epoch << 40) | sample; }

/* ProtoCLIP's episode: the next episode_size samples of the training stream (whole batches),
 * read by a second pipeline opened where the training stream stands, so that it delivers the
 * very batches training will get next; their embeddings without grad and in eval mode (the
 * official feature extraction runs model.eval()) go to ts_protoclip_episode. */
static ts_status run_episode(clip_task *s, ts_ctx *c, ts_err *err) {
    ts_pipe_pos start = train_position(s);
    int64_t r = c->rank, w = c->world > 0 ? c->world : 1, E = s->vision->out_dim;
    int64_t B = (r + 1) * s->base.batch_size / w - r * s->base.batch_size / w; /* this rank's */
    int64_t N = (s->episode_size + w - 1) / w;                                  /* its part */
    int64_t cap = N + B, n = 0;
    float *img = malloc((size_t)(cap * E) * sizeof *img);
    float *txt = malloc((size_t)(cap * E) * sizeof *txt);
    int64_t *keys = malloc((size_t)cap * sizeof *keys);
    ts_pipe *p = NULL;
    ts_status st = !img || !txt || !keys ? ts_fail(err, TS_ERR_NOMEM, "out of memory for an "
                                                   "episode of %lld samples", (long long)N)
                                         : open_pipe(s, &p, s->d.train, 1, (int)r, (int)w, B,
                                                     &start, err);
    int grad = c->grad_enabled, training = c->training;
    c->grad_enabled = 0;
    c->training = 0;
    while (!st && n < N) {
        ts_pipe_batch pb;
        if ((st = ts_pipe_next(p, &pb, err))) break;
        ts_batch b = make_batch(s, c, &pb);
        ts_tensor *vi = s->vision->forward(c, s->vision, &b, NULL);
        ts_tensor *vt = s->text->forward(c, s->text, &b, NULL);
        memcpy(img + n * E, ts_f32(vi), (size_t)(pb.n * E) * sizeof(float));
        memcpy(txt + n * E, ts_f32(vt), (size_t)(pb.n * E) * sizeof(float));
        for (int i = 0; i < pb.n; i++) keys[n + i] = stream_key(pb.epoch, pb.sample_index[i]);
        n += pb.n;
        ts_ctx_reset(c);
    }
    c->grad_enabled = grad;
    c->training = training;
    ts_pipe_close(p);
    /* Several ranks: every rank clusters the episode rows of all ranks, in rank order (the
     * same k-means on every rank), and its own rows start at off. */
    int64_t total = n, off = 0;
    float *all_img = img, *all_txt = txt;
    if (!st && w > 1 && c->dist) {
        int64_t *counts = calloc((size_t)w, sizeof *counts);
        if (!counts) st = ts_fail(err, TS_ERR_NOMEM, "out of memory");
        if (!st) st = ts_dist_allgather_f32(c->dist, NULL, n * E, NULL, counts, err);
        total = 0;
        for (int64_t q = 0; q < w && !st; q++) {
            if (q < r) off += counts[q] / E;
            total += counts[q] / E;
        }
        free(counts);
        if (!st && (!(all_img = malloc((size_t)(total * E) * sizeof *all_img)) ||
                    !(all_txt = malloc((size_t)(total * E) * sizeof *all_txt))))
            st = ts_fail(err, TS_ERR_NOMEM, "out of memory for an episode of %lld samples",
                         (long long)total);
        if (!st) st = ts_dist_allgather_f32(c->dist, img, n * E, all_img, NULL, err);
        if (!st) st = ts_dist_allgather_f32(c->dist, txt, n * E, all_txt, NULL, err);
    }
    if (!st) {
        ts_log(TS_LOG_INFO, "protoclip: episode %lld: clustering %lld samples from epoch %lld, "
               "sample %lld", (long long)s->ep_count, (long long)total, (long long)start.epoch,
               (long long)start.samples);
        st = ts_protoclip_episode(s->proto, c, all_img, all_txt, total, NULL, 0,
                                  s->seed ^ ((uint64_t)s->ep_count * 0x9e3779b97f4a7c15ull), err);
    }
    if (all_img != img) free(all_img);
    if (all_txt != txt) free(all_txt);
    free(img);
    free(txt);
    if (st) {
        free(keys);
        return st;
    }
    free(s->ep_keys);
    s->ep_keys = keys;
    s->ep_n = n;
    s->ep_off = off;
    s->ep_used = 0;
    s->ep_count++;
    return TS_OK;
}

/* The episode positions of a training batch's rows (they are in the episode, in order). */
static ts_status episode_index(clip_task *s, const ts_pipe_batch *pb, ts_err *err) {
    int64_t lo = s->ep_used;
    for (int i = 0; i < pb->n; i++) {
        int64_t key = stream_key(pb->epoch, pb->sample_index[i]), hi = s->ep_n;
        while (lo < hi) { /* the first position whose key is not below key */
            int64_t mid = lo + (hi - lo) / 2;
            if (s->ep_keys[mid] < key) lo = mid + 1;
            else hi = mid;
        }
        if (lo >= s->ep_n || s->ep_keys[lo] != key)
            return ts_fail(err, TS_ERR_DATA, "%s: sample %lld of epoch %lld (%s) is not in "
                           "ProtoCLIP's episode", s->d.train, (long long)pb->sample_index[i],
                           (long long)pb->epoch, pb->keys[i]);
        s->index[i] = s->ep_off + lo++;
    }
    s->ep_used = lo;
    return TS_OK;
}

static ts_tensor *clip_loss(ts_task *t, ts_ctx *c, int64_t pos, ts_metrics *m, ts_err *err) {
    (void)pos;
    clip_task *s = t->impl;
    if (!s->pipe) {
        int64_t B = s->base.batch_size, r = c->rank, w = c->world > 0 ? c->world : 1;
        int64_t share = (r + 1) * B / w - r * B / w;
        if (open_pipe(s, &s->pipe, s->d.train, 1, (int)r, (int)w, share, &s->pos, err))
            return NULL;
    }
    if (s->proto && s->ep_used >= s->ep_n && run_episode(s, c, err)) return NULL;
    ts_pipe_batch pb;
    if (ts_pipe_next(s->pipe, &pb, err)) return NULL;
    if (pb.n < 2) {
        ts_fail(err, TS_ERR_DATA, "%s: a training batch has %d good samples; a contrastive "
                "loss needs at least 2", s->d.train, pb.n);
        return NULL;
    }
    log_bad(s, m);
    ts_batch b = make_batch(s, c, &pb);
    if (s->proto) {
        if (episode_index(s, &pb, err)) return NULL;
        b.index = s->index;
    }
    ts_embeds e = { .batch = &b, .image = s->vision->forward(c, s->vision, &b, NULL),
                    .text = s->text->forward(c, s->text, &b, NULL) };
    ts_tensor *loss = NULL;
    for (int i = 0; i < s->nobj; i++) {
        ts_tensor *l = s->obj[i]->loss(c, s->obj[i], &e, m);
        if (s->obj[i]->weight != 1.0f) l = ts_scale(c, l, s->obj[i]->weight);
        loss = loss ? ts_add(c, loss, l) : l;
    }
    return loss;
}

static void clip_after_step(ts_task *t) {
    clip_task *s = t->impl;
    for (int i = 0; i < s->nobj; i++)
        if (s->obj[i]->after_step) s->obj[i]->after_step(s->obj[i]);
}

static int clip_data_state(ts_task *t, int64_t v[8]) {
    clip_task *s = t->impl;
    ts_pipe_pos p = train_position(s);
    v[0] = p.epoch;
    v[1] = p.samples;
    return 2;
}

static ts_status clip_data_seek(ts_task *t, const int64_t *v, int n, ts_err *err) {
    clip_task *s = t->impl;
    if (n != 2 || v[0] < 0 || v[1] < 0)
        return ts_fail(err, TS_ERR_FORMAT, "data_stream of the checkpoint is not [epoch, "
                       "samples]");
    ts_pipe_close(s->pipe);
    s->pipe = NULL;
    s->pos = (ts_pipe_pos){ v[0], v[1] };
#ifdef TS_HAVE_CUDA
    s->staged = 0, s->staged_st = TS_OK; /* what was staged came from the old stream */
#endif
    s->ep_n = s->ep_used = 0; /* ProtoCLIP clusters a new episode from here */
    ts_log(TS_LOG_INFO, "data: resuming the training stream at epoch %lld, sample %lld",
           (long long)v[0], (long long)v[1]);
    return TS_OK;
}

/* ---- evaluation ---- */

/* The rows of x (n, E) scaled to unit length, in place. */
static void normalize_rows(float *x, int64_t n, int64_t E) {
    for (int64_t i = 0; i < n; i++) {
        double q = 0;
        for (int64_t j = 0; j < E; j++) q += (double)x[i * E + j] * x[i * E + j];
        float inv = (float)(1.0 / fmax(sqrt(q), 1e-12));
        for (int64_t j = 0; j < E; j++) x[i * E + j] *= inv;
    }
}

static clip_task *clip_of(const ts_task *t) {
    TS_CHECK(t && t->type && !strcmp(t->type, "clip"), "not a clip task: %s",
             t && t->type ? t->type : "(null)");
    return t->impl;
}

/* Inference on c for the span of one call: no tape, no dropout; the caller's mode comes back. */
typedef struct infer_mode {
    int grad, training;
} infer_mode;
static infer_mode infer_begin(ts_ctx *c) {
    infer_mode m = { c->grad_enabled, c->training };
    c->grad_enabled = 0;
    c->training = 0;
    return m;
}
static void infer_end(ts_ctx *c, infer_mode m) {
    c->grad_enabled = m.grad;
    c->training = m.training;
}

/* The image tower on (n, 3, S, S) preprocessed images into out (n, E), raw. */
static void image_forward(clip_task *s, ts_ctx *c, const float *images, int64_t n, float *out) {
    int64_t E = s->vision->out_dim;
    ts_batch b = { .n = n };
    b.images = images_tensor(s, c, n, images);
    ts_tensor *y = s->vision->forward(c, s->vision, &b, NULL);
    memcpy(out, ts_f32(y), (size_t)(n * E) * sizeof(float));
    ts_ctx_reset(c);
}

/* The text tower on n rows of token ids, each `stride` int32 apart (the first ctx_len of each
 * are read), into out (n, E), raw. */
static void text_forward(clip_task *s, ts_ctx *c, const int32_t *ids, size_t stride, int64_t n,
                         float *out) {
    int64_t L = s->ctx_len, E = s->text->out_dim;
    ts_batch b = { .n = n };
    b.text = ts_new(c, TS_I32, 2, TS_SHAPE(n, L));
    for (int64_t i = 0; i < n; i++)
        memcpy(ts_i32(b.text) + i * L, ids + (size_t)i * stride, (size_t)L * sizeof(int32_t));
    ts_tensor *y = s->text->forward(c, s->text, &b, NULL);
    memcpy(out, ts_f32(y), (size_t)(n * E) * sizeof(float));
    ts_ctx_reset(c);
}

ts_status ts_clip_encode_images(ts_task *t, ts_ctx *c, const float *images, int64_t n,
                                float *out, int normalize, ts_err *err) {
    (void)err;
    clip_task *s = clip_of(t);
    int64_t S = s->vinfo.image_size, E = s->vision->out_dim, B = s->d.batch_size;
    int64_t row = 3 * S * S * (s->vinfo.frames > 0 ? s->vinfo.frames : 1);
    infer_mode m = infer_begin(c);
    for (int64_t i0 = 0; i0 < n; i0 += B) {
        int64_t k = n - i0 < B ? n - i0 : B;
        image_forward(s, c, images + (size_t)(i0 * row), k, out + i0 * E);
    }
    infer_end(c, m);
    if (normalize) normalize_rows(out, n, E);
    return TS_OK;
}

ts_status ts_clip_encode_texts(ts_task *t, ts_ctx *c, const char *const *texts, int64_t n,
                               float *out, int normalize, ts_err *err) {
    clip_task *s = clip_of(t);
    int64_t L = s->ctx_len, E = s->text->out_dim, B = 256;
    int32_t *ids = malloc((size_t)(B * L) * sizeof *ids);
    if (!ids) return ts_fail(err, TS_ERR_NOMEM, "out of memory");
    infer_mode m = infer_begin(c);
    for (int64_t i0 = 0; i0 < n; i0 += B) {
        int64_t k = n - i0 < B ? n - i0 : B;
        /* tokenizer 0 may be lent to a worker of an open training stream meanwhile */
        pthread_mutex_lock(&s->tok_lock[0]);
        for (int64_t i = 0; i < k; i++)
            ts_tokenizer_encode_context(s->tok[0], texts[i0 + i], strlen(texts[i0 + i]),
                                        ids + i * L, (int)L);
        pthread_mutex_unlock(&s->tok_lock[0]);
        text_forward(s, c, ids, (size_t)L, k, out + i0 * E);
    }
    infer_end(c, m);
    free(ids);
    if (normalize) normalize_rows(out, n, E);
    return TS_OK;
}

void ts_clip_eval_pipe_cfg(const ts_task *t, ts_pipe_cfg *pc) {
    const clip_task *s = clip_of(t);
    *pc = pipe_cfg(s, 0, 0, 1, s->d.batch_size);
    pc->need_text = 0;
    pc->on_bad = TS_ON_BAD_SKIP;
    pc->prepare = NULL;
    pc->prepare_user = NULL;
    pc->prepare_bytes = 0;
}

/* The zero-shot classifier of one task: for each class the mean of its normalised template
 * embeddings, normalised again (open_clip's build_zero_shot_classifier). W (nclasses, E). */
static ts_status zs_classifier(clip_task *s, ts_ctx *c, const zs_task *z, float *W, ts_err *err) {
    int64_t E = s->text->out_dim, nt = z->ntemplates, nc = z->nclasses;
    char **prompts = calloc((size_t)(nt * nc), sizeof *prompts);
    float *emb = malloc((size_t)(nt * nc * E) * sizeof *emb);
    ts_status st = TS_OK;
    if (!prompts || !emb) st = ts_fail(err, TS_ERR_NOMEM, "out of memory");
    for (int64_t k = 0; k < nc && !st; k++)
        for (int64_t t = 0; t < nt && !st; t++) {
            const char *tpl = z->templates[t], *hole = strstr(tpl, "{}");
            size_t len = strlen(tpl) + strlen(z->classes[k]) + 1;
            char *p = prompts[k * nt + t] = malloc(len);
            if (!p) {
                st = ts_fail(err, TS_ERR_NOMEM, "out of memory");
                break;
            }
            if (hole)
                snprintf(p, len, "%.*s%s%s", (int)(hole - tpl), tpl, z->classes[k], hole + 2);
            else
                snprintf(p, len, "%s", tpl);
        }
    if (!st)
        st = ts_clip_encode_texts(&s->base, c, (const char *const *)prompts, nt * nc, emb, 1,
                                  err);
    if (!st) {
        for (int64_t k = 0; k < nc; k++)
            for (int64_t j = 0; j < E; j++) {
                double a = 0;
                for (int64_t t = 0; t < nt; t++) a += emb[(k * nt + t) * E + j];
                W[k * E + j] = (float)(a / (double)nt);
            }
        normalize_rows(W, nc, E);
    }
    for (int64_t i = 0; prompts && i < nt * nc; i++) free(prompts[i]);
    free(prompts);
    free(emb);
    return st;
}

/* Recall@k of queries q (n, E) against keys (n, E) whose match of query i is key i: the rank of
 * key i is the number of keys scored strictly higher. */
static void recall(const float *q, const float *keys, int64_t n, int64_t E, double r[3]) {
    int64_t hits[3] = { 0, 0, 0 };
#pragma omp parallel for reduction(+ : hits[:3])
    for (int64_t i = 0; i < n; i++) {
        double own = 0;
        for (int64_t j = 0; j < E; j++) own += (double)q[i * E + j] * keys[i * E + j];
        int64_t above = 0;
        for (int64_t k = 0; k < n; k++) {
            if (k == i) continue;
            double v = 0;
            for (int64_t j = 0; j < E; j++) v += (double)q[i * E + j] * keys[k * E + j];
            above += v > own;
        }
        hits[0] += above < 1;
        hits[1] += above < 5;
        hits[2] += above < 10;
    }
    for (int i = 0; i < 3; i++) r[i] = (double)hits[i] / (double)n;
}

/* Zero-shot task z on the normalised image embeddings img (n, E) whose labels are column z of
 * labels (n, nzs + 1): top-1 and top-5 counts, overall and by true class, into r. */
static ts_status zs_score(clip_task *s, ts_ctx *c, int z, const float *img, const int32_t *labels,
                          int64_t n, const char *data, ts_clip_zs_result *r, ts_err *err) {
    zs_task *zt = &s->zs[z];
    int64_t E = s->vision->out_dim;
    r->name = zt->name;
    r->nclasses = zt->nclasses;
    r->class_count = calloc((size_t)zt->nclasses, sizeof *r->class_count);
    r->class_top1 = calloc((size_t)zt->nclasses, sizeof *r->class_top1);
    float *W = malloc((size_t)(zt->nclasses * E) * sizeof *W);
    ts_status st = TS_OK;
    if (!W || !r->class_count || !r->class_top1) st = ts_fail(err, TS_ERR_NOMEM, "out of memory");
    if (!st) st = zs_classifier(s, c, zt, W, err);
    for (int64_t i = 0; i < n && !st; i++) {
        int32_t y = labels[i * (s->nzs + 1) + z];
        if (y < 0) continue;
        double own = 0;
        for (int64_t j = 0; j < E; j++) own += (double)img[i * E + j] * W[y * E + j];
        int above = 0;
        for (int k = 0; k < zt->nclasses; k++) {
            if (k == y) continue;
            double v = 0;
            for (int64_t j = 0; j < E; j++) v += (double)img[i * E + j] * W[k * E + j];
            above += v > own;
        }
        r->top1 += above < 1;
        r->top5 += above < 5;
        r->counted++;
        r->class_count[y]++;
        r->class_top1[y] += above < 1;
    }
    free(W);
    if (!st && r->counted == 0)
        st = ts_fail(err, TS_ERR_DATA, "%s: no sample has a label for zero-shot task %s (%s %s)",
                     data, zt->name, zt->cls ? "the" : ".json field",
                     zt->cls ? ".cls" : zt->field);
    return st;
}

ts_status ts_clip_evaluate(ts_task *t, ts_ctx *c, ts_source *src, const ts_clip_eval_opts *o,
                           ts_clip_eval_result *res, ts_err *err) {
    clip_task *s = clip_of(t);
    memset(res, 0, sizeof *res);
    const char *data = o->data ? o->data : "evaluation data";
    ts_pipe *p = NULL;
    int64_t E = s->vision->out_dim, cap = 0, n = 0;
    float *img = NULL, *txt = NULL;
    int32_t *labels = NULL;
    size_t rb = row_bytes(s);
    ts_pipe_cfg pc = pipe_cfg(s, 0, 0, 1, o->batch > 0 ? o->batch : s->d.batch_size);
    if (o->workers > 0) pc.workers = o->workers;
    pc.need_text = o->retrieval;
    pc.on_bad = o->on_bad;
    infer_mode mode = infer_begin(c);
    ts_status st = ts_pipe_open(&p, src, &pc, NULL, err);
    while (!st) {
        ts_pipe_batch pb;
        if ((st = ts_pipe_next(p, &pb, err)) || pb.n == 0) break;
        if (n + pb.n > cap) {
            cap = 2 * (n + pb.n);
            float *a = realloc(img, (size_t)(cap * E) * sizeof *a);
            if (a) img = a;
            float *b2 = o->retrieval ? realloc(txt, (size_t)(cap * E) * sizeof *b2) : NULL;
            if (b2) txt = b2;
            int32_t *l = realloc(labels, (size_t)(cap * (s->nzs + 1)) * sizeof *l);
            if (l) labels = l;
            if (!a || (o->retrieval && !b2) || !l) {
                st = ts_fail(err, TS_ERR_NOMEM, "out of memory");
                break;
            }
        }
        image_forward(s, c, pb.images, pb.n, img + n * E);
        if (o->retrieval)
            text_forward(s, c, (const int32_t *)pb.extra, rb / sizeof(int32_t), pb.n,
                         txt + n * E);
        for (int i = 0; i < pb.n; i++)
            for (int z = 0; z < s->nzs; z++)
                memcpy(&labels[(n + i) * (s->nzs + 1) + z],
                       pb.extra + (size_t)i * rb + (size_t)(s->ctx_len + z) * sizeof(int32_t),
                       sizeof(int32_t));
        n += pb.n;
        if (o->max_samples > 0 && n >= o->max_samples) {
            n = o->max_samples;
            break;
        }
        if (o->progress) o->progress(o->progress_user, n);
    }
    if (p) {
        int64_t counts[TS_BAD_COUNT];
        ts_pipe_bad_counts(p, counts);
        for (int i = 1; i < TS_BAD_COUNT; i++) res->skipped += counts[i];
        if (res->skipped)
            ts_log(TS_LOG_WARN, "eval: %lld samples of %s skipped as bad",
                   (long long)res->skipped, data);
    }
    ts_pipe_close(p);
    infer_end(c, mode);
    if (!st && n == 0) st = ts_fail(err, TS_ERR_DATA, "%s: no samples", data);
    res->samples = n;
    if (!st) {
        normalize_rows(img, n, E);
        for (int z = 0; z < s->nzs && !st; z++) {
            st = zs_score(s, c, z, img, labels, n, data, &res->zs[z], err);
            res->nzs = z + 1;
        }
    }
    if (!st && o->retrieval) {
        normalize_rows(txt, n, E);
        recall(img, txt, n, E, res->i2t);
        recall(txt, img, n, E, res->t2i);
        res->retrieval = 1;
    }
    free(img);
    free(txt);
    free(labels);
    return st;
}

void ts_clip_eval_result_free(ts_clip_eval_result *r) {
    if (!r) return;
    for (int z = 0; z < TS_CLIP_ZS_MAX; z++) {
        free(r->zs[z].class_count);
        free(r->zs[z].class_top1);
        r->zs[z].class_count = r->zs[z].class_top1 = NULL;
    }
}

/* The training-time evaluation: data.val through ts_clip_evaluate, as metrics. */
static ts_status clip_eval(ts_task *t, ts_ctx *c, ts_metrics *m, ts_err *err) {
    clip_task *s = t->impl;
    if (!s->d.val[0]) return TS_OK;
    ts_source *src = NULL;
    ts_status st = ts_wds_source_new(&src, s->d.val, 0, err);
    if (st) return st;
    ts_clip_eval_opts o = {
        .data = s->d.val, .batch = (int)s->base.batch_size, .retrieval = s->ev.retrieval,
        .max_samples = s->ev.max_samples,
        .on_bad = s->d.on_bad ? TS_ON_BAD_FAIL : TS_ON_BAD_SKIP,
    };
    ts_clip_eval_result r;
    st = ts_clip_evaluate(t, c, src, &o, &r, err);
    if (!st) {
        ts_metrics_set(m, "samples", (double)r.samples);
        for (int z = 0; z < r.nzs; z++) {
            const ts_clip_zs_result *q = &r.zs[z];
            ts_metrics_set(m, s->zs[z].metric_top1, (double)q->top1 / (double)q->counted);
            if (q->nclasses > 5)
                ts_metrics_set(m, s->zs[z].metric_top5, (double)q->top5 / (double)q->counted);
        }
        if (r.retrieval) {
            ts_metrics_set(m, "image_to_text_R@1", r.i2t[0]);
            ts_metrics_set(m, "image_to_text_R@5", r.i2t[1]);
            ts_metrics_set(m, "image_to_text_R@10", r.i2t[2]);
            ts_metrics_set(m, "text_to_image_R@1", r.t2i[0]);
            ts_metrics_set(m, "text_to_image_R@5", r.t2i[1]);
            ts_metrics_set(m, "text_to_image_R@10", r.t2i[2]);
        }
    }
    ts_clip_eval_result_free(&r);
    return st;
}

/* ---- setup ---- */

static void free_lines(char **v, int n) {
    for (int i = 0; v && i < n; i++) free(v[i]);
    free(v);
}

/* The non-empty lines of a text file (trailing spaces and CR cut). */
static ts_status read_lines(const char *path, char ***out, int *n, ts_err *err) {
    char *text;
    *out = NULL;
    *n = 0;
    ts_status st = ts_read_text(path, &text, err);
    if (st) return st;
    int cap = 0;
    for (char *line = text, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = 0;
        size_t len = strlen(line);
        while (len && (line[len - 1] == '\r' || line[len - 1] == ' ')) line[--len] = 0;
        if (!len) continue;
        if (*n == cap) {
            cap = cap ? 2 * cap : 16;
            char **g = realloc(*out, (size_t)cap * sizeof *g);
            if (!g) goto oom;
            *out = g;
        }
        if (!((*out)[(*n)++] = strdup(line))) goto oom;
    }
    free(text);
    if (*n == 0) return ts_fail(err, TS_ERR_DATA, "%s: no lines", path);
    return TS_OK;
oom:
    free(text);
    return ts_fail(err, TS_ERR_NOMEM, "out of memory reading %s", path);
}

static ts_status parse_zeroshot(ts_recipe *r, clip_task *s, ts_err *err) {
    const char *names[ZS_MAX + 1];
    int n = ts_recipe_keys(r, "eval.zeroshot", names, ZS_MAX + 1);
    char sec[256], where[512];
    if (n > ZS_MAX)
        return ts_fail(err, TS_ERR_RECIPE, "%s: at most %d zero-shot tasks",
                       ts_recipe_where(r, "eval.zeroshot", where, sizeof where), ZS_MAX);
    for (int i = 0; i < n; i++) {
        zs_task *z = &s->zs[i];
        zs_cfg zc;
        ts_pname(sec, sizeof sec, "eval.zeroshot.%s", names[i]);
        ts_status st = ts_recipe_section(r, sec, zs_keys, COUNT(zs_keys), &zc, err);
        if (st) return st;
        snprintf(z->name, sizeof z->name, "%s", names[i]);
        snprintf(z->metric_top1, sizeof z->metric_top1, "zeroshot_%s_top1", z->name);
        snprintf(z->metric_top5, sizeof z->metric_top5, "zeroshot_%s_top5", z->name);
        const char *label = zc.label[0] ? zc.label : names[i];
        z->cls = !strcmp(label, "cls");
        snprintf(z->field, sizeof z->field, "%s", label);
        if ((st = read_lines(zc.classes, &z->classes, &z->nclasses, err))) return st;
        if (zc.templates[0]) {
            if ((st = read_lines(zc.templates, &z->templates, &z->ntemplates, err))) return st;
        } else {
            z->templates = malloc(sizeof *z->templates);
            if (!z->templates || !(z->templates[0] = strdup("a photo of a {}.")))
                return ts_fail(err, TS_ERR_NOMEM, "out of memory");
            z->ntemplates = 1;
        }
        s->nzs = i + 1;
    }
    return TS_OK;
}

static ts_status parse_protoclip(ts_recipe *r, clip_task *s, ts_params *p, ts_err *err) {
    proto_cfg pc;
    char where[512];
    ts_status st = ts_recipe_section(r, "objective.protoclip", proto_keys, COUNT(proto_keys), &pc,
                                     err);
    if (st) return st;
    ts_recipe_where(r, "objective.protoclip", where, sizeof where);
    if (pc.k < 1 || pc.kmeans_iters < 1 || pc.kmeans_redo < 1 || pc.proj_dim < 1 ||
        pc.hidden_dim < 1 || pc.episode_size < pc.k || pc.episode_size > ((int64_t)1 << 30) ||
        !(pc.target_temperature > 0))
        return ts_fail(err, TS_ERR_RECIPE, "%s: objective.protoclip: k, kmeans_iters, "
                       "kmeans_redo, proj_dim, hidden_dim and target_temperature must be "
                       "positive and episode_size at least k", where);
    ts_protoclip_cfg cfg = ts_protoclip_cfg_default();
    cfg.k = pc.k;
    cfg.kmeans_iters = (int)pc.kmeans_iters;
    cfg.kmeans_redo = (int)pc.kmeans_redo;
    cfg.proj_dim = (int)pc.proj_dim;
    cfg.hidden_dim = (int)pc.hidden_dim;
    cfg.target_temperature = (float)pc.target_temperature;
    cfg.w_proto = (float)pc.w_proto;
    cfg.pbt = pc.pbt;
    s->proto = ts_objective_protoclip_new(p, &cfg, s->vision->out_dim, s->text->out_dim,
                                          (float)pc.weight);
    s->obj[s->nobj++] = s->proto;
    s->episode_size = pc.episode_size;
    return TS_OK;
}

static ts_status parse_objectives(ts_recipe *r, clip_task *s, ts_params *p, ts_err *err) {
    static const char *const known[] = { "clip", "siglip", "protoclip", NULL };
    ts_status st = ts_recipe_only(r, "objective", known, err);
    if (st) return st;
    if (!ts_recipe_has(r, "objective.clip") && !ts_recipe_has(r, "objective.siglip") &&
        !ts_recipe_has(r, "objective.protoclip"))
        if ((st = ts_recipe_set(r, "objective.clip.weight=1.0", err))) return st;
    if (ts_recipe_has(r, "objective.protoclip") && (st = parse_protoclip(r, s, p, err)))
        return st;
    for (int i = 0; i < 2; i++) { /* clip, siglip */
        char sec[64];
        ts_pname(sec, sizeof sec, "objective.%s", known[i]);
        if (!ts_recipe_has(r, sec)) continue;
        obj_cfg oc;
        if ((st = ts_recipe_section(r, sec, obj_keys, COUNT(obj_keys), &oc, err))) return st;
        ts_clip_cfg cc = ts_clip_cfg_default(i == 1);
        s->obj[s->nobj++] = ts_objective_clip_new(p, &cc, (float)oc.weight);
    }
    return TS_OK;
}

/* open_clip's weight-decay rule (open_clip_train/main.py: exclude = p.ndim < 2 or "bn" in n or
 * "ln" in n or "bias" in n or "logit_scale" in n) on the first ntowers tensors of p, the two
 * towers'. The objectives' own tensors keep the flags their objective gives them (logit_scale
 * and logit_bias are not decayed, which is the rule's answer too). Logs the resulting groups. */
static void apply_open_clip_decay(ts_params *p, int ntowers) {
    int decayed = 0, kept = 0;
    int64_t nd = 0;
    for (int i = 0; i < ts_params_count(p); i++) {
        int flags = ts_params_flags(p, i);
        const ts_tensor *t = ts_params_get(p, i);
        if (flags & TS_PARAM_BUFFER) continue;
        if (i < ntowers) {
            const char *n = t->name;
            int exclude = t->ndim < 2 || strstr(n, "bn") || strstr(n, "ln") ||
                          strstr(n, "bias") || strstr(n, "logit_scale");
            flags = exclude ? flags | TS_PARAM_NO_DECAY : flags & ~TS_PARAM_NO_DECAY;
            ts_param_set_flags(p, t, flags);
        }
        if (flags & TS_PARAM_NO_DECAY) {
            kept++;
        } else {
            decayed++;
            nd += t->numel;
        }
    }
    ts_log(TS_LOG_INFO, "clip: weight decay (open_clip's rule) on %d tensors (%lld values), "
           "none on %d", decayed, (long long)nd, kept);
}

/* ---- train.device: cuda ---- */
#ifdef TS_HAVE_CUDA
/* The model on the device is core/cuda/clip_model.cu's: open_clip's CLIP with a ViT (class
 * token, ln_pre, exact GELU, MLP ratio 4, layernorm eps 1e-5) and its causal text transformer
 * pooled at the largest id, ClipLoss, AdamW with open_clip's decay groups and the logit-scale
 * clamp. device_open refuses a recipe that asks for anything else, naming the key, rather than
 * train a different model than the cpu would. The parameters and moments go over by name, each
 * checked for its size and its decay group, so that a run can move between cpu and device
 * through a checkpoint. Batches must be full: the device model is built for data.batch_size
 * rows, and a batch that skipped bad samples is an error. */
static void clip_device_close(ts_task *t) {
    clip_task *s = t->impl;
    if (s->gpu) {
        /* the pipeline's buffers are page-locked for this device: they go first, and the
         * stream stands after the last batch trained on, not after the one staged */
        s->pos = train_position(s);
        ts_pipe_close(s->pipe);
        s->pipe = NULL;
    }
    ts_cuda_clip_free(s->dm);
    ts_cuda_close(s->gpu);
    s->dm = NULL, s->gpu = NULL;
    for (int k = 0; k < TS_CUDA_LANES; k++) {
        free(s->ids[k]);
        s->ids[k] = NULL, s->d_images[k] = NULL;
    }
    s->staged = 0, s->staged_st = TS_OK;
}

/* the host index of parameter `name`, or -1 */
static int host_param(const ts_params *p, const char *name) {
    for (int i = 0; i < ts_params_count(p); i++)
        if (!strcmp(ts_params_get(p, i)->name, name)) return i;
    return -1;
}

/* What keeps this recipe off the device model, or NULL. */
static const char *device_mismatch(clip_task *s, ts_recipe *r, ts_cuda_clip_config *dc,
                                   char *why, size_t n, ts_err *err) {
    if (s->nobj != 1 || strcmp(s->obj[0]->type, "clip") || s->obj[0]->weight != 1.0f)
        return "the objective must be objective.clip alone, with weight 1";
    const char *vt = ts_recipe_str(r, "model.vision.type");
    if (!vt || strcmp(vt, "vit") || s->vinfo.frames > 0)
        return "model.vision must be a vit on images";
    ts_vit_cfg v;
    ts_text_cfg tx;
    if (ts_vit_cfg_parse(r, "model.vision", &v, err) ||
        ts_text_cfg_parse(r, "model.text", ts_tokenizer_vocab_size(s->tok[0]), &tx, err)) {
        snprintf(why, n, "%s", err->msg);
        return why;
    }
    if (v.act != TS_ACT_GELU || v.pool != TS_VIT_POOL_TOKEN || v.ln_eps != 1e-5f ||
        v.mlp_ratio != 4.0f || v.drop_path != 0.0f || v.flavour != TS_VIT_OPEN_CLIP ||
        v.out_dim < 1)
        return "model.vision must have act gelu, pool token, ln_eps 1e-5, mlp_ratio 4, "
               "drop_path 0 and a projection";
    if (tx.act != TS_ACT_GELU || tx.pool != TS_TEXT_POOL_ARGMAX || !tx.causal ||
        tx.ln_eps != 1e-5f || tx.mlp_ratio != 4.0f || tx.drop_path != 0.0f || tx.out_dim < 1)
        return "model.text must have act gelu, pooling argmax, causal true, ln_eps 1e-5, "
               "mlp_ratio 4, drop_path 0 and a projection";
    *dc = (ts_cuda_clip_config){
        .image_size = v.image_h, .patch = v.patch, .width = v.width, .layers = v.layers,
        .heads = v.heads, .context = tx.context_length, .vocab = tx.vocab_size,
        .text_width = tx.width, .text_layers = tx.layers, .text_heads = tx.heads,
        .embed = v.out_dim, /* the towers' widths agree (task_new) */
        .flash_attention = 1, /* the tensor-core kernels where they apply (bf16, heads of 64) */
    };
    return NULL;
}

/* params (values and moments) <-> the device model; every trainable host tensor must have its
 * device counterpart of the same size and decay group */
static ts_status device_copy(clip_task *s, int to_device, ts_err *err) {
    ts_params *p = s->base.params;
    int n = ts_cuda_clip_param_count(s->dm), trainable = 0;
    for (int i = 0; i < ts_params_count(p); i++)
        if (!(ts_params_flags(p, i) & (TS_PARAM_BUFFER | TS_PARAM_FROZEN))) trainable++;
    if (trainable != n)
        return ts_fail(err, TS_ERR_UNSUPPORTED, "the model has %d trainable tensors, the device "
                       "model %d", trainable, n);
    for (int i = 0; i < n; i++) {
        int64_t numel;
        const char *name = ts_cuda_clip_param(s->dm, i, &numel);
        int h = host_param(p, name);
        if (h < 0)
            return ts_fail(err, TS_ERR_UNSUPPORTED, "the device model's %s is not a parameter "
                           "of this model", name);
        ts_tensor *t = ts_params_get(p, h);
        if (ts_params_flags(p, h) & (TS_PARAM_BUFFER | TS_PARAM_FROZEN))
            return ts_fail(err, TS_ERR_UNSUPPORTED, "%s is trained on the device but not here "
                           "(a buffer or frozen)", name);
        int decayed = !(ts_params_flags(p, h) & TS_PARAM_NO_DECAY);
        if (t->numel != numel || decayed != ts_cuda_clip_param_decayed(s->dm, i))
            return ts_fail(err, TS_ERR_UNSUPPORTED, "%s: %lld values here, %lld on the device; "
                           "weight decay %s here, %s there", name, (long long)t->numel,
                           (long long)numel, decayed ? "on" : "off",
                           ts_cuda_clip_param_decayed(s->dm, i) ? "on" : "off");
        ts_status st;
        float *m1 = ts_params_state(p, h, 0), *m2 = ts_params_state(p, h, 1);
        if (to_device)
            st = ts_cuda_clip_set(s->dm, name, ts_f32(t), numel, err);
        else
            st = ts_cuda_clip_get(s->dm, name, 0, ts_f32(t), numel, err);
        for (int k = 0; k < 2 && !st; k++)
            st = to_device ? ts_cuda_clip_set_moment(s->dm, name, k, k ? m2 : m1, numel, err)
                           : ts_cuda_clip_get_moment(s->dm, name, k, k ? m2 : m1, numel, err);
        if (st) return st;
    }
    return to_device ? ts_cuda_clip_params_ready(s->dm, err) : TS_OK;
}

static ts_status clip_device_check(ts_task *t, ts_recipe *r, ts_err *err) {
    char why[sizeof err->msg];
    ts_cuda_clip_config dc;
    const char *no = device_mismatch(t->impl, r, &dc, why, sizeof why, err);
    return no ? ts_fail(err, TS_ERR_UNSUPPORTED, "%s", no) : TS_OK;
}

static ts_status clip_device_open(ts_task *t, ts_recipe *r, const ts_optim_recipe *oc, int bf16,
                                  ts_err *err) {
    clip_task *s = t->impl;
    char why[sizeof err->msg];
    ts_cuda_clip_config dc;
    const char *no = device_mismatch(s, r, &dc, why, sizeof why, err);
    if (no) return ts_fail(err, TS_ERR_UNSUPPORTED, "%s", no);
    int64_t B = s->base.batch_size, S = dc.image_size;
    s->beta1 = (float)oc->beta1, s->beta2 = (float)oc->beta2, s->eps = (float)oc->eps;
    s->weight_decay = (float)oc->weight_decay;
    /* a pipeline opened before (on the cpu) has buffers that are not page-locked: the device
     * opens its own where this one stands */
    if (s->pipe) {
        s->pos = ts_pipe_position(s->pipe);
        ts_pipe_close(s->pipe);
        s->pipe = NULL;
    }
    ts_status st = ts_cuda_open(&s->gpu, 0, 0, err);
    if (!st) st = ts_cuda_clip_new(s->gpu, &dc, B, bf16 ? TS_CUDA_BF16 : TS_CUDA_F32, &s->dm,
                                   err);
    for (int k = 0; k < TS_CUDA_LANES && !st; k++) {
        if (!(s->d_images[k] = ts_cuda_alloc(s->gpu, (size_t)(B * 3 * S * S) * sizeof(float))))
            st = ts_fail(err, TS_ERR_NOMEM, "the device's arena cannot hold %d batches of "
                         "images", TS_CUDA_LANES);
        else if (!(s->ids[k] = malloc((size_t)(B * s->ctx_len) * sizeof *s->ids[k])))
            st = ts_fail(err, TS_ERR_NOMEM, "out of memory");
    }
    if (!st) st = device_copy(s, 1, err);
    if (st) {
        clip_device_close(t);
        return st;
    }
    int tc = ts_cuda_clip_tensor_core_towers(s->dm);
    ts_log(TS_LOG_INFO, "clip: training on %s, %s products, attention %s, %.1f GiB of its arena "
           "in use", ts_cuda_describe(s->gpu), bf16 ? "bf16" : "float32",
           tc == 3 ? "on the tensor cores (heads of 64)"
           : tc    ? "on the tensor cores in one tower, per-head products in the other"
                   : "by per-head products (the tensor-core kernels need bf16 and heads of 64)",
           (double)ts_cuda_arena_used(s->gpu) / (1u << 30));
    return TS_OK;
}

/* The pipeline's image buffers are page-locked, for copies that overlap the device's work
 * (the prepare rows, read on the host, are left as they are). */
static void pin_buffer(void *user, void *buf, size_t bytes, int release) {
    clip_task *s = user;
    int64_t S = s->vinfo.image_size;
    if (bytes != (size_t)(s->base.batch_size * 3 * S * S) * sizeof(float)) return;
    ts_err e;
    if (release) {
        ts_cuda_unpin(s->gpu, buf);
    } else if (ts_cuda_pin(s->gpu, buf, bytes, &e) && !s->pin_failed) {
        ts_log(TS_LOG_WARN, "clip: %s; each batch's copy to the device will hold up the host",
               e.msg);
        s->pin_failed = 1;
    }
}

/* The next training batch into lane k: its ids on the host, its images on their way to the
 * device from the pipeline's buffer (which stays the pipeline's until the next ts_pipe_next). */
static ts_status device_stage(clip_task *s, int k, ts_err *err) {
    int64_t B = s->base.batch_size, L = s->ctx_len, S = s->vinfo.image_size;
    ts_pipe_batch pb;
    ts_status st = ts_pipe_next(s->pipe, &pb, err);
    if (st) return st;
    if (pb.n != B)
        return ts_fail(err, TS_ERR_DATA, "%s: a training batch has %d good samples of %lld; "
                       "the device model trains on full batches only (bad samples were "
                       "skipped: clean the data or train on the cpu)", s->d.train, pb.n,
                       (long long)B);
    size_t rb = row_bytes(s);
    for (int64_t i = 0; i < B; i++)
        memcpy(s->ids[k] + i * L, pb.extra + (size_t)i * rb, (size_t)L * sizeof(int32_t));
    s->staged_pos = ts_pipe_position(s->pipe);
    return ts_cuda_lane_upload(s->gpu, k, s->d_images[k], pb.images,
                               (size_t)(B * 3 * S * S) * sizeof(float), err);
}

/* One step on the batch staged in lane k, while the next batch is staged in the other lane:
 * its images cross to the device during this step's work. An error in getting the next batch
 * is the next step's error, as it would be without the overlap. */
static ts_status clip_device_step(ts_task *t, int64_t step, float lr, float *loss, ts_metrics *m,
                                  ts_err *err) {
    clip_task *s = t->impl;
    ts_status st;
    if (!s->pipe) {
        if ((st = open_pipe(s, &s->pipe, s->d.train, 1, 0, 1, s->base.batch_size, &s->pos,
                            err)))
            return st;
        s->staged = 0, s->staged_st = TS_OK;
    }
    if (s->staged_st) {
        *err = s->staged_err;
        return s->staged_st;
    }
    int k = s->lane;
    if (!s->staged && (st = device_stage(s, k, err))) return st;
    /* lane k's source goes back to the pipeline at the next ts_pipe_next */
    if ((st = ts_cuda_lane_wait_host(s->gpu, k, err))) return st;
    s->staged = 0;
    s->pos = s->staged_pos;
    log_bad(s, m); /* the counts up to this batch: the next is not taken yet */
    s->staged_st = device_stage(s, k ^ 1, &s->staged_err);
    s->staged = !s->staged_st;
    s->lane = k ^ 1;
    float ls;
    if ((st = ts_cuda_lane_use(s->gpu, k, err)) ||
        (st = ts_cuda_clip_forward_backward(s->dm, s->d_images[k], s->ids[k], loss, err)) ||
        (st = ts_cuda_lane_release(s->gpu, k, err)) ||
        (st = ts_cuda_clip_get(s->dm, "logit_scale", 0, &ls, 1, err)))
        return st;
    if (m) ts_metrics_set(m, "logit_scale", exp(ls)); /* as the cpu objective logs it */
    return ts_cuda_clip_adamw(s->dm, step, lr, s->beta1, s->beta2, s->eps, s->weight_decay,
                              err);
}

static ts_status clip_device_sync(ts_task *t, ts_err *err) {
    return device_copy(t->impl, 0, err);
}
#endif

static void clip_free(ts_task *t) {
    clip_task *s = t->impl;
#ifdef TS_HAVE_CUDA
    clip_device_close(t);
#endif
    ts_pipe_close(s->pipe);
    ts_encoder_free(s->vision);
    ts_encoder_free(s->text);
    for (int i = 0; i < s->nobj; i++) ts_objective_free(s->obj[i]);
    free(s->ep_keys);
    free(s->index);
    for (int i = 0; i < s->ntok; i++) {
        ts_tokenizer_free(s->tok[i]);
        pthread_mutex_destroy(&s->tok_lock[i]);
    }
    for (int z = 0; z < ZS_MAX; z++) {
        free_lines(s->zs[z].classes, s->zs[z].nclasses);
        free_lines(s->zs[z].templates, s->zs[z].ntemplates);
    }
    ts_params_free(t->params);
    free(s);
}

ts_status ts_task_clip_new(ts_recipe *r, uint64_t seed, ts_task **out, ts_err *err) {
    *out = NULL;
    clip_task *s = calloc(1, sizeof *s);
    if (!s) return ts_fail(err, TS_ERR_NOMEM, "out of memory");
    s->seed = seed;
    s->base = (ts_task){ .type = "clip", .loss = clip_loss, .eval = clip_eval,
                         .free = clip_free, .after_step = clip_after_step,
                         .data_state = clip_data_state, .data_seek = clip_data_seek, .impl = s };
#ifdef TS_HAVE_CUDA
    s->base.device_open = clip_device_open, s->base.device_step = clip_device_step;
    s->base.device_sync = clip_device_sync, s->base.device_close = clip_device_close;
    s->base.device_check = clip_device_check;
#endif
    ts_params *p = s->base.params = ts_params_new();
    char where[512], set[256];
    ts_status st = ts_recipe_section(r, "model", model_keys, COUNT(model_keys), &s->mc, err);
    if (!st) st = ts_recipe_section(r, "data", data_keys, COUNT(data_keys), &s->d, err);
    if (!st) st = ts_recipe_section(r, "eval", eval_keys, COUNT(eval_keys), &s->ev, err);
    if (st) goto fail;
    if (s->d.batch_size < 2 || s->d.workers < 1 || s->d.workers > 256 || s->d.scale.n != 2 ||
        s->mc.embed_dim < 1 || s->mc.embed_dim > (1 << 20)) {
        st = ts_fail(err, TS_ERR_RECIPE, "%s: data.batch_size must be at least 2, data.workers "
                     "1..256, data.scale two numbers and model.embed_dim positive",
                     ts_recipe_where(r, "data", where, sizeof where));
        goto fail;
    }
    /* the tokenizers first: the text tower's vocabulary is the tokenizer's */
    s->ntok = (int)(s->d.workers + 1 < TOK_POOL ? s->d.workers + 1 : TOK_POOL);
    char looked[2048], *merges = s->d.tokenizer[0] ? strdup(s->d.tokenizer)
                                                   : ts_find_clip_merges(looked, sizeof looked);
    if (!merges) {
        st = ts_fail(err, TS_ERR_RECIPE, "%s: data.tokenizer is \"\" (CLIP's vocabulary) but "
                     "no bpe_simple_vocab_16e6.txt.gz was found (looked at %s); give the file, "
                     "set TESSERA_BPE, or train one with `tessera tokenize train`",
                     ts_recipe_where(r, "data.tokenizer", where, sizeof where), looked);
        s->ntok = 0;
        goto fail;
    }
    for (int i = 0; i < s->ntok; i++) {
        if ((st = ts_tokenizer_load(merges, &s->tok[i], err))) {
            char msg[sizeof err->msg];
            snprintf(msg, sizeof msg, "%s", err->msg);
            /* the quickstart's files come from one command */
            int synth = !strncmp(merges, "data/shapes/", 12) && access(merges, F_OK) != 0;
            st = ts_fail(err, st, "%s: data.tokenizer: %s%s",
                         ts_recipe_where(r, "data.tokenizer", where, sizeof where), msg,
                         synth ? " (make the quickstart's data first: tessera data synth "
                                 "shapes --out data/shapes)" : "");
            free(merges);
            s->ntok = i;
            goto fail;
        }
        pthread_mutex_init(&s->tok_lock[i], NULL);
    }
    free(merges);
    /* both towers project to embed_dim unless the recipe says otherwise */
    const char *sub[2] = { "model.vision.out_dim", "model.text.out_dim" };
    for (int i = 0; i < 2; i++)
        if (!ts_recipe_has(r, sub[i])) {
            snprintf(set, sizeof set, "%s=%lld", sub[i], (long long)s->mc.embed_dim);
            if ((st = ts_recipe_set(r, set, err))) goto fail;
        }
    ts_enc_spec vs = { 0, "visual.", 0 }, tspec = { 1, "", ts_tokenizer_vocab_size(s->tok[0]) };
    if ((st = ts_factory_encoder(r, "model.vision", p, &vs, &s->vision, &s->vinfo, err)))
        goto fail;
    if ((st = ts_factory_encoder(r, "model.text", p, &tspec, &s->text, &s->tinfo, err)))
        goto fail;
    if (s->vision->out_dim != s->text->out_dim) {
        st = ts_fail(err, TS_ERR_RECIPE, "%s: the image tower gives %d-wide embeddings and the "
                     "text tower %d: both out_dim must be model.embed_dim",
                     ts_recipe_where(r, "model", where, sizeof where), s->vision->out_dim,
                     s->text->out_dim);
        goto fail;
    }
    s->ctx_len = s->tinfo.context_length;
    int ntowers = ts_params_count(p);
    if ((st = parse_objectives(r, s, p, err))) goto fail;
    if ((st = parse_zeroshot(r, s, err))) goto fail;
    apply_open_clip_decay(p, ntowers);
    if ((st = ts_params_finalize(p, seed, err))) goto fail;
    if (s->mc.init_from[0]) {
        if ((st = ts_ckpt_load_model(p, s->mc.init_from, 1, err))) goto fail;
        ts_log(TS_LOG_INFO, "clip: weights from %s", s->mc.init_from);
    }
    s->base.batch_size = s->d.batch_size;
    if (s->proto && !(s->index = malloc((size_t)s->d.batch_size * sizeof *s->index))) {
        st = ts_fail(err, TS_ERR_NOMEM, "out of memory");
        goto fail;
    }
    ts_log(TS_LOG_INFO, "clip: image tower %s", s->vinfo.describe);
    ts_log(TS_LOG_INFO, "clip: text tower %s", s->tinfo.describe);
    ts_log(TS_LOG_INFO, "clip: embed_dim %lld, %d objective(s), %d zero-shot task(s); %lld "
           "parameters", (long long)s->mc.embed_dim, s->nobj, s->nzs,
           (long long)ts_params_numel(p, 1));
    *out = &s->base;
    return TS_OK;
fail:
    clip_free(&s->base);
    return st;
}

/* ---- the model outside training: ts_clip_load and the zero-shot task of `tessera eval` ---- */

static int is_file(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* The folder part of path ("." when it has none). */
static void dir_of(const char *path, char *out, size_t n) {
    const char *slash = strrchr(path, '/');
    if (!slash) snprintf(out, n, ".");
    else if (slash == path) snprintf(out, n, "/");
    else snprintf(out, n, "%.*s", (int)(slash - path), path);
}

/* Where the weights and the recipe of `checkpoint` are: a model.safetensors file (its recipe
 * beside it), a checkpoint folder, or a run folder (its latest checkpoint). */
static ts_status locate(const char *checkpoint, const char *recipe, ts_clip_model *m,
                        ts_err *err) {
    char dir[4000]; /* leaves room for a file name in the 4096 of m->checkpoint */
    struct stat sb;
    if (stat(checkpoint, &sb) != 0)
        return ts_fail(err, TS_ERR_IO, "%s: no such checkpoint (a run folder, a checkpoint "
                       "folder or a model.safetensors file)", checkpoint);
    if (S_ISDIR(sb.st_mode)) {
        ts_status st = ts_ckpt_find(checkpoint, dir, sizeof dir, err);
        if (st) return st;
        snprintf(m->checkpoint, sizeof m->checkpoint, "%s/model.safetensors", dir);
    } else {
        snprintf(m->checkpoint, sizeof m->checkpoint, "%s", checkpoint);
        dir_of(checkpoint, dir, sizeof dir);
    }
    if (recipe) {
        snprintf(m->recipe_path, sizeof m->recipe_path, "%s", recipe);
        return TS_OK;
    }
    snprintf(m->recipe_path, sizeof m->recipe_path, "%s/recipe.yaml", dir);
    if (is_file(m->recipe_path)) return TS_OK;
    return ts_fail(err, TS_ERR_IO, "%s: no recipe.yaml beside the checkpoint %s; name the recipe "
                   "the model was trained with (--recipe FILE)", m->recipe_path, m->checkpoint);
}

ts_status ts_clip_load(ts_clip_model *m, const char *checkpoint, const ts_clip_load_opts *o,
                       ts_err *err) {
    memset(m, 0, sizeof *m);
    ts_clip_load_opts none = { 0 };
    if (!o) o = &none;
    char where[512];
    ts_status st = locate(checkpoint, o->recipe, m, err);
    if (!st) st = ts_read_text(m->recipe_path, &m->recipe_text, err);
    if (!st) st = ts_recipe_parse(m->recipe_text, m->recipe_path, &m->recipe, err);
    /* the weights come from the checkpoint, the zero-shot tasks from the caller: neither the
     * run's init_from nor its class files need to exist any more */
    if (!st) st = ts_recipe_set(m->recipe, "model.init_from=''", err);
    if (!st) st = ts_recipe_set(m->recipe, "eval.zeroshot={}", err);
    for (int i = 0; !st && i < o->nsets; i++) st = ts_recipe_set(m->recipe, o->sets[i], err);
    if (st) goto fail;
    const char *type = ts_recipe_str(m->recipe, "model.type");
    if (!type || strcmp(type, "clip")) {
        st = ts_fail(err, TS_ERR_RECIPE, "%s: model.type is %s; embed and eval take CLIP models "
                     "(model.type clip)", ts_recipe_where(m->recipe, "model.type", where,
                     sizeof where), type ? type : "missing");
        goto fail;
    }
    if ((st = ts_factory_task(m->recipe, 0, &m->task, err))) goto fail;
    if ((st = ts_ckpt_load_model(m->task->params, m->checkpoint, 0, err))) {
        if (st == TS_ERR_MISMATCH) {
            /* the names stay; the hint goes last, cutting the list if it must */
            char hint[600], list[sizeof err->msg];
            snprintf(hint, sizeof hint, "\n(the model was built from %.300s; a checkpoint of "
                     "another model shape needs the recipe it was trained with: --recipe FILE)",
                     m->recipe_path);
            size_t room = sizeof list - strlen(hint) - 8;
            size_t keep = strlen(err->msg);
            if (keep > room) { /* whole lines only */
                keep = room;
                while (keep && err->msg[keep] != '\n') keep--;
            }
            snprintf(list, sizeof list, "%.*s%s", (int)keep, err->msg,
                     keep < strlen(err->msg) ? "\n  ..." : "");
            ts_fail(err, TS_ERR_MISMATCH, "%s%s", list, hint);
        }
        goto fail;
    }
    clip_task *s = m->task->impl;
    m->image_size = s->vinfo.image_size;
    m->context_length = s->ctx_len;
    m->embed_dim = s->vision->out_dim;
    snprintf(m->describe, sizeof m->describe, "clip, embed_dim %d; image tower %s; text tower %s",
             m->embed_dim, s->vinfo.describe, s->tinfo.describe);
    return TS_OK;
fail:
    ts_clip_model_free(m);
    return st;
}

void ts_clip_model_free(ts_clip_model *m) {
    if (!m) return;
    ts_task_free(m->task);
    ts_recipe_free(m->recipe);
    free(m->recipe_text);
    m->task = NULL;
    m->recipe = NULL;
    m->recipe_text = NULL;
}

/* A copy of n strings, or of `fallback` alone when v is NULL. */
static char **copy_lines(char *const *v, int n, const char *fallback, int *out_n) {
    int k = v ? n : 1;
    char **c = calloc((size_t)k, sizeof *c);
    for (int i = 0; c && i < k; i++)
        if (!(c[i] = strdup(v ? v[i] : fallback))) {
            free_lines(c, i);
            return NULL;
        }
    *out_n = c ? k : 0;
    return c;
}

ts_status ts_clip_zeroshot_set(ts_task *t, const char *name, char *const *classes, int nclasses,
                               char *const *templates, int ntemplates, const char *label,
                               ts_err *err) {
    clip_task *s = clip_of(t);
    TS_CHECK(classes && nclasses > 0 && (!templates || ntemplates > 0),
             "zero-shot task without classes or templates");
    for (int z = 0; z < ZS_MAX; z++) {
        free_lines(s->zs[z].classes, s->zs[z].nclasses);
        free_lines(s->zs[z].templates, s->zs[z].ntemplates);
        memset(&s->zs[z], 0, sizeof s->zs[z]);
    }
    s->nzs = 0;
    zs_task *z = &s->zs[0];
    snprintf(z->name, sizeof z->name, "%s", name);
    snprintf(z->metric_top1, sizeof z->metric_top1, "zeroshot_%s_top1", z->name);
    snprintf(z->metric_top5, sizeof z->metric_top5, "zeroshot_%s_top5", z->name);
    z->cls = !label || !strcmp(label, "cls");
    snprintf(z->field, sizeof z->field, "%s", label ? label : "cls");
    z->classes = copy_lines(classes, nclasses, NULL, &z->nclasses);
    z->templates = copy_lines(templates, ntemplates, "a photo of a {}.", &z->ntemplates);
    if (!z->classes || !z->templates) {
        free_lines(z->classes, z->nclasses);
        free_lines(z->templates, z->ntemplates);
        memset(z, 0, sizeof *z);
        return ts_fail(err, TS_ERR_NOMEM, "out of memory");
    }
    s->nzs = 1;
    return TS_OK;
}

ts_status ts_clip_read_lines(const char *path, char ***out, int *n, ts_err *err) {
    ts_status st = read_lines(path, out, n, err);
    if (st) {
        free_lines(*out, *n);
        *out = NULL;
        *n = 0;
    }
    return st;
}

void ts_clip_free_lines(char **v, int n) { free_lines(v, n); }
