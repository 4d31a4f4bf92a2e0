/* gpu_parity.c: every kernel of core/cuda against a float64 reference on the host.
 *
 * For each kernel: inputs drawn fresh from a seeded Gaussian (never zeros), the outputs it
 * writes poisoned with NaN bytes before the run and the gradients it accumulates into seeded
 * with random values (so a kernel that overwrites instead of adding fails), then the relative
 * error ||out - ref|| / ||ref|| against the same computation in double on the host: it must
 * land under 1e-5 (bf16 products are compared with the product of the bf16-rounded inputs in
 * double, so as tightly), and a NaN or an unwritten element never passes. A bf16 output (rounded
 * once from float32) cannot hold 1e-5: each value must be the reference rounded to bf16 or one
 * bf16 step from it, at most 1% of them a step away, the relative error under 1e-2 (check16; a
 * product's value may be further off only by the error its float32 sums carry where they
 * cancel; with a bias, cuBLASLt's epilogue may round twice, before and after the bias, so any
 * value may be a step off there). The tensor-core attention kernels round the probabilities to
 * bf16 before their products, as FlashAttention does: 1e-2 there. What a kernel must not write
 * (a pitch's padding, other heads' columns, the elements past n or past a buffer's end, a
 * product's addend) is seeded and must come back bit for bit. Then the measured float32 and
 * bf16 product rates at 8192^3 (the ceiling that MFU is quoted against), the attention
 * kernels' times, and the row kernels' times at the ViT-B/16 step's shapes beside the bytes
 * they must move. Needs a GPU; bench/gpu_check.sh builds and runs it (it needs only CUDA).
 * Usage: gpu_parity [--no-timing]; the exit status is the number of failed checks.
 */
#define GPU_PROG "gpu_parity"
#include "gpu_common.h"

#include <string.h>
#include <time.h>

/* ---- bf16 values, and the checks of outputs ---- */

static uint16_t bf16_bits(float f) { /* round to nearest even (finite values, infinities) */
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static float bf16_value(float f) {
    uint32_t u = (uint32_t)bf16_bits(f) << 16;
    memcpy(&f, &u, 4);
    return f;
}

/* bf16 copy of n floats on the device (bf16 operands and inputs) */
static uint16_t *bf16_copy(const float *x, int64_t n) {
    uint16_t *h = malloc((size_t)n * 2);
    for (int64_t i = 0; i < n; i++) h[i] = bf16_bits(x[i]);
    void *d = dev(h, (size_t)n * 2);
    free(h);
    return d;
}

/* x (n) as an operand on the device: float32, or with bf16 rounded to bf16 values in place
 * first (the host's reference then takes the values the device has) */
static void *operand(float *x, int64_t n, int bf16) {
    if (!bf16) return dev(x, (size_t)n * 4);
    for (int64_t i = 0; i < n; i++) x[i] = bf16_value(x[i]);
    return bf16_copy(x, n);
}

/* an output of n elements on the device (float32, or bf16): NaN where written[i] (what the
 * kernel must write), seed elsewhere (what it must leave as it was) */
static void *out_buffer(const float *seed, const uint8_t *written, int64_t n, int bf16) {
    float *h = malloc((size_t)n * sizeof *h);
    for (int64_t i = 0; i < n; i++) h[i] = written[i] ? NAN : seed[i];
    void *d = bf16 ? bf16_copy(h, n) : dev(h, (size_t)n * 4);
    free(h);
    return d;
}

/* Check n bf16 values u against ref rounded to bf16: each must be that value or one bf16 step
 * from it (float32 arithmetic may land across a rounding boundary), at most a fraction cap of
 * them (1%: ONE_ROUNDING) a step away, and the relative error under 1e-2; NaN fails. (A wrong
 * function or truncation instead of rounding moves far more than 1% of the values.) slack (may
 * be NULL): per value, the absolute error of the float32 sums that were rounded (a product's,
 * which cancel where the result is small): a value further than a step away then still counts
 * as only a step off when |u - ref| <= 2^-8 |ref| + slack. */
#define ONE_ROUNDING 0.01
static void check16(const char *what, const uint16_t *u, const double *ref, const double *slack,
                    int64_t n, double cap) {
    float *h = malloc((size_t)n * sizeof *h);
    int64_t off = 0, far = 0;
    for (int64_t i = 0; i < n; i++) {
        uint32_t b = (uint32_t)u[i] << 16;
        memcpy(&h[i], &b, 4);
        uint16_t want = bf16_bits((float)ref[i]);
        if (h[i] == bf16_value((float)ref[i])) continue; /* +0 and -0 alike */
        int step = (int)u[i] - (int)want;
        if (step == 1 || step == -1) off++;
        else if (slack && fabs(h[i] - ref[i]) <= ldexp(fabs(ref[i]), -8) + slack[i]) off++;
        else far++;
    }
    double e = rel(h, ref, n);
    int ok = e == e && e < 1e-2 && far == 0 && (double)off <= cap * (double)n;
    failures += !ok;
    printf("  %-44s rel %.2e, %lld a bf16 step off, %lld further  %s\n", what, e, (long long)off,
           (long long)far, ok ? "ok" : "FAIL");
    free(h);
}

/* Download n bf16 values and check16 them (no slack: one rounding of a float32 result) */
static void expect16(const char *what, const void *d, const double *ref, int64_t n) {
    ts_err err = { 0 };
    uint16_t *u = malloc((size_t)n * 2);
    die(ts_cuda_download(G, u, d, (size_t)n * 2, &err), &err);
    check16(what, u, ref, NULL, n, ONE_ROUNDING);
    free(u);
}

/* The elements of d (n, float32 or bf16) where written is NULL or 0 must hold seed's values
 * exactly (bf16: seed rounded): a count of those that do not, which must be 0 */
static void expect_kept(const char *what, const void *d, int bf16, const double *seed,
                        const uint8_t *written, int64_t n) {
    ts_err err = { 0 };
    size_t es = bf16 ? 2 : 4;
    unsigned char *h = malloc((size_t)n * es);
    die(ts_cuda_download(G, h, d, (size_t)n * es, &err), &err);
    int64_t changed = 0;
    for (int64_t i = 0; i < n; i++) {
        if (written && written[i]) continue;
        float want = (float)seed[i];
        uint16_t w16 = bf16_bits(want);
        changed += bf16 ? memcmp(h + i * es, &w16, 2) != 0 : memcmp(h + i * es, &want, 4) != 0;
    }
    report(what, (double)changed, 0.5);
    free(h);
}

/* An output d of n elements (float32, or bf16) of which a kernel wrote those where written[i]
 * (written NULL: all): those against ref (float32: relative error under 1e-5; bf16: check16
 * with slack, which may be NULL, and cap), and the others exactly as they were (ref holds their
 * seed) */
static void expect_out(const char *what, const void *d, int bf16, const double *ref,
                       const uint8_t *written, const double *slack, int64_t n, double cap) {
    ts_err err = { 0 };
    size_t es = bf16 ? 2 : 4;
    unsigned char *h = malloc((size_t)n * es);
    die(ts_cuda_download(G, h, d, (size_t)n * es, &err), &err);
    uint16_t *u = malloc((size_t)n * 2);
    float *f = malloc((size_t)n * sizeof *f);
    double *r = dzeros(n), *s = dzeros(n);
    int64_t m = 0;
    for (int64_t i = 0; i < n; i++) {
        if (written && !written[i]) continue;
        if (bf16) memcpy(&u[m], h + i * es, 2);
        else memcpy(&f[m], h + i * es, 4);
        r[m] = ref[i];
        s[m++] = slack ? slack[i] : 0.0;
    }
    if (bf16) check16(what, u, r, slack ? s : NULL, m, cap);
    else report(what, rel(f, r, m), 1e-5);
    if (m < n) expect_kept("  elements it must not write, as they were", d, bf16, ref, written, n);
    free(h), free(u), free(f), free(r), free(s);
}

/* ---- products ---- */

/* bf16: the reference multiplies the bf16-rounded inputs in double, so the check is as tight
 * as float32's (what bf16 costs against float32 inputs is the caller's choice, not an error) */
static void check_matmul(int64_t M, int64_t N, int64_t K, int flags, int bias, float beta,
                         int bf16) {
    ts_err err = { 0 };
    float *a = randn(M * K, 1), *b = randn(K * N, 1), *bv = randn(N, 1), *y0 = randn(M * N, 1);
    float *ar = malloc((size_t)(M * K) * 4), *br = malloc((size_t)(K * N) * 4);
    for (int64_t i = 0; i < M * K; i++) ar[i] = bf16 ? bf16_value(a[i]) : a[i];
    for (int64_t i = 0; i < K * N; i++) br[i] = bf16 ? bf16_value(b[i]) : b[i];
    int ta = flags & TS_TRANS_A, tb = flags & TS_TRANS_B;
    double *ref = dzeros(M * N);
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            double s = bias ? bv[j] : 0.0;
            for (int64_t k = 0; k < K; k++)
                s += (double)(ta ? ar[k * M + i] : ar[i * K + k]) *
                     (double)(tb ? br[j * K + k] : br[k * N + j]);
            ref[i * N + j] = s + (beta != 0.0f ? (double)beta * y0[i * N + j] : 0.0);
        }
    float *da = dev(a, (size_t)(M * K) * 4), *db = dev(b, (size_t)(K * N) * 4);
    float *dbias = bias ? dev(bv, (size_t)N * 4) : NULL;
    float *dy = beta != 0.0f ? dev(y0, (size_t)(M * N) * 4) : dev(NULL, (size_t)(M * N) * 4);
    const void *pa = da, *pb = db;
    if (bf16) {
        uint16_t *ha = dev(NULL, (size_t)(M * K) * 2), *hb = dev(NULL, (size_t)(K * N) * 2);
        die(ts_cuda_to_bf16(G, da, ha, M * K, &err), &err);
        die(ts_cuda_to_bf16(G, db, hb, K * N, &err), &err);
        /* the conversion itself: bit-exact round to nearest even */
        uint16_t *back = malloc((size_t)(M * K + K * N) * 2);
        die(ts_cuda_download(G, back, ha, (size_t)(M * K) * 2, &err), &err);
        die(ts_cuda_download(G, back + M * K, hb, (size_t)(K * N) * 2, &err), &err);
        int64_t off = 0;
        for (int64_t i = 0; i < M * K; i++) off += back[i] != bf16_bits(a[i]);
        for (int64_t i = 0; i < K * N; i++) off += back[M * K + i] != bf16_bits(b[i]);
        free(back);
        report("to_bf16 (values not rounded to nearest even)", (double)off, 0.5);
        pa = ha;
        pb = hb;
    }
    die(ts_cuda_matmul(G, bf16 ? TS_CUDA_BF16 : TS_CUDA_F32, pa, pb, dbias, dy, M, N, K, flags,
                       beta, &err), &err);
    float *y = get(dy, M * N);
    char what[128];
    snprintf(what, sizeof what, "matmul %s %lldx%lldx%lld%s%s%s%s", bf16 ? "bf16" : "f32",
             (long long)M, (long long)N, (long long)K, ta ? " A^T" : "", tb ? " B^T" : "",
             bias ? " +bias" : "", beta != 0.0f ? " +=" : "");
    report(what, rel(y, ref, M * N), 1e-5);
    free(a), free(b), free(ar), free(br), free(bv), free(y0), free(y), free(ref);
}

/* What ts_cuda_matmul_ex computes, in double on the host, with o's defaults: y_i = alpha
 * op(a_i) @ op(b_i) + bias + beta c_i for the o->count products, strided and pitched as o says;
 * a, b, c (NULL: y's own values), y, slack and written offset as the device's pointers are.
 * Each element written is marked in written and gets its slack (either may be NULL): 2^-16 of
 * the magnitudes summed, for float32 sums of K terms err by about 2^-24 sqrt(K) of those (so
 * this holds to K = 2^16, and with a margin of 9 at K = 768). */
static void ref_mm(const float *a, const float *b, const float *bias, const float *c, double *y,
                   double *slack, uint8_t *written, int64_t M, int64_t N, int64_t K, int flags,
                   const ts_cuda_mm *o) {
    int ta = (flags & TS_TRANS_A) != 0, tb = (flags & TS_TRANS_B) != 0;
    int64_t lda = o->ld_a ? o->ld_a : ta ? M : K, ldb = o->ld_b ? o->ld_b : tb ? K : N;
    int64_t ldy = o->ld_y ? o->ld_y : N;
    double alpha = o->alpha != 0.0f ? o->alpha : 1.0;
    for (int n = 0; n < (o->count > 0 ? o->count : 1); n++) {
        const float *A = a + n * o->stride_a, *B = b + n * o->stride_b;
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++) {
                double s = 0, m = 0;
                for (int64_t k = 0; k < K; k++) {
                    double t = (double)(ta ? A[k * lda + i] : A[i * lda + k]) *
                               (double)(tb ? B[j * ldb + k] : B[k * ldb + j]);
                    s += t;
                    m += fabs(t);
                }
                int64_t at = n * o->stride_y + i * ldy + j;
                double bj = bias ? bias[j] : 0.0;
                double cj = o->beta != 0.0f ? (double)o->beta * (c ? c[at] : y[at]) : 0.0;
                y[at] = alpha * s + bj + cj;
                if (slack) slack[at] = ldexp(fabs(alpha) * m + fabs(bj) + fabs(cj), -16);
                if (written) written[at] = 1;
            }
    }
}

/* ts_cuda_matmul_ex, one product: float32 or bf16 operands (bf16), y in float32 (relative
 * error under 1e-5) or bf16 (out16: the bias too; check16's rule, with the slack of the float32
 * sums), with a bias or not, with a separate addend c (beta 1; c must be left as it was) or
 * not, and alpha (0: the default, 1) */
static void check_matmul_ex(int64_t M, int64_t N, int64_t K, int flags, int bf16, int out16,
                            int bias, int addend, float alpha) {
    ts_err err = { 0 };
    float *a = randn(M * K, 1), *b = randn(K * N, 1), *bv = randn(N, 1), *c = randn(M * N, 1);
    void *da = operand(a, M * K, bf16), *db = operand(b, K * N, bf16);
    void *dbias = bias ? operand(bv, N, out16) : NULL;
    void *dc = addend ? operand(c, M * N, out16) : NULL;
    void *dy = dev(NULL, (size_t)(M * N) * (out16 ? 2 : 4));
    ts_cuda_mm o = { .out = out16 ? TS_CUDA_BF16 : TS_CUDA_F32, .bias = dbias, .c = dc,
                     .alpha = alpha, .beta = addend ? 1.0f : 0.0f };
    double *ref = dzeros(M * N), *slack = dzeros(M * N);
    ref_mm(a, b, bias ? bv : NULL, addend ? c : NULL, ref, slack, NULL, M, N, K, flags, &o);
    die(ts_cuda_matmul_ex(G, bf16 ? TS_CUDA_BF16 : TS_CUDA_F32, da, db, dy, M, N, K, flags, &o,
                          &err), &err);
    char what[128], scale[32] = "";
    if (alpha != 0.0f) snprintf(scale, sizeof scale, " x%g", (double)alpha);
    snprintf(what, sizeof what, "matmul_ex %s %lldx%lldx%lld%s%s%s%s%s, %s out",
             bf16 ? "bf16" : "f32", (long long)M, (long long)N, (long long)K,
             flags & TS_TRANS_A ? " A^T" : "", flags & TS_TRANS_B ? " B^T" : "", scale,
             bias ? " +bias" : "", addend ? " +c" : "", out16 ? "bf16" : "f32");
    /* With a bias and a bf16 y, cuBLASLt's epilogue may round the product to bf16 before it
     * adds the bias, and round again after: any value may then be a step off, and where the
     * bias cancels the product, off by a step of the product itself */
    double cap = ONE_ROUNDING;
    if (out16 && bias) {
        cap = 1.0;
        for (int64_t i = 0; i < M * N; i++) slack[i] += ldexp(fabs(ref[i] - bv[i % N]), -8);
    }
    expect_out(what, dy, out16, ref, NULL, out16 ? slack : NULL, M * N, cap);
    if (addend) {
        double *rc = dcopy(c, M * N);
        expect_kept("  c left as it was", dc, out16, rc, NULL, M * N);
        free(rc);
    }
    free(a), free(b), free(bv), free(c), free(ref), free(slack);
}

/* The CLIP model's attention products, one ts_cuda_matmul_ex per head h over the B sequences:
 * from qkv (B T, 3 W), W = H D, the scores S_h = Q_h K_h^T into (B, H, T, ld) float32 (ld: T
 * rounded up to 8; the pitch's padding must be left as it was), O_h = P_h V_h from P (B, H, T,
 * ld) into (B T, W), and the backward's dV_h = P_h^T dO_h into (B T, 3 W) at column 2 W + h D
 * (the other columns left as they were); O and dV in the operands' type. P's padding is NaN:
 * a product that reads past K fails. */
static void check_head_products(int64_t B, int64_t H, int64_t T, int64_t D, int bf16) {
    ts_err err = { 0 };
    ts_cuda_dtype dt = bf16 ? TS_CUDA_BF16 : TS_CUDA_F32;
    int64_t W = H * D, W3 = 3 * W, ld = (T + 7) / 8 * 8, nq = B * T * W3, np = B * H * T * ld;
    int64_t no = B * T * W;
    float *qkv = randn(nq, 1), *p = randn(np, 1), *dO = randn(no, 1);
    for (int64_t i = 0; i < np; i++)
        if (i % ld >= T) p[i] = NAN;
    void *d_qkv = operand(qkv, nq, bf16), *d_p = operand(p, np, bf16);
    void *d_dO = operand(dO, no, bf16);
    float *s0 = randn(np, 1), *o0 = randn(no, 1), *dq0 = randn(nq, 1);
    double *rs = dcopy(s0, np), *ro = dcopy(o0, no), *rdq = dcopy(dq0, nq);
    double *so = dzeros(no), *sdq = dzeros(nq);
    uint8_t *ws = calloc((size_t)np, 1), *wo = calloc((size_t)no, 1), *wdq = calloc((size_t)nq, 1);
    ts_cuda_mm os = { .out = TS_CUDA_F32, .count = (int)B, .stride_a = T * W3, .stride_b = T * W3,
                      .stride_y = H * T * ld, .ld_a = W3, .ld_b = W3, .ld_y = ld };
    ts_cuda_mm oo = { .out = dt, .count = (int)B, .stride_a = H * T * ld, .stride_b = T * W3,
                      .stride_y = T * W, .ld_a = ld, .ld_b = W3, .ld_y = W };
    ts_cuda_mm ov = { .out = dt, .count = (int)B, .stride_a = H * T * ld, .stride_b = T * W,
                      .stride_y = T * W3, .ld_a = ld, .ld_b = W, .ld_y = W3 };
    for (int64_t h = 0; h < H; h++) {
        ref_mm(qkv + h * D, qkv + W + h * D, NULL, NULL, rs + h * T * ld, NULL, ws + h * T * ld,
               T, T, D, TS_TRANS_B, &os);
        ref_mm(p + h * T * ld, qkv + 2 * W + h * D, NULL, NULL, ro + h * D, so + h * D,
               wo + h * D, T, D, T, 0, &oo);
        ref_mm(p + h * T * ld, dO + h * D, NULL, NULL, rdq + 2 * W + h * D, sdq + 2 * W + h * D,
               wdq + 2 * W + h * D, T, D, T, TS_TRANS_A, &ov);
    }
    float *d_s = out_buffer(s0, ws, np, 0);
    void *d_o = out_buffer(o0, wo, no, bf16), *d_dq = out_buffer(dq0, wdq, nq, bf16);
    size_t es = bf16 ? 2 : 4;
    for (int64_t h = 0; h < H; h++) {
        const char *q = (const char *)d_qkv + (size_t)(h * D) * es;
        const char *ph = (const char *)d_p + (size_t)(h * T * ld) * es;
        die(ts_cuda_matmul_ex(G, dt, q, q + (size_t)W * es, d_s + h * T * ld, T, T, D,
                              TS_TRANS_B, &os, &err), &err);
        die(ts_cuda_matmul_ex(G, dt, ph, q + (size_t)(2 * W) * es,
                              (char *)d_o + (size_t)(h * D) * es, T, D, T, 0, &oo, &err), &err);
        die(ts_cuda_matmul_ex(G, dt, ph, (const char *)d_dO + (size_t)(h * D) * es,
                              (char *)d_dq + (size_t)(2 * W + h * D) * es, T, D, T, TS_TRANS_A,
                              &ov, &err), &err);
    }
    char what[128];
    snprintf(what, sizeof what, "heads' products %s %lldx%lldx%lldx%lld: S = Q K^T, pitch %lld",
             bf16 ? "bf16" : "f32", (long long)B, (long long)H, (long long)T, (long long)D,
             (long long)ld);
    expect_out(what, d_s, 0, rs, ws, NULL, np, ONE_ROUNDING);
    snprintf(what, sizeof what, "  O = P V, %s out", bf16 ? "bf16" : "f32");
    expect_out(what, d_o, bf16, ro, wo, bf16 ? so : NULL, no, ONE_ROUNDING);
    snprintf(what, sizeof what, "  dV = P^T dO into dqkv, %s out", bf16 ? "bf16" : "f32");
    expect_out(what, d_dq, bf16, rdq, wdq, bf16 ? sdq : NULL, nq, ONE_ROUNDING);
    free(qkv), free(p), free(dO), free(s0), free(o0), free(dq0), free(rs), free(ro), free(rdq);
    free(so), free(sdq), free(ws), free(wo), free(wdq);
}

/* ---- elementwise ---- */

static double Phi(double x) { return 0.5 * erfc(-x / sqrt(2.0)); }
static double dgelu(double x) { return Phi(x) + x * exp(-0.5 * x * x) / 2.5066282746310002; }

static void check_elementwise(void) {
    ts_err err = { 0 };
    const int64_t R = 333, C = 517, n = R * C;
    float *x = randn(n, 2), *b = randn(C, 1), *dy = randn(n, 1), *dx0 = randn(n, 1);
    float *db0 = randn(C, 1);
    double *ref = dzeros(n), *rb = dzeros(C);
    float *dx_ = dev(x, (size_t)n * 4), *db_ = dev(b, (size_t)C * 4), *ddy = dev(dy, (size_t)n * 4);
    /* add with broadcast */
    float *out = dev(NULL, (size_t)n * 4);
    die(ts_cuda_add(G, dx_, db_, out, n, C, &err), &err);
    for (int64_t i = 0; i < n; i++) ref[i] = (double)x[i] + b[i % C];
    float *h = get(out, n);
    report("add (bias broadcast over rows)", rel(h, ref, n), 1e-6);
    free(h);
    /* gelu */
    out = dev(NULL, (size_t)n * 4);
    die(ts_cuda_gelu(G, dx_, out, n, &err), &err);
    for (int64_t i = 0; i < n; i++) ref[i] = x[i] * Phi(x[i]);
    expect("gelu (erf)", out, ref, n);
    float *acc = dev(dx0, (size_t)n * 4);
    die(ts_cuda_gelu_backward(G, dx_, ddy, acc, n, &err), &err);
    for (int64_t i = 0; i < n; i++) ref[i] = dx0[i] + dy[i] * dgelu(x[i]);
    expect("gelu backward (+=)", acc, ref, n);
    /* bias + gelu */
    out = dev(NULL, (size_t)n * 4);
    die(ts_cuda_bias_gelu(G, dx_, db_, out, R, C, &err), &err);
    for (int64_t i = 0; i < n; i++) {
        double z = (double)x[i] + b[i % C];
        ref[i] = z * Phi(z);
    }
    expect("bias_gelu", out, ref, n);
    acc = dev(dx0, (size_t)n * 4);
    float *dbacc = dev(db0, (size_t)C * 4);
    die(ts_cuda_bias_gelu_backward(G, dx_, db_, ddy, acc, dbacc, R, C, &err), &err);
    for (int64_t j = 0; j < C; j++) rb[j] = db0[j];
    for (int64_t i = 0; i < n; i++) {
        double gr = dy[i] * dgelu((double)x[i] + b[i % C]);
        ref[i] = dx0[i] + gr;
        rb[i % C] += gr;
    }
    expect("bias_gelu backward dx (+=)", acc, ref, n);
    expect("bias_gelu backward db (+=)", dbacc, rb, C);
    free(x), free(b), free(dy), free(dx0), free(db0), free(ref), free(rb);
}

/* QuickGELU, GELU (tanh) and Mish against their formulas in double, over normal values and the
 * tails (the saturated sigmoid and tanh, Mish's cap at 20 and its zero below -87) */
static void check_activations(void) {
    ts_err err = { 0 };
    const int64_t n = 100003;
    float *x = randn(n, 3), *dy = randn(n, 1), *dx0 = randn(n, 1);
    const float tails[] = { -200.0f, -90.0f, -87.5f, -30.0f, -12.0f, 0.0f, 12.0f, 19.5f, 20.5f,
                            40.0f, 100.0f };
    for (int i = 0; i < (int)(sizeof tails / sizeof tails[0]); i++) x[i * 97] = tails[i];
    double *ry = dzeros(n), *rdx = dzeros(n);
    float *d_x = dev(x, (size_t)n * 4), *d_dy = dev(dy, (size_t)n * 4);
    const char *names[3] = { "quick_gelu", "gelu (tanh)", "mish" };
    for (int a = 0; a < 3; a++) {
        const double k = 0.7978845608028654, c = 0.044715;
        for (int64_t i = 0; i < n; i++) {
            double v = x[i], f, d;
            if (a == 0) {
                double s = 1.0 / (1.0 + exp(-1.702 * v));
                f = v * s, d = s + 1.702 * v * s * (1.0 - s);
            } else if (a == 1) {
                double t = tanh(k * (v + c * v * v * v));
                f = 0.5 * v * (1.0 + t);
                d = 0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * k * (1.0 + 3.0 * c * v * v);
            } else {
                double sp = v > 30 ? v : log1p(exp(v)), t = tanh(sp);
                f = v * t, d = t + v * (1.0 - t * t) / (1.0 + exp(-v));
            }
            ry[i] = f, rdx[i] = dx0[i] + dy[i] * d;
        }
        float *d_y = dev(NULL, (size_t)n * 4), *d_dx = dev(dx0, (size_t)n * 4);
        die(ts_cuda_activation(G, (ts_cuda_act)a, d_x, d_y, n, &err), &err);
        die(ts_cuda_activation_backward(G, (ts_cuda_act)a, d_x, d_dy, d_dx, n, &err), &err);
        char what[96];
        snprintf(what, sizeof what, "%s", names[a]);
        expect(what, d_y, ry, n);
        snprintf(what, sizeof what, "%s backward (+=)", names[a]);
        expect(what, d_dx, rdx, n);
    }
    /* an unknown kind is refused, not launched */
    float *d_y = dev(NULL, (size_t)n * 4);
    ts_status st = ts_cuda_activation(G, (ts_cuda_act)7, d_x, d_y, n, &err);
    report("activation: unknown kind refused", st == TS_ERR_USAGE ? 0.0 : 1.0, 0.5);
    free(x), free(dy), free(dx0), free(ry), free(rdx);
}

/* ---- rows ---- */

/* mode 0: ts_cuda_layernorm_backward; 1: ts_cuda_layernorm_backward_bf16, whose dx16 must be
 * the downloaded dx rounded to bf16, bit for bit; 2: the same with dx16 NULL */
static void check_layernorm(int64_t R, int64_t C, int mode) {
    ts_err err = { 0 };
    const int64_t n = R * C;
    float *x = randn(n, 3), *w = randn(C, 1), *b = randn(C, 1), *dy = randn(n, 1);
    float *dx0 = randn(n, 1), *dw0 = randn(C, 1), *db0 = randn(C, 1);
    for (int64_t i = 0; i < n; i++) x[i] += 1.5f; /* an offset mean, as activations have */
    double *ry = dzeros(n), *rdx = dzeros(n), *rdw = dzeros(C), *rdb = dzeros(C);
    for (int64_t j = 0; j < C; j++) rdw[j] = dw0[j], rdb[j] = db0[j];
    for (int64_t r = 0; r < R; r++) {
        double mu = 0, var = 0, s1 = 0, s2 = 0;
        for (int64_t j = 0; j < C; j++) mu += x[r * C + j];
        mu /= C;
        for (int64_t j = 0; j < C; j++) var += (x[r * C + j] - mu) * (x[r * C + j] - mu);
        double rs = 1.0 / sqrt(var / C + 1e-5);
        for (int64_t j = 0; j < C; j++) {
            double xh = (x[r * C + j] - mu) * rs, dxh = (double)dy[r * C + j] * w[j];
            ry[r * C + j] = xh * w[j] + b[j];
            s1 += dxh;
            s2 += dxh * xh;
            rdw[j] += dy[r * C + j] * xh;
            rdb[j] += dy[r * C + j];
        }
        for (int64_t j = 0; j < C; j++) {
            double xh = (x[r * C + j] - mu) * rs, dxh = (double)dy[r * C + j] * w[j];
            rdx[r * C + j] = dx0[r * C + j] + rs * (dxh - s1 / C - xh * s2 / C);
        }
    }
    float *d_x = dev(x, (size_t)n * 4), *d_w = dev(w, (size_t)C * 4), *d_b = dev(b, (size_t)C * 4);
    float *d_y = dev(NULL, (size_t)n * 4), *d_m = dev(NULL, (size_t)R * 4);
    float *d_r = dev(NULL, (size_t)R * 4), *d_dy = dev(dy, (size_t)n * 4);
    float *d_dx = dev(dx0, (size_t)n * 4), *d_dw = dev(dw0, (size_t)C * 4);
    float *d_db = dev(db0, (size_t)C * 4);
    uint16_t *d_dx16 = mode == 1 ? dev(NULL, (size_t)n * 2) : NULL;
    die(ts_cuda_layernorm(G, d_x, d_w, d_b, d_y, d_m, d_r, R, C, 1e-5f, &err), &err);
    if (mode)
        die(ts_cuda_layernorm_backward_bf16(G, d_x, d_w, d_m, d_r, d_dy, d_dx, d_dx16, d_dw,
                                            d_db, R, C, &err), &err);
    else
        die(ts_cuda_layernorm_backward(G, d_x, d_w, d_m, d_r, d_dy, d_dx, d_dw, d_db, R, C,
                                       &err), &err);
    char what[96];
    snprintf(what, sizeof what, "layernorm %lldx%lld", (long long)R, (long long)C);
    expect(what, d_y, ry, n);
    snprintf(what, sizeof what, "layernorm backward%s dx (+=) %lldx%lld",
             mode == 1 ? "_bf16" : mode == 2 ? "_bf16, no dx16," : "", (long long)R,
             (long long)C);
    expect(what, d_dx, rdx, n);
    expect("  dw (+=)", d_dw, rdw, C);
    expect("  db (+=)", d_db, rdb, C);
    if (mode == 1) {
        float *h = get(d_dx, n);
        uint16_t *h16 = malloc((size_t)n * 2);
        die(ts_cuda_download(G, h16, d_dx16, (size_t)n * 2, &err), &err);
        int64_t off = 0;
        for (int64_t i = 0; i < n; i++) off += h16[i] != bf16_bits(h[i]);
        report("  dx16: dx rounded to bf16, bit for bit", (double)off, 0.5);
        free(h), free(h16);
    }
    free(x), free(w), free(b), free(dy), free(dx0), free(dw0), free(db0);
    free(ry), free(rdx), free(rdw), free(rdb);
}

/* without weight and bias (w, b NULL), only dx asked for */
static void check_layernorm_plain(int64_t R, int64_t C) {
    ts_err err = { 0 };
    const int64_t n = R * C;
    float *x = randn(n, 2), *dy = randn(n, 1), *dx0 = randn(n, 1);
    double *ry = dzeros(n), *rdx = dzeros(n);
    for (int64_t r = 0; r < R; r++) {
        double mu = 0, var = 0, s1 = 0, s2 = 0;
        for (int64_t j = 0; j < C; j++) mu += x[r * C + j];
        mu /= C;
        for (int64_t j = 0; j < C; j++) var += (x[r * C + j] - mu) * (x[r * C + j] - mu);
        double rs = 1.0 / sqrt(var / C + 1e-6);
        for (int64_t j = 0; j < C; j++) {
            double xh = (x[r * C + j] - mu) * rs;
            ry[r * C + j] = xh;
            s1 += dy[r * C + j];
            s2 += dy[r * C + j] * xh;
        }
        for (int64_t j = 0; j < C; j++)
            rdx[r * C + j] = dx0[r * C + j] +
                             rs * (dy[r * C + j] - s1 / C - (x[r * C + j] - mu) * rs * s2 / C);
    }
    float *d_x = dev(x, (size_t)n * 4), *d_y = dev(NULL, (size_t)n * 4);
    float *d_m = dev(NULL, (size_t)R * 4), *d_r = dev(NULL, (size_t)R * 4);
    float *d_dy = dev(dy, (size_t)n * 4), *d_dx = dev(dx0, (size_t)n * 4);
    die(ts_cuda_layernorm(G, d_x, NULL, NULL, d_y, d_m, d_r, R, C, 1e-6f, &err), &err);
    die(ts_cuda_layernorm_backward(G, d_x, NULL, d_m, d_r, d_dy, d_dx, NULL, NULL, R, C, &err),
        &err);
    expect("layernorm without weight and bias", d_y, ry, n);
    expect("  backward, dx only (+=)", d_dx, rdx, n);
    free(x), free(dy), free(dx0), free(ry), free(rdx);
}

/* softmax, or log-softmax (lg), over R rows of C, forward and backward */
static void check_softmax(int64_t R, int64_t C, int lg) {
    ts_err err = { 0 };
    const int64_t n = R * C;
    float *x = randn(n, 4), *dy = randn(n, 1), *dx0 = randn(n, 1);
    double *ry = dzeros(n), *rdx = dzeros(n);
    for (int64_t r = 0; r < R; r++) {
        double m = -INFINITY, s = 0, sd = 0;
        const float *xr = x + r * C, *dyr = dy + r * C;
        double *yr = ry + r * C;
        for (int64_t j = 0; j < C; j++) m = fmax(m, xr[j]);
        for (int64_t j = 0; j < C; j++) s += exp(xr[j] - m);
        for (int64_t j = 0; j < C; j++) yr[j] = lg ? xr[j] - m - log(s) : exp(xr[j] - m) / s;
        /* softmax: dx = y (dy - sum dy y); log-softmax: dx = dy - exp(y) sum dy */
        for (int64_t j = 0; j < C; j++) sd += lg ? dyr[j] : dyr[j] * yr[j];
        for (int64_t j = 0; j < C; j++)
            rdx[r * C + j] = dx0[r * C + j] + (lg ? dyr[j] - exp(yr[j]) * sd
                                                  : yr[j] * (dyr[j] - sd));
    }
    float *d_x = dev(x, (size_t)n * 4), *d_y = dev(NULL, (size_t)n * 4);
    float *d_dy = dev(dy, (size_t)n * 4), *d_dx = dev(dx0, (size_t)n * 4);
    if (lg) {
        die(ts_cuda_log_softmax(G, d_x, d_y, R, C, &err), &err);
        die(ts_cuda_log_softmax_backward(G, d_y, d_dy, d_dx, R, C, &err), &err);
    } else {
        die(ts_cuda_softmax(G, d_x, d_y, R, C, &err), &err);
        die(ts_cuda_softmax_backward(G, d_y, d_dy, d_dx, R, C, &err), &err);
    }
    const char *name = lg ? "log_softmax" : "softmax";
    char what[96];
    snprintf(what, sizeof what, "%s %lldx%lld", name, (long long)R, (long long)C);
    expect(what, d_y, ry, n);
    snprintf(what, sizeof what, "%s backward (+=) %lldx%lld", name, (long long)R, (long long)C);
    expect(what, d_dx, rdx, n);
    free(x), free(dy), free(dx0), free(ry), free(rdx);
}

static void check_cross_entropy(int64_t N, int64_t K, float eps) {
    ts_err err = { 0 };
    /* the accumulated gradient seeded at the scale of what is added (dloss / count per row),
     * so that a wrong scale, a missing term or a write into an ignored row shows */
    float *x = randn(N * K, 3), dloss = 0.75f;
    float *dx0 = randn(N * K, 1.0f / (float)N);
    int32_t *t = malloc((size_t)N * sizeof *t);
    for (int64_t i = 0; i < N; i++) t[i] = i % 7 == 3 ? -100 : (int32_t)(uniform() * K);
    double loss = 0, count = 0, *rdx = dzeros(N * K);
    for (int64_t i = 0; i < N; i++) count += t[i] != -100;
    for (int64_t i = 0; i < N; i++) {
        double m = -INFINITY, s = 0, sx = 0;
        for (int64_t j = 0; j < K; j++) m = fmax(m, x[i * K + j]);
        for (int64_t j = 0; j < K; j++) s += exp(x[i * K + j] - m), sx += x[i * K + j];
        double lse = m + log(s);
        for (int64_t j = 0; j < K; j++) rdx[i * K + j] = dx0[i * K + j];
        if (t[i] == -100) continue;
        loss += (1 - eps) * (lse - x[i * K + t[i]]) + eps * (lse - sx / K);
        for (int64_t j = 0; j < K; j++)
            rdx[i * K + j] += dloss / count *
                              (exp(x[i * K + j] - lse) - eps / K - (j == t[i] ? 1 - eps : 0));
    }
    loss /= count;
    float *d_x = dev(x, (size_t)(N * K) * 4), *d_l = dev(NULL, 4), *d_dl = dev(&dloss, 4);
    int32_t *d_t = dev(t, (size_t)N * 4);
    float *d_dx = dev(dx0, (size_t)(N * K) * 4);
    die(ts_cuda_cross_entropy(G, d_x, d_t, d_l, N, K, -100, eps, &err), &err);
    die(ts_cuda_cross_entropy_backward(G, d_x, d_t, d_dl, d_dx, N, K, -100, eps, &err), &err);
    char what[96];
    float *h = get(d_l, 1);
    snprintf(what, sizeof what, "cross-entropy %lldx%lld smoothing %.1f", (long long)N,
             (long long)K, eps);
    report(what, rel(h, &loss, 1), 1e-5);
    free(h);
    h = get(d_dx, N * K);
    report("  backward (+=)", rel(h, rdx, N * K), 1e-5);
    int64_t touched = 0;
    for (int64_t i = 0; i < N; i++)
        for (int64_t j = 0; t[i] == -100 && j < K; j++) touched += h[i * K + j] != dx0[i * K + j];
    report("  ignored rows left exactly as they were", (double)touched, 0.5);
    free(h);
    /* a target outside [0, K) that is not ignore_index: a NaN loss, never a silent skip */
    t[1] = (int32_t)K;
    die(ts_cuda_upload(G, d_t, t, (size_t)N * 4, &err), &err);
    die(ts_cuda_cross_entropy(G, d_x, d_t, d_l, N, K, -100, eps, &err), &err);
    h = get(d_l, 1);
    report("  a target out of range gives a NaN loss", h[0] != h[0] ? 0.0 : 1.0, 0.5);
    free(h);
    free(x), free(dx0), free(t), free(rdx);
}

/* the part a kernel added: ||(out - seed) - (ref - seed)|| / ||ref - seed|| */
static double rel_added(const float *out, const float *seed, const double *ref, int64_t n) {
    double d = 0, r = 0;
    for (int64_t i = 0; i < n; i++) {
        if (out[i] != out[i]) return NAN;
        double a = (double)out[i] - seed[i], b = ref[i] - seed[i];
        d += (a - b) * (a - b);
        r += b * b;
    }
    return r > 0 ? sqrt(d / r) : sqrt(d);
}

/* where element (b, h, row i, column d) of an attention tensor lies: b bs + h hs + i rs + d */
typedef struct { int64_t bs, hs, rs; } att_stride;
/* the strides of ref_attention's tensors: q; k and v; y, dy and dq; dk and dv */
typedef struct { att_stride q, k, y, dk; } att_layout;

/* Softmax attention forward and backward in float64, the reference of both attention checks.
 * For each (b, h) and query row i < Tq: the scores scale q_i.k_j over the keys j < Tk that are
 * not masked (j > i where causal; pad[b Tk + j] where pad is not NULL), y_i = softmax(scores) v
 * (written), lse (B, H, Tq) their logsumexp (0 for a row with every key masked, whose y is 0),
 * and from dy the gradients, ADDED to dq, dk and dv (which hold the seeds) */
static void ref_attention(const float *q, const float *k, const float *v, const float *dy,
                          att_layout L, int64_t B, int64_t H, int64_t Tq, int64_t Tk, int64_t D,
                          double scale, int causal, const uint8_t *pad, double *y, double *lse,
                          double *dq, double *dk, double *dv) {
    double *P = dzeros(Tk), *dS = dzeros(Tk);
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t i = 0; i < Tq; i++) {
                int64_t oq = b * L.q.bs + h * L.q.hs + i * L.q.rs;
                int64_t oy = b * L.y.bs + h * L.y.hs + i * L.y.rs;
                int64_t ok = b * L.k.bs + h * L.k.hs, odk = b * L.dk.bs + h * L.dk.hs;
                int64_t n = causal && i + 1 < Tk ? i + 1 : Tk;
                const float *Q = q + oq, *dY = dy + oy;
                double m = -INFINITY, s = 0, delta = 0;
                for (int64_t j = 0; j < n; j++) {
                    const float *K = k + ok + j * L.k.rs;
                    P[j] = -INFINITY;
                    if (pad && pad[b * Tk + j]) continue;
                    double dot = 0;
                    for (int64_t d = 0; d < D; d++) dot += (double)Q[d] * K[d];
                    P[j] = dot * scale;
                    m = fmax(m, P[j]);
                }
                for (int64_t j = 0; j < n; j++) s += P[j] == -INFINITY ? 0 : exp(P[j] - m);
                for (int64_t j = 0; j < n; j++) P[j] = P[j] == -INFINITY ? 0 : exp(P[j] - m) / s;
                lse[(b * H + h) * Tq + i] = s > 0 ? m + log(s) : 0.0;
                for (int64_t d = 0; d < D; d++) {
                    double yd = 0;
                    for (int64_t j = 0; j < n; j++) yd += P[j] * v[ok + j * L.k.rs + d];
                    y[oy + d] = yd;
                    delta += yd * dY[d];
                }
                for (int64_t j = 0; j < n; j++) {
                    const float *V = v + ok + j * L.k.rs;
                    double dp = 0;
                    for (int64_t d = 0; d < D; d++) dp += (double)dY[d] * V[d];
                    dS[j] = P[j] * (dp - delta);
                }
                for (int64_t j = 0; j < n; j++)
                    for (int64_t d = 0; d < D; d++) {
                        dq[oy + d] += scale * dS[j] * k[ok + j * L.k.rs + d];
                        dk[odk + j * L.dk.rs + d] += scale * dS[j] * Q[d];
                        dv[odk + j * L.dk.rs + d] += P[j] * dY[d];
                    }
            }
    free(P), free(dS);
}

/* attention forward (y and the logsumexp) and backward against float64. padded: the last keys
 * of each sequence are padding (as real batches pad); empty: besides, every key of the last
 * sequence is padding, so its rows are empty (zeros, lse 0, no gradient). The gradients are
 * compared both whole (seed + what was added) and as what was added.
 * flash: the tensor-core kernels (flash.cu) on bf16 q, k, v, dy; the reference takes the same
 * bf16-rounded inputs in double, and the probabilities the kernels round to bf16 before their
 * products set the limit: 1e-2, as for bf16 products of the trainer */
static void check_attention(int64_t B, int64_t H, int64_t Tq, int64_t Tk, int64_t D, int causal,
                            int padded, int empty, int flash) {
    ts_err err = { 0 };
    int64_t nq = B * H * Tq * D, nk = B * H * Tk * D;
    float *q = randn(nq, 1), *k = randn(nk, 1), *v = randn(nk, 1), *dy = randn(nq, 1);
    double tol = flash ? 1e-2 : 1e-5;
    for (int64_t i = 0; flash && i < nq; i++) q[i] = bf16_value(q[i]), dy[i] = bf16_value(dy[i]);
    for (int64_t i = 0; flash && i < nk; i++) k[i] = bf16_value(k[i]), v[i] = bf16_value(v[i]);
    float *dq0 = randn(nq, 1), *dk0 = randn(nk, 1), *dv0 = randn(nk, 1);
    uint8_t *pad = calloc((size_t)(B * Tk), 1);
    for (int64_t b = 0; padded && b < B; b++)
        for (int64_t j = Tk - 1 - b * 3 > 1 ? Tk - 1 - b * 3 : 1; j < Tk; j++) pad[b * Tk + j] = 1;
    for (int64_t j = 0; empty && j < Tk; j++) pad[(B - 1) * Tk + j] = 1;
    double *ry = dzeros(nq), *rdq = dzeros(nq), *rdk = dzeros(nk), *rdv = dzeros(nk);
    double *rl = dzeros(B * H * Tq);
    for (int64_t i = 0; i < nq; i++) rdq[i] = dq0[i];
    for (int64_t i = 0; i < nk; i++) rdk[i] = dk0[i], rdv[i] = dv0[i];
    const att_stride sq = { H * Tq * D, Tq * D, D }, sk = { H * Tk * D, Tk * D, D };
    ref_attention(q, k, v, dy, (att_layout){ sq, sk, sq, sk }, B, H, Tq, Tk, D,
                  1.0 / sqrt((double)D), causal, pad, ry, rl, rdq, rdk, rdv);
    float *d_q = dev(q, (size_t)nq * 4), *d_k = dev(k, (size_t)nk * 4);
    float *d_v = dev(v, (size_t)nk * 4);
    uint8_t *d_pad = padded ? dev(pad, (size_t)(B * Tk)) : NULL;
    float *d_y = dev(NULL, (size_t)nq * 4), *d_l = dev(NULL, (size_t)(B * H * Tq) * 4);
    float *d_dy = dev(dy, (size_t)nq * 4), *d_dq = dev(dq0, (size_t)nq * 4);
    float *d_dk = dev(dk0, (size_t)nk * 4), *d_dv = dev(dv0, (size_t)nk * 4);
    if (flash) {
        uint16_t *b_q = bf16_copy(q, nq), *b_k = bf16_copy(k, nk), *b_v = bf16_copy(v, nk);
        uint16_t *b_dy = bf16_copy(dy, nq);
        die(ts_cuda_flash_attention(G, b_q, b_k, b_v, d_pad, d_y, d_l, B, H, Tq, Tk, D, causal,
                                    0.0f, &err), &err);
        die(ts_cuda_flash_attention_backward(G, b_q, b_k, b_v, d_pad, d_y, d_l, b_dy, d_dq,
                                             d_dk, d_dv, B, H, Tq, Tk, D, causal, 0.0f, &err),
            &err);
    } else {
        die(ts_cuda_attention(G, d_q, d_k, d_v, d_pad, d_y, d_l, B, H, Tq, Tk, D, causal, 0.0f,
                              &err), &err);
        die(ts_cuda_attention_backward(G, d_q, d_k, d_v, d_pad, d_y, d_l, d_dy, d_dq, d_dk, d_dv,
                                       B, H, Tq, Tk, D, causal, 0.0f, &err), &err);
    }
    char what[128];
    snprintf(what, sizeof what, "%sattention %lldx%lldx%lldx%lld, Tk %lld%s%s%s",
             flash ? "flash " : "", (long long)B, (long long)H, (long long)Tq, (long long)D,
             (long long)Tk, causal ? ", causal" : "", padded ? ", key padding" : "",
             empty ? ", empty rows" : "");
    float *h = get(d_y, nq);
    report(what, rel(h, ry, nq), tol);
    free(h);
    h = get(d_l, B * H * Tq);
    report("  logsumexp", rel(h, rl, B * H * Tq), tol);
    free(h);
    h = get(d_dq, nq);
    report("  dq (+=)", rel(h, rdq, nq), tol);
    report("  dq, the part added", rel_added(h, dq0, rdq, nq), tol);
    free(h);
    h = get(d_dk, nk);
    report("  dk (+=)", rel(h, rdk, nk), tol);
    report("  dk, the part added", rel_added(h, dk0, rdk, nk), tol);
    free(h);
    h = get(d_dv, nk);
    report("  dv (+=)", rel(h, rdv, nk), tol);
    report("  dv, the part added", rel_added(h, dv0, rdv, nk), tol);
    free(h);
    free(q), free(k), free(v), free(dy), free(dq0), free(dk0), free(dv0), free(pad);
    free(ry), free(rl), free(rdq), free(rdk), free(rdv);
}

/* ---- attention on packed in_proj rows (attn_mma.cu) ---- */

/* Elements past the end of each buffer of the packed attention, seeded: a kernel's last tile of
 * rows (T not a multiple of its tile) must not write past the B T rows it was given */
#define PAST_END 256

/* n elements (float32, or bf16) on the device, NaN (dev's 0xff bytes), then PAST_END more
 * holding tail's values (bf16: rounded) */
static void *guarded(int64_t n, int bf16, const float *tail) {
    ts_err err = { 0 };
    size_t es = bf16 ? 2 : 4;
    char *d = dev(NULL, (size_t)(n + PAST_END) * es);
    uint16_t t16[PAST_END];
    for (int i = 0; i < PAST_END; i++) t16[i] = bf16_bits(tail[i]);
    die(ts_cuda_upload(G, d + (size_t)n * es, bf16 ? (const void *)t16 : (const void *)tail,
                       PAST_END * es, &err), &err);
    return d;
}

/* how many of the PAST_END elements after the n of d (from guarded) are not tail's any more */
static int64_t past_end_changed(const void *d, int64_t n, int bf16, const float *tail) {
    ts_err err = { 0 };
    size_t es = bf16 ? 2 : 4;
    unsigned char h[PAST_END * 4];
    die(ts_cuda_download(G, h, (const char *)d + (size_t)n * es, PAST_END * es, &err), &err);
    int64_t changed = 0;
    for (int i = 0; i < PAST_END; i++) {
        uint16_t t16 = bf16_bits(tail[i]);
        changed += bf16 ? memcmp(h + i * es, &t16, 2) != 0 : memcmp(h + i * es, &tail[i], 4) != 0;
    }
    return changed;
}

/* Download n bf16 values */
static uint16_t *get16(const void *d, int64_t n) {
    ts_err err = { 0 };
    uint16_t *h = malloc((size_t)n * 2);
    die(ts_cuda_download(G, h, d, (size_t)n * 2, &err), &err);
    return h;
}

/* columns [off, off + W) of the R rows (pitch ld) of the bf16 values x, as float32 */
static float *bf16_columns(const uint16_t *x, int64_t R, int64_t ld, int64_t off, int64_t W) {
    float *f = malloc((size_t)(R * W) * sizeof *f);
    for (int64_t r = 0; r < R; r++)
        for (int64_t c = 0; c < W; c++) {
            uint32_t b = (uint32_t)x[r * ld + off + c] << 16;
            memcpy(&f[r * W + c], &b, 4);
        }
    return f;
}

/* ts_cuda_attention_packed and its backward (heads of 64, q, k, v read from in_proj's packed
 * rows qkv (B T, 3 W), y and dy (B T, W), dqkv overwritten) against float64 on the same
 * bf16-rounded inputs; scale 0: the default, 1/8. The kernels round the probabilities (and dS)
 * to bf16 before their products, as FlashAttention does, and write y and dqkv in bf16: that
 * sets the limit of y, dq, dk and dv to 1e-2 (relative norm; a model of that arithmetic on the
 * host lands at 2-3e-3 on these shapes). lse is float32 from float32 scores and sums: 1e-3 (the
 * same model gives 5e-8, and 2e-4 where the sum is taken of the bf16-rounded probabilities; a
 * wrong base, scale or mask is off by more than 1e-1). Every output and both scratch buffers
 * start NaN; the backward then runs again with the scratch full of finite garbage and dqkv NaN
 * again: dq must hold as well, and dk and dv (sums in a fixed order) must come back bit for bit
 * (dq is summed by float32 atomics, in no fixed order). Nothing past any buffer's end may
 * change. */
static void check_attention_packed(int64_t B, int64_t H, int64_t T, int causal, float scale) {
    ts_err err = { 0 };
    const int64_t D = 64;
    int64_t W = H * D, W3 = 3 * W, R = B * T, nqkv = R * W3, ny = R * W, nl = B * H * T;
    float *qkv = randn(nqkv, 1), *dy = randn(ny, 1), *tail = randn(PAST_END, 1);
    uint16_t *d_qkv = operand(qkv, nqkv, 1), *d_dy = operand(dy, ny, 1);
    double s = scale > 0.0f ? (double)scale : 0.125;
    double *ry = dzeros(ny), *rl = dzeros(nl), *rdq = dzeros(ny), *rdk = dzeros(ny);
    double *rdv = dzeros(ny);
    const att_stride sqkv = { T * W3, D, W3 }, sy = { T * W, D, W };
    ref_attention(qkv, qkv + W, qkv + 2 * W, dy, (att_layout){ sqkv, sqkv, sy, sy }, B, H, T,
                  T, D, s, causal, NULL, ry, rl, rdq, rdk, rdv);
    uint16_t *d_y = guarded(ny, 1, tail), *d_dqkv = guarded(nqkv, 1, tail);
    float *d_l = guarded(nl, 0, tail), *d_acc = guarded(ny, 0, tail);
    float *d_delta = guarded(nl, 0, tail);
    die(ts_cuda_attention_packed(G, d_qkv, d_y, d_l, B, T, H, causal, scale, &err), &err);
    die(ts_cuda_attention_packed_backward(G, d_qkv, d_y, d_l, d_dy, d_dqkv, d_acc, d_delta, B, T,
                                          H, causal, scale, &err), &err);
    char what[128], sc[32] = "";
    if (scale > 0.0f) snprintf(sc, sizeof sc, ", scale %g", (double)scale);
    snprintf(what, sizeof what, "attention_packed %lldx%lldx%lld%s%s", (long long)B,
             (long long)H, (long long)T, causal ? ", causal" : "", sc);
    uint16_t *h16 = get16(d_y, ny);
    float *f = bf16_columns(h16, R, W, 0, W);
    report(what, rel(f, ry, ny), 1e-2);
    free(h16), free(f);
    f = get(d_l, nl);
    report("  lse", rel(f, rl, nl), 1e-3);
    free(f);
    uint16_t *g1 = get16(d_dqkv, nqkv);
    const char *part[3] = { "  backward dq", "  dk", "  dv" };
    const double *ref[3] = { rdq, rdk, rdv };
    for (int p = 0; p < 3; p++) {
        f = bf16_columns(g1, R, W3, p * W, W);
        report(part[p], rel(f, ref[p], ny), 1e-2);
        free(f);
    }
    /* again, the scratch holding finite garbage (the kernel must not read what it did not
     * write) and dqkv NaN */
    float *junk = randn(ny, 1000);
    die(ts_cuda_upload(G, d_acc, junk, (size_t)ny * 4, &err), &err);
    die(ts_cuda_upload(G, d_delta, junk, (size_t)nl * 4, &err), &err);
    die(ts_cuda_fill_bytes(G, d_dqkv, 0xff, (size_t)nqkv * 2, &err), &err);
    die(ts_cuda_attention_packed_backward(G, d_qkv, d_y, d_l, d_dy, d_dqkv, d_acc, d_delta, B, T,
                                          H, causal, scale, &err), &err);
    uint16_t *g2 = get16(d_dqkv, nqkv);
    f = bf16_columns(g2, R, W3, 0, W);
    report("  backward again, scratch garbage: dq", rel(f, rdq, ny), 1e-2);
    free(f);
    int64_t differ = 0;
    for (int64_t r = 0; r < R; r++)
        for (int64_t c = W; c < W3; c++) differ += g1[r * W3 + c] != g2[r * W3 + c];
    report("  dk, dv bit for bit as the first time", (double)differ, 0.5);
    int64_t past = past_end_changed(d_y, ny, 1, tail) + past_end_changed(d_dqkv, nqkv, 1, tail) +
                   past_end_changed(d_l, nl, 0, tail) + past_end_changed(d_acc, ny, 0, tail) +
                   past_end_changed(d_delta, nl, 0, tail);
    report("  written past a buffer's end", (double)past, 0.5);
    free(qkv), free(dy), free(tail), free(junk), free(g1), free(g2);
    free(ry), free(rl), free(rdq), free(rdk), free(rdv);
}

/* ---- the CLIP model's kernels (clip_kernels.cu, and the bf16-writing variants) ---- */

/* a check of a += kernel: the whole buffer and the part added */
static void expect_added(const char *what, const float *d, const float *seed, const double *ref,
                         int64_t n) {
    float *h = get(d, n);
    char w2[128];
    report(what, rel(h, ref, n), 1e-5);
    snprintf(w2, sizeof w2, "  %s, the part added", what);
    report(w2, rel_added(h, seed, ref, n), 1e-5);
    free(h);
}

static void check_clip_kernels(void) {
    ts_err err = { 0 };
    /* patchify: (B, 3, S, S) -> (B (S/P)^2, 3 P P) */
    {
        int64_t B = 2, S = 32, P = 8, g = S / P, np = g * g, cols = 3 * P * P;
        float *img = randn(B * 3 * S * S, 1);
        double *ref = dzeros(B * np * cols);
        for (int64_t b = 0; b < B; b++)
            for (int64_t p = 0; p < np; p++)
                for (int64_t c = 0; c < 3; c++)
                    for (int64_t ky = 0; ky < P; ky++)
                        for (int64_t kx = 0; kx < P; kx++)
                            ref[(b * np + p) * cols + (c * P + ky) * P + kx] =
                                img[((b * 3 + c) * S + (p / g) * P + ky) * S + (p % g) * P + kx];
        float *d_img = dev(img, (size_t)(B * 3 * S * S) * 4);
        float *d_out = dev(NULL, (size_t)(B * np * cols) * 4);
        die(ts_cuda_patchify(G, d_img, d_out, B, S, P, &err), &err);
        expect("patchify 2x3x32x32, patch 8", d_out, ref, B * np * cols);
        free(img), free(ref);
    }
    /* the class token and positions, forward and backward */
    {
        int64_t B = 3, T = 17, W = 40;
        float *emb = randn(B * (T - 1) * W, 1), *cls = randn(W, 1), *pos = randn(T * W, 1);
        float *dx = randn(B * T * W, 1), *dcls0 = randn(W, 1), *dpos0 = randn(T * W, 1);
        double *rx = dzeros(B * T * W), *rdemb = dzeros(B * (T - 1) * W);
        double *rdcls = dcopy(dcls0, W), *rdpos = dcopy(dpos0, T * W);
        for (int64_t b = 0; b < B; b++)
            for (int64_t t = 0; t < T; t++)
                for (int64_t w = 0; w < W; w++) {
                    int64_t i = (b * T + t) * W + w;
                    rx[i] = (double)(t ? emb[(b * (T - 1) + t - 1) * W + w] : cls[w]) +
                            pos[t * W + w];
                    rdpos[t * W + w] += dx[i];
                    if (t) rdemb[(b * (T - 1) + t - 1) * W + w] = dx[i];
                    else rdcls[w] += dx[i];
                }
        float *d_emb = dev(emb, (size_t)(B * (T - 1) * W) * 4), *d_cls = dev(cls, (size_t)W * 4);
        float *d_pos = dev(pos, (size_t)(T * W) * 4), *d_x = dev(NULL, (size_t)(B * T * W) * 4);
        float *d_dx = dev(dx, (size_t)(B * T * W) * 4);
        float *d_demb = dev(NULL, (size_t)(B * (T - 1) * W) * 4);
        float *d_dcls = dev(dcls0, (size_t)W * 4), *d_dpos = dev(dpos0, (size_t)(T * W) * 4);
        die(ts_cuda_vit_tokens(G, d_emb, d_cls, d_pos, d_x, B, T, W, &err), &err);
        die(ts_cuda_vit_tokens_backward(G, d_dx, d_demb, d_dcls, d_dpos, B, T, W, &err), &err);
        expect("vit tokens 3x17x40", d_x, rx, B * T * W);
        expect("  backward: patch rows", d_demb, rdemb, B * (T - 1) * W);
        expect_added("class token (+=)", d_dcls, dcls0, rdcls, W);
        expect_added("positions (+=)", d_dpos, dpos0, rdpos, T * W);
        free(emb), free(cls), free(pos), free(dx), free(dcls0), free(dpos0);
        free(rx), free(rdemb), free(rdcls), free(rdpos);
    }
    /* token embedding + positions, forward and backward (ids repeat) */
    {
        int64_t B = 3, T = 9, V = 50, W = 24;
        int32_t *ids = malloc((size_t)(B * T) * 4);
        for (int64_t i = 0; i < B * T; i++) ids[i] = (int32_t)(uniform() * 12); /* repeats */
        float *tab = randn(V * W, 1), *pos = randn(T * W, 1), *dx = randn(B * T * W, 1);
        float *dtab0 = randn(V * W, 1), *dpos0 = randn(T * W, 1);
        double *rx = dzeros(B * T * W), *rdtab = dcopy(dtab0, V * W), *rdpos = dcopy(dpos0, T * W);
        for (int64_t i = 0; i < B * T; i++)
            for (int64_t w = 0; w < W; w++) {
                rx[i * W + w] = (double)tab[ids[i] * W + w] + pos[(i % T) * W + w];
                rdtab[ids[i] * W + w] += dx[i * W + w];
                rdpos[(i % T) * W + w] += dx[i * W + w];
            }
        int32_t *d_ids = dev(ids, (size_t)(B * T) * 4);
        float *d_tab = dev(tab, (size_t)(V * W) * 4), *d_pos = dev(pos, (size_t)(T * W) * 4);
        float *d_x = dev(NULL, (size_t)(B * T * W) * 4), *d_dx = dev(dx, (size_t)(B * T * W) * 4);
        float *d_dtab = dev(dtab0, (size_t)(V * W) * 4), *d_dpos = dev(dpos0, (size_t)(T * W) * 4);
        die(ts_cuda_embed(G, d_ids, d_tab, d_pos, d_x, B, T, W, &err), &err);
        die(ts_cuda_embed_backward(G, d_ids, d_dx, d_dtab, d_dpos, B, T, W, &err), &err);
        expect("token embedding 3x9, 50 ids x 24", d_x, rx, B * T * W);
        expect_added("embedding table (+=)", d_dtab, dtab0, rdtab, V * W);
        expect_added("embedding positions (+=)", d_dpos, dpos0, rdpos, T * W);
        free(ids), free(tab), free(pos), free(dx), free(dtab0), free(dpos0);
        free(rx), free(rdtab), free(rdpos);
    }
    /* head layout: (B, T, G, H, D) <-> G x (B, H, T, D), float32 and bf16 */
    {
        int64_t B = 2, T = 5, NG = 3, H = 12, D = 64, n = B * T * NG * H * D;
        float *src = randn(n, 1), *back = randn(n, 1), *acc0 = randn(n, 1);
        double *rh = dzeros(n), *rfrom = dzeros(n), *racc = dcopy(acc0, n);
        for (int64_t b = 0; b < B; b++)
            for (int64_t t = 0; t < T; t++)
                for (int64_t j = 0; j < NG; j++)
                    for (int64_t h = 0; h < H; h++)
                        for (int64_t d = 0; d < D; d++) {
                            int64_t i = (((b * T + t) * NG + j) * H + h) * D + d;
                            int64_t o = (((j * B + b) * H + h) * T + t) * D + d;
                            rh[o] = src[i];
                            rfrom[i] = back[o];
                            racc[i] += back[o];
                        }
        float *d_src = dev(src, (size_t)n * 4), *d_back = dev(back, (size_t)n * 4);
        float *d_h = dev(NULL, (size_t)n * 4), *d_from = dev(NULL, (size_t)n * 4);
        float *d_acc = dev(acc0, (size_t)n * 4);
        uint16_t *d_h16 = dev(NULL, (size_t)n * 2), *d_from16 = dev(NULL, (size_t)n * 2);
        die(ts_cuda_heads(G, d_src, d_h, B, T, NG, H, D, 1, 0, &err), &err);
        die(ts_cuda_heads(G, d_back, d_from, B, T, NG, H, D, 0, 0, &err), &err);
        die(ts_cuda_heads(G, d_back, d_acc, B, T, NG, H, D, 0, 1, &err), &err);
        die(ts_cuda_heads_bf16(G, d_src, d_h16, B, T, NG, H, D, 1, &err), &err);
        die(ts_cuda_heads_bf16(G, d_back, d_from16, B, T, NG, H, D, 0, &err), &err);
        expect("heads: packed -> per head", d_h, rh, n);
        expect("heads: per head -> packed", d_from, rfrom, n);
        expect_added("heads: per head -> packed (+=)", d_acc, acc0, racc, n);
        expect16("heads: packed -> per head, bf16", d_h16, rh, n);
        expect16("heads: per head -> packed, bf16", d_from16, rfrom, n);
        free(src), free(back), free(acc0), free(rh), free(rfrom), free(racc);
    }
    /* the scaled (causal) softmax of score rows with a pitch, and its backward: rows held by
     * one warp (pitch up to 1024) and by a block (longer) */
    for (int kase = 0; kase < 6; kase++) {
        int causal = kase & 1;
        int64_t BH = kase < 2 ? 6 : kase < 4 ? 2 : 1;
        int64_t T = kase < 2 ? 13 : kase < 4 ? 197 : 1100, ld = kase < 2 ? 16 : (T + 7) / 8 * 8;
        int64_t R = BH * T;
        float scale = 0.3f;
        float *sc = randn(R * ld, 3), *dp = randn(R * ld, 1);
        double *rp = dzeros(R * ld), *rds = dzeros(R * ld);
        float *pf = malloc((size_t)(R * ld) * sizeof *pf);
        for (int64_t r = 0; r < R; r++) {
            int64_t n = causal ? r % T + 1 : T;
            double m = -INFINITY, sum = 0, dot = 0;
            for (int64_t j = 0; j < n; j++) m = fmax(m, (double)scale * sc[r * ld + j]);
            for (int64_t j = 0; j < n; j++) sum += exp((double)scale * sc[r * ld + j] - m);
            for (int64_t j = 0; j < n; j++)
                rp[r * ld + j] = exp((double)scale * sc[r * ld + j] - m) / sum;
            for (int64_t j = 0; j < ld; j++) pf[r * ld + j] = (float)rp[r * ld + j];
            for (int64_t j = 0; j < T; j++) dot += (double)dp[r * ld + j] * pf[r * ld + j];
            for (int64_t j = 0; j < T; j++)
                rds[r * ld + j] = scale * (double)pf[r * ld + j] * (dp[r * ld + j] - dot);
        }
        float *d_s = dev(sc, (size_t)(R * ld) * 4), *d_p = dev(NULL, (size_t)(R * ld) * 4);
        float *d_p2 = dev(NULL, (size_t)(R * ld) * 4);
        uint16_t *d_p16 = dev(NULL, (size_t)(R * ld) * 2);
        uint16_t *d_ds16 = dev(NULL, (size_t)(R * ld) * 2);
        float *d_pf = dev(pf, (size_t)(R * ld) * 4), *d_dp = dev(dp, (size_t)(R * ld) * 4);
        float *d_ds = dev(NULL, (size_t)(R * ld) * 4), *d_inplace = dev(dp, (size_t)(R * ld) * 4);
        die(ts_cuda_attn_softmax(G, d_s, d_p, R, T, ld, scale, causal, &err), &err);
        die(ts_cuda_attn_softmax_bf16(G, d_s, d_p2, d_p16, R, T, ld, scale, causal, &err), &err);
        die(ts_cuda_attn_softmax_backward(G, d_pf, d_dp, d_ds, R, T, ld, scale, &err), &err);
        die(ts_cuda_attn_softmax_backward(G, d_pf, d_inplace, d_inplace, R, T, ld, scale, &err),
            &err);
        die(ts_cuda_attn_softmax_backward_bf16(G, d_pf, d_dp, d_ds16, R, T, ld, scale, &err),
            &err);
        char what[96];
        snprintf(what, sizeof what, "attention softmax %lldx%lld, pitch %lld%s", (long long)R,
                 (long long)T, (long long)ld, causal ? ", causal" : "");
        expect(what, d_p, rp, R * ld);
        expect("  the same, with its bf16 copy", d_p2, rp, R * ld);
        expect16("  its bf16 copy", d_p16, rp, R * ld);
        expect("  backward", d_ds, rds, R * ld);
        expect("  backward in place", d_inplace, rds, R * ld);
        expect16("  backward, bf16", d_ds16, rds, R * ld);
        free(sc), free(dp), free(rp), free(rds), free(pf);
    }
    /* row gathers, L2 normalisation, the logit scale, bias gradients, GELU and layernorm with
     * bf16 outputs */
    {
        int64_t B = 5, T = 11, W = 33;
        int32_t idx[5] = { 0, 10, 3, 3, 7 };
        float *x = randn(B * T * W, 1), *dy = randn(B * W, 1), *dx0 = randn(B * T * W, 1);
        double *ry = dzeros(B * W), *rdx = dcopy(dx0, B * T * W);
        for (int64_t b = 0; b < B; b++)
            for (int64_t w = 0; w < W; w++) {
                ry[b * W + w] = x[(b * T + idx[b]) * W + w];
                rdx[(b * T + idx[b]) * W + w] += dy[b * W + w];
            }
        int32_t *d_idx = dev(idx, sizeof idx);
        float *d_x = dev(x, (size_t)(B * T * W) * 4), *d_y = dev(NULL, (size_t)(B * W) * 4);
        float *d_dy = dev(dy, (size_t)(B * W) * 4), *d_dx = dev(dx0, (size_t)(B * T * W) * 4);
        die(ts_cuda_gather_rows(G, d_x, d_idx, d_y, B, T, W, &err), &err);
        die(ts_cuda_gather_rows_backward(G, d_dy, d_idx, d_dx, B, T, W, &err), &err);
        expect("gather rows 5x11x33", d_y, ry, B * W);
        expect_added("gather rows backward (+=)", d_dx, dx0, rdx, B * T * W);
        free(x), free(dy), free(dx0), free(ry), free(rdx);
    }
    {
        int64_t R = 37, C = 300;
        float *x = randn(R * C, 2), *dy = randn(R * C, 1), *dx0 = randn(R * C, 1);
        double *ry = dzeros(R * C), *rn = dzeros(R), *rdx = dcopy(dx0, R * C);
        for (int64_t r = 0; r < R; r++) {
            double s = 0, dot = 0;
            for (int64_t j = 0; j < C; j++) s += (double)x[r * C + j] * x[r * C + j];
            rn[r] = fmax(sqrt(s), 1e-12);
            for (int64_t j = 0; j < C; j++) ry[r * C + j] = x[r * C + j] / rn[r];
            for (int64_t j = 0; j < C; j++) dot += ry[r * C + j] * dy[r * C + j];
            for (int64_t j = 0; j < C; j++)
                rdx[r * C + j] += (dy[r * C + j] - ry[r * C + j] * dot) / rn[r];
        }
        float *d_x = dev(x, (size_t)(R * C) * 4), *d_y = dev(NULL, (size_t)(R * C) * 4);
        float *d_n = dev(NULL, (size_t)R * 4), *d_dy = dev(dy, (size_t)(R * C) * 4);
        float *d_dx = dev(dx0, (size_t)(R * C) * 4);
        die(ts_cuda_l2_normalize(G, d_x, d_y, d_n, R, C, &err), &err);
        die(ts_cuda_l2_normalize_backward(G, d_y, d_n, d_dy, d_dx, R, C, &err), &err);
        expect("l2 normalize 37x300", d_y, ry, R * C);
        expect("  the norms", d_n, rn, R);
        expect_added("l2 normalize backward (+=)", d_dx, dx0, rdx, R * C);
        free(x), free(dy), free(dx0), free(ry), free(rn), free(rdx);
    }
    {
        int64_t n = 4096;
        float ls = 2.3f, dls0 = 0.7f;
        float *x = randn(n, 1), *dy = randn(n, 1), *dx0 = randn(n, 1);
        double *ry = dzeros(n), *rdx = dcopy(dx0, n), rdls = dls0, dot = 0;
        for (int64_t i = 0; i < n; i++) {
            ry[i] = exp((double)ls) * x[i];
            rdx[i] += exp((double)ls) * dy[i];
            dot += (double)dy[i] * x[i];
        }
        rdls += exp((double)ls) * dot;
        float *d_x = dev(x, (size_t)n * 4), *d_ls = dev(&ls, 4), *d_y = dev(NULL, (size_t)n * 4);
        float *d_dy = dev(dy, (size_t)n * 4), *d_dx = dev(dx0, (size_t)n * 4);
        float *d_dls = dev(&dls0, 4);
        die(ts_cuda_exp_scale(G, d_x, d_ls, d_y, n, &err), &err);
        die(ts_cuda_exp_scale_backward(G, d_x, d_ls, d_dy, d_dx, d_dls, n, &err), &err);
        expect("exp(logit scale) x", d_y, ry, n);
        expect_added("  backward dx (+=)", d_dx, dx0, rdx, n);
        float dls_seed[1] = { dls0 };
        expect_added("  backward d logit scale (+=)", d_dls, dls_seed, &rdls, 1);
        free(x), free(dy), free(dx0), free(ry), free(rdx);
    }
    {
        int64_t R = 1000, C = 77;
        float *dy = randn(R * C, 1), *db0 = randn(C, 1);
        double *rdb = dcopy(db0, C);
        for (int64_t r = 0; r < R; r++)
            for (int64_t j = 0; j < C; j++) rdb[j] += dy[r * C + j];
        float *d_dy = dev(dy, (size_t)(R * C) * 4), *d_db = dev(db0, (size_t)C * 4);
        die(ts_cuda_bias_grad(G, d_dy, d_db, R, C, &err), &err);
        expect_added("bias grad 1000x77 (+=)", d_db, db0, rdb, C);
        free(dy), free(db0), free(rdb);
    }
    {
        int64_t n = 5000, R = 40, C = 125;
        float *x = randn(n, 2), *dy = randn(n, 1), *w = randn(C, 1), *b = randn(C, 1);
        double *rg = dzeros(n), *rdx = dzeros(n), *rln = dzeros(n), *rm = dzeros(R);
        double *rr = dzeros(R);
        for (int64_t i = 0; i < n; i++) {
            double v = x[i], cdf = 0.5 * erfc(-v / sqrt(2.0));
            rg[i] = v * cdf;
            rdx[i] = dy[i] * (cdf + v * exp(-0.5 * v * v) / sqrt(6.283185307179586));
        }
        for (int64_t r = 0; r < R; r++) {
            double mu = 0, var = 0;
            for (int64_t j = 0; j < C; j++) mu += x[r * C + j];
            mu /= C;
            for (int64_t j = 0; j < C; j++) var += (x[r * C + j] - mu) * (x[r * C + j] - mu);
            rm[r] = mu, rr[r] = 1.0 / sqrt(var / C + 1e-5);
            for (int64_t j = 0; j < C; j++)
                rln[r * C + j] = (x[r * C + j] - mu) * rr[r] * w[j] + b[j];
        }
        float *d_x = dev(x, (size_t)n * 4), *d_dy = dev(dy, (size_t)n * 4);
        float *d_w = dev(w, (size_t)C * 4), *d_b = dev(b, (size_t)C * 4);
        float *d_dx = dev(NULL, (size_t)n * 4), *d_m = dev(NULL, (size_t)R * 4);
        float *d_r = dev(NULL, (size_t)R * 4);
        uint16_t *d_g16 = dev(NULL, (size_t)n * 2), *d_dx16 = dev(NULL, (size_t)n * 2);
        uint16_t *d_ln16 = dev(NULL, (size_t)n * 2);
        die(ts_cuda_gelu_bf16(G, d_x, d_g16, n, &err), &err);
        die(ts_cuda_gelu_backward_set(G, d_x, d_dy, d_dx, d_dx16, n, &err), &err);
        die(ts_cuda_layernorm_bf16(G, d_x, d_w, d_b, d_ln16, d_m, d_r, R, C, 1e-5f, &err), &err);
        expect16("gelu, bf16 output", d_g16, rg, n);
        expect("gelu backward, overwriting", d_dx, rdx, n);
        expect16("  its bf16 copy", d_dx16, rdx, n);
        expect16("layernorm 40x125, bf16 output", d_ln16, rln, n);
        expect("  mean", d_m, rm, R);
        expect("  rstd", d_r, rr, R);
        free(x), free(dy), free(w), free(b), free(rg), free(rdx), free(rln), free(rm), free(rr);
    }
}

/* the column sums of a bf16 (R, C) gradient added to db (float32), against the sums of the
 * same bf16 values in double */
static void check_bias_grad_bf16(int64_t R, int64_t C) {
    ts_err err = { 0 };
    float *dy = randn(R * C, 1), *db0 = randn(C, 1);
    uint16_t *d_dy = operand(dy, R * C, 1);
    float *d_db = dev(db0, (size_t)C * 4);
    double *rdb = dcopy(db0, C);
    for (int64_t r = 0; r < R; r++)
        for (int64_t j = 0; j < C; j++) rdb[j] += dy[r * C + j];
    die(ts_cuda_bias_grad_bf16(G, d_dy, d_db, R, C, &err), &err);
    char what[96];
    snprintf(what, sizeof what, "bias grad, bf16 dy %lldx%lld (+=)", (long long)R, (long long)C);
    expect_added(what, d_db, db0, rdb, C);
    free(dy), free(db0), free(rdb);
}

/* GELU (exact) from bf16 to bf16 and its backward (overwriting, and in place: dx == dy) over n
 * values, 8 more after them that must be left as they were (the kernels may load 8 at a time
 * and finish with a scalar tail) */
static void check_gelu_bf16io(int64_t n) {
    ts_err err = { 0 };
    const int64_t m = n + 8;
    float *x = randn(n, 2), *dy = randn(m, 1), *seed = randn(m, 1);
    uint8_t *w = calloc((size_t)m, 1);
    double *ry = dcopy(seed, m), *rdx = dcopy(seed, m);
    for (int64_t i = 0; i < n; i++) dy[i] = bf16_value(dy[i]);
    for (int64_t i = n; i < m; i++) dy[i] = seed[i];
    uint16_t *d_x = operand(x, n, 1), *d_dy = operand(dy, m, 1), *d_inplace = operand(dy, m, 1);
    for (int64_t i = 0; i < n; i++) {
        w[i] = 1;
        ry[i] = x[i] * Phi(x[i]);
        rdx[i] = dy[i] * dgelu(x[i]);
    }
    uint16_t *d_y = out_buffer(seed, w, m, 1), *d_dx = out_buffer(seed, w, m, 1);
    die(ts_cuda_gelu_bf16io(G, d_x, d_y, n, &err), &err);
    die(ts_cuda_gelu_backward_bf16io(G, d_x, d_dy, d_dx, n, &err), &err);
    die(ts_cuda_gelu_backward_bf16io(G, d_x, d_inplace, d_inplace, n, &err), &err);
    char what[96];
    snprintf(what, sizeof what, "gelu bf16 -> bf16, n %lld", (long long)n);
    expect_out(what, d_y, 1, ry, w, NULL, m, ONE_ROUNDING);
    expect_out("  backward, bf16 (dx overwritten)", d_dx, 1, rdx, w, NULL, m, ONE_ROUNDING);
    expect_out("  backward in place (dx == dy)", d_inplace, 1, rdx, w, NULL, m, ONE_ROUNDING);
    free(x), free(dy), free(seed), free(w), free(ry), free(rdx);
}

static void check_adamw(void) {
    ts_err err = { 0 };
    const int64_t n = 100003;
    float *p = randn(n, 1), *gr = randn(n, 1), *m = randn(n, 0.1f), *v = randn(n, 0.1f);
    for (int64_t i = 0; i < n; i++) v[i] = v[i] * v[i];
    double *rp = dzeros(n), *rm = dzeros(n), *rv = dzeros(n);
    const float lr = 1e-3f, b1 = 0.9f, b2 = 0.95f, eps = 1e-8f, wd = 0.1f;
    const int64_t t = 7;
    double bc1 = 1 - pow(b1, t), bc2 = 1 - pow(b2, t);
    for (int64_t i = 0; i < n; i++) {
        rm[i] = b1 * (double)m[i] + (1 - (double)b1) * gr[i];
        rv[i] = b2 * (double)v[i] + (1 - (double)b2) * gr[i] * (double)gr[i];
        rp[i] = p[i] * (1 - (double)lr * wd) - lr / bc1 * rm[i] / (sqrt(rv[i] / bc2) + eps);
    }
    float *d_p = dev(p, (size_t)n * 4), *d_g = dev(gr, (size_t)n * 4);
    float *d_m = dev(m, (size_t)n * 4), *d_v = dev(v, (size_t)n * 4);
    die(ts_cuda_adamw(G, d_p, d_g, d_m, d_v, n, t, lr, b1, b2, eps, wd, &err), &err);
    expect("adamw (parameters)", d_p, rp, n);
    expect("  first moments", d_m, rm, n);
    expect("  second moments", d_v, rv, n);
    free(p), free(gr), free(m), free(v), free(rp), free(rm), free(rv);
}

/* ---- product rates ---- */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void time_matmul(int bf16, int64_t S) {
    ts_err err = { 0 };
    float *x = randn(S * S, 1);
    float *a = dev(x, (size_t)(S * S) * 4), *b = dev(x, (size_t)(S * S) * 4);
    float *y = dev(NULL, (size_t)(S * S) * 4);
    const void *pa = a, *pb = b;
    if (bf16) {
        uint16_t *ha = dev(NULL, (size_t)(S * S) * 2), *hb = dev(NULL, (size_t)(S * S) * 2);
        die(ts_cuda_to_bf16(G, a, ha, S * S, &err), &err);
        die(ts_cuda_to_bf16(G, b, hb, S * S, &err), &err);
        pa = ha;
        pb = hb;
    }
    double t[10];
    for (int r = -2; r < 10; r++) { /* two warm-up runs */
        die(ts_cuda_sync(G, &err), &err);
        double t0 = now_s();
        for (int k = 0; k < 5; k++)
            die(ts_cuda_matmul(G, bf16 ? TS_CUDA_BF16 : TS_CUDA_F32, pa, pb, NULL, y, S, S, S, 0,
                               0.0f, &err), &err);
        die(ts_cuda_sync(G, &err), &err);
        if (r >= 0) t[r] = (now_s() - t0) / 5;
    }
    qsort(t, 10, sizeof *t, cmp_double);
    printf("  matmul %s %lld^3: median %.3f ms, %.1f TFLOP/s\n", bf16 ? "bf16" : "f32 ",
           (long long)S, 1e3 * t[5], 2.0 * S * S * S / t[5] / 1e12);
    free(x);
}

/* attention forward and backward at one shape: median of 10 after two warm-ups */
/* The medians of 10 forward (tf) and backward (tb) times of an attention as one line that
 * bench/gpu_check.sh picks up: "  LABEL BxHxTxD[ causal]: forward ...", with the FLOP count
 * 4 B H T^2 D forward and 2.5 times that backward */
static void print_attention_times(const char *label, int64_t B, int64_t H, int64_t T, int64_t D,
                                  int causal, double *tf, double *tb) {
    qsort(tf, 10, sizeof *tf, cmp_double);
    qsort(tb, 10, sizeof *tb, cmp_double);
    double fl = 4.0 * B * H * T * T * D;
    printf("  %s %lldx%lldx%lldx%lld%s: forward %.3f ms (%.1f TFLOP/s), backward %.3f ms "
           "(%.1f TFLOP/s)\n", label, (long long)B, (long long)H, (long long)T, (long long)D,
           causal ? " causal" : "", 1e3 * tf[5], fl / tf[5] / 1e12, 1e3 * tb[5],
           2.5 * fl / tb[5] / 1e12);
}

static void time_attention(int64_t B, int64_t H, int64_t T, int64_t D, int causal, int flash) {
    ts_err err = { 0 };
    int64_t n = B * H * T * D;
    float *x = randn(n, 1);
    float *q = dev(x, (size_t)n * 4), *k = dev(x, (size_t)n * 4), *v = dev(x, (size_t)n * 4);
    float *y = dev(NULL, (size_t)n * 4), *lse = dev(NULL, (size_t)(B * H * T) * 4);
    float *dq = dev(x, (size_t)n * 4), *dk = dev(x, (size_t)n * 4), *dv = dev(x, (size_t)n * 4);
    uint16_t *bq = flash ? bf16_copy(x, n) : NULL;
    double tf[10], tb[10];
    for (int r = -2; r < 10; r++) {
        die(ts_cuda_sync(G, &err), &err);
        double t0 = now_s();
        if (flash)
            die(ts_cuda_flash_attention(G, bq, bq, bq, NULL, y, lse, B, H, T, T, D, causal, 0.0f,
                                        &err), &err);
        else
            die(ts_cuda_attention(G, q, k, v, NULL, y, lse, B, H, T, T, D, causal, 0.0f, &err),
                &err);
        die(ts_cuda_sync(G, &err), &err);
        double t1 = now_s();
        if (flash)
            die(ts_cuda_flash_attention_backward(G, bq, bq, bq, NULL, y, lse, bq, dq, dk, dv, B,
                                                 H, T, T, D, causal, 0.0f, &err), &err);
        else
            die(ts_cuda_attention_backward(G, q, k, v, NULL, y, lse, y, dq, dk, dv, B, H, T, T,
                                           D, causal, 0.0f, &err), &err);
        die(ts_cuda_sync(G, &err), &err);
        if (r >= 0) tf[r] = t1 - t0, tb[r] = now_s() - t1;
    }
    print_attention_times(flash ? "flash attention" : "attention", B, H, T, D, causal, tf, tb);
    free(x);
}

/* The median time of 10 runs of a call (after 2 warm-ups), in out: seconds */
#define TIME_CALL(out, call)                                                                 \
    do {                                                                                     \
        double t_[10];                                                                       \
        for (int r_ = -2; r_ < 10; r_++) {                                                   \
            die(ts_cuda_sync(G, &err), &err);                                                \
            double t0_ = now_s();                                                            \
            die((call), &err);                                                               \
            die(ts_cuda_sync(G, &err), &err);                                                \
            if (r_ >= 0) t_[r_] = now_s() - t0_;                                             \
        }                                                                                    \
        qsort(t_, 10, sizeof *t_, cmp_double);                                               \
        (out) = t_[5];                                                                       \
    } while (0)

static void print_row_time(const char *what, double s, double bytes) {
    printf("  row kernel %-44s %.3f ms, %.0f GB/s of its compulsory traffic\n", what, 1e3 * s,
           bytes / s / 1e9);
}

/* The row and elementwise kernels at the ViT-B/16 CLIP step's shapes (batch 256: 50432 rows of
 * 768, the MLP's 3072, 3072 score rows of 197 per sequence at a pitch of 200), each beside the
 * bytes it must move at least: where the step's time outside the products goes */
static void time_row_kernels(void) {
    ts_err err = { 0 };
    const int64_t R = 256 * 197, C = 768, C4 = 4 * C, S = 256 * 12 * 197, T = 197, ld = 200;
    double t;
    float *x = dev(NULL, (size_t)(R * C) * 4), *dy = dev(NULL, (size_t)(R * C) * 4);
    float *dx = dev(NULL, (size_t)(R * C) * 4), *w = dev(NULL, (size_t)C * 4);
    float *b = dev(NULL, (size_t)C * 4), *dw = dev(NULL, (size_t)C * 4);
    float *db = dev(NULL, (size_t)C * 4), *mean = dev(NULL, (size_t)R * 4);
    float *rstd = dev(NULL, (size_t)R * 4);
    uint16_t *y16 = dev(NULL, (size_t)(R * C) * 2), *dx16 = dev(NULL, (size_t)(R * C) * 2);
    die(ts_cuda_zero(G, x, (size_t)(R * C) * 4, &err), &err);
    die(ts_cuda_zero(G, dy, (size_t)(R * C) * 4, &err), &err);
    die(ts_cuda_zero(G, dx, (size_t)(R * C) * 4, &err), &err);
    die(ts_cuda_fill(G, w, C, 1.0f, &err), &err);
    die(ts_cuda_zero(G, b, (size_t)C * 4, &err), &err);
    double rc = (double)R * C;
    TIME_CALL(t, ts_cuda_layernorm_bf16(G, x, w, b, y16, mean, rstd, R, C, 1e-5f, &err));
    print_row_time("layernorm 50432x768, bf16 out", t, rc * 6);
    TIME_CALL(t, ts_cuda_layernorm_backward_bf16(G, x, w, mean, rstd, dy, dx, dx16, dw, db, R, C,
                                                 &err));
    print_row_time("layernorm backward, dx16, dw, db", t, rc * 18);
    TIME_CALL(t, ts_cuda_layernorm_backward_bf16(G, x, w, mean, rstd, dy, dx, dx16, NULL, NULL,
                                                 R, C, &err));
    print_row_time("layernorm backward, dx and dx16 alone", t, rc * 18);
    TIME_CALL(t, ts_cuda_layernorm_backward_bf16(G, x, w, mean, rstd, dy, NULL, NULL, dw, db, R,
                                                 C, &err));
    print_row_time("layernorm backward, dw and db alone", t, rc * 8);
    TIME_CALL(t, ts_cuda_bias_grad(G, dy, db, R, C, &err));
    print_row_time("bias grad 50432x768", t, rc * 4);
    ts_cuda_reset(G);
    uint16_t *h16 = dev(NULL, (size_t)(R * C4) * 2), *g16 = dev(NULL, (size_t)(R * C4) * 2);
    uint16_t *d16 = dev(NULL, (size_t)(R * C4) * 2);
    float *db4 = dev(NULL, (size_t)C4 * 4);
    die(ts_cuda_fill_bytes(G, h16, 0, (size_t)(R * C4) * 2, &err), &err);
    die(ts_cuda_fill_bytes(G, d16, 0, (size_t)(R * C4) * 2, &err), &err);
    double r4 = (double)R * C4;
    TIME_CALL(t, ts_cuda_gelu_bf16io(G, h16, g16, R * C4, &err));
    print_row_time("gelu 50432x3072, bf16 in and out", t, r4 * 4);
    TIME_CALL(t, ts_cuda_gelu_backward_bf16io(G, h16, d16, g16, R * C4, &err));
    print_row_time("gelu backward, bf16", t, r4 * 6);
    TIME_CALL(t, ts_cuda_bias_grad_bf16(G, d16, db4, R, C4, &err));
    print_row_time("bias grad 50432x3072, bf16 dy", t, r4 * 2);
    ts_cuda_reset(G);
    float *sc = dev(NULL, (size_t)(S * ld) * 4), *pf = dev(NULL, (size_t)(S * ld) * 4);
    uint16_t *p16 = dev(NULL, (size_t)(S * ld) * 2), *ds16 = dev(NULL, (size_t)(S * ld) * 2);
    die(ts_cuda_zero(G, sc, (size_t)(S * ld) * 4, &err), &err);
    double sl = (double)S * ld;
    TIME_CALL(t, ts_cuda_attn_softmax_bf16(G, sc, pf, p16, S, T, ld, 0.125f, 0, &err));
    print_row_time("attention softmax 605184x197 (pitch 200)", t, sl * 10);
    TIME_CALL(t, ts_cuda_attn_softmax_backward_bf16(G, pf, sc, ds16, S, T, ld, 0.125f, &err));
    print_row_time("attention softmax backward, bf16 ds", t, sl * 10);
}
#undef TIME_CALL

/* the packed attention (attn_mma.cu) forward and backward at one shape, heads of 64, as
 * time_attention (median of 10 after two warm-ups, its FLOP count: 4 B H T^2 D forward, 2.5
 * times that backward); the batch repeats one sequence's random rows */
static void time_attention_packed(int64_t B, int64_t H, int64_t T, int causal) {
    ts_err err = { 0 };
    const int64_t D = 64;
    int64_t W = H * D, n = B * T * 3 * W, one = T * 3 * W;
    float *x = randn(one, 1);
    uint16_t *h = malloc((size_t)n * 2);
    for (int64_t i = 0; i < n; i++) h[i] = bf16_bits(x[i % one]);
    uint16_t *qkv = dev(h, (size_t)n * 2), *dy = dev(h, (size_t)(B * T * W) * 2);
    uint16_t *y = dev(NULL, (size_t)(B * T * W) * 2), *dqkv = dev(NULL, (size_t)n * 2);
    float *lse = dev(NULL, (size_t)(B * H * T) * 4), *acc = dev(NULL, (size_t)(B * T * W) * 4);
    float *delta = dev(NULL, (size_t)(B * H * T) * 4);
    double tf[10], tb[10];
    for (int r = -2; r < 10; r++) {
        die(ts_cuda_sync(G, &err), &err);
        double t0 = now_s();
        die(ts_cuda_attention_packed(G, qkv, y, lse, B, T, H, causal, 0.0f, &err), &err);
        die(ts_cuda_sync(G, &err), &err);
        double t1 = now_s();
        die(ts_cuda_attention_packed_backward(G, qkv, y, lse, dy, dqkv, acc, delta, B, T, H,
                                              causal, 0.0f, &err), &err);
        die(ts_cuda_sync(G, &err), &err);
        if (r >= 0) tf[r] = t1 - t0, tb[r] = now_s() - t1;
    }
    print_attention_times("attention_packed", B, H, T, D, causal, tf, tb);
    free(x), free(h);
}

int main(int argc, char **argv) {
    int timing = !(argc > 1 && !strcmp(argv[1], "--no-timing"));
    ts_err err = { 0 };
    die(ts_cuda_open(&G, 0, (size_t)3 << 30, &err), &err);
    printf("gpu_parity: %s\n", ts_cuda_describe(G));
    for (int flags = 0; flags < 4; flags++) check_matmul(129, 67, 300, flags, 0, 0.0f, 0);
    check_matmul(256, 384, 512, 0, 1, 0.0f, 0);
    check_matmul(100, 200, 64, TS_TRANS_B, 1, 1.0f, 0);
    check_matmul(512, 768, 1024, 0, 0, 0.0f, 1);
    check_matmul(197, 2304, 768, TS_TRANS_B, 1, 0.0f, 1);
    check_matmul_ex(197, 2304, 768, TS_TRANS_B, 1, 1, 1, 0, 0.0f);
    check_matmul_ex(129, 67, 300, TS_TRANS_B, 1, 1, 1, 0, 0.0f);
    check_matmul_ex(129, 67, 300, TS_TRANS_A, 1, 1, 0, 0, 0.0f);
    check_matmul_ex(100, 200, 64, TS_TRANS_B, 0, 0, 1, 1, 0.0f);
    check_matmul_ex(100, 200, 64, TS_TRANS_B, 1, 0, 1, 1, 0.0f);
    check_matmul_ex(129, 67, 300, 0, 0, 0, 0, 0, 0.125f);
    check_matmul_ex(129, 67, 300, 0, 1, 0, 0, 0, 0.125f);
    ts_cuda_reset(G);
    for (int bf16 = 0; bf16 < 2; bf16++) {
        check_head_products(3, 2, 13, 8, bf16);
        check_head_products(3, 2, 77, 64, bf16);
    }
    ts_cuda_reset(G);
    check_elementwise();
    check_activations();
    ts_cuda_reset(G);
    check_layernorm(1000, 768, 0);
    check_layernorm(7, 33, 0);
    check_layernorm(1000, 768, 1);
    check_layernorm(7, 5001, 1);
    check_layernorm(7, 5001, 2);
    check_layernorm_plain(300, 100);
    for (int lg = 0; lg < 2; lg++) {
        check_softmax(4096, 197, lg);
        check_softmax(3, 5000, lg);
    }
    ts_cuda_reset(G);
    check_cross_entropy(777, 1000, 0.0f);
    check_cross_entropy(64, 49408, 0.1f);
    ts_cuda_reset(G);
    check_adamw();
    ts_cuda_reset(G);
    check_clip_kernels();
    check_bias_grad_bf16(5000, 768);
    check_bias_grad_bf16(5000, 129);
    check_gelu_bf16io(3 * 1000 * 8);
    check_gelu_bf16io(1001);
    check_gelu_bf16io(7);
    ts_cuda_reset(G);
    check_attention(2, 3, 37, 37, 64, 1, 1, 0, 0);
    check_attention(2, 2, 20, 50, 32, 0, 1, 0, 0);
    check_attention(3, 2, 300, 300, 160, 1, 1, 1, 0);
    ts_cuda_reset(G);
    check_attention(4, 12, 197, 197, 64, 0, 0, 0, 0);
    ts_cuda_reset(G);
    check_attention(2, 3, 37, 37, 64, 1, 1, 0, 1);
    check_attention(2, 2, 20, 150, 64, 0, 1, 1, 1);
    check_attention(3, 2, 300, 300, 64, 1, 1, 1, 1);
    ts_cuda_reset(G);
    check_attention(4, 12, 197, 197, 64, 0, 0, 0, 1);
    check_attention(4, 8, 77, 77, 64, 1, 0, 0, 1);
    ts_cuda_reset(G);
    check_attention_packed(2, 3, 197, 0, 0.0f);
    check_attention_packed(2, 2, 77, 1, 0.11f);
    check_attention_packed(1, 1, 13, 1, 0.0f);
    check_attention_packed(1, 2, 64, 0, 0.11f);
    check_attention_packed(3, 1, 130, 1, 0.0f);
    ts_cuda_reset(G);
    if (timing) {
        time_matmul(0, 8192);
        ts_cuda_reset(G);
        time_matmul(1, 8192);
        ts_cuda_reset(G);
        time_attention(256, 12, 197, 64, 0, 0);
        ts_cuda_reset(G);
        time_attention(256, 8, 77, 64, 1, 0);
        ts_cuda_reset(G);
        time_attention(256, 12, 197, 64, 0, 1);
        ts_cuda_reset(G);
        time_attention(256, 8, 77, 64, 1, 1);
        ts_cuda_reset(G);
        time_attention_packed(256, 12, 197, 0);
        ts_cuda_reset(G);
        time_attention_packed(256, 8, 77, 1);
        ts_cuda_reset(G);
        time_row_kernels();
    }
    printf("gpu_parity: %d failed\n", failures);
    ts_cuda_close(G);
    return failures;
}
