/* stripe.cu: CSWin's cross-shaped window attention with LePE (ts_stripe_attention's function)
 * on the device, forward and backward, composed of the pieces the device already has.
 *
 * Per branch (the first half of the heads in stripes sw columns wide and the full height, the
 * second half in stripes sw rows high and the full width; sw 0: one window, the whole map, for
 * every head): the window side's q, k and v are gathered out of the packed qkv rows, as
 * (windows, heads, tokens, D), and attend through attention.cu's kernels; the output rows go
 * back into the map. LePE gathers v once more as images (windows, channels, hs, ws), so that
 * conv.cu's depthwise convolution, zero padded at the window's edges, adds it. The backward
 * runs the same way back: the upstream gradient gathered into both layouts, attention.cu's and
 * conv.cu's backward, and the gradients of q, k and v scattered into dqkv. Windows tile the
 * map, so every gather and scatter touches each value once: no atomics, and the result does
 * not depend on timing.
 *
 * The work area keeps what the backward reads (the window side's q, k, v, the attention output
 * and logsumexp, v as images), then four temporaries.
 */
#include "cuda_impl.h"

#include "stripe_kernels.h"


static int layout_of(const ts_cuda_stripe *s, stripe_branches *b) {
    return stripe_layout(s->B, s->Hm, s->Wm, s->C, s->heads, s->sw, b);
}

/* per branch: qw, kw, vw, yw, vi (temp each), then lse (B heads N) */
static int64_t branch_floats(const stripe_branches *b, const stripe_geom *g) {
    return 5 * b->temp + g->B * (g->nc / g->D) * b->N;
}

int64_t ts_cuda_stripe_work(const ts_cuda_stripe *s) {
    stripe_branches b;
    if (!layout_of(s, &b)) return 0;
    int64_t n = 4 * b.temp;
    for (int r = 0; r < b.n; r++) n += branch_floats(&b, &b.g[r]);
    return n;
}

typedef struct saved {
    float *q, *k, *v, *y, *vi, *lse;
} saved;

static saved saved_of(const stripe_branches *b, int r, float *work) {
    float *p = work;
    for (int i = 0; i < r; i++) p += branch_floats(b, &b->g[i]);
    saved s = { p, p + b->temp, p + 2 * b->temp, p + 3 * b->temp, p + 4 * b->temp,
                p + 5 * b->temp };
    return s;
}

static float *temps_of(const stripe_branches *b, float *work) {
    float *p = work;
    for (int i = 0; i < b->n; i++) p += branch_floats(b, &b->g[i]);
    return p;
}

static ts_status gather(ts_cuda *g, const float *map, float *win, stripe_geom sg, int64_t off,
                        int64_t ld, int image, ts_err *err) {
    sg.off = off, sg.ld = ld;
    int64_t n = sg.B * sg.Hm * sg.Wm * sg.nc;
    stripe_gather_kernel<<<grid_for(n, 256), 256, 0, g->stream>>>(map, win, sg, image);
    TS_CU_LAUNCHED("stripe attention (gather)");
    return TS_OK;
}

static ts_status scatter(ts_cuda *g, const float *win, float *map, stripe_geom sg, int64_t off,
                         int64_t ld, int image, int acc, ts_err *err) {
    sg.off = off, sg.ld = ld;
    int64_t n = sg.B * sg.Hm * sg.Wm * sg.nc;
    stripe_scatter_kernel<<<grid_for(n, 256), 256, 0, g->stream>>>(win, map, sg, image, acc);
    TS_CU_LAUNCHED("stripe attention (scatter)");
    return TS_OK;
}

/* the window images of branch sg as the depthwise convolution sees them */
static ts_cuda_conv window_images(const stripe_geom *sg) {
    ts_cuda_conv c = { sg->B * sg->nwy * sg->nwx, sg->nc, sg->hs, sg->ws, 0, 3, 3, 1, 1 };
    return c;
}

static ts_status geometry_fail(const ts_cuda_stripe *s, ts_err *err) {
    return ts__cuda_fail(err, TS_ERR_USAGE, "cuda stripe attention: %lld images of %lld x %lld, "
                         "%lld channels, %lld heads, stripe width %lld (it must divide the map, "
                         "and the heads must be even and divide the channels)", (long long)s->B,
                         (long long)s->Hm, (long long)s->Wm, (long long)s->C,
                         (long long)s->heads, (long long)s->sw);
}

#define TRY(x)                                                                              \
    do {                                                                                   \
        ts_status st_ = (x);                                                               \
        if (st_) return st_;                                                               \
    } while (0)

ts_status ts_cuda_stripe_attention(ts_cuda *g, const float *qkv, const float *lepe_w,
                                   const float *lepe_b, float *out, const ts_cuda_stripe *s,
                                   float *work, ts_err *err) {
    stripe_branches b;
    if (!layout_of(s, &b)) return geometry_fail(s, err);
    if (lepe_b && !lepe_w)
        return ts__cuda_fail(err, TS_ERR_USAGE, "cuda stripe attention: a LePE bias without "
                             "its weights");
    int64_t C = s->C, ld = 3 * C;
    float *lepe = temps_of(&b, work);
    for (int r = 0; r < b.n; r++) {
        stripe_geom sg = b.g[r];
        saved v = saved_of(&b, r, work);
        int64_t Bw = sg.B * sg.nwy * sg.nwx, nh = sg.nc / b.D, Nw = sg.hs * sg.ws;
        TRY(gather(g, qkv, v.q, sg, 0, ld, 0, err));
        TRY(gather(g, qkv, v.k, sg, C, ld, 0, err));
        TRY(gather(g, qkv, v.v, sg, 2 * C, ld, 0, err));
        TRY(ts_cuda_attention(g, v.q, v.k, v.v, NULL, v.y, v.lse, Bw, nh, Nw, Nw, b.D, 0,
                              s->scale, err));
        TRY(scatter(g, v.y, out, sg, 0, C, 0, 0, err));
        if (!lepe_w) continue;
        ts_cuda_conv cv = window_images(&sg);
        TRY(gather(g, qkv, v.vi, sg, 2 * C, ld, 1, err));
        TRY(ts_cuda_dwconv2d(g, v.vi, lepe_w + sg.c0 * 9, lepe_b ? lepe_b + sg.c0 : NULL, lepe,
                             &cv, err));
        TRY(scatter(g, lepe, out, sg, 0, C, 1, 1, err));
    }
    return TS_OK;
}

ts_status ts_cuda_stripe_attention_backward(ts_cuda *g, const float *lepe_w, const float *dout,
                                            float *dqkv, float *dlepe_w, float *dlepe_b,
                                            const ts_cuda_stripe *s, float *work, ts_err *err) {
    stripe_branches b;
    if (!layout_of(s, &b)) return geometry_fail(s, err);
    int64_t C = s->C, ld = 3 * C;
    float *t = temps_of(&b, work), *dyw = t, *dq = t + b.temp, *dk = t + 2 * b.temp;
    float *dv = t + 3 * b.temp;
    size_t bytes = (size_t)b.temp * sizeof(float);
    for (int r = 0; r < b.n; r++) {
        stripe_geom sg = b.g[r];
        saved v = saved_of(&b, r, work);
        int64_t Bw = sg.B * sg.nwy * sg.nwx, nh = sg.nc / b.D, Nw = sg.hs * sg.ws;
        if (dqkv) {
            /* the attention's part: the upstream gradient is its output's */
            TRY(gather(g, dout, dyw, sg, 0, C, 0, err));
            TRY(ts_cuda_zero(g, dq, 3 * bytes, err)); /* dq, dk, dv: the kernels add */
            TRY(ts_cuda_attention_backward(g, v.q, v.k, v.v, NULL, v.y, v.lse, dyw, dq, dk, dv,
                                           Bw, nh, Nw, Nw, b.D, 0, s->scale, err));
            TRY(scatter(g, dq, dqkv, sg, 0, ld, 0, 1, err));
            TRY(scatter(g, dk, dqkv, sg, C, ld, 0, 1, err));
            TRY(scatter(g, dv, dqkv, sg, 2 * C, ld, 0, 1, err));
        }
        if (!lepe_w || (!dqkv && !dlepe_w && !dlepe_b)) continue;
        /* LePE's: the upstream gradient as window images, into dyw; v's gradient into dq */
        ts_cuda_conv cv = window_images(&sg);
        TRY(gather(g, dout, dyw, sg, 0, C, 1, err));
        if (dqkv) TRY(ts_cuda_zero(g, dq, bytes, err));
        TRY(ts_cuda_dwconv2d_backward(g, v.vi, lepe_w + sg.c0 * 9, dyw, dqkv ? dq : NULL,
                                      dlepe_w ? dlepe_w + sg.c0 * 9 : NULL,
                                      dlepe_b ? dlepe_b + sg.c0 : NULL, &cv, err));
        if (dqkv) TRY(scatter(g, dq, dqkv, sg, 2 * C, ld, 1, 1, err));
    }
    return TS_OK;
}
