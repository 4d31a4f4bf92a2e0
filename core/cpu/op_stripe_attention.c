/* op_stripe_attention.c: CSWin's cross-shaped window attention with LePE on the CPU, forward
 * and backward in one fused op.
 *
 * A CSWin block turns its map of Hm x Wm tokens into q, k and v with one Linear (qkv, packed
 * [q | k | v] with the heads side by side), then attends inside windows: with stripe width sw,
 * the first half of the heads inside stripes sw columns wide that span the full height, the
 * second half inside stripes sw rows high that span the full width (the official code's branch
 * idx 0 and idx 1); a stage whose map is its stripe width, and the last stage, use one window,
 * the whole map, for all heads. Each window adds LePE, a 3x3 depthwise convolution of v computed
 * inside the window (zero padding at the window's edges, not the map's), to its output.
 *
 * The op is one pass over tasks, a task being one (image, branch, window, head): gather the
 * window's q, k and v rows of that head out of the packed qkv into a small per-thread buffer,
 * attend, add LePE, scatter the rows into the output. No reshaped or permuted copy of the map
 * exists, and backward needs only qkv and the per-row logsumexp. The attention math is
 * op_attention.c's (scores through ts__gemm, probabilities recomputed in backward from the
 * saved logsumexp, the softmax Jacobian as FlashAttention-2 writes it); windows are small
 * (56 to 288 tokens in the official configurations), so a block of query rows meets all its
 * keys at once and the softmax needs no online rescaling.
 *
 * What it deliberately is not: a general windowed attention (no shifted windows, no masks, no
 * relative position bias, no dropout on the probabilities), and it does not decide the branch
 * layout of a stage (vision/cswin.c does, from the official rules). Products always run in
 * float32, as op_attention.c's, whatever the context's matmul precision.
 *
 * Shapes: B images, Hm x Wm the map, N = Hm * Wm tokens (row-major), C channels, heads H,
 * D = C / H, a window hs x ws of Nw = hs * ws tokens. qkv (B, N, 3C), lepe_w (C, 1, 3, 3),
 * lepe_b (C), y (B, N, C), lse (B, H, N) in task order.
 */
#include "../tessera-impl.h"
#include "vmath.h"

#include <math.h>
#include <omp.h>

/* The math of one task, for the window's rows q_i, k_j, v_j (i, j < Nw) of one head:
 *
 *   s_ij = scale * q_i . k_j,   p_ij = exp(s_ij - L_i),   L_i = log sum_j exp(s_ij)
 *   y_i  = sum_j p_ij v_j + lepe_i
 *   lepe_i = b + sum over the 3x3 taps t of w_t * v_(i + t)   (per channel; taps outside the
 *            window count as zero)
 *
 * Backward, with dy the upstream gradient:
 *
 *   dv_j += sum_i p_ij dy_i          dp_ij = dy_i . v_j
 *   ds_ij = p_ij (dp_ij - D_i),      D_i = sum_j p_ij dp_ij   (the softmax Jacobian)
 *   dq_i  = scale * sum_j ds_ij k_j  dk_j += scale * sum_i ds_ij q_i
 *   LePE:  dv_(i + t) += w_t * dy_i,  dw_t += dy_i * v_(i + t),  db += dy_i
 *
 * A query block holds whole rows of p, so D_i is summed from p and dp directly; the forward
 * output is not needed (op_attention.c, whose key blocks split the rows, takes dy_i . y_i
 * instead, which here would include LePE). */

/* Query rows per block: a 64 x 288 score block (the longest window of the official
 * configurations, 24 x 12 at 384) is 72 KiB and stays in L2 with its gradient twin. */
enum { BQ = 64 };

static int nthreads(const ts_ctx *c) { return c->nthreads > 0 ? c->nthreads : omp_get_max_threads(); }

/* One branch: its heads, its window and how many windows tile the map. */
typedef struct sa_branch {
    int64_t h0, nh;     /* heads [h0, h0 + nh) */
    int64_t hs, ws, nw; /* window hs x ws tokens, nw = hs * ws */
    int64_t nwy, nwx;   /* windows down and across */
    int64_t task0;      /* the first task of the branch */
} sa_branch;

typedef struct sa_geom {
    int64_t B, Hm, Wm, N, C, H, D, sw;
    float scale;
    int nbranch;
    sa_branch br[2];
    int64_t ntask, nw_max;
} sa_geom;

static sa_geom geometry(const ts_tensor *qkv, const ts_tensor *w, const ts_tensor *b,
                        int64_t Hm, int64_t Wm, int64_t heads, int64_t sw, float scale) {
    char s1[96], s2[96];
    ts__check_f32("stripe_attention", qkv);
    TS_CHECK(qkv->ndim == 3 && Hm > 0 && Wm > 0 && qkv->shape[1] == Hm * Wm &&
                 heads > 0 && qkv->shape[2] % (3 * heads) == 0,
             "stripe_attention: qkv %s must be (B, %lld x %lld tokens, 3C) with C divisible by "
             "%lld heads", ts_shape_str(qkv, s1, sizeof s1), (long long)Hm, (long long)Wm,
             (long long)heads);
    sa_geom g = { 0 };
    g.B = qkv->shape[0];
    g.Hm = Hm, g.Wm = Wm, g.N = Hm * Wm;
    g.C = qkv->shape[2] / 3;
    g.H = heads, g.D = g.C / heads, g.sw = sw;
    g.scale = scale > 0.0f ? scale : g.D > 0 ? 1.0f / sqrtf((float)g.D) : 1.0f;
    if (w) {
        ts__check_f32("stripe_attention", w);
        TS_CHECK(w->ndim == 4 && w->shape[0] == g.C && w->shape[1] == 1 && w->shape[2] == 3 &&
                     w->shape[3] == 3,
                 "stripe_attention: lepe_w %s must be (%lld, 1, 3, 3) for qkv %s",
                 ts_shape_str(w, s1, sizeof s1), (long long)g.C, ts_shape_str(qkv, s2, sizeof s2));
    }
    if (b) {
        ts__check_f32("stripe_attention", b);
        TS_CHECK(w && b->ndim == 1 && b->shape[0] == g.C,
                 "stripe_attention: lepe_b %s must be (%lld) and come with lepe_w",
                 ts_shape_str(b, s1, sizeof s1), (long long)g.C);
    }
    if (sw == 0) {
        g.nbranch = 1;
        g.br[0] = (sa_branch){ 0, heads, Hm, Wm, Hm * Wm, 1, 1, 0 };
    } else {
        TS_CHECK(sw > 0 && Hm % sw == 0 && Wm % sw == 0 && heads % 2 == 0,
                 "stripe_attention: stripe width %lld must divide the %lld x %lld map and the "
                 "%lld heads must be even", (long long)sw, (long long)Hm, (long long)Wm,
                 (long long)heads);
        g.nbranch = 2;
        /* branch 0: sw columns, full height; branch 1: sw rows, full width */
        g.br[0] = (sa_branch){ 0, heads / 2, Hm, sw, Hm * sw, 1, Wm / sw, 0 };
        g.br[1] = (sa_branch){ heads / 2, heads / 2, sw, Wm, sw * Wm, Hm / sw, 1, 0 };
    }
    for (int r = 0; r < g.nbranch; r++) {
        sa_branch *br = &g.br[r];
        br->task0 = g.ntask;
        g.ntask += g.B * br->nwy * br->nwx * br->nh;
        if (br->nw > g.nw_max) g.nw_max = br->nw;
    }
    return g;
}

/* Task t: which branch, image, window and head, and where its logsumexp rows start. Tasks of
 * a branch run image, window, head; every task of a branch has nw rows. */
typedef struct sa_task {
    const sa_branch *br;
    int64_t b, wy, wx, head, lse_off;
} sa_task;

static sa_task task_of(const sa_geom *g, int64_t t) {
    int r = g->nbranch == 2 && t >= g->br[1].task0;
    const sa_branch *br = &g->br[r];
    int64_t local = t - br->task0, nwin = br->nwy * br->nwx;
    sa_task k = { br, local / (nwin * br->nh), 0, 0, br->h0 + local % br->nh, 0 };
    int64_t win = (local / br->nh) % nwin;
    k.wy = win / br->nwx;
    k.wx = win % br->nwx;
    /* the branches before take B * N * nh rows each */
    k.lse_off = (r ? g->B * g->N * g->br[0].nh : 0) + local * br->nw;
    return k;
}

/* The map token of row i of the task's window (rows run along the window's rows). */
static inline int64_t token_of(const sa_geom *g, const sa_task *k, int64_t i) {
    int64_t yy = i / k->br->ws, xx = i % k->br->ws;
    return (k->wy * k->br->hs + yy) * g->Wm + k->wx * k->br->ws + xx;
}

/* Copy the head's D columns at column offset col of rows (B, N, ld) into dst (nw, D). */
static void gather(const sa_geom *g, const sa_task *k, const float *src, int64_t ld, int64_t col,
                   float *dst) {
    for (int64_t i = 0; i < k->br->nw; i++)
        memcpy(dst + i * g->D, src + (k->b * g->N + token_of(g, k, i)) * ld + col,
               (size_t)g->D * sizeof(float));
}

/* dst rows (B, N, ld) at column col: = src (nw, D) when beta is 0, += otherwise. */
static void scatter(const sa_geom *g, const sa_task *k, const float *src, float *dst, int64_t ld,
                    int64_t col, float beta) {
    for (int64_t i = 0; i < k->br->nw; i++) {
        float *d = dst + (k->b * g->N + token_of(g, k, i)) * ld + col;
        const float *s = src + i * g->D;
        if (beta == 0.0f) {
            memcpy(d, s, (size_t)g->D * sizeof(float));
        } else {
#pragma omp simd
            for (int64_t e = 0; e < g->D; e++) d[e] += s[e];
        }
    }
}

/* The LePE weights as one vector of channels per tap: wt (9, C) from w (C, 1, 3, 3), so the
 * loops below run along the head's channels with unit stride. */
static float *taps_of(ts_ctx *c, const sa_geom *g, const ts_tensor *w) {
    float *wt = ts_arena_alloc(c->step, (size_t)(9 * g->C) * sizeof(float));
    const float *W = ts_f32(w);
    for (int64_t ch = 0; ch < g->C; ch++)
        for (int t = 0; t < 9; t++) wt[t * g->C + ch] = W[ch * 9 + t];
    return wt;
}

/* y (nw, D) += LePE of v (nw, D) for the head's channels ch0 .. ch0 + D. wt (9, C), bias (C)
 * or NULL. */
static void lepe_forward(const sa_geom *g, const sa_branch *br, int64_t ch0, const float *wt,
                         const float *bias, const float *v, float *y) {
    int64_t D = g->D;
    for (int64_t yy = 0; yy < br->hs; yy++)
        for (int64_t xx = 0; xx < br->ws; xx++) {
            float *o = y + (yy * br->ws + xx) * D;
            if (bias) {
#pragma omp simd
                for (int64_t e = 0; e < D; e++) o[e] += bias[ch0 + e];
            }
            for (int t = 0; t < 9; t++) {
                int64_t y2 = yy + t / 3 - 1, x2 = xx + t % 3 - 1;
                if (y2 < 0 || y2 >= br->hs || x2 < 0 || x2 >= br->ws) continue;
                const float *vr = v + (y2 * br->ws + x2) * D, *wr = wt + t * g->C + ch0;
#pragma omp simd
                for (int64_t e = 0; e < D; e++) o[e] += wr[e] * vr[e];
            }
        }
}

/* The LePE part of backward: dv (nw, D) += taps-weighted dy; dwt (9, C) and db (C) partial sums
 * of this thread (either may be NULL, and dv too). */
static void lepe_backward(const sa_geom *g, const sa_branch *br, int64_t ch0, const float *wt,
                          const float *v, const float *dy, float *dv, float *dwt, float *db) {
    int64_t D = g->D;
    for (int64_t yy = 0; yy < br->hs; yy++)
        for (int64_t xx = 0; xx < br->ws; xx++) {
            const float *d = dy + (yy * br->ws + xx) * D;
            if (db) {
#pragma omp simd
                for (int64_t e = 0; e < D; e++) db[ch0 + e] += d[e];
            }
            for (int t = 0; t < 9; t++) {
                int64_t y2 = yy + t / 3 - 1, x2 = xx + t % 3 - 1;
                if (y2 < 0 || y2 >= br->hs || x2 < 0 || x2 >= br->ws) continue;
                int64_t j = (y2 * br->ws + x2) * D;
                if (dv) {
                    const float *wr = wt + t * g->C + ch0;
#pragma omp simd
                    for (int64_t e = 0; e < D; e++) dv[j + e] += wr[e] * d[e];
                }
                if (dwt) {
                    float *dw = dwt + t * g->C + ch0;
#pragma omp simd
                    for (int64_t e = 0; e < D; e++) dw[e] += d[e] * v[j + e];
                }
            }
        }
}

/* ---- forward ---- */

/* Per-thread scratch of the forward: q, k, v, y windows (nw, D) and a score block (BQ, nw). */
static size_t fwd_scratch(const sa_geom *g) {
    return (size_t)(4 * g->nw_max * g->D + BQ * g->nw_max);
}

static void task_forward(ts_ctx *fc, const sa_geom *g, int64_t t, const float *qkv,
                         const float *wt, const float *bias, float *y, float *lse, float *buf) {
    sa_task k = task_of(g, t);
    int64_t D = g->D, C = g->C, nw = k.br->nw, col = k.head * D;
    float *Q = buf, *K = Q + nw * D, *V = K + nw * D, *O = V + nw * D, *S = O + nw * D;
    gather(g, &k, qkv, 3 * C, col, Q);
    gather(g, &k, qkv, 3 * C, C + col, K);
    gather(g, &k, qkv, 3 * C, 2 * C + col, V);
    for (int64_t i0 = 0; i0 < nw; i0 += BQ) {
        int64_t nq = nw - i0 < BQ ? nw - i0 : BQ;
        /* S (nq, nw) = scale * Q_blk K^T */
        ts__gemm(fc, 0, 1, nq, nw, D, g->scale, Q + i0 * D, D, K, D, 0.0f, S, nw);
        for (int64_t ii = 0; ii < nq; ii++) {
            float *s = S + ii * nw, mx = -INFINITY, sum = 0.0f;
#pragma omp simd reduction(max : mx)
            for (int64_t j = 0; j < nw; j++) mx = s[j] > mx ? s[j] : mx;
#pragma omp simd reduction(+ : sum)
            for (int64_t j = 0; j < nw; j++) {
                s[j] = exp_neg(s[j] - mx);
                sum += s[j];
            }
            float inv = 1.0f / sum;
#pragma omp simd
            for (int64_t j = 0; j < nw; j++) s[j] *= inv;
            if (lse) lse[k.lse_off + i0 + ii] = mx + logf(sum);
        }
        /* O_blk (nq, D) = P (nq, nw) @ V (nw, D) */
        ts__gemm(fc, 0, 0, nq, D, nw, 1.0f, S, nw, V, D, 0.0f, O + i0 * D, D);
    }
    if (wt) lepe_forward(g, k.br, col, wt, bias, V, O);
    scatter(g, &k, O, y, C, col, 0.0f);
}

/* ---- backward ---- */

/* Per-thread scratch of the backward: q, k, v, dy, dq, dk, dv windows (nw, D), P and dP
 * blocks (BQ, nw). The LePE weight and bias gradient partials (9 + 1, C) of each thread sit
 * apart, after all the scratch. */
static size_t bwd_scratch(const sa_geom *g) {
    return (size_t)(7 * g->nw_max * g->D + 2 * BQ * g->nw_max);
}

static void task_backward(ts_ctx *fc, const sa_geom *g, int64_t t, const float *qkv,
                          const float *dy, const float *wt, const float *lse, float *dqkv,
                          float beta, float *dwt, float *db, float *buf) {
    sa_task k = task_of(g, t);
    int64_t D = g->D, C = g->C, nw = k.br->nw, col = k.head * D, wd = nw * D;
    float *Q = buf, *K = Q + wd, *V = K + wd, *dY = V + wd, *dQ = dY + wd, *dK = dQ + wd,
          *dV = dK + wd, *P = dV + wd, *dP = P + BQ * nw;
    gather(g, &k, qkv, 3 * C, 2 * C + col, V);
    gather(g, &k, dy, C, col, dY);
    if (dqkv) {
        gather(g, &k, qkv, 3 * C, col, Q);
        gather(g, &k, qkv, 3 * C, C + col, K);
        memset(dK, 0, (size_t)wd * sizeof(float));
        memset(dV, 0, (size_t)wd * sizeof(float));
        for (int64_t i0 = 0; i0 < nw; i0 += BQ) {
            int64_t nq = nw - i0 < BQ ? nw - i0 : BQ;
            const float *L = lse + k.lse_off + i0, *dYb = dY + i0 * D;
            /* P (nq, nw) = exp(scale * Q_blk K^T - L) */
            ts__gemm(fc, 0, 1, nq, nw, D, g->scale, Q + i0 * D, D, K, D, 0.0f, P, nw);
            for (int64_t ii = 0; ii < nq; ii++) {
                float *p = P + ii * nw, li = L[ii];
#pragma omp simd
                for (int64_t j = 0; j < nw; j++) p[j] = exp_neg(p[j] - li);
            }
            /* dV (nw, D) += P^T (nw, nq) @ dY_blk (nq, D) */
            ts__gemm(fc, 1, 0, nw, D, nq, 1.0f, P, nw, dYb, D, 1.0f, dV, D);
            /* dP (nq, nw) = dY_blk V^T; then dS = P * (dP - D_i), kept in dP */
            ts__gemm(fc, 0, 1, nq, nw, D, 1.0f, dYb, D, V, D, 0.0f, dP, nw);
            for (int64_t ii = 0; ii < nq; ii++) {
                float *dp = dP + ii * nw, di = 0.0f;
                const float *p = P + ii * nw;
#pragma omp simd reduction(+ : di)
                for (int64_t j = 0; j < nw; j++) di += p[j] * dp[j];
#pragma omp simd
                for (int64_t j = 0; j < nw; j++) dp[j] = p[j] * (dp[j] - di);
            }
            /* dQ_blk (nq, D) = scale * dS K;  dK (nw, D) += scale * dS^T Q_blk */
            ts__gemm(fc, 0, 0, nq, D, nw, g->scale, dP, nw, K, D, 0.0f, dQ + i0 * D, D);
            ts__gemm(fc, 1, 0, nw, D, nq, g->scale, dP, nw, Q + i0 * D, D, 1.0f, dK, D);
        }
    }
    if (wt)
        lepe_backward(g, k.br, col, wt, V, dY, dqkv ? dV : NULL, dwt, db);
    if (dqkv) {
        scatter(g, &k, dQ, dqkv, 3 * C, col, beta);
        scatter(g, &k, dK, dqkv, 3 * C, C + col, beta);
        scatter(g, &k, dV, dqkv, 3 * C, 2 * C + col, beta);
    }
}

static void stripe_attention_backward(ts_ctx *c, ts_node *n) {
    ts_tensor *qkv = n->in[0], *w = n->in[1], *b = n->in[2];
    sa_geom g = geometry(qkv, w, b, n->i[0], n->i[1], n->i[2], n->i[3], n->f[0]);
    float beta;
    float *dqkv = ts__grad_fresh(c, qkv, &beta);
    float *dw = w ? ts__grad(c, w) : NULL, *db = b ? ts__grad(c, b) : NULL;
    if (!dqkv && !dw && !db) return;
    const float *wt = w ? taps_of(c, &g, w) : NULL;
    int nt = nthreads(c);
    ts_ctx fc = *c; /* products in float32 on every thread: see the top of the file */
    fc.precision = TS_PREC_F32;
    size_t per = bwd_scratch(&g), npart = 10 * (size_t)g.C;
    float *scratch = ts_arena_alloc(c->step, (size_t)nt * (per + npart) * sizeof(float));
    float *parts = scratch + (size_t)nt * per; /* (nt, 9 + 1, C) */
    memset(parts, 0, (size_t)nt * npart * sizeof(float));
    const float *X = ts_f32(qkv), *dY = ts_f32(n->out->grad), *L = ts_f32(n->saved[0]);
    /* A static schedule: the same tasks meet the same partials in every step, so the sums
     * are deterministic for a given thread count. */
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t t = 0; t < g.ntask; t++) {
        int th = omp_get_thread_num();
        float *part = parts + (size_t)th * npart;
        task_backward(&fc, &g, t, X, dY, wt, L, dqkv, beta, dw ? part : NULL,
                      db ? part + 9 * g.C : NULL, scratch + (size_t)th * per);
    }
    /* The weight and bias gradients: the threads' partials, summed in thread order. */
    for (int th = 0; th < nt; th++) {
        const float *part = parts + (size_t)th * npart;
        for (int64_t ch = 0; ch < g.C; ch++) {
            if (dw)
                for (int tap = 0; tap < 9; tap++) dw[ch * 9 + tap] += part[tap * g.C + ch];
            if (db) db[ch] += part[9 * g.C + ch];
        }
    }
}

/* ---- the op ---- */

ts_tensor *ts_stripe_attention(ts_ctx *c, const ts_tensor *qkv, const ts_tensor *lepe_w,
                               const ts_tensor *lepe_b, int64_t map_h, int64_t map_w,
                               int64_t heads, int64_t sw, float scale) {
    sa_geom g = geometry(qkv, lepe_w, lepe_b, map_h, map_w, heads, sw, scale);
    ts_tensor *y = ts_new(c, TS_F32, 3, TS_SHAPE(g.B, g.N, g.C));
    int rec = ts__needs_grad(c, 3, (const ts_tensor *const[]){ qkv, lepe_w, lepe_b });
    ts_tensor *lse = rec ? ts_new_f32(c, 3, TS_SHAPE(g.B, g.H, g.N)) : NULL;
    if (g.D > 0 && g.ntask > 0) {
        const float *wt = lepe_w ? taps_of(c, &g, lepe_w) : NULL;
        const float *bias = lepe_b ? ts_f32(lepe_b) : NULL;
        int nt = nthreads(c);
        ts_ctx fc = *c; /* products in float32 on every thread: see the top of the file */
        fc.precision = TS_PREC_F32;
        size_t per = fwd_scratch(&g);
        float *scratch = ts_arena_alloc(c->step, (size_t)nt * per * sizeof(float));
        const float *X = ts_f32(qkv);
        float *Y = ts_f32(y), *L = lse ? ts_f32(lse) : NULL;
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
        for (int64_t t = 0; t < g.ntask; t++)
            task_forward(&fc, &g, t, X, wt, bias, Y, L,
                         scratch + (size_t)omp_get_thread_num() * per);
    } else {
        memset(ts_f32(y), 0, (size_t)y->numel * sizeof(float));
        if (lse) memset(ts_f32(lse), 0, (size_t)lse->numel * sizeof(float));
    }
    if (rec) {
        ts_node *n = TS__RECORD(c, TS_OP_STRIPE_ATTENTION, stripe_attention_backward, y, qkv,
                                lepe_w, lepe_b);
        n->i[0] = map_h;
        n->i[1] = map_w;
        n->i[2] = heads;
        n->i[3] = sw;
        n->f[0] = g.scale;
        n->saved[0] = lse;
    }
    return y;
}
