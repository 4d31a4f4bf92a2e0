/* transformer_block.c: times one pre-norm transformer block of tessera, forward + backward.
 *
 * The block is open_clip's ResidualAttentionBlock as ts_nn_block_forward builds it (ln_1 ->
 * MHA with the packed in_proj -> residual, ln_2 -> MLP c_fc, GELU, c_proj -> residual), by
 * default ViT-S-like: width 384, 6 heads, 197 tokens, batch 32. One step is: reset the step
 * arena, zero the parameter grads, forward, and backward from y with a fixed random upstream
 * gradient r (the gradient of loss = sum(y * r)), which includes every parameter gradient and
 * the input's gradient. The program also measures dnnl_sgemm on this machine (a large square
 * product and each of the block's linear-layer shapes) so that the driver can state tessera's
 * speed as a fraction of what the vendor gemm reaches, and optionally times every op
 * (--profile) to show where the step goes. Each result is printed as one JSON object per line
 * on stdout; bench/transformer_block.py turns them into the table against PyTorch.
 *
 * What it deliberately is not: a test. Nothing is asserted, and no timing here gates anything.
 * It also does not time the optimizer step (the PyTorch side does not either).
 *
 * The per-op profile wraps the public op functions with the linker's --wrap (see
 * bench/CMakeLists.txt), so it follows whatever ops core/nn.c calls without a profiling build
 * of the library; the backward is the library's own walk, timed node by node through its hook.
 *
 * Shapes: B batch, T tokens, C width, H heads, D = C / H, M = B * T rows of every linear layer.
 */
#include "tessera-impl.h"
#include "prof.h"

#include <math.h>
#include <omp.h>
#include <oneapi/dnnl/dnnl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct bench_cfg {
    int64_t B, T, C, H;
    float mlp_ratio;
    int threads, warmup, reps, profile, gemm, f32, bf16;
} bench_cfg;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* ---- resident memory, for a check of the arena numbers against what the OS saw ---- */

/* A field of /proc/self/status in bytes ("VmRSS", "VmHWM"), or -1. */
static long long proc_status_bytes(const char *field) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    long long kb = -1;
    size_t n = strlen(field);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, field, n) == 0 && line[n] == ':') {
            kb = atoll(line + n + 1);
            break;
        }
    fclose(f);
    return kb < 0 ? -1 : kb * 1024;
}

/* Reset the peak-RSS counter (VmHWM) to the current RSS; 0 on success. */
static int reset_peak_rss(void) {
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (!f) return -1;
    int ok = fputs("5", f) >= 0;
    return (fclose(f) == 0 && ok) ? 0 : -1;
}

/* ---- the per-op profile ---- */

static struct {
    int on, depth;
    bench_prof t;
} prof;

static void shape_label(char *buf, size_t n, const char *phase, const char *op,
                        const ts_tensor *in0, const ts_tensor *in1, const ts_tensor *out) {
    char s0[64] = "", s1[64] = "", so[64] = "";
    if (in0) ts_shape_str(in0, s0, sizeof s0);
    if (in1) ts_shape_str(in1, s1, sizeof s1);
    if (out) ts_shape_str(out, so, sizeof so);
    snprintf(buf, n, "%s %s %s%s%s -> %s", phase, op, s0, in1 ? " x " : "", s1, so);
}

/* Forward wrappers: time the outermost op call only (an op calling another wrapped op counts
 * once). */
#define PROF_WRAP(ret_call, label_in1)                                                       \
    double t0_ = 0;                                                                          \
    int top_ = prof.on && prof.depth == 0;                                                   \
    prof.depth++;                                                                            \
    if (top_) t0_ = now_s();                                                                 \
    ts_tensor *y_ = ret_call;                                                                \
    if (top_) {                                                                              \
        double dt_ = now_s() - t0_;                                                          \
        char lab_[112];                                                                      \
        shape_label(lab_, sizeof lab_, "fwd", name_, a_, label_in1, y_);                     \
        bench_prof_add(&prof.t, lab_, dt_);                                                      \
    }                                                                                        \
    prof.depth--;                                                                            \
    return y_;

ts_tensor *__real_ts_linear(ts_ctx *, const ts_tensor *, const ts_tensor *, const ts_tensor *);
ts_tensor *__wrap_ts_linear(ts_ctx *c, const ts_tensor *x, const ts_tensor *w,
                            const ts_tensor *b);
ts_tensor *__wrap_ts_linear(ts_ctx *c, const ts_tensor *x, const ts_tensor *w,
                            const ts_tensor *b) {
    const char *name_ = "linear";
    const ts_tensor *a_ = x;
    PROF_WRAP(__real_ts_linear(c, x, w, b), w)
}

ts_tensor *__real_ts_matmul(ts_ctx *, const ts_tensor *, const ts_tensor *, int);
ts_tensor *__wrap_ts_matmul(ts_ctx *c, const ts_tensor *a, const ts_tensor *b, int flags);
ts_tensor *__wrap_ts_matmul(ts_ctx *c, const ts_tensor *a, const ts_tensor *b, int flags) {
    const char *name_ = "matmul";
    const ts_tensor *a_ = a;
    PROF_WRAP(__real_ts_matmul(c, a, b, flags), b)
}

ts_tensor *__real_ts_layernorm(ts_ctx *, const ts_tensor *, const ts_tensor *,
                               const ts_tensor *, float);
ts_tensor *__wrap_ts_layernorm(ts_ctx *c, const ts_tensor *x, const ts_tensor *w,
                               const ts_tensor *b, float eps);
ts_tensor *__wrap_ts_layernorm(ts_ctx *c, const ts_tensor *x, const ts_tensor *w,
                               const ts_tensor *b, float eps) {
    const char *name_ = "layernorm";
    const ts_tensor *a_ = x;
    PROF_WRAP(__real_ts_layernorm(c, x, w, b, eps), NULL)
}

ts_tensor *__real_ts_bias_gelu(ts_ctx *, const ts_tensor *, const ts_tensor *);
ts_tensor *__wrap_ts_bias_gelu(ts_ctx *c, const ts_tensor *x, const ts_tensor *b);
ts_tensor *__wrap_ts_bias_gelu(ts_ctx *c, const ts_tensor *x, const ts_tensor *b) {
    const char *name_ = "bias_gelu";
    const ts_tensor *a_ = x;
    PROF_WRAP(__real_ts_bias_gelu(c, x, b), NULL)
}

ts_tensor *__real_ts_add(ts_ctx *, const ts_tensor *, const ts_tensor *);
ts_tensor *__wrap_ts_add(ts_ctx *c, const ts_tensor *a, const ts_tensor *b);
ts_tensor *__wrap_ts_add(ts_ctx *c, const ts_tensor *a, const ts_tensor *b) {
    const char *name_ = "add";
    const ts_tensor *a_ = a;
    PROF_WRAP(__real_ts_add(c, a, b), NULL)
}

ts_tensor *__real_ts_permute(ts_ctx *, const ts_tensor *, const int *);
ts_tensor *__wrap_ts_permute(ts_ctx *c, const ts_tensor *a, const int *perm);
ts_tensor *__wrap_ts_permute(ts_ctx *c, const ts_tensor *a, const int *perm) {
    const char *name_ = "permute";
    const ts_tensor *a_ = a;
    PROF_WRAP(__real_ts_permute(c, a, perm), NULL)
}

ts_tensor *__real_ts_slice(ts_ctx *, const ts_tensor *, int, int64_t, int64_t);
ts_tensor *__wrap_ts_slice(ts_ctx *c, const ts_tensor *a, int dim, int64_t s, int64_t e);
ts_tensor *__wrap_ts_slice(ts_ctx *c, const ts_tensor *a, int dim, int64_t s, int64_t e) {
    const char *name_ = "slice";
    const ts_tensor *a_ = a;
    PROF_WRAP(__real_ts_slice(c, a, dim, s, e), NULL)
}

ts_tensor *__real_ts_reshape(ts_ctx *, const ts_tensor *, int, const int64_t *);
ts_tensor *__wrap_ts_reshape(ts_ctx *c, const ts_tensor *a, int ndim, const int64_t *shape);
ts_tensor *__wrap_ts_reshape(ts_ctx *c, const ts_tensor *a, int ndim, const int64_t *shape) {
    const char *name_ = "reshape";
    const ts_tensor *a_ = a;
    PROF_WRAP(__real_ts_reshape(c, a, ndim, shape), NULL)
}

ts_tensor *__real_ts_attention(ts_ctx *, const ts_tensor *, const ts_tensor *,
                               const ts_tensor *, int, const ts_tensor *, float);
ts_tensor *__wrap_ts_attention(ts_ctx *c, const ts_tensor *q, const ts_tensor *k,
                               const ts_tensor *v, int causal, const ts_tensor *pad, float s);
ts_tensor *__wrap_ts_attention(ts_ctx *c, const ts_tensor *q, const ts_tensor *k,
                               const ts_tensor *v, int causal, const ts_tensor *pad, float s) {
    const char *name_ = "attention";
    const ts_tensor *a_ = q;
    PROF_WRAP(__real_ts_attention(c, q, k, v, causal, pad, s), k)
}

/* Weak, so that the program also links against a library from before this internal op. */
ts_tensor *__real_ts__attention_packed(ts_ctx *, const ts_tensor *, int64_t, int,
                                       const ts_tensor *, float) __attribute__((weak));
ts_tensor *__wrap_ts__attention_packed(ts_ctx *c, const ts_tensor *qkv, int64_t heads,
                                       int causal, const ts_tensor *pad, float s);
ts_tensor *__wrap_ts__attention_packed(ts_ctx *c, const ts_tensor *qkv, int64_t heads,
                                       int causal, const ts_tensor *pad, float s) {
    const char *name_ = "attention";
    const ts_tensor *a_ = qkv;
    PROF_WRAP(__real_ts__attention_packed(c, qkv, heads, causal, pad, s), NULL)
}

/* ts_backward_with (the library's own walk, recycling and sharing included), timing each node
 * through the walk's hook. */
static double prof_t0;

static void prof_hook(const ts_node *n, int done, void *user) {
    (void)user;
    if (!done) {
        prof_t0 = now_s();
        return;
    }
    double dt = now_s() - prof_t0;
    char lab[112];
    shape_label(lab, sizeof lab, "bwd", ts_op_name(n->op), n->in[0],
                n->op == TS_OP_MATMUL || n->op == TS_OP_ATTENTION ? n->in[1] : NULL, n->out);
    bench_prof_add(&prof.t, lab, dt);
}

static void backward_profiled(ts_ctx *c, ts_tensor *y, const ts_tensor *dy) {
    ts__backward_with_hook(c, y, dy, prof_hook, NULL);
}

/* ---- dnnl_sgemm on this machine ---- */

static void fill_rand(float *p, int64_t n, ts_rng *r, float scale) {
    for (int64_t i = 0; i < n; i++) p[i] = scale * (2.0f * ts_rng_uniform(r) - 1.0f);
}

/* Best seconds of reps row-major C = op(A) op(B) products of this shape. */
static double time_sgemm(int ta, int tb, int64_t M, int64_t N, int64_t K, int reps) {
    float *A = aligned_alloc(64, (size_t)(M * K) * sizeof(float) + 64);
    float *Bm = aligned_alloc(64, (size_t)(K * N) * sizeof(float) + 64);
    float *Cm = aligned_alloc(64, (size_t)(M * N) * sizeof(float) + 64);
    TS_CHECK(A && Bm && Cm, "out of memory");
    ts_rng r;
    ts_rng_seed(&r, 7);
    fill_rand(A, M * K, &r, 1.0f);
    fill_rand(Bm, K * N, &r, 1.0f);
    memset(Cm, 0, (size_t)(M * N) * sizeof(float));
    double best = 1e30;
    for (int i = 0; i < reps + 1; i++) {
        double t0 = now_s();
        dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', M, N, K, 1.0f, A, ta ? M : K, Bm, tb ? K : N,
                   0.0f, Cm, N);
        double dt = now_s() - t0;
        if (i > 0 && dt < best) best = dt; /* the first call builds the kernels */
    }
    free(A);
    free(Bm);
    free(Cm);
    return best;
}

static void measure_sgemm(const bench_cfg *g) {
    const int64_t S = 2048;
    double t = time_sgemm(0, 0, S, S, S, 5);
    printf("{\"kind\":\"sgemm_peak\",\"M\":%lld,\"N\":%lld,\"K\":%lld,\"ms\":%.4f,"
           "\"gflops\":%.2f}\n",
           (long long)S, (long long)S, (long long)S, 1e3 * t, 2.0 * S * S * S / t * 1e-9);
    /* The block's linear layers, as op_matmul.c calls dnnl_sgemm: forward y = x w^T,
     * backward dx = dy w and dw = dy^T x. */
    const int64_t M = g->B * g->T, C = g->C, F = (int64_t)(g->C * g->mlp_ratio);
    struct { const char *name; int64_t out, in; } lin[4] = {
        { "attn.in_proj", 3 * C, C }, { "attn.out_proj", C, C },
        { "mlp.c_fc", F, C }, { "mlp.c_proj", C, F } };
    double tot_t = 0, tot_f = 0;
    for (int i = 0; i < 4; i++) {
        struct { const char *what; int ta, tb; int64_t m, n, k; } s[3] = {
            { "fwd", 0, 1, M, lin[i].out, lin[i].in },
            { "bwd_dx", 0, 0, M, lin[i].in, lin[i].out },
            { "bwd_dw", 1, 0, lin[i].out, lin[i].in, M } };
        for (int j = 0; j < 3; j++) {
            double ts_ = time_sgemm(s[j].ta, s[j].tb, s[j].m, s[j].n, s[j].k, 3);
            double fl = 2.0 * s[j].m * s[j].n * s[j].k;
            tot_t += ts_;
            tot_f += fl;
            printf("{\"kind\":\"sgemm_shape\",\"layer\":\"%s\",\"pass\":\"%s\",\"M\":%lld,"
                   "\"N\":%lld,\"K\":%lld,\"ms\":%.4f,\"gflops\":%.2f}\n",
                   lin[i].name, s[j].what, (long long)s[j].m, (long long)s[j].n,
                   (long long)s[j].k, 1e3 * ts_, fl / ts_ * 1e-9);
        }
    }
    printf("{\"kind\":\"sgemm_block\",\"ms\":%.4f,\"gflops\":%.2f}\n", 1e3 * tot_t,
           tot_f / tot_t * 1e-9);
    fflush(stdout);
}

/* ---- the block ---- */

/* FLOPs of one step, counted analytically: 2*M*N*K per product forward, twice that backward;
 * attention's two products per head (q k^T and p v) likewise. */
static void step_flops(const bench_cfg *g, double *lin, double *attn) {
    double M = (double)(g->B * g->T), C = (double)g->C, F = (double)(int64_t)(g->C * g->mlp_ratio);
    double fwd_lin = 2.0 * M * (3 * C * C + C * C + F * C + C * F);
    double fwd_attn = 2.0 * 2.0 * (double)g->B * (double)g->T * (double)g->T * C;
    *lin = 3.0 * fwd_lin;
    *attn = 3.0 * fwd_attn;
}

typedef struct block_run {
    ts_params *p;
    ts_nn_block blk;
    ts_ctx *c;
    ts_tensor x, r; /* host-owned input (B, T, C) and upstream gradient (B, T, C) */
} block_run;

static void block_setup(block_run *br, const bench_cfg *g, ts_precision prec) {
    ts_err err;
    br->p = ts_params_new();
    ts_nn_block_init(&br->blk, br->p, "transformer.resblocks.0", (int)g->C, (int)g->H,
                     g->mlp_ratio, TS_ACT_GELU, 1e-5f, 0.0f);
    TS_CHECK(ts_params_finalize(br->p, 1234, &err) == TS_OK, "params: %s", err.msg);
    br->c = ts_ctx_new(TS_CPU, 1 << 20, 42);
    br->c->nthreads = g->threads;
    br->c->precision = prec;
    int64_t shape[3] = { g->B, g->T, g->C }, n = g->B * g->T * g->C;
    ts_tensor *ts[2] = { &br->x, &br->r };
    ts_rng rng;
    ts_rng_seed(&rng, 99);
    for (int i = 0; i < 2; i++) {
        memset(ts[i], 0, sizeof *ts[i]);
        ts[i]->dtype = TS_F32;
        ts[i]->device = TS_CPU;
        ts[i]->ndim = 3;
        memcpy(ts[i]->shape, shape, sizeof shape);
        ts[i]->numel = n;
        ts[i]->data = aligned_alloc(64, (size_t)n * sizeof(float));
        TS_CHECK(ts[i]->data != NULL, "out of memory");
        fill_rand(ts_f32(ts[i]), n, &rng, 1.0f);
    }
    br->x.requires_grad = 1;
}

static void block_free(block_run *br) {
    free(br->x.data);
    free(br->r.data);
    ts_ctx_free(br->c);
    ts_params_free(br->p);
}

/* One training step of the block without the optimizer. */
static void block_step(block_run *br, int profiled) {
    ts_ctx *c = br->c;
    ts_ctx_reset(c);
    ts_params_zero_grad(br->p);
    br->x.grad = NULL; /* its gradient lived in the step arena that was just reset */
    br->x.node = NULL;
    ts_tensor *y = ts_nn_block_forward(c, &br->blk, &br->x, 0, NULL);
    if (profiled)
        backward_profiled(c, y, &br->r);
    else
        ts_backward_with(c, y, &br->r);
}

static void run_block(const bench_cfg *g, ts_precision prec) {
    const char *pname = prec == TS_PREC_BF16 ? "bf16" : "f32";
    block_run br;
    block_setup(&br, g, prec);

    /* Memory: the first step grows the arena; resident growth over that step is the OS's view. */
    long long rss0 = proc_status_bytes("VmRSS");
    int hwm_ok = reset_peak_rss() == 0;
    block_step(&br, 0);
    long long hwm = proc_status_bytes("VmHWM");
    long long rss_growth = (hwm_ok && rss0 >= 0 && hwm >= 0) ? hwm - rss0 : -1;

    for (int i = 0; i < g->warmup; i++) block_step(&br, 0);
    double *t = malloc((size_t)g->reps * sizeof *t);
    TS_CHECK(t != NULL, "out of memory");
    for (int i = 0; i < g->reps; i++) {
        double t0 = now_s();
        block_step(&br, 0);
        t[i] = now_s() - t0;
    }
    qsort(t, (size_t)g->reps, sizeof *t, cmp_double);
    double med = g->reps % 2 ? t[g->reps / 2] : 0.5 * (t[g->reps / 2 - 1] + t[g->reps / 2]);
    double lin, attn;
    step_flops(g, &lin, &attn);
    /* A checksum of the gradients so that a broken build shows up as a changed number. */
    double gsum = 0;
    for (int i = 0; i < ts_params_count(br.p); i++) {
        ts_tensor *w = ts_params_get(br.p, i);
        if (w->grad)
            for (int64_t j = 0; j < w->numel; j++) gsum += fabs(ts_f32(w->grad)[j]);
    }
    printf("{\"kind\":\"tessera\",\"prec\":\"%s\",\"reps\":%d,\"median_ms\":%.3f,\"min_ms\":%.3f,"
           "\"max_ms\":%.3f,\"flops_linear\":%.6e,\"flops_attention\":%.6e,"
           "\"arena_high_water\":%zu,\"param_arena\":%zu,\"rss_growth\":%lld,"
           "\"grad_abs_sum\":%.6e}\n",
           pname, g->reps, 1e3 * med, 1e3 * t[0], 1e3 * t[g->reps - 1], lin, attn,
           ts_arena_high_water(br.c->step), ts_params_bytes(br.p), rss_growth, gsum);
    fflush(stdout);
    free(t);

    if (g->profile) {
        memset(&prof, 0, sizeof prof);
        int n = g->reps < 3 ? g->reps : 3;
        double tot = 0;
        for (int i = 0; i < n; i++) {
            prof.on = 1;
            double t0 = now_s();
            block_step(&br, 1);
            tot += now_s() - t0;
            prof.on = 0;
        }
        for (int i = 0; i < prof.t.nrows; i++)
            printf("{\"kind\":\"profile\",\"prec\":\"%s\",\"op\":\"%s\",\"ms\":%.3f,"
                   "\"calls\":%.2f}\n",
                   pname, prof.t.rows[i].label, 1e3 * prof.t.rows[i].s / n,
                   (double)prof.t.rows[i].n / n);
        printf("{\"kind\":\"profile_total\",\"prec\":\"%s\",\"ms\":%.3f}\n", pname, 1e3 * tot / n);
        fflush(stdout);
    }
    block_free(&br);
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: transformer_block [--batch N] [--tokens N] [--width N] [--heads N]\n"
            "                         [--mlp-ratio R] [--threads N] [--warmup N] [--reps N]\n"
            "                         [--prec f32|bf16|both] [--profile] [--no-sgemm]\n"
            "Times one pre-norm transformer block (forward + backward) and dnnl_sgemm;\n"
            "prints one JSON object per line. Defaults: 32 x 197 tokens, width 384, 6 heads,\n"
            "MLP ratio 4, 2 threads, 3 warmup steps, 10 timed steps, both precisions.\n");
}

int main(int argc, char **argv) {
    bench_cfg g = { 32, 197, 384, 6, 4.0f, 2, 3, 10, 0, 1, 1, 1 };
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--profile")) {
            g.profile = 1;
        } else if (!strcmp(a, "--no-sgemm")) {
            g.gemm = 0;
        } else if (v && !strcmp(a, "--batch")) { g.B = atoll(v); i++; }
        else if (v && !strcmp(a, "--tokens")) { g.T = atoll(v); i++; }
        else if (v && !strcmp(a, "--width")) { g.C = atoll(v); i++; }
        else if (v && !strcmp(a, "--heads")) { g.H = atoll(v); i++; }
        else if (v && !strcmp(a, "--mlp-ratio")) { g.mlp_ratio = (float)atof(v); i++; }
        else if (v && !strcmp(a, "--threads")) { g.threads = atoi(v); i++; }
        else if (v && !strcmp(a, "--warmup")) { g.warmup = atoi(v); i++; }
        else if (v && !strcmp(a, "--reps")) { g.reps = atoi(v); i++; }
        else if (v && !strcmp(a, "--prec")) {
            g.f32 = !strcmp(v, "f32") || !strcmp(v, "both");
            g.bf16 = !strcmp(v, "bf16") || !strcmp(v, "both");
            if (!g.f32 && !g.bf16) {
                fprintf(stderr, "transformer_block: --prec must be f32, bf16 or both\n");
                return 2;
            }
            i++;
        } else {
            fprintf(stderr, "transformer_block: unknown or incomplete option '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (g.B < 1 || g.T < 1 || g.C < 1 || g.H < 1 || g.C % g.H || g.threads < 1 || g.reps < 1 ||
        g.warmup < 0 || !(g.mlp_ratio > 0)) {
        fprintf(stderr, "transformer_block: sizes must be positive and width divisible by heads\n");
        return 2;
    }
    ts_log_set_level(TS_LOG_WARN);
    omp_set_num_threads(g.threads);
    printf("{\"kind\":\"config\",\"batch\":%lld,\"tokens\":%lld,\"width\":%lld,\"heads\":%lld,"
           "\"mlp_ratio\":%g,\"threads\":%d,\"warmup\":%d,\"reps\":%d,\"onednn\":\"%d.%d.%d\"}\n",
           (long long)g.B, (long long)g.T, (long long)g.C, (long long)g.H, g.mlp_ratio,
           g.threads, g.warmup, g.reps, dnnl_version()->major, dnnl_version()->minor,
           dnnl_version()->patch);
    fflush(stdout);
    if (g.gemm) measure_sgemm(&g);
    if (g.f32) run_block(&g, TS_PREC_F32);
    if (g.bf16) run_block(&g, TS_PREC_BF16);
    return 0;
}
