/* encoders.c: times tessera's image encoders, forward + backward, for bench/encoders.py.
 *
 * Builds ViT-S/16 (timm's vit_small_patch16_224, the timm flavour of vision/vit.c) or CSWin-T
 * at 224 (vision/cswin.c), loads the weights the driver wrote from the PyTorch model by name
 * (ts_vit_load, ts_ckpt_load_model), and then serves the driver over stdin/stdout so that the
 * rounds of tessera and PyTorch can be interleaved: "run N" times N training steps and prints
 * their seconds as one JSON line; "profile" runs one step with every op timed and prints one
 * JSON line per op kind and pass; "quit" ends. One step is: reset the step arena, zero the
 * parameter grads, forward the images to the logits y (B, 1000), backward from y with a fixed
 * upstream gradient r (loss = sum(y * r)), as the PyTorch side does. No optimizer step.
 *
 * What it deliberately is not: a test; nothing is asserted. The per-op profile wraps the public
 * op functions with the linker's --wrap (bench/CMakeLists.txt) for the forward and times the
 * backward node by node through the walk's hook, grouping by op name only.
 *
 * Usage: encoders --model vit|cswin --weights FILE [--batch 16] [--threads 2]
 */
#include "tessera-impl.h"
#include "prof.h"
#include "vision.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- the per-op profile: seconds per (pass, op name) ---- */

static struct {
    int on, depth;
    bench_prof t;
} prof;

static void prof_add(const char *pass, const char *op, double s) {
    char label[64];
    snprintf(label, sizeof label, "%s %s", pass, op);
    bench_prof_add(&prof.t, label, s);
}

/* Forward wrappers time the outermost op call only. */
#define PROF_WRAP(name, call)                                                                \
    int top_ = prof.on && prof.depth == 0;                                                   \
    double t0_ = top_ ? now_s() : 0.0;                                                       \
    prof.depth++;                                                                            \
    ts_tensor *y_ = call;                                                                    \
    prof.depth--;                                                                            \
    if (top_) prof_add("fwd", name, now_s() - t0_);                                          \
    return y_;

typedef const ts_tensor cten;
ts_tensor *__real_ts_linear(ts_ctx *, cten *, cten *, cten *);
ts_tensor *__wrap_ts_linear(ts_ctx *c, cten *x, cten *w, cten *b);
ts_tensor *__wrap_ts_linear(ts_ctx *c, cten *x, cten *w, cten *b) {
    PROF_WRAP("linear", __real_ts_linear(c, x, w, b))
}
ts_tensor *__real_ts_matmul(ts_ctx *, cten *, cten *, int);
ts_tensor *__wrap_ts_matmul(ts_ctx *c, cten *a, cten *b, int f);
ts_tensor *__wrap_ts_matmul(ts_ctx *c, cten *a, cten *b, int f) {
    PROF_WRAP("matmul", __real_ts_matmul(c, a, b, f))
}
ts_tensor *__real_ts_layernorm(ts_ctx *, cten *, cten *, cten *, float);
ts_tensor *__wrap_ts_layernorm(ts_ctx *c, cten *x, cten *w, cten *b, float eps);
ts_tensor *__wrap_ts_layernorm(ts_ctx *c, cten *x, cten *w, cten *b, float eps) {
    PROF_WRAP("layernorm", __real_ts_layernorm(c, x, w, b, eps))
}
ts_tensor *__real_ts_bias_gelu(ts_ctx *, cten *, cten *);
ts_tensor *__wrap_ts_bias_gelu(ts_ctx *c, cten *x, cten *b);
ts_tensor *__wrap_ts_bias_gelu(ts_ctx *c, cten *x, cten *b) {
    PROF_WRAP("bias_gelu", __real_ts_bias_gelu(c, x, b))
}
ts_tensor *__real_ts_gelu(ts_ctx *, cten *);
ts_tensor *__wrap_ts_gelu(ts_ctx *c, cten *x);
ts_tensor *__wrap_ts_gelu(ts_ctx *c, cten *x) { PROF_WRAP("gelu", __real_ts_gelu(c, x)) }
ts_tensor *__real_ts_add(ts_ctx *, cten *, cten *);
ts_tensor *__wrap_ts_add(ts_ctx *c, cten *a, cten *b);
ts_tensor *__wrap_ts_add(ts_ctx *c, cten *a, cten *b) { PROF_WRAP("add", __real_ts_add(c, a, b)) }
ts_tensor *__real_ts_permute(ts_ctx *, cten *, const int *);
ts_tensor *__wrap_ts_permute(ts_ctx *c, cten *a, const int *p);
ts_tensor *__wrap_ts_permute(ts_ctx *c, cten *a, const int *p) {
    PROF_WRAP("permute", __real_ts_permute(c, a, p))
}
ts_tensor *__real_ts_conv2d(ts_ctx *, cten *, cten *, cten *, int, int);
ts_tensor *__wrap_ts_conv2d(ts_ctx *c, cten *x, cten *w, cten *b, int s, int p);
ts_tensor *__wrap_ts_conv2d(ts_ctx *c, cten *x, cten *w, cten *b, int s, int p) {
    PROF_WRAP("conv2d", __real_ts_conv2d(c, x, w, b, s, p))
}
ts_tensor *__real_ts_stripe_attention(ts_ctx *, cten *, cten *, cten *, int64_t, int64_t,
                                      int64_t, int64_t, float);
ts_tensor *__wrap_ts_stripe_attention(ts_ctx *c, cten *qkv, cten *w, cten *b, int64_t H,
                                      int64_t W, int64_t heads, int64_t sw, float scale);
ts_tensor *__wrap_ts_stripe_attention(ts_ctx *c, cten *qkv, cten *w, cten *b, int64_t H,
                                      int64_t W, int64_t heads, int64_t sw, float scale) {
    PROF_WRAP("stripe_attention", __real_ts_stripe_attention(c, qkv, w, b, H, W, heads, sw, scale))
}
ts_tensor *__real_ts__attention_packed(ts_ctx *, cten *, int64_t, int, cten *, float);
ts_tensor *__wrap_ts__attention_packed(ts_ctx *c, cten *qkv, int64_t h, int causal, cten *pad,
                                       float s);
ts_tensor *__wrap_ts__attention_packed(ts_ctx *c, cten *qkv, int64_t h, int causal, cten *pad,
                                       float s) {
    PROF_WRAP("attention", __real_ts__attention_packed(c, qkv, h, causal, pad, s))
}

static double hook_t0;
static void prof_hook(const ts_node *n, int done, void *user) {
    (void)user;
    if (!done)
        hook_t0 = now_s();
    else
        prof_add("bwd", ts_op_name(n->op), now_s() - hook_t0);
}

/* ---- the model ---- */

typedef struct run {
    ts_params *p;
    ts_vit vit;
    ts_cswin cswin;
    int is_vit;
    ts_ctx *c;
    ts_tensor x, r; /* host-owned images (B, 3, 224, 224) and upstream gradient (B, 1000) */
} run;

static void host_tensor(ts_tensor *t, int ndim, const int64_t *shape, ts_rng *rng) {
    memset(t, 0, sizeof *t);
    t->dtype = TS_F32;
    t->device = TS_CPU;
    t->ndim = ndim;
    t->numel = 1;
    for (int i = 0; i < ndim; i++) t->numel *= (t->shape[i] = shape[i]);
    t->data = aligned_alloc(64, (size_t)t->numel * sizeof(float) + 64);
    TS_CHECK(t->data != NULL, "out of memory");
    for (int64_t i = 0; i < t->numel; i++) ts_f32(t)[i] = 2.0f * ts_rng_uniform(rng) - 1.0f;
}

static void step(run *m, int profiled) {
    ts_ctx *c = m->c;
    ts_ctx_reset(c);
    ts_params_zero_grad(m->p);
    m->x.grad = NULL;
    m->x.node = NULL;
    ts_tensor *y = m->is_vit ? ts_vit_forward(c, &m->vit, &m->x, NULL)
                             : ts_cswin_forward(c, &m->cswin, &m->x, NULL);
    if (profiled)
        ts__backward_with_hook(c, y, &m->r, prof_hook, NULL);
    else
        ts_backward_with(c, y, &m->r);
}

int main(int argc, char **argv) {
    const char *model = "vit", *weights = NULL;
    int batch = 16, threads = 2;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--model")) model = argv[i + 1];
        else if (!strcmp(argv[i], "--weights")) weights = argv[i + 1];
        else if (!strcmp(argv[i], "--batch")) batch = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
        else {
            fprintf(stderr, "encoders: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (!weights || batch < 1 || threads < 1) {
        fprintf(stderr, "usage: encoders --model vit|cswin --weights FILE [--batch 16] "
                        "[--threads 2]\n");
        return 2;
    }
    run m = { 0 };
    ts_err err = { 0 };
    m.p = ts_params_new();
    m.is_vit = strcmp(model, "vit") == 0;
    if (m.is_vit) {
        ts_vit_cfg cfg;
        TS_CHECK(ts_vit_cfg_named("vit_small_patch16_224", &cfg, &err) == TS_OK, "%s", err.msg);
        ts_vit_init(&m.vit, m.p, "", &cfg);
    } else {
        ts_cswin_cfg cfg;
        TS_CHECK(ts_cswin_cfg_named("CSWin-T", &cfg, &err) == TS_OK, "%s", err.msg);
        TS_CHECK(ts_cswin_init(&m.cswin, m.p, "", &cfg, &err) == TS_OK, "%s", err.msg);
    }
    TS_CHECK(ts_params_finalize(m.p, 1, &err) == TS_OK, "%s", err.msg);
    ts_status st = m.is_vit ? ts_vit_load(&m.vit, weights, &err)
                            : ts_ckpt_load_model(m.p, weights, 0, &err);
    if (st) {
        fprintf(stderr, "encoders: %s\n", err.msg);
        return 1;
    }
    m.c = ts_ctx_new(TS_CPU, 1 << 20, 42);
    m.c->nthreads = threads;
    m.c->training = 1;
    ts_rng rng;
    ts_rng_seed(&rng, 99);
    host_tensor(&m.x, 4, TS_SHAPE(batch, 3, 224, 224), &rng);
    host_tensor(&m.r, 2, TS_SHAPE(batch, 1000), &rng);
    printf("{\"kind\":\"ready\",\"params\":%lld}\n", (long long)ts_params_numel(m.p, 1));
    fflush(stdout);

    char line[128];
    while (fgets(line, sizeof line, stdin)) {
        int n;
        if (sscanf(line, "run %d", &n) == 1 && n > 0) {
            double t0 = now_s();
            for (int i = 0; i < n; i++) step(&m, 0);
            double s = now_s() - t0;
            double gsum = 0; /* a checksum, so that a broken build shows as a changed number */
            ts_tensor *g = ts_params_get(m.p, 0)->grad;
            for (int64_t j = 0; g && j < g->numel; j++) gsum += fabs(ts_f32(g)[j]);
            printf("{\"kind\":\"round\",\"steps\":%d,\"s\":%.6f,\"arena\":%zu,\"g0\":%.6e}\n", n,
                   s, ts_arena_high_water(m.c->step), gsum);
        } else if (!strncmp(line, "profile", 7)) {
            memset(&prof, 0, sizeof prof);
            prof.on = 1;
            double t0 = now_s();
            step(&m, 1);
            double tot = now_s() - t0;
            prof.on = 0;
            for (int i = 0; i < prof.t.nrows; i++)
                printf("{\"kind\":\"profile\",\"op\":\"%s\",\"ms\":%.3f,\"calls\":%lld}\n",
                       prof.t.rows[i].label, 1e3 * prof.t.rows[i].s, (long long)prof.t.rows[i].n);
            printf("{\"kind\":\"profile_total\",\"ms\":%.3f}\n", 1e3 * tot);
        } else if (!strncmp(line, "quit", 4)) {
            break;
        }
        fflush(stdout);
    }
    free(m.x.data);
    free(m.r.data);
    ts_ctx_free(m.c);
    if (m.is_vit) ts_vit_free(&m.vit);
    else ts_cswin_free(&m.cswin);
    ts_params_free(m.p);
    return 0;
}
