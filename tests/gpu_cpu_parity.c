/* gpu_cpu_parity.c: the CUDA kernels against the CPU backend's ops, forward and backward.
 *
 * For each op that both backends have: the same seeded inputs go through the CPU op on a ts_ctx
 * (its gradients from ts_backward_with and a random upstream gradient, or from the scalar loss)
 * and through the CUDA kernels, whose outputs are poisoned with NaN first and whose gradients
 * start at zero. The CPU results are the reference (the CPU backend is itself checked against
 * PyTorch by test_parity): relative error ||gpu - cpu|| / ||cpu|| under 1e-5 in float32 and
 * under 1e-2 for bf16 products; a NaN never passes. tests/gpu_parity.c checks the same kernels
 * against float64 formulas; this program checks that the two backends agree as tessera runs
 * them. Needs a GPU and the whole library; bench/gpu_quickstart.sh builds and runs it there.
 * The exit status is the number of failed checks.
 */
#define GPU_PROG "gpu_cpu_parity"
#include "gpu_common.h"

#include <string.h>

static ts_ctx *C;

/* a CPU leaf tensor holding host data, with a gradient */
static ts_tensor *leaf(const float *h, int ndim, const int64_t *shape) {
    ts_tensor *t = ts_from_f32(C, ndim, shape, h);
    t->requires_grad = 1;
    return t;
}

/* report the device values at d against the CPU tensor t (or its gradient) */
static void against(const char *what, const float *d, const ts_tensor *t, double tol) {
    double *ref = dcopy(ts_f32(t), t->numel);
    float *h = get(d, t->numel);
    report(what, rel(h, ref, t->numel), tol);
    free(ref), free(h);
}

static float *dzero(int64_t n) {
    ts_err err = { 0 };
    float *d = dev(NULL, (size_t)n * 4);
    die(ts_cuda_zero(G, d, (size_t)n * 4, &err), &err);
    return d;
}

static void check_activations(void) {
    ts_err err = { 0 };
    const int64_t R = 311, Cn = 257, n = R * Cn;
    float *x = randn(n, 3), *dy = randn(n, 1);
    const char *names[4] = { "gelu", "quick_gelu", "gelu_tanh", "mish" };
    for (int a = 0; a < 4; a++) {
        ts_tensor *tx = leaf(x, 2, TS_SHAPE(R, Cn));
        ts_tensor *y = a == 0 ? ts_gelu(C, tx) : a == 1 ? ts_quick_gelu(C, tx)
                     : a == 2 ? ts_gelu_tanh(C, tx) : ts_mish(C, tx);
        ts_backward_with(C, y, ts_from_f32(C, 2, TS_SHAPE(R, Cn), dy));
        float *d_x = dev(x, (size_t)n * 4), *d_dy = dev(dy, (size_t)n * 4);
        float *d_y = dev(NULL, (size_t)n * 4), *d_dx = dzero(n);
        if (a == 0) {
            die(ts_cuda_gelu(G, d_x, d_y, n, &err), &err);
            die(ts_cuda_gelu_backward(G, d_x, d_dy, d_dx, n, &err), &err);
        } else {
            ts_cuda_act k = a == 1 ? TS_CUDA_QUICK_GELU : a == 2 ? TS_CUDA_GELU_TANH : TS_CUDA_MISH;
            die(ts_cuda_activation(G, k, d_x, d_y, n, &err), &err);
            die(ts_cuda_activation_backward(G, k, d_x, d_dy, d_dx, n, &err), &err);
        }
        char what[96];
        against(names[a], d_y, y, 1e-5);
        snprintf(what, sizeof what, "%s backward", names[a]);
        against(what, d_dx, tx->grad, 1e-5);
        ts_ctx_reset(C);
    }
    free(x), free(dy);
}

static void check_bias_gelu_add(void) {
    ts_err err = { 0 };
    const int64_t R = 300, Cn = 384, n = R * Cn;
    float *x = randn(n, 2), *b = randn(Cn, 1), *dy = randn(n, 1);
    ts_tensor *tx = leaf(x, 2, TS_SHAPE(R, Cn)), *tb = leaf(b, 1, TS_SHAPE(Cn));
    ts_tensor *y = ts_bias_gelu(C, tx, tb);
    ts_backward_with(C, y, ts_from_f32(C, 2, TS_SHAPE(R, Cn), dy));
    float *d_x = dev(x, (size_t)n * 4), *d_b = dev(b, (size_t)Cn * 4);
    float *d_dy = dev(dy, (size_t)n * 4), *d_y = dev(NULL, (size_t)n * 4);
    float *d_dx = dzero(n), *d_db = dzero(Cn);
    die(ts_cuda_bias_gelu(G, d_x, d_b, d_y, R, Cn, &err), &err);
    die(ts_cuda_bias_gelu_backward(G, d_x, d_b, d_dy, d_dx, d_db, R, Cn, &err), &err);
    against("bias_gelu", d_y, y, 1e-5);
    against("bias_gelu backward dx", d_dx, tx->grad, 1e-5);
    against("bias_gelu backward db", d_db, tb->grad, 1e-5);
    ts_ctx_reset(C);
    /* add with the second operand broadcast over rows */
    ts_tensor *sum = ts_add(C, ts_from_f32(C, 2, TS_SHAPE(R, Cn), x),
                            ts_from_f32(C, 1, TS_SHAPE(Cn), b));
    float *d_s = dev(NULL, (size_t)n * 4);
    die(ts_cuda_add(G, d_x, d_b, d_s, n, Cn, &err), &err);
    against("add (broadcast over rows)", d_s, sum, 1e-6);
    ts_ctx_reset(C);
    free(x), free(b), free(dy);
}

static void check_rows(int64_t R, int64_t Cn) {
    ts_err err = { 0 };
    const int64_t n = R * Cn;
    float *x = randn(n, 3), *w = randn(Cn, 1), *b = randn(Cn, 1), *dy = randn(n, 1);
    char what[96];
    /* layernorm */
    ts_tensor *tx = leaf(x, 2, TS_SHAPE(R, Cn)), *tw = leaf(w, 1, TS_SHAPE(Cn));
    ts_tensor *tb = leaf(b, 1, TS_SHAPE(Cn));
    ts_tensor *y = ts_layernorm(C, tx, tw, tb, 1e-5f);
    ts_backward_with(C, y, ts_from_f32(C, 2, TS_SHAPE(R, Cn), dy));
    float *d_x = dev(x, (size_t)n * 4), *d_w = dev(w, (size_t)Cn * 4);
    float *d_b = dev(b, (size_t)Cn * 4);
    float *d_dy = dev(dy, (size_t)n * 4), *d_y = dev(NULL, (size_t)n * 4);
    float *d_mean = dev(NULL, (size_t)R * 4), *d_rstd = dev(NULL, (size_t)R * 4);
    float *d_dx = dzero(n), *d_dw = dzero(Cn), *d_db = dzero(Cn);
    die(ts_cuda_layernorm(G, d_x, d_w, d_b, d_y, d_mean, d_rstd, R, Cn, 1e-5f, &err), &err);
    die(ts_cuda_layernorm_backward(G, d_x, d_w, d_mean, d_rstd, d_dy, d_dx, d_dw, d_db, R, Cn,
                                   &err), &err);
    snprintf(what, sizeof what, "layernorm %lldx%lld", (long long)R, (long long)Cn);
    against(what, d_y, y, 1e-5);
    snprintf(what, sizeof what, "layernorm backward dx, dw, db %lldx%lld", (long long)R,
             (long long)Cn);
    against(what, d_dx, tx->grad, 1e-5);
    against("  dw", d_dw, tw->grad, 1e-5);
    against("  db", d_db, tb->grad, 1e-5);
    ts_ctx_reset(C);
    /* softmax and log-softmax */
    for (int lg = 0; lg < 2; lg++) {
        tx = leaf(x, 2, TS_SHAPE(R, Cn));
        y = lg ? ts_log_softmax(C, tx) : ts_softmax(C, tx);
        ts_backward_with(C, y, ts_from_f32(C, 2, TS_SHAPE(R, Cn), dy));
        d_y = dev(NULL, (size_t)n * 4), d_dx = dzero(n);
        if (lg) {
            die(ts_cuda_log_softmax(G, d_x, d_y, R, Cn, &err), &err);
            die(ts_cuda_log_softmax_backward(G, d_y, d_dy, d_dx, R, Cn, &err), &err);
        } else {
            die(ts_cuda_softmax(G, d_x, d_y, R, Cn, &err), &err);
            die(ts_cuda_softmax_backward(G, d_y, d_dy, d_dx, R, Cn, &err), &err);
        }
        snprintf(what, sizeof what, "%s %lldx%lld", lg ? "log_softmax" : "softmax", (long long)R,
                 (long long)Cn);
        against(what, d_y, y, 1e-5);
        snprintf(what, sizeof what, "%s backward", lg ? "log_softmax" : "softmax");
        against(what, d_dx, tx->grad, 1e-5);
        ts_ctx_reset(C);
    }
    /* L2 normalisation of the rows */
    tx = leaf(x, 2, TS_SHAPE(R, Cn));
    y = ts_l2_normalize(C, tx, 1e-12f);
    ts_backward_with(C, y, ts_from_f32(C, 2, TS_SHAPE(R, Cn), dy));
    d_y = dev(NULL, (size_t)n * 4), d_dx = dzero(n);
    float *d_norm = dev(NULL, (size_t)R * 4);
    die(ts_cuda_l2_normalize(G, d_x, d_y, d_norm, R, Cn, &err), &err);
    die(ts_cuda_l2_normalize_backward(G, d_y, d_norm, d_dy, d_dx, R, Cn, &err), &err);
    against("l2_normalize", d_y, y, 1e-5);
    against("l2_normalize backward", d_dx, tx->grad, 1e-5);
    ts_ctx_reset(C);
    free(x), free(w), free(b), free(dy);
}

static void check_cross_entropy(int64_t N, int64_t K, float smoothing) {
    ts_err err = { 0 };
    float *x = randn(N * K, 3);
    int32_t *t = malloc((size_t)N * sizeof *t);
    for (int64_t i = 0; i < N; i++) t[i] = i % 7 == 3 ? -100 : (int32_t)(uniform() * (double)K);
    ts_tensor *tx = leaf(x, 2, TS_SHAPE(N, K));
    ts_tensor *tt = ts_new(C, TS_I32, 1, TS_SHAPE(N));
    memcpy(ts_i32(tt), t, (size_t)N * sizeof *t);
    ts_tensor *loss = ts_cross_entropy(C, tx, tt, -100, smoothing);
    ts_backward(C, loss);
    float one = 1.0f;
    float *d_x = dev(x, (size_t)(N * K) * 4), *d_loss = dev(NULL, 4), *d_one = dev(&one, 4);
    int32_t *d_t = dev(t, (size_t)N * sizeof *t);
    float *d_dx = dzero(N * K);
    die(ts_cuda_cross_entropy(G, d_x, d_t, d_loss, N, K, -100, smoothing, &err), &err);
    die(ts_cuda_cross_entropy_backward(G, d_x, d_t, d_one, d_dx, N, K, -100, smoothing, &err),
        &err);
    char what[96];
    snprintf(what, sizeof what, "cross_entropy %lldx%lld, smoothing %g", (long long)N,
             (long long)K, (double)smoothing);
    against(what, d_loss, loss, 1e-5);
    against("cross_entropy backward", d_dx, tx->grad, 1e-5);
    ts_ctx_reset(C);
    free(x), free(t);
}

static void check_attention(int64_t B, int64_t H, int64_t T, int64_t D, int causal, int pad) {
    ts_err err = { 0 };
    const int64_t n = B * H * T * D;
    float *q = randn(n, 1), *k = randn(n, 1), *v = randn(n, 1), *dy = randn(n, 1);
    uint8_t *kp = NULL;
    ts_tensor *tkp = NULL;
    if (pad) { /* the last b + 1 keys of batch row b are padding */
        kp = calloc((size_t)(B * T), 1);
        for (int64_t b = 0; b < B; b++)
            for (int64_t j = T - 1 - b; j < T; j++) kp[b * T + j] = 1;
        tkp = ts_new(C, TS_U8, 2, TS_SHAPE(B, T));
        memcpy(tkp->data, kp, (size_t)(B * T));
    }
    ts_tensor *tq = leaf(q, 4, TS_SHAPE(B, H, T, D)), *tk = leaf(k, 4, TS_SHAPE(B, H, T, D));
    ts_tensor *tv = leaf(v, 4, TS_SHAPE(B, H, T, D));
    ts_tensor *y = ts_attention(C, tq, tk, tv, causal, tkp, 0.0f);
    ts_backward_with(C, y, ts_from_f32(C, 4, TS_SHAPE(B, H, T, D), dy));
    float *d_q = dev(q, (size_t)n * 4), *d_k = dev(k, (size_t)n * 4), *d_v = dev(v, (size_t)n * 4);
    float *d_dy = dev(dy, (size_t)n * 4), *d_y = dev(NULL, (size_t)n * 4);
    float *d_lse = dev(NULL, (size_t)(B * H * T) * 4);
    float *d_dq = dzero(n), *d_dk = dzero(n), *d_dv = dzero(n);
    uint8_t *d_kp = kp ? dev(kp, (size_t)(B * T)) : NULL;
    die(ts_cuda_attention(G, d_q, d_k, d_v, d_kp, d_y, d_lse, B, H, T, T, D, causal, 0.0f, &err),
        &err);
    die(ts_cuda_attention_backward(G, d_q, d_k, d_v, d_kp, d_y, d_lse, d_dy, d_dq, d_dk, d_dv, B,
                                   H, T, T, D, causal, 0.0f, &err), &err);
    char what[96];
    snprintf(what, sizeof what, "attention %lldx%lldx%lldx%lld%s%s", (long long)B, (long long)H,
             (long long)T, (long long)D, causal ? " causal" : "", pad ? " key padding" : "");
    against(what, d_y, y, 1e-5);
    against("  backward dq", d_dq, tq->grad, 1e-5);
    against("  backward dk", d_dk, tk->grad, 1e-5);
    against("  backward dv", d_dv, tv->grad, 1e-5);
    ts_ctx_reset(C);
    free(q), free(k), free(v), free(dy), free(kp);
}

/* ts_dwconv2d (general 0) or ts_conv2d against conv.cu, forward and the three gradients;
 * `at`: the images the general convolution's columns scratch holds */
static void check_conv(int general, int64_t B, int64_t Cn, int64_t H, int64_t W, int64_t Cout,
                       int64_t k, int stride, int pad, int64_t at) {
    ts_err err = { 0 };
    ts_cuda_conv cv = { B, Cn, H, W, general ? Cout : 0, k, k, stride, pad };
    int64_t Wo, Ho = ts_cuda_conv_out(&cv, &Wo), Co = general ? Cout : Cn;
    int64_t nx = B * Cn * H * W, nw = Co * (general ? Cn : 1) * k * k, ny = B * Co * Ho * Wo;
    float *x = randn(nx, 1), *w = randn(nw, 1), *b = randn(Co, 1), *dy = randn(ny, 1);
    ts_tensor *tx = leaf(x, 4, TS_SHAPE(B, Cn, H, W)), *tb = leaf(b, 1, TS_SHAPE(Co));
    ts_tensor *tw = leaf(w, 4, TS_SHAPE(Co, general ? Cn : 1, k, k));
    ts_tensor *y = general ? ts_conv2d(C, tx, tw, tb, stride, pad)
                           : ts_dwconv2d(C, tx, tw, tb, stride, pad);
    ts_backward_with(C, y, ts_from_f32(C, 4, TS_SHAPE(B, Co, Ho, Wo), dy));
    float *d_x = dev(x, (size_t)nx * 4), *d_w = dev(w, (size_t)nw * 4);
    float *d_b = dev(b, (size_t)Co * 4), *d_dy = dev(dy, (size_t)ny * 4);
    float *d_y = dev(NULL, (size_t)ny * 4), *d_dx = dzero(nx), *d_dw = dzero(nw);
    float *d_db = dzero(Co);
    int64_t ncols = at * Cn * k * k * Ho * Wo;
    float *d_cols = general ? dev(NULL, (size_t)ncols * 4) : NULL;
    if (general) {
        die(ts_cuda_conv2d(G, d_x, d_w, d_b, d_y, &cv, d_cols, ncols, &err), &err);
        die(ts_cuda_conv2d_backward(G, d_x, d_w, d_dy, d_dx, d_dw, d_db, &cv, d_cols, ncols,
                                    &err), &err);
    } else {
        die(ts_cuda_dwconv2d(G, d_x, d_w, d_b, d_y, &cv, &err), &err);
        die(ts_cuda_dwconv2d_backward(G, d_x, d_w, d_dy, d_dx, d_dw, d_db, &cv, &err), &err);
    }
    char what[96];
    snprintf(what, sizeof what, "%s %lldx%lldx%lldx%lld k%lld s%d p%d", general ? "conv2d" :
             "dwconv2d", (long long)B, (long long)Cn, (long long)H, (long long)W, (long long)k,
             stride, pad);
    against(what, d_y, y, 1e-5);
    against("  backward dx", d_dx, tx->grad, 1e-5);
    against("  backward dw", d_dw, tw->grad, 1e-5);
    against("  backward db", d_db, tb->grad, 1e-5);
    ts_ctx_reset(C);
    free(x), free(w), free(b), free(dy);
}

/* ts_add, ts_sub, ts_mul of a (R, Cn) with b of nb values (Cn, 1 or R Cn), and ts_scale,
 * ts_relu, ts_exp, ts_log_sigmoid of a, against ts_cuda_binary and ts_cuda_unary */
static void check_elementwise(int64_t R, int64_t Cn) {
    ts_err err = { 0 };
    int64_t n = R * Cn, nbs[3] = { Cn, 1, R * Cn };
    const char *bn[3] = { "add", "sub", "mul" }, *un[4] = { "scale", "relu", "exp",
                                                             "log_sigmoid" };
    float *a = randn(n, 3), *b = randn(n, 1), *dy = randn(n, 1);
    float *d_a = dev(a, (size_t)n * 4), *d_b = dev(b, (size_t)n * 4);
    float *d_dy = dev(dy, (size_t)n * 4), *d_y = dev(NULL, (size_t)n * 4);
    char what[96];
    for (int op = 0; op < 3; op++)
        for (int k = 0; k < 3; k++) {
            int64_t nb = nbs[k];
            ts_tensor *ta = leaf(a, 2, TS_SHAPE(R, Cn));
            ts_tensor *tb = nb == n ? leaf(b, 2, TS_SHAPE(R, Cn)) : leaf(b, 1, TS_SHAPE(nb));
            ts_tensor *y = op == 0 ? ts_add(C, ta, tb) : op == 1 ? ts_sub(C, ta, tb)
                                                       : ts_mul(C, ta, tb);
            ts_backward_with(C, y, ts_from_f32(C, 2, TS_SHAPE(R, Cn), dy));
            float *d_da = dzero(n), *d_db = dzero(nb);
            die(ts_cuda_binary(G, (ts_cuda_binop)op, d_a, d_b, d_y, n, nb, &err), &err);
            die(ts_cuda_binary_backward(G, (ts_cuda_binop)op, d_a, d_b, d_dy, d_da, d_db, n,
                                        nb, &err), &err);
            snprintf(what, sizeof what, "%s (%lld, %lld) by %lld", bn[op], (long long)R,
                     (long long)Cn, (long long)nb);
            against(what, d_y, y, 1e-6);
            against("  backward da", d_da, ta->grad, 1e-6);
            against("  backward db", d_db, tb->grad, 1e-5);
            ts_ctx_reset(C);
        }
    for (int op = 0; op < 4; op++) {
        ts_tensor *ta = leaf(a, 2, TS_SHAPE(R, Cn));
        ts_tensor *y = op == 0 ? ts_scale(C, ta, -1.7f) : op == 1 ? ts_relu(C, ta)
                     : op == 2 ? ts_exp(C, ta) : ts_log_sigmoid(C, ta);
        ts_backward_with(C, y, ts_from_f32(C, 2, TS_SHAPE(R, Cn), dy));
        float *d_da = dzero(n);
        die(ts_cuda_unary(G, (ts_cuda_unop)op, d_a, d_y, n, -1.7f, &err), &err);
        die(ts_cuda_unary_backward(G, (ts_cuda_unop)op, d_a, d_y, d_dy, d_da, n, -1.7f, &err),
            &err);
        against(un[op], d_y, y, 1e-5);
        snprintf(what, sizeof what, "  %s backward", un[op]);
        against(what, d_da, ta->grad, 1e-5);
        ts_ctx_reset(C);
    }
    free(a), free(b), free(dy);
}

/* ts_sum / ts_mean over dim 1 of (O, R, I) against ts_cuda_reduce, and the backward */
static void check_reduce(int64_t O, int64_t R, int64_t I, int mean) {
    ts_err err = { 0 };
    int64_t n = O * R * I;
    float *a = randn(n, 1), *dy = randn(O * I, 1);
    ts_tensor *ta = leaf(a, 3, TS_SHAPE(O, R, I));
    ts_tensor *y = mean ? ts_mean(C, ta, 1) : ts_sum(C, ta, 1);
    ts_backward_with(C, y, ts_from_f32(C, 2, TS_SHAPE(O, I), dy));
    float *d_a = dev(a, (size_t)n * 4), *d_dy = dev(dy, (size_t)(O * I) * 4);
    float *d_y = dev(NULL, (size_t)(O * I) * 4), *d_da = dzero(n);
    float scale = mean ? 1.0f / (float)R : 1.0f;
    die(ts_cuda_reduce(G, d_a, d_y, O, R, I, scale, &err), &err);
    die(ts_cuda_reduce_backward(G, d_dy, d_da, O, R, I, scale, &err), &err);
    char what[96];
    snprintf(what, sizeof what, "%s over (%lld, %lld, %lld)", mean ? "mean" : "sum",
             (long long)O, (long long)R, (long long)I);
    against(what, d_y, y, 1e-5);
    against("  backward", d_da, ta->grad, 1e-5);
    ts_ctx_reset(C);
    free(a), free(dy);
}

/* ts_permute (B, T, H, D) -> (B, H, T, D), then ts_slice of H's rows [1, H) and ts_concat of
 * it with the first row, against ts_cuda_permute and ts_cuda_copy_rows, forward and backward */
static void check_layouts(int64_t B, int64_t T, int64_t H, int64_t D) {
    ts_err err = { 0 };
    int64_t n = B * T * H * D, row = T * D;
    float *x = randn(n, 1), *dy = randn(n, 1);
    ts_tensor *tx = leaf(x, 4, TS_SHAPE(B, T, H, D));
    int perm[4] = { 0, 2, 1, 3 };
    ts_tensor *p = ts_permute(C, tx, perm);
    ts_tensor *parts[2] = { ts_slice(C, p, 1, 1, H), ts_slice(C, p, 1, 0, 1) };
    ts_tensor *y = ts_concat(C, parts, 2, 1); /* the heads rotated by one */
    ts_backward_with(C, y, ts_from_f32(C, 4, TS_SHAPE(B, H, T, D), dy));
    float *d_x = dev(x, (size_t)n * 4), *d_dy = dev(dy, (size_t)n * 4);
    float *d_p = dev(NULL, (size_t)n * 4), *d_y = dev(NULL, (size_t)n * 4);
    float *d_dp = dzero(n), *d_dx = dzero(n);
    die(ts_cuda_permute(G, d_x, d_p, 4, TS_SHAPE(B, T, H, D), perm, 0, &err), &err);
    die(ts_cuda_copy_rows(G, d_p, H, 1, d_y, H, 0, B, H - 1, row, 0, &err), &err);
    die(ts_cuda_copy_rows(G, d_p, H, 0, d_y, H, H - 1, B, 1, row, 0, &err), &err);
    die(ts_cuda_copy_rows(G, d_dy, H, 0, d_dp, H, 1, B, H - 1, row, 1, &err), &err);
    die(ts_cuda_copy_rows(G, d_dy, H, H - 1, d_dp, H, 0, B, 1, row, 1, &err), &err);
    int inv[4] = { 0, 2, 1, 3 };
    die(ts_cuda_permute(G, d_dp, d_dx, 4, TS_SHAPE(B, H, T, D), inv, 1, &err), &err);
    against("permute, slice, concat (heads rotated)", d_y, y, 1e-6);
    against("  backward", d_dx, tx->grad, 1e-6);
    ts_ctx_reset(C);
    free(x), free(dy);
}

/* ts_batchnorm1d in training (running statistics updated) and in eval */
static void check_batchnorm(int64_t N, int64_t Cn, int training) {
    ts_err err = { 0 };
    int64_t n = N * Cn;
    float *x = randn(n, 2), *w = randn(Cn, 1), *b = randn(Cn, 1), *dy = randn(n, 1);
    float *rm = randn(Cn, 1), *rv = randn(Cn, 0);
    for (int64_t c = 0; c < Cn; c++) rv[c] = 0.5f + 0.01f * (float)c;
    float *d_rm = dev(rm, (size_t)Cn * 4), *d_rv = dev(rv, (size_t)Cn * 4);
    ts_tensor *trm = ts_from_f32(C, 1, TS_SHAPE(Cn), rm);
    ts_tensor *trv = ts_from_f32(C, 1, TS_SHAPE(Cn), rv);
    ts_tensor *tx = leaf(x, 2, TS_SHAPE(N, Cn)), *tw = leaf(w, 1, TS_SHAPE(Cn));
    ts_tensor *tb = leaf(b, 1, TS_SHAPE(Cn));
    C->training = training;
    ts_tensor *y = ts_batchnorm1d(C, tx, tw, tb, trm, trv, 0.1f, 1e-5f);
    ts_backward_with(C, y, ts_from_f32(C, 2, TS_SHAPE(N, Cn), dy));
    C->training = 0;
    float *d_x = dev(x, (size_t)n * 4), *d_w = dev(w, (size_t)Cn * 4);
    float *d_b = dev(b, (size_t)Cn * 4);
    float *d_dy = dev(dy, (size_t)n * 4), *d_y = dev(NULL, (size_t)n * 4);
    float *d_mean = dev(NULL, (size_t)Cn * 4), *d_rstd = dev(NULL, (size_t)Cn * 4);
    float *d_dx = dzero(n), *d_dw = dzero(Cn), *d_db = dzero(Cn);
    die(ts_cuda_batchnorm1d(G, d_x, d_w, d_b, d_rm, d_rv, training, 0.1f, 1e-5f, d_y, d_mean,
                            d_rstd, N, Cn, &err), &err);
    die(ts_cuda_batchnorm1d_backward(G, d_x, d_w, d_dy, d_mean, d_rstd, training, d_dx, d_dw,
                                     d_db, N, Cn, &err), &err);
    char what[96];
    snprintf(what, sizeof what, "batchnorm1d %lldx%lld %s", (long long)N, (long long)Cn,
             training ? "training" : "eval");
    against(what, d_y, y, 1e-5);
    against("  backward dx", d_dx, tx->grad, 1e-5);
    against("  backward dw", d_dw, tw->grad, 1e-5);
    against("  backward db", d_db, tb->grad, 1e-5);
    against("  running mean", d_rm, trm, 1e-5);
    against("  running var", d_rv, trv, 1e-5);
    ts_ctx_reset(C);
    free(x), free(w), free(b), free(dy), free(rm), free(rv);
}

/* ts_stripe_attention (CSWin) against stripe.cu, forward and the gradients of qkv and LePE */
static void check_stripe(int64_t B, int64_t Hm, int64_t Wm, int64_t Cn, int64_t heads,
                         int64_t sw) {
    ts_err err = { 0 };
    int64_t N = Hm * Wm, nq = B * N * 3 * Cn, no = B * N * Cn;
    float *qkv = randn(nq, 1), *w = randn(Cn * 9, 1), *b = randn(Cn, 1), *dy = randn(no, 1);
    ts_tensor *tq = leaf(qkv, 3, TS_SHAPE(B, N, 3 * Cn)), *tw = leaf(w, 4, TS_SHAPE(Cn, 1, 3, 3));
    ts_tensor *tb = leaf(b, 1, TS_SHAPE(Cn));
    ts_tensor *y = ts_stripe_attention(C, tq, tw, tb, Hm, Wm, heads, sw, 0.0f);
    ts_backward_with(C, y, ts_from_f32(C, 3, TS_SHAPE(B, N, Cn), dy));
    ts_cuda_stripe st = { B, Hm, Wm, Cn, heads, sw, 0.0f };
    int64_t nwork = ts_cuda_stripe_work(&st);
    float *d_q = dev(qkv, (size_t)nq * 4), *d_w = dev(w, (size_t)Cn * 36);
    float *d_b = dev(b, (size_t)Cn * 4), *d_dy = dev(dy, (size_t)no * 4);
    float *d_y = dev(NULL, (size_t)no * 4), *d_work = dev(NULL, (size_t)nwork * 4);
    float *d_dq = dzero(nq), *d_dw = dzero(Cn * 9), *d_db = dzero(Cn);
    die(ts_cuda_stripe_attention(G, d_q, d_w, d_b, d_y, &st, d_work, &err), &err);
    die(ts_cuda_stripe_attention_backward(G, d_w, d_dy, d_dq, d_dw, d_db, &st, d_work, &err),
        &err);
    char what[96];
    snprintf(what, sizeof what, "stripe attention %lldx%lldx%lld C%lld h%lld sw%lld",
             (long long)B, (long long)Hm, (long long)Wm, (long long)Cn, (long long)heads,
             (long long)sw);
    against(what, d_y, y, 1e-5);
    against("  backward dqkv", d_dq, tq->grad, 1e-5);
    against("  backward dlepe_w", d_dw, tw->grad, 1e-5);
    against("  backward dlepe_b", d_db, tb->grad, 1e-5);
    ts_ctx_reset(C);
    free(qkv), free(w), free(b), free(dy);
}

/* ts_embedding of a (V, W) table and ts_index_select along dim 1 of (4, L, 96), repeated
 * indices, against ts_cuda_index_rows; the device's dropout against ts_dropout's function
 * (its mask is its own: the keep rate within 5 sigma, y and dx from the mask) */
static void check_gathers_dropout(int64_t V, int64_t W, int64_t n) {
    ts_err err = { 0 };
    int32_t *ids = malloc((size_t)n * sizeof *ids);
    for (int64_t i = 0; i < n; i++) ids[i] = (int32_t)((i * 7919 + i * i) % V);
    int32_t *d_ids = dev(ids, (size_t)n * 4);
    for (int sel = 0; sel < 2; sel++) {
        int64_t O = sel ? 4 : 1, I = sel ? 96 : W, na = O * V * I, ny = O * n * I;
        float *a = randn(na, 1), *dy = randn(ny, 1);
        ts_tensor *ti = ts_new(C, TS_I32, 1, TS_SHAPE(n));
        memcpy(ti->data, ids, (size_t)n * 4);
        ts_tensor *ta = sel ? leaf(a, 3, TS_SHAPE(O, V, I)) : leaf(a, 2, TS_SHAPE(V, W));
        ts_tensor *y = sel ? ts_index_select(C, ta, 1, ti) : ts_embedding(C, ta, ti);
        ts_backward_with(C, y, ts_from_f32(C, y->ndim, y->shape, dy));
        float *d_a = dev(a, (size_t)na * 4), *d_dy = dev(dy, (size_t)ny * 4);
        float *d_y = dev(NULL, (size_t)ny * 4), *d_da = dzero(na);
        die(ts_cuda_index_rows(G, d_a, d_ids, d_y, O, V, n, I, &err), &err);
        die(ts_cuda_index_rows_backward(G, d_dy, d_ids, d_da, O, V, n, I, &err), &err);
        char what[96];
        snprintf(what, sizeof what, "%s (%lld, %lld, %lld), %lld indices",
                 sel ? "index_select" : "embedding", (long long)O, (long long)V, (long long)I,
                 (long long)n);
        against(what, d_y, y, 1e-6);
        against("  backward", d_da, ta->grad, 1e-6);
        ts_ctx_reset(C);
        free(a), free(dy);
    }
    free(ids);
    const int64_t nd = 1 << 20;
    const float p = 0.1f;
    float *x = randn(nd, 1), *dy = randn(nd, 1);
    float *d_x = dev(x, (size_t)nd * 4), *d_dy = dev(dy, (size_t)nd * 4);
    float *d_y = dev(NULL, (size_t)nd * 4), *d_dx = dzero(nd);
    uint8_t *d_m = dev(NULL, (size_t)nd);
    die(ts_cuda_dropout(G, d_x, d_y, d_m, nd, p, 1234, &err), &err);
    die(ts_cuda_dropout_backward(G, d_dy, d_m, d_dx, nd, p, &err), &err);
    float *y = get(d_y, nd), *dx = get(d_dx, nd);
    uint8_t *m = malloc((size_t)nd);
    die(ts_cuda_download(G, m, d_m, (size_t)nd, &err), &err);
    int64_t kept = 0, wrong = 0;
    float s = 1.0f / (1.0f - p);
    for (int64_t i = 0; i < nd; i++) {
        kept += m[i] == 1;
        wrong += m[i] > 1 || y[i] != x[i] * (s * (float)m[i]) || dx[i] != dy[i] * (s * (float)m[i]);
    }
    double sd = sqrt(p * (1.0 - p) * (double)nd);
    report("dropout p 0.1: |kept - 0.9 n| / n", fabs((double)kept - 0.9 * (double)nd) / (double)nd,
           5.0 * sd / (double)nd);
    report("  y and dx from the mask (count wrong)", (double)wrong, 0.5);
    free(x), free(dy), free(y), free(dx), free(m);
}

/* ts_attention_kv (cross-attention on the projections, key padding) against the device's */
static void check_attention_kv(int64_t B, int64_t Tq, int64_t Tk, int64_t Cn, int64_t heads) {
    ts_err err = { 0 };
    int64_t nq = B * Tq * Cn, nkv = B * Tk * 2 * Cn;
    float *q = randn(nq, 1), *kv = randn(nkv, 1), *dy = randn(nq, 1);
    uint8_t *kp = calloc((size_t)(B * Tk), 1);
    for (int64_t b = 0; b < B; b++) /* the last 3 b keys of row b are padding */
        for (int64_t j = Tk - 3 * b; j < Tk; j++) kp[b * Tk + j] = 1;
    ts_tensor *tkp = ts_new(C, TS_U8, 2, TS_SHAPE(B, Tk));
    memcpy(tkp->data, kp, (size_t)(B * Tk));
    ts_tensor *tq = leaf(q, 3, TS_SHAPE(B, Tq, Cn)), *tkv = leaf(kv, 3, TS_SHAPE(B, Tk, 2 * Cn));
    ts_tensor *y = ts_attention_kv(C, tq, tkv, heads, tkp, 0.0f);
    ts_backward_with(C, y, ts_from_f32(C, 3, TS_SHAPE(B, Tq, Cn), dy));
    int64_t nw = ts_cuda_attention_kv_work(B, Tq, Tk, Cn, heads);
    float *d_q = dev(q, (size_t)nq * 4), *d_kv = dev(kv, (size_t)nkv * 4);
    float *d_dy = dev(dy, (size_t)nq * 4), *d_y = dev(NULL, (size_t)nq * 4);
    float *d_w = dev(NULL, (size_t)nw * 4), *d_dw = dev(NULL, (size_t)nw * 4);
    float *d_dq = dzero(nq), *d_dkv = dzero(nkv);
    uint8_t *d_kp = dev(kp, (size_t)(B * Tk));
    die(ts_cuda_attention_kv(G, d_q, d_kv, d_kp, d_y, B, Tq, Tk, Cn, heads, 0.0f, d_w, &err),
        &err);
    die(ts_cuda_attention_kv_backward(G, d_kp, d_dy, d_dq, d_dkv, B, Tq, Tk, Cn, heads, 0.0f,
                                      d_dw, d_w, &err), &err);
    char what[96];
    snprintf(what, sizeof what, "attention_kv %lldx%lld over %lld, C %lld, %lld heads, padding",
             (long long)B, (long long)Tq, (long long)Tk, (long long)Cn, (long long)heads);
    against(what, d_y, y, 1e-5);
    against("  backward dq", d_dq, tq->grad, 1e-5);
    against("  backward dkv", d_dkv, tkv->grad, 1e-5);
    ts_ctx_reset(C);
    free(q), free(kv), free(dy), free(kp);
}

/* y = a @ b and its gradients; bf16: the CPU at TS_PREC_BF16 against bf16 operands */
static void check_matmul(int64_t M, int64_t N, int64_t K, int bf16) {
    ts_err err = { 0 };
    float *a = randn(M * K, 1), *b = randn(K * N, 1), *dy = randn(M * N, 1);
    C->precision = bf16 ? TS_PREC_BF16 : TS_PREC_F32;
    ts_tensor *ta = leaf(a, 2, TS_SHAPE(M, K)), *tb = leaf(b, 2, TS_SHAPE(K, N));
    ts_tensor *y = ts_matmul(C, ta, tb, 0);
    ts_backward_with(C, y, ts_from_f32(C, 2, TS_SHAPE(M, N), dy));
    ts_cuda_dtype dt = bf16 ? TS_CUDA_BF16 : TS_CUDA_F32;
    float *d_a = dev(a, (size_t)(M * K) * 4), *d_b = dev(b, (size_t)(K * N) * 4);
    float *d_dy = dev(dy, (size_t)(M * N) * 4);
    const void *pa = d_a, *pb = d_b, *pdy = d_dy;
    if (bf16) {
        uint16_t *ha = dev(NULL, (size_t)(M * K) * 2), *hb = dev(NULL, (size_t)(K * N) * 2);
        uint16_t *hdy = dev(NULL, (size_t)(M * N) * 2);
        die(ts_cuda_to_bf16(G, d_a, ha, M * K, &err), &err);
        die(ts_cuda_to_bf16(G, d_b, hb, K * N, &err), &err);
        die(ts_cuda_to_bf16(G, d_dy, hdy, M * N, &err), &err);
        pa = ha, pb = hb, pdy = hdy;
    }
    float *d_y = dev(NULL, (size_t)(M * N) * 4), *d_da = dev(NULL, (size_t)(M * K) * 4);
    float *d_db = dev(NULL, (size_t)(K * N) * 4);
    die(ts_cuda_matmul(G, dt, pa, pb, NULL, d_y, M, N, K, 0, 0.0f, &err), &err);
    /* da = dy b^T (M, K); db = a^T dy (K, N) */
    die(ts_cuda_matmul(G, dt, pdy, pb, NULL, d_da, M, K, N, TS_TRANS_B, 0.0f, &err), &err);
    die(ts_cuda_matmul(G, dt, pa, pdy, NULL, d_db, K, N, M, TS_TRANS_A, 0.0f, &err), &err);
    double tol = bf16 ? 1e-2 : 1e-5;
    char what[96];
    snprintf(what, sizeof what, "matmul %s %lldx%lldx%lld", bf16 ? "bf16" : "f32", (long long)M,
             (long long)N, (long long)K);
    against(what, d_y, y, tol);
    against("  backward da", d_da, ta->grad, tol);
    against("  backward db", d_db, tb->grad, tol);
    ts_ctx_reset(C);
    C->precision = TS_PREC_F32;
    free(a), free(b), free(dy);
}

int main(void) {
    ts_err err = { 0 };
    die(ts_cuda_open(&G, 0, (size_t)4 << 30, &err), &err);
    C = ts_ctx_new(TS_CPU, 64u << 20, 1);
    printf("gpu_cpu_parity: %s against the CPU backend\n", ts_cuda_describe(G));
    check_activations();
    check_bias_gelu_add();
    check_rows(1000, 768);
    check_rows(7, 5001);
    check_cross_entropy(512, 1000, 0.0f);
    check_cross_entropy(300, 49408, 0.1f);
    check_attention(2, 4, 77, 64, 1, 0);
    check_attention(3, 2, 50, 32, 0, 1);
    check_attention(2, 3, 197, 64, 0, 0);
    check_elementwise(300, 257);
    check_gathers_dropout(49408, 512, 2000);
    check_attention_kv(3, 10, 37, 128, 4);
    check_reduce(512, 768, 1, 0);
    check_reduce(64, 197, 768, 1);
    check_layouts(8, 197, 12, 64);
    check_batchnorm(256, 512, 1);
    check_batchnorm(100, 33, 0);
    check_conv(0, 8, 64, 56, 56, 0, 3, 1, 1, 0);   /* LePE, CSWin's first stage */
    check_conv(0, 3, 5, 13, 11, 0, 5, 2, 2, 0);
    check_conv(1, 4, 3, 224, 224, 64, 7, 4, 2, 3); /* CSWin's stem */
    check_conv(1, 5, 3, 64, 64, 96, 16, 16, 0, 2); /* patch embedding */
    check_stripe(4, 56, 56, 64, 2, 1);  /* CSWin-T's first stage at 224 */
    check_stripe(4, 14, 14, 256, 8, 7); /* its third */
    check_stripe(2, 7, 7, 512, 16, 0);  /* its last: one window */
    check_matmul(512, 768, 384, 0);
    check_matmul(333, 257, 129, 0);
    check_matmul(512, 768, 384, 1);
    printf("gpu_cpu_parity: %d failed\n", failures);
    ts_ctx_free(C);
    ts_cuda_close(G);
    return failures;
}
