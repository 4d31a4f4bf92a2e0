/* all.c: joins the row groups into the one table, and the input helpers of rows.h. */
#include "../rows.h"

extern const test_row rows_matmul[], rows_elementwise[], rows_shape[], rows_norm[], rows_act[],
    rows_attention[], rows_conv[], rows_nn[], rows_vit[], rows_text[], rows_cswin[],
    rows_mae[], rows_vit_timm[], rows_objectives[], rows_protoclip[], rows_pose[];

const test_row *const ts_test_rows[] = {
    rows_matmul, rows_elementwise, rows_shape, rows_norm, rows_act, rows_attention, rows_conv,
    rows_nn, rows_vit, rows_text, rows_cswin, rows_mae, rows_vit_timm, rows_objectives,
    rows_protoclip, rows_pose,
};
const int ts_test_nrows = (int)(sizeof ts_test_rows / sizeof ts_test_rows[0]);

ts_tensor *row_randn(ts_ctx *c, ts_rng *r, int ndim, const int64_t *shape, float scale, int rg) {
    ts_tensor *t = ts_new_f32(c, ndim, shape);
    float *d = ts_f32(t);
    for (int64_t i = 0; i < t->numel; i++) d[i] = scale * ts_rng_normal(r);
    t->requires_grad = rg;
    return t;
}

ts_tensor *row_randint(ts_ctx *c, ts_rng *r, int ndim, const int64_t *shape, int hi) {
    ts_tensor *t = ts_new(c, TS_I32, ndim, shape);
    int32_t *d = ts_i32(t);
    for (int64_t i = 0; i < t->numel; i++) d[i] = (int32_t)(ts_rng_next(r) % (uint64_t)hi);
    return t;
}
