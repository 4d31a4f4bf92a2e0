/* protoclip.c: ProtoCLIP's prototype objective ("Prototypical Contrastive Language Image
 * Pretraining", Chen et al.; official code megvii-research/protoclip), built from core ops so
 * that its backward is the ops'.
 *
 * Three pieces, each a plain function that tests can call: the projection heads
 * (Linear-BatchNorm1d-ReLU-Linear, L2-normalised), Prototype Back Translation (the student
 * prototypes of one modality are its features averaged by the other modality's cluster labels)
 * and the prototype loss (a cross-entropy of scaled similarities to the student prototypes
 * against the teacher's softened similarities between its own prototypes). The objective ties
 * them to the episodes: ts_protoclip_episode projects the episode's embeddings, clusters them
 * with ts_kmeans (core/kmeans.c) and keeps the labels and prototypes; loss() looks each batch
 * sample's labels up by its episode position. The letters: B batch, E embedding width, P
 * projected width, K prototypes, n samples of the episode.
 *
 * What this file is not: the CLIP part of ProtoCLIP's loss (the clip objective, which the task
 * adds), the episode sampling and the feature-extraction pass (the task's), or the official
 * code's gather of features across ranks.
 */
#include "../tessera-impl.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>

ts_protoclip_cfg ts_protoclip_cfg_default(void) {
    return (ts_protoclip_cfg){ .k = 20000, .kmeans_iters = 20, .kmeans_redo = 1,
                               .kmeans_init = TS_KMEANS_RANDOM,
                               .proj_dim = 128, .hidden_dim = 2048, .proj_layers = 1,
                               .target_temperature = 0.01f, .init_logit_scale = logf(1.0f / 0.07f),
                               .max_logit_scale = 100.0f, .w_proto = 1.0f, .w_external = 1.0f,
                               .pbt = 1 };
}

/* ---- projection heads ---- */

void ts_protoclip_head_init(ts_protoclip_head *h, ts_params *p, const char *prefix, int in,
                            int hidden, int out, int layers) {
    TS_CHECK(layers >= 0 && layers <= TS_PROTOCLIP_MAX_LAYERS, "protoclip head: %d layers "
             "(0 to %d)", layers, TS_PROTOCLIP_MAX_LAYERS);
    memset(h, 0, sizeof *h);
    h->layers = layers;
    char name[256];
    int width = in;
    /* torch's nn.Sequential numbers its modules: Linear 3l, BatchNorm1d 3l+1, ReLU 3l+2. The
     * Linears keep torch's default init (U(+-1/sqrt(in)) for weight and bias); nothing of the
     * head is weight-decayed, as the official optimizer groups have it. */
    for (int l = 0; l <= layers; l++) {
        int o = l < layers ? hidden : out;
        float bound = 1.0f / sqrtf((float)width);
        h->fc[l].w = ts_param(p, ts_pname(name, sizeof name, "%s.%d.weight", prefix, 3 * l), 2,
                              TS_SHAPE(o, width), TS_INIT_U(-bound, bound), TS_PARAM_NO_DECAY);
        h->fc[l].b = ts_param(p, ts_pname(name, sizeof name, "%s.%d.bias", prefix, 3 * l), 1,
                              TS_SHAPE(o), TS_INIT_U(-bound, bound), TS_PARAM_NO_DECAY);
        if (l == layers) break;
        int bn = 3 * l + 1;
        h->bn_w[l] = ts_param(p, ts_pname(name, sizeof name, "%s.%d.weight", prefix, bn), 1,
                              TS_SHAPE(o), TS_INIT_1, TS_PARAM_NO_DECAY);
        h->bn_b[l] = ts_param(p, ts_pname(name, sizeof name, "%s.%d.bias", prefix, bn), 1,
                              TS_SHAPE(o), TS_INIT_0, TS_PARAM_NO_DECAY);
        /* running statistics: averaged over the ranks of a data-parallel run (trainer.c) */
        const int running = TS_PARAM_BUFFER | TS_PARAM_RUNNING;
        h->bn_mean[l] = ts_param(p, ts_pname(name, sizeof name, "%s.%d.running_mean", prefix,
                                             bn), 1, TS_SHAPE(o), TS_INIT_0, running);
        h->bn_var[l] = ts_param(p, ts_pname(name, sizeof name, "%s.%d.running_var", prefix, bn),
                                1, TS_SHAPE(o), TS_INIT_1, running);
        width = o;
    }
}

ts_tensor *ts_protoclip_head_forward(ts_ctx *c, const ts_protoclip_head *h,
                                     const ts_tensor *x) {
    ts_tensor *y = ts_linear(c, x, h->fc[0].w, h->fc[0].b);
    for (int l = 0; l < h->layers; l++) {
        y = ts_batchnorm1d(c, y, h->bn_w[l], h->bn_b[l], h->bn_mean[l], h->bn_var[l], 0.1f,
                           1e-5f);
        y = ts_linear(c, ts_relu(c, y), h->fc[l + 1].w, h->fc[l + 1].b);
    }
    return ts_l2_normalize(c, y, 1e-12f);
}

/* ---- the prototype loss ---- */

/* A tensor header over constant data (prototypes the objective owns): no grad, no copy. */
static ts_tensor *constant(ts_ctx *c, const float *data, int64_t rows, int64_t cols) {
    ts_tensor *t = ts__header(c, TS_F32, 2, TS_SHAPE(rows, cols));
    t->data = (void *)data;
    return t;
}

/* The teacher's target q (B, K): row i = softmax(c_teacher[labels[i]] @ c_teacher^T / T).
 * A constant of the loss, computed in float32 whatever the context's precision: a temperature
 * of 0.01 magnifies any rounding of the similarities a hundredfold. */
static ts_tensor *teacher_target(ts_ctx *c, const ts_tensor *ct, const ts_tensor *labels,
                                 float temperature) {
    const int64_t B = labels->numel, K = ct->shape[0], D = ct->shape[1];
    const float *C = ts_f32(ct);
    const int32_t *lab = ts_i32(labels);
    ts_tensor *rows = ts_new_f32(c, 2, TS_SHAPE(B, D)); /* (B, D) c_teacher[labels] */
    for (int64_t i = 0; i < B; i++) {
        TS_CHECK(lab[i] >= 0 && lab[i] < K, "protoclip loss: label %d of sample %lld is not a "
                 "prototype (K = %lld)", lab[i], (long long)i, (long long)K);
        memcpy(ts_f32(rows) + i * D, C + lab[i] * D, (size_t)D * sizeof(float));
    }
    ts_tensor *q = ts_new_f32(c, 2, TS_SHAPE(B, K));
    ts_ctx g;
    memset(&g, 0, sizeof g);
    g.precision = TS_PREC_F32;
    ts__gemm(&g, 0, 1, B, K, D, 1.0f / temperature, ts_f32(rows), D, C, D, 0.0f, ts_f32(q), K);
    for (int64_t i = 0; i < B; i++) {
        float *r = ts_f32(q) + i * K, mx = -INFINITY;
        for (int64_t j = 0; j < K; j++) mx = r[j] > mx ? r[j] : mx;
        double s = 0;
        for (int64_t j = 0; j < K; j++) s += (r[j] = expf(r[j] - mx));
        const float inv = (float)(1.0 / s);
        for (int64_t j = 0; j < K; j++) r[j] *= inv;
    }
    return q;
}

ts_tensor *ts_protoclip_proto_loss(ts_ctx *c, const ts_tensor *f, const ts_tensor *c_student,
                                   const ts_tensor *c_teacher, const ts_tensor *labels,
                                   const ts_tensor *logit_scale, float temperature) {
    char s1[96], s2[96];
    TS_CHECK(f->ndim == 2 && c_student->ndim == 2 && f->shape[1] == c_student->shape[1],
             "protoclip loss: features %s and student prototypes %s differ in width",
             ts_shape_str(f, s1, sizeof s1), ts_shape_str(c_student, s2, sizeof s2));
    TS_CHECK(labels->dtype == TS_I32 && labels->numel == f->shape[0], "protoclip loss: %lld "
             "labels for %lld samples", (long long)labels->numel, (long long)f->shape[0]);
    TS_CHECK(logit_scale->numel == 1, "protoclip loss: logit_scale has %lld elements",
             (long long)logit_scale->numel);
    const int64_t B = f->shape[0];
    /* (B, K) student scores: exp(s) f @ c_student^T */
    ts_tensor *scores = ts_mul(c, ts_matmul(c, f, c_student, TS_TRANS_B), ts_exp(c, logit_scale));
    if (!(temperature > 0)) return ts_cross_entropy(c, scores, labels, -1, 0.0f);
    TS_CHECK(c_teacher && c_teacher->ndim == 2 && c_teacher->shape[0] == c_student->shape[0],
             "protoclip loss: teacher prototypes must be (K, D') with K = %lld",
             (long long)c_student->shape[0]);
    ts_tensor *q = teacher_target(c, c_teacher, labels, temperature);
    /* soft cross-entropy: -sum(q * log_softmax(scores)) / B */
    ts_tensor *ll = ts_sum(c, ts_mul(c, ts_log_softmax(c, scores), q), TS_ALL);
    return ts_scale(c, ll, -1.0f / (float)B);
}

/* ---- Prototype Back Translation ---- */

void ts_protoclip_pbt(const float *feat, const int32_t *labels, int64_t n, int64_t d, int64_t k,
                      float *out) {
    double *acc = calloc((size_t)(k * d + k), sizeof(double)); /* (k, d) sums, then (k) counts */
    TS_CHECK(acc != NULL, "protoclip: out of memory");
    double *cnt = acc + k * d;
    for (int64_t i = 0; i < n; i++) {
        TS_CHECK(labels[i] >= 0 && labels[i] < k, "protoclip PBT: label %d of row %lld is not "
                 "in [0, %lld)", labels[i], (long long)i, (long long)k);
        double *a = acc + labels[i] * d;
        for (int64_t t = 0; t < d; t++) a[t] += feat[i * d + t];
        cnt[labels[i]] += 1;
    }
    for (int64_t j = 0; j < k; j++)
        for (int64_t t = 0; t < d; t++)
            out[j * d + t] = cnt[j] > 0 ? (float)(acc[j * d + t] / cnt[j]) : 0.0f;
    free(acc);
}

/* ---- the objective ---- */

enum { LAB_IMG, LAB_TXT, LAB_EXT, NLAB };
enum { PR_IMG, PR_TXT, PR_EXT, PR_IMG_FROM_TXT, PR_TXT_FROM_IMG, PR_IMG_FROM_EXT,
       PR_TXT_FROM_EXT, NPROTO };

typedef struct proto_obj {
    ts_objective base;
    ts_protoclip_cfg cfg;
    ts_protoclip_head img_head, txt_head;
    int image_dim, text_dim;
    ts_tensor *logit_scale; /* () log-scale of the prototype logits */
    /* The current episode, malloc'ed; NULL before the first. */
    int64_t n;               /* samples of the episode */
    int32_t *lab[NLAB];      /* (n) cluster labels by episode position */
    float *proto[NPROTO];    /* (K, width[i]) prototypes */
    int64_t width[NPROTO];
} proto_obj;

static proto_obj *impl_of(const ts_objective *o) {
    TS_CHECK(o && o->type && !strcmp(o->type, "protoclip"), "not a protoclip objective");
    return o->impl;
}

/* Fraction of samples whose nearest student prototype is their teacher label. */
static double accuracy(const ts_tensor *f, const float *cs, int64_t K, const int32_t *lab) {
    const int64_t B = f->shape[0], D = f->shape[1];
    float *sim = malloc((size_t)(B * K) * sizeof(float));
    TS_CHECK(sim != NULL, "protoclip: out of memory");
    ts_ctx g;
    memset(&g, 0, sizeof g);
    g.precision = TS_PREC_F32;
    ts__gemm(&g, 0, 1, B, K, D, 1.0f, ts_f32(f), D, cs, D, 0.0f, sim, K);
    int64_t hit = 0;
    for (int64_t i = 0; i < B; i++) {
        int64_t arg = 0;
        for (int64_t j = 1; j < K; j++) arg = sim[i * K + j] > sim[i * K + arg] ? j : arg;
        hit += arg == lab[i];
    }
    free(sim);
    return B ? (double)hit / (double)B : 0.0;
}

static ts_tensor *proto_obj_loss(ts_ctx *c, ts_objective *o, const ts_embeds *e,
                                 ts_metrics *m) {
    proto_obj *s = o->impl;
    TS_CHECK(e->image && e->text, "protoclip objective: needs image and text embeddings");
    TS_CHECK(s->lab[LAB_IMG], "protoclip objective: loss() before the first "
             "ts_protoclip_episode");
    TS_CHECK(e->batch && e->batch->index, "protoclip objective: the batch has no episode "
             "positions (ts_batch.index)");
    const int64_t B = e->image->shape[0], K = s->cfg.k;
    const int has_ext = s->lab[LAB_EXT] != NULL;
    ts_tensor *lab[NLAB] = { 0 };
    for (int w = 0; w < NLAB; w++) {
        if (!s->lab[w]) continue;
        lab[w] = ts_new(c, TS_I32, 1, TS_SHAPE(B));
        for (int64_t i = 0; i < B; i++) {
            int64_t p = e->batch->index[i];
            TS_CHECK(p >= 0 && p < s->n, "protoclip objective: sample %lld has episode position "
                     "%lld, the episode has %lld", (long long)i, (long long)p, (long long)s->n);
            ts_i32(lab[w])[i] = s->lab[w][p];
        }
    }
    ts_tensor *fi = ts_protoclip_head_forward(c, &s->img_head, e->image);  /* (B, P) */
    ts_tensor *ft = ts_protoclip_head_forward(c, &s->txt_head, e->text);   /* (B, P) */
    const int64_t P = s->cfg.proj_dim;
    const float T = s->cfg.target_temperature;
    /* Students: the PBT prototypes, or without PBT the other modality's centroids. */
    const float *si = s->proto[s->cfg.pbt ? PR_IMG_FROM_TXT : PR_TXT];
    const float *st = s->proto[s->cfg.pbt ? PR_TXT_FROM_IMG : PR_IMG];
    ts_tensor *l_i2t = ts_protoclip_proto_loss(c, fi, constant(c, si, K, P),
                                               constant(c, s->proto[PR_TXT], K, P),
                                               lab[LAB_TXT], s->logit_scale, T);
    ts_tensor *l_t2i = ts_protoclip_proto_loss(c, ft, constant(c, st, K, P),
                                               constant(c, s->proto[PR_IMG], K, P),
                                               lab[LAB_IMG], s->logit_scale, T);
    ts_tensor *l_proto = ts_scale(c, ts_add(c, l_i2t, l_t2i), 0.5f);
    ts_tensor *loss = ts_scale(c, l_proto, s->cfg.w_proto);
    ts_tensor *l_ext = NULL;
    if (has_ext) { /* hard labels: the official loop passes no teacher temperature here */
        ts_tensor *l_i2e = ts_protoclip_proto_loss(c, fi, constant(c, s->proto[PR_IMG_FROM_EXT],
                                                                   K, P),
                                                   NULL, lab[LAB_EXT], s->logit_scale, -1.0f);
        ts_tensor *l_t2e = ts_protoclip_proto_loss(c, ft, constant(c, s->proto[PR_TXT_FROM_EXT],
                                                                   K, P),
                                                   NULL, lab[LAB_EXT], s->logit_scale, -1.0f);
        l_ext = ts_scale(c, ts_add(c, l_i2e, l_t2e), 0.5f);
        loss = ts_add(c, loss, ts_scale(c, l_ext, s->cfg.w_external));
    }
    if (m) {
        ts_metrics_set(m, "loss_proto", ts_f32(l_proto)[0]);
        if (l_ext) ts_metrics_set(m, "loss_proto_external", ts_f32(l_ext)[0]);
        ts_metrics_set(m, "acc_img2text", accuracy(fi, si, K, ts_i32(lab[LAB_TXT])));
        ts_metrics_set(m, "acc_text2img", accuracy(ft, st, K, ts_i32(lab[LAB_IMG])));
        ts_metrics_set(m, "logit_scale_proto", exp(ts_f32(s->logit_scale)[0]));
    }
    return loss;
}

static void proto_obj_after_step(ts_objective *o) {
    proto_obj *s = o->impl;
    if (s->cfg.max_logit_scale <= 0.0f) return;
    float *v = ts_f32(s->logit_scale), hi = logf(s->cfg.max_logit_scale);
    *v = *v < 0.0f ? 0.0f : *v > hi ? hi : *v; /* the official loop: clamp_(0, math.log(100)) */
}

static void episode_clear(proto_obj *s) {
    for (int w = 0; w < NLAB; w++) { free(s->lab[w]); s->lab[w] = NULL; }
    for (int i = 0; i < NPROTO; i++) { free(s->proto[i]); s->proto[i] = NULL; s->width[i] = 0; }
    s->n = 0;
}

static void proto_obj_free(ts_objective *o) {
    proto_obj *s = o->impl;
    episode_clear(s);
    free(s);
}

ts_objective *ts_objective_protoclip_new(ts_params *p, const ts_protoclip_cfg *cfg,
                                         int image_dim, int text_dim, float weight) {
    TS_CHECK(cfg->k >= 1 && cfg->proj_dim >= 1 && cfg->hidden_dim >= 1 &&
             cfg->kmeans_iters >= 0 && cfg->kmeans_redo >= 1, "protoclip: invalid config "
             "(k %lld, proj_dim %d, hidden_dim %d, kmeans_iters %d, kmeans_redo %d)",
             (long long)cfg->k, cfg->proj_dim, cfg->hidden_dim, cfg->kmeans_iters,
             cfg->kmeans_redo);
    proto_obj *s = calloc(1, sizeof *s);
    TS_CHECK(s, "out of memory");
    s->cfg = *cfg;
    s->image_dim = image_dim;
    s->text_dim = text_dim;
    ts_protoclip_head_init(&s->img_head, p, "image_projection_head", image_dim, cfg->hidden_dim,
                           cfg->proj_dim, cfg->proj_layers);
    ts_protoclip_head_init(&s->txt_head, p, "text_projection_head", text_dim, cfg->hidden_dim,
                           cfg->proj_dim, cfg->proj_layers);
    s->logit_scale = ts_param(p, "logit_scale_proto", 0, NULL,
                              (ts_init){ TS_INIT_CONST, cfg->init_logit_scale, 0.0f },
                              TS_PARAM_NO_DECAY);
    s->base = (ts_objective){ .type = "protoclip", .weight = weight, .loss = proto_obj_loss,
                              .after_step = proto_obj_after_step, .free = proto_obj_free,
                              .impl = s };
    return &s->base;
}

/* ---- episodes ---- */

/* Rows of the projected features computed at a time, to bound the memory of the pass. */
#define EPISODE_CHUNK 2048

/* out (n, P) = head(x (n, in)) in eval mode without grad, NaNs set to 0. A context of its own
 * holds the activations, so the caller's step arena is left as it was. */
static void project(const ts_ctx *c, const ts_protoclip_head *h, const float *x, int64_t n,
                    int64_t in, int64_t P, float *out) {
    ts_ctx *t = ts_ctx_new(TS_CPU, (size_t)64 << 20, 0);
    t->grad_enabled = 0;
    t->training = 0;
    t->nthreads = c->nthreads;
    t->precision = c->precision;
    for (int64_t i0 = 0; i0 < n; i0 += EPISODE_CHUNK) {
        const int64_t m = n - i0 < EPISODE_CHUNK ? n - i0 : EPISODE_CHUNK;
        ts_tensor *y = ts_protoclip_head_forward(t, h, ts_from_f32(t, 2, TS_SHAPE(m, in),
                                                                   x + i0 * in));
        const float *Y = ts_f32(y);
        for (int64_t i = 0; i < m * P; i++) out[i0 * P + i] = isnan(Y[i]) ? 0.0f : Y[i];
        ts_ctx_reset(t);
    }
    ts_ctx_free(t);
}

static void *xcalloc(size_t n, size_t size) {
    void *p = calloc(n ? n : 1, size);
    TS_CHECK(p != NULL, "protoclip: out of memory");
    return p;
}

/* k-means of x (n, d) into cfg's k clusters, kmeans_redo times from different seeds, the
 * lowest error kept in centroids (k, d) and labels (n). Returns that error. */
static double cluster(const ts_protoclip_cfg *pc, const float *x, int64_t n, int64_t d,
                      uint64_t seed, int nthreads, float *centroids, int32_t *labels) {
    ts_kmeans_cfg kc = { .k = pc->k, .iters = pc->kmeans_iters, .init = pc->kmeans_init,
                         .seed = seed, .nthreads = nthreads };
    double best = ts_kmeans(x, n, d, &kc, centroids, labels);
    if (pc->kmeans_redo > 1) {
        float *c2 = xcalloc((size_t)(pc->k * d), sizeof(float));
        int32_t *l2 = xcalloc((size_t)n, sizeof(int32_t));
        for (int r = 1; r < pc->kmeans_redo; r++) {
            kc.seed = seed + 15486557ull * (uint64_t)r;
            double obj = ts_kmeans(x, n, d, &kc, c2, l2);
            if (obj < best) {
                best = obj;
                memcpy(centroids, c2, (size_t)(pc->k * d) * sizeof(float));
                memcpy(labels, l2, (size_t)n * sizeof(int32_t));
            }
        }
        free(l2);
        free(c2);
    }
    return best;
}

ts_status ts_protoclip_episode(ts_objective *o, ts_ctx *c, const float *img, const float *txt,
                               int64_t n, const float *ext, int64_t ext_dim, uint64_t seed,
                               ts_err *err) {
    proto_obj *s = impl_of(o);
    const ts_protoclip_cfg *cfg = &s->cfg;
    const int64_t K = cfg->k, P = cfg->proj_dim;
    TS_CHECK(img && txt && n >= 0, "protoclip episode: needs image and text embeddings");
    TS_CHECK(!ext || ext_dim >= 1, "protoclip episode: external features of width %lld",
             (long long)ext_dim);
    if (n < K)
        return ts_fail(err, TS_ERR_USAGE, "protoclip: an episode of %lld samples cannot make "
                       "%lld prototypes (k); lower k or make the episode larger",
                       (long long)n, (long long)K);
    if (ext) {
        for (int64_t i = 0; i < n * ext_dim; i++)
            if (!isfinite(ext[i]))
                return ts_fail(err, TS_ERR_DATA, "protoclip: the external teacher's features "
                               "of episode sample %lld hold a NaN or an infinity",
                               (long long)(i / ext_dim));
        if (!cfg->pbt) {
            ts_log(TS_LOG_WARN, "protoclip: the external teacher needs PBT (pbt: true); its "
                   "prototypes are not built");
            ext = NULL;
        }
    }
    const double t0 = omp_get_wtime();
    episode_clear(s);
    s->n = n;
    float *fi = xcalloc((size_t)(n * P), sizeof(float)); /* (n, P) projected image features */
    float *ft = xcalloc((size_t)(n * P), sizeof(float)); /* (n, P) projected text features */
    project(c, &s->img_head, img, n, s->image_dim, P, fi);
    project(c, &s->txt_head, txt, n, s->text_dim, P, ft);
    const double t1 = omp_get_wtime();

    for (int w = 0; w < (ext ? NLAB : LAB_EXT); w++)
        s->lab[w] = xcalloc((size_t)n, sizeof(int32_t));
    const int pr[] = { PR_IMG, PR_TXT, PR_IMG_FROM_TXT, PR_TXT_FROM_IMG, PR_EXT,
                       PR_IMG_FROM_EXT, PR_TXT_FROM_EXT };
    for (int q = 0; q < (ext ? 7 : 4); q++) {
        int i = pr[q];
        s->width[i] = i == PR_EXT ? ext_dim : P;
        s->proto[i] = xcalloc((size_t)(K * s->width[i]), sizeof(float));
    }
    /* Each space gets its own stream of seeds. */
    const int nt = c->nthreads;
    double ei = cluster(cfg, fi, n, P, seed, nt, s->proto[PR_IMG], s->lab[LAB_IMG]);
    double et = cluster(cfg, ft, n, P, seed ^ 0x9e3779b97f4a7c15ull, nt, s->proto[PR_TXT],
                        s->lab[LAB_TXT]);
    /* PBT: each modality's features averaged by the other's labels */
    ts_protoclip_pbt(fi, s->lab[LAB_TXT], n, P, K, s->proto[PR_IMG_FROM_TXT]);
    ts_protoclip_pbt(ft, s->lab[LAB_IMG], n, P, K, s->proto[PR_TXT_FROM_IMG]);
    if (ext) {
        cluster(cfg, ext, n, ext_dim, seed ^ 0x3c6ef372fe94f82bull, nt, s->proto[PR_EXT],
                s->lab[LAB_EXT]);
        ts_protoclip_pbt(fi, s->lab[LAB_EXT], n, P, K, s->proto[PR_IMG_FROM_EXT]);
        ts_protoclip_pbt(ft, s->lab[LAB_EXT], n, P, K, s->proto[PR_TXT_FROM_EXT]);
    }
    free(ft);
    free(fi);
    ts_log(TS_LOG_INFO, "protoclip episode: %lld samples, %lld prototypes per space%s; "
           "projection %.1f s, k-means and PBT %.1f s; k-means error image %.4g, text %.4g",
           (long long)n, (long long)K, ext ? " (and the external teacher's)" : "", t1 - t0,
           omp_get_wtime() - t1, ei / (double)n, et / (double)n);
    return TS_OK;
}

const int32_t *ts_protoclip_labels(const ts_objective *o, int which, int64_t *n) {
    const proto_obj *s = impl_of(o);
    TS_CHECK(which >= 0 && which < NLAB, "protoclip: no labels of kind %d", which);
    if (n) *n = s->lab[which] ? s->n : 0;
    return s->lab[which];
}

const float *ts_protoclip_prototypes(const ts_objective *o, int which, int64_t *width) {
    const proto_obj *s = impl_of(o);
    TS_CHECK(which >= 0 && which < NPROTO, "protoclip: no prototypes of kind %d", which);
    if (width) *width = s->width[which];
    return s->proto[which];
}
