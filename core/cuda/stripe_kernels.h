/* stripe_kernels.h: the window gathers and scatters of stripe.cu (see there), in a header of
 * their own so that tests/emu_conv.cpp runs the same source under the host emulation of
 * tests/emu_cuda.h, against the CPU backend's ts_stripe_attention. Included by stripe.cu
 * alone.
 */
#ifndef TS_STRIPE_KERNELS_H
#define TS_STRIPE_KERNELS_H

/* One branch of the cross-shaped attention: windows of hs x ws tokens tile the Hm x Wm map
 * (nwy down, nwx across), and the branch owns channels [c0, c0 + nc) of the map's C, heads of
 * D. The map side is rows of pitch ld with the block read or written starting at column off
 * (qkv: ld 3C and off 0, C or 2C for q, k, v; the output: ld C, off 0). The window side is
 * (B nwy nwx windows, nc / D heads, hs ws tokens, D), or with `image` (windows, nc channels,
 * hs, ws): a window as the depthwise convolution's image. */
typedef struct stripe_geom {
    int64_t B, Hm, Wm, D, c0, nc, hs, ws, nwy, nwx, ld, off;
} stripe_geom;

/* The branches of a geometry (0 when it is none: the stripe width must divide the map, the
 * heads be even with sw > 0 and divide the channels); temp: the floats of one branch's window
 * side (B Hm Wm channels of the branch). Host code. */
typedef struct stripe_branches {
    int n;
    stripe_geom g[2];
    int64_t D, N, temp;
} stripe_branches;

static inline int stripe_layout(int64_t B, int64_t Hm, int64_t Wm, int64_t C, int64_t H,
                                int64_t sw, stripe_branches *b) {
    *b = stripe_branches{};
    if (B < 1 || Hm < 1 || Wm < 1 || H < 1 || C < 1 || C % H || sw < 0) return 0;
    if (sw && (Hm % sw || Wm % sw || H % 2)) return 0;
    b->D = C / H, b->N = Hm * Wm;
    stripe_geom base = { B, Hm, Wm, b->D, 0, C, Hm, Wm, 1, 1, 3 * C, 0 };
    b->n = sw ? 2 : 1;
    b->g[0] = base, b->g[1] = base;
    if (sw) { /* branch 0: sw columns, full height; branch 1: sw rows, full width */
        b->g[0].nc = C / 2, b->g[0].ws = sw, b->g[0].nwx = Wm / sw;
        b->g[1].c0 = C / 2, b->g[1].nc = C / 2, b->g[1].hs = sw, b->g[1].nwy = Hm / sw;
    }
    b->temp = B * b->N * b->g[0].nc;
    return 1;
}

/* element e of the window side -> its place on the map side */
static __device__ __forceinline__ int64_t stripe_map_index(const stripe_geom *g, int64_t e,
                                                           int image) {
    int64_t Nw = g->hs * g->ws, t, c, bw;
    if (image) {
        t = e % Nw, c = e / Nw % g->nc, bw = e / (Nw * g->nc);
    } else {
        int64_t d = e % g->D, r = e / g->D;
        t = r % Nw, c = r / Nw % (g->nc / g->D) * g->D + d, bw = r / (Nw * (g->nc / g->D));
    }
    int64_t wx = bw % g->nwx, wy = bw / g->nwx % g->nwy, b = bw / (g->nwx * g->nwy);
    int64_t n = (wy * g->hs + t / g->ws) * g->Wm + wx * g->ws + t % g->ws;
    return (b * g->Hm * g->Wm + n) * g->ld + g->off + g->c0 + c;
}

/* window side = the map's values */
static __global__ void stripe_gather_kernel(const float *map, float *win, stripe_geom g,
                                            int image) {
    FOR_EACH(e, g.B * g.Hm * g.Wm * g.nc) win[e] = map[stripe_map_index(&g, e, image)];
}

/* the map's values = the window side, or += (acc); each map value is one window value's, so
 * no two threads meet */
static __global__ void stripe_scatter_kernel(const float *win, float *map, stripe_geom g,
                                             int image, int acc) {
    FOR_EACH(e, g.B * g.Hm * g.Wm * g.nc) {
        float *p = &map[stripe_map_index(&g, e, image)];
        if (acc)
            *p += win[e];
        else
            *p = win[e];
    }
}

#endif
