/* unit_action.c: the numerics of action/: normalisation, the bins and FAST tokenizers, the
 * diffusion schedule and samplers, pose normalisation and tokens, and the action heads learning a
 * small conditional task.
 *
 *   unit_action                      the unit tests
 *   unit_action --diffusers FILE     alphas_cumprod (to 1e-6), DDIM and DDPM steps (to 1e-5 of
 *                                    max(1, |value|)) against diffusers' outputs saved by
 *                                    tests/parity/diffusion_ref.py
 *   unit_action --heads FILE         the three heads' outputs and gradients (observation tokens
 *                                    and every parameter) against tests/parity/heads_ref.py's
 *                                    PyTorch rendering, relative error < 1e-4
 *   unit_action --robosuite DIR      bins and FAST round trips on the real robosuite demos,
 *                                    FAST's reconstruction error and compression reported
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

#include "action.h"
#include "loaders.h"
#include "tessera.h"

/* ---- normalisation ---- */

static void minmax_maps_to_unit_range_and_back(void **state) {
    (void)state;
    /* column 0: 0..9, column 1: constant 5, column 2: -3..15 step 2 */
    float x[30], y[30];
    for (int i = 0; i < 10; i++) {
        x[i * 3] = (float)i;
        x[i * 3 + 1] = 5.0f;
        x[i * 3 + 2] = -3.0f + 2.0f * (float)i;
    }
    ts_normalizer nz;
    ts_norm_fit(&nz, TS_NORM_MINMAX, x, 10, 3);
    memcpy(y, x, sizeof x);
    ts_norm_apply(&nz, y, 10);
    assert_float_equal(y[0], -1.0f, 1e-6);
    assert_float_equal(y[27], 1.0f, 1e-6);
    assert_float_equal(y[2], -1.0f, 1e-6);
    assert_float_equal(y[29], 1.0f, 1e-6);
    assert_float_equal(y[3 * 3], -1.0f + 2.0f * 3.0f / 9.0f, 1e-6);
    for (int i = 0; i < 10; i++) assert_float_equal(y[i * 3 + 1], 0.0f, 0.0); /* constant */
    ts_norm_invert(&nz, y, 10);
    for (int i = 0; i < 30; i++) assert_float_equal(y[i], x[i], 1e-5);
    ts_norm_free(&nz);
}

static void meanstd_and_quantile(void **state) {
    (void)state;
    /* 0..100 in one column: mean 50, population std sqrt(850); 1st and 99th percentiles are
     * exactly 1 and 99 (positions 1.0 and 99.0 of the sorted values) */
    float x[101], y[101];
    for (int i = 0; i < 101; i++) x[100 - i] = (float)i; /* unsorted on purpose */
    ts_normalizer nz;
    ts_norm_fit(&nz, TS_NORM_MEANSTD, x, 101, 1);
    memcpy(y, x, sizeof x);
    ts_norm_apply(&nz, y, 101);
    assert_float_equal(y[50], 0.0f, 1e-6);
    assert_float_equal(y[0], (100.0f - 50.0f) / sqrtf(850.0f), 1e-5);
    ts_norm_invert(&nz, y, 101);
    for (int i = 0; i < 101; i++) assert_float_equal(y[i], x[i], 1e-4);
    ts_norm_free(&nz);

    ts_norm_fit(&nz, TS_NORM_QUANTILE, x, 101, 1);
    memcpy(y, x, sizeof x);
    ts_norm_apply(&nz, y, 101);
    for (int i = 0; i < 101; i++) {
        float v = x[i], want = (v - 1.0f) / 98.0f * 2.0f - 1.0f;
        want = want < -1 ? -1 : want > 1 ? 1 : want; /* clipped outside the percentiles */
        assert_float_equal(y[i], want, 1e-5);
    }
    /* inside the percentiles the inverse gives the value back */
    float z = 0.5f;
    ts_norm_invert(&nz, &z, 1);
    assert_float_equal(z, 1.0f + 0.75f * 98.0f, 1e-4);
    ts_norm_free(&nz);

    /* a non-integer percentile position: numpy.percentile([0, 10, 20, 30], 1) = 0.3 */
    float w[4] = { 30, 0, 20, 10 };
    ts_norm_fit(&nz, TS_NORM_QUANTILE, w, 4, 1);
    float lo = -1.0f, hi = 1.0f;
    ts_norm_invert(&nz, &lo, 1);
    ts_norm_invert(&nz, &hi, 1);
    assert_float_equal(lo, 0.3f, 1e-5);
    assert_float_equal(hi, 29.7f, 1e-4);
    ts_norm_free(&nz);
}

/* ---- tokenizers ---- */

static void bins_round_trip_within_half_a_bin(void **state) {
    (void)state;
    int H = 8, A = 3, bins = 256;
    ts_act_tok *t = ts_act_tok_bins_new(H, A, bins);
    ts_rng r;
    ts_rng_seed(&r, 1);
    float x[24], y[24];
    int32_t ids[24];
    float worst = 0;
    for (int trial = 0; trial < 200; trial++) {
        for (int i = 0; i < H * A; i++) x[i] = 2.0f * ts_rng_uniform(&r) - 1.0f;
        if (trial == 0) x[0] = -1.0f, x[1] = 1.0f, x[2] = 0.0f;
        assert_int_equal(t->encode(t, x, ids), H * A);
        for (int i = 0; i < H * A; i++) assert_true(ids[i] >= 0 && ids[i] < bins);
        ts_err err = { 0 };
        assert_int_equal(t->decode(t, ids, H * A, y, &err), TS_OK);
        for (int i = 0; i < H * A; i++) {
            float e = fabsf(x[i] - y[i]);
            worst = e > worst ? e : worst;
        }
    }
    assert_true(worst <= 1.0f / bins + 1e-6f);
    assert_true(worst > 0.5f / bins); /* the bins are not finer than claimed */
    /* out of range values clip; a bad id is an error naming it */
    x[0] = 7.0f;
    t->encode(t, x, ids);
    assert_int_equal(ids[0], bins - 1);
    ids[3] = bins;
    ts_err err = { 0 };
    assert_int_equal(t->decode(t, ids, H * A, y, &err), TS_ERR_DATA);
    assert_non_null(strstr(err.msg, "id 256 at 3"));
    ts_act_tok_free(t);
}

/* The orthonormal DCT-II of n values, in double, written out independently of the tokenizer. */
static void dct2(const float *x, int n, int stride, double *out) {
    for (int k = 0; k < n; k++) {
        double s = 0;
        for (int t = 0; t < n; t++) s += x[t * stride] * cos(M_PI * (t + 0.5) * k / n);
        out[k] = s * (k ? sqrt(2.0 / n) : sqrt(1.0 / n));
    }
}

/* A smooth random chunk: a few low-frequency sinusoids per dimension. */
static void smooth_chunk(ts_rng *r, int H, int A, float *x) {
    for (int a = 0; a < A; a++) {
        float p0 = ts_rng_uniform(r) * 6.28f, amp = 0.2f + 0.6f * ts_rng_uniform(r);
        float f = 0.3f + ts_rng_uniform(r) * 1.5f, off = ts_rng_uniform(r) * 0.4f - 0.2f;
        for (int t = 0; t < H; t++)
            x[t * A + a] = off + amp * sinf(p0 + f * 6.28f * (float)t / (float)H);
    }
}

/* decode(encode(x)) must be the inverse DCT of the rounded scaled coefficients, i.e. each
 * coefficient of the reconstruction is round(c * scale) / scale of the original's. */
static double check_fast_exact(const ts_act_tok *t, float scale, const float *x, int *nids) {
    int H = t->horizon, A = t->dim;
    int32_t *ids = malloc((size_t)t->max_len * sizeof *ids);
    float *y = malloc((size_t)H * A * sizeof *y);
    double *cx = malloc((size_t)H * sizeof *cx), *cy = malloc((size_t)H * sizeof *cy);
    int n = t->encode(t, x, ids);
    assert_true(n >= 1 && n <= t->max_len);
    for (int i = 0; i < n; i++) assert_true(ids[i] >= 0 && ids[i] < t->vocab);
    ts_err err = { 0 };
    assert_int_equal(t->decode(t, ids, n, y, &err), TS_OK);
    double worst = 0;
    for (int a = 0; a < A; a++) {
        dct2(x + a, H, A, cx); /* dimension a: every A-th value from a */
        dct2(y + a, H, A, cy);
        for (int k = 0; k < H; k++) {
            double want = nearbyint(cx[k] * scale) / scale;
            assert_true(fabs(cy[k] - want) < 1e-4);
        }
        for (int t2 = 0; t2 < H; t2++) {
            double e = fabs((double)x[t2 * A + a] - y[t2 * A + a]);
            worst = e > worst ? e : worst;
        }
    }
    *nids = n;
    free(ids);
    free(y);
    free(cx);
    free(cy);
    return worst;
}

static void fast_round_trip_is_exact_and_compresses(void **state) {
    (void)state;
    int H = 16, A = 4, N = 400;
    float *chunks = malloc((size_t)N * H * A * sizeof *chunks);
    ts_rng r;
    ts_rng_seed(&r, 7);
    for (int i = 0; i < N; i++) smooth_chunk(&r, H, A, chunks + i * H * A);
    ts_fast_cfg cfg = ts_fast_cfg_default();
    cfg.vocab = 512;
    ts_act_tok *t;
    ts_err err = { 0 };
    assert_int_equal(ts_act_tok_fast_train(&t, chunks, N, H, A, &cfg, &err), TS_OK);
    assert_true(t->vocab <= 512 && t->vocab > 100);
    long total = 0;
    double worst = 0;
    /* held-out chunks of the same kind */
    float x[64];
    for (int i = 0; i < 100; i++) {
        smooth_chunk(&r, H, A, x);
        int n;
        double e = check_fast_exact(t, cfg.scale, x, &n);
        worst = e > worst ? e : worst;
        total += n;
    }
    /* each coefficient is off by at most 0.5 / scale; the orthonormal inverse keeps the energy,
     * so a value is off by at most sqrt(H) * 0.5 / scale */
    assert_true(worst <= sqrt((double)H) * 0.5 / cfg.scale + 1e-6);
    double ratio = (double)(100 * H * A) / (double)total;
    printf("FAST on smooth chunks: %.2f ids per chunk of %d values (compression %.2fx), max "
           "error %.4f\n", (double)total / 100, H * A, ratio, worst);
    assert_true(ratio > 2.0);
    /* save and load: the same ids */
    char *text = ts_act_tok_fast_save(t);
    ts_act_tok *u;
    assert_int_equal(ts_act_tok_fast_load(&u, text, "saved", &err), TS_OK);
    int32_t a[64], b[64];
    int na = t->encode(t, x, a), nb = u->encode(u, x, b);
    assert_int_equal(na, nb);
    assert_memory_equal(a, b, (size_t)na * sizeof *a);
    /* a truncated sequence does not decode, and says why */
    float y[64];
    assert_int_equal(t->decode(t, a, na - 1, y, &err), TS_ERR_DATA);
    assert_non_null(strstr(err.msg, "coefficients"));
    ts_act_tok *bad = NULL;
    assert_int_equal(ts_act_tok_fast_load(&bad, "tessera-fast 1\nhorizon 4\n", "bad", &err),
                     TS_ERR_FORMAT);
    assert_null(bad);
    free(text);
    ts_act_tok_free(u);
    ts_act_tok_free(t);
    free(chunks);
}

/* ---- diffusion ---- */

static void schedule_is_squaredcos_cap_v2(void **state) {
    (void)state;
    ts_diffusion d;
    ts_diffusion_init(&d, 100, TS_PRED_EPSILON, 1);
    /* the closed form: alphas_cumprod[t] = prod_{i<=t} (1 - min(1 - ab((i+1)/N)/ab(i/N), 0.999)) */
    double acc = 1.0;
    for (int i = 0; i < 100; i++) {
        double f0 = cos((i / 100.0 + 0.008) / 1.008 * M_PI / 2), f1 = cos(((i + 1) / 100.0 + 0.008)
                                                                          / 1.008 * M_PI / 2);
        double beta = 1.0 - (f1 * f1) / (f0 * f0);
        acc *= 1.0 - (beta < 0.999 ? beta : 0.999);
        assert_true(fabs(d.alphas_cumprod[i] - acc) < 1e-6);
    }
    int32_t ts[10];
    ts_diffusion_ddim_timesteps(&d, 10, ts);
    assert_int_equal(ts[0], 90);
    assert_int_equal(ts[9], 0);
    /* DDIM with the true noise at every step recovers x0 (within clipping) */
    float x0[6] = { 0.5f, -0.25f, 0.9f, -0.8f, 0.0f, 0.3f }, eps[6], x[6];
    ts_rng r;
    ts_rng_seed(&r, 3);
    for (int i = 0; i < 6; i++) eps[i] = ts_rng_normal(&r);
    int32_t t90[1] = { 90 };
    ts_diffusion_add_noise(&d, x0, eps, t90, 1, 6, x);
    for (int s = 0; s < 10; s++) {
        /* the epsilon that takes the current x back to x0 */
        float a = (float)d.alphas_cumprod[ts[s]], e[6];
        for (int i = 0; i < 6; i++) e[i] = (x[i] - sqrtf(a) * x0[i]) / sqrtf(1 - a);
        ts_diffusion_ddim_step(&d, 10, ts[s], e, x, 6);
    }
    for (int i = 0; i < 6; i++) assert_float_equal(x[i], x0[i], 1e-4);
    ts_diffusion_free(&d);
}

/* ---------------------------------------------------------------------------------------- */
/* Poses                                                                                     */

static void test_pose(void **state) {
    (void)state;
    enum { T = 4, K = 6, D = 3, ROOT = 2 };
    ts_rng r;
    ts_rng_seed(&r, 21);
    float pose[T * K * D], out[T * K * D], root[T * D], scale[T];
    for (int i = 0; i < T * K * D; i++) pose[i] = 3.0f * ts_rng_normal(&r) + 10.0f;
    for (int i = 0; i < K * D; i++) pose[3 * K * D + i] = pose[3 * K * D + i % D]; /* all equal */
    ts_pose_normalize(pose, T, K, D, ROOT, out, root, scale);
    for (int t = 0; t < T; t++) {
        double far = 0;
        for (int j = 0; j < D; j++) assert_true(out[(t * K + ROOT) * D + j] == 0.0f);
        for (int k = 0; k < K; k++) {
            double s = 0;
            for (int j = 0; j < D; j++) {
                float v = out[(t * K + k) * D + j];
                assert_true(v >= -1.0f && v <= 1.0f);
                s += (double)v * v;
                /* out * scale + root gives the pose back */
                assert_true(fabsf(v * scale[t] + root[t * D + j] - pose[(t * K + k) * D + j]) <
                            1e-4f);
            }
            far = fmax(far, sqrt(s));
        }
        if (t == 3) {
            assert_true(far == 0.0 && scale[t] == 1.0f);
        } else {
            assert_true(fabs(far - 1.0) < 1e-6);
        }
    }
    /* tokens round trip within half a cell */
    int32_t ids[T * K * D];
    float back[T * K * D];
    ts_pose_tokenize(out, T * K * D, 100, ids);
    ts_pose_detokenize(ids, T * K * D, 100, back);
    for (int i = 0; i < T * K * D; i++) {
        assert_true(ids[i] >= 0 && ids[i] < 100);
        assert_true(fabsf(back[i] - out[i]) <= 0.01f + 1e-6f);
    }
    /* in place, 2-d, NULL outputs */
    float p2[2 * 3 * 2] = {0, 0, 3, 4, -6, 8, 1, 1, 1, 2, 1, 1};
    ts_pose_normalize(p2, 2, 3, 2, 0, p2, NULL, NULL);
    const float want[12] = {0, 0, 0.3f, 0.4f, -0.6f, 0.8f, 0, 0, 0, 1, 0, 0};
    for (int i = 0; i < 12; i++) assert_true(fabsf(p2[i] - want[i]) < 1e-6f);
}


/* ---- heads ---- */

/* Four fixed chunks; the condition (one token of 8) says which; each head must learn to output
 * the right one. */
#define CH 8
#define CA 2
static void target_chunk(int k, float *out) {
    for (int t = 0; t < CH; t++) {
        float u = (float)t / (CH - 1);
        out[t * CA] = k == 0 ? u * 1.6f - 0.8f : k == 1 ? 0.8f - 1.6f * u : k == 2 ? 0.5f : -0.5f;
        out[t * CA + 1] = k == 2 ? 0.9f * u - 0.6f : k == 3 ? 0.6f - 0.9f * u : 0.1f * (float)k;
    }
}

static double train_head(ts_head_kind kind, const ts_act_tok *tok, int steps, double *pred_err,
                         int *deterministic) {
    ts_params *p = ts_params_new();
    ts_head_cfg cfg = { .kind = kind, .horizon = CH, .action_dim = CA, .cond_dim = 8, .width = 32,
                        .depth = 2, .heads = 2, .mlp_ratio = 2.0f, .dropout = 0.0f,
                        .train_steps = 100, .infer_steps = 10, .prediction = TS_PRED_EPSILON,
                        .tok = tok };
    ts_action_head *h = ts_action_head_new(p, "head", &cfg);
    ts_err err = { 0 };
    assert_int_equal(ts_params_finalize(p, 5, &err), TS_OK);
    ts_optim_cfg oc = { TS_OPTIM_ADAMW, 3e-3f, 0.9f, 0.999f, 1e-8f, 0.0f, 0.0f };
    ts_optim o;
    ts_optim_init(&o, &oc);
    ts_ctx *c = ts_ctx_new(TS_CPU, 1 << 22, 9);
    c->nthreads = 1;
    int B = 32;
    float cond[32 * 8], act[32 * CH * CA];
    double last = 0;
    for (int s = 0; s < steps; s++) {
        for (int i = 0; i < B; i++) {
            int k = (i + s) % 4;
            for (int j = 0; j < 8; j++) cond[i * 8 + j] = j == k ? 1.0f : 0.0f;
            target_chunk(k, act + i * CH * CA);
        }
        ts_tensor *ct = ts_from_f32(c, 3, TS_SHAPE(B, 1, 8), cond);
        ts_tensor *at = ts_from_f32(c, 3, TS_SHAPE(B, CH, CA), act);
        ts_params_zero_grad(p);
        ts_tensor *loss = ts_action_head_loss(c, h, ct, at, NULL, NULL);
        last = ts_f32(loss)[0];
        ts_backward(c, loss);
        float lr = 3e-3f * (s < 20 ? (float)(s + 1) / 20.0f : 1.0f);
        ts_optim_step(&o, p, lr);
        ts_ctx_reset(c);
    }
    /* predictions of the four conditions */
    for (int k = 0; k < 4; k++)
        for (int j = 0; j < 8; j++) cond[k * 8 + j] = j == k ? 1.0f : 0.0f;
    float out[4 * CH * CA], again[4 * CH * CA], want[CH * CA];
    ts_tensor *ct = ts_from_f32(c, 3, TS_SHAPE(4, 1, 8), cond);
    ts_action_head_predict(c, h, ct, 77, out, NULL);
    ct = ts_from_f32(c, 3, TS_SHAPE(4, 1, 8), cond);
    ts_action_head_predict(c, h, ct, 77, again, NULL);
    *deterministic = !memcmp(out, again, sizeof out);
    double se = 0;
    for (int k = 0; k < 4; k++) {
        target_chunk(k, want);
        for (int i = 0; i < CH * CA; i++) {
            double e = out[k * CH * CA + i] - want[i];
            se += e * e;
        }
    }
    *pred_err = sqrt(se / (4 * CH * CA));
    ts_ctx_free(c);
    ts_action_head_free(h);
    ts_params_free(p);
    return last;
}

static void heads_learn_a_conditional_chunk(void **state) {
    (void)state;
    double rmse;
    int det;
    double loss = train_head(TS_HEAD_L1, NULL, 300, &rmse, &det);
    printf("l1 head: loss %.4f, prediction RMSE %.4f\n", loss, rmse);
    assert_true(rmse < 0.05 && det);
    ts_act_tok *bins = ts_act_tok_bins_new(CH, CA, 64);
    loss = train_head(TS_HEAD_TOKENS, bins, 300, &rmse, &det);
    printf("tokens head (64 bins): loss %.4f, prediction RMSE %.4f\n", loss, rmse);
    assert_true(rmse < 0.05 && det); /* half a bin is 1/64 */
    ts_act_tok_free(bins);
    loss = train_head(TS_HEAD_DIFFUSION, NULL, 600, &rmse, &det);
    printf("diffusion head: loss %.4f, prediction RMSE %.4f (DDIM, 10 steps)\n", loss, rmse);
    assert_true(rmse < 0.1);
    assert_true(det); /* the same seed, the same actions */
}

/* ---- against diffusers ---- */

static int diffusers_parity(const char *path) {
    ts_st_file *f;
    ts_err err = { 0 };
    if (ts_st_read(path, &f, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    int bad = 0;
    double worst = 0;
    float *buf = malloc(1 << 20), *ref = malloc(1 << 20);
#define GET(name, dst)                                                                        \
    do {                                                                                       \
        const ts_st_entry *e_ = ts_st_find(f, name);                                           \
        if (!e_) {                                                                             \
            fprintf(stderr, "missing %s\n", name);                                             \
            return 1;                                                                          \
        }                                                                                      \
        ts_st_entry_to_f32(e_, dst);                                                           \
    } while (0)
    int Ns[2] = { 100, 50 };
    for (int q = 0; q < 2; q++) {
        for (int pred = 0; pred < 2; pred++) {
            ts_diffusion d;
            ts_diffusion_init(&d, Ns[q], pred ? TS_PRED_SAMPLE : TS_PRED_EPSILON, 1);
            char name[96];
            snprintf(name, sizeof name, "N%d.alphas_cumprod", Ns[q]);
            GET(name, ref);
            for (int i = 0; i < Ns[q]; i++) {
                double e = fabs(d.alphas_cumprod[i] - ref[i]);
                worst = e > worst ? e : worst;
                bad |= e > 1e-6;
            }
            float x[64], mo[64], out[64];
            snprintf(name, sizeof name, "N%d.x", Ns[q]);
            GET(name, x);
            snprintf(name, sizeof name, "N%d.model_out", Ns[q]);
            GET(name, mo);
            int k = 10;
            int32_t ts[10];
            ts_diffusion_ddim_timesteps(&d, k, ts);
            for (int s = 0; s < k; s++) {
                memcpy(out, x, sizeof out);
                ts_diffusion_ddim_step(&d, k, ts[s], mo, out, 64);
                snprintf(name, sizeof name, "N%d.%s.ddim.%d", Ns[q], pred ? "sample" : "epsilon",
                         ts[s]);
                GET(name, ref);
                double kw = 0;
                for (int i = 0; i < 64; i++) {
                    double e = fabs(out[i] - ref[i]) / (fabs(ref[i]) > 1 ? fabs(ref[i]) : 1.0);
                    kw = e > kw ? e : kw;
                }
                if (kw > 1e-5) fprintf(stderr, "%s: %.3g\n", name, kw);
                worst = kw > worst ? kw : worst;
                bad |= kw > 1e-5;
            }
            int tt[4] = { Ns[q] - 1, Ns[q] / 2, 3, 0 };
            for (int s = 0; s < 4; s++) {
                memcpy(out, x, sizeof out);
                ts_diffusion_ddpm_step(&d, tt[s], mo, out, 64, NULL);
                snprintf(name, sizeof name, "N%d.%s.ddpm_mean.%d", Ns[q],
                         pred ? "sample" : "epsilon", tt[s]);
                GET(name, ref);
                double kw = 0;
                for (int i = 0; i < 64; i++) {
                    double e = fabs(out[i] - ref[i]) / (fabs(ref[i]) > 1 ? fabs(ref[i]) : 1.0);
                    kw = e > kw ? e : kw;
                }
                if (kw > 1e-5) fprintf(stderr, "%s: %.3g\n", name, kw);
                worst = kw > worst ? kw : worst;
                bad |= kw > 1e-5;
            }
            ts_diffusion_free(&d);
        }
    }
    printf("diffusers parity: worst difference %.3g (%s)\n", worst, bad ? "FAIL" : "ok");
    free(buf);
    free(ref);
    ts_st_close(f);
    return bad;
}

/* ---- the heads against a PyTorch rendering ---- */

/* max |a - b| / max |b| over n values */
static double rel_err(const float *a, const float *b, int64_t n) {
    double d = 0, m = 0;
    for (int64_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - b[i]);
        d = e > d ? e : d;
        m = fabs(b[i]) > m ? fabs(b[i]) : m;
    }
    return m > 0 ? d / m : d;
}

/* The reference's f32 tensor NAME into a new tensor of c (NULL and a message if absent). */
static ts_tensor *ref_tensor(ts_ctx *c, ts_st_file *f, const char *name) {
    const ts_st_entry *e = ts_st_find(f, name);
    if (!e) {
        fprintf(stderr, "the reference has no %s\n", name);
        return NULL;
    }
    int64_t shape[8];
    for (int d = 0; d < e->ndim; d++) shape[d] = e->shape[d];
    ts_tensor *t = ts_new_f32(c, e->ndim, shape);
    ts_st_entry_to_f32(e, ts_f32(t));
    return t;
}

/* FiLM and spatial-softmax keypoints against the reference's ObsEncoder. */
static int obs_parity(ts_st_file *f) {
    const int E = 7, W = 8, GH = 3, GW = 4, K = 5;
    ts_err err = { 0 };
    ts_params *p = ts_params_new();
    ts_nn_linear film, kp;
    ts_nn_linear_init(&film, p, "obs.film", E, 2 * W, 1);
    ts_nn_linear_init(&kp, p, "obs.keypoints", W, K, 1);
    if (ts_params_finalize(p, 1, &err)) return 1;
    ts_ctx *c = ts_ctx_new(TS_CPU, 1 << 22, 1);
    c->nthreads = 1;
    char name[256];
    int bad = 0;
    for (int i = 0; i < ts_params_count(p); i++) {
        ts_tensor *t = ts_params_get(p, i);
        snprintf(name, sizeof name, "obs.param.%s", t->name);
        ts_tensor *r = ref_tensor(c, f, name);
        if (!r || r->numel != t->numel) return 1;
        memcpy(ts_f32(t), ts_f32(r), (size_t)t->numel * sizeof(float));
    }
    ts_tensor *tokens = ref_tensor(c, f, "obs.tokens"), *e = ref_tensor(c, f, "obs.e");
    ts_tensor *want = ref_tensor(c, f, "obs.out"), *dy = ref_tensor(c, f, "obs.dy");
    ts_tensor *gt = ref_tensor(c, f, "obs.grad.tokens"), *ge = ref_tensor(c, f, "obs.grad.e");
    if (!tokens || !e || !want || !dy || !gt || !ge) return 1;
    tokens->requires_grad = e->requires_grad = 1;
    ts_tensor *x = ts_film(c, &film, tokens, e);
    x = ts_slice(c, x, 1, 1, 1 + GH * GW);
    ts_tensor *y = ts_spatial_softmax(c, &kp, x, GH, GW);
    if (y->numel != want->numel) return 1;
    double eo = rel_err(ts_f32(y), ts_f32(want), y->numel), worst = 0;
    ts_params_zero_grad(p);
    ts_backward(c, ts_sum(c, ts_mul(c, y, dy), TS_ALL));
    double et = rel_err(ts_f32(tokens->grad), ts_f32(gt), gt->numel);
    double ee = rel_err(ts_f32(e->grad), ts_f32(ge), ge->numel);
    for (int i = 0; i < ts_params_count(p); i++) {
        ts_tensor *t = ts_params_get(p, i);
        snprintf(name, sizeof name, "obs.grad.%s", t->name);
        ts_tensor *r = ref_tensor(c, f, name);
        if (!r) return 1;
        double d;
        if (strstr(t->name, "keypoints.bias")) {
            /* a bias shared by every cell of a softmax: its gradient is zero in exact
             * arithmetic, so both sides must be rounding noise */
            d = 0;
            for (int64_t j = 0; j < t->numel; j++) {
                double v = fabs(ts_f32(t->grad)[j]) + fabs(ts_f32(r)[j]);
                d = v > d ? v : d;
            }
        } else {
            d = rel_err(ts_f32(t->grad), ts_f32(r), t->numel);
        }
        if (d > 1e-4) fprintf(stderr, "%s: %.2e\n", t->name, d);
        worst = d > worst ? d : worst;
    }
    printf("FiLM + spatial softmax vs PyTorch (robomimic's SpatialSoftmax): output %.2e, "
           "d/d(tokens) %.2e, d/d(instruction) %.2e, worst parameter gradient %.2e\n", eo, et,
           ee, worst);
    bad = !(eo < 1e-4 && et < 1e-4 && ee < 1e-4 && worst < 1e-4);
    ts_ctx_free(c);
    ts_params_free(p);
    return bad;
}

static int heads_parity(const char *path) {
    ts_st_file *f;
    ts_err err = { 0 };
    if (ts_st_read(path, &f, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    static const char *const kinds[] = { "diffusion", "tokens", "l1" };
    const int N = 3, TC = 5, CD = 12, W = 16, H = 6, A = 3, V = 10;
    int bad = 0;
    for (int k = 0; k < 3; k++) {
        ts_act_tok *tok = ts_act_tok_bins_new(H, A, V);
        ts_params *p = ts_params_new();
        ts_head_cfg cfg = { .kind = k, .horizon = H, .action_dim = A, .cond_dim = CD,
                            .width = W, .depth = 2, .heads = 2, .mlp_ratio = 2.0f,
                            .train_steps = 100, .infer_steps = 10, .tok = tok };
        ts_action_head *h = ts_action_head_new(p, "head", &cfg);
        if (ts_params_finalize(p, 1, &err)) return 1;
        char name[256];
        for (int i = 0; i < ts_params_count(p); i++) {
            ts_tensor *t = ts_params_get(p, i);
            snprintf(name, sizeof name, "%s.param.%s", kinds[k], t->name);
            const ts_st_entry *e = ts_st_find(f, name);
            if (!e || e->ndim != t->ndim) {
                fprintf(stderr, "%s: the reference has no %s of %d dims\n", kinds[k], name,
                        t->ndim);
                return 1;
            }
            for (int d = 0; d < t->ndim; d++)
                if (e->shape[d] != t->shape[d]) {
                    fprintf(stderr, "%s: %s has another shape\n", kinds[k], name);
                    return 1;
                }
            ts_st_entry_to_f32(e, ts_f32(t));
        }
        ts_ctx *c = ts_ctx_new(TS_CPU, 1 << 22, 1);
        c->nthreads = 1;
        float *buf = malloc(1 << 20);
        snprintf(name, sizeof name, "%s.cond", kinds[k]);
        ts_st_entry_to_f32(ts_st_find(f, name), buf);
        ts_tensor *cond = ts_from_f32(c, 3, TS_SHAPE(N, TC, CD), buf);
        cond->requires_grad = 1;
        ts_tensor *x = NULL;
        int32_t tsteps[3];
        if (k == TS_HEAD_DIFFUSION) {
            snprintf(name, sizeof name, "%s.x", kinds[k]);
            ts_st_entry_to_f32(ts_st_find(f, name), buf);
            x = ts_from_f32(c, 3, TS_SHAPE(N, H, A), buf);
            snprintf(name, sizeof name, "%s.t", kinds[k]);
            memcpy(tsteps, ts_st_find(f, name)->data, sizeof tsteps);
        } else if (k == TS_HEAD_TOKENS) {
            snprintf(name, sizeof name, "%s.x", kinds[k]);
            x = ts_new(c, TS_I32, 2, TS_SHAPE(N, H * A + 1));
            memcpy(x->data, ts_st_find(f, name)->data, (size_t)x->numel * sizeof(int32_t));
        }
        ts_tensor *y = ts_action_head_forward(c, h, cond, x, tsteps);
        snprintf(name, sizeof name, "%s.out", kinds[k]);
        ts_st_entry_to_f32(ts_st_find(f, name), buf);
        double eo = rel_err(ts_f32(y), buf, y->numel), worst = 0;
        snprintf(name, sizeof name, "%s.dy", kinds[k]);
        ts_st_entry_to_f32(ts_st_find(f, name), buf);
        ts_tensor *dy = ts_from_f32(c, y->ndim, y->shape, buf);
        ts_params_zero_grad(p);
        ts_backward(c, ts_sum(c, ts_mul(c, y, dy), TS_ALL));
        snprintf(name, sizeof name, "%s.grad.cond", kinds[k]);
        ts_st_entry_to_f32(ts_st_find(f, name), buf);
        double eg = rel_err(ts_f32(cond->grad), buf, cond->numel);
        const char *wname = "";
        for (int i = 0; i < ts_params_count(p); i++) {
            ts_tensor *t = ts_params_get(p, i);
            snprintf(name, sizeof name, "%s.grad.%s", kinds[k], t->name);
            ts_st_entry_to_f32(ts_st_find(f, name), buf);
            double e = rel_err(ts_f32(t->grad), buf, t->numel);
            if (e > worst) {
                worst = e;
                wname = t->name;
            }
        }
        printf("%s head vs PyTorch: output %.2e, d/d(observation tokens) %.2e, worst of %d "
               "parameter gradients %.2e (%s)\n", kinds[k], eo, eg, ts_params_count(p), worst,
               wname);
        bad |= !(eo < 1e-4 && eg < 1e-4 && worst < 1e-4);
        free(buf);
        ts_ctx_free(c);
        ts_action_head_free(h);
        ts_params_free(p);
        ts_act_tok_free(tok);
    }
    bad |= obs_parity(f);
    ts_st_close(f);
    return bad;
}

/* ---- real demonstrations ---- */

static int robosuite_report(const char *dir) {
    static const char *const tasks[] = { "door", "lift", "nut-assembly", "pick-place", "stack" };
    int H = 16, A = 7, bad = 0;
    int64_t cap = 4096, n = 0;
    float *steps = malloc((size_t)cap * A * sizeof *steps);
    int64_t starts[8], lens[8];
    for (int k = 0; k < 5; k++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/robosuite_%s_panda_demo.hdf5", dir, tasks[k]);
        ts_traj_spec spec = { .actions = "actions", .horizon = 1 };
        ts_traj *t;
        ts_err err = { 0 };
        if (ts_traj_open(&t, path, &spec, &err)) {
            fprintf(stderr, "%s\n", err.msg);
            return 1;
        }
        int64_t L = ts_traj_demo_len(t, 0);
        if (n + L > cap) {
            cap = (n + L) * 2;
            steps = realloc(steps, (size_t)cap * A * sizeof *steps);
        }
        if (ts_traj_read(t, 0, 0, (int)L, steps + n * A, NULL, NULL, &err)) {
            fprintf(stderr, "%s\n", err.msg);
            return 1;
        }
        starts[k] = n;
        lens[k] = L;
        n += L;
        ts_traj_close(t);
    }
    ts_normalizer nz;
    ts_norm_fit(&nz, TS_NORM_MINMAX, steps, n, A);
    ts_norm_apply(&nz, steps, n);
    /* every chunk of H consecutive steps of each demo */
    int64_t nc = 0;
    for (int k = 0; k < 5; k++) nc += lens[k] - H + 1;
    float *chunks = malloc((size_t)nc * H * A * sizeof *chunks);
    int64_t c = 0;
    for (int k = 0; k < 5; k++)
        for (int64_t s = 0; s + H <= lens[k]; s++, c++)
            memcpy(chunks + c * H * A, steps + (starts[k] + s) * A, (size_t)H * A * sizeof(float));
    /* bins */
    ts_act_tok *bins = ts_act_tok_bins_new(H, A, 256);
    double bworst = 0;
    int32_t *ids = malloc((size_t)H * A * sizeof *ids);
    float *y = malloc((size_t)H * A * sizeof *y);
    for (int64_t i = 0; i < nc; i++) {
        ts_err err = { 0 };
        bins->encode(bins, chunks + i * H * A, ids);
        bins->decode(bins, ids, H * A, y, &err);
        for (int j = 0; j < H * A; j++) {
            double e = fabs(y[j] - chunks[i * H * A + j]);
            bworst = e > bworst ? e : bworst;
        }
    }
    printf("robosuite: %lld steps of 5 demos, %lld chunks of %d x %d\n", (long long)n,
           (long long)nc, H, A);
    printf("bins (256): max round-trip error %.5f (half a bin: %.5f)\n", bworst, 1.0 / 256);
    bad |= bworst > 1.0 / 256 + 1e-6;
    /* FAST trained on the chunks of the first 80% of each demo, measured on the rest */
    float *train = malloc((size_t)nc * H * A * sizeof *train);
    float *held = malloc((size_t)nc * H * A * sizeof *held);
    int64_t ntr = 0, nho = 0;
    c = 0;
    for (int k = 0; k < 5; k++) {
        int64_t m = lens[k] - H + 1, cut = m * 4 / 5;
        for (int64_t s = 0; s < m; s++, c++)
            memcpy(s < cut ? train + ntr++ * H * A : held + nho++ * H * A, chunks + c * H * A,
                   (size_t)H * A * sizeof(float));
    }
    ts_fast_cfg cfg = ts_fast_cfg_default();
    ts_act_tok *fast;
    ts_err err = { 0 };
    if (ts_act_tok_fast_train(&fast, train, ntr, H, A, &cfg, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    long total = 0;
    double se = 0, worst = 0;
    int32_t *fid = malloc((size_t)fast->max_len * sizeof *fid);
    for (int64_t i = 0; i < nho; i++) {
        int m = fast->encode(fast, held + i * H * A, fid);
        total += m;
        if (fast->decode(fast, fid, m, y, &err)) {
            fprintf(stderr, "chunk %lld: %s\n", (long long)i, err.msg);
            return 1;
        }
        for (int j = 0; j < H * A; j++) {
            double e = y[j] - held[i * H * A + j];
            se += e * e;
            worst = fabs(e) > worst ? fabs(e) : worst;
        }
    }
    double ratio = (double)nho * H * A / (double)total;
    printf("FAST (scale %g, vocabulary %d, trained on %lld chunks) on %lld held-out chunks: "
           "%.2f ids per chunk of %d values, compression %.2fx; "
           "reconstruction RMSE %.5f, max error %.5f (normalised units, bound %.5f)\n",
           cfg.scale, fast->vocab, (long long)ntr, (long long)nho, (double)total / nho, H * A,
           ratio, sqrt(se / ((double)nho * H * A)), worst, sqrt((double)H) * 0.5 / cfg.scale);
    bad |= worst > sqrt((double)H) * 0.5 / cfg.scale + 1e-6 || ratio <= 1.0;
    free(fid);
    free(train);
    free(held);
    free(ids);
    free(y);
    free(chunks);
    free(steps);
    ts_act_tok_free(bins);
    ts_act_tok_free(fast);
    ts_norm_free(&nz);
    return bad;
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "--diffusers")) return diffusers_parity(argv[2]);
    if (argc == 3 && !strcmp(argv[1], "--robosuite")) return robosuite_report(argv[2]);
    if (argc == 3 && !strcmp(argv[1], "--heads")) return heads_parity(argv[2]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(minmax_maps_to_unit_range_and_back),
        cmocka_unit_test(meanstd_and_quantile),
        cmocka_unit_test(bins_round_trip_within_half_a_bin),
        cmocka_unit_test(fast_round_trip_is_exact_and_compresses),
        cmocka_unit_test(schedule_is_squaredcos_cap_v2),
        cmocka_unit_test(test_pose),
        cmocka_unit_test(heads_learn_a_conditional_chunk),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
