/* test_parity.c: every op and nn block against PyTorch, forward and backward.
 *
 * tests/parity/reference.py writes, for each case, the inputs (NAME.in0, NAME.in1, ...), an
 * upstream gradient NAME.dy, PyTorch's output NAME.out and the gradients of the float inputs
 * (NAME.grad0, ...) into one safetensors file, with the PyTorch version in its metadata. This
 * test loads that file, runs the same case through tessera's row function (tests/rows.h),
 * pulls NAME.dy back and compares every tensor: max |ours - torch| / max |torch| < 1e-4.
 * A row marked parity whose case is missing from the file fails.
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

#include "rows.h"

static ts_st_file *ref;

static ts_tensor *load(ts_ctx *c, const ts_st_entry *e) {
    ts_tensor *t = ts_new(c, e->dtype, e->ndim, e->shape);
    memcpy(t->data, e->data, e->nbytes);
    return t;
}

static double compare(const char *what, const ts_tensor *ours, const ts_st_entry *ref_e) {
    char s1[96];
    int64_t n = 1;
    for (int i = 0; i < ref_e->ndim; i++) n *= ref_e->shape[i];
    if (n != ours->numel) {
        print_error("%s: %lld elements, reference has %lld (ours %s)\n", what,
                    (long long)ours->numel, (long long)n, ts_shape_str(ours, s1, sizeof s1));
        return INFINITY;
    }
    /* safetensors data is packed, not aligned: copy the reference before reading floats */
    float *b = malloc((size_t)n * sizeof(float));
    memcpy(b, ref_e->data, (size_t)n * sizeof(float));
    const float *a = ts_f32(ours);
    double maxdiff = 0, maxref = 0;
    int64_t worst = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= maxdiff)) { maxdiff = d; worst = i; }
        if (fabs(b[i]) > maxref) maxref = fabs(b[i]);
    }
    double rel = maxdiff / (maxref > 1e-12 ? maxref : 1e-12);
    if (isnan(maxdiff)) rel = INFINITY;
    print_message("  %-28s maxdiff %.3g  rel %.3g%s\n", what, maxdiff, rel,
                  rel < 1e-4 ? "" : "  <-- over 1e-4");
    if (!(rel < 1e-4))
        print_error("  %s: element %lld is %.8g, torch %.8g\n", what, (long long)worst,
                    a[worst], b[worst]);
    free(b);
    return rel;
}

static void check_row(void **state) {
    const test_row *row = *state;
    char key[256];
    ts_ctx *c = ts_ctx_new(TS_CPU, 1 << 20, 1234);
    ts_tensor *in[ROW_MAX_IN] = { 0 };
    int nin = 0;
    for (; nin < ROW_MAX_IN; nin++) {
        snprintf(key, sizeof key, "%s.in%d", row->name, nin);
        const ts_st_entry *e = ts_st_find(ref, key);
        if (!e) break;
        in[nin] = load(c, e);
        snprintf(key, sizeof key, "%s.grad%d", row->name, nin);
        in[nin]->requires_grad = ts_st_find(ref, key) != NULL;
    }
    if (nin == 0) {
        print_error("%s: the reference file has no case of this name\n", row->name);
        fail();
    }
    snprintf(key, sizeof key, "%s.out", row->name);
    const ts_st_entry *out_e = ts_st_find(ref, key);
    snprintf(key, sizeof key, "%s.dy", row->name);
    const ts_st_entry *dy_e = ts_st_find(ref, key);
    assert_non_null(out_e);
    assert_non_null(dy_e);
    ts_tensor *y = row->fn(c, in);
    int bad = 0;
    snprintf(key, sizeof key, "%s.out", row->name);
    bad += !(compare(key, y, out_e) < 1e-4);
    ts_tensor *dy = load(c, dy_e);
    if (y->requires_grad) ts_backward_with(c, y, dy);
    for (int k = 0; k < nin; k++) {
        if (!in[k]->requires_grad) continue;
        snprintf(key, sizeof key, "%s.grad%d", row->name, k);
        if (!in[k]->grad) {
            print_error("%s: no gradient reached input %d\n", row->name, k);
            bad++;
            continue;
        }
        bad += !(compare(key, in[k]->grad, ts_st_find(ref, key)) < 1e-4);
    }
    ts_ctx_free(c);
    assert_int_equal(bad, 0);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: test_parity REFERENCE.safetensors\n");
        return 2;
    }
    ts_err err = { 0 };
    if (ts_st_read(argv[1], &ref, &err) != TS_OK) {
        fprintf(stderr, "test_parity: %s\n(run tests/parity/reference.py first)\n", err.msg);
        return 1;
    }
    const char *ver = ts_st_meta(ref, "torch_version");
    printf("PyTorch reference: torch %s\n", ver ? ver : "(unknown)");
    static struct CMUnitTest tests[512];
    int n = 0;
    for (int g = 0; g < ts_test_nrows; g++)
        for (const test_row *row = ts_test_rows[g]; row->name; row++)
            if (row->parity)
                tests[n++] = (struct CMUnitTest){ row->name, check_row, NULL, NULL,
                                                  (void *)row };
    int rc = _cmocka_run_group_tests("parity", tests, (size_t)n, NULL, NULL);
    ts_st_close(ref);
    return rc;
}
