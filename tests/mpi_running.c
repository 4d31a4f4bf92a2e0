/* mpi_running.c: batch-norm running statistics across the ranks of a data-parallel run.
 *
 * Run alone and as `mpirun -np N mpi_running OUT_DIR` (tests/cli_mpi.sh does both). The model is
 * x -> batchnorm1d -> linear with a squared-output loss, and x is a fixed function of the global
 * sample index, so what enters the batch norm does not depend on training: the running
 * statistics that the trainer should end with can be computed here from the data alone. After
 * STEPS steps of ts_train every rank compares its running_mean and running_var with that
 * expectation, computed in double: each step
 *
 *   running_mean <- (1 - m) running_mean + m * sum over ranks r of share_r * mean_r
 *   running_var  <- (1 - m) running_var  + m * sum over ranks r of share_r * var_r
 *
 * with mean_r and var_r (unbiased) those of rank r's rows and share_r = n_r / B: the ranks'
 * statistics averaged after every step, as core/trainer.c does. With several ranks it also
 * checks that the expectation differs from what rank 0 would keep from its own rows (so that a
 * trainer that forgot to average fails), that every rank holds the same buffers, and that rank
 * 0's last checkpoint holds them.
 * Exit status 0 when all holds. Not a cmocka test: every rank prints and checks.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tessera.h"

enum { B = 10, C = 5, STEPS = 6 };
static const float MOMENTUM = 0.1f;

typedef struct model {
    ts_params *p;
    ts_tensor *w, *b, *mean, *var; /* (C) each */
    ts_nn_linear out;
} model;

/* Feature j of global sample i of batch pos: every rank's rows have another mean and spread. */
static float feature(int64_t pos, int64_t i, int j) {
    return sinf(0.7f * (float)(pos * B + i) * (float)(j + 1)) * (1.0f + 0.2f * (float)i) +
           0.5f * (float)i - 0.3f * (float)j;
}

/* The rows [r0, r1) of global batch pos, as the trainer's share of this rank. */
static ts_tensor *loss_fn(ts_task *t, ts_ctx *c, int64_t pos, ts_metrics *m, ts_err *err) {
    model *md = t->impl;
    (void)m;
    (void)err;
    int64_t r0 = c->rank * B / c->world, r1 = (c->rank + 1) * B / c->world;
    ts_tensor *x = ts_new_f32(c, 2, TS_SHAPE(r1 - r0, C));
    for (int64_t i = r0; i < r1; i++)
        for (int j = 0; j < C; j++) ts_f32(x)[(i - r0) * C + j] = feature(pos, i, j);
    ts_tensor *h = ts_batchnorm1d(c, x, md->w, md->b, md->mean, md->var, MOMENTUM, 1e-5f);
    ts_tensor *y = ts_nn_linear_forward(c, &md->out, h);
    return ts_mean(c, ts_mul(c, y, y), TS_ALL);
}

/* The expected running statistics after STEPS steps on `world` ranks, in double; with only_rank
 * >= 0, what that rank would keep from its own rows without averaging. */
static void expect(int world, int only_rank, double *rm, double *rv) {
    for (int j = 0; j < C; j++) rm[j] = 0, rv[j] = 1;
    for (int64_t pos = 0; pos < STEPS; pos++) {
        double bm[C] = { 0 }, bv[C] = { 0 };
        for (int r = 0; r < world; r++) {
            if (only_rank >= 0 && r != only_rank) continue;
            int64_t r0 = (int64_t)r * B / world, r1 = (int64_t)(r + 1) * B / world, n = r1 - r0;
            double share = only_rank >= 0 ? 1.0 : (double)n / B;
            for (int j = 0; j < C; j++) {
                double s = 0, ss = 0;
                for (int64_t i = r0; i < r1; i++) s += feature(pos, i, j);
                double mu = s / (double)n;
                for (int64_t i = r0; i < r1; i++) ss += pow(feature(pos, i, j) - mu, 2);
                bm[j] += share * mu;
                bv[j] += share * ss / (double)(n - 1);
            }
        }
        for (int j = 0; j < C; j++) {
            rm[j] = (1 - MOMENTUM) * rm[j] + MOMENTUM * bm[j];
            rv[j] = (1 - MOMENTUM) * rv[j] + MOMENTUM * bv[j];
        }
    }
}

static double worst_diff(const float *got, const double *want) {
    double w = 0;
    for (int j = 0; j < C; j++) w = fmax(w, fabs(got[j] - want[j]) / fmax(1.0, fabs(want[j])));
    return w;
}

static ts_status model_init(model *md, ts_err *err) {
    md->p = ts_params_new();
    md->w = ts_param(md->p, "bn.weight", 1, TS_SHAPE(C), TS_INIT_1, TS_PARAM_NO_DECAY);
    md->b = ts_param(md->p, "bn.bias", 1, TS_SHAPE(C), TS_INIT_0, TS_PARAM_NO_DECAY);
    md->mean = ts_param(md->p, "bn.running_mean", 1, TS_SHAPE(C), TS_INIT_0,
                        TS_PARAM_BUFFER | TS_PARAM_RUNNING);
    md->var = ts_param(md->p, "bn.running_var", 1, TS_SHAPE(C), TS_INIT_1,
                       TS_PARAM_BUFFER | TS_PARAM_RUNNING);
    ts_nn_linear_init(&md->out, md->p, "out", C, 3, 1);
    return ts_params_finalize(md->p, 3, err);
}

/* Rank 0's checkpoint of the last step holds the same statistics as its memory. */
static int check_checkpoint(const model *md, const char *out_dir, ts_err *err) {
    model ck;
    char path[4096];
    snprintf(path, sizeof path, "%s/checkpoints/step_%08d/model.safetensors", out_dir, STEPS);
    int bad = model_init(&ck, err) || ts_ckpt_load_model(ck.p, path, 0, err) ||
              memcmp(ts_f32(ck.mean), ts_f32(md->mean), C * sizeof(float)) ||
              memcmp(ts_f32(ck.var), ts_f32(md->var), C * sizeof(float));
    printf("rank 0: %s %s the running statistics above\n", path, bad ? "does NOT hold" : "holds");
    ts_params_free(ck.p);
    return bad;
}

static int run(ts_dist *d, const char *out_dir) {
    model md;
    ts_err err = { 0 };
    if (model_init(&md, &err)) return 1;
    ts_task task = { .type = "bn_probe", .params = md.p, .batch_size = B, .loss = loss_fn,
                     .impl = &md };
    char text[512];
    snprintf(text, sizeof text, "train: {steps: %d, log_every: 1, threads: 1, out_dir: %s, "
             "bucket_mib: 0.0001}\noptim: {name: sgd, lr: 0.1}\n", STEPS, out_dir);
    ts_recipe *r = NULL;
    ts_train_cfg cfg;
    ts_optim_recipe oc;
    int rc = 1;
    if (ts_recipe_parse(text, "mpi_running.yaml", &r, &err) ||
        ts_train_parse(r, &cfg, &oc, &err))
        goto out;
    ts_train_opts opts = { .dist = d };
    if (ts_train(r, &cfg, &oc, &task, &opts, &err)) goto out;

    double rm[C], rv[C], lm[C], lv[C];
    expect(d->world, -1, rm, rv);
    double dm = worst_diff(ts_f32(md.mean), rm), dv = worst_diff(ts_f32(md.var), rv);
    printf("rank %d of %d: running mean and variance against the ranks' averaged statistics: "
           "max relative difference %.2e, %.2e\n", d->rank, d->world, dm, dv);
    rc = !(dm < 1e-5 && dv < 1e-5);
    if (d->rank == 0) rc |= check_checkpoint(&md, out_dir, &err);
    if (d->world > 1) {
        expect(d->world, 0, lm, lv);
        double sm = 0, sv = 0; /* how far rank 0's own statistics are from the average */
        for (int j = 0; j < C; j++) {
            sm = fmax(sm, fabs(lm[j] - rm[j]));
            sv = fmax(sv, fabs(lv[j] - rv[j]));
        }
        printf("rank %d: rank 0's rows alone would give statistics %.2e, %.2e away\n", d->rank,
               sm, sv);
        rc |= !(sm > 1e-3 && sv > 1e-3);
        /* every rank the same buffers, bit for bit */
        float mine[2 * C], *all = malloc((size_t)d->world * 2 * C * sizeof *all);
        memcpy(mine, ts_f32(md.mean), C * sizeof(float));
        memcpy(mine + C, ts_f32(md.var), C * sizeof(float));
        if (!all || ts_dist_allgather_f32(d, mine, 2 * C, all, NULL, &err)) rc = 1;
        for (int k = 1; all && k < d->world; k++)
            if (memcmp(all, all + (size_t)k * 2 * C, 2 * C * sizeof(float))) {
                printf("rank %d: rank %d holds other running statistics than rank 0\n", d->rank,
                       k);
                rc = 1;
            }
        free(all);
    }
out:
    if (err.msg[0]) fprintf(stderr, "mpi_running: rank %d: %s\n", d->rank, err.msg);
    ts_recipe_free(r);
    ts_params_free(md.p);
    return rc;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: [mpirun -np N] mpi_running OUT_DIR\n");
        return 2;
    }
    ts_dist d;
    ts_err err = { 0 };
    if (ts_dist_init(&d, &argc, &argv, &err)) {
        fprintf(stderr, "mpi_running: %s\n", err.msg);
        return 1;
    }
    ts_log_set_level(TS_LOG_WARN);
    int rc = run(&d, argv[1]);
    printf("rank %d: %s\n", d.rank, rc ? "FAIL" : "ok");
    if (d.world > 1) { /* the job fails when any rank does */
        double bad = rc;
        if (ts_dist_allreduce_sum_f64(&d, &bad, 1, &err)) rc = 1;
        else rc = bad > 0;
    }
    ts_dist_finalize(&d);
    return rc;
}
