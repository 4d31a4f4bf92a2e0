/* op_conv2d.c: dense 2-d convolution on the CPU (NCHW), forward and backward.
 *
 * im2col + gemm: the patches of one image are unrolled into a column matrix, and one oneDNN
 * sgemm (through ts__gemm) multiplies it by the weight. Backward reuses the same unrolling for
 * dw and rolls dx back with col2im. The common case in tessera is patch embedding (kernel ==
 * stride, padding 0: ViT's conv1), where the columns are a plain rearrangement of the input
 * and the op is one large gemm per image.
 *
 * What it deliberately is not: a general convolution library. Stride and padding are the same
 * along both axes, padding is zeros, and there is no dilation and no groups (depthwise
 * convolution is op_dwconv2d.c).
 *
 * Shapes: x (B, Cin, H, W), w (Cout, Cin, kh, kw), bias (Cout) or NULL, y (B, Cout, Ho, Wo)
 * with Ho = (H + 2 pad - kh) / stride + 1 (Wo alike); the column matrix of one image is
 * (Kc, P) with Kc = Cin kh kw rows and P = Ho Wo columns.
 */
#include "../tessera-impl.h"

#include <omp.h>

static int nthreads(const ts_ctx *c) { return c->nthreads > 0 ? c->nthreads : omp_get_max_threads(); }

typedef struct conv_geom {
    int64_t B, Cin, H, W, Cout, kh, kw, Ho, Wo, Kc, P;
    int stride, pad;
} conv_geom;

static conv_geom geometry(const ts_tensor *x, const ts_tensor *w, const ts_tensor *bias,
                          int stride, int pad) {
    char s1[96], s2[96];
    ts__check_f32("conv2d", x);
    ts__check_f32("conv2d", w);
    TS_CHECK(x->ndim == 4 && w->ndim == 4 && x->shape[1] == w->shape[1],
             "conv2d: x %s must be (B, Cin, H, W) and w %s (Cout, Cin, kh, kw)",
             ts_shape_str(x, s1, sizeof s1), ts_shape_str(w, s2, sizeof s2));
    TS_CHECK(stride >= 1 && pad >= 0, "conv2d: stride %d, padding %d", stride, pad);
    conv_geom g = { x->shape[0], x->shape[1], x->shape[2], x->shape[3], w->shape[0],
                    w->shape[2], w->shape[3], 0, 0, 0, 0, stride, pad };
    TS_CHECK(g.H + 2 * pad >= g.kh && g.W + 2 * pad >= g.kw,
             "conv2d: kernel of w %s is larger than the padded input x %s (padding %d)",
             ts_shape_str(w, s2, sizeof s2), ts_shape_str(x, s1, sizeof s1), pad);
    if (bias) {
        ts__check_f32("conv2d", bias);
        TS_CHECK(bias->ndim == 1 && bias->shape[0] == g.Cout,
                 "conv2d: bias %s must be (Cout) for w %s", ts_shape_str(bias, s1, sizeof s1),
                 ts_shape_str(w, s2, sizeof s2));
    }
    g.Ho = (g.H + 2 * pad - g.kh) / stride + 1;
    g.Wo = (g.W + 2 * pad - g.kw) / stride + 1;
    g.Kc = g.Cin * g.kh * g.kw;
    g.P = g.Ho * g.Wo;
    return g;
}

/* The output columns ow whose input column ow*stride - pad + kj lies inside [0, W). */
static void valid_cols(const conv_geom *g, int64_t kj, int64_t *lo, int64_t *hi) {
    int64_t off = kj - g->pad, s = g->stride;
    int64_t a = off >= 0 ? 0 : (-off + s - 1) / s;
    int64_t b = g->W - off <= 0 ? 0 : (g->W - off + s - 1) / s;
    *lo = a;
    *hi = b < g->Wo ? b : g->Wo;
    if (*hi < *lo) *hi = *lo;
}

/* col (Kc, P) from one image x (Cin, H, W): col[(c, ki, kj), (oh, ow)] =
 * x[c, oh*stride - pad + ki, ow*stride - pad + kj], zero outside the image. */
static void im2col(const conv_geom *g, const float *x, float *col, int nt) {
#pragma omp parallel for if (nt > 1) num_threads(nt) schedule(static)
    for (int64_t r = 0; r < g->Kc; r++) {
        int64_t c = r / (g->kh * g->kw), ki = r / g->kw % g->kh, kj = r % g->kw;
        int64_t lo, hi, s = g->stride;
        valid_cols(g, kj, &lo, &hi);
        const float *xc = x + c * g->H * g->W;
        for (int64_t oh = 0; oh < g->Ho; oh++) {
            float *dst = col + r * g->P + oh * g->Wo;
            int64_t ih = oh * s - g->pad + ki;
            if (ih < 0 || ih >= g->H) {
                memset(dst, 0, (size_t)g->Wo * sizeof(float));
                continue;
            }
            const float *src = xc + ih * g->W;
            int64_t off = kj - g->pad;
            for (int64_t ow = 0; ow < lo; ow++) dst[ow] = 0.0f;
            if (s == 1)
                memcpy(dst + lo, src + lo + off, (size_t)(hi - lo) * sizeof(float));
            else
                for (int64_t ow = lo; ow < hi; ow++) dst[ow] = src[ow * s + off];
            for (int64_t ow = hi; ow < g->Wo; ow++) dst[ow] = 0.0f;
        }
    }
}

/* dx (Cin, H, W) += col2im(dcol (Kc, P)), the adjoint of im2col. Rows of one input channel
 * are summed by one thread, so the parallel loop runs over channels. */
static void col2im(const conv_geom *g, const float *dcol, float *dx, int nt) {
    int64_t kk = g->kh * g->kw, s = g->stride;
#pragma omp parallel for if (nt > 1) num_threads(nt) schedule(static)
    for (int64_t c = 0; c < g->Cin; c++) {
        float *dxc = dx + c * g->H * g->W;
        for (int64_t r = c * kk; r < (c + 1) * kk; r++) {
            int64_t ki = r / g->kw % g->kh, kj = r % g->kw, lo, hi;
            valid_cols(g, kj, &lo, &hi);
            for (int64_t oh = 0; oh < g->Ho; oh++) {
                int64_t ih = oh * s - g->pad + ki;
                if (ih < 0 || ih >= g->H) continue;
                const float *src = dcol + r * g->P + oh * g->Wo;
                float *dst = dxc + ih * g->W;
                int64_t off = kj - g->pad;
                for (int64_t ow = lo; ow < hi; ow++) dst[ow * s + off] += src[ow];
            }
        }
    }
}

/* Whether to spread images over threads (each image's gemm then runs on one thread) rather
 * than run images one after another with every thread inside each gemm. Images win when there
 * are enough of them and one image's product is small. */
static int by_image(const conv_geom *g, int nt) {
    double flops = 2.0 * (double)g->Cout * (double)g->Kc * (double)g->P;
    return nt > 1 && g->B >= nt && flops < 64e6;
}

/* ---- backward ---- */

/* Image b's share of the gradients: dw (Cout, Kc) += dy_b (Cout, P) @ col_b^T (P, Kc), and
 * dx_b += col2im(w^T (Kc, Cout) @ dy_b (Cout, P)). col is 2 (Kc, P) of scratch. */
static void image_backward(ts_ctx *c, const conv_geom *g, int64_t b, const float *X,
                           const float *Wt, const float *dY, float *dX, float *dW, float *col,
                           int nt) {
    float *dcol = col + g->Kc * g->P;
    const float *dYb = dY + b * g->Cout * g->P;
    if (dW) {
        im2col(g, X + b * g->Cin * g->H * g->W, col, nt);
        ts__gemm(c, 0, 1, g->Cout, g->Kc, g->P, 1.0f, dYb, g->P, col, g->P, 1.0f, dW, g->Kc);
    }
    if (dX) {
        ts__gemm(c, 1, 0, g->Kc, g->P, g->Cout, 1.0f, Wt, g->Kc, dYb, g->P, 0.0f, dcol, g->P);
        col2im(g, dcol, dX + b * g->Cin * g->H * g->W, nt);
    }
}

static void conv2d_backward(ts_ctx *c, ts_node *n) {
    ts_tensor *x = n->in[0], *w = n->in[1], *bias = n->nin > 2 ? n->in[2] : NULL;
    conv_geom g = geometry(x, w, bias, (int)n->i[0], (int)n->i[1]);
    const float *X = ts_f32(x), *Wt = ts_f32(w), *dY = ts_f32(n->out->grad);
    float *dX = ts__grad(c, x), *dW = ts__grad(c, w), *dB = bias ? ts__grad(c, bias) : NULL;
    int nt = nthreads(c), img = by_image(&g, nt);
    int nslot = img ? nt : 1;
    size_t colsz = (size_t)(g.Kc * g.P);
    float *col = ts_arena_alloc(c->step, (size_t)nslot * 2 * colsz * sizeof(float));
    /* With images spread over threads each thread sums its own dw; the sums meet at the end. */
    float *dWpart = NULL;
    if (dW && img) {
        dWpart = ts_arena_alloc(c->step, (size_t)nt * (size_t)(g.Cout * g.Kc) * sizeof(float));
        memset(dWpart, 0, (size_t)nt * (size_t)(g.Cout * g.Kc) * sizeof(float));
    }
    if (dB) { /* dbias[o] += sum over images and pixels of dy */
#pragma omp parallel for num_threads(nt) schedule(static)
        for (int64_t o = 0; o < g.Cout; o++) {
            float s = 0.0f;
            for (int64_t b = 0; b < g.B; b++) {
                const float *d = dY + (b * g.Cout + o) * g.P;
                for (int64_t p = 0; p < g.P; p++) s += d[p];
            }
            dB[o] += s;
        }
    }
    if (!dX && !dW) return;
    if (img) {
        ts_ctx fc = *c; /* gemms inside a parallel region stay in float32 and off the arena */
        fc.precision = TS_PREC_F32;
#pragma omp parallel for num_threads(nt) schedule(static)
        for (int64_t b = 0; b < g.B; b++) {
            size_t t = (size_t)omp_get_thread_num();
            float *dWt = dW ? dWpart + t * (size_t)(g.Cout * g.Kc) : NULL;
            image_backward(&fc, &g, b, X, Wt, dY, dX, dWt, col + t * 2 * colsz, 1);
        }
    } else {
        for (int64_t b = 0; b < g.B; b++) image_backward(c, &g, b, X, Wt, dY, dX, dW, col, nt);
    }
    if (dWpart) {
        int64_t nw = g.Cout * g.Kc;
#pragma omp parallel for num_threads(nt) schedule(static)
        for (int64_t i = 0; i < nw; i++) {
            float s = 0.0f;
            for (int t = 0; t < nt; t++) s += dWpart[(size_t)t * (size_t)nw + (size_t)i];
            dW[i] += s;
        }
    }
}

/* ---- the op ---- */

/* y_b (Cout, P) = w (Cout, Kc) @ col_b (Kc, P) (+ bias) for image b; col is (Kc, P) scratch,
 * nt the threads that im2col may use (1 inside a parallel region). */
static void image_forward(ts_ctx *c, const conv_geom *g, int64_t b, const float *X,
                          const float *Wt, const float *bb, float *Y, float *col, int nt) {
    float *Yb = Y + b * g->Cout * g->P;
    if (bb)
        for (int64_t o = 0; o < g->Cout; o++)
            for (int64_t p = 0; p < g->P; p++) Yb[o * g->P + p] = bb[o];
    im2col(g, X + b * g->Cin * g->H * g->W, col, nt);
    ts__gemm(c, 0, 0, g->Cout, g->P, g->Kc, 1.0f, Wt, g->Kc, col, g->P, bb ? 1.0f : 0.0f, Yb,
             g->P);
}

ts_tensor *ts_conv2d(ts_ctx *c, const ts_tensor *x, const ts_tensor *w, const ts_tensor *bias,
                     int stride, int padding) {
    conv_geom g = geometry(x, w, bias, stride, padding);
    ts_tensor *y = ts_new(c, TS_F32, 4, TS_SHAPE(g.B, g.Cout, g.Ho, g.Wo));
    const float *X = ts_f32(x), *Wt = ts_f32(w), *bb = bias ? ts_f32(bias) : NULL;
    float *Y = ts_f32(y);
    int nt = nthreads(c), img = by_image(&g, nt);
    size_t colsz = (size_t)(g.Kc * g.P);
    float *col = ts_arena_alloc(c->step, (size_t)(img ? nt : 1) * colsz * sizeof(float));
    if (img) {
        ts_ctx fc = *c; /* gemms inside a parallel region stay in float32 and off the arena */
        fc.precision = TS_PREC_F32;
#pragma omp parallel for num_threads(nt) schedule(static)
        for (int64_t b = 0; b < g.B; b++)
            image_forward(&fc, &g, b, X, Wt, bb, Y, col + (size_t)omp_get_thread_num() * colsz, 1);
    } else {
        /* One image at a time, every thread inside im2col and the gemm. */
        for (int64_t b = 0; b < g.B; b++) image_forward(c, &g, b, X, Wt, bb, Y, col, nt);
    }
    ts_node *n = bias ? TS__RECORD(c, TS_OP_CONV2D, conv2d_backward, y, x, w, bias)
                      : TS__RECORD(c, TS_OP_CONV2D, conv2d_backward, y, x, w);
    if (n) {
        n->i[0] = stride;
        n->i[1] = padding;
    }
    return y;
}
