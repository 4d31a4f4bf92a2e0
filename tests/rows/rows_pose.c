/* Rows for the pose patch embedding of action/pose.c (parity with a linear over reshaped
 * frames plus the position table, tests/parity/cases_pose.py).
 *
 * Inputs: x (B, T, K, d), proj.weight (W, p*K*d), proj.bias (W), pos_embed (max_patches, W).
 * "pose_embed" uses part of the position table (T / p < max_patches), "pose_embed_full" all.
 */
#include "../rows.h"

#include "action.h"

enum { PE_B = 2, PE_T = 6, PE_K = 4, PE_D = 3, PE_P = 2, PE_W = 8 };

static int mk_pose(ts_ctx *c, ts_rng *r, ts_tensor **in, int max_patches) {
    in[0] = row_randn(c, r, 4, TS_SHAPE(PE_B, PE_T, PE_K, PE_D), 0.5f, 1);
    in[1] = row_randn(c, r, 2, TS_SHAPE(PE_W, PE_P * PE_K * PE_D), 0.3f, 1);
    in[2] = row_randn(c, r, 1, TS_SHAPE(PE_W), 0.1f, 1);
    in[3] = row_randn(c, r, 2, TS_SHAPE(max_patches, PE_W), 0.2f, 1);
    return 4;
}
static int mk_pose_part(ts_ctx *c, ts_rng *r, ts_tensor **in) { return mk_pose(c, r, in, 5); }
static int mk_pose_full(ts_ctx *c, ts_rng *r, ts_tensor **in) {
    return mk_pose(c, r, in, PE_T / PE_P);
}

static ts_tensor *fn_pose(ts_ctx *c, ts_tensor **in) {
    ts_pose_embed m = { { in[1], in[2] }, in[3], PE_P, PE_K, PE_D, PE_W, (int)in[3]->shape[0] };
    return ts_pose_embed_forward(c, &m, in[0]);
}

const test_row rows_pose[] = {
    { "pose_embed", -1, mk_pose_part, fn_pose, 0, 1 },
    { "pose_embed_full", -1, mk_pose_full, fn_pose, 0, 1 },
    ROW_END,
};
