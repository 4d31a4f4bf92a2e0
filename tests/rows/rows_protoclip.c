/* Rows for ProtoCLIP's objective (core/objectives/protoclip.c; see tests/rows.h): the
 * projection head in training and eval mode, the prototype loss with soft (T = 0.01) and hard
 * targets, Prototype Back Translation on its own (parity only: it has no gradient), and PBT
 * feeding both directions of the loss from fixed episode features, labels and positions.
 * Compositions of ops (op -1); tests/parity/cases_protoclip.py renders the official code.
 * Shapes as the Python cases: B 6 batch, K 5 prototypes, D 8 projected width, 20 episode
 * samples; the head maps 10 -> 16 -> 8. */
#include "../rows.h"

#include <math.h>

enum { N_IN = 10, HID = 16, OUT = 8, B = 6, K = 5, D = 8, N_EP = 20 };
/* Scale of the teacher prototypes: small enough that softmax(. / 0.01) stays soft, as for the
 * close centroids of a real episode, where larger ones would make it one-hot. */
#define TEACHER 0.05f

/* ---- the head: x, Linear 0 (w, b), BatchNorm 1 (w, b, running mean, running var), Linear 3 */

static int mk_head(ts_ctx *c, ts_rng *r, ts_tensor **in) {
    in[0] = row_randn(c, r, 2, TS_SHAPE(B, N_IN), 1.0f, 1);
    in[1] = row_randn(c, r, 2, TS_SHAPE(HID, N_IN), 0.3f, 1);
    in[2] = row_randn(c, r, 1, TS_SHAPE(HID), 0.1f, 1);
    in[3] = row_randn(c, r, 1, TS_SHAPE(HID), 0.2f, 1);
    for (int j = 0; j < HID; j++) ts_f32(in[3])[j] += 1.0f;
    in[4] = row_randn(c, r, 1, TS_SHAPE(HID), 0.2f, 1);
    in[5] = row_randn(c, r, 1, TS_SHAPE(HID), 0.5f, 0);
    in[6] = row_randn(c, r, 1, TS_SHAPE(HID), 1.0f, 0);
    for (int j = 0; j < HID; j++) ts_f32(in[6])[j] = 0.5f + fabsf(ts_f32(in[6])[j]);
    in[7] = row_randn(c, r, 2, TS_SHAPE(OUT, HID), 0.3f, 1);
    in[8] = row_randn(c, r, 1, TS_SHAPE(OUT), 0.1f, 1);
    return 9;
}
/* Moves each channel's batch-norm bias so that every ReLU input is at least 0.1 from the
 * kink, where finite differences of step 1e-2 would straddle it. The norm's output before
 * its bias is computed here as the op computes it in training (batch statistics) or eval mode. */
static void away_from_kink(ts_tensor **in, int training) {
    const float *x = ts_f32(in[0]), *w0 = ts_f32(in[1]), *b0 = ts_f32(in[2]);
    const float *gw = ts_f32(in[3]), *rm = ts_f32(in[5]), *rv = ts_f32(in[6]);
    float *gb = ts_f32(in[4]);
    for (int j = 0; j < HID; j++) {
        double h[B], mean = 0, var = 0, v[B];
        for (int i = 0; i < B; i++) {
            h[i] = b0[j];
            for (int t = 0; t < N_IN; t++) h[i] += (double)x[i * N_IN + t] * w0[j * N_IN + t];
            mean += h[i] / B;
        }
        for (int i = 0; i < B; i++) var += (h[i] - mean) * (h[i] - mean) / B;
        if (!training) { mean = rm[j]; var = rv[j]; }
        for (int i = 0; i < B; i++) v[i] = (h[i] - mean) / sqrt(var + 1e-5) * gw[j];
        for (int step = 0;; step++) {
            float b = gb[j] + (step % 2 ? 1.0f : -1.0f) * (float)((step + 1) / 2) * 0.05f;
            int ok = 1;
            for (int i = 0; i < B; i++) ok &= fabs(v[i] + b) >= 0.1;
            if (ok) { gb[j] = b; break; }
        }
    }
}
/* Under batch statistics the first Linear's bias has no gradient (the norm removes it). */
static int mk_head_train(ts_ctx *c, ts_rng *r, ts_tensor **in) {
    int n = mk_head(c, r, in);
    in[2]->requires_grad = 0;
    away_from_kink(in, 1);
    return n;
}
static int mk_head_eval(ts_ctx *c, ts_rng *r, ts_tensor **in) {
    int n = mk_head(c, r, in);
    away_from_kink(in, 0);
    return n;
}
static ts_tensor *head(ts_ctx *c, ts_tensor **in, int training) {
    ts_protoclip_head h = { .layers = 1 };
    h.fc[0] = (ts_nn_linear){ in[1], in[2] };
    h.bn_w[0] = in[3];
    h.bn_b[0] = in[4];
    h.bn_mean[0] = in[5];
    h.bn_var[0] = in[6];
    h.fc[1] = (ts_nn_linear){ in[7], in[8] };
    int keep = c->training;
    c->training = training;
    ts_tensor *y = ts_protoclip_head_forward(c, &h, in[0]);
    c->training = keep;
    return y;
}
static ts_tensor *fn_head_train(ts_ctx *c, ts_tensor **in) { return head(c, in, 1); }
static ts_tensor *fn_head_eval(ts_ctx *c, ts_tensor **in) { return head(c, in, 0); }

/* ---- the loss: f (B, D), student and teacher prototypes (K, D), labels (B), log-scale ---- */

static int mk_loss(ts_ctx *c, ts_rng *r, ts_tensor **in) {
    in[0] = row_randn(c, r, 2, TS_SHAPE(B, D), 0.4f, 1);
    in[1] = row_randn(c, r, 2, TS_SHAPE(K, D), 0.5f, 0);
    in[2] = row_randn(c, r, 2, TS_SHAPE(K, D), TEACHER, 0);
    in[3] = row_randint(c, r, 1, TS_SHAPE(B), K);
    in[4] = row_randn(c, r, 1, TS_SHAPE(1), 0.3f, 1);
    ts_f32(in[4])[0] += 1.0f;
    return 5;
}
static ts_tensor *fn_loss(ts_ctx *c, ts_tensor **in) {
    return ts_protoclip_proto_loss(c, in[0], in[1], in[2], in[3], in[4], 0.01f);
}
static ts_tensor *fn_loss_hard(ts_ctx *c, ts_tensor **in) {
    return ts_protoclip_proto_loss(c, in[0], in[1], NULL, in[3], in[4], -1.0f);
}

/* ---- PBT: episode features (N_EP, D) and teacher labels (N_EP) -> prototypes (K, D) ---- */

static ts_tensor *pbt(ts_ctx *c, const ts_tensor *feat, const ts_tensor *labels) {
    ts_tensor *out = ts_new_f32(c, 2, TS_SHAPE(K, feat->shape[1]));
    ts_protoclip_pbt(ts_f32(feat), ts_i32(labels), feat->shape[0], feat->shape[1], K,
                     ts_f32(out));
    return out;
}
static ts_tensor *fn_pbt(ts_ctx *c, ts_tensor **in) { return pbt(c, in[0], in[1]); }

/* ---- PBT into the loss: batch features fi, ft (B, D); episode features ei, et (N_EP, D);
 * episode labels li, lt (N_EP); centroids ci, ct (K, D); positions (B); log-scale (1) ---- */

static int mk_pbt_loss(ts_ctx *c, ts_rng *r, ts_tensor **in) {
    in[0] = row_randn(c, r, 2, TS_SHAPE(B, D), 0.4f, 1);
    in[1] = row_randn(c, r, 2, TS_SHAPE(B, D), 0.4f, 1);
    in[2] = row_randn(c, r, 2, TS_SHAPE(N_EP, D), 0.4f, 0);
    in[3] = row_randn(c, r, 2, TS_SHAPE(N_EP, D), 0.4f, 0);
    in[4] = row_randint(c, r, 1, TS_SHAPE(N_EP), K);
    in[5] = row_randint(c, r, 1, TS_SHAPE(N_EP), K);
    in[6] = row_randn(c, r, 2, TS_SHAPE(K, D), TEACHER, 0);
    in[7] = row_randn(c, r, 2, TS_SHAPE(K, D), TEACHER, 0);
    in[8] = row_randint(c, r, 1, TS_SHAPE(B), N_EP);
    in[9] = row_randn(c, r, 1, TS_SHAPE(1), 0.3f, 1);
    ts_f32(in[9])[0] += 1.0f;
    return 10;
}
/* labels[pos[i]] for the batch */
static ts_tensor *gather(ts_ctx *c, const ts_tensor *labels, const ts_tensor *pos) {
    ts_tensor *t = ts_new(c, TS_I32, 1, TS_SHAPE(pos->numel));
    for (int64_t i = 0; i < pos->numel; i++) ts_i32(t)[i] = ts_i32(labels)[ts_i32(pos)[i]];
    return t;
}
static ts_tensor *fn_pbt_loss(ts_ctx *c, ts_tensor **in) {
    ts_tensor *img_from_txt = pbt(c, in[2], in[5]), *txt_from_img = pbt(c, in[3], in[4]);
    ts_tensor *l_i2t = ts_protoclip_proto_loss(c, in[0], img_from_txt, in[7],
                                               gather(c, in[5], in[8]), in[9], 0.01f);
    ts_tensor *l_t2i = ts_protoclip_proto_loss(c, in[1], txt_from_img, in[6],
                                               gather(c, in[4], in[8]), in[9], 0.01f);
    return ts_scale(c, ts_add(c, l_i2t, l_t2i), 0.5f);
}

const test_row rows_protoclip[] = {
    { "protoclip_head_train", -1, mk_head_train, fn_head_train, 0, 1 },
    { "protoclip_head_eval", -1, mk_head_eval, fn_head_eval, 0, 1 },
    { "protoclip_proto_loss", -1, mk_loss, fn_loss, 0, 1 },
    { "protoclip_proto_loss_hard", -1, mk_loss, fn_loss_hard, 0, 1 },
    { "protoclip_pbt", -1, NULL, fn_pbt, 0, 1 },
    { "protoclip_pbt_loss", -1, mk_pbt_loss, fn_pbt_loss, 0, 1 },
    ROW_END,
};
