/* trainer.c: the training loop.
 *
 * One step: for each of accum micro-batches, the task builds batch number data_position and
 * returns a loss, backward accumulates into the parameter grads and the step arena is reset;
 * then grad-norm clipping, the optimizer step at the scheduled learning rate, logging, evaluation
 * and checkpoints at their intervals. The state that makes a resumed run the same run is saved
 * with every checkpoint: the step, the data position, the context's RNG, the optimizer moments.
 * In deterministic mode (fixed thread count) a resumed run gives bitwise the losses of a run that
 * never stopped.
 *
 * Data parallelism (opts->dist of several ranks): every rank runs this same loop on its share of
 * each global batch. Each rank weights its gradient by its share of the batch and a sum
 * all-reduce over the parameters' gradient section gives every rank the gradient of the whole
 * batch: in buckets started during the last micro-batch's backward (train.overlap_allreduce,
 * the default), or in one piece after it. The optimizer steps are then identical everywhere. A
 * second small all-reduce carries the loss, the task's metrics, the stop flag and the averaged
 * batch-norm running statistics, so that the log shows the global batch, every rank stops at
 * the same step and every replica (rank 0's checkpoint included) keeps the same buffers. Rank 0
 * alone evaluates and writes the run folder; the others wait at a barrier until a checkpoint is
 * complete. With one rank none of this runs and the loop is exactly the single-process loop.
 *
 * The trainer knows nothing of models or objectives: it sees a ts_task. It does not install
 * signal handlers either: the command line does, and sets *opts->stop.
 */
#include "tessera-impl.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- recipe sections ---- */

static const char *const precisions[] = { "f32", "bf16", NULL };
static const char *const devices[] = { "cpu", "cuda", NULL };
static const ts_key train_keys[] = {
    TS_KEY(TS_KEY_INT, ts_train_cfg, steps, NULL,
           "optimizer steps in the run (0: save the initial weights as checkpoint step 0)"),
    TS_KEY(TS_KEY_INT, ts_train_cfg, accum, "1", "micro-batches accumulated per step"),
    TS_KEY(TS_KEY_INT, ts_train_cfg, log_every, "10", "steps between log lines"),
    TS_KEY(TS_KEY_INT, ts_train_cfg, eval_every, "0", "steps between evaluations (0: at the end)"),
    TS_KEY(TS_KEY_INT, ts_train_cfg, ckpt_every, "0", "steps between checkpoints (0: at the end)"),
    TS_KEY(TS_KEY_INT, ts_train_cfg, keep, "3", "checkpoints kept (0: all)"),
    TS_KEY(TS_KEY_INT, ts_train_cfg, seed, "0", "seed of the model and the data stream"),
    TS_KEY(TS_KEY_INT, ts_train_cfg, threads, "0", "OpenMP threads (0: all cores)"),
    TS_KEY(TS_KEY_STRING, ts_train_cfg, out_dir, "runs/default", "run folder"),
    TS_KEY_CHOICE(ts_train_cfg, precision, "f32", precisions, "matmul precision"),
    TS_KEY_CHOICE(ts_train_cfg, device, "cpu", devices, "where the model trains"),
    TS_KEY(TS_KEY_BOOL, ts_train_cfg, deterministic, "true", "same losses on every run"),
    TS_KEY(TS_KEY_FLOAT, ts_train_cfg, collective_timeout_s, "300",
           "several ranks: seconds a collective may wait before the job aborts (0: forever)"),
    TS_KEY(TS_KEY_BOOL, ts_train_cfg, overlap_allreduce, "true",
           "several ranks: all-reduce gradient buckets while backward runs (false: after it)"),
    TS_KEY(TS_KEY_FLOAT, ts_train_cfg, bucket_mib, "4",
           "several ranks, overlap_allreduce: MiB of gradients per all-reduce bucket"),
};

static const char *const optimizers[] = { "adamw", "sgd", NULL };
static const char *const schedules[] = { "cosine", "linear", "constant", NULL };
static const ts_key optim_keys[] = {
    { "name", TS_KEY_ENUM, offsetof(ts_optim_recipe, name), "adamw", optimizers, "optimizer" },
    TS_KEY(TS_KEY_FLOAT, ts_optim_recipe, lr, NULL, "peak learning rate"),
    TS_KEY(TS_KEY_FLOAT, ts_optim_recipe, min_lr, "0", "learning rate at the end of the decay"),
    TS_KEY(TS_KEY_FLOAT, ts_optim_recipe, beta1, "0.9", "AdamW beta1"),
    TS_KEY(TS_KEY_FLOAT, ts_optim_recipe, beta2, "0.999", "AdamW beta2"),
    TS_KEY(TS_KEY_FLOAT, ts_optim_recipe, eps, "1e-8", "AdamW epsilon"),
    TS_KEY(TS_KEY_FLOAT, ts_optim_recipe, weight_decay, "0.0", "decoupled weight decay"),
    TS_KEY(TS_KEY_FLOAT, ts_optim_recipe, momentum, "0.9", "SGD momentum"),
    TS_KEY(TS_KEY_FLOAT, ts_optim_recipe, clip_grad_norm, "0", "global grad-norm clip (0: off)"),
    TS_KEY_CHOICE(ts_optim_recipe, schedule, "cosine", schedules, "learning-rate schedule"),
    TS_KEY(TS_KEY_INT, ts_optim_recipe, warmup, "0", "linear warmup steps"),
};

int ts_have_cuda(void) {
#ifdef TS_HAVE_CUDA
    return 1;
#else
    return 0;
#endif
}

ts_status ts_train_parse(ts_recipe *r, ts_train_cfg *train, ts_optim_recipe *optim,
                         ts_err *err) {
    memset(train, 0, sizeof *train);
    memset(optim, 0, sizeof *optim);
    ts_status st = ts_recipe_section(r, "train", train_keys,
                                     (int)(sizeof train_keys / sizeof train_keys[0]), train, err);
    if (st) return st;
    st = ts_recipe_section(r, "optim", optim_keys, (int)(sizeof optim_keys / sizeof optim_keys[0]),
                           optim, err);
    if (st) return st;
    char where[512];
    if (train->steps < 0)
        return ts_fail(err, TS_ERR_RECIPE, "%s: train.steps must be 0 or more",
                       ts_recipe_where(r, "train.steps", where, sizeof where));
    if (train->collective_timeout_s < 0)
        return ts_fail(err, TS_ERR_RECIPE, "%s: train.collective_timeout_s must be >= 0",
                       ts_recipe_where(r, "train.collective_timeout_s", where, sizeof where));
    if (!(train->bucket_mib > 0) || train->bucket_mib > 4096)
        return ts_fail(err, TS_ERR_RECIPE, "%s: train.bucket_mib must be in (0, 4096], got %g",
                       ts_recipe_where(r, "train.bucket_mib", where, sizeof where),
                       train->bucket_mib);
#ifndef TS_HAVE_CUDA
    if (train->device == 1)
        return ts_fail(err, TS_ERR_UNSUPPORTED, "%s: train.device: cuda: this build has no CUDA "
                       "backend (no nvcc was found when it was configured); use cpu",
                       ts_recipe_where(r, "train.device", where, sizeof where));
#endif
    if (train->accum <= 0)
        return ts_fail(err, TS_ERR_RECIPE, "%s: train.accum must be positive",
                       ts_recipe_where(r, "train.accum", where, sizeof where));
    if (!(optim->lr > 0))
        return ts_fail(err, TS_ERR_RECIPE, "%s: optim.lr must be positive",
                       ts_recipe_where(r, "optim.lr", where, sizeof where));
    return TS_OK;
}

void ts_metrics_set(ts_metrics *m, const char *name, double value) {
    for (int i = 0; i < m->n; i++)
        if (!strcmp(m->name[i], name)) {
            m->value[i] = value;
            return;
        }
    TS_CHECK(m->n < TS_METRICS_MAX, "more than %d metrics", TS_METRICS_MAX);
    m->name[m->n] = name;
    m->value[m->n++] = value;
}

/* ---- run state ---- */

typedef struct run {
    const ts_train_cfg *cfg;
    ts_task *task;
    ts_ctx *c;
    ts_dist *dist;     /* NULL alone */
    int rank, world;
    ts_optim opt;
    ts_sched sched;
    int64_t step, data_pos;
    char dir[4096];
    FILE *metrics;
    char *recipe_yaml;
    /* several ranks */
    float share;              /* this rank's fraction of every global batch */
    ts_grad_buckets *buckets; /* train.overlap_allreduce: reduced during the last backward */
    double comm_s;            /* this step: seconds inside the gradients' communication calls */
    ts_status comm_st;        /* the first failure to start a bucket's all-reduce */
    ts_err *err;
    int *running;             /* indices of the TS_PARAM_RUNNING buffers, averaged every step */
    int on_device;            /* train.device: cuda: the task's device model trains */
    int host_stale;           /* on_device: steps taken since params were last copied back */
    int nrunning;
    double *stats;            /* [stop, loss, metrics..., running buffers...] summed over ranks */
} run;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static char *state_json(const run *R) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "format", 1);
    cJSON_AddNumberToObject(o, "step", (double)R->step);
    cJSON_AddNumberToObject(o, "data_position", (double)R->data_pos);
    cJSON_AddNumberToObject(o, "seed", (double)R->cfg->seed);
    cJSON *rng = cJSON_AddArrayToObject(o, "rng");
    for (int i = 0; i < 4; i++) {
        char hex[32];
        snprintf(hex, sizeof hex, "%016llx", (unsigned long long)R->c->rng.s[i]);
        cJSON_AddItemToArray(rng, cJSON_CreateString(hex));
    }
    cJSON_AddStringToObject(o, "task", R->task->type);
    if (R->task->data_state) { /* where the task's data stream stands */
        int64_t v[8];
        int n = R->task->data_state(R->task, v);
        cJSON *a = cJSON_AddArrayToObject(o, "data_stream");
        for (int i = 0; i < n && i < 8; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber((double)v[i]));
    }
    char *s = cJSON_Print(o);
    cJSON_Delete(o);
    return s;
}

static ts_status load_state(run *R, const char *path, ts_err *err) {
    char *text;
    ts_status st = ts_read_text(path, &text, err);
    if (st) return st;
    cJSON *o = cJSON_Parse(text);
    free(text);
    cJSON *step = cJSON_GetObjectItem(o, "step"), *pos = cJSON_GetObjectItem(o, "data_position");
    cJSON *rng = cJSON_GetObjectItem(o, "rng");
    if (!o || !cJSON_IsNumber(step) || !cJSON_IsNumber(pos) || !cJSON_IsArray(rng) ||
        cJSON_GetArraySize(rng) != 4) {
        cJSON_Delete(o);
        return ts_fail(err, TS_ERR_FORMAT, "%s: not a tessera train state (needs step, "
                       "data_position and rng)", path);
    }
    R->step = (int64_t)step->valuedouble;
    R->data_pos = (int64_t)pos->valuedouble;
    for (int i = 0; i < 4; i++) {
        cJSON *h = cJSON_GetArrayItem(rng, i);
        if (!cJSON_IsString(h)) {
            cJSON_Delete(o);
            return ts_fail(err, TS_ERR_FORMAT, "%s: rng[%d] is not a hex string", path, i);
        }
        R->c->rng.s[i] = strtoull(h->valuestring, NULL, 16);
    }
    cJSON *ds = cJSON_GetObjectItem(o, "data_stream");
    st = TS_OK;
    if (R->task->data_seek) {
        int64_t v[8];
        int n = 0;
        cJSON *x;
        if (!cJSON_IsArray(ds)) {
            cJSON_Delete(o);
            return ts_fail(err, TS_ERR_FORMAT, "%s: no data_stream: the checkpoint was not "
                           "written by a %s run", path, R->task->type);
        }
        cJSON_ArrayForEach(x, ds) if (n < 8 && cJSON_IsNumber(x)) v[n++] = (int64_t)x->valuedouble;
        st = R->task->data_seek(R->task, v, n, err);
    }
    cJSON_Delete(o);
    return st;
}

static ts_status save_rank0(run *R, ts_err *err) {
    char *st = state_json(R);
    char steps[32];
    snprintf(steps, sizeof steps, "%lld", (long long)R->cfg->steps);
    ts_ckpt_meta meta[] = { { "tessera.task", R->task->type }, { "train.steps", steps } };
    ts_status s = ts_ckpt_save(R->dir, R->step, R->task->params, &R->opt, st, R->recipe_yaml,
                               meta, 2, (int)R->cfg->keep, err);
    free(st);
    if (!s) ts_log(TS_LOG_INFO, "checkpoint: %s/checkpoints/step_%08lld", R->dir,
                   (long long)R->step);
    return s;
}

/* train.device: cuda: the parameters and moments copied back from the device, once after any
 * number of steps (an evaluation and a checkpoint at the same step share the copy). */
static ts_status host_current(run *R, ts_err *err) {
    if (!R->on_device || !R->host_stale) return TS_OK;
    ts_status s = R->task->device_sync(R->task, err);
    if (!s) R->host_stale = 0;
    return s;
}

/* Rank 0 writes the checkpoint; every rank leaves only when it is complete. */
static ts_status save(run *R, ts_err *err) {
    ts_status s0 = host_current(R, err);
    if (s0) return s0;
    if (R->rank == 0) {
        ts_status s = save_rank0(R, err);
        if (s) return s;
    }
    return ts_dist_barrier(R->dist, "rank 0 writes a checkpoint", err);
}

static ts_status prepare_dir(run *R, ts_err *err) {
    char tmp[4200];
    if (ts_mkdirs(R->dir, err))
        return ts_fail(err, TS_ERR_IO, "run folder %s: %s (set train.out_dir)", R->dir, err->msg);
    snprintf(tmp, sizeof tmp, "%s/recipe.yaml", R->dir);
    ts_status st = ts_write_atomic(tmp, R->recipe_yaml, strlen(R->recipe_yaml), err);
    if (st) return ts_fail(err, TS_ERR_IO, "run folder %s is not writable: %s", R->dir, err->msg);
    snprintf(tmp, sizeof tmp, "%s/metrics.jsonl", R->dir);
    R->metrics = fopen(tmp, "a");
    if (!R->metrics)
        return ts_fail(err, TS_ERR_IO, "%s: cannot open for writing: %s", tmp, strerror(errno));
    return TS_OK;
}

static void write_metrics(run *R, const char *kind, const ts_metrics *m, double lr, double sps) {
    if (!R->metrics) return; /* ranks other than 0 */
    fprintf(R->metrics, "{\"step\": %lld, \"kind\": \"%s\"", (long long)R->step, kind);
    if (lr >= 0) fprintf(R->metrics, ", \"lr\": %.8g, \"samples_per_s\": %.4g", lr, sps);
    for (int i = 0; i < m->n; i++) /* 9 digits: a float read back is the same float */
        fprintf(R->metrics, ", \"%s\": %.9g", m->name[i], m->value[i]);
    fprintf(R->metrics, "}\n");
    fflush(R->metrics);
}

static void fmt_metrics(char *buf, size_t n, const ts_metrics *m) {
    size_t k = 0;
    buf[0] = 0;
    for (int i = 0; i < m->n && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, " | %s %.4f", m->name[i], m->value[i]);
}

static ts_status evaluate(run *R, ts_err *err) {
    if (!R->task->eval) return TS_OK;
    ts_status s0 = host_current(R, err);
    if (s0) return s0;
    if (R->rank != 0) return ts_dist_barrier(R->dist, "rank 0 evaluates", err);
    ts_ctx *c = R->c;
    ts_rng keep = c->rng; /* evaluation must not shift the training stream */
    c->grad_enabled = 0;
    c->training = 0;
    ts_metrics m = { 0 };
    ts_status st = R->task->eval(R->task, c, &m, err);
    ts_ctx_reset(c);
    c->grad_enabled = 1;
    c->training = 1;
    c->rng = keep;
    if (st) return st;
    char line[512];
    fmt_metrics(line, sizeof line, &m);
    ts_log(TS_LOG_INFO, "eval step %lld%s", (long long)R->step, line);
    write_metrics(R, "eval", &m, -1, 0);
    return ts_dist_barrier(R->dist, "rank 0 evaluates", err);
}

static void fmt_eta(char *buf, size_t n, double s) {
    if (s < 0 || s > 1e7) snprintf(buf, n, "?");
    else if (s >= 3600) snprintf(buf, n, "%dh%02dm", (int)(s / 3600), (int)fmod(s / 60, 60));
    else if (s >= 60) snprintf(buf, n, "%dm%02ds", (int)(s / 60), (int)fmod(s, 60));
    else snprintf(buf, n, "%.0fs", s);
}

/* Threads per rank when train.threads is 0: all cores of this process's affinity mask, shared
 * with the other ranks of the machine when the launcher did not bind the ranks to cores. */
static int threads_per_rank(const ts_dist *d) {
    int procs = omp_get_num_procs();
    if (!d || d->local_world <= 1) return 0; /* keep the OpenMP default */
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    if (online > 0 && procs < online) return procs; /* bound: the mask is this rank's share */
    return procs / d->local_world > 1 ? procs / d->local_world : 1;
}

/* ---- several ranks: the reductions of a step ----
 *
 * Every rank multiplies its gradient by its share of the global batch and the ranks' sum is the
 * gradient of the whole batch. Without overlap that is one all-reduce of the gradient section
 * after the micro-batches. With train.overlap_allreduce the last micro-batch's backward hands
 * each gradient bucket over as soon as it is final (ts_backward_buckets), its all-reduce starts
 * at once and is advanced between tape nodes, and the step waits for all of them before
 * clipping. The arithmetic is the same either way (each element is share * g summed over
 * ranks), so the result is the same: bitwise with two ranks, whose sum does not depend on the
 * order, and to rounding with more, where MPI may add in another order for another size. */

static void bucket_ready(int k, float *g, int64_t n, void *user) {
    run *R = user;
    (void)k;
    for (int64_t i = 0; i < n; i++) g[i] *= R->share;
    if (R->comm_st) return; /* a start failed: the step reports it after backward */
    double t0 = now_s();
    R->comm_st = ts_dist_allreduce_start_f32(R->dist, g, n, R->err);
    R->comm_s += now_s() - t0;
}

static void bucket_poll(void *user) {
    run *R = user;
    double t0 = now_s();
    ts_dist_progress(R->dist);
    R->comm_s += now_s() - t0;
}

/* The micro-batch's backward: with overlap on the last micro-batch, the buckets' all-reduces
 * start during it. */
static void backward(run *R, ts_tensor *loss, int last) {
    if (R->buckets && last) ts_backward_buckets(R->c, loss, R->buckets, bucket_ready,
                                                bucket_poll, R);
    else ts_backward(R->c, loss);
}

/* Batch-norm running statistics, averaged over the ranks after every step and weighted by the
 * shares, like the gradients. Why this and not rank 0's copy broadcast (DDP's
 * broadcast_buffers) or synchronised batch norm: every rank normalised its rows with the mean
 * and variance of its own rows, so the running statistics that describe what training did are
 * the average of the ranks' (as timm's distribute_bn keeps them); the update is linear in the
 * batch mean, so the averaged running mean is exactly the one a process with the global batch
 * would keep, and the averaged running variance is the ranks' mean within-rank variance, which
 * misses only the spread of the ranks' means around the global mean (which the normalisation
 * never saw either). Rank 0's buffers alone would describe its share of the data only; SyncBN
 * would change what the model computes (and add a collective to every batch norm, forward and
 * backward). */
static void pack_running(run *R, double *dst) {
    for (int r = 0; r < R->nrunning; r++) {
        const ts_tensor *t = ts_params_get(R->task->params, R->running[r]);
        for (int64_t j = 0; j < t->numel; j++) *dst++ = (double)R->share * ts_f32(t)[j];
    }
}

static void unpack_running(run *R, const double *src) {
    for (int r = 0; r < R->nrunning; r++) {
        ts_tensor *t = ts_params_get(R->task->params, R->running[r]);
        for (int64_t j = 0; j < t->numel; j++) ts_f32(t)[j] = (float)*src++;
    }
}

/* Finish the sum of the weighted gradients of all ranks, and with it of the step's loss,
 * metrics, stop flag and running statistics: R->stats holds [stop, loss, metric values...]
 * weighted by this rank's share, the running buffers are appended here. */
static ts_status reduce_step(run *R, int nstats, double *comm_s, ts_err *err) {
    size_t n;
    float *g = ts_params_section(R->task->params, 1, &n);
    ts_status st;
    if (R->buckets) {
        if (R->comm_st) return R->comm_st;
        double t0 = now_s();
        st = ts_dist_wait(R->dist, "all-reduce of the gradient buckets", err);
        *comm_s = R->comm_s + now_s() - t0;
    } else {
        for (size_t i = 0; i < n; i++) g[i] *= R->share;
        double t0 = now_s();
        st = ts_dist_allreduce_sum_f32(R->dist, g, (int64_t)n, err);
        *comm_s = now_s() - t0;
    }
    R->comm_s = 0;
    if (st) return st;
    int nrun = 0;
    for (int r = 0; r < R->nrunning; r++)
        nrun += (int)ts_params_get(R->task->params, R->running[r])->numel;
    pack_running(R, R->stats + nstats);
    if ((st = ts_dist_allreduce_sum_f64(R->dist, R->stats, nstats + nrun, err))) return st;
    unpack_running(R, R->stats + nstats);
    return TS_OK;
}

/* Set up what several ranks need: the buckets, the list of running buffers, the stats array. */
static ts_status setup_ranks(run *R, ts_err *err) {
    const ts_params *p = R->task->params;
    int np = ts_params_count(p);
    int64_t nrun = 0;
    R->running = malloc((size_t)(np ? np : 1) * sizeof *R->running);
    if (!R->running) return ts_fail(err, TS_ERR_NOMEM, "out of memory");
    for (int i = 0; i < np; i++)
        if ((ts_params_flags(p, i) & (TS_PARAM_BUFFER | TS_PARAM_RUNNING)) ==
            (TS_PARAM_BUFFER | TS_PARAM_RUNNING)) {
            R->running[R->nrunning++] = i;
            nrun += ts_params_get(p, i)->numel;
        }
    R->stats = malloc((size_t)(2 + TS_METRICS_MAX + nrun) * sizeof *R->stats);
    if (!R->stats) return ts_fail(err, TS_ERR_NOMEM, "out of memory");
    if (R->cfg->overlap_allreduce)
        R->buckets = ts_grad_buckets_new(p, (size_t)(R->cfg->bucket_mib * (1 << 20)));
    R->err = err;
    if (R->rank == 0)
        ts_log(TS_LOG_INFO, "data parallel: %d ranks, each computes %g of each global batch of "
               "%lld; %.1f MiB of gradients all-reduced per step, %s; %d running statistics "
               "averaged", R->world, (double)R->share, (long long)R->task->batch_size,
               (double)ts_params_numel(p, 1) * 4 / (1 << 20),
               R->buckets ? "in buckets during backward" : "after backward", R->nrunning);
    if (R->rank == 0 && R->buckets)
        ts_log(TS_LOG_INFO, "data parallel: %d gradient buckets of about %g MiB",
               ts_grad_buckets_count(R->buckets), R->cfg->bucket_mib);
    return TS_OK;
}

/* err's message as "WHERE: train.device: cuda: MESSAGE" */
static ts_status device_fail(ts_recipe *r, ts_status st, ts_err *err) {
    char where[512], msg[sizeof err->msg];
    ts_recipe_where(r, "train.device", where, sizeof where);
    snprintf(msg, sizeof msg, "%s", err->msg);
    const char *m = strncmp(msg, "cuda: ", 6) ? msg : msg + 6; /* said once is enough */
    return ts_fail(err, st, "%s: train.device: cuda: %s", where, m);
}

ts_status ts_train_device_check(ts_recipe *r, const ts_train_cfg *cfg, const ts_optim_recipe *oc,
                                ts_task *task, int world, ts_err *err) {
    const char *why = !task->device_open ? "this task has no model on the device (the clip "
                                           "task has: open_clip's ViT and text towers)"
                      : world > 1 ? "one process only (data parallel runs on the cpu)"
                      : cfg->accum != 1 ? "train.accum must be 1"
                      : oc->clip_grad_norm > 0 ? "optim.clip_grad_norm must be 0"
                      : oc->name != 0 ? "optim.name must be adamw" : NULL;
    if (why) return device_fail(r, ts_fail(err, TS_ERR_UNSUPPORTED, "%s", why), err);
    ts_status st = task->device_check ? task->device_check(task, r, err) : TS_OK;
    return st ? device_fail(r, st, err) : TS_OK;
}

/* train.device: cuda: the task's device model, built from the parameters and moments as they
 * stand (initial or resumed). What the device path does not do is refused by name. */
static ts_status open_device(run *R, ts_recipe *r, const ts_optim_recipe *oc, ts_err *err) {
    ts_status st = ts_train_device_check(r, R->cfg, oc, R->task, R->world, err);
    if (st) return st;
    st = R->task->device_open(R->task, r, oc, R->cfg->precision == 1, err);
    if (st) return device_fail(r, st, err);
    R->on_device = 1;
    if (R->cfg->deterministic)
        ts_log(TS_LOG_INFO, "train.deterministic: not on the device, where the token "
               "embedding's gradient (and the tensor-core attention's dq) is summed with "
               "atomic adds in no fixed order");
    return TS_OK;
}

ts_status ts_train(ts_recipe *r, const ts_train_cfg *cfg, const ts_optim_recipe *oc,
                   ts_task *task, const ts_train_opts *opts, ts_err *err) {
    run R = { 0 };
    R.cfg = cfg;
    R.task = task;
    R.dist = opts ? opts->dist : NULL;
    R.rank = ts_dist_rank(R.dist);
    R.world = ts_dist_world(R.dist);
    ts_status st = TS_OK;
    if (cfg->threads > 0) omp_set_num_threads((int)cfg->threads);
    else if (threads_per_rank(R.dist) > 0) omp_set_num_threads(threads_per_rank(R.dist));
    if (cfg->deterministic) omp_set_dynamic(0);
    if (R.dist) R.dist->timeout_s = cfg->collective_timeout_s;

    /* This rank's share of every global batch, as a fraction of it. The shares sum to 1, so
     * the weighted sum of the ranks' gradients is the gradient of the global batch (also for a
     * task that builds the whole batch on every rank). */
    float share = 1.0f;
    R.share = 1.0f;
    if (R.world > 1) {
        int64_t B = task->batch_size;
        if (B < R.world)
            return ts_fail(err, TS_ERR_RECIPE, "data.batch_size %lld is smaller than the %d ranks: "
                           "every rank needs at least one sample of the global batch",
                           (long long)B, R.world);
        share = (float)((R.rank + 1) * B / R.world - R.rank * B / R.world) / (float)B;
        R.share = share;
    }

    ts_optim_cfg ocfg = { oc->name == 0 ? TS_OPTIM_ADAMW : TS_OPTIM_SGD, (float)oc->lr,
                          (float)oc->beta1, (float)oc->beta2, (float)oc->eps,
                          (float)oc->weight_decay, (float)oc->momentum };
    ts_optim_init(&R.opt, &ocfg);
    R.sched = (ts_sched){ oc->schedule == 0 ? TS_SCHED_COSINE
                          : oc->schedule == 1 ? TS_SCHED_LINEAR : TS_SCHED_CONSTANT,
                          (float)oc->lr, (float)oc->min_lr, oc->warmup, cfg->steps };
    R.c = ts_ctx_new(TS_CPU, 16u << 20, (uint64_t)cfg->seed * 0x9e3779b97f4a7c15ull + 1);
    R.c->precision = cfg->precision == 1 ? TS_PREC_BF16 : TS_PREC_F32;
    R.c->rank = R.rank;
    R.c->world = R.world;
    R.c->dist = R.dist;

    /* where the run lives: the resumed run's folder, or train.out_dir */
    char ck[4096];
    if (opts && opts->resume) {
        if ((st = ts_ckpt_find(opts->resume, ck, sizeof ck, err))) goto done;
        /* RUN/checkpoints/step_N -> RUN */
        snprintf(R.dir, sizeof R.dir, "%s", ck);
        char *slash = strstr(R.dir, "/checkpoints/");
        if (slash) *slash = 0;
        else snprintf(R.dir, sizeof R.dir, "%s", cfg->out_dir);
    } else {
        snprintf(R.dir, sizeof R.dir, "%s", cfg->out_dir);
    }
    R.recipe_yaml = ts_recipe_dump(r);

    if (opts && opts->resume) {
        char path[4200];
        snprintf(path, sizeof path, "%s/model.safetensors", ck);
        if ((st = ts_ckpt_load_model(task->params, path, 0, err))) goto done;
        snprintf(path, sizeof path, "%s/optim.safetensors", ck);
        if ((st = ts_ckpt_load_optim(task->params, &R.opt, path, err))) goto done;
        snprintf(path, sizeof path, "%s/state.json", ck);
        if ((st = load_state(&R, path, err))) goto done;
        ts_log(TS_LOG_INFO, "resumed from %s at step %lld", ck, (long long)R.step);
    }
    if (R.world > 1) {
        /* Every rank starts from rank 0's weights, so that the replicas agree even if a rank
         * initialised or loaded them differently. Dropout and masking draw from a stream of
         * their own on each rank (rank 0 keeps the saved one). */
        size_t n;
        float *w = ts_params_section(task->params, 0, &n);
        if ((st = ts_dist_broadcast(R.dist, w, n * sizeof *w, 0, err))) goto done;
        for (int i = 0; i < 4; i++)
            R.c->rng.s[i] ^= (uint64_t)R.rank * 0xbf58476d1ce4e5b9ull;
        if ((st = setup_ranks(&R, err))) goto done;
    }
    if (cfg->device == 1 && (st = open_device(&R, r, oc, err))) goto done;
    /* only now, with the checkpoint read and checked (and the device open), is anything
     * written */
    if (R.rank == 0 && (st = prepare_dir(&R, err))) goto done;
    ts_log(TS_LOG_INFO, "training %s: %lld parameters (%.1f MiB with grads and optimizer state), "
           "%lld steps of %lld x %lld samples, run folder %s", task->type,
           (long long)ts_params_numel(task->params, 1),
           (double)ts_params_bytes(task->params) / (1 << 20), (long long)cfg->steps,
           (long long)cfg->accum, (long long)task->batch_size, R.dir);

    /* an evaluation before the first step shows where learning starts (chance) */
    if (R.step == 0 && cfg->eval_every > 0)
        if ((st = evaluate(&R, err))) goto done;
    double t_start = now_s(), t_log = t_start;
    int64_t step0 = R.step, log_steps = 0;
    double loss_acc = 0, comm_acc = 0;
    int stop_all = 0; /* several ranks: some rank was asked to stop during the last step */
    ts_metrics last = { 0 };
    while (R.step < cfg->steps) {
        int stop = R.world > 1 ? stop_all : opts && opts->stop && *opts->stop;
        if (stop) {
            ts_log(TS_LOG_INFO, "interrupted at step %lld: saving a checkpoint",
                   (long long)R.step);
            if ((st = save(&R, err))) goto done;
            st = ts_fail(err, TS_ERR_INTERRUPTED, "interrupted at step %lld; resume with "
                         "--resume %s", (long long)R.step, R.dir);
            goto done;
        }
        float lr = ts_sched_lr(&R.sched, R.step);
        float gnorm = 0.0f;
        double step_loss = 0;
        if (R.on_device) {
            ts_metrics m = { 0 };
            float lv = 0.0f;
            if ((st = task->device_step(task, R.opt.t + 1, lr, &lv, &m, err))) goto done;
            R.opt.t++;
            R.host_stale = 1;
            R.data_pos++;
            if (!isfinite(lv)) {
                st = ts_fail(err, TS_ERR_DATA, "loss is %g at step %lld (micro-batch %lld): "
                             "training diverged; lower optim.lr", lv, (long long)R.step,
                             (long long)R.data_pos - 1);
                goto done;
            }
            step_loss = lv;
            for (int i = 0; i < m.n; i++) ts_metrics_set(&last, m.name[i], m.value[i]);
        } else {
            ts_params_zero_grad(task->params);
            for (int64_t a = 0; a < cfg->accum; a++) {
                ts_metrics m = { 0 };
                ts_tensor *loss = task->loss(task, R.c, R.data_pos, &m, err);
                if (!loss) {
                    st = err->code ? err->code : TS_ERR_DATA;
                    goto done;
                }
                R.data_pos++;
                float lv = ts_f32(loss)[0];
                if (!isfinite(lv)) {
                    st = ts_fail(err, TS_ERR_DATA, "loss is %g at step %lld (micro-batch "
                                 "%lld): training diverged; lower optim.lr or set "
                                 "optim.clip_grad_norm", lv, (long long)R.step,
                                 (long long)R.data_pos - 1);
                    goto done;
                }
                if (cfg->accum > 1) loss = ts_scale(R.c, loss, 1.0f / (float)cfg->accum);
                backward(&R, loss, a == cfg->accum - 1);
                step_loss += lv / (double)cfg->accum;
                for (int i = 0; i < m.n; i++)
                    ts_metrics_set(&last, m.name[i], (a ? last.value[i] : 0) + m.value[i] /
                                   (double)cfg->accum);
                ts_ctx_reset(R.c);
            }
            if (R.world > 1) {
                double *stats = R.stats, comm_s = 0;
                stats[0] = opts && opts->stop && *opts->stop;
                stats[1] = share * step_loss;
                for (int i = 0; i < last.n; i++) stats[2 + i] = share * last.value[i];
                if ((st = reduce_step(&R, 2 + last.n, &comm_s, err))) goto done;
                stop_all = stats[0] > 0;
                step_loss = stats[1];
                for (int i = 0; i < last.n; i++) last.value[i] = stats[2 + i];
                comm_acc += comm_s;
            }
            gnorm = ts_clip_grad_norm(task->params, (float)oc->clip_grad_norm);
            ts_optim_step(&R.opt, task->params, lr);
            if (task->after_step) task->after_step(task);
        }
        R.step++;
        loss_acc += step_loss;
        log_steps++;
        if (R.step == step0 + 1 && !R.on_device)
            ts_log(TS_LOG_INFO, "step arena: peak %.1f MiB after the first step",
                   (double)ts_arena_high_water(R.c->step) / (1 << 20));
        double t = now_s();
        if (R.step % cfg->log_every == 0 || R.step == cfg->steps) {
            double sps = (double)(log_steps * cfg->accum * task->batch_size) / (t - t_log);
            double per_step = (t - t_start) / (double)(R.step - step0);
            char eta[32], extra[256], comm[64] = "";
            fmt_eta(eta, sizeof eta, per_step * (double)(cfg->steps - R.step));
            ts_metrics m = last;
            ts_metrics_set(&m, "loss", loss_acc / (double)log_steps);
            if (!R.on_device) ts_metrics_set(&m, "grad_norm", gnorm); /* not computed there */
            if (R.world > 1) { /* the gradient all-reduce not hidden by backward, ms/step */
                ts_metrics_set(&m, "allreduce_ms", 1e3 * comm_acc / (double)log_steps);
                snprintf(comm, sizeof comm, " | all-reduce %.2f ms exposed", 1e3 * comm_acc /
                         (double)log_steps);
            }
            fmt_metrics(extra, sizeof extra, &last);
            if (opts && opts->progress) fprintf(stderr, "\r\033[K");
            ts_log(TS_LOG_INFO, "step %lld/%lld | loss %.4f%s | lr %.2e | %.0f samples/s%s | "
                   "ETA %s", (long long)R.step, (long long)cfg->steps,
                   loss_acc / (double)log_steps, extra, lr, sps, comm, eta);
            write_metrics(&R, "train", &m, lr, sps);
            loss_acc = 0;
            comm_acc = 0;
            log_steps = 0;
            t_log = t;
        } else if (opts && opts->progress && R.rank == 0) {
            fprintf(stderr, "\r\033[Kstep %lld/%lld | loss %.4f", (long long)R.step,
                    (long long)cfg->steps, step_loss);
        }
        if (cfg->eval_every > 0 && R.step % cfg->eval_every == 0 && R.step < cfg->steps)
            if ((st = evaluate(&R, err))) goto done;
        if (cfg->ckpt_every > 0 && R.step % cfg->ckpt_every == 0 && R.step < cfg->steps)
            if ((st = save(&R, err))) goto done;
    }
    /* steps 0 (the initial weights as a checkpoint): the evaluation before the first step,
     * if any, was the last one */
    if (!(cfg->steps == 0 && cfg->eval_every > 0) && (st = evaluate(&R, err))) goto done;
    if ((st = save(&R, err))) goto done;
    ts_log(TS_LOG_INFO, "done: %lld steps in %.1f s; step arena peak %.1f MiB", (long long)R.step,
           now_s() - t_start, (double)ts_arena_high_water(R.c->step) / (1 << 20));
done:
    if (R.on_device) task->device_close(task);
    if (R.metrics) fclose(R.metrics);
    ts_grad_buckets_free(R.buckets);
    free(R.running);
    free(R.stats);
    free(R.recipe_yaml);
    ts_ctx_free(R.c);
    return st;
}
