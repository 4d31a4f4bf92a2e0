/* obs.c: observation encoders of a policy: FiLM conditioning and spatial-softmax keypoints.
 *
 * Both are compositions of core ops (linear, slice, permute, softmax, matmul), so their
 * gradients are the ops' own; tests/unit_action.c checks them against a PyTorch rendering of
 * robomimic's SpatialSoftmax and of FiLM.
 */
#include "action.h"

ts_tensor *ts_film(ts_ctx *c, const ts_nn_linear *lin, const ts_tensor *x, const ts_tensor *e) {
    char s[96];
    TS_CHECK(x->ndim == 3 && e->ndim == 2 && ts_dim(e, 0) == ts_dim(x, 0) &&
                 ts_dim(lin->w, 0) == 2 * ts_dim(x, 2),
             "film: x is %s, e has %lld rows, the linear gives %lld values",
             ts_shape_str(x, s, sizeof s), (long long)ts_dim(e, 0), (long long)ts_dim(lin->w, 0));
    int64_t W = ts_dim(x, 2);
    ts_tensor *gb = ts_nn_linear_forward(c, lin, e);                 /* (n, 2W) */
    ts_tensor *gamma = ts_slice(c, gb, 1, 0, W), *beta = ts_slice(c, gb, 1, W, 2 * W);
    /* tokens first, so that (n, W) broadcasts over them */
    ts_tensor *t = ts_permute(c, x, (const int[]){ 1, 0, 2 });       /* (M, n, W) */
    t = ts_add(c, ts_add(c, t, ts_mul(c, t, gamma)), beta);
    return ts_permute(c, t, (const int[]){ 1, 0, 2 });
}

ts_tensor *ts_spatial_softmax(ts_ctx *c, const ts_nn_linear *lin, const ts_tensor *tokens,
                              int gh, int gw) {
    char s[96];
    int64_t N = (int64_t)gh * gw;
    TS_CHECK(gh >= 1 && gw >= 1 && tokens->ndim == 3 && ts_dim(tokens, 1) == N,
             "spatial softmax: tokens are %s, expected (n, %lld, W) for a %d x %d grid",
             ts_shape_str(tokens, s, sizeof s), (long long)N, gh, gw);
    ts_tensor *logits = ts_transpose(c, ts_nn_linear_forward(c, lin, tokens), 1, 2); /* (n,K,N) */
    ts_tensor *grid = ts_new_f32(c, 2, TS_SHAPE(N, 2));
    for (int r = 0; r < gh; r++)
        for (int q = 0; q < gw; q++) { /* numpy's linspace: start + i * step, the last exact */
            float *g = ts_f32(grid) + 2 * ((int64_t)r * gw + q);
            g[0] = gw == 1 || q < gw - 1 ? (float)(q * (2.0 / (gw > 1 ? gw - 1 : 1)) - 1.0) : 1.0f;
            g[1] = gh == 1 || r < gh - 1 ? (float)(r * (2.0 / (gh > 1 ? gh - 1 : 1)) - 1.0) : 1.0f;
        }
    return ts_matmul(c, ts_softmax(c, logits), grid, 0);
}
