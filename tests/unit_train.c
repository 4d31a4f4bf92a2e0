/* unit_train.c: properties of training that no single op test shows.
 *
 * Gradient accumulation: two micro-batches of B/2, each loss scaled by 1/2, give the gradients
 * of one batch of B. bf16 precision: matmuls on bf16 inputs stay within bf16 rounding of the
 * float32 result, and a step arena of the same shape stops growing after the first step.
 * Gradient buckets: each bucket handed over during backward already holds its final gradient,
 * buckets come in order, and without tied weights the first ones come before backward ends.
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

enum { B = 4, T = 6, C = 16, H = 2, V = 10 };

typedef struct tiny {
    ts_params *p;
    ts_tensor *emb;
    ts_nn_block block;
    ts_nn_linear head;
} tiny;

static void tiny_init(tiny *m) {
    m->p = ts_params_new();
    m->emb = ts_param(m->p, "emb", 2, TS_SHAPE(V, C), TS_INIT_N(0.5f), 0);
    ts_nn_block_init(&m->block, m->p, "block", C, H, 4.0f, TS_ACT_GELU, 1e-5f, 0.0f);
    ts_nn_linear_init(&m->head, m->p, "head", C, V, 1);
    assert_int_equal(ts_params_finalize(m->p, 11, NULL), TS_OK);
}

/* mean cross-entropy of next-token prediction over samples [b0, b0 + n) of a fixed batch */
static ts_tensor *tiny_loss(ts_ctx *c, tiny *m, int b0, int n) {
    ts_tensor *x = ts_new(c, TS_I32, 2, TS_SHAPE(n, T));
    ts_tensor *y = ts_new(c, TS_I32, 1, TS_SHAPE(n * T));
    for (int b = 0; b < n; b++)
        for (int t = 0; t < T; t++) {
            ts_i32(x)[b * T + t] = ((b0 + b) * 7 + t * 3) % V;
            ts_i32(y)[b * T + t] = ((b0 + b) * 5 + t) % V;
        }
    ts_tensor *h = ts_nn_block_forward(c, &m->block, ts_embedding(c, m->emb, x), 1, NULL);
    ts_tensor *logits = ts_reshape(c, ts_nn_linear_forward(c, &m->head, h), 2,
                                   TS_SHAPE(n * T, V));
    return ts_cross_entropy(c, logits, y, -100, 0.0f);
}

static void accumulation_equals_one_big_batch(void **state) {
    (void)state;
    tiny m;
    tiny_init(&m);
    ts_ctx *c = ts_ctx_new(TS_CPU, 1 << 20, 1);
    ts_params_zero_grad(m.p);
    ts_backward(c, tiny_loss(c, &m, 0, B));
    ts_ctx_reset(c);
    int n = ts_params_count(m.p);
    float *full[64];
    for (int i = 0; i < n; i++) {
        ts_tensor *t = ts_params_get(m.p, i);
        full[i] = malloc((size_t)t->numel * sizeof(float));
        memcpy(full[i], t->grad->data, (size_t)t->numel * sizeof(float));
    }
    ts_params_zero_grad(m.p);
    for (int half = 0; half < 2; half++) {
        ts_backward(c, ts_scale(c, tiny_loss(c, &m, half * B / 2, B / 2), 0.5f));
        ts_ctx_reset(c);
    }
    double worst = 0;
    for (int i = 0; i < n; i++) {
        ts_tensor *t = ts_params_get(m.p, i);
        double maxg = 1e-12, diff = 0;
        for (int64_t j = 0; j < t->numel; j++) {
            maxg = fmax(maxg, fabs(full[i][j]));
            diff = fmax(diff, fabs(full[i][j] - ts_f32(t->grad)[j]));
        }
        worst = fmax(worst, diff / maxg);
        free(full[i]);
    }
    print_message("accumulated vs full-batch gradients: max relative difference %.3g\n", worst);
    assert_true(worst < 1e-5);
    ts_ctx_free(c);
    ts_params_free(m.p);
}

static void bf16_matmul_is_close_to_f32(void **state) {
    (void)state;
    ts_ctx *c = ts_ctx_new(TS_CPU, 1 << 20, 1);
    c->grad_enabled = 0;
    ts_rng r;
    ts_rng_seed(&r, 5);
    enum { M = 96, K = 160, N = 72 };
    ts_tensor *a = ts_new_f32(c, 2, TS_SHAPE(M, K)), *b = ts_new_f32(c, 2, TS_SHAPE(N, K));
    for (int64_t i = 0; i < a->numel; i++) ts_f32(a)[i] = ts_rng_normal(&r);
    for (int64_t i = 0; i < b->numel; i++) ts_f32(b)[i] = ts_rng_normal(&r);
    ts_tensor *y32 = ts_matmul(c, a, b, TS_TRANS_B);
    c->precision = TS_PREC_BF16;
    ts_tensor *y16 = ts_matmul(c, a, b, TS_TRANS_B);
    double maxref = 0, diff = 0, same = 0;
    for (int64_t i = 0; i < y32->numel; i++) {
        maxref = fmax(maxref, fabs(ts_f32(y32)[i]));
        diff = fmax(diff, fabs(ts_f32(y32)[i] - ts_f32(y16)[i]));
        same += ts_f32(y32)[i] == ts_f32(y16)[i];
    }
    print_message("bf16 vs f32 matmul: max relative difference %.3g\n", diff / maxref);
    /* bf16 keeps 8 bits of mantissa: errors of ~1e-2 relative, but not zero and not garbage */
    assert_true(diff / maxref < 2e-2);
    assert_true(same < y32->numel); /* it really ran in bf16 */
    ts_ctx_free(c);
}

static void step_arena_stops_growing(void **state) {
    (void)state;
    tiny m;
    tiny_init(&m);
    ts_ctx *c = ts_ctx_new(TS_CPU, 1 << 16, 1); /* deliberately small: the first step grows it */
    size_t after_first = 0;
    for (int step = 0; step < 4; step++) {
        ts_backward(c, tiny_loss(c, &m, 0, B));
        ts_ctx_reset(c);
        if (step == 0) after_first = ts_arena_mallocs(c->step);
    }
    assert_int_equal(ts_arena_mallocs(c->step), after_first);
    ts_ctx_free(c);
    ts_params_free(m.p);
}

/* What the bucket callbacks saw during one backward. */
typedef struct seen {
    int n, order_ok;
    int64_t polls, polls_at[256]; /* polls before bucket k was handed over */
    float *copy[256];             /* bucket k's gradient as handed over */
} seen;

static void seen_ready(int k, float *g, int64_t n, void *user) {
    seen *s = user;
    s->order_ok &= k == s->n;
    s->polls_at[k] = s->polls;
    s->copy[k] = malloc((size_t)(n ? n : 1) * sizeof(float));
    memcpy(s->copy[k], g, (size_t)n * sizeof(float));
    s->n++;
}

static void seen_poll(void *user) { ((seen *)user)->polls++; }

/* Backward of two accumulated micro-batches, the second through ts_backward_buckets; with tied
 * set, a parameter registered last (gate) is also used first, as a tied weight would be.
 * Returns the number of tape positions passed before bucket 0 (which holds gate) was handed
 * over, with the tape's length and the position of gate's first use. */
static int64_t buckets_case(int tied, int64_t *positions, int64_t *gate_first) {
    tiny m;
    m.p = ts_params_new();
    m.emb = ts_param(m.p, "emb", 2, TS_SHAPE(V, C), TS_INIT_N(0.5f), 0);
    ts_nn_block_init(&m.block, m.p, "block", C, H, 4.0f, TS_ACT_GELU, 1e-5f, 0.0f);
    ts_nn_linear_init(&m.head, m.p, "head", C, V, 1);
    ts_tensor *gate = ts_param(m.p, "gate", 1, TS_SHAPE(C), TS_INIT_N(0.1f), 0);
    assert_int_equal(ts_params_finalize(m.p, 11, NULL), TS_OK);
    ts_ctx *c = ts_ctx_new(TS_CPU, 1 << 20, 1);
    ts_grad_buckets *b = ts_grad_buckets_new(m.p, 512); /* 128 floats: many buckets */
    int nb = ts_grad_buckets_count(b);
    assert_true(nb > 3 && nb <= 256);
    size_t nsec;
    float *sec = ts_params_section(m.p, 1, &nsec);
    int64_t total = 0; /* the buckets tile the gradient section, last parameters first */
    for (int k = 0; k < nb; k++) {
        int64_t n;
        float *g = ts_grad_buckets_slice(b, k, &n);
        assert_true(g + n == sec + nsec - total);
        total += n;
    }
    assert_int_equal(total, (int64_t)nsec);

    seen s = { .order_ok = 1 };
    ts_params_zero_grad(m.p);
    for (int a = 0; a < 2; a++) {
        ts_tensor *pre = NULL;
        if (tied) { /* gate enters at the start of the tape ... */
            ts_tensor *e = ts_mean(c, m.emb, 0);
            *gate_first = c->tape.n;
            pre = ts_mean(c, ts_mul(c, e, gate), TS_ALL);
        }
        ts_tensor *loss = tiny_loss(c, &m, 2 * a, 2);
        if (!tied) *gate_first = c->tape.n;
        /* ... and at its end */
        loss = ts_add(c, loss, ts_mean(c, ts_mul(c, gate, gate), TS_ALL));
        if (pre) loss = ts_add(c, loss, pre);
        *positions = c->tape.n;
        if (a == 0) ts_backward(c, loss);
        else ts_backward_buckets(c, loss, b, seen_ready, seen_poll, &s);
        ts_ctx_reset(c);
    }
    assert_int_equal(s.n, nb);
    assert_int_equal(s.polls, *positions);
    assert_true(s.order_ok);
    int64_t diff = 0;
    for (int k = 0; k < nb; k++) {
        int64_t n;
        float *g = ts_grad_buckets_slice(b, k, &n);
        diff += memcmp(g, s.copy[k], (size_t)n * sizeof(float)) != 0;
        free(s.copy[k]);
    }
    print_message("%s: %d buckets, %lld tape positions, gate first used at %lld, bucket 0 "
                  "handed over after %lld positions; %lld buckets changed after that\n",
                  tied ? "tied" : "untied", nb, (long long)*positions, (long long)*gate_first,
                  (long long)s.polls_at[0], (long long)diff);
    assert_int_equal(diff, 0);
    ts_grad_buckets_free(b);
    ts_ctx_free(c);
    ts_params_free(m.p);
    return s.polls_at[0];
}

static void buckets_are_final_when_handed_over(void **state) {
    (void)state;
    int64_t n, first;
    /* untied: bucket 0 goes out while most of backward is still to run */
    int64_t at = buckets_case(0, &n, &first);
    assert_true(at < n / 2);
    /* tied: bucket 0 exactly when gate's first use is passed, n - first positions walked */
    at = buckets_case(1, &n, &first);
    assert_int_equal(at, n - first - 1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(accumulation_equals_one_big_batch),
        cmocka_unit_test(bf16_matmul_is_close_to_f32),
        cmocka_unit_test(step_arena_stops_growing),
        cmocka_unit_test(buckets_are_final_when_handed_over),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
