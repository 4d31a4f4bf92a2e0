/* unit_protoclip.c: k-means, the .npy reader and ProtoCLIP's episodes.
 *
 * The parity rows (tests/rows/rows_protoclip.c) check the differentiable pieces against the
 * official code's formulas. This test checks what has no PyTorch twin: that ts_kmeans gives
 * the same clusters for a seed on one thread and on two, finds well-separated clusters, and
 * copes with clusters that fall empty; that .npy files of float32 and float16 read back and bad
 * ones are refused by name; and the objective end to end on synthetic features: an episode
 * stores labels and prototypes, the batch loss is finite, equals the plain functions fed with
 * those prototypes, and sends gradients into both heads and the learned scale.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tessera.h"

/* A random cluster in [0, nc) for each of n points. */
static void classes(ts_rng *r, int64_t n, int nc, int32_t *truth) {
    for (int64_t i = 0; i < n; i++) truth[i] = (int32_t)(ts_rng_next(r) % (uint64_t)nc);
}

/* x (n, d): point i near the center of cluster truth[i], nc random centers at radius 10,
 * noise sigma. */
static void blobs(ts_rng *r, int64_t n, int64_t d, int nc, float sigma, const int32_t *truth,
                  float *x) {
    float *ctr = malloc((size_t)(nc * d) * sizeof(float));
    for (int j = 0; j < nc; j++) {
        double s = 0;
        for (int64_t t = 0; t < d; t++) s += pow(ctr[j * d + t] = ts_rng_normal(r), 2);
        for (int64_t t = 0; t < d; t++) ctr[j * d + t] *= (float)(10.0 / sqrt(s));
    }
    for (int64_t i = 0; i < n; i++) {
        for (int64_t t = 0; t < d; t++)
            x[i * d + t] = ctr[truth[i] * d + t] + sigma * ts_rng_normal(r);
    }
    free(ctr);
}

/* 1 when a and b (n labels each) are the same partition: a bijection maps one onto the other. */
static int same_partition(const int32_t *a, const int32_t *b, int64_t n, int64_t k) {
    int32_t *ab = malloc((size_t)k * sizeof(int32_t)), *ba = malloc((size_t)k * sizeof(int32_t));
    for (int64_t j = 0; j < k; j++) ab[j] = ba[j] = -1;
    int ok = 1;
    for (int64_t i = 0; i < n && ok; i++) {
        if (ab[a[i]] < 0 && ba[b[i]] < 0) { ab[a[i]] = b[i]; ba[b[i]] = a[i]; }
        ok = ab[a[i]] == b[i] && ba[b[i]] == a[i];
    }
    free(ab);
    free(ba);
    return ok;
}

/* The same seed gives bit-identical centroids and labels on one thread and on two, with both
 * seedings, with all points and with the subset of 256 per centroid (k = 4). */
static void kmeans_deterministic(void **state) {
    (void)state;
    enum { N = 3000, D = 16 };
    float *x = malloc(N * D * sizeof(float));
    int32_t *truth = malloc(N * sizeof(int32_t));
    ts_rng r;
    ts_rng_seed(&r, 3);
    classes(&r, N, 25, truth);
    blobs(&r, N, D, 25, 3.0f, truth, x); /* overlapping blobs: many iterations move things */
    const int64_t ks[2] = { 40, 4 };
    for (int ki = 0; ki < 2; ki++)
        for (int init = 0; init < 2; init++) {
            const int64_t K = ks[ki];
            float *c1 = malloc((size_t)(K * D) * sizeof(float));
            float *c2 = malloc((size_t)(K * D) * sizeof(float));
            int32_t l1[N], l2[N];
            ts_kmeans_cfg cfg = { .k = K, .iters = 15, .init = (ts_kmeans_init)init,
                                  .seed = 99, .nthreads = 1 };
            double o1 = ts_kmeans(x, N, D, &cfg, c1, l1);
            cfg.nthreads = 2;
            double o2 = ts_kmeans(x, N, D, &cfg, c2, l2);
            assert_true(o1 == o2);
            assert_memory_equal(l1, l2, sizeof l1);
            assert_memory_equal(c1, c2, (size_t)(K * D) * sizeof(float));
            o2 = ts_kmeans(x, N, D, &cfg, c2, l2); /* and again */
            assert_true(o1 == o2);
            assert_memory_equal(l1, l2, sizeof l1);
            for (int64_t i = 0; i < N; i++) assert_true(l1[i] >= 0 && l1[i] < K);
            cfg.seed = 100; /* another seed starts elsewhere */
            double o3 = ts_kmeans(x, N, D, &cfg, c2, l2);
            assert_true(isfinite(o3) && o3 > 0);
            free(c1);
            free(c2);
        }
    free(truth);
    free(x);
}

/* Eight blobs of radius 10 and noise 0.1: k-means++ seeding finds each, and the centroids sit
 * on the blobs' means. */
static void kmeans_recovers_clusters(void **state) {
    (void)state;
    enum { N = 1600, D = 32, K = 8 };
    float *x = malloc(N * D * sizeof(float)), *c = malloc(K * D * sizeof(float));
    int32_t truth[N], lab[N];
    for (uint64_t seed = 1; seed <= 5; seed++) {
        ts_rng r;
        ts_rng_seed(&r, seed);
        classes(&r, N, K, truth);
        blobs(&r, N, D, K, 0.1f, truth, x);
        ts_kmeans_cfg cfg = { .k = K, .iters = 10, .init = TS_KMEANS_PLUSPLUS, .seed = seed };
        double obj = ts_kmeans(x, N, D, &cfg, c, lab);
        assert_true(same_partition(truth, lab, N, K));
        /* the error is the noise's: about N * D * 0.1^2 */
        assert_true(obj < 1.2 * N * D * 0.01);
        for (int j = 0; j < K; j++) {
            double mean[D] = { 0 }, cnt = 0, dd = 0;
            for (int64_t i = 0; i < N; i++)
                if (lab[i] == j) {
                    cnt++;
                    for (int t = 0; t < D; t++) mean[t] += x[i * D + t];
                }
            assert_true(cnt > 0);
            for (int t = 0; t < D; t++) dd += pow(mean[t] / cnt - c[j * D + t], 2);
            assert_true(sqrt(dd) < 1e-4);
        }
    }
    free(c);
    free(x);
}

/* Three values, twenty exact copies of each, into five clusters: every round leaves clusters
 * empty (copies cannot be told apart), and the splits must neither break the run nor leave a
 * value without its own cluster. Seeds that merge two values at first are split apart again:
 * the two nudged copies of a merged centroid are no longer equally far from the two values. */
static void kmeans_empty_clusters(void **state) {
    (void)state;
    enum { N = 60, D = 4, K = 5 };
    const float val[3][D] = { { 5, 0, 0, 1 }, { 0, 5, 1, 0 }, { -3, -3, 2, 2 } };
    float x[N * D], c[K * D], c2[K * D];
    int32_t lab[N], lab2[N];
    for (int i = 0; i < N; i++) memcpy(x + i * D, val[(i * 7) % 3], sizeof val[0]);
    for (int init = 0; init < 2; init++)
        for (uint64_t seed = 1; seed <= 20; seed++) {
            ts_kmeans_cfg cfg = { .k = K, .iters = 20, .init = (ts_kmeans_init)init,
                                  .seed = seed, .nthreads = 2 };
            double obj = ts_kmeans(x, N, D, &cfg, c, lab);
            for (int i = 0; i < K * D; i++) assert_true(isfinite(c[i]));
            int32_t of[3] = { -1, -1, -1 };
            for (int i = 0; i < N; i++) {
                int v = (i * 7) % 3;
                assert_true(lab[i] >= 0 && lab[i] < K);
                if (of[v] < 0) of[v] = lab[i];
                assert_int_equal(lab[i], of[v]);
            }
            assert_true(of[0] != of[1] && of[1] != of[2] && of[0] != of[2]);
            /* Each round ends with splits, so a value's centroid may be a copy nudged by
             * 1/1024 of its coordinates (|value|^2 <= 34). */
            assert_true(obj <= N * 34.0 / (1024.0 * 1024.0) * 1.01);
            cfg.nthreads = 1;
            ts_kmeans(x, N, D, &cfg, c2, lab2);
            assert_memory_equal(lab, lab2, sizeof lab);
            assert_memory_equal(c, c2, sizeof c);
        }
}

/* ---- .npy ---- */

static void write_file(const char *path, const void *a, size_t na, const void *b, size_t nb) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(a, 1, na, f), na);
    if (nb) assert_int_equal(fwrite(b, 1, nb, f), nb);
    fclose(f);
}

/* A version-1 file: magic, version, header length, the dict padded to 64 bytes in all. */
static size_t npy_header(char *buf, const char *descr, const char *shape, int fortran) {
    char dict[128];
    int n = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': %s, 'shape': %s, }",
                     descr, fortran ? "True" : "False", shape);
    int total = ((10 + n + 1 + 63) / 64) * 64, hl = total - 10;
    memcpy(buf, "\x93NUMPY\x01\x00", 8);
    buf[8] = (char)(hl & 0xff);
    buf[9] = (char)(hl >> 8);
    memcpy(buf + 10, dict, (size_t)n);
    memset(buf + 10 + n, ' ', (size_t)(hl - n - 1));
    buf[total - 1] = '\n';
    return (size_t)total;
}

static void npy_read(void **state) {
    (void)state;
    const char *path = TS_BINARY_DIR "/unit_protoclip_tmp.npy";
    char hdr[256];
    float *out;
    int64_t rows, cols;
    ts_err err = { 0 };

    const float f32[6] = { 1.5f, -2.0f, 0.25f, 3e-3f, 1e6f, -0.0f };
    write_file(path, hdr, npy_header(hdr, "<f4", "(2, 3)", 0), f32, sizeof f32);
    assert_int_equal(ts_npy_read_f32(path, &out, &rows, &cols, &err), TS_OK);
    assert_int_equal(rows, 2);
    assert_int_equal(cols, 3);
    assert_memory_equal(out, f32, sizeof f32);
    free(out);

    /* float16: 1, -2, 0.5, 65504 (the largest), 2^-24 (the smallest subnormal), 0 */
    const uint16_t f16[6] = { 0x3c00, 0xc000, 0x3800, 0x7bff, 0x0001, 0x0000 };
    const float want16[6] = { 1.0f, -2.0f, 0.5f, 65504.0f, 5.9604645e-8f, 0.0f };
    write_file(path, hdr, npy_header(hdr, "<f2", "(3, 2)", 0), f16, sizeof f16);
    assert_int_equal(ts_npy_read_f32(path, &out, &rows, &cols, &err), TS_OK);
    assert_int_equal(rows, 3);
    assert_int_equal(cols, 2);
    for (int i = 0; i < 6; i++) assert_true(out[i] == want16[i]);
    free(out);

    /* refused, each naming the file */
    struct { const char *descr, *shape; int fortran; size_t data; ts_status want; } bad[] = {
        { "<f4", "(2, 3)", 0, 5 * 4, TS_ERR_FORMAT },         /* truncated data */
        { "<f4", "(2, 3, 1)", 0, 6 * 4, TS_ERR_FORMAT },      /* 3-d */
        { "<f4", "(6,)", 0, 6 * 4, TS_ERR_FORMAT },           /* 1-d */
        { ">f4", "(2, 3)", 0, 6 * 4, TS_ERR_UNSUPPORTED },    /* big-endian */
        { "<i4", "(2, 3)", 0, 6 * 4, TS_ERR_UNSUPPORTED },    /* integers */
        { "<f4", "(2, 3)", 1, 6 * 4, TS_ERR_UNSUPPORTED },    /* Fortran order */
    };
    for (size_t b = 0; b < sizeof bad / sizeof bad[0]; b++) {
        float zeros[8] = { 0 };
        write_file(path, hdr, npy_header(hdr, bad[b].descr, bad[b].shape, bad[b].fortran),
                   zeros, bad[b].data);
        assert_int_equal(ts_npy_read_f32(path, &out, &rows, &cols, &err), bad[b].want);
        assert_null(out);
        assert_non_null(strstr(err.msg, path));
    }
    const char zip[] = "PK\x03\x04 not numpy";
    write_file(path, zip, sizeof zip - 1, NULL, 0);
    assert_int_equal(ts_npy_read_f32(path, &out, &rows, &cols, &err), TS_ERR_FORMAT);
    remove(path);
    assert_int_equal(ts_npy_read_f32(path, &out, &rows, &cols, &err), TS_ERR_IO);
}

/* ---- the objective ---- */

enum { EI = 12, ET = 10, EX = 6, NEP = 240, KP = 6, BATCH = 16 };

static ts_protoclip_cfg small_cfg(void) {
    ts_protoclip_cfg cfg = ts_protoclip_cfg_default();
    cfg.k = KP;
    cfg.kmeans_iters = 10;
    cfg.kmeans_redo = 2;
    cfg.proj_dim = 8;
    cfg.hidden_dim = 32;
    return cfg;
}

/* The head of the objective, found by its parameter names. */
static ts_protoclip_head head_of(ts_params *p, const char *prefix) {
    char name[128];
    ts_protoclip_head h = { .layers = 1 };
    const char *fc[2][2] = { { "0.weight", "0.bias" }, { "3.weight", "3.bias" } };
    for (int l = 0; l < 2; l++) {
        h.fc[l].w = ts_params_find(p, ts_pname(name, sizeof name, "%s.%s", prefix, fc[l][0]));
        h.fc[l].b = ts_params_find(p, ts_pname(name, sizeof name, "%s.%s", prefix, fc[l][1]));
        assert_non_null(h.fc[l].w);
        assert_non_null(h.fc[l].b);
    }
    h.bn_w[0] = ts_params_find(p, ts_pname(name, sizeof name, "%s.1.weight", prefix));
    h.bn_b[0] = ts_params_find(p, ts_pname(name, sizeof name, "%s.1.bias", prefix));
    h.bn_mean[0] = ts_params_find(p, ts_pname(name, sizeof name, "%s.1.running_mean", prefix));
    h.bn_var[0] = ts_params_find(p, ts_pname(name, sizeof name, "%s.1.running_var", prefix));
    assert_non_null(h.bn_var[0]);
    return h;
}

static double grad_norm(const ts_tensor *t) {
    double s = 0;
    if (!t->grad) return 0;
    for (int64_t i = 0; i < t->numel; i++) s += pow(ts_f32(t->grad)[i], 2);
    return sqrt(s);
}

static void episode_end_to_end(void **state) {
    (void)state;
    ts_protoclip_cfg cfg = small_cfg();
    ts_params *p = ts_params_new();
    ts_objective *o = ts_objective_protoclip_new(p, &cfg, EI, ET, 0.5f);
    ts_err err = { 0 };
    assert_int_equal(ts_params_finalize(p, 5, &err), TS_OK);
    assert_string_equal(o->type, "protoclip");
    assert_true(o->weight == 0.5f);
    const char *names[] = { "image_projection_head.0.weight", "image_projection_head.1.bias",
                            "image_projection_head.1.running_mean", "image_projection_head.3.bias",
                            "text_projection_head.0.bias", "text_projection_head.1.running_var",
                            "text_projection_head.3.weight", "logit_scale_proto" };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        assert_non_null(ts_params_find(p, names[i]));
    ts_tensor *ls = ts_params_find(p, "logit_scale_proto");
    assert_float_equal(ts_f32(ls)[0], logf(1.0f / 0.07f), 1e-6f);

    /* Episode features: six latent classes, the image and text of a sample from the same one. */
    float *img = malloc(NEP * EI * sizeof(float)), *txt = malloc(NEP * ET * sizeof(float));
    float *ext = malloc(NEP * EX * sizeof(float));
    int32_t cls[NEP];
    ts_rng r;
    ts_rng_seed(&r, 11);
    classes(&r, NEP, KP, cls);
    blobs(&r, NEP, EI, KP, 1.0f, cls, img);
    blobs(&r, NEP, ET, KP, 1.0f, cls, txt);
    blobs(&r, NEP, EX, KP, 0.1f, cls, ext);

    ts_ctx *c = ts_ctx_new(TS_CPU, 1 << 22, 7);
    int64_t n = -1;
    assert_null(ts_protoclip_labels(o, 0, &n));
    assert_int_equal(n, 0);
    /* too small an episode, and a teacher with a NaN, are refused */
    assert_int_equal(ts_protoclip_episode(o, c, img, txt, KP - 1, NULL, 0, 1, &err),
                     TS_ERR_USAGE);
    assert_non_null(strstr(err.msg, "prototypes"));
    ext[7] = NAN;
    assert_int_equal(ts_protoclip_episode(o, c, img, txt, NEP, ext, EX, 1, &err), TS_ERR_DATA);
    ext[7] = 0.0f;

    assert_int_equal(ts_protoclip_episode(o, c, img, txt, NEP, ext, EX, 1, &err), TS_OK);
    assert_int_equal(ts_arena_used(c->step), 0); /* the caller's arena is left alone */
    const int32_t *lab[3];
    for (int w = 0; w < 3; w++) {
        lab[w] = ts_protoclip_labels(o, w, &n);
        assert_non_null(lab[w]);
        assert_int_equal(n, NEP);
        for (int64_t i = 0; i < NEP; i++) assert_true(lab[w][i] >= 0 && lab[w][i] < KP);
    }
    int64_t width;
    for (int w = 0; w < 7; w++) {
        const float *pr = ts_protoclip_prototypes(o, w, &width);
        assert_non_null(pr);
        assert_int_equal(width, w == 2 ? EX : cfg.proj_dim);
        for (int64_t i = 0; i < KP * width; i++) assert_true(isfinite(pr[i]));
    }
    /* The same seed gives the same episode. */
    int32_t keep[NEP];
    memcpy(keep, lab[0], sizeof keep);
    assert_int_equal(ts_protoclip_episode(o, c, img, txt, NEP, ext, EX, 1, &err), TS_OK);
    assert_memory_equal(keep, ts_protoclip_labels(o, 0, NULL), sizeof keep);

    /* A batch of episode positions. */
    int64_t pos[BATCH];
    float bi[BATCH * EI], bt[BATCH * ET];
    for (int i = 0; i < BATCH; i++) {
        pos[i] = (int64_t)(ts_rng_next(&r) % NEP);
        memcpy(bi + i * EI, img + pos[i] * EI, EI * sizeof(float));
        memcpy(bt + i * ET, txt + pos[i] * ET, ET * sizeof(float));
    }
    ts_batch batch = { .n = BATCH, .index = pos };
    ts_embeds e = { .batch = &batch, .image = ts_from_f32(c, 2, TS_SHAPE(BATCH, EI), bi),
                    .text = ts_from_f32(c, 2, TS_SHAPE(BATCH, ET), bt) };
    ts_metrics m = { 0 };
    c->training = 0; /* eval-mode norms, so the recomputation below sees the same statistics */
    ts_params_zero_grad(p);
    ts_tensor *loss = o->loss(c, o, &e, &m);
    assert_int_equal(loss->numel, 1);
    assert_true(isfinite(ts_f32(loss)[0]) && ts_f32(loss)[0] > 0);
    ts_backward(c, loss);
    const char *trained[] = { "image_projection_head.0.weight", "image_projection_head.3.bias",
                              "text_projection_head.0.weight", "text_projection_head.3.weight",
                              "logit_scale_proto" };
    for (size_t i = 0; i < sizeof trained / sizeof trained[0]; i++) {
        double g = grad_norm(ts_params_find(p, trained[i]));
        assert_true(isfinite(g) && g > 0);
    }
    int found = 0;
    for (int i = 0; i < m.n; i++) {
        found += !strcmp(m.name[i], "loss_proto") || !strcmp(m.name[i], "loss_proto_external");
        assert_true(isfinite(m.value[i]));
    }
    assert_int_equal(found, 2);

    /* The same loss from the plain functions and the stored prototypes: image features against
     * the image prototypes translated from the text clusters, teacher the text centroids with
     * the text labels; the other way round; the teacher's hard losses. */
    ts_protoclip_head hi = head_of(p, "image_projection_head"),
                      ht = head_of(p, "text_projection_head");
    ts_tensor *fi = ts_protoclip_head_forward(c, &hi, e.image);
    ts_tensor *ft = ts_protoclip_head_forward(c, &ht, e.text);
    ts_tensor *lt[3];
    for (int w = 0; w < 3; w++) {
        lt[w] = ts_new(c, TS_I32, 1, TS_SHAPE(BATCH));
        for (int i = 0; i < BATCH; i++) ts_i32(lt[w])[i] = ts_protoclip_labels(o, w, NULL)[pos[i]];
    }
    const int64_t P = cfg.proj_dim;
    ts_tensor *pr[7];
    for (int w = 0; w < 7; w++) {
        const float *d = ts_protoclip_prototypes(o, w, &width);
        pr[w] = ts_from_f32(c, 2, TS_SHAPE(KP, width), d);
    }
    const float T = cfg.target_temperature;
    double l_i2t = ts_f32(ts_protoclip_proto_loss(c, fi, pr[3], pr[1], lt[1], ls, T))[0];
    double l_t2i = ts_f32(ts_protoclip_proto_loss(c, ft, pr[4], pr[0], lt[0], ls, T))[0];
    double l_i2e = ts_f32(ts_protoclip_proto_loss(c, fi, pr[5], NULL, lt[2], ls, -1.0f))[0];
    double l_t2e = ts_f32(ts_protoclip_proto_loss(c, ft, pr[6], NULL, lt[2], ls, -1.0f))[0];
    double want = cfg.w_proto * (l_i2t + l_t2i) / 2 + cfg.w_external * (l_i2e + l_t2e) / 2;
    assert_float_equal(ts_f32(loss)[0], want, 1e-5 * (1 + fabs(want)));

    /* PBT: the image prototypes from the text clusters are the means of the projected image
     * features of the whole episode grouped by text label. */
    ts_ctx_reset(c);
    c->grad_enabled = 0;
    ts_tensor *all = ts_protoclip_head_forward(c, &hi, ts_from_f32(c, 2, TS_SHAPE(NEP, EI), img));
    float want_pr[KP * 8];
    ts_protoclip_pbt(ts_f32(all), ts_protoclip_labels(o, 1, NULL), NEP, P, KP, want_pr);
    const float *got = ts_protoclip_prototypes(o, 3, NULL);
    for (int i = 0; i < KP * P; i++) assert_float_equal(got[i], want_pr[i], 1e-5f);
    c->grad_enabled = 1;

    /* The scale is clamped after a step, as the official loop does. */
    ts_f32(ls)[0] = 7.0f;
    o->after_step(o);
    assert_float_equal(ts_f32(ls)[0], logf(100.0f), 1e-6f);
    ts_f32(ls)[0] = -1.0f;
    o->after_step(o);
    assert_float_equal(ts_f32(ls)[0], 0.0f, 0.0f);

    ts_ctx_free(c);
    ts_objective_free(o);
    ts_params_free(p);
    free(ext);
    free(txt);
    free(img);
}

/* In training mode the heads' norms use the batch's statistics and update their running ones;
 * the episode's pass uses (and keeps) the running ones. */
static void episode_eval_mode(void **state) {
    (void)state;
    ts_protoclip_cfg cfg = small_cfg();
    cfg.kmeans_redo = 1;
    ts_params *p = ts_params_new();
    ts_objective *o = ts_objective_protoclip_new(p, &cfg, EI, ET, 1.0f);
    ts_err err = { 0 };
    assert_int_equal(ts_params_finalize(p, 5, &err), TS_OK);
    float *img = malloc(NEP * EI * sizeof(float)), *txt = malloc(NEP * ET * sizeof(float));
    int32_t cls[NEP];
    ts_rng r;
    ts_rng_seed(&r, 2);
    classes(&r, NEP, KP, cls);
    blobs(&r, NEP, EI, KP, 1.0f, cls, img);
    blobs(&r, NEP, ET, KP, 1.0f, cls, txt);
    ts_ctx *c = ts_ctx_new(TS_CPU, 1 << 22, 7);
    c->training = 1;
    ts_tensor *rm = ts_params_find(p, "image_projection_head.1.running_mean");
    float before[32];
    memcpy(before, ts_f32(rm), sizeof before);
    assert_int_equal(ts_protoclip_episode(o, c, img, txt, NEP, NULL, 0, 3, &err), TS_OK);
    assert_memory_equal(before, ts_f32(rm), sizeof before);
    assert_null(ts_protoclip_labels(o, 2, NULL));
    assert_null(ts_protoclip_prototypes(o, 5, NULL));
    int64_t pos[BATCH];
    for (int i = 0; i < BATCH; i++) pos[i] = i;
    ts_batch batch = { .n = BATCH, .index = pos };
    ts_embeds e = { .batch = &batch, .image = ts_from_f32(c, 2, TS_SHAPE(BATCH, EI), img),
                    .text = ts_from_f32(c, 2, TS_SHAPE(BATCH, ET), txt) };
    ts_tensor *loss = o->loss(c, o, &e, NULL);
    assert_true(isfinite(ts_f32(loss)[0]));
    int moved = 0;
    for (int i = 0; i < 32; i++) moved += before[i] != ts_f32(rm)[i];
    assert_true(moved > 0);
    ts_ctx_free(c);
    ts_objective_free(o);
    ts_params_free(p);
    free(txt);
    free(img);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(kmeans_deterministic),
        cmocka_unit_test(kmeans_recovers_clusters),
        cmocka_unit_test(kmeans_empty_clusters),
        cmocka_unit_test(npy_read),
        cmocka_unit_test(episode_end_to_end),
        cmocka_unit_test(episode_eval_mode),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
