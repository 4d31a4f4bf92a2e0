/* vla_step.c: times training steps of the diffusion action head for bench/vla_step.py.
 *
 * Builds a diffusion policy head (action/action.h) of the driver's size under the name "head",
 * loads the weights the driver wrote from the PyTorch rendering (tests/parity/cases_heads.py's
 * ActionHead, the same names) with ts_ckpt_load_model, and serves the driver over stdin/stdout
 * so that tessera's and PyTorch's rounds interleave: "run N" times N training steps and prints
 * their seconds as one JSON line; "quit" ends. One step: reset the step arena, zero the
 * gradients, the head's DDPM loss on a fixed batch (timesteps and noise drawn per step),
 * backward, AdamW (lr 1e-4, betas 0.9/0.95, eps 1e-8, weight decay 1e-3 except biases, norms
 * and the position embedding). The batch (observation tokens and action chunks) comes from the
 * weights file as "_batch.cond" and "_batch.actions".
 *
 * What it deliberately is not: a test, or a timing of an encoder (the observation tokens are
 * fixed inputs). Usage:
 *   vla_step --weights FILE --batch 64 --horizon 16 --action-dim 7 --cond-tokens 10
 *            --cond-dim 256 --width 256 --depth 4 --heads 4 [--threads 2]
 */
#include "action.h"
#include "tessera-impl.h"
#include "prof.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* --profile: the seconds of each phase of a step and of each backward node kind, summed over
 * the run and printed to stderr as JSON lines after each round. */
static struct {
    bench_prof t;
    double t0;
} prof;

static void prof_hook(const ts_node *n, int done, void *user) {
    (void)user;
    if (!done) {
        prof.t0 = now_s();
        return;
    }
    char lab[96];
    snprintf(lab, sizeof lab, "bwd %s", ts_op_name(n->op));
    bench_prof_add(&prof.t, lab, now_s() - prof.t0);
}

int main(int argc, char **argv) {
    const char *weights = NULL;
    int batch = 64, horizon = 16, adim = 7, tc = 10, cdim = 256, width = 256, depth = 4,
        heads = 4, threads = 2, profile = 0;
    for (int i = 1; i < argc; i += 2) {
        const char *k = argv[i];
        if (!strcmp(k, "--profile")) {
            profile = 1;
            i--;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "vla_step: %s needs a value\n", k);
            return 2;
        }
        int v = atoi(argv[i + 1]);
        if (!strcmp(k, "--weights")) weights = argv[i + 1];
        else if (!strcmp(k, "--batch")) batch = v;
        else if (!strcmp(k, "--horizon")) horizon = v;
        else if (!strcmp(k, "--action-dim")) adim = v;
        else if (!strcmp(k, "--cond-tokens")) tc = v;
        else if (!strcmp(k, "--cond-dim")) cdim = v;
        else if (!strcmp(k, "--width")) width = v;
        else if (!strcmp(k, "--depth")) depth = v;
        else if (!strcmp(k, "--heads")) heads = v;
        else if (!strcmp(k, "--threads")) threads = v;
        else {
            fprintf(stderr, "vla_step: unknown option %s\n", k);
            return 2;
        }
    }
    if (!weights || batch < 1 || threads < 1) {
        fprintf(stderr, "usage: vla_step --weights FILE [--batch 64] [--threads 2] ...\n");
        return 2;
    }
    omp_set_num_threads(threads);
    ts_log_set_level(TS_LOG_WARN);
    ts_err err = { 0 };
    ts_params *p = ts_params_new();
    ts_head_cfg cfg = { .kind = TS_HEAD_DIFFUSION, .horizon = horizon, .action_dim = adim,
                        .cond_dim = cdim, .width = width, .depth = depth, .heads = heads,
                        .mlp_ratio = 4.0f, .dropout = 0.0f, .train_steps = 100,
                        .infer_steps = 10, .prediction = TS_PRED_EPSILON };
    ts_action_head *h = ts_action_head_new(p, "head", &cfg);
    if (ts_params_finalize(p, 1, &err) || ts_ckpt_load_model(p, weights, 1, &err)) {
        fprintf(stderr, "vla_step: %s\n", err.msg);
        return 1;
    }
    ts_optim opt;
    ts_optim_cfg oc = { TS_OPTIM_ADAMW, 1e-4f, 0.9f, 0.95f, 1e-8f, 1e-3f, 0.0f };
    ts_optim_init(&opt, &oc);

    int64_t B = batch, na = B * horizon * adim, nc = B * tc * cdim;
    float *cond = malloc((size_t)nc * sizeof *cond), *act = malloc((size_t)na * sizeof *act);
    TS_CHECK(cond && act, "out of memory");
    ts_st_file *f;
    if (ts_st_read(weights, &f, &err)) {
        fprintf(stderr, "vla_step: %s\n", err.msg);
        return 1;
    }
    const ts_st_entry *ec = ts_st_find(f, "_batch.cond"), *ea = ts_st_find(f, "_batch.actions");
    if (!ec || !ea || (int64_t)(ec->nbytes / 4) != nc || (int64_t)(ea->nbytes / 4) != na) {
        fprintf(stderr, "vla_step: %s has no batch of %lld (%d, %d) tokens and (%d, %d) "
                "chunks\n", weights, (long long)B, tc, cdim, horizon, adim);
        return 1;
    }
    ts_st_entry_to_f32(ec, cond);
    ts_st_entry_to_f32(ea, act);
    ts_st_close(f);
    ts_ctx *c = ts_ctx_new(TS_CPU, 64u << 20, 1);
    c->training = 1;
    printf("{\"kind\": \"ready\", \"params\": %lld}\n", (long long)ts_params_numel(p, 1));
    fflush(stdout);

    char line[256];
    while (fgets(line, sizeof line, stdin)) {
        if (!strncmp(line, "quit", 4)) break;
        if (strncmp(line, "run", 3)) continue;
        int n = atoi(line + 4);
        double t0 = now_s(), loss = 0;
        for (int k = 0; k < n; k++) {
            double t[5];
            t[0] = now_s();
            ts_ctx_reset(c);
            ts_params_zero_grad(p);
            t[1] = now_s();
            ts_tensor *tc_ = ts_from_f32(c, 3, TS_SHAPE(B, tc, cdim), cond);
            ts_tensor *ta = ts_from_f32(c, 3, TS_SHAPE(B, horizon, adim), act);
            ts_tensor *l = ts_action_head_loss(c, h, tc_, ta, NULL, NULL);
            loss = ts_f32(l)[0];
            t[2] = now_s();
            if (profile)
                ts__backward_with_hook(c, l, ts_from_f32(c, l->ndim, l->shape, &(float){ 1 }),
                                       prof_hook, NULL);
            else ts_backward(c, l);
            t[3] = now_s();
            ts_optim_step(&opt, p, 1e-4f);
            t[4] = now_s();
            if (profile) {
                static const char *const phase[] = { "zero grads", "forward", "backward",
                                                     "AdamW" };
                for (int j = 0; j < 4; j++) bench_prof_add(&prof.t, phase[j], t[j + 1] - t[j]);
            }
        }
        printf("{\"kind\": \"round\", \"steps\": %d, \"s\": %.6f, \"loss\": %.6f}\n", n,
               now_s() - t0, loss);
        for (int i = 0; i < prof.t.nrows; i++)
            fprintf(stderr, "{\"kind\": \"profile\", \"op\": \"%s\", \"ms_per_step\": %.3f, "
                    "\"calls_per_step\": %.1f}\n", prof.t.rows[i].label,
                    1e3 * prof.t.rows[i].s / n, (double)prof.t.rows[i].n / n);
        memset(&prof, 0, sizeof prof);
        fflush(stdout);
    }
    ts_ctx_free(c);
    free(cond);
    free(act);
    ts_action_head_free(h);
    ts_params_free(p);
    return 0;
}
