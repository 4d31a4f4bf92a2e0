/* op_elementwise.c: add, sub, mul, scale, relu, exp and log_sigmoid on the CPU, forward and backward.
 *
 * The binary ops broadcast in one simple way: b's shape equals a trailing part of a's shape
 * (a bias (C) against x (B, T, C)), or b has one element. a is then seen as (R, C) rows of
 * b's numel, every row meets the same b, and b's gradient is the sum over the rows. The loops
 * are plain so that -O3 -march=native vectorises them, and OpenMP splits them over threads
 * once a tensor is large enough to pay for it.
 *
 * What this file deliberately is not: general NumPy broadcasting (size-1 dims in the middle,
 * broadcasting a) or in-place variants. A caller that needs those reshapes or permutes first.
 *
 * Shapes: a (..., C) and y (..., C) seen as (R, C); b (C) or (1) where C is b's numel.
 */
#include "../tessera-impl.h"

#include <math.h>
#include <omp.h>

/* Below this many elements a loop runs on one thread: forking costs more than it saves. */
#define PAR_MIN 32768
/* Width of the column blocks that threads own when they reduce over rows. */
#define COL_BLOCK 512

enum { BIN_ADD, BIN_SUB, BIN_MUL };
static const ts_op bin_ops[] = { TS_OP_ADD, TS_OP_SUB, TS_OP_MUL };
static const char *const bin_names[] = { "add", "sub", "mul" };

/* Check that b broadcasts against a and return C, the length of b's repeating block. */
static int64_t broadcast_cols(const char *op, const ts_tensor *a, const ts_tensor *b) {
    char sa[96], sb[96];
    ts__check_f32(op, a);
    ts__check_f32(op, b);
    if (b->numel == 1) return 1;
    int ok = b->ndim <= a->ndim;
    for (int i = 0; ok && i < b->ndim; i++)
        ok = b->shape[b->ndim - 1 - i] == a->shape[a->ndim - 1 - i];
    TS_CHECK(ok, "%s: b %s does not broadcast against a %s (b must equal a's trailing dims "
             "or have one element)", op, ts_shape_str(b, sb, sizeof sb),
             ts_shape_str(a, sa, sizeof sa));
    return b->numel;
}

/* db (C) += sign * sum over rows of dy (R, C), times w (R, C) when w is given.
 * Wide rows: each thread owns a block of columns. Narrow rows: each thread sums a fixed range
 * of rows into its own buffer and the buffers are added in thread order, so the result does
 * not depend on timing. */
static void reduce_rows(ts_ctx *c, float *db, const float *dy, const float *w, int64_t R,
                        int64_t C, float sign) {
    int64_t n = R * C;
    if (C == 1) {
        /* One column: a full reduction, summed in double over fixed ranges per thread. */
        int nt = omp_get_max_threads();
        double part[256] = { 0 };
        if (nt > 256) nt = 256;
#pragma omp parallel num_threads(nt) if (n > PAR_MIN)
        {
            int t = omp_get_thread_num(), tn = omp_get_num_threads();
            int64_t i0 = n * t / tn, i1 = n * (t + 1) / tn;
            double s = 0;
            if (w) {
#pragma omp simd reduction(+ : s)
                for (int64_t i = i0; i < i1; i++) s += (double)dy[i] * w[i];
            } else {
#pragma omp simd reduction(+ : s)
                for (int64_t i = i0; i < i1; i++) s += dy[i];
            }
            part[t] = s;
        }
        double s = 0;
        for (int t = 0; t < nt; t++) s += part[t];
        db[0] += sign * (float)s;
        return;
    }
    if (C >= COL_BLOCK || n <= PAR_MIN) {
#pragma omp parallel for if (n > PAR_MIN && C >= 2 * COL_BLOCK)
        for (int64_t j0 = 0; j0 < C; j0 += COL_BLOCK) {
            int64_t j1 = j0 + COL_BLOCK < C ? j0 + COL_BLOCK : C;
            for (int64_t r = 0; r < R; r++) {
                const float *d = dy + r * C, *x = w ? w + r * C : NULL;
                if (x)
                    for (int64_t j = j0; j < j1; j++) db[j] += sign * d[j] * x[j];
                else
                    for (int64_t j = j0; j < j1; j++) db[j] += sign * d[j];
            }
        }
        return;
    }
    int nt = omp_get_max_threads();
    float *part = ts_arena_alloc(c->step, (size_t)(nt * C) * sizeof(float));
    memset(part, 0, (size_t)(nt * C) * sizeof(float));
#pragma omp parallel num_threads(nt)
    {
        int t = omp_get_thread_num(), tn = omp_get_num_threads();
        int64_t r0 = R * t / tn, r1 = R * (t + 1) / tn;
        float *p = part + (int64_t)t * C;
        for (int64_t r = r0; r < r1; r++) {
            const float *d = dy + r * C, *x = w ? w + r * C : NULL;
            if (x)
                for (int64_t j = 0; j < C; j++) p[j] += d[j] * x[j];
            else
                for (int64_t j = 0; j < C; j++) p[j] += d[j];
        }
    }
    for (int t = 0; t < nt; t++)
        for (int64_t j = 0; j < C; j++) db[j] += sign * part[(int64_t)t * C + j];
}

/* d = s * x (* w) with beta 0, d += s * x (* w) with beta 1, over N elements; w (C) repeats
 * every C elements (C == N: elementwise, C == 1: a scalar) or is NULL. d may be x itself. Two
 * loops rather than beta * d, because d may be a new buffer whose content is not a number. */
static void scaled_into(float *d, float beta, const float *x, float s, const float *w, int64_t N,
                        int64_t C) {
    if (!w) {
        if (beta == 0.0f) {
#pragma omp parallel for if (N > PAR_MIN)
            for (int64_t i = 0; i < N; i++) d[i] = s * x[i];
        } else {
#pragma omp parallel for if (N > PAR_MIN)
            for (int64_t i = 0; i < N; i++) d[i] += s * x[i];
        }
    } else if (C == N) {
        if (beta == 0.0f) {
#pragma omp parallel for if (N > PAR_MIN)
            for (int64_t i = 0; i < N; i++) d[i] = s * x[i] * w[i];
        } else {
#pragma omp parallel for if (N > PAR_MIN)
            for (int64_t i = 0; i < N; i++) d[i] += s * x[i] * w[i];
        }
    } else if (C == 1) {
        scaled_into(d, beta, x, s * w[0], NULL, N, N);
    } else {
        int64_t R = N / C;
#pragma omp parallel for if (N > PAR_MIN)
        for (int64_t r = 0; r < R; r++) {
            float *dr = d + r * C;
            const float *xr = x + r * C;
            if (beta == 0.0f)
                for (int64_t j = 0; j < C; j++) dr[j] = s * xr[j] * w[j];
            else
                for (int64_t j = 0; j < C; j++) dr[j] += s * xr[j] * w[j];
        }
    }
}

/* Gradients of y = a op b: da (R, C) and db (C).
 *
 * For add and sub, da is dy itself: a that has no gradient yet takes dy's buffer without a copy
 * (ts__grad_share), and so does b of an add of two same-shaped tensors. For mul, da = dy * b is
 * written over dy when a takes dy's buffer (ts__grad_adopt). b goes first, because a may then
 * take the buffer that b's gradient is computed from. */
static void binary_backward(ts_ctx *c, ts_node *n) {
    ts_tensor *a = n->in[0], *b = n->in[1];
    int kind = (int)n->i[0];
    int64_t C = n->i[1], N = a->numel, R = C ? N / C : 0;
    const float *dy = ts_f32(n->out->grad), *A = ts_f32(a), *B = ts_f32(b);
    if (b->requires_grad) {
        if (C != N) { /* broadcast: db = sum over rows */
            float *db = ts__grad(c, b);
            if (kind == BIN_MUL)
                reduce_rows(c, db, dy, A, R, C, 1.0f); /* db = sum_r dy * a */
            else
                reduce_rows(c, db, dy, NULL, R, C, kind == BIN_SUB ? -1.0f : 1.0f);
        } else if (!(kind == BIN_ADD && ts__grad_share(c, n, b))) {
            float beta;
            float *db = ts__grad_fresh(c, b, &beta);
            scaled_into(db, beta, dy, kind == BIN_SUB ? -1.0f : 1.0f, kind == BIN_MUL ? A : NULL,
                        N, N);
        }
    }
    if (!a->requires_grad) return;
    if (kind != BIN_MUL) {
        if (ts__grad_share(c, n, a)) return;
        float *da = ts__grad(c, a);
#pragma omp parallel for if (N > PAR_MIN)
        for (int64_t i = 0; i < N; i++) da[i] += dy[i];
        return;
    }
    /* da = dy * b, written (possibly over dy itself) or added */
    float beta;
    float *da = ts__grad_adopt(c, n, a, &beta);
    scaled_into(da, beta, dy, 1.0f, B, N, C);
}

static ts_tensor *binary(ts_ctx *c, int kind, const ts_tensor *a, const ts_tensor *b) {
    int64_t C = broadcast_cols(bin_names[kind], a, b);
    ts_tensor *y = ts_new(c, TS_F32, a->ndim, a->shape);
    int64_t N = a->numel, R = C ? N / C : 0; /* a seen as (R, C) */
    const float *A = ts_f32(a), *B = ts_f32(b);
    float *Y = ts_f32(y);
    if (C == N) {
        /* Same number of elements: one flat loop. */
        if (kind == BIN_ADD) {
#pragma omp parallel for if (N > PAR_MIN)
            for (int64_t i = 0; i < N; i++) Y[i] = A[i] + B[i];
        } else if (kind == BIN_SUB) {
#pragma omp parallel for if (N > PAR_MIN)
            for (int64_t i = 0; i < N; i++) Y[i] = A[i] - B[i];
        } else {
#pragma omp parallel for if (N > PAR_MIN)
            for (int64_t i = 0; i < N; i++) Y[i] = A[i] * B[i];
        }
    } else if (C == 1) {
        /* One b for every element. */
        float s = B[0];
        if (kind == BIN_ADD) {
#pragma omp parallel for if (N > PAR_MIN)
            for (int64_t i = 0; i < N; i++) Y[i] = A[i] + s;
        } else if (kind == BIN_SUB) {
#pragma omp parallel for if (N > PAR_MIN)
            for (int64_t i = 0; i < N; i++) Y[i] = A[i] - s;
        } else {
#pragma omp parallel for if (N > PAR_MIN)
            for (int64_t i = 0; i < N; i++) Y[i] = A[i] * s;
        }
    } else {
        /* Rows of C against one b (C). */
        if (kind == BIN_ADD) {
#pragma omp parallel for if (N > PAR_MIN)
            for (int64_t r = 0; r < R; r++)
                for (int64_t j = 0; j < C; j++) Y[r * C + j] = A[r * C + j] + B[j];
        } else if (kind == BIN_SUB) {
#pragma omp parallel for if (N > PAR_MIN)
            for (int64_t r = 0; r < R; r++)
                for (int64_t j = 0; j < C; j++) Y[r * C + j] = A[r * C + j] - B[j];
        } else {
#pragma omp parallel for if (N > PAR_MIN)
            for (int64_t r = 0; r < R; r++)
                for (int64_t j = 0; j < C; j++) Y[r * C + j] = A[r * C + j] * B[j];
        }
    }
    ts_node *n = TS__RECORD(c, bin_ops[kind], binary_backward, y, a, b);
    if (n) {
        n->i[0] = kind;
        n->i[1] = C;
    }
    return y;
}

ts_tensor *ts_add(ts_ctx *c, const ts_tensor *a, const ts_tensor *b) {
    return binary(c, BIN_ADD, a, b);
}

ts_tensor *ts_sub(ts_ctx *c, const ts_tensor *a, const ts_tensor *b) {
    return binary(c, BIN_SUB, a, b);
}

ts_tensor *ts_mul(ts_ctx *c, const ts_tensor *a, const ts_tensor *b) {
    return binary(c, BIN_MUL, a, b);
}

/* ---- scale: y = s * a ---- */

static void scale_backward(ts_ctx *c, ts_node *n) {
    const float *dy = ts_f32(n->out->grad);
    float beta;
    float *da = ts__grad_adopt(c, n, n->in[0], &beta); /* da = s * dy, over dy when it can */
    if (!da) return;
    scaled_into(da, beta, dy, n->f[0], NULL, n->out->numel, n->out->numel);
}

ts_tensor *ts_scale(ts_ctx *c, const ts_tensor *a, float s) {
    ts__check_f32("scale", a);
    ts_tensor *y = ts_new(c, TS_F32, a->ndim, a->shape);
    const float *A = ts_f32(a);
    float *Y = ts_f32(y);
    int64_t N = a->numel;
#pragma omp parallel for if (N > PAR_MIN)
    for (int64_t i = 0; i < N; i++) Y[i] = s * A[i];
    ts_node *n = TS__RECORD(c, TS_OP_SCALE, scale_backward, y, a);
    if (n) n->f[0] = s;
    return y;
}

/* ---- relu: y = max(a, 0); the gradient at 0 is 0, as in PyTorch ---- */

static void relu_backward(ts_ctx *c, ts_node *n) {
    const float *dy = ts_f32(n->out->grad), *A = ts_f32(n->in[0]);
    float beta;
    float *da = ts__grad_adopt(c, n, n->in[0], &beta); /* over dy when it can */
    if (!da) return;
    int64_t N = n->out->numel;
    if (beta == 0.0f) {
#pragma omp parallel for if (N > PAR_MIN)
        for (int64_t i = 0; i < N; i++) da[i] = A[i] > 0.0f ? dy[i] : 0.0f;
    } else {
#pragma omp parallel for if (N > PAR_MIN)
        for (int64_t i = 0; i < N; i++) da[i] += A[i] > 0.0f ? dy[i] : 0.0f;
    }
}

ts_tensor *ts_relu(ts_ctx *c, const ts_tensor *a) {
    ts__check_f32("relu", a);
    ts_tensor *y = ts_new(c, TS_F32, a->ndim, a->shape);
    const float *A = ts_f32(a);
    float *Y = ts_f32(y);
    int64_t N = a->numel;
#pragma omp parallel for if (N > PAR_MIN)
    for (int64_t i = 0; i < N; i++) Y[i] = A[i] > 0.0f ? A[i] : 0.0f;
    TS__RECORD(c, TS_OP_RELU, relu_backward, y, a);
    return y;
}

/* ---- exp: y = e^a; da = dy * y ---- */

static void exp_backward(ts_ctx *c, ts_node *n) {
    const float *dy = ts_f32(n->out->grad), *Y = ts_f32(n->out);
    float beta;
    float *da = ts__grad_adopt(c, n, n->in[0], &beta);
    if (!da) return;
    int64_t N = n->out->numel;
#pragma omp parallel for if (N > PAR_MIN)
    for (int64_t i = 0; i < N; i++) da[i] = (beta == 0.0f ? 0.0f : da[i]) + dy[i] * Y[i];
}

ts_tensor *ts_exp(ts_ctx *c, const ts_tensor *a) {
    ts__check_f32("exp", a);
    ts_tensor *y = ts_new(c, TS_F32, a->ndim, a->shape);
    const float *A = ts_f32(a);
    float *Y = ts_f32(y);
    int64_t N = a->numel;
#pragma omp parallel for if (N > PAR_MIN)
    for (int64_t i = 0; i < N; i++) Y[i] = expf(A[i]);
    TS__RECORD(c, TS_OP_EXP, exp_backward, y, a);
    return y;
}

/* ---- log_sigmoid: y = -softplus(-a) = min(a, 0) - log1p(e^-|a|), as torch computes it;
 * da = dy * sigmoid(-a) ---- */

static void log_sigmoid_backward(ts_ctx *c, ts_node *n) {
    const float *dy = ts_f32(n->out->grad), *A = ts_f32(n->in[0]);
    float beta;
    float *da = ts__grad_adopt(c, n, n->in[0], &beta);
    if (!da) return;
    int64_t N = n->out->numel;
#pragma omp parallel for if (N > PAR_MIN)
    for (int64_t i = 0; i < N; i++) {
        float e = expf(-fabsf(A[i])); /* sigmoid(-a) without overflow */
        float s = A[i] >= 0.0f ? e / (1.0f + e) : 1.0f / (1.0f + e);
        da[i] = (beta == 0.0f ? 0.0f : da[i]) + dy[i] * s;
    }
}

ts_tensor *ts_log_sigmoid(ts_ctx *c, const ts_tensor *a) {
    ts__check_f32("log_sigmoid", a);
    ts_tensor *y = ts_new(c, TS_F32, a->ndim, a->shape);
    const float *A = ts_f32(a);
    float *Y = ts_f32(y);
    int64_t N = a->numel;
#pragma omp parallel for if (N > PAR_MIN)
    for (int64_t i = 0; i < N; i++) Y[i] = fminf(A[i], 0.0f) - log1pf(expf(-fabsf(A[i])));
    TS__RECORD(c, TS_OP_LOG_SIGMOID, log_sigmoid_backward, y, a);
    return y;
}
