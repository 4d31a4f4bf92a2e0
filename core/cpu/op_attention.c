/* op_attention.c: fused scaled-dot-product attention on the CPU, forward and backward.
 *
 * One op computes softmax(scale * q k^T + mask) v the FlashAttention way: query blocks meet key
 * blocks one pair at a time, the softmax is kept online (a running maximum and a running sum per
 * query row), and the only things saved for backward are the output and the per-row
 * logsumexp. The backward recomputes the probabilities block by block (FlashAttention-2).
 * Block products go to oneDNN's sgemm through ts__gemm; the softmax, the masks and the
 * rescaling are the only loops here.
 *
 * What it deliberately is not: a general masked attention. The only masks are causal (query i
 * sees keys j <= i, with Tq == Tk) and key padding (B, Tk); there is no additive bias, no
 * dropout on the probabilities, and the products always run in float32, whatever the context's
 * matmul precision, because converting small blocks to bf16 costs more than it saves.
 *
 * Three layouts share the kernels. ts_attention takes q, k and v as separate (B, H, T, D) tensors.
 * ts__attention_packed, which nn's multi-head attention calls, reads them straight out of the
 * packed in_proj output (B, T, 3C), columns [q | k | v] with the heads side by side in each
 * (C = H * D), and writes y as (B, T, C), which is what the out_proj wants: no permute, slice or
 * reshape copies of q, k, v or y (and none of their gradients) exist. ts_attention_kv does the
 * same for cross-attention: q (B, Tq, C) as its projection gives it and kv (B, Tk, 2C), columns
 * [k | v]. The kernels only see a base pointer and a row stride per head, so every layout runs
 * the same code.
 *
 * Shapes: q (B, H, Tq, D), k and v (B, H, Tk, D), key_pad (B, Tk) u8 or i32 with nonzero =
 * padding, y (B, H, Tq, D), lse (B, H, Tq); packed: qkv (B, T, 3C), y (B, T, C).
 */
#include "../tessera-impl.h"
#include "vmath.h"

#include <math.h>
#include <omp.h>

/* The math, for one query row q_i against keys k_j and values v_j:
 *
 *   s_ij = scale * q_i . k_j            (minus infinity where the mask hides key j)
 *   p_ij = exp(s_ij - L_i)              with L_i = log sum_j exp(s_ij), the logsumexp
 *   y_i  = sum_j p_ij v_j
 *
 * Forward without the full row: keys arrive in blocks. Keep m (the largest s seen so far),
 * l (the sum of exp(s - m) so far) and an unnormalised output o = sum exp(s - m) v. When a block
 * raises the maximum to m', everything kept so far was measured against the old m, so it is
 * multiplied by exp(m - m') before the block's own exp(s - m') terms are added. After the last
 * block y_i = o / l and L_i = m + log l. Nothing of size Tq x Tk outlives one block pair.
 *
 * Backward, with dy the upstream gradient: p_ij comes back exactly from the saved L_i, then
 *
 *   dv_j += sum_i p_ij dy_i                       dp_ij = dy_i . v_j
 *   ds_ij = p_ij (dp_ij - D_i),  D_i = sum_j p_ij dp_ij = dy_i . y_i   (the softmax Jacobian)
 *   dq_i += scale * sum_j ds_ij k_j               dk_j += scale * sum_i ds_ij q_i
 *
 * D_i = dy_i . y_i needs no probabilities, so it is computed once up front. A row whose keys are
 * all masked has l = 0: its output is zero and every p_ij of it is zero, so it gets no
 * gradient. */

/* Block sizes. A sequence of at most ONE_BLOCK tokens is one block: each (batch, head) is then
 * five products in backward (S, dv, dP, dq, dk) and two in forward, with every query row
 * meeting all its keys at once, so no rescaling, and products of T x T x D rather than 64-row
 * slices. At T = 197 (ViT-B/16, ViT-S/16) the score block is 197 x 208 floats (160 KiB) and
 * the working set of one head stays inside L2. Longer sequences go in BQ x BK blocks: a 64 x 256
 * score block is 64 KiB, and with the q, k, v and dy blocks of D = 64 the working set of one
 * pair stays inside L2. (Measured on a 2-core Zen 5 with the transformer-block benchmark at
 * T = 197: whole-head blocks took attention forward + backward from about 32 ms per step with
 * 64 x 256 blocks to about 22 ms, the backward from 24 to 14. Among block shapes before that,
 * 64 x 128 was about 1.5 ms slower than 64 x 256, 32 x 256 slower, 128 x 256 no faster.) */
enum { BQ = 64, BK = 256, ONE_BLOCK = 256 };

static int nthreads(const ts_ctx *c) { return c->nthreads > 0 ? c->nthreads : omp_get_max_threads(); }

/* The geometry of one call, shared by forward and backward. Element (b, h, t, d) of q sits at
 * b * q_sb + h * q_sh + q_col + t * q_ld + d of its buffer; k and v share one layout (k_*),
 * with their own column offsets, and y and dy another (y_*). Gradients have the layout of the
 * tensor they belong to. */
typedef struct attn_geom {
    int64_t B, H, Tq, Tk, D;
    int64_t bq, bk;   /* block sizes: query rows, keys */
    int64_t nqb, nkb; /* query and key blocks */
    int64_t ld;       /* row stride of the score scratch: bk rounded up to 16 floats */
    int causal;
    float scale;
    const ts_tensor *pad; /* (B, Tk) u8 or i32, or NULL */
    int64_t q_sb, q_sh, q_ld, q_col;
    int64_t k_sb, k_sh, k_ld, k_col, v_col;
    int64_t y_sb, y_sh, y_ld;
} attn_geom;

/* The buffers of one call; per head, head_bufs moves every pointer to that head's row 0. */
typedef struct attn_bufs {
    const float *q, *k, *v, *dy;
    float *y, *dq, *dk, *dv; /* any of the grads may be NULL */
} attn_bufs;

static attn_bufs head_bufs(const attn_geom *g, const attn_bufs *a, int64_t bh) {
    int64_t b = bh / g->H, h = bh % g->H;
    int64_t qo = b * g->q_sb + h * g->q_sh + g->q_col;
    int64_t ko = b * g->k_sb + h * g->k_sh + g->k_col, vo = b * g->k_sb + h * g->k_sh + g->v_col;
    int64_t yo = b * g->y_sb + h * g->y_sh;
    attn_bufs r = { a->q + qo, a->k + ko, a->v + vo, a->dy ? a->dy + yo : NULL,
                    a->y ? a->y + yo : NULL, a->dq ? a->dq + qo : NULL,
                    a->dk ? a->dk + ko : NULL, a->dv ? a->dv + vo : NULL };
    return r;
}

/* Is key j of batch b padding? */
static inline int key_masked(const ts_tensor *pad, int64_t b, int64_t Tk, int64_t j) {
    if (!pad) return 0;
    if (pad->dtype == TS_U8) return ((const uint8_t *)pad->data)[b * Tk + j] != 0;
    return ts_i32(pad)[b * Tk + j] != 0;
}

/* Score block S (nq, nk) = scale * Q_blk K_blk^T with the masks written in as -inf. Q and K
 * point at the head's row 0. Returns whether any score of the block is visible. i0 and j0 are
 * the first query and key. */
static int score_block(ts_ctx *fc, const attn_geom *g, int64_t b, const float *Q, const float *K,
                       int64_t i0, int64_t nq, int64_t j0, int64_t nk, float *S) {
    ts__gemm(fc, 0, 1, nq, nk, g->D, g->scale, Q + i0 * g->q_ld, g->q_ld, K + j0 * g->k_ld,
             g->k_ld, 0.0f, S, g->ld);
    int any = !g->pad;
    for (int64_t jj = 0; g->pad && jj < nk; jj++) {
        if (!key_masked(g->pad, b, g->Tk, j0 + jj)) { any = 1; continue; }
        for (int64_t ii = 0; ii < nq; ii++) S[ii * g->ld + jj] = -INFINITY;
    }
    if (g->causal) {
        for (int64_t ii = 0; ii < nq; ii++) {
            int64_t first_hidden = i0 + ii + 1 - j0; /* keys j > i are hidden */
            for (int64_t jj = first_hidden < 0 ? 0 : first_hidden; jj < nk; jj++)
                S[ii * g->ld + jj] = -INFINITY;
        }
    }
    return any;
}

/* ---- short sequences ----
 *
 * With at most SMALL_T queries and keys (an action chunk and its observation tokens) a head is
 * a few thousand multiply-adds, less than oneDNN's fixed cost of the seven products that the
 * block path makes of it. These loops do a whole head in one place instead: k (and in backward
 * v) is transposed into (D, lanes) scratch, lanes = Tk rounded up to 16, so that a row of
 * scores is a few vectors of multiply-adds over D, and each output row is a sum of rows of D
 * lanes. Same math and masks as the block path (one block, so no rescaling); the order of the
 * sums differs. */
enum { SMALL_T = 32, SMALL_D = 256 };

static int small_case(const attn_geom *g) {
    return g->Tq <= SMALL_T && g->Tk <= SMALL_T && g->D <= SMALL_D;
}

/* Lanes of a transposed key row: Tk rounded up to a multiple of 16. */
static int64_t small_lanes(const attn_geom *g) { return (g->Tk + 15) / 16 * 16; }

/* kt (D, lanes) = the Tk rows of k transposed, zero past Tk. */
static void transpose_keys(const attn_geom *g, const float *k, float *kt) {
    int64_t n = small_lanes(g);
    for (int64_t j = 0; j < g->Tk; j++) {
        const float *r = k + j * g->k_ld;
        for (int64_t d = 0; d < g->D; d++) kt[d * n + j] = r[d];
    }
    for (int64_t d = 0; d < g->D; d++)
        for (int64_t j = g->Tk; j < n; j++) kt[d * n + j] = 0.0f;
}

/* out[j] = x . column j of t (D, n) for j < n, n = 16 or 32: four independent chains of
 * multiply-adds over D, each N lanes wide, so that the additions do not wait on each other. */
static inline __attribute__((always_inline)) void lanes_dot_n(const float *x, const float *t,
                                                              int64_t D, float *out, const int N) {
    float a0[SMALL_T] = { 0 }, a1[SMALL_T] = { 0 }, a2[SMALL_T] = { 0 }, a3[SMALL_T] = { 0 };
    int64_t d = 0;
    for (; d + 4 <= D; d += 4) {
        const float *r = t + d * N;
        float x0 = x[d], x1 = x[d + 1], x2 = x[d + 2], x3 = x[d + 3];
#pragma omp simd
        for (int j = 0; j < N; j++) {
            a0[j] += x0 * r[j];
            a1[j] += x1 * r[N + j];
            a2[j] += x2 * r[2 * N + j];
            a3[j] += x3 * r[3 * N + j];
        }
    }
    for (; d < D; d++) {
        const float *r = t + d * N;
        float x0 = x[d];
#pragma omp simd
        for (int j = 0; j < N; j++) a0[j] += x0 * r[j];
    }
#pragma omp simd
    for (int j = 0; j < N; j++) out[j] = (a0[j] + a1[j]) + (a2[j] + a3[j]);
}

static void lanes_dot(const float *x, const float *t, int64_t D, int64_t n, float *out) {
    if (n == 16) lanes_dot_n(x, t, D, out, 16);
    else lanes_dot_n(x, t, D, out, 32);
}

/* Scores of query row q against the transposed keys kt: s[j] = scale q . k_j, -inf where a
 * mask hides key j. Returns the largest score (-inf when every key is hidden). */
static float small_scores(const attn_geom *g, int64_t b, int64_t i, const float *q,
                          const float *kt, float *s) {
    float acc[SMALL_T];
    lanes_dot(q, kt, g->D, small_lanes(g), acc);
    float mx = -INFINITY;
    for (int64_t j = 0; j < g->Tk; j++) {
        int hidden = (g->causal && j > i) || key_masked(g->pad, b, g->Tk, j);
        s[j] = hidden ? -INFINITY : g->scale * acc[j];
        mx = s[j] > mx ? s[j] : mx;
    }
    return mx;
}

/* dst (D) = beta dst + alpha sum_r w[r * wstride] rows[r * ld] over n rows. */
static void small_rows(float *dst, int64_t D, float beta, float alpha, const float *w,
                       int64_t wstride, const float *rows, int64_t ld, int64_t n) {
    float acc[SMALL_D];
    for (int64_t d = 0; d < D; d++) acc[d] = 0.0f;
    for (int64_t r = 0; r < n; r++) {
        float a = w[r * wstride];
        const float *x = rows + r * ld;
#pragma omp simd
        for (int64_t d = 0; d < D; d++) acc[d] += a * x[d];
    }
    if (beta == 0.0f)
        for (int64_t d = 0; d < D; d++) dst[d] = alpha * acc[d];
    else
        for (int64_t d = 0; d < D; d++) dst[d] += alpha * acc[d];
}

/* Forward of head bh; scr holds D * SMALL_T floats (the transposed keys). */
static void forward_small(const attn_geom *g, int64_t bh, const attn_bufs *all, float *lse,
                          float *scr) {
    attn_bufs hb = head_bufs(g, all, bh);
    int64_t b = bh / g->H;
    transpose_keys(g, hb.k, scr);
    for (int64_t i = 0; i < g->Tq; i++) {
        float s[SMALL_T], *yr = hb.y + i * g->y_ld;
        float mx = small_scores(g, b, i, hb.q + i * g->q_ld, scr, s);
        if (mx == -INFINITY) { /* every key hidden: zeros, as the block path gives */
            memset(yr, 0, (size_t)g->D * sizeof(float));
            if (lse) lse[bh * g->Tq + i] = 0.0f;
            continue;
        }
        float sum = 0.0f;
        for (int64_t j = 0; j < g->Tk; j++) {
            s[j] = exp_neg(s[j] - mx);
            sum += s[j];
        }
        small_rows(yr, g->D, 0.0f, 1.0f / sum, s, 1, hb.v, g->k_ld, g->Tk);
        if (lse) lse[bh * g->Tq + i] = mx + logf(sum);
    }
}

/* Backward of head bh (beta as attention_backward_run's); scr holds 2 * D * SMALL_T +
 * 2 * SMALL_T * SMALL_T floats: k and v transposed, then P and dS (rows of SMALL_T). */
static void backward_small(const attn_geom *g, int64_t bh, const attn_bufs *all,
                           const float *lse, const float *beta, float *scr) {
    attn_bufs hb = head_bufs(g, all, bh);
    int64_t b = bh / g->H, D = g->D, Tq = g->Tq, Tk = g->Tk, n = small_lanes(g);
    float *kt = scr, *vt = kt + D * SMALL_T, *P = vt + D * SMALL_T, *dS = P + SMALL_T * SMALL_T;
    transpose_keys(g, hb.k, kt);
    if (hb.dq || hb.dk) transpose_keys(g, hb.v, vt);
    for (int64_t i = 0; i < Tq; i++) {
        float *p = P + i * SMALL_T, *ds = dS + i * SMALL_T, li = lse[bh * Tq + i];
        small_scores(g, b, i, hb.q + i * g->q_ld, kt, p);
        for (int64_t j = 0; j < Tk; j++) p[j] = exp_neg(p[j] - li); /* hidden: -inf -> 0 */
        if (!hb.dq && !hb.dk) continue;
        /* dS_ij = p_ij (dy_i . v_j - dy_i . y_i) */
        const float *dyr = hb.dy + i * g->y_ld, *yr = hb.y + i * g->y_ld;
        float di = 0.0f, acc[SMALL_T];
#pragma omp simd reduction(+ : di)
        for (int64_t d = 0; d < D; d++) di += dyr[d] * yr[d];
        lanes_dot(dyr, vt, D, n, acc);
        for (int64_t j = 0; j < Tk; j++) ds[j] = p[j] * (acc[j] - di);
    }
    for (int64_t j = 0; hb.dv && j < Tk; j++) /* dv_j = sum_i p_ij dy_i */
        small_rows(hb.dv + j * g->k_ld, D, beta[2], 1.0f, P + j, SMALL_T, hb.dy, g->y_ld, Tq);
    for (int64_t i = 0; hb.dq && i < Tq; i++) /* dq_i = scale sum_j dS_ij k_j */
        small_rows(hb.dq + i * g->q_ld, D, beta[0], g->scale, dS + i * SMALL_T, 1, hb.k, g->k_ld,
                   Tk);
    for (int64_t j = 0; hb.dk && j < Tk; j++) /* dk_j = scale sum_i dS_ij q_i */
        small_rows(hb.dk + j * g->k_ld, D, beta[1], g->scale, dS + j, SMALL_T, hb.q, g->q_ld, Tq);
}

/* ---- forward ---- */

/* One query block of one (batch, head) against all its key blocks. Y rows [i0, i0+nq) of the
 * head are private to this call; S is a bq x ld scratch, m and l are rows of state. The first
 * key block with a visible score writes y (beta 0), later ones add to it after rescaling, so y
 * is never zeroed first unless no key is visible at all. */
static void forward_block(ts_ctx *fc, const attn_geom *g, int64_t bh, int64_t qb,
                          const attn_bufs *all, float *lse, float *S) {
    attn_bufs hb = head_bufs(g, all, bh);
    int64_t D = g->D, b = bh / g->H, yld = g->y_ld, ld = g->ld;
    int64_t i0 = qb * g->bq, nq = g->Tq - i0 < g->bq ? g->Tq - i0 : g->bq;
    float m[ONE_BLOCK], l[ONE_BLOCK];
    for (int64_t ii = 0; ii < nq; ii++) {
        m[ii] = -INFINITY;
        l[ii] = 0.0f;
    }
    int started = 0;
    for (int64_t kb = 0; kb < g->nkb; kb++) {
        int64_t j0 = kb * g->bk, nk = g->Tk - j0 < g->bk ? g->Tk - j0 : g->bk;
        if (g->causal && j0 > i0 + nq - 1) break; /* every later key is in the future */
        if (!score_block(fc, g, b, hb.q, hb.k, i0, nq, j0, nk, S)) continue;
        for (int64_t ii = 0; ii < nq; ii++) {
            float *s = S + ii * ld, mx = m[ii];
#pragma omp simd reduction(max : mx)
            for (int64_t jj = 0; jj < nk; jj++) mx = s[jj] > mx ? s[jj] : mx;
            if (mx == -INFINITY) { /* nothing visible in this row yet: p = 0 */
                memset(s, 0, (size_t)nk * sizeof(float));
                continue;
            }
            float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
            for (int64_t jj = 0; jj < nk; jj++) {
                s[jj] = exp_neg(s[jj] - mx);
                sum += s[jj];
            }
            if (mx > m[ii]) {
                if (m[ii] > -INFINITY) { /* rescale what was kept against the old maximum */
                    float alpha = exp_neg(m[ii] - mx);
                    float *yr = hb.y + (i0 + ii) * yld;
                    for (int64_t d = 0; d < D; d++) yr[d] *= alpha;
                    l[ii] *= alpha;
                }
                m[ii] = mx;
            }
            l[ii] += sum;
        }
        /* o (nq, D) (+)= P (nq, nk) @ V_blk (nk, D) */
        ts__gemm(fc, 0, 0, nq, D, nk, 1.0f, S, ld, hb.v + j0 * g->k_ld, g->k_ld,
                 started ? 1.0f : 0.0f, hb.y + i0 * yld, yld);
        started = 1;
    }
    for (int64_t ii = 0; ii < nq; ii++) {
        float *yr = hb.y + (i0 + ii) * yld;
        float inv = l[ii] > 0.0f ? 1.0f / l[ii] : 0.0f; /* fully masked row: zeros */
        if (!started)
            memset(yr, 0, (size_t)D * sizeof(float));
        else
            for (int64_t d = 0; d < D; d++) yr[d] *= inv;
        if (lse) lse[bh * g->Tq + i0 + ii] = l[ii] > 0.0f ? m[ii] + logf(l[ii]) : 0.0f;
    }
}

static void attention_forward(ts_ctx *c, const attn_geom *g, const attn_bufs *all, float *lse) {
    int64_t BH = g->B * g->H, blk = g->bq * g->ld;
    int nt = nthreads(c);
    if (small_case(g)) {
        float *scratch = ts_arena_alloc(c->step, (size_t)(nt * g->D * SMALL_T) * sizeof(float));
#pragma omp parallel for num_threads(nt) schedule(static)
        for (int64_t bh = 0; bh < BH; bh++)
            forward_small(g, bh, all, lse, scratch + omp_get_thread_num() * g->D * SMALL_T);
        return;
    }
    ts_ctx fc = *c; /* block products in float32: see the top of the file */
    fc.precision = TS_PREC_F32;
    float *scratch = ts_arena_alloc(c->step, (size_t)(nt * blk) * sizeof(float));
#pragma omp parallel for num_threads(nt) collapse(2) schedule(dynamic, 1)
    for (int64_t bh = 0; bh < BH; bh++)
        for (int64_t qb = 0; qb < g->nqb; qb++)
            forward_block(&fc, g, bh, qb, all, lse, scratch + omp_get_thread_num() * blk);
}

/* ---- backward ---- */

enum { GRAD_Q = 1, GRAD_KV = 2 };

/* The contribution of one (query block, key block) pair of head bh to dq (when what has GRAD_Q)
 * and to dk, dv (GRAD_KV). Each product writes its gradient block when that gradient's beta
 * (q, k, v) is 0 and adds to it when 1. P and dP are bq x ld scratch. Any gradient may be NULL.
 * Returns 0 when the pair has no visible score and wrote nothing. */
static int backward_pair(ts_ctx *fc, const attn_geom *g, int64_t bh, int64_t qb, int64_t kb,
                         int what, const attn_bufs *all, const float *lse, const float *beta,
                         float *P, float *dP) {
    int64_t D = g->D, b = bh / g->H, qld = g->q_ld, kld = g->k_ld, yld = g->y_ld, ld = g->ld;
    int64_t i0 = qb * g->bq, nq = g->Tq - i0 < g->bq ? g->Tq - i0 : g->bq;
    int64_t j0 = kb * g->bk, nk = g->Tk - j0 < g->bk ? g->Tk - j0 : g->bk;
    if (g->causal && j0 > i0 + nq - 1) return 0;
    attn_bufs hb = head_bufs(g, all, bh);
    float *dq = (what & GRAD_Q) ? hb.dq : NULL;
    float *dk = (what & GRAD_KV) ? hb.dk : NULL, *dv = (what & GRAD_KV) ? hb.dv : NULL;
    if (!dq && !dk && !dv) return 0;
    if (!score_block(fc, g, b, hb.q, hb.k, i0, nq, j0, nk, P)) return 0;
    const float *L = lse + bh * g->Tq + i0;
    for (int64_t ii = 0; ii < nq; ii++) {
        float *p = P + ii * ld, li = L[ii];
#pragma omp simd
        for (int64_t jj = 0; jj < nk; jj++) p[jj] = exp_neg(p[jj] - li); /* masked: -inf -> 0 */
    }
    const float *dyb = hb.dy + i0 * yld;
    /* dv_blk (nk, D) (+)= P^T (nk, nq) @ dy_blk (nq, D) */
    if (dv) ts__gemm(fc, 1, 0, nk, D, nq, 1.0f, P, ld, dyb, yld, beta[2], dv + j0 * kld, kld);
    if (!dq && !dk) return 1;
    /* D_i = dy_i . y_i for the block's query rows */
    float Di[ONE_BLOCK];
    for (int64_t ii = 0; ii < nq; ii++) {
        const float *dyr = dyb + ii * yld, *yr = hb.y + (i0 + ii) * yld;
        float s = 0.0f;
#pragma omp simd reduction(+ : s)
        for (int64_t d = 0; d < D; d++) s += dyr[d] * yr[d];
        Di[ii] = s;
    }
    /* dP (nq, nk) = dy_blk (nq, D) @ v_blk^T (D, nk); then dS = P * (dP - D_i), kept in dP */
    ts__gemm(fc, 0, 1, nq, nk, D, 1.0f, dyb, yld, hb.v + j0 * kld, kld, 0.0f, dP, ld);
    for (int64_t ii = 0; ii < nq; ii++) {
        float *dp = dP + ii * ld, di = Di[ii];
        const float *p = P + ii * ld;
#pragma omp simd
        for (int64_t jj = 0; jj < nk; jj++) dp[jj] = p[jj] * (dp[jj] - di);
    }
    /* dq_blk (nq, D) (+)= scale * dS (nq, nk) @ k_blk (nk, D) */
    if (dq)
        ts__gemm(fc, 0, 0, nq, D, nk, g->scale, dP, ld, hb.k + j0 * kld, kld, beta[0],
                 dq + i0 * qld, qld);
    /* dk_blk (nk, D) (+)= scale * dS^T (nk, nq) @ q_blk (nq, D) */
    if (dk)
        ts__gemm(fc, 1, 0, nk, D, nq, g->scale, dP, ld, hb.q + i0 * qld, qld, beta[1],
                 dk + j0 * kld, kld);
    return 1;
}

/* Zero rows [r0, r0 + n) of D floats, row stride ld (a gradient block nothing will write). */
static void zero_rows(float *p, int64_t r0, int64_t n, int64_t ld, int64_t D) {
    if (!p) return;
    for (int64_t r = r0; r < r0 + n; r++) memset(p + r * ld, 0, (size_t)D * sizeof(float));
}

/* Zero the rows of head bh's dq (rows [q0, q0+nq)) and dk, dv (rows [k0, k0+nk)) whose beta
 * is 0, so that blocks can then add to them. */
static void zero_fresh(const attn_geom *g, const attn_bufs *all, int64_t bh, const float *beta,
                       int64_t q0, int64_t nq, int64_t k0, int64_t nk) {
    attn_bufs hb = head_bufs(g, all, bh);
    if (beta[0] == 0.0f) zero_rows(hb.dq, q0, nq, g->q_ld, g->D);
    if (beta[1] == 0.0f) zero_rows(hb.dk, k0, nk, g->k_ld, g->D);
    if (beta[2] == 0.0f) zero_rows(hb.dv, k0, nk, g->k_ld, g->D);
}

/* dq, dk and dv of every head; beta (q, k, v) is 0 for a gradient that is new (every element
 * is written, nothing read) and 1 for one that already holds a gradient (added to). */
static void attention_backward_run(ts_ctx *c, const attn_geom *g, const attn_bufs *all,
                                   const float *lse, const float beta[3]) {
    int64_t BH = g->B * g->H, blk = g->bq * g->ld;
    int nt = nthreads(c);
    ts_ctx fc = *c; /* block products in float32: see the top of the file */
    fc.precision = TS_PREC_F32;
    float *scratch = ts_arena_alloc(c->step, (size_t)(nt * 2 * blk) * sizeof(float));
    static const float add[3] = { 1.0f, 1.0f, 1.0f };

    if (small_case(g)) {
        int64_t per = 2 * g->D * SMALL_T + 2 * SMALL_T * SMALL_T;
        float *sc = ts_arena_alloc(c->step, (size_t)(nt * per) * sizeof(float));
#pragma omp parallel for num_threads(nt) schedule(static)
        for (int64_t bh = 0; bh < BH; bh++)
            backward_small(g, bh, all, lse, beta, sc + omp_get_thread_num() * per);
        return;
    }
    if (g->nqb == 1 && g->nkb == 1) {
        /* One block per head: each thread owns whole heads, one recomputation of P serves dq,
         * dk and dv, and each product writes its gradient block in one go. */
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
        for (int64_t bh = 0; bh < BH; bh++) {
            float *P = scratch + omp_get_thread_num() * 2 * blk, *dP = P + blk;
            if (!backward_pair(&fc, g, bh, 0, 0, GRAD_Q | GRAD_KV, all, lse, beta, P, dP))
                zero_fresh(g, all, bh, beta, 0, g->Tq, 0, g->Tk); /* every key hidden */
        }
        return;
    }
    if (BH >= nt) {
        /* Enough (batch, head) pairs to go round: each thread owns whole heads, so dq, dk and
         * dv rows are never shared and one recomputation of P serves all three. */
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
        for (int64_t bh = 0; bh < BH; bh++) {
            float *P = scratch + omp_get_thread_num() * 2 * blk, *dP = P + blk;
            zero_fresh(g, all, bh, beta, 0, g->Tq, 0, g->Tk);
            for (int64_t kb = 0; kb < g->nkb; kb++)
                for (int64_t qb = 0; qb < g->nqb; qb++)
                    backward_pair(&fc, g, bh, qb, kb, GRAD_Q | GRAD_KV, all, lse, add, P, dP);
        }
        return;
    }
    /* Few heads (small batch): two passes so that both can spread over blocks, at the price of
     * computing P twice. Pass one owns key blocks (dk, dv), pass two query blocks (dq). */
    if (all->dk || all->dv) {
#pragma omp parallel for num_threads(nt) collapse(2) schedule(dynamic, 1)
        for (int64_t bh = 0; bh < BH; bh++)
            for (int64_t kb = 0; kb < g->nkb; kb++) {
                float *P = scratch + omp_get_thread_num() * 2 * blk, *dP = P + blk;
                int64_t j0 = kb * g->bk, nk = g->Tk - j0 < g->bk ? g->Tk - j0 : g->bk;
                zero_fresh(g, all, bh, (const float[3]){ 1.0f, beta[1], beta[2] }, 0, 0, j0, nk);
                for (int64_t qb = 0; qb < g->nqb; qb++)
                    backward_pair(&fc, g, bh, qb, kb, GRAD_KV, all, lse, add, P, dP);
            }
    }
    if (all->dq) {
#pragma omp parallel for num_threads(nt) collapse(2) schedule(dynamic, 1)
        for (int64_t bh = 0; bh < BH; bh++)
            for (int64_t qb = 0; qb < g->nqb; qb++) {
                float *P = scratch + omp_get_thread_num() * 2 * blk, *dP = P + blk;
                int64_t i0 = qb * g->bq, nq = g->Tq - i0 < g->bq ? g->Tq - i0 : g->bq;
                zero_fresh(g, all, bh, (const float[3]){ beta[0], 1.0f, 1.0f }, i0, nq, 0, 0);
                for (int64_t kb = 0; kb < g->nkb; kb++)
                    backward_pair(&fc, g, bh, qb, kb, GRAD_Q, all, lse, add, P, dP);
            }
    }
}

/* ---- the ops ---- */

static void check_pad(const ts_tensor *key_pad, int64_t B, int64_t Tk, const ts_tensor *k) {
    char s1[96], s2[96];
    if (!key_pad) return;
    TS_CHECK(key_pad->dtype == TS_U8 || key_pad->dtype == TS_I32,
             "attention: key_pad must be u8 or i32, got %s", ts_dtype_name(key_pad->dtype));
    TS_CHECK(key_pad->ndim == 2 && key_pad->shape[0] == B && key_pad->shape[1] == Tk,
             "attention: key_pad %s must be (B, Tk) for k %s",
             ts_shape_str(key_pad, s1, sizeof s1), ts_shape_str(k, s2, sizeof s2));
}

static void finish_geometry(attn_geom *g) {
    if (!(g->scale > 0.0f)) g->scale = g->D > 0 ? 1.0f / sqrtf((float)g->D) : 1.0f;
    g->bq = g->Tq <= ONE_BLOCK ? g->Tq : BQ;
    g->bk = g->Tk <= ONE_BLOCK ? g->Tk : BK;
    if (g->bq < 1) g->bq = 1;
    if (g->bk < 1) g->bk = 1;
    g->ld = (g->bk + 15) / 16 * 16;
    g->nqb = (g->Tq + g->bq - 1) / g->bq;
    g->nkb = (g->Tk + g->bk - 1) / g->bk;
}

/* Separate q (B, H, Tq, D), k and v (B, H, Tk, D); y (B, H, Tq, D). */
static attn_geom geometry(const ts_tensor *q, const ts_tensor *k, const ts_tensor *v,
                          int causal, const ts_tensor *key_pad, float scale) {
    char s1[96], s2[96];
    ts__check_f32("attention", q);
    ts__check_f32("attention", k);
    ts__check_f32("attention", v);
    TS_CHECK(q->ndim == 4 && k->ndim == 4, "attention: q %s and k %s must be (B, H, T, D)",
             ts_shape_str(q, s1, sizeof s1), ts_shape_str(k, s2, sizeof s2));
    ts__check_same_shape("attention (k and v)", k, v);
    TS_CHECK(q->shape[0] == k->shape[0] && q->shape[1] == k->shape[1] &&
                 q->shape[3] == k->shape[3],
             "attention: q %s and k %s differ in B, H or D", ts_shape_str(q, s1, sizeof s1),
             ts_shape_str(k, s2, sizeof s2));
    attn_geom g = { 0 };
    g.B = q->shape[0];
    g.H = q->shape[1];
    g.Tq = q->shape[2];
    g.Tk = k->shape[2];
    g.D = q->shape[3];
    g.causal = causal;
    g.scale = scale;
    g.pad = key_pad;
    TS_CHECK(!causal || g.Tq == g.Tk, "attention: causal needs Tq == Tk, got q %s and k %s",
             ts_shape_str(q, s1, sizeof s1), ts_shape_str(k, s2, sizeof s2));
    check_pad(key_pad, g.B, g.Tk, k);
    g.q_sb = g.H * g.Tq * g.D, g.q_sh = g.Tq * g.D, g.q_ld = g.D;
    g.k_sb = g.H * g.Tk * g.D, g.k_sh = g.Tk * g.D, g.k_ld = g.D;
    g.y_sb = g.q_sb, g.y_sh = g.q_sh, g.y_ld = g.D;
    finish_geometry(&g);
    return g;
}

/* Packed qkv (B, T, 3C) with H heads; y (B, T, C). */
static attn_geom geometry_packed(const ts_tensor *qkv, int64_t H, int causal,
                                 const ts_tensor *key_pad, float scale) {
    char s1[96];
    ts__check_f32("attention", qkv);
    TS_CHECK(qkv->ndim == 3 && H > 0 && qkv->shape[2] % (3 * H) == 0,
             "attention: packed qkv %s must be (B, T, 3C) with C divisible by %lld heads",
             ts_shape_str(qkv, s1, sizeof s1), (long long)H);
    int64_t C = qkv->shape[2] / 3;
    attn_geom g = { 0 };
    g.B = qkv->shape[0];
    g.H = H;
    g.Tq = g.Tk = qkv->shape[1];
    g.D = C / H;
    g.causal = causal;
    g.scale = scale;
    g.pad = key_pad;
    check_pad(key_pad, g.B, g.Tk, qkv);
    g.q_sb = g.k_sb = g.Tq * 3 * C, g.q_sh = g.k_sh = g.D, g.q_ld = g.k_ld = 3 * C;
    g.q_col = 0, g.k_col = C, g.v_col = 2 * C;
    g.y_sb = g.Tq * C, g.y_sh = g.D, g.y_ld = C;
    finish_geometry(&g);
    return g;
}

/* q (B, Tq, C) and kv (B, Tk, 2C) with H heads; y (B, Tq, C). */
static attn_geom geometry_kv(const ts_tensor *q, const ts_tensor *kv, int64_t H,
                             const ts_tensor *key_pad, float scale) {
    char s1[96], s2[96];
    ts__check_f32("attention", q);
    ts__check_f32("attention", kv);
    TS_CHECK(q->ndim == 3 && kv->ndim == 3 && H > 0 && q->shape[2] % H == 0 &&
                 kv->shape[0] == q->shape[0] && kv->shape[2] == 2 * q->shape[2],
             "attention: q %s and kv %s must be (B, Tq, C) and (B, Tk, 2C) with C divisible by "
             "%lld heads", ts_shape_str(q, s1, sizeof s1), ts_shape_str(kv, s2, sizeof s2),
             (long long)H);
    int64_t C = q->shape[2];
    attn_geom g = { 0 };
    g.B = q->shape[0];
    g.H = H;
    g.Tq = q->shape[1];
    g.Tk = kv->shape[1];
    g.D = C / H;
    g.scale = scale;
    g.pad = key_pad;
    check_pad(key_pad, g.B, g.Tk, kv);
    g.q_sb = g.Tq * C, g.q_sh = g.D, g.q_ld = C;
    g.k_sb = g.Tk * 2 * C, g.k_sh = g.D, g.k_ld = 2 * C, g.k_col = 0, g.v_col = C;
    g.y_sb = g.Tq * C, g.y_sh = g.D, g.y_ld = C;
    finish_geometry(&g);
    return g;
}

/* The forward of any layout into y (every element written), and the logsumexp that backward
 * needs when rec (NULL otherwise). */
static ts_tensor *run_forward(ts_ctx *c, const attn_geom *g, const attn_bufs *all, ts_tensor *y,
                              int rec) {
    ts_tensor *lse = rec ? ts_new_f32(c, 3, TS_SHAPE(g->B, g->H, g->Tq)) : NULL;
    if (g->Tq > 0 && g->D > 0)
        attention_forward(c, g, all, lse ? ts_f32(lse) : NULL);
    else
        memset(ts_f32(y), 0, (size_t)y->numel * sizeof(float));
    return lse;
}

static void attention_backward(ts_ctx *c, ts_node *n) {
    ts_tensor *tq = n->in[0], *tk = n->in[1], *tv = n->in[2];
    attn_geom g = geometry(tq, tk, tv, (int)n->i[0], n->in[3], n->f[0]);
    /* Every element of dq, dk and dv is written (attention_backward_run), so new gradients are
     * not zeroed first. When q, k or v are one tensor, the products of one gradient would add
     * to the other's: then all three are zeroed and added to. */
    float beta[3];
    float *dq, *dk, *dv;
    if (tq == tk || tq == tv || tk == tv) {
        dq = ts__grad(c, tq), dk = ts__grad(c, tk), dv = ts__grad(c, tv);
        beta[0] = beta[1] = beta[2] = 1.0f;
    } else {
        dq = ts__grad_fresh(c, tq, &beta[0]), dk = ts__grad_fresh(c, tk, &beta[1]);
        dv = ts__grad_fresh(c, tv, &beta[2]);
    }
    attn_bufs all = { ts_f32(tq), ts_f32(tk), ts_f32(tv), ts_f32(n->out->grad), ts_f32(n->out),
                      dq, dk, dv };
    attention_backward_run(c, &g, &all, ts_f32(n->saved[0]), beta);
}

ts_tensor *ts_attention(ts_ctx *c, const ts_tensor *q, const ts_tensor *k, const ts_tensor *v,
                        int causal, const ts_tensor *key_pad, float scale) {
    attn_geom g = geometry(q, k, v, causal, key_pad, scale);
    ts_tensor *y = ts_new(c, TS_F32, 4, q->shape);
    int rec = ts__needs_grad(c, 3, (const ts_tensor *const[]){ q, k, v });
    attn_bufs all = { ts_f32(q), ts_f32(k), ts_f32(v), NULL, ts_f32(y), NULL, NULL, NULL };
    ts_tensor *lse = run_forward(c, &g, &all, y, rec);
    if (rec) {
        ts_node *n = TS__RECORD(c, TS_OP_ATTENTION, attention_backward, y, q, k, v, key_pad);
        n->i[0] = causal;
        n->f[0] = g.scale;
        n->saved[0] = lse;
    }
    return y;
}

static void attention_packed_backward(ts_ctx *c, ts_node *n) {
    ts_tensor *qkv = n->in[0];
    attn_geom g = geometry_packed(qkv, n->i[1], (int)n->i[0], n->in[1], n->f[0]);
    float b;
    float *dqkv = ts__grad_fresh(c, qkv, &b); /* written whole: not zeroed when new */
    if (!dqkv) return;
    const float *x = ts_f32(qkv);
    attn_bufs all = { x, x, x, ts_f32(n->out->grad), ts_f32(n->out), dqkv, dqkv, dqkv };
    attention_backward_run(c, &g, &all, ts_f32(n->saved[0]), (const float[3]){ b, b, b });
}

ts_tensor *ts__attention_packed(ts_ctx *c, const ts_tensor *qkv, int64_t heads, int causal,
                                const ts_tensor *key_pad, float scale) {
    attn_geom g = geometry_packed(qkv, heads, causal, key_pad, scale);
    ts_tensor *y = ts_new(c, TS_F32, 3, TS_SHAPE(g.B, g.Tq, g.H * g.D));
    int rec = ts__needs_grad(c, 1, (const ts_tensor *const[]){ qkv });
    const float *x = ts_f32(qkv);
    attn_bufs all = { x, x, x, NULL, ts_f32(y), NULL, NULL, NULL };
    ts_tensor *lse = run_forward(c, &g, &all, y, rec);
    if (rec) {
        ts_node *n = TS__RECORD(c, TS_OP_ATTENTION, attention_packed_backward, y, qkv, key_pad);
        n->i[0] = causal;
        n->i[1] = heads;
        n->f[0] = g.scale;
        n->saved[0] = lse;
    }
    return y;
}

static void attention_kv_backward(ts_ctx *c, ts_node *n) {
    ts_tensor *q = n->in[0], *kv = n->in[1];
    attn_geom g = geometry_kv(q, kv, n->i[1], n->in[2], n->f[0]);
    float bq = 0.0f, bkv = 0.0f; /* written whole: not zeroed when new */
    float *dq = ts__grad_fresh(c, q, &bq), *dkv = ts__grad_fresh(c, kv, &bkv);
    const float *x = ts_f32(kv);
    attn_bufs all = { ts_f32(q), x, x, ts_f32(n->out->grad), ts_f32(n->out), dq, dkv, dkv };
    attention_backward_run(c, &g, &all, ts_f32(n->saved[0]), (const float[3]){ bq, bkv, bkv });
}

ts_tensor *ts_attention_kv(ts_ctx *c, const ts_tensor *q, const ts_tensor *kv, int64_t heads,
                           const ts_tensor *key_pad, float scale) {
    attn_geom g = geometry_kv(q, kv, heads, key_pad, scale);
    ts_tensor *y = ts_new(c, TS_F32, 3, q->shape);
    int rec = ts__needs_grad(c, 2, (const ts_tensor *const[]){ q, kv });
    const float *x = ts_f32(kv);
    attn_bufs all = { ts_f32(q), x, x, NULL, ts_f32(y), NULL, NULL, NULL };
    ts_tensor *lse = run_forward(c, &g, &all, y, rec);
    if (rec) {
        ts_node *n = TS__RECORD(c, TS_OP_ATTENTION, attention_kv_backward, y, q, kv, key_pad);
        n->i[1] = heads;
        n->f[0] = g.scale;
        n->saved[0] = lse;
    }
    return y;
}
