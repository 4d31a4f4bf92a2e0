/* dist.c: the processes of a data-parallel run, over MPI or alone.
 *
 * Every collective the trainer needs (sum all-reduce, broadcast, barrier) goes through the few
 * functions here, so the rest of tessera compiles and runs the same with or without MPI. Built
 * with MPI (TS_HAVE_MPI), MPI is initialised only when a launcher started the process (mpirun,
 * srun); a plain `tessera train` stays a group of one and never touches MPI, which keeps
 * single-process runs free of MPI's start-up cost and of its allocations under the sanitizers.
 *
 * A collective that does not finish within the timeout aborts the whole job with a message that
 * names the rank that waited: the others died or hang, and without the deadline the survivors
 * would wait forever. The waiting is a nonblocking collective polled against the deadline. The
 * gradient all-reduce can also be started without waiting (ts_dist_allreduce_start_f32), so
 * that it overlaps backward, and waited for later with the same deadline.
 *
 * What this file is not: a communication library. There is no point-to-point messaging, no
 * communicator other than the world, and no GPU collective (NCCL is planned beside these
 * functions, its unique id broadcast with ts_dist_broadcast; see docs/distributed.md).
 */
#include "tessera-impl.h"

#include <sched.h>
#include <string.h>
#include <stdarg.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#ifdef TS_HAVE_MPI
#include <limits.h>
#include <mpi.h>
#endif

/* The size of the job a launcher started, from the variables it sets: OpenMPI's mpirun, PMIx
 * (mpirun of OpenMPI 4+, srun --mpi=pmix), PMI (MPICH's hydra, srun --mpi=pmi2) and a Slurm
 * job step of several tasks. 0 when no launcher is seen. */
static int launcher_world(const char **var) {
    static const char *const vars[] = { "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "PMI_SIZE",
                                        "SLURM_STEP_NUM_TASKS", NULL };
    for (int i = 0; vars[i]; i++) {
        const char *v = getenv(vars[i]);
        if (v && atoi(v) > 0) {
            if (var) *var = vars[i];
            return atoi(v);
        }
    }
    /* PMIx without a size variable still sets the rank. */
    if (getenv("PMIX_RANK")) {
        if (var) *var = "PMIX_RANK";
        return 1;
    }
    return 0;
}

int ts_dist_available(void) {
#ifdef TS_HAVE_MPI
    return 1;
#else
    return 0;
#endif
}

ts_status ts_dist_init(ts_dist *d, int *argc, char ***argv, ts_err *err) {
    memset(d, 0, sizeof *d);
    d->world = d->local_world = 1;
    d->timeout_s = 300;
    const char *var = NULL;
    int launched = launcher_world(&var);
    /* TESSERA_MPI=0 keeps a process alone even under a launcher (a tool run by srun). */
    const char *force = getenv("TESSERA_MPI");
    if (force && !strcmp(force, "0")) return TS_OK;
    int want = launched > 0 || (force && !strcmp(force, "1"));
    if (!want) return TS_OK;
#ifdef TS_HAVE_MPI
    int provided = 0;
    if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
        return ts_fail(err, TS_ERR_IO, "MPI_Init failed (launched with %s set)",
                       var ? var : "TESSERA_MPI=1");
    d->initialized = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &d->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &d->world);
    /* The ranks on this machine share its cores; the trainer divides them. */
    MPI_Comm local;
    if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, d->rank, MPI_INFO_NULL,
                            &local) == MPI_SUCCESS) {
        MPI_Comm_rank(local, &d->local_rank);
        MPI_Comm_size(local, &d->local_world);
        MPI_Comm_free(&local);
    }
    /* Errors come back as codes, so that a failed collective is reported with its rank. */
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    return TS_OK;
#else
    (void)argc;
    (void)argv;
    if (launched > 1)
        return ts_fail(err, TS_ERR_UNSUPPORTED, "started by a launcher as one of %d processes "
                       "(%s is set), but this tessera was built without MPI, so every process "
                       "would train alone on the same run folder; install libopenmpi-dev and "
                       "rebuild (cmake -DTESSERA_MPI=ON)", launched, var);
    return TS_OK;
#endif
}

void ts_dist_finalize(ts_dist *d) {
    if (!d) return;
    free(d->pending);
    d->pending = NULL;
    d->npending = d->cap_pending = 0;
    if (!d->initialized) return;
#ifdef TS_HAVE_MPI
    MPI_Finalize();
#endif
    d->initialized = 0;
}

int ts_dist_rank(const ts_dist *d) { return d ? d->rank : 0; }
int ts_dist_world(const ts_dist *d) { return d ? d->world : 1; }

void ts_dist_abort(ts_dist *d, int code, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "tessera: error: rank %d: %s\n", ts_dist_rank(d), msg);
    fflush(stderr);
#ifdef TS_HAVE_MPI
    if (d && d->initialized) MPI_Abort(MPI_COMM_WORLD, code);
#endif
    _exit(code);
}

#ifdef TS_HAVE_MPI
static double dist_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Wait for n requests, polling against the deadline: spin for the first millisecond (small
 * collectives finish there), then yield the core, then sleep a millisecond between polls.
 * OpenMPI advances nonblocking collectives inside MPI_Testall, so the polling is also what
 * moves the data. */
static ts_status wait_all(ts_dist *d, MPI_Request *req, int n, const char *what, ts_err *err) {
    double t0 = dist_now();
    for (;;) {
        int done = 0;
        int rc = MPI_Testall(n, req, &done, MPI_STATUSES_IGNORE);
        if (rc != MPI_SUCCESS) {
            char s[MPI_MAX_ERROR_STRING];
            int len = 0;
            MPI_Error_string(rc, s, &len);
            return ts_fail(err, TS_ERR_IO, "rank %d: %s failed: %s", d->rank, what, s);
        }
        if (done) break;
        double waited = dist_now() - t0;
        if (d->timeout_s > 0 && waited > d->timeout_s)
            ts_dist_abort(d, 1, "collective timed out after %.0f s (a rank died or hangs): %s",
                          d->timeout_s, what);
        if (waited < 1e-3) continue;
        if (waited < 0.1) sched_yield();
        else nanosleep(&(struct timespec){ 0, 1000000 }, NULL);
    }
    d->comm_s += dist_now() - t0;
    return TS_OK;
}

/* Buckets of at most this many elements: MPI counts are int, and several buckets in flight let
 * the library pipeline them. */
#define TS_DIST_BUCKET ((int64_t)1 << 24)

static ts_status allreduce(ts_dist *d, void *buf, int64_t n, MPI_Datatype type, size_t esize,
                           const char *what, ts_err *err) {
    if (n <= 0) return TS_OK;
    int nb = (int)((n + TS_DIST_BUCKET - 1) / TS_DIST_BUCKET);
    if (d->timeout_s <= 0) { /* no deadline: the blocking call, bucket by bucket */
        double t0 = dist_now();
        for (int b = 0; b < nb; b++) {
            int64_t off = (int64_t)b * TS_DIST_BUCKET;
            int cnt = (int)(n - off < TS_DIST_BUCKET ? n - off : TS_DIST_BUCKET);
            if (MPI_Allreduce(MPI_IN_PLACE, (char *)buf + (size_t)off * esize, cnt, type, MPI_SUM,
                              MPI_COMM_WORLD) != MPI_SUCCESS)
                return ts_fail(err, TS_ERR_IO, "rank %d: %s failed", d->rank, what);
        }
        d->comm_s += dist_now() - t0;
        return TS_OK;
    }
    MPI_Request *req = malloc((size_t)nb * sizeof *req);
    if (!req) return ts_fail(err, TS_ERR_NOMEM, "out of memory");
    for (int b = 0; b < nb; b++) {
        int64_t off = (int64_t)b * TS_DIST_BUCKET;
        int cnt = (int)(n - off < TS_DIST_BUCKET ? n - off : TS_DIST_BUCKET);
        if (MPI_Iallreduce(MPI_IN_PLACE, (char *)buf + (size_t)off * esize, cnt, type, MPI_SUM,
                           MPI_COMM_WORLD, &req[b]) != MPI_SUCCESS) {
            free(req);
            return ts_fail(err, TS_ERR_IO, "rank %d: %s failed to start", d->rank, what);
        }
    }
    ts_status st = wait_all(d, req, nb, what, err);
    free(req);
    return st;
}
#endif

ts_status ts_dist_allreduce_sum_f32(ts_dist *d, float *buf, int64_t n, ts_err *err) {
    if (!d || !d->initialized || d->world == 1) return TS_OK;
#ifdef TS_HAVE_MPI
    char what[96];
    snprintf(what, sizeof what, "all-reduce of %lld floats", (long long)n);
    return allreduce(d, buf, n, MPI_FLOAT, sizeof(float), what, err);
#else
    (void)buf;
    (void)n;
    (void)err;
    return TS_OK;
#endif
}

ts_status ts_dist_allreduce_sum_f64(ts_dist *d, double *buf, int64_t n, ts_err *err) {
    if (!d || !d->initialized || d->world == 1) return TS_OK;
#ifdef TS_HAVE_MPI
    char what[96];
    snprintf(what, sizeof what, "all-reduce of %lld doubles", (long long)n);
    return allreduce(d, buf, n, MPI_DOUBLE, sizeof(double), what, err);
#else
    (void)buf;
    (void)n;
    (void)err;
    return TS_OK;
#endif
}

/* ---- reductions that overlap computation ----
 *
 * Started with MPI_Iallreduce and kept in d->pending until ts_dist_wait. OpenMPI has no thread
 * of its own that advances them (ompi_info: "OMPI progress: no"): the rounds of a nonblocking
 * collective, and on shared memory the copies themselves, happen inside MPI calls. So the
 * caller calls ts_dist_progress often (the trainer does after every backward node), which costs
 * a few microseconds when there is nothing to do. The timeout is kept by ts_dist_wait. */

ts_status ts_dist_allreduce_start_f32(ts_dist *d, float *buf, int64_t n, ts_err *err) {
    if (!d || !d->initialized || d->world == 1 || n <= 0) return TS_OK;
#ifdef TS_HAVE_MPI
    for (int64_t off = 0; off < n; off += TS_DIST_BUCKET) {
        int cnt = (int)(n - off < TS_DIST_BUCKET ? n - off : TS_DIST_BUCKET);
        if (d->npending == d->cap_pending) { /* grows on the first step only */
            int cap = d->cap_pending ? 2 * d->cap_pending : 64;
            MPI_Request *r = realloc(d->pending, (size_t)cap * sizeof *r);
            if (!r) return ts_fail(err, TS_ERR_NOMEM, "out of memory");
            d->pending = r;
            d->cap_pending = cap;
        }
        MPI_Request *req = (MPI_Request *)d->pending + d->npending;
        if (MPI_Iallreduce(MPI_IN_PLACE, buf + off, cnt, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD,
                           req) != MPI_SUCCESS)
            return ts_fail(err, TS_ERR_IO, "rank %d: all-reduce of %d floats failed to start",
                           d->rank, cnt);
        d->npending++;
    }
    return TS_OK;
#else
    (void)buf;
    (void)err;
    return TS_OK;
#endif
}

void ts_dist_progress(ts_dist *d) {
#ifdef TS_HAVE_MPI
    if (!d || !d->npending) return;
    int done = 0;
    int rc = MPI_Testall(d->npending, d->pending, &done, MPI_STATUSES_IGNORE);
    if (rc != MPI_SUCCESS) { /* the job cannot go on; nobody should wait for this rank */
        char s[MPI_MAX_ERROR_STRING];
        int len = 0;
        MPI_Error_string(rc, s, &len);
        ts_dist_abort(d, 1, "all-reduce of gradient buckets failed: %s", s);
    }
#else
    (void)d;
#endif
}

ts_status ts_dist_wait(ts_dist *d, const char *what, ts_err *err) {
    if (!d || !d->npending) return TS_OK;
#ifdef TS_HAVE_MPI
    int n = d->npending;
    d->npending = 0;
    return wait_all(d, d->pending, n, what, err);
#else
    (void)what;
    (void)err;
    return TS_OK;
#endif
}

ts_status ts_dist_allgather_f32(ts_dist *d, const float *send, int64_t n, float *recv,
                                int64_t *counts, ts_err *err) {
    if (!d || !d->initialized || d->world == 1) {
        if (counts) counts[0] = n;
        if (recv && recv != send) memcpy(recv, send, (size_t)n * sizeof *send);
        return TS_OK;
    }
#ifdef TS_HAVE_MPI
    int64_t *cnt = malloc((size_t)d->world * sizeof *cnt);
    int *ci = malloc((size_t)d->world * sizeof *ci), *di = malloc((size_t)d->world * sizeof *di);
    ts_status st = TS_OK;
    if (!cnt || !ci || !di) {
        st = ts_fail(err, TS_ERR_NOMEM, "out of memory");
        goto done;
    }
    double t0 = dist_now();
    if (MPI_Allgather(&n, 1, MPI_INT64_T, cnt, 1, MPI_INT64_T, MPI_COMM_WORLD) != MPI_SUCCESS) {
        st = ts_fail(err, TS_ERR_IO, "rank %d: all-gather of the row counts failed", d->rank);
        goto done;
    }
    int64_t off = 0;
    for (int r = 0; r < d->world; r++) {
        if (cnt[r] < 0 || off + cnt[r] > INT32_MAX) {
            st = ts_fail(err, TS_ERR_IO, "rank %d: all-gather of %lld floats is too large for "
                         "one MPI call", d->rank, (long long)(off + cnt[r]));
            goto done;
        }
        ci[r] = (int)cnt[r];
        di[r] = (int)off;
        off += cnt[r];
        if (counts) counts[r] = cnt[r];
    }
    if (!recv) goto done; /* the counts only */
    if (d->timeout_s <= 0) {
        if (MPI_Allgatherv(send, (int)n, MPI_FLOAT, recv, ci, di, MPI_FLOAT, MPI_COMM_WORLD) !=
            MPI_SUCCESS)
            st = ts_fail(err, TS_ERR_IO, "rank %d: all-gather of %lld floats failed", d->rank,
                         (long long)off);
        d->comm_s += dist_now() - t0;
    } else {
        MPI_Request req;
        if (MPI_Iallgatherv(send, (int)n, MPI_FLOAT, recv, ci, di, MPI_FLOAT, MPI_COMM_WORLD,
                            &req) != MPI_SUCCESS)
            st = ts_fail(err, TS_ERR_IO, "rank %d: all-gather failed to start", d->rank);
        else
            st = wait_all(d, &req, 1, "all-gather of embeddings", err);
    }
done:
    free(cnt);
    free(ci);
    free(di);
    return st;
#else
    (void)err;
    return TS_OK;
#endif
}

ts_status ts_dist_broadcast(ts_dist *d, void *buf, size_t bytes, int root, ts_err *err) {
    if (!d || !d->initialized || d->world == 1) return TS_OK;
#ifdef TS_HAVE_MPI
    size_t chunk = (size_t)INT_MAX / 2 + 1; /* 1 GiB per request: MPI counts are int */
    int nb = (int)((bytes + chunk - 1) / chunk);
    if (nb == 0) return TS_OK;
    MPI_Request *req = malloc((size_t)nb * sizeof *req);
    if (!req) return ts_fail(err, TS_ERR_NOMEM, "out of memory");
    for (int b = 0; b < nb; b++) {
        size_t off = (size_t)b * chunk, cnt = bytes - off < chunk ? bytes - off : chunk;
        if (MPI_Ibcast((char *)buf + off, (int)cnt, MPI_BYTE, root, MPI_COMM_WORLD, &req[b]) !=
            MPI_SUCCESS) {
            free(req);
            return ts_fail(err, TS_ERR_IO, "rank %d: broadcast failed to start", d->rank);
        }
    }
    char what[96];
    snprintf(what, sizeof what, "broadcast of %zu bytes from rank %d", bytes, root);
    ts_status st = wait_all(d, req, nb, what, err);
    free(req);
    return st;
#else
    (void)buf;
    (void)bytes;
    (void)root;
    (void)err;
    return TS_OK;
#endif
}

ts_status ts_dist_barrier(ts_dist *d, const char *what, ts_err *err) {
    if (!d || !d->initialized || d->world == 1) return TS_OK;
#ifdef TS_HAVE_MPI
    MPI_Request req;
    if (MPI_Ibarrier(MPI_COMM_WORLD, &req) != MPI_SUCCESS)
        return ts_fail(err, TS_ERR_IO, "rank %d: barrier failed to start", d->rank);
    char label[160];
    snprintf(label, sizeof label, "barrier (%s)", what ? what : "waiting for the other ranks");
    return wait_all(d, &req, 1, label, err);
#else
    (void)what;
    (void)err;
    return TS_OK;
#endif
}
