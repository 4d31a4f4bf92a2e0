/* test_gradcheck.c: every op's backward against central finite differences.
 *
 * For each row of the op table (tests/rows.h): make small random inputs, run the op, pull a
 * random projection r back through the tape, and compare each input gradient with
 * (L(x + e) - L(x - e)) / 2e where L = sum(y * r). The ops compute in float32, so the
 * differences use a step of 1e-2 on O(1) inputs and the projection is summed in float64;
 * at that step the truncation and rounding errors are both below the 1e-2 tolerance for the
 * smooth ops tested here. Stochastic ops see the same random stream in every evaluation.
 * The coverage test fails when an op of TS_OP_LIST has no row.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "rows.h"

static double project(const ts_tensor *y, const float *r) {
    double s = 0;
    const float *d = ts_f32(y);
    for (int64_t i = 0; i < y->numel; i++) s += (double)d[i] * r[i];
    return s;
}

static void check_row(void **state) {
    const test_row *row = *state;
    ts_ctx *c = ts_ctx_new(TS_CPU, 1 << 20, 1234);
    ts_rng r;
    ts_rng_seed(&r, 42);
    ts_tensor *in[ROW_MAX_IN] = { 0 };
    int nin = row->make(c, &r, in);
    ts_rng op_rng = c->rng;

    ts_tensor *y = row->fn(c, in);
    assert_non_null(y);
    assert_int_equal(y->dtype, TS_F32);
    ts_tensor *dy = ts_new_f32(c, y->ndim, y->shape);
    for (int64_t i = 0; i < y->numel; i++) ts_f32(dy)[i] = ts_rng_normal(&r);
    int any = 0;
    for (int k = 0; k < nin; k++) any |= in[k]->requires_grad;
    assert_true(any);
    ts_backward_with(c, y, dy);

    double tol = row->tol > 0 ? row->tol : 1e-2;
    const float eps = 1e-2f;
    int bad = 0, checked = 0;
    c->grad_enabled = 0;
    for (int k = 0; k < nin; k++) {
        if (!in[k]->requires_grad) continue;
        assert_non_null(in[k]->grad);
        float *x = ts_f32(in[k]);
        const float *g = ts_f32(in[k]->grad);
        int64_t n = in[k]->numel, stride = n > 48 ? n / 48 : 1;
        for (int64_t j = 0; j < n; j += stride) {
            float keep = x[j];
            x[j] = keep + eps;
            c->rng = op_rng;
            double lp = project(row->fn(c, in), ts_f32(dy));
            x[j] = keep - eps;
            c->rng = op_rng;
            double lm = project(row->fn(c, in), ts_f32(dy));
            x[j] = keep;
            double num = (lp - lm) / (2.0 * eps), ana = g[j];
            checked++;
            if (!(fabs(num - ana) <= tol * (1.0 + fabs(num)))) {
                if (bad < 5)
                    print_error("%s: input %d element %lld: analytic %.6g, numeric %.6g\n",
                                row->name, k, (long long)j, ana, num);
                bad++;
            }
        }
    }
    print_message("%-18s %d gradient elements checked, %d off\n", row->name, checked, bad);
    ts_ctx_free(c);
    assert_int_equal(bad, 0);
}

static void coverage(void **state) {
    (void)state;
    int missing = 0;
    for (int op = 0; op < TS_OP_COUNT; op++) {
        int found = 0;
        for (int g = 0; g < ts_test_nrows; g++)
            for (const test_row *row = ts_test_rows[g]; row->name; row++)
                if (row->op == op && row->make) found = 1;
        if (!found) {
            print_error("op %s has no gradient-check row\n", ts_op_name((ts_op)op));
            missing++;
        }
    }
    assert_int_equal(missing, 0);
}

int main(void) {
    static struct CMUnitTest tests[512];
    int n = 0;
    tests[n++] = (struct CMUnitTest){ "every op has a row", coverage, NULL, NULL, NULL };
    for (int g = 0; g < ts_test_nrows; g++)
        for (const test_row *row = ts_test_rows[g]; row->name; row++)
            if (row->make)
                tests[n++] = (struct CMUnitTest){ row->name, check_row, NULL, NULL,
                                                  (void *)row };
    return _cmocka_run_group_tests("gradcheck", tests, (size_t)n, NULL, NULL);
}
