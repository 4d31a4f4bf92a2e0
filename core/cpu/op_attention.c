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
 * Shapes: q (B, H, Tq, D), k and v (B, H, Tk, D), key_pad (B, Tk) u8 or i32 with nonzero =
 * padding, y (B, H, Tq, D), lse (B, H, Tq).
 */
#include "../tessera-impl.h"

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

/* Block sizes: a 64 x 128 score block is 32 KiB, and with the q, k, v and dy blocks of D = 64
 * the working set of one pair stays inside L2. (64 x 64 was 10-20% slower at T = 197, where its
 * last key block has 5 keys; 64 x 256 was no faster.) */
enum { BQ = 64, BK = 128 };

static int nthreads(const ts_ctx *c) { return c->nthreads > 0 ? c->nthreads : omp_get_max_threads(); }

/* The geometry of one call, shared by forward and backward. */
typedef struct attn_geom {
    int64_t B, H, Tq, Tk, D;
    int64_t nqb, nkb; /* query and key blocks */
    int causal;
    float scale;
    const ts_tensor *pad; /* (B, Tk) u8 or i32, or NULL */
} attn_geom;

/* exp(x) for x <= 0 (and -inf), written so that GCC vectorises the loops that call it: range
 * reduction x = n ln2 + r with |r| <= ln2/2 (n rounded by the 1.5 * 2^23 trick, because GCC 12
 * does not vectorise floorf for every target), Cephes' polynomial for exp(r) (relative error
 * below 1e-7), and 2^n assembled in the exponent bits. Below -87 it returns 0, which is what a
 * probability that small is in float32 anyway. */
static inline float exp_neg(float x) {
    x = x < -87.0f ? -87.0f : x;
    float n = (x * 1.44269504f + 12582912.0f) - 12582912.0f; /* round to nearest: 1.5 * 2^23 */
    float r = x - n * 0.693359375f + n * 2.12194440e-4f;
    float p = ((((1.9875691500e-4f * r + 1.3981999507e-3f) * r + 8.3334519073e-3f) * r +
                4.1665795894e-2f) * r + 1.6666665459e-1f) * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    union { int32_t i; float f; } u;
    u.i = ((int32_t)n + 127) << 23;
    return x <= -87.0f ? 0.0f : p * u.f;
}

/* Is key j of batch b padding? */
static inline int key_masked(const ts_tensor *pad, int64_t b, int64_t Tk, int64_t j) {
    if (!pad) return 0;
    if (pad->dtype == TS_U8) return ((const uint8_t *)pad->data)[b * Tk + j] != 0;
    return ts_i32(pad)[b * Tk + j] != 0;
}

/* Score block S (nq, nk) = scale * Q_blk K_blk^T with the masks written in as -inf.
 * Returns whether any score of the block is visible. i0 and j0 are the first query and key. */
static int score_block(ts_ctx *fc, const attn_geom *g, int64_t b, const float *Q, const float *K,
                       int64_t i0, int64_t nq, int64_t j0, int64_t nk, float *S) {
    int64_t D = g->D;
    ts__gemm(fc, 0, 1, nq, nk, D, g->scale, Q + i0 * D, D, K + j0 * D, D, 0.0f, S, BK);
    int any = 0;
    for (int64_t jj = 0; jj < nk; jj++) {
        if (!key_masked(g->pad, b, g->Tk, j0 + jj)) { any = 1; continue; }
        for (int64_t ii = 0; ii < nq; ii++) S[ii * BK + jj] = -INFINITY;
    }
    if (g->causal) {
        for (int64_t ii = 0; ii < nq; ii++) {
            int64_t first_hidden = i0 + ii + 1 - j0; /* keys j > i are hidden */
            for (int64_t jj = first_hidden < 0 ? 0 : first_hidden; jj < nk; jj++)
                S[ii * BK + jj] = -INFINITY;
        }
    }
    return any;
}

/* ---- forward ---- */

/* One query block of one (batch, head) against all its key blocks. Y rows [i0, i0+nq) are
 * private to this call; S is a BQ x BK scratch, m and l are BQ rows of state. */
static void forward_block(ts_ctx *fc, const attn_geom *g, int64_t bh, int64_t qb, const float *q,
                          const float *k, const float *v, float *y, float *lse, float *S) {
    int64_t D = g->D, b = bh / g->H;
    const float *Q = q + bh * g->Tq * D, *K = k + bh * g->Tk * D, *V = v + bh * g->Tk * D;
    float *Y = y + bh * g->Tq * D;
    int64_t i0 = qb * BQ, nq = g->Tq - i0 < BQ ? g->Tq - i0 : BQ;
    float m[BQ], l[BQ];
    for (int64_t ii = 0; ii < nq; ii++) {
        m[ii] = -INFINITY;
        l[ii] = 0.0f;
    }
    memset(Y + i0 * D, 0, (size_t)(nq * D) * sizeof(float));
    for (int64_t kb = 0; kb < g->nkb; kb++) {
        int64_t j0 = kb * BK, nk = g->Tk - j0 < BK ? g->Tk - j0 : BK;
        if (g->causal && j0 > i0 + nq - 1) break; /* every later key is in the future */
        if (!score_block(fc, g, b, Q, K, i0, nq, j0, nk, S)) continue;
        for (int64_t ii = 0; ii < nq; ii++) {
            float *s = S + ii * BK, mx = m[ii];
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
            if (mx > m[ii]) { /* rescale what was kept against the old maximum */
                float alpha = exp_neg(m[ii] - mx);
                float *yr = Y + (i0 + ii) * D;
                for (int64_t d = 0; d < D; d++) yr[d] *= alpha;
                l[ii] *= alpha;
                m[ii] = mx;
            }
            l[ii] += sum;
        }
        /* o (nq, D) += P (nq, nk) @ V_blk (nk, D) */
        ts__gemm(fc, 0, 0, nq, D, nk, 1.0f, S, BK, V + j0 * D, D, 1.0f, Y + i0 * D, D);
    }
    for (int64_t ii = 0; ii < nq; ii++) {
        float *yr = Y + (i0 + ii) * D;
        float inv = l[ii] > 0.0f ? 1.0f / l[ii] : 0.0f; /* fully masked row: zeros */
        for (int64_t d = 0; d < D; d++) yr[d] *= inv;
        if (lse) lse[bh * g->Tq + i0 + ii] = l[ii] > 0.0f ? m[ii] + logf(l[ii]) : 0.0f;
    }
}

/* ---- backward ---- */

enum { GRAD_Q = 1, GRAD_KV = 2 };

/* The contribution of one (query block, key block) pair to dq (when what has GRAD_Q) and to dk,
 * dv (GRAD_KV). P and dP are BQ x BK scratch. dq, dk, dv may be NULL. */
static void backward_pair(ts_ctx *fc, const attn_geom *g, int64_t bh, int64_t qb, int64_t kb,
                          int what, const float *q, const float *k, const float *v,
                          const float *dy, const float *lse, const float *Drow, float *dq,
                          float *dk, float *dv, float *P, float *dP) {
    int64_t D = g->D, b = bh / g->H;
    int64_t i0 = qb * BQ, nq = g->Tq - i0 < BQ ? g->Tq - i0 : BQ;
    int64_t j0 = kb * BK, nk = g->Tk - j0 < BK ? g->Tk - j0 : BK;
    if (g->causal && j0 > i0 + nq - 1) return;
    int64_t qo = (bh * g->Tq + i0) * D, ko = (bh * g->Tk + j0) * D;
    if (!score_block(fc, g, b, q + bh * g->Tq * D, k + bh * g->Tk * D, i0, nq, j0, nk, P))
        return;
    const float *L = lse + bh * g->Tq + i0, *Di = Drow + bh * g->Tq + i0;
    for (int64_t ii = 0; ii < nq; ii++) {
        float *p = P + ii * BK, li = L[ii];
#pragma omp simd
        for (int64_t jj = 0; jj < nk; jj++) p[jj] = p[jj] == -INFINITY ? 0.0f : exp_neg(p[jj] - li);
    }
    /* dv_blk (nk, D) += P^T (nk, nq) @ dy_blk (nq, D) */
    if ((what & GRAD_KV) && dv)
        ts__gemm(fc, 1, 0, nk, D, nq, 1.0f, P, BK, dy + qo, D, 1.0f, dv + ko, D);
    if (!(dq && (what & GRAD_Q)) && !(dk && (what & GRAD_KV))) return;
    /* dP (nq, nk) = dy_blk (nq, D) @ v_blk^T (D, nk); then dS = P * (dP - D_i), kept in dP */
    ts__gemm(fc, 0, 1, nq, nk, D, 1.0f, dy + qo, D, v + ko, D, 0.0f, dP, BK);
    for (int64_t ii = 0; ii < nq; ii++) {
        float *dp = dP + ii * BK, di = Di[ii];
        const float *p = P + ii * BK;
#pragma omp simd
        for (int64_t jj = 0; jj < nk; jj++) dp[jj] = p[jj] * (dp[jj] - di);
    }
    /* dq_blk (nq, D) += scale * dS (nq, nk) @ k_blk (nk, D) */
    if ((what & GRAD_Q) && dq)
        ts__gemm(fc, 0, 0, nq, D, nk, g->scale, dP, BK, k + ko, D, 1.0f, dq + qo, D);
    /* dk_blk (nk, D) += scale * dS^T (nk, nq) @ q_blk (nq, D) */
    if ((what & GRAD_KV) && dk)
        ts__gemm(fc, 1, 0, nk, D, nq, g->scale, dP, BK, q + qo, D, 1.0f, dk + ko, D);
}

static attn_geom geometry(const ts_tensor *q, const ts_tensor *k, const ts_tensor *v,
                          int causal, const ts_tensor *key_pad, float scale);

static void attention_backward(ts_ctx *c, ts_node *n) {
    ts_tensor *tq = n->in[0], *tk = n->in[1], *tv = n->in[2];
    attn_geom g = geometry(tq, tk, tv, (int)n->i[0], n->in[3], n->f[0]);
    const float *q = ts_f32(tq), *k = ts_f32(tk), *v = ts_f32(tv);
    const float *y = ts_f32(n->out), *dy = ts_f32(n->out->grad), *lse = ts_f32(n->saved[0]);
    float *dq = ts__grad(c, tq), *dk = ts__grad(c, tk), *dv = ts__grad(c, tv);
    int64_t BH = g.B * g.H, D = g.D, rows = BH * g.Tq;
    int nt = nthreads(c);
    ts_ctx fc = *c; /* block products in float32: see the top of the file */
    fc.precision = TS_PREC_F32;

    /* D_i = dy_i . y_i for every query row (B, H, Tq) */
    float *Drow = ts_arena_alloc(c->step, (size_t)rows * sizeof(float));
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        float s = 0.0f;
        for (int64_t d = 0; d < D; d++) s += dy[r * D + d] * y[r * D + d];
        Drow[r] = s;
    }
    float *scratch = ts_arena_alloc(c->step, (size_t)nt * 2 * BQ * BK * sizeof(float));

    if (BH >= nt) {
        /* Enough (batch, head) pairs to go round: each thread owns whole heads, so dq, dk and
         * dv rows are never shared and one recomputation of P serves all three. */
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
        for (int64_t bh = 0; bh < BH; bh++) {
            float *P = scratch + (size_t)omp_get_thread_num() * 2 * BQ * BK, *dP = P + BQ * BK;
            for (int64_t kb = 0; kb < g.nkb; kb++)
                for (int64_t qb = 0; qb < g.nqb; qb++)
                    backward_pair(&fc, &g, bh, qb, kb, GRAD_Q | GRAD_KV, q, k, v, dy, lse, Drow,
                                  dq, dk, dv, P, dP);
        }
        return;
    }
    /* Few heads (small batch): two passes so that both can spread over blocks, at the price of
     * computing P and dP twice. Pass one owns key blocks (dk, dv), pass two query blocks (dq). */
    if (dk || dv) {
#pragma omp parallel for num_threads(nt) collapse(2) schedule(dynamic, 1)
        for (int64_t bh = 0; bh < BH; bh++)
            for (int64_t kb = 0; kb < g.nkb; kb++) {
                float *P = scratch + (size_t)omp_get_thread_num() * 2 * BQ * BK, *dP = P + BQ * BK;
                for (int64_t qb = 0; qb < g.nqb; qb++)
                    backward_pair(&fc, &g, bh, qb, kb, GRAD_KV, q, k, v, dy, lse, Drow, dq, dk,
                                  dv, P, dP);
            }
    }
    if (dq) {
#pragma omp parallel for num_threads(nt) collapse(2) schedule(dynamic, 1)
        for (int64_t bh = 0; bh < BH; bh++)
            for (int64_t qb = 0; qb < g.nqb; qb++) {
                float *P = scratch + (size_t)omp_get_thread_num() * 2 * BQ * BK, *dP = P + BQ * BK;
                for (int64_t kb = 0; kb < g.nkb; kb++)
                    backward_pair(&fc, &g, bh, qb, kb, GRAD_Q, q, k, v, dy, lse, Drow, dq, dk,
                                  dv, P, dP);
            }
    }
}

/* ---- the op ---- */

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
    attn_geom g = { q->shape[0], q->shape[1], q->shape[2], k->shape[2], q->shape[3], 0, 0,
                    causal, scale, key_pad };
    TS_CHECK(!causal || g.Tq == g.Tk, "attention: causal needs Tq == Tk, got q %s and k %s",
             ts_shape_str(q, s1, sizeof s1), ts_shape_str(k, s2, sizeof s2));
    if (key_pad) {
        TS_CHECK(key_pad->dtype == TS_U8 || key_pad->dtype == TS_I32,
                 "attention: key_pad must be u8 or i32, got %s", ts_dtype_name(key_pad->dtype));
        TS_CHECK(key_pad->ndim == 2 && key_pad->shape[0] == g.B && key_pad->shape[1] == g.Tk,
                 "attention: key_pad %s must be (B, Tk) for k %s",
                 ts_shape_str(key_pad, s1, sizeof s1), ts_shape_str(k, s2, sizeof s2));
    }
    if (!(g.scale > 0.0f)) g.scale = g.D > 0 ? 1.0f / sqrtf((float)g.D) : 1.0f;
    g.nqb = (g.Tq + BQ - 1) / BQ;
    g.nkb = (g.Tk + BK - 1) / BK;
    return g;
}

ts_tensor *ts_attention(ts_ctx *c, const ts_tensor *q, const ts_tensor *k, const ts_tensor *v,
                        int causal, const ts_tensor *key_pad, float scale) {
    attn_geom g = geometry(q, k, v, causal, key_pad, scale);
    ts_tensor *y = ts_new(c, TS_F32, 4, q->shape);
    int rec = ts__needs_grad(c, 3, (const ts_tensor *const[]){ q, k, v });
    ts_tensor *lse = rec ? ts_new_f32(c, 3, TS_SHAPE(g.B, g.H, g.Tq)) : NULL;
    int64_t BH = g.B * g.H;
    int nt = nthreads(c);
    ts_ctx fc = *c; /* block products in float32: see the top of the file */
    fc.precision = TS_PREC_F32;
    float *scratch = ts_arena_alloc(c->step, (size_t)nt * BQ * BK * sizeof(float));
    const float *Q = ts_f32(q), *K = ts_f32(k), *V = ts_f32(v);
    float *Y = ts_f32(y), *L = lse ? ts_f32(lse) : NULL;
    if (g.Tq > 0 && g.D > 0) {
#pragma omp parallel for num_threads(nt) collapse(2) schedule(dynamic, 1)
        for (int64_t bh = 0; bh < BH; bh++)
            for (int64_t qb = 0; qb < g.nqb; qb++)
                forward_block(&fc, &g, bh, qb, Q, K, V, Y, L,
                              scratch + (size_t)omp_get_thread_num() * BQ * BK);
    } else {
        memset(Y, 0, (size_t)y->numel * sizeof(float));
    }
    if (rec) {
        ts_node *n = TS__RECORD(c, TS_OP_ATTENTION, attention_backward, y, q, k, v, key_pad);
        n->i[0] = causal;
        n->f[0] = g.scale;
        n->saved[0] = lse;
    }
    return y;
}
