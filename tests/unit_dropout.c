/* unit_dropout.c: inverted dropout's statistics, its scaling, its mask replay and eval mode.
 *
 * The gradient check covers dropout's backward; this test covers what a gradient check cannot
 * see: that about p of the elements are dropped, that survivors are scaled by 1/(1-p), that
 * the same RNG state gives the same mask, and that out of training dropout is the identity.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>

#include "tessera.h"

#define N 100000

static ts_tensor *ones(ts_ctx *c) {
    ts_tensor *x = ts_new_f32(c, 2, TS_SHAPE(N / 100, 100));
    for (int64_t i = 0; i < N; i++) ts_f32(x)[i] = 1.0f + (float)(i % 7);
    return x;
}

static void fraction_and_scale(void **state) {
    (void)state;
    const float ps[] = { 0.1f, 0.5f, 0.8f };
    for (int k = 0; k < 3; k++) {
        float p = ps[k];
        ts_ctx *c = ts_ctx_new(TS_CPU, 1 << 20, 7);
        ts_tensor *x = ones(c);
        ts_tensor *y = ts_dropout(c, x, p);
        assert_ptr_not_equal(y, x);
        int64_t dropped = 0;
        for (int64_t i = 0; i < N; i++) {
            float v = ts_f32(y)[i], want = ts_f32(x)[i] / (1.0f - p);
            if (v == 0.0f)
                dropped++;
            else
                assert_true(fabsf(v - want) <= 1e-5f * want);
        }
        /* Binomial(N, p): the standard deviation of the fraction is below 0.0016 here. */
        double frac = (double)dropped / N;
        print_message("p = %.2f: dropped fraction %.4f\n", (double)p, frac);
        assert_true(fabs(frac - p) < 0.01);
        ts_ctx_free(c);
    }
}

static void same_rng_same_mask(void **state) {
    (void)state;
    ts_ctx *c = ts_ctx_new(TS_CPU, 1 << 20, 11);
    ts_tensor *x = ones(c);
    ts_rng keep = c->rng;
    ts_tensor *y1 = ts_dropout(c, x, 0.3f);
    ts_tensor *y2 = ts_dropout(c, x, 0.3f);
    c->rng = keep;
    ts_tensor *y3 = ts_dropout(c, x, 0.3f);
    int64_t differ = 0;
    for (int64_t i = 0; i < N; i++) {
        assert_true(ts_f32(y1)[i] == ts_f32(y3)[i]);
        differ += ts_f32(y1)[i] != ts_f32(y2)[i];
    }
    assert_true(differ > 0); /* the stream moves on between calls */
    ts_ctx_free(c);
}

static void eval_and_zero_p_are_identity(void **state) {
    (void)state;
    ts_ctx *c = ts_ctx_new(TS_CPU, 1 << 20, 3);
    ts_tensor *x = ones(c);
    ts_rng before = c->rng;
    assert_ptr_equal(ts_dropout(c, x, 0.0f), x);
    c->training = 0;
    ts_tensor *y = ts_dropout(c, x, 0.5f);
    for (int64_t i = 0; i < N; i++) assert_true(ts_f32(y)[i] == ts_f32(x)[i]);
    for (int i = 0; i < 4; i++) assert_true(c->rng.s[i] == before.s[i]); /* no draws */
    ts_ctx_free(c);
}

static void backward_uses_the_mask(void **state) {
    (void)state;
    ts_ctx *c = ts_ctx_new(TS_CPU, 1 << 20, 5);
    ts_tensor *x = ones(c);
    x->requires_grad = 1;
    ts_tensor *y = ts_dropout(c, x, 0.25f);
    ts_backward(c, ts_sum(c, y, TS_ALL));
    assert_non_null(x->grad);
    for (int64_t i = 0; i < N; i++) {
        float g = ts_f32(x->grad)[i];
        assert_true(ts_f32(y)[i] == 0.0f ? g == 0.0f : fabsf(g - 1.0f / 0.75f) < 1e-6f);
    }
    ts_ctx_free(c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(fraction_and_scale),
        cmocka_unit_test(same_rng_same_mask),
        cmocka_unit_test(eval_and_zero_p_are_identity),
        cmocka_unit_test(backward_uses_the_mask),
    };
    return cmocka_run_group_tests_name("dropout", tests, NULL, NULL);
}
