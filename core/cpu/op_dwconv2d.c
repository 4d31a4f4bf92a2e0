/* op_dwconv2d.c: depthwise 2-d convolution on the CPU (NCHW), forward and backward.
 *
 * Each channel is convolved with its own small kernel, as CSWin's LePE does (3x3, stride 1,
 * padding 1). There is no product to hand to a library here (kh kw multiply-adds per output),
 * so the loops are direct: for each output row and each kernel tap, one pass along the row
 * that the compiler vectorises, with the image border handled by clipping the pass rather
 * than by tests inside it. Forward runs one thread per (image, channel) plane; backward one
 * thread per channel, which owns that channel's weight and bias gradients.
 *
 * What it deliberately is not: grouped convolution in general (one input channel per output
 * channel, no channel multiplier), nor a dilated one. Stride and zero padding are the same
 * along both axes.
 *
 * Shapes: x (B, C, H, W), w (C, 1, kh, kw), bias (C) or NULL, y (B, C, Ho, Wo) with
 * Ho = (H + 2 pad - kh) / stride + 1 (Wo alike).
 */
#include "../tessera-impl.h"

#include <omp.h>

static int nthreads(const ts_ctx *c) { return c->nthreads > 0 ? c->nthreads : omp_get_max_threads(); }

typedef struct dw_geom {
    int64_t B, C, H, W, kh, kw, Ho, Wo;
    int stride, pad;
} dw_geom;

static dw_geom geometry(const ts_tensor *x, const ts_tensor *w, const ts_tensor *bias, int stride,
                        int pad) {
    char s1[96], s2[96];
    ts__check_f32("dwconv2d", x);
    ts__check_f32("dwconv2d", w);
    TS_CHECK(x->ndim == 4 && w->ndim == 4 && w->shape[0] == x->shape[1] && w->shape[1] == 1,
             "dwconv2d: x %s must be (B, C, H, W) and w %s (C, 1, kh, kw)",
             ts_shape_str(x, s1, sizeof s1), ts_shape_str(w, s2, sizeof s2));
    TS_CHECK(stride >= 1 && pad >= 0, "dwconv2d: stride %d, padding %d", stride, pad);
    dw_geom g = { x->shape[0], x->shape[1], x->shape[2], x->shape[3], w->shape[2], w->shape[3],
                  0, 0, stride, pad };
    TS_CHECK(g.H + 2 * pad >= g.kh && g.W + 2 * pad >= g.kw,
             "dwconv2d: kernel of w %s is larger than the padded input x %s (padding %d)",
             ts_shape_str(w, s2, sizeof s2), ts_shape_str(x, s1, sizeof s1), pad);
    if (bias) {
        ts__check_f32("dwconv2d", bias);
        TS_CHECK(bias->ndim == 1 && bias->shape[0] == g.C,
                 "dwconv2d: bias %s must be (C) for x %s", ts_shape_str(bias, s1, sizeof s1),
                 ts_shape_str(x, s2, sizeof s2));
    }
    g.Ho = (g.H + 2 * pad - g.kh) / stride + 1;
    g.Wo = (g.W + 2 * pad - g.kw) / stride + 1;
    return g;
}

/* The output columns [lo, hi) whose input column ow*stride + off lies inside [0, W). */
static void valid_cols(const dw_geom *g, int64_t off, int64_t *lo, int64_t *hi) {
    int64_t s = g->stride;
    int64_t a = off >= 0 ? 0 : (-off + s - 1) / s;
    int64_t b = g->W - off <= 0 ? 0 : (g->W - off + s - 1) / s;
    *lo = a;
    *hi = b < g->Wo ? (b < a ? a : b) : g->Wo;
}

/* ---- forward ---- */

/* One plane: y (Ho, Wo) = bias + sum over taps of w[ki, kj] * shifted x (H, W). */
static void plane_forward(const dw_geom *g, const float *x, const float *w, float bias,
                          float *y) {
    int64_t s = g->stride;
    for (int64_t oh = 0; oh < g->Ho; oh++) {
        float *yr = y + oh * g->Wo;
        for (int64_t ow = 0; ow < g->Wo; ow++) yr[ow] = bias;
        for (int64_t ki = 0; ki < g->kh; ki++) {
            int64_t ih = oh * s - g->pad + ki;
            if (ih < 0 || ih >= g->H) continue;
            const float *xr = x + ih * g->W;
            for (int64_t kj = 0; kj < g->kw; kj++) {
                float wv = w[ki * g->kw + kj];
                int64_t off = kj - g->pad, lo, hi;
                valid_cols(g, off, &lo, &hi);
                if (s == 1) {
#pragma omp simd
                    for (int64_t ow = lo; ow < hi; ow++) yr[ow] += wv * xr[ow + off];
                } else {
                    for (int64_t ow = lo; ow < hi; ow++) yr[ow] += wv * xr[ow * s + off];
                }
            }
        }
    }
}

/* ---- backward ---- */

/* One plane: dx += w-weighted scatter of dy; dw[ki, kj] += sum dy * shifted x. dx or dw may be
 * NULL. */
static void plane_backward(const dw_geom *g, const float *x, const float *w, const float *dy,
                           float *dx, float *dw) {
    int64_t s = g->stride;
    for (int64_t oh = 0; oh < g->Ho; oh++) {
        const float *dyr = dy + oh * g->Wo;
        for (int64_t ki = 0; ki < g->kh; ki++) {
            int64_t ih = oh * s - g->pad + ki;
            if (ih < 0 || ih >= g->H) continue;
            const float *xr = x + ih * g->W;
            float *dxr = dx ? dx + ih * g->W : NULL;
            for (int64_t kj = 0; kj < g->kw; kj++) {
                int64_t off = kj - g->pad, lo, hi;
                valid_cols(g, off, &lo, &hi);
                if (dw) {
                    float acc = 0.0f;
                    if (s == 1) {
#pragma omp simd reduction(+ : acc)
                        for (int64_t ow = lo; ow < hi; ow++) acc += dyr[ow] * xr[ow + off];
                    } else {
                        for (int64_t ow = lo; ow < hi; ow++) acc += dyr[ow] * xr[ow * s + off];
                    }
                    dw[ki * g->kw + kj] += acc;
                }
                if (dxr) {
                    float wv = w[ki * g->kw + kj];
                    if (s == 1) {
#pragma omp simd
                        for (int64_t ow = lo; ow < hi; ow++) dxr[ow + off] += wv * dyr[ow];
                    } else {
                        for (int64_t ow = lo; ow < hi; ow++) dxr[ow * s + off] += wv * dyr[ow];
                    }
                }
            }
        }
    }
}

static void dwconv2d_backward(ts_ctx *c, ts_node *n) {
    ts_tensor *x = n->in[0], *w = n->in[1], *bias = n->nin > 2 ? n->in[2] : NULL;
    dw_geom g = geometry(x, w, bias, (int)n->i[0], (int)n->i[1]);
    const float *X = ts_f32(x), *Wt = ts_f32(w), *dY = ts_f32(n->out->grad);
    float *dX = ts__grad(c, x), *dW = ts__grad(c, w), *dB = bias ? ts__grad(c, bias) : NULL;
    int64_t in_sz = g.H * g.W, out_sz = g.Ho * g.Wo, kk = g.kh * g.kw;
    /* One thread per channel: the channel's dw and dbias are its own, its planes of dx too. */
#pragma omp parallel for num_threads(nthreads(c)) schedule(static)
    for (int64_t ch = 0; ch < g.C; ch++) {
        for (int64_t b = 0; b < g.B; b++) {
            int64_t pi = (b * g.C + ch) * in_sz, po = (b * g.C + ch) * out_sz;
            plane_backward(&g, X + pi, Wt + ch * kk, dY + po, dX ? dX + pi : NULL,
                           dW ? dW + ch * kk : NULL);
            if (dB) {
                float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
                for (int64_t p = 0; p < out_sz; p++) acc += dY[po + p];
                dB[ch] += acc;
            }
        }
    }
}

/* ---- the op ---- */

ts_tensor *ts_dwconv2d(ts_ctx *c, const ts_tensor *x, const ts_tensor *w, const ts_tensor *bias,
                       int stride, int padding) {
    dw_geom g = geometry(x, w, bias, stride, padding);
    ts_tensor *y = ts_new(c, TS_F32, 4, TS_SHAPE(g.B, g.C, g.Ho, g.Wo));
    const float *X = ts_f32(x), *Wt = ts_f32(w), *bb = bias ? ts_f32(bias) : NULL;
    float *Y = ts_f32(y);
    int64_t in_sz = g.H * g.W, out_sz = g.Ho * g.Wo, kk = g.kh * g.kw, planes = g.B * g.C;
#pragma omp parallel for num_threads(nthreads(c)) schedule(static)
    for (int64_t p = 0; p < planes; p++) {
        int64_t ch = p % g.C;
        plane_forward(&g, X + p * in_sz, Wt + ch * kk, bb ? bb[ch] : 0.0f, Y + p * out_sz);
    }
    ts_node *n = bias ? TS__RECORD(c, TS_OP_DWCONV2D, dwconv2d_backward, y, x, w, bias)
                      : TS__RECORD(c, TS_OP_DWCONV2D, dwconv2d_backward, y, x, w);
    if (n) {
        n->i[0] = stride;
        n->i[1] = padding;
    }
    return y;
}
