// emu_conv.cpp: the convolution kernels of core/cuda/conv.cu (conv_kernels.h) and the window
// gathers and scatters of stripe.cu (stripe_kernels.h) run on the CPU under the host emulation
// of CUDA in emu_cuda.h, against the CPU backend's ts_dwconv2d, ts_conv2d and
// ts_stripe_attention (CSWin's), forward and backward, as tests/gpu_cpu_parity.c checks them
// on a GPU.
//
// The depthwise kernels run as conv.cu launches them. For the general convolution the
// emulation runs im2col and col2im in chunks of images, as conv.cu does, and the products that
// cuBLASLt takes on the device are computed here in float64. The stripe attention's gathers,
// scatters and LePE run as stripe.cu sequences them, its attention (attention.cu's kernels on
// the device) in float64 here. Gradients start from seeded values, so that the kernels' += is
// checked too; grids are kept small so that the grid-stride loops wrap. Relative error under
// 1e-5; a NaN never passes.
// Exit status: the number of failed rows.
#include "emu_cuda.h"

#define TS_CU_EMULATE 1
#include "cuda/conv_kernels.h"
#include "cuda/stripe_kernels.h"
#include "tessera.h"

// the CPU op's values (or gradient) t against the emulated ones, each plus base when given
static void against(const char *what, const std::vector<float> &emu, const ts_tensor *t,
                    const std::vector<float> *base) {
    std::vector<double> a(emu.begin(), emu.end()), ref((size_t)t->numel);
    const float *r = ts_f32(t);
    for (int64_t i = 0; i < t->numel; i++) ref[(size_t)i] = r[i] + (base ? (*base)[i] : 0.0);
    report(what, a.size() == ref.size() ? rel(a, ref) : NAN, 1e-5);
}

static ts_tensor *leaf(ts_ctx *c, const std::vector<float> &v, int ndim, const int64_t *shape) {
    ts_tensor *t = ts_from_f32(c, ndim, shape, v.data());
    t->requires_grad = 1;
    return t;
}

static conv_geom geom(int64_t B, int64_t C, int64_t H, int64_t W, int64_t Cout, int64_t kh,
                      int64_t kw, int64_t stride, int64_t pad) {
    conv_geom g = { B, C, H, W, Cout, kh, kw, 0, 0, stride, pad };
    g.Ho = (H + 2 * pad - kh) / stride + 1;
    g.Wo = (W + 2 * pad - kw) / stride + 1;
    return g;
}

static void check_dw(ts_ctx *c, conv_geom g, int bias) {
    int64_t nx = g.B * g.C * g.H * g.W, nw = g.C * g.kh * g.kw, ny = g.B * g.C * g.Ho * g.Wo;
    std::vector<float> x = randv(nx), w = randv(nw), b = randv(g.C), dy = randv(ny);
    std::vector<float> dx0 = randv(nx), dw0 = randv(nw), db0 = randv(g.C);
    ts_tensor *tx = leaf(c, x, 4, SH(g.B, g.C, g.H, g.W));
    ts_tensor *tw = leaf(c, w, 4, SH(g.C, 1, g.kh, g.kw));
    ts_tensor *tb = bias ? leaf(c, b, 1, SH(g.C)) : NULL;
    ts_tensor *y = ts_dwconv2d(c, tx, tw, tb, (int)g.stride, (int)g.pad);
    ts_backward_with(c, y, ts_from_f32(c, 4, SH(g.B, g.C, g.Ho, g.Wo), dy.data()));

    std::vector<float> ey((size_t)ny, NAN), edx = dx0, edw = dw0, edb = db0;
    const float *bp = bias ? b.data() : NULL;
    launch(dim3(3), 64, [&]() { dw_forward_kernel(x.data(), w.data(), bp, ey.data(), g); });
    launch(dim3(2), 96, [&]() { dw_dx_kernel(w.data(), dy.data(), edx.data(), g); });
    launch(dim3((unsigned)(g.kh * g.kw), (unsigned)g.C), 64,
           [&]() { dw_dw_kernel(x.data(), dy.data(), edw.data(), g); });
    launch(dim3((unsigned)g.C), 64,
           [&]() { channel_sum_kernel(dy.data(), edb.data(), g.B, g.C, g.Ho * g.Wo); });
    char what[120];
    snprintf(what, sizeof what, "dwconv2d (emulated) %lldx%lldx%lldx%lld k%lldx%lld s%lld p%lld%s",
             (long long)g.B, (long long)g.C, (long long)g.H, (long long)g.W, (long long)g.kh,
             (long long)g.kw, (long long)g.stride, (long long)g.pad, bias ? " bias" : "");
    against(what, ey, y, NULL);
    against("  backward dx (added)", edx, tx->grad, &dx0);
    against("  backward dw (added)", edw, tw->grad, &dw0);
    if (bias) against("  backward db (added)", edb, tb->grad, &db0);
    ts_ctx_reset(c);
}

// y (M, N) = op(a) b in float64, a (M, K) or stored (K, M) with ta; b (K, N)
static void host_mm(const float *a, const float *b, double *y, int64_t M, int64_t N, int64_t K,
                    int ta) {
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            double s = 0;
            for (int64_t k = 0; k < K; k++)
                s += (double)(ta ? a[k * M + i] : a[i * K + k]) * b[k * N + j];
            y[i * N + j] = s;
        }
}

static void check_conv(ts_ctx *c, conv_geom g, int64_t at, int bias) {
    int64_t nx = g.B * g.C * g.H * g.W, K = g.C * g.kh * g.kw, P = g.Ho * g.Wo;
    int64_t nw = g.Cout * K, ny = g.B * g.Cout * P;
    std::vector<float> x = randv(nx), w = randv(nw), b = randv(g.Cout), dy = randv(ny);
    std::vector<float> dx0 = randv(nx), dw0 = randv(nw), db0 = randv(g.Cout);
    ts_tensor *tx = leaf(c, x, 4, SH(g.B, g.C, g.H, g.W));
    ts_tensor *tw = leaf(c, w, 4, SH(g.Cout, g.C, g.kh, g.kw));
    ts_tensor *tb = bias ? leaf(c, b, 1, SH(g.Cout)) : NULL;
    ts_tensor *y = ts_conv2d(c, tx, tw, tb, (int)g.stride, (int)g.pad);
    ts_backward_with(c, y, ts_from_f32(c, 4, SH(g.B, g.Cout, g.Ho, g.Wo), dy.data()));

    // conv.cu's sequence, `at` images at a time, the products in float64
    std::vector<float> ey((size_t)ny, NAN), edx = dx0, edb = db0, cols((size_t)(at * K * P));
    std::vector<double> dw((size_t)nw), prod;
    for (int64_t i = 0; i < nw; i++) dw[(size_t)i] = dw0[(size_t)i];
    for (int64_t b0 = 0; b0 < g.B; b0 += at) {
        int64_t nb = g.B - b0 < at ? g.B - b0 : at;
        std::fill(cols.begin(), cols.end(), NAN);
        launch(dim3(2), 64, [&]() { im2col_kernel(x.data(), cols.data(), g, b0, nb); });
        prod.assign((size_t)(g.Cout * P), 0.0);
        for (int64_t l = 0; l < nb; l++) {
            host_mm(w.data(), cols.data() + l * K * P, prod.data(), g.Cout, P, K, 0);
            for (int64_t i = 0; i < g.Cout * P; i++)
                ey[(size_t)((b0 + l) * g.Cout * P + i)] = (float)prod[(size_t)i];
            const float *dyb = dy.data() + (b0 + l) * g.Cout * P;
            for (int64_t o = 0; o < g.Cout; o++) // dw += dy_b cols_b^T
                for (int64_t k = 0; k < K; k++) {
                    double s = 0;
                    for (int64_t p = 0; p < P; p++)
                        s += (double)dyb[o * P + p] * cols[(size_t)(l * K * P + k * P + p)];
                    dw[(size_t)(o * K + k)] += s;
                }
        }
        prod.assign((size_t)(K * P), 0.0); // dcols_b = w^T dy_b, then col2im
        for (int64_t l = 0; l < nb; l++) {
            host_mm(w.data(), dy.data() + (b0 + l) * g.Cout * P, prod.data(), K, P, g.Cout, 1);
            for (int64_t i = 0; i < K * P; i++)
                cols[(size_t)(l * K * P + i)] = (float)prod[(size_t)i];
        }
        launch(dim3(3), 64, [&]() { col2im_kernel(cols.data(), edx.data(), g, b0, nb); });
    }
    if (bias)
        launch(dim3(5), 64,
               [&]() { channel_bias_kernel(ey.data(), b.data(), g.B, g.Cout, P); });
    launch(dim3((unsigned)g.Cout), 64,
           [&]() { channel_sum_kernel(dy.data(), edb.data(), g.B, g.Cout, P); });
    std::vector<float> edw(dw.begin(), dw.end());
    char what[120];
    snprintf(what, sizeof what, "conv2d (emulated) %lldx%lldx%lldx%lld->%lld k%lldx%lld s%lld "
             "p%lld, %lld at once%s", (long long)g.B, (long long)g.C, (long long)g.H,
             (long long)g.W, (long long)g.Cout, (long long)g.kh, (long long)g.kw,
             (long long)g.stride, (long long)g.pad, (long long)at, bias ? " bias" : "");
    against(what, ey, y, NULL);
    against("  backward dx (added)", edx, tx->grad, &dx0);
    against("  backward dw (added)", edw, tw->grad, &dw0);
    if (bias) against("  backward db (added)", edb, tb->grad, &db0);
    ts_ctx_reset(c);
}

// attention of one window and head in float64, rows of D at q, k, v (Nw of them): y, lse;
// with dy, the gradients added to dq, dk, dv
static void host_attention(const float *q, const float *k, const float *v, int64_t Nw,
                           int64_t D, double scale, float *y, float *lse, const float *dy,
                           float *dq, float *dk, float *dv) {
    std::vector<double> P((size_t)(Nw * Nw));
    for (int64_t i = 0; i < Nw; i++) {
        double m = -INFINITY, z = 0;
        for (int64_t j = 0; j < Nw; j++) {
            double sdot = 0;
            for (int64_t d = 0; d < D; d++) sdot += (double)q[i * D + d] * k[j * D + d];
            P[(size_t)(i * Nw + j)] = scale * sdot;
            m = fmax(m, scale * sdot);
        }
        for (int64_t j = 0; j < Nw; j++) z += exp(P[(size_t)(i * Nw + j)] - m);
        for (int64_t j = 0; j < Nw; j++) {
            double &p = P[(size_t)(i * Nw + j)];
            p = exp(p - m) / z;
        }
        if (lse) lse[i] = (float)(m + log(z));
        for (int64_t d = 0; d < D && y; d++) {
            double o = 0;
            for (int64_t j = 0; j < Nw; j++) o += P[(size_t)(i * Nw + j)] * v[j * D + d];
            y[i * D + d] = (float)o;
        }
    }
    if (!dy) return;
    for (int64_t i = 0; i < Nw; i++) {
        std::vector<double> dp((size_t)Nw);
        double Di = 0;
        for (int64_t j = 0; j < Nw; j++) {
            double s = 0;
            for (int64_t d = 0; d < D; d++) s += (double)dy[i * D + d] * v[j * D + d];
            dp[(size_t)j] = s;
            Di += P[(size_t)(i * Nw + j)] * s;
        }
        for (int64_t j = 0; j < Nw; j++) {
            double p = P[(size_t)(i * Nw + j)], ds = p * (dp[(size_t)j] - Di);
            for (int64_t d = 0; d < D; d++) {
                dv[j * D + d] += (float)(p * dy[i * D + d]);
                dq[i * D + d] += (float)(scale * ds * k[j * D + d]);
                dk[j * D + d] += (float)(scale * ds * q[i * D + d]);
            }
        }
    }
}

// ts_stripe_attention against stripe.cu's sequence: the window gathers and scatters and the
// depthwise kernels emulated, the attention (attention.cu's kernels on the device) in float64
static void check_stripe(int64_t B, int64_t Hm, int64_t Wm, int64_t C, int64_t heads,
                         int64_t sw, int lepe) {
    ts_ctx *c = ts_ctx_new(TS_CPU, 64u << 20, 1);
    int64_t N = Hm * Wm, nq = B * N * 3 * C, no = B * N * C;
    std::vector<float> qkv = randv(nq), w = randv(C * 9), b = randv(C), dy = randv(no);
    std::vector<float> dqkv0 = randv(nq), dw0 = randv(C * 9), db0 = randv(C);
    ts_tensor *tq = leaf(c, qkv, 3, SH(B, N, 3 * C));
    ts_tensor *tw = lepe ? leaf(c, w, 4, SH(C, 1, 3, 3)) : NULL;
    ts_tensor *tb = lepe ? leaf(c, b, 1, SH(C)) : NULL;
    ts_tensor *y = ts_stripe_attention(c, tq, tw, tb, Hm, Wm, heads, sw, 0.0f);
    ts_backward_with(c, y, ts_from_f32(c, 3, SH(B, N, C), dy.data()));

    stripe_branches sb;
    if (!stripe_layout(B, Hm, Wm, C, heads, sw, &sb)) {
        report("stripe_layout refused a valid geometry", 1.0, 0.5);
        ts_ctx_free(c);
        return;
    }
    double scale = 1.0 / sqrt((double)sb.D);
    std::vector<float> out((size_t)no, NAN), dq3 = dqkv0, edw = dw0, edb = db0;
    for (int r = 0; r < sb.n; r++) {
        stripe_geom g = sb.g[r];
        int64_t T = sb.temp, Nw = g.hs * g.ws, nh = g.nc / sb.D, Bw = g.B * g.nwy * g.nwx;
        std::vector<float> q((size_t)T), k((size_t)T), v((size_t)T), yw((size_t)T), vi((size_t)T);
        std::vector<float> lse((size_t)(Bw * nh * Nw)), dyw((size_t)T), dq((size_t)T, 0.0f);
        std::vector<float> dk((size_t)T, 0.0f), dv((size_t)T, 0.0f), li((size_t)T, NAN);
        auto at = [&](int64_t off, int64_t ld) {
            stripe_geom h = g;
            h.off = off, h.ld = ld;
            return h;
        };
        launch(dim3(2), 64, [&]() { stripe_gather_kernel(qkv.data(), q.data(), at(0, 3 * C), 0); });
        launch(dim3(2), 64, [&]() { stripe_gather_kernel(qkv.data(), k.data(), at(C, 3 * C), 0); });
        launch(dim3(2), 64,
               [&]() { stripe_gather_kernel(qkv.data(), v.data(), at(2 * C, 3 * C), 0); });
        launch(dim3(2), 64, [&]() { stripe_gather_kernel(dy.data(), dyw.data(), at(0, C), 0); });
        for (int64_t t = 0; t < Bw * nh; t++) {
            size_t o = (size_t)(t * Nw * sb.D);
            host_attention(q.data() + o, k.data() + o, v.data() + o, Nw, sb.D, scale,
                           yw.data() + o, lse.data() + t * Nw, dyw.data() + o, dq.data() + o,
                           dk.data() + o, dv.data() + o);
        }
        launch(dim3(3), 64,
               [&]() { stripe_scatter_kernel(yw.data(), out.data(), at(0, C), 0, 0); });
        launch(dim3(2), 64,
               [&]() { stripe_scatter_kernel(dq.data(), dq3.data(), at(0, 3 * C), 0, 1); });
        launch(dim3(2), 64,
               [&]() { stripe_scatter_kernel(dk.data(), dq3.data(), at(C, 3 * C), 0, 1); });
        launch(dim3(2), 64,
               [&]() { stripe_scatter_kernel(dv.data(), dq3.data(), at(2 * C, 3 * C), 0, 1); });
        if (!lepe) continue;
        conv_geom cg = { Bw, g.nc, g.hs, g.ws, 0, 3, 3, g.hs, g.ws, 1, 1 };
        const float *wr = w.data() + g.c0 * 9;
        std::vector<float> dli((size_t)T), dvi((size_t)T, 0.0f);
        launch(dim3(2), 64,
               [&]() { stripe_gather_kernel(qkv.data(), vi.data(), at(2 * C, 3 * C), 1); });
        launch(dim3(2), 64,
               [&]() { dw_forward_kernel(vi.data(), wr, b.data() + g.c0, li.data(), cg); });
        launch(dim3(2), 64,
               [&]() { stripe_scatter_kernel(li.data(), out.data(), at(0, C), 1, 1); });
        launch(dim3(2), 64, [&]() { stripe_gather_kernel(dy.data(), dli.data(), at(0, C), 1); });
        launch(dim3(2), 64, [&]() { dw_dx_kernel(wr, dli.data(), dvi.data(), cg); });
        launch(dim3(9, (unsigned)g.nc), 64,
               [&]() { dw_dw_kernel(vi.data(), dli.data(), edw.data() + g.c0 * 9, cg); });
        launch(dim3((unsigned)g.nc), 64, [&]() {
            channel_sum_kernel(dli.data(), edb.data() + g.c0, Bw, g.nc, Nw);
        });
        launch(dim3(2), 64,
               [&]() { stripe_scatter_kernel(dvi.data(), dq3.data(), at(2 * C, 3 * C), 1, 1); });
    }
    char what[120];
    snprintf(what, sizeof what, "stripe attention (emulated) %lldx%lldx%lld C%lld h%lld sw%lld%s",
             (long long)B, (long long)Hm, (long long)Wm, (long long)C, (long long)heads,
             (long long)sw, lepe ? " LePE" : "");
    against(what, out, y, NULL);
    against("  backward dqkv (added)", dq3, tq->grad, &dqkv0);
    if (lepe) {
        against("  backward dlepe_w (added)", edw, tw->grad, &dw0);
        against("  backward dlepe_b (added)", edb, tb->grad, &db0);
    }
    ts_ctx_free(c);
}

int main(void) {
    printf("emu_conv: conv_kernels.h under a host emulation of CUDA, against the CPU ops\n");
    ts_ctx *c = ts_ctx_new(TS_CPU, 64u << 20, 1);
    check_dw(c, geom(2, 6, 9, 7, 0, 3, 3, 1, 1), 1);  // LePE's
    check_dw(c, geom(3, 4, 11, 10, 0, 5, 3, 2, 2), 0);
    check_dw(c, geom(1, 3, 8, 8, 0, 3, 3, 3, 0), 1);
    check_conv(c, geom(3, 3, 16, 16, 8, 4, 4, 4, 0), 2, 1);  // patch embedding
    check_conv(c, geom(2, 3, 19, 17, 5, 7, 7, 4, 2), 1, 1);  // CSWin's stem, smaller
    check_conv(c, geom(3, 4, 9, 9, 6, 3, 3, 2, 1), 3, 0);
    ts_ctx_free(c);
    check_stripe(2, 8, 6, 16, 4, 2, 1);  // two branches, LePE
    check_stripe(1, 6, 9, 12, 2, 3, 0);  // two branches, no LePE
    check_stripe(2, 4, 5, 8, 2, 0, 1);   // one window, the whole map
    printf("emu_conv: %d failed\n", failures);
    return failures;
}
