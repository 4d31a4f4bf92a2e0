/* conv.cu: the convolutions of ts_cuda.h, NCHW as the CPU backend's ts_conv2d and ts_dwconv2d.
 *
 * The depthwise convolution (CSWin's LePE: 3x3, stride 1, padding 1, one kernel per channel)
 * has no product to hand to a library: a thread per output value takes its kh kw taps, a thread
 * per input value gathers its gradient, and a block per (tap, channel) sums that weight's
 * gradient over the batch. The general convolution (the stems, patch embedding) is im2col into
 * a scratch of the caller's, then one float32 cuBLASLt product per image: y_b (Cout, P) =
 * w (Cout, K) cols_b (K, P) with K = C kh kw and P = Ho Wo; its backward takes dw += dy_b
 * cols_b^T image by image, and dcols_b = w^T dy_b, which col2im gathers into dx. cuDNN would do
 * the same work; these stay within what the device build already links (the runtime and
 * cuBLASLt), and every sum but the products' is in a fixed order.
 */
#include "cuda_impl.h"

#include "conv_kernels.h"

#include <string.h>

int64_t ts_cuda_conv_out(const ts_cuda_conv *c, int64_t *wo) {
    if (wo) *wo = 0;
    if (c->B < 1 || c->C < 1 || c->H < 1 || c->W < 1 || c->kh < 1 || c->kw < 1 ||
        c->stride < 1 || c->pad < 0 || c->H + 2 * c->pad < c->kh || c->W + 2 * c->pad < c->kw)
        return 0;
    if (wo) *wo = (c->W + 2 * c->pad - c->kw) / c->stride + 1;
    return (c->H + 2 * c->pad - c->kh) / c->stride + 1;
}

static ts_status geometry(const ts_cuda_conv *c, int general, conv_geom *g, ts_err *err) {
    int64_t wo, ho = ts_cuda_conv_out(c, &wo);
    if (!ho || (general && c->Cout < 1))
        return ts__cuda_fail(err, TS_ERR_USAGE, "cuda conv: x (%lld, %lld, %lld, %lld) with a "
                             "%lldx%lld kernel, stride %d, padding %d%s is not a convolution",
                             (long long)c->B, (long long)c->C, (long long)c->H,
                             (long long)c->W, (long long)c->kh, (long long)c->kw, c->stride,
                             c->pad, general && c->Cout < 1 ? ", no output channels" : "");
    *g = (conv_geom){ c->B, c->C, c->H, c->W, c->Cout, c->kh, c->kw, ho, wo, c->stride, c->pad };
    return TS_OK;
}

/* ---- depthwise ---- */

ts_status ts_cuda_dwconv2d(ts_cuda *g, const float *x, const float *w, const float *bias,
                           float *y, const ts_cuda_conv *c, ts_err *err) {
    conv_geom k;
    ts_status st = geometry(c, 0, &k, err);
    if (st) return st;
    int64_t n = k.B * k.C * k.Ho * k.Wo;
    dw_forward_kernel<<<grid_for(n, 256), 256, 0, g->stream>>>(x, w, bias, y, k);
    TS_CU_LAUNCHED("dwconv2d");
    return TS_OK;
}

ts_status ts_cuda_dwconv2d_backward(ts_cuda *g, const float *x, const float *w,
                                    const float *dy, float *dx, float *dw, float *db,
                                    const ts_cuda_conv *c, ts_err *err) {
    conv_geom k;
    ts_status st = geometry(c, 0, &k, err);
    if (st) return st;
    if (k.C > 65535)
        return ts__cuda_fail(err, TS_ERR_USAGE, "cuda dwconv2d: %lld channels (65535 at most)",
                             (long long)k.C);
    if (dx) {
        int64_t n = k.B * k.C * k.H * k.W;
        dw_dx_kernel<<<grid_for(n, 256), 256, 0, g->stream>>>(w, dy, dx, k);
        TS_CU_LAUNCHED("dwconv2d backward (dx)");
    }
    if (dw) {
        dw_dw_kernel<<<dim3((unsigned)(k.kh * k.kw), (unsigned)k.C), 256, 0, g->stream>>>(
            x, dy, dw, k);
        TS_CU_LAUNCHED("dwconv2d backward (dw)");
    }
    if (db) {
        channel_sum_kernel<<<(unsigned)k.C, 256, 0, g->stream>>>(dy, db, k.B, k.C,
                                                                 k.Ho * k.Wo);
        TS_CU_LAUNCHED("dwconv2d backward (db)");
    }
    return TS_OK;
}

/* ---- general ---- */

/* nb float32 products, one a matrix (stride 0) and b and y strided */
static ts_cuda_mm batch_of(int64_t nb, int64_t stride_b, int64_t stride_y) {
    ts_cuda_mm o;
    memset(&o, 0, sizeof o);
    o.out = TS_CUDA_F32, o.count = (int)nb, o.stride_b = stride_b, o.stride_y = stride_y;
    return o;
}

/* images a cols scratch of n floats holds at once (0: not even one) */
static int64_t images_at_once(const conv_geom *k, int64_t cols_floats) {
    int64_t per = k->C * k->kh * k->kw * k->Ho * k->Wo;
    int64_t nb = cols_floats / per;
    return nb < k->B ? nb : k->B;
}

static ts_status cols_check(const conv_geom *k, const float *cols, int64_t cols_floats,
                            ts_err *err) {
    if (!cols || images_at_once(k, cols_floats) < 1)
        return ts__cuda_fail(err, TS_ERR_USAGE, "cuda conv2d: the columns scratch holds %lld "
                             "floats; one image's columns are %lld", (long long)cols_floats,
                             (long long)(k->C * k->kh * k->kw * k->Ho * k->Wo));
    return TS_OK;
}

ts_status ts_cuda_conv2d(ts_cuda *g, const float *x, const float *w, const float *bias,
                         float *y, const ts_cuda_conv *c, float *cols, int64_t cols_floats,
                         ts_err *err) {
    conv_geom k;
    ts_status st = geometry(c, 1, &k, err);
    if (!st) st = cols_check(&k, cols, cols_floats, err);
    if (st) return st;
    int64_t K = k.C * k.kh * k.kw, P = k.Ho * k.Wo, at = images_at_once(&k, cols_floats);
    for (int64_t b0 = 0; b0 < k.B; b0 += at) {
        int64_t nb = k.B - b0 < at ? k.B - b0 : at;
        im2col_kernel<<<grid_for(nb * K * P, 256), 256, 0, g->stream>>>(x, cols, k, b0, nb);
        TS_CU_LAUNCHED("conv2d (im2col)");
        /* y_b (Cout, P) = w (Cout, K) cols_b (K, P), the images as a strided batch */
        ts_cuda_mm o = batch_of(nb, K * P, k.Cout * P);
        if ((st = ts_cuda_matmul_ex(g, TS_CUDA_F32, w, cols, y + b0 * k.Cout * P, k.Cout, P, K,
                                    0, &o, err)))
            return st;
    }
    if (bias) {
        int64_t n = k.B * k.Cout * P;
        channel_bias_kernel<<<grid_for(n, 256), 256, 0, g->stream>>>(y, bias, k.B, k.Cout, P);
        TS_CU_LAUNCHED("conv2d (bias)");
    }
    return TS_OK;
}

ts_status ts_cuda_conv2d_backward(ts_cuda *g, const float *x, const float *w, const float *dy,
                                  float *dx, float *dw, float *db, const ts_cuda_conv *c,
                                  float *cols, int64_t cols_floats, ts_err *err) {
    conv_geom k;
    ts_status st = geometry(c, 1, &k, err);
    if (!st) st = cols_check(&k, cols, cols_floats, err);
    if (st) return st;
    int64_t K = k.C * k.kh * k.kw, P = k.Ho * k.Wo, at = images_at_once(&k, cols_floats);
    if (db) {
        channel_sum_kernel<<<(unsigned)k.Cout, 256, 0, g->stream>>>(dy, db, k.B, k.Cout, P);
        TS_CU_LAUNCHED("conv2d backward (db)");
    }
    for (int64_t b0 = 0; (dw || dx) && b0 < k.B; b0 += at) {
        int64_t nb = k.B - b0 < at ? k.B - b0 : at;
        const float *dyb = dy + b0 * k.Cout * P;
        if (dw) {
            im2col_kernel<<<grid_for(nb * K * P, 256), 256, 0, g->stream>>>(x, cols, k, b0,
                                                                             nb);
            TS_CU_LAUNCHED("conv2d backward (im2col)");
            /* dw (Cout, K) += dy_b (Cout, P) cols_b^T, one image after another */
            for (int64_t b = 0; b < nb; b++)
                if ((st = ts_cuda_matmul(g, TS_CUDA_F32, dyb + b * k.Cout * P, cols + b * K * P,
                                         NULL, dw, k.Cout, K, P, TS_TRANS_B, 1.0f, err)))
                    return st;
        }
        if (dx) {
            /* dcols_b (K, P) = w^T (K, Cout) dy_b (Cout, P), into the scratch once dw is done
             * with it (the same stream), then gathered into dx */
            ts_cuda_mm o = batch_of(nb, k.Cout * P, K * P);
            if ((st = ts_cuda_matmul_ex(g, TS_CUDA_F32, w, dyb, cols, K, P, k.Cout, TS_TRANS_A,
                                        &o, err)))
                return st;
            int64_t n = nb * k.C * k.H * k.W;
            col2im_kernel<<<grid_for(n, 256), 256, 0, g->stream>>>(cols, dx, k, b0, nb);
            TS_CU_LAUNCHED("conv2d backward (col2im)");
        }
    }
    return TS_OK;
}
