/* unit_batchnorm.c: batchnorm1d's running statistics and its eval mode.
 *
 * The parity test compares batchnorm1d's output and gradients with PyTorch but not the
 * running statistics it updates in place. This test checks them: a tiny example worked out
 * by hand, then random batches over several training steps against the definition computed
 * here in double (mean; unbiased variance; running = (1 - momentum) * running + momentum *
 * statistic), and finally that eval mode normalises with the running statistics and leaves
 * them alone.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <string.h>

#include "tessera.h"

/* x = [[1], [3]]: mean 2, biased variance 1, unbiased variance 2. From running (0, 1) with
 * momentum 0.1: running_mean = 0.9 * 0 + 0.1 * 2 = 0.2 and running_var = 0.9 * 1 + 0.1 * 2
 * = 1.1. The output is (x - 2) / sqrt(1 + eps), about -1 and 1. */
static void by_hand(void **state) {
    (void)state;
    ts_ctx *c = ts_ctx_new(TS_CPU, 1 << 16, 1);
    ts_tensor *x = ts_from_f32(c, 2, TS_SHAPE(2, 1), (const float[]){ 1.0f, 3.0f });
    ts_tensor *rm = ts_from_f32(c, 1, TS_SHAPE(1), (const float[]){ 0.0f });
    ts_tensor *rv = ts_from_f32(c, 1, TS_SHAPE(1), (const float[]){ 1.0f });
    c->training = 1;
    ts_tensor *y = ts_batchnorm1d(c, x, NULL, NULL, rm, rv, 0.1f, 1e-5f);
    assert_float_equal(ts_f32(rm)[0], 0.2f, 1e-6f);
    assert_float_equal(ts_f32(rv)[0], 1.1f, 1e-6f);
    assert_float_equal(ts_f32(y)[0], -1.0f, 1e-4f);
    assert_float_equal(ts_f32(y)[1], 1.0f, 1e-4f);
    ts_ctx_free(c);
}

/* Three training steps on random (N, C) batches, the reference updated alongside. */
static void against_definition(void **state) {
    (void)state;
    enum { N = 7, C = 70, STEPS = 3 }; /* C over one 64-channel block */
    const float momentum = 0.3f, eps = 1e-5f;
    ts_ctx *c = ts_ctx_new(TS_CPU, 1 << 20, 1);
    ts_rng r;
    ts_rng_seed(&r, 7);
    float rm0[C], rv0[C];
    double ref_m[C], ref_v[C];
    for (int j = 0; j < C; j++) {
        rm0[j] = ts_rng_normal(&r);
        rv0[j] = 0.5f + ts_rng_uniform(&r);
        ref_m[j] = rm0[j];
        ref_v[j] = rv0[j];
    }
    ts_tensor *rm = ts_from_f32(c, 1, TS_SHAPE(C), rm0);
    ts_tensor *rv = ts_from_f32(c, 1, TS_SHAPE(C), rv0);
    ts_tensor *w = ts_new_f32(c, 1, TS_SHAPE(C)), *b = ts_new_f32(c, 1, TS_SHAPE(C));
    for (int j = 0; j < C; j++) {
        ts_f32(w)[j] = ts_rng_normal(&r);
        ts_f32(b)[j] = ts_rng_normal(&r);
    }
    c->training = 1;
    for (int step = 0; step < STEPS; step++) {
        ts_tensor *x = ts_new_f32(c, 2, TS_SHAPE(N, C));
        for (int i = 0; i < N * C; i++) ts_f32(x)[i] = 2.0f * ts_rng_normal(&r) + (float)step;
        ts_tensor *y = ts_batchnorm1d(c, x, w, b, rm, rv, momentum, eps);
        for (int j = 0; j < C; j++) {
            double s = 0, v = 0;
            for (int i = 0; i < N; i++) s += ts_f32(x)[i * C + j];
            double mean = s / N;
            for (int i = 0; i < N; i++) {
                double d = ts_f32(x)[i * C + j] - mean;
                v += d * d;
            }
            ref_m[j] = (1.0 - momentum) * ref_m[j] + momentum * mean;
            ref_v[j] = (1.0 - momentum) * ref_v[j] + momentum * v / (N - 1);
            assert_float_equal(ts_f32(rm)[j], ref_m[j], 1e-5 * (1 + fabs(ref_m[j])));
            assert_float_equal(ts_f32(rv)[j], ref_v[j], 1e-5 * (1 + fabs(ref_v[j])));
            for (int i = 0; i < N; i++) {
                double want = (ts_f32(x)[i * C + j] - mean) / sqrt(v / N + eps) *
                                  ts_f32(w)[j] + ts_f32(b)[j];
                assert_float_equal(ts_f32(y)[i * C + j], want, 1e-4 * (1 + fabs(want)));
            }
        }
    }
    ts_ctx_free(c);
}

/* Eval mode: y = (x - running_mean) / sqrt(running_var + eps), statistics untouched. */
static void eval_mode(void **state) {
    (void)state;
    ts_ctx *c = ts_ctx_new(TS_CPU, 1 << 16, 1);
    ts_tensor *x = ts_from_f32(c, 2, TS_SHAPE(3, 2), (const float[]){ 1, 2, 3, 4, 5, 6 });
    ts_tensor *rm = ts_from_f32(c, 1, TS_SHAPE(2), (const float[]){ 0.5f, -1.0f });
    ts_tensor *rv = ts_from_f32(c, 1, TS_SHAPE(2), (const float[]){ 4.0f, 0.25f });
    c->training = 0;
    ts_tensor *y = ts_batchnorm1d(c, x, NULL, NULL, rm, rv, 0.1f, 0.0f);
    assert_float_equal(ts_f32(rm)[0], 0.5f, 0.0f);
    assert_float_equal(ts_f32(rm)[1], -1.0f, 0.0f);
    assert_float_equal(ts_f32(rv)[0], 4.0f, 0.0f);
    assert_float_equal(ts_f32(rv)[1], 0.25f, 0.0f);
    const float want[6] = { 0.25f, 6.0f, 1.25f, 10.0f, 2.25f, 14.0f };
    for (int i = 0; i < 6; i++) assert_float_equal(ts_f32(y)[i], want[i], 1e-5f);
    ts_ctx_free(c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(by_hand),
        cmocka_unit_test(against_definition),
        cmocka_unit_test(eval_mode),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
