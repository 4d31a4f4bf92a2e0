/* cmd_clip.c: the verbs that use a trained CLIP model, `tessera embed` and `tessera eval`.
 *
 * Both open the model with ts_clip_load (a run folder, a checkpoint folder or a safetensors
 * file with its recipe) and read images through loaders/' worker pipeline with the eval
 * transform the task gives (ts_clip_eval_pipe_cfg): WebDataset shards (a brace pattern), a
 * folder (ImageNet-style class folders, or a flat folder of images) or a CSV of image paths.
 *
 *   embed   writes embeddings (N, E) float32 with their ids, in HDF5 (libhdf5's C API) or
 *           .npy + an ids sidecar, atomically (a temporary file, fsync, rename). A corrupt
 *           sample is skipped and listed in the output with its reason.
 *   eval    zero-shot classification (open_clip's prompt-template ensembling) and image-text
 *           retrieval through ts_clip_evaluate, the code the training-time evaluation runs.
 *
 * Exit codes as every verb: 0 ok, 1 runtime failure (a file, a checkpoint that does not fit
 * its recipe, data without a usable sample), 2 usage.
 *
 * What it is not: a feature store or a nearest-neighbour index; the output is a plain array.
 */
#include <errno.h>
#include <fcntl.h>
#ifdef TS_HAVE_HDF5
#include <hdf5.h>
#endif
#include <limits.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tessera.h"
#include "loaders.h"
#include "cli.h"

#define ID_BYTES 1024 /* an id (path, shard:key) as the prepare hook stores it, NUL included */
#define MAX_SETS 64

/* ---------------------------------------------------------------------------------------- */
/* Options shared by the verbs                                                              */

typedef struct common_opts {
    const char *checkpoint, *recipe;
    const char *sets[MAX_SETS + 1];
    int nsets;
    int batch, workers, threads, quiet;
    char workers_set[64];
} common_opts;

/* A positive integer option value, or -1. */
static int parse_count(const char *verb, const char *opt, const char *v, int max) {
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < 1 || x > max) {
        fprintf(stderr, "tessera %s: %s expects an integer in 1..%d, got '%s'\n", verb, opt, max,
                v);
        return -1;
    }
    return (int)x;
}

/* If argv[*i] is option name (as "--name VALUE" or "--name=VALUE"), its value into *val
 * (advancing *i) and 1; 0 when it is another argument; -1 when the value is missing. */
static int opt_value(const char *verb, int argc, char **argv, int *i, const char *name,
                     const char **val) {
    const char *a = argv[*i];
    size_t n = strlen(name);
    if (strncmp(a, name, n)) return 0;
    if (a[n] == '=') {
        *val = a + n + 1;
        return 1;
    }
    if (a[n]) return 0;
    if (*i + 1 >= argc) {
        fprintf(stderr, "tessera %s: %s needs a value (see tessera %s --help)\n", verb, name,
                verb);
        return -1;
    }
    *val = argv[++*i];
    return 1;
}

/* One of the options every verb here takes: 1 taken, 0 not one of them, -1 usage error. */
static int common_opt(const char *verb, int argc, char **argv, int *i, common_opts *o) {
    const char *v;
    int k;
    if ((k = opt_value(verb, argc, argv, i, "--checkpoint", &v))) {
        if (k > 0) o->checkpoint = v;
        return k;
    }
    if ((k = opt_value(verb, argc, argv, i, "--recipe", &v))) {
        if (k > 0) o->recipe = v;
        return k;
    }
    if ((k = opt_value(verb, argc, argv, i, "--set", &v))) {
        if (k < 0) return k;
        if (o->nsets == MAX_SETS) {
            fprintf(stderr, "tessera %s: at most %d --set\n", verb, MAX_SETS);
            return -1;
        }
        o->sets[o->nsets++] = v;
        return 1;
    }
    if ((k = opt_value(verb, argc, argv, i, "--batch", &v))) {
        if (k < 0 || (o->batch = parse_count(verb, "--batch", v, 1 << 16)) < 0) return -1;
        return 1;
    }
    if ((k = opt_value(verb, argc, argv, i, "--workers", &v))) {
        if (k < 0 || (o->workers = parse_count(verb, "--workers", v, 256)) < 0) return -1;
        return 1;
    }
    if ((k = opt_value(verb, argc, argv, i, "--threads", &v))) {
        if (k < 0 || (o->threads = parse_count(verb, "--threads", v, 4096)) < 0) return -1;
        return 1;
    }
    if (!strcmp(argv[*i], "--quiet")) {
        o->quiet = 1;
        return 1;
    }
    return 0;
}

static int fail(const ts_err *err) {
    fprintf(stderr, "tessera: error: %s\n", err->msg);
    return 1;
}

/* Open the model of o->checkpoint; the number of loader workers goes into the recipe, so that
 * the task's pool of tokenizers has one per worker. */
static ts_status open_model(common_opts *o, ts_clip_model *m, ts_err *err) {
    if (o->quiet) ts_log_set_level(TS_LOG_WARN);
    if (o->threads > 0) omp_set_num_threads(o->threads);
    if (o->workers > 0) {
        snprintf(o->workers_set, sizeof o->workers_set, "data.workers=%d", o->workers);
        o->sets[o->nsets++] = o->workers_set;
    }
    ts_clip_load_opts lo = { o->recipe, o->sets, o->nsets };
    return ts_clip_load(m, o->checkpoint, &lo, err);
}

/* ---------------------------------------------------------------------------------------- */
/* Progress on stderr                                                                       */

typedef struct progress {
    const char *what;  /* "images", "texts" */
    int64_t total;     /* -1 when unknown (shards) */
    double t0, last;
    int tty, quiet, shown;
} progress;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void progress_init(progress *p, const char *what, int64_t total, int quiet) {
    memset(p, 0, sizeof *p);
    p->what = what;
    p->total = total;
    p->t0 = p->last = now_s();
    p->tty = isatty(2);
    p->quiet = quiet;
}

/* A line "N/TOTAL images | R/s | ETA T" on a terminal (redrawn at most 5 times a second),
 * elsewhere every 10 seconds; final ends the line. */
static void progress_show(progress *p, int64_t done, int final) {
    double t = now_s(), dt = t - p->t0;
    if (p->quiet || (!final && t - p->last < (p->tty ? 0.2 : 10.0))) return;
    if (final && !p->shown && !p->tty) return; /* short runs: the summary says it all */
    p->last = t;
    p->shown = 1;
    double rate = dt > 0 ? (double)done / dt : 0;
    char eta[48] = "";
    if (p->total > 0 && rate > 0 && !final) {
        double s = (double)(p->total - done) / rate;
        if (s >= 3600) snprintf(eta, sizeof eta, " | ETA %dh%02dm", (int)(s / 3600), (int)fmod(s / 60, 60));
        else if (s >= 60) snprintf(eta, sizeof eta, " | ETA %dm%02ds", (int)(s / 60), (int)fmod(s, 60));
        else snprintf(eta, sizeof eta, " | ETA %.0fs", s);
    }
    char of[32] = "";
    if (p->total > 0) snprintf(of, sizeof of, "/%lld", (long long)p->total);
    fprintf(stderr, "%s%lld%s %s | %.1f/s%s%s", p->tty ? "\r\033[K" : "", (long long)done, of,
            p->what, rate, eta, p->tty && !final ? "" : "\n");
    fflush(stderr);
}

static void progress_cb(void *user, int64_t samples) { progress_show(user, samples, 0); }

/* ---------------------------------------------------------------------------------------- */
/* Image sources                                                                            */

static int has_suffix(const char *s, const char *suf) {
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && !strcasecmp(s + n - m, suf);
}

static int is_dir(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static int is_csv(const char *p) { return has_suffix(p, ".csv") || has_suffix(p, ".tsv"); }

/* WebDataset shards of a pattern, each checked to exist, so that a mistyped pattern is an error
 * and not a run of skipped shards. */
static ts_status open_shards(const char *spec, ts_source **src, ts_err *err) {
    char **list;
    int64_t n;
    ts_status st = ts_shard_list_expand(spec, &list, &n, err);
    if (st) return st;
    for (int64_t i = 0; i < n && !st; i++) {
        struct stat sb;
        if (stat(list[i], &sb) != 0)
            st = ts_fail(err, TS_ERR_IO, "%s: no such shard%s%s%s", list[i],
                         strcmp(list[i], spec) ? " (from " : "",
                         strcmp(list[i], spec) ? spec : "", strcmp(list[i], spec) ? ")" : "");
    }
    ts_shard_list_free(list, n);
    if (st) return st;
    return ts_wds_source_new(src, spec, 0, err);
}

/* The images of spec: a folder (images directly in it, else class folders), a CSV/TSV of image
 * paths (column csv_key, open_clip's "filepath" when NULL), or WebDataset shards. *count is the
 * number of samples when known, else -1. */
static ts_status open_images(const char *spec, const char *csv_key, ts_source **src,
                             int64_t *count, ts_err *err) {
    *count = -1;
    if (is_dir(spec)) {
        ts_folder *f;
        ts_status st = ts_folder_open_flat(&f, spec, err);
        if (st == TS_ERR_DATA) st = ts_folder_open(&f, spec, err);
        if (st) return st;
        *count = ts_folder_count(f);
        return ts_folder_source_new(src, f, 0, err);
    }
    if (is_csv(spec)) {
        ts_csv *c;
        ts_csv_spec cs = { spec, csv_key, "", 0 };
        ts_status st = ts_csv_open(&c, &cs, err);
        if (st) return st;
        *count = ts_csv_rows(c);
        return ts_csv_source_new(src, c, 0, err);
    }
    return open_shards(spec, src, err);
}

/* ---------------------------------------------------------------------------------------- */
/* Output: HDF5 or .npy, written to a temporary file and renamed into place                 */

typedef struct skip_list {
    char **id, **reason;
    int64_t n, cap;
    int oom;
} skip_list;

typedef struct out_file {
    int npy;
    char path[4200];      /* the final name: FILE.h5, or FILE.npy */
    char tmp[4300];
    char base[4100];      /* npy: FILE without .npy, for the sidecars */
    int64_t n, D;
#ifdef TS_HAVE_HDF5
    hid_t file, emb;      /* HDF5 */
#endif
    FILE *f;              /* npy */
} out_file;

/* numpy's format 1.0 with a fixed 128-byte header, so that it can be written last. */
static int npy_header(FILE *f, int64_t n, int64_t D) {
    const unsigned one = 1;
    char dict[118];
    int k = snprintf(dict, sizeof dict, "{'descr': '%sf4', 'fortran_order': False, 'shape': "
                     "(%lld, %lld), }", *(const unsigned char *)&one ? "<" : ">", (long long)n,
                     (long long)D);
    if (k < 0 || k >= (int)sizeof dict) return -1;
    memset(dict + k, ' ', sizeof dict - (size_t)k);
    dict[sizeof dict - 1] = '\n';
    unsigned char head[10] = { 0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, 118, 0 };
    return fseek(f, 0, SEEK_SET) || fwrite(head, 1, 10, f) != 10 ||
                   fwrite(dict, 1, sizeof dict, f) != sizeof dict ? -1 : 0;
}

/* Nothing open: out_abort may be called on it. */
static void out_init(out_file *o) {
    memset(o, 0, sizeof *o);
#ifdef TS_HAVE_HDF5
    o->file = o->emb = -1;
#endif
}

static ts_status out_open(out_file *o, const char *path, int npy, int64_t D, ts_err *err) {
    out_init(o);
    o->npy = npy;
    o->D = D;
#ifndef TS_HAVE_HDF5
    if (!npy)
        return ts_fail(err, TS_ERR_UNSUPPORTED, "%s: this build of tessera has no HDF5 (libhdf5 "
                       "was not found when it was configured): write .npy (--format npy)",
                       path);
#endif
    if (npy) {
        size_t n = strlen(path);
        snprintf(o->base, sizeof o->base, "%.*s", (int)(has_suffix(path, ".npy") ? n - 4 : n),
                 path);
        snprintf(o->path, sizeof o->path, "%s.npy", o->base);
    } else {
        snprintf(o->path, sizeof o->path, "%s", path);
    }
    snprintf(o->tmp, sizeof o->tmp, "%s.tmp.%d", o->path, (int)getpid());
    if (npy) {
        if (!(o->f = fopen(o->tmp, "wb")) || npy_header(o->f, 0, D))
            return ts_fail(err, TS_ERR_IO, "%s: cannot write (as %s): %s", o->path, o->tmp,
                           strerror(errno));
        return TS_OK;
    }
#ifdef TS_HAVE_HDF5
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    if ((o->file = H5Fcreate(o->tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT)) < 0)
        return ts_fail(err, TS_ERR_IO, "%s: cannot create the HDF5 file (as %s)", o->path,
                       o->tmp);
    hsize_t dims[2] = { 0, (hsize_t)D }, maxd[2] = { H5S_UNLIMITED, (hsize_t)D };
    hsize_t rows = (hsize_t)(D > 0 && D < 1024 ? 262144 / D : 256), chunk[2] = { rows, (hsize_t)D };
    hid_t sp = H5Screate_simple(2, dims, maxd), pl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(pl, 2, chunk);
    o->emb = H5Dcreate2(o->file, "embeddings", H5T_IEEE_F32LE, sp, H5P_DEFAULT, pl, H5P_DEFAULT);
    H5Pclose(pl);
    H5Sclose(sp);
    if (o->emb < 0) return ts_fail(err, TS_ERR_IO, "%s: cannot create dataset embeddings", o->tmp);
#endif
    return TS_OK;
}

/* Append m rows (m, D). */
static ts_status out_append(out_file *o, const float *rows, int64_t m, ts_err *err) {
    if (m <= 0) return TS_OK;
    if (o->npy) {
        if (fwrite(rows, sizeof(float), (size_t)(m * o->D), o->f) != (size_t)(m * o->D))
            return ts_fail(err, TS_ERR_IO, "%s: cannot write: %s", o->tmp, strerror(errno));
        o->n += m;
        return TS_OK;
    }
#ifdef TS_HAVE_HDF5
    hsize_t size[2] = { (hsize_t)(o->n + m), (hsize_t)o->D };
    hsize_t start[2] = { (hsize_t)o->n, 0 }, count[2] = { (hsize_t)m, (hsize_t)o->D };
    herr_t r = H5Dset_extent(o->emb, size);
    hid_t fs = H5Dget_space(o->emb), ms = H5Screate_simple(2, count, NULL);
    if (r >= 0) r = H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL);
    if (r >= 0) r = H5Dwrite(o->emb, H5T_NATIVE_FLOAT, ms, fs, H5P_DEFAULT, rows);
    H5Sclose(ms);
    H5Sclose(fs);
    if (r < 0) return ts_fail(err, TS_ERR_IO, "%s: cannot write embeddings", o->tmp);
    o->n += m;
#endif
    return TS_OK;
}

#ifdef TS_HAVE_HDF5
static hid_t vlen_str(void) {
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, H5T_VARIABLE);
    H5Tset_cset(t, H5T_CSET_UTF8);
    return t;
}

static herr_t attr_str(hid_t loc, const char *name, const char *value) {
    hid_t t = vlen_str(), sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(loc, name, t, sp, H5P_DEFAULT, H5P_DEFAULT);
    herr_t r = a < 0 ? -1 : H5Awrite(a, t, &value);
    if (a >= 0) H5Aclose(a);
    H5Sclose(sp);
    H5Tclose(t);
    return r;
}

static herr_t attr_i64(hid_t loc, const char *name, int64_t value) {
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(loc, name, H5T_STD_I64LE, sp, H5P_DEFAULT, H5P_DEFAULT);
    herr_t r = a < 0 ? -1 : H5Awrite(a, H5T_NATIVE_INT64, &value);
    if (a >= 0) H5Aclose(a);
    H5Sclose(sp);
    return r;
}

/* A boolean as h5py writes one (an int8 enum FALSE/TRUE), so that h5py reads numpy.bool_. */
static herr_t attr_bool(hid_t loc, const char *name, int value) {
    hid_t t = H5Tenum_create(H5T_NATIVE_INT8), sp = H5Screate(H5S_SCALAR);
    int8_t f = 0, tr = 1, v = value ? 1 : 0;
    H5Tenum_insert(t, "FALSE", &f);
    H5Tenum_insert(t, "TRUE", &tr);
    hid_t a = H5Acreate2(loc, name, t, sp, H5P_DEFAULT, H5P_DEFAULT);
    herr_t r = a < 0 ? -1 : H5Awrite(a, t, &v);
    if (a >= 0) H5Aclose(a);
    H5Sclose(sp);
    H5Tclose(t);
    return r;
}

/* A 1-D dataset of n rows of type t from buf (nothing written when n is 0). */
static herr_t write_rows(hid_t file, const char *name, hid_t t, int64_t n, const void *buf) {
    hsize_t dims[1] = { (hsize_t)n };
    hid_t sp = H5Screate_simple(1, dims, NULL);
    hid_t d = H5Dcreate2(file, name, t, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    herr_t r = d < 0 ? -1 : n > 0 ? H5Dwrite(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) : 0;
    if (d >= 0) H5Dclose(d);
    H5Sclose(sp);
    return r;
}
#endif

typedef struct out_meta {
    const char *model, *recipe, *checkpoint, *modality, *source;
    int normalized;
} out_meta;

/* Flush and rename path.tmp.PID into place, then sync the folder. */
static ts_status commit(const char *tmp, const char *path, ts_err *err) {
    int fd = open(tmp, O_RDONLY);
    if (fd < 0 || fsync(fd) != 0) {
        int e = errno;
        if (fd >= 0) close(fd);
        return ts_fail(err, TS_ERR_IO, "%s: cannot flush to disk: %s", path, strerror(e));
    }
    close(fd);
    if (rename(tmp, path) != 0)
        return ts_fail(err, TS_ERR_IO, "%s: cannot rename %s into place: %s", path, tmp,
                       strerror(errno));
    char dir[4200];
    const char *slash = strrchr(path, '/');
    snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - path) + 1 : 1, slash ? path : ".");
    if ((fd = open(dir, O_RDONLY)) >= 0) {
        fsync(fd);
        close(fd);
    }
    return TS_OK;
}

/* Lines joined by newlines (a newline inside a string becomes a space), malloc'ed. */
static char *join_lines(char *const *a, char *const *b, int64_t n, size_t *len) {
    size_t total = 1;
    for (int64_t i = 0; i < n; i++) total += strlen(a[i]) + (b ? strlen(b[i]) + 1 : 0) + 1;
    char *s = malloc(total), *p = s;
    if (!s) return NULL;
    for (int64_t i = 0; i < n; i++) {
        for (int k = 0; k < (b ? 2 : 1); k++) {
            const char *q = k ? b[i] : a[i];
            if (k) *p++ = '\t';
            for (; *q; q++) *p++ = (*q == '\n' || *q == '\r' || (*q == '\t' && b)) ? ' ' : *q;
        }
        *p++ = '\n';
    }
    *p = 0;
    *len = (size_t)(p - s);
    return s;
}

/* Write the ids, the skipped list and the description, close, and move into place. */
static ts_status out_finish(out_file *o, char *const *ids, const skip_list *sk,
                            const out_meta *meta, ts_err *err) {
    if (o->npy) {
        int bad = npy_header(o->f, o->n, o->D) != 0;
        bad |= fclose(o->f) != 0;
        o->f = NULL;
        if (bad) return ts_fail(err, TS_ERR_IO, "%s: cannot write: %s", o->tmp, strerror(errno));
        char side[4200];
        size_t len;
        char *text = join_lines(ids, NULL, o->n, &len);
        if (!text) return ts_fail(err, TS_ERR_NOMEM, "out of memory");
        snprintf(side, sizeof side, "%s.ids.txt", o->base);
        ts_status st = ts_write_atomic(side, text, len, err);
        free(text);
        if (!st && sk->n) {
            if (!(text = join_lines(sk->id, sk->reason, sk->n, &len)))
                return ts_fail(err, TS_ERR_NOMEM, "out of memory");
            snprintf(side, sizeof side, "%s.skipped.txt", o->base);
            st = ts_write_atomic(side, text, len, err);
            free(text);
        }
        return st ? st : commit(o->tmp, o->path, err);
    }
#ifdef TS_HAVE_HDF5
    hid_t t = vlen_str();
    herr_t r = write_rows(o->file, "ids", t, o->n, ids);
    typedef struct skip_row { const char *id, *reason; } skip_row;
    skip_row *rows = malloc((size_t)(sk->n ? sk->n : 1) * sizeof *rows);
    for (int64_t i = 0; rows && i < sk->n; i++) rows[i] = (skip_row){ sk->id[i], sk->reason[i] };
    hid_t ct = H5Tcreate(H5T_COMPOUND, sizeof(skip_row));
    H5Tinsert(ct, "id", HOFFSET(skip_row, id), t);
    H5Tinsert(ct, "reason", HOFFSET(skip_row, reason), t);
    if (r >= 0) r = rows ? write_rows(o->file, "skipped", ct, sk->n, rows) : -1;
    free(rows);
    H5Tclose(ct);
    H5Tclose(t);
    if (r >= 0) r = attr_str(o->file, "model", meta->model);
    if (r >= 0) r = attr_str(o->file, "recipe", meta->recipe);
    if (r >= 0) r = attr_str(o->file, "checkpoint", meta->checkpoint);
    if (r >= 0) r = attr_str(o->file, "modality", meta->modality);
    if (r >= 0) r = attr_str(o->file, "source", meta->source);
    if (r >= 0) r = attr_bool(o->file, "normalized", meta->normalized);
    if (r >= 0) r = attr_i64(o->file, "skipped_count", sk->n);
    if (r >= 0) {
        hid_t ds = H5Dopen2(o->file, "skipped", H5P_DEFAULT);
        r = ds < 0 ? -1 : attr_i64(ds, "count", sk->n);
        if (ds >= 0) H5Dclose(ds);
    }
    H5Dclose(o->emb);
    o->emb = -1;
    if (H5Fclose(o->file) < 0) r = -1;
    o->file = -1;
    if (r < 0) return ts_fail(err, TS_ERR_IO, "%s: cannot write the ids and attributes", o->tmp);
    return commit(o->tmp, o->path, err);
#else
    (void)meta;
    return ts_fail(err, TS_ERR_UNSUPPORTED, "%s: no HDF5 in this build", o->path);
#endif
}

/* Close and remove the temporary file (after a failure). */
static void out_abort(out_file *o) {
    if (o->f) fclose(o->f);
#ifdef TS_HAVE_HDF5
    if (o->emb >= 0) H5Dclose(o->emb);
    if (o->file >= 0) H5Fclose(o->file);
    o->emb = o->file = -1;
#endif
    o->f = NULL;
    if (o->tmp[0]) unlink(o->tmp);
}

/* ---------------------------------------------------------------------------------------- */
/* tessera embed                                                                            */

static void embed_usage(FILE *out) {
    fprintf(out,
            "usage: tessera embed --checkpoint RUN|CKPT (--images DIR|SHARDS|CSV | --texts FILE)\n"
            "                     --out FILE [--format h5|npy] [--raw] [--batch N] [--workers N]\n"
            "       tessera embed --checkpoint POLICY --trajectories FILE.hdf5 --out FILE\n"
            "\n"
            "Write the embeddings a trained CLIP model gives to images or texts, or those a\n"
            "trained policy (model.type vla) gives to the windows of robot demonstrations.\n"
            "\n"
            "options:\n"
            "  --checkpoint P   a run folder (its latest checkpoint), a checkpoint folder, or a\n"
            "                   model.safetensors file (with its recipe.yaml beside it or --recipe)\n"
            "  --images SRC     a folder (the images directly in it, sorted; else class folders\n"
            "                   DIR/<class>/<image>), a CSV/TSV with an image path column, or\n"
            "                   WebDataset shards (dir/part-{000000..000009}.tar)\n"
            "  --texts FILE     one text a line (blank lines are left out)\n"
            "  --trajectories F an HDF5 file of demonstrations with the policy's datasets: one\n"
            "                   row per step of every demo (id demo_N/STEP), the mean of the\n"
            "                   policy's observation tokens of the window starting there\n"
            "  --out FILE       FILE.h5: datasets embeddings (N, E) float32 and ids (strings:\n"
            "                   the image path, shard:key, or the text), skipped (id, reason),\n"
            "                   attributes model, recipe, checkpoint, normalized, skipped_count\n"
            "  --format F       h5 (default; npy when FILE ends in .npy) or npy: FILE.npy with\n"
            "                   FILE.ids.txt (and FILE.skipped.txt when samples were skipped)\n"
            "  --raw            keep the embeddings as the model gives them (default: each row\n"
            "                   scaled to unit L2 norm, as CLIP compares them)\n"
            "  --batch N        images or texts per forward pass (default: the recipe's\n"
            "                   data.batch_size)\n"
            "  --workers N      image loader threads (default: the recipe's data.workers)\n"
            "  --threads N      compute threads (default: all cores)\n"
            "  --csv-img-key C  the CSV's image column (default: filepath)\n"
            "  --recipe FILE    the recipe the checkpoint was trained with (default: the\n"
            "                   checkpoint's recipe.yaml)\n"
            "  --set KEY=VALUE  override a key of that recipe (repeatable)\n"
            "  --quiet          no progress, warnings and errors only\n"
            "  -h, --help       this help\n"
            "\n"
            "Images get the eval transform of the model (resize the shorter side, center crop,\n"
            "CLIP normalisation). A corrupt image is skipped and listed in the output with its\n"
            "reason. The output appears whole or not at all (temporary file, then rename).\n"
            "Exit status: 0 ok, 1 runtime failure, 2 usage error.\n");
}

/* The embed verb's prepare hook: the sample's id into its row. */
static ts_status id_prepare(void *user, const ts_sample *s, void *row, ts_err *err) {
    (void)user;
    (void)err;
    snprintf(row, ID_BYTES, "%s", s->path.n ? (const char *)s->path.data : s->where);
    return TS_OK;
}

/* The pipeline's on_skip hook: remember the sample and why. */
static void on_skip(void *user, const ts_skipped *k) {
    skip_list *l = user;
    if (l->n == l->cap) {
        int64_t cap = l->cap ? 2 * l->cap : 16;
        char **a = realloc(l->id, (size_t)cap * sizeof *a);
        if (a) l->id = a;
        char **b = realloc(l->reason, (size_t)cap * sizeof *b);
        if (b) l->reason = b;
        if (!a || !b) {
            l->oom = 1;
            return;
        }
        l->cap = cap;
    }
    const char *id = k->path[0] ? k->path : k->where[0] ? k->where : k->msg, *msg = k->msg;
    /* the id is in its own column: the message without it in front (once or twice) */
    const char *pre[2] = { k->where, k->path };
    for (int j = 0; j < 2; j++) {
        size_t n = strlen(pre[j]);
        if (n && !strncmp(msg, pre[j], n) && !strncmp(msg + n, ": ", 2)) msg += n + 2;
    }
    size_t len = strlen(ts_bad_reason_str(k->reason)) + strlen(msg) + 3;
    char *r = malloc(len), *i = strdup(id);
    if (!r || !i) {
        free(r);
        free(i);
        l->oom = 1;
        return;
    }
    snprintf(r, len, "%s: %s", ts_bad_reason_str(k->reason), msg);
    l->id[l->n] = i;
    l->reason[l->n++] = r;
}

static void skip_list_free(skip_list *l) {
    ts_clip_free_lines(l->id, (int)l->n);
    ts_clip_free_lines(l->reason, (int)l->n);
}

/* Grow a list of ids to hold n + m. */
static int ids_reserve(char ***ids, int64_t *cap, int64_t need) {
    if (need <= *cap) return 0;
    int64_t c = *cap ? *cap : 1024;
    while (c < need) c *= 2;
    char **a = realloc(*ids, (size_t)c * sizeof *a);
    if (!a) return -1;
    *ids = a;
    *cap = c;
    return 0;
}

/* tessera embed --trajectories: a policy's per-window observation embeddings. */
static int embed_trajectories(const common_opts *co, const char *path, const char *out, int npy) {
    ts_err err = { 0 };
    ts_task *task = NULL;
    ts_recipe *r = NULL;
    char weights[PATH_MAX];
    float *emb = NULL;
    char **ids = NULL;
    int64_t n = 0;
    out_file of;
    out_init(&of);
    skip_list sk = { 0 };
    ts_ctx *c = ts_ctx_new(TS_CPU, 16u << 20, 1);
    if (co->threads > 0) c->nthreads = co->threads;
    double t0 = now_s();
    ts_status st = ts_vla_load(co->checkpoint, co->sets, co->nsets, &task, &r, weights,
                               sizeof weights, &err);
    if (!st) st = ts_vla_embed_file(task, c, path, &emb, &n, &ids, &err);
    int64_t E = task && !st ? ts_vla_embed_dim(task) : 0;
    if (!st) st = out_open(&of, out, npy, E, &err);
    if (!st) st = out_append(&of, emb, n, &err);
    if (!st) {
        char *text = ts_recipe_dump(r);
        char ckpt[PATH_MAX];
        if (!realpath(weights, ckpt)) memcpy(ckpt, weights, sizeof ckpt);
        out_meta meta = { "vla policy: the mean of its observation tokens", text, ckpt,
                          "trajectory window", path, 0 };
        st = out_finish(&of, ids, &sk, &meta, &err);
        free(text);
    }
    if (!st && !co->quiet)
        fprintf(stderr, "tessera embed: %lld windows of %s embedded (%lld x %lld) in %.1f s -> "
                "%s\n", (long long)n, path, (long long)n, (long long)E, now_s() - t0, of.path);
    if (st) out_abort(&of);
    for (int64_t i = 0; ids && i < n; i++) free(ids[i]);
    free(ids);
    free(emb);
    ts_ctx_free(c);
    ts_task_free(task);
    ts_recipe_free(r);
    return st ? fail(&err) : 0;
}

int ts_cmd_embed(int argc, char **argv) {
    common_opts co = { 0 };
    const char *images = NULL, *texts = NULL, *out = NULL, *format = NULL, *csv_key = NULL, *v;
    const char *trajectories = NULL;
    int raw = 0, k;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            embed_usage(stdout);
            return 0;
        }
        if ((k = common_opt("embed", argc, argv, &i, &co))) {
            if (k < 0) return 2;
        } else if ((k = opt_value("embed", argc, argv, &i, "--images", &v))) {
            if (k < 0) return 2;
            images = v;
        } else if ((k = opt_value("embed", argc, argv, &i, "--texts", &v))) {
            if (k < 0) return 2;
            texts = v;
        } else if ((k = opt_value("embed", argc, argv, &i, "--trajectories", &v))) {
            if (k < 0) return 2;
            trajectories = v;
        } else if ((k = opt_value("embed", argc, argv, &i, "--out", &v))) {
            if (k < 0) return 2;
            out = v;
        } else if ((k = opt_value("embed", argc, argv, &i, "--format", &v))) {
            if (k < 0) return 2;
            format = v;
        } else if ((k = opt_value("embed", argc, argv, &i, "--csv-img-key", &v))) {
            if (k < 0) return 2;
            csv_key = v;
        } else if (!strcmp(a, "--raw")) {
            raw = 1;
        } else {
            fprintf(stderr, "tessera embed: unknown %s %s (see tessera embed --help)\n",
                    a[0] == '-' ? "option" : "argument", a);
            return 2;
        }
    }
    const char *missing = !co.checkpoint ? "--checkpoint" : !out ? "--out" : NULL;
    if (missing || (!!images + !!texts + !!trajectories) != 1) {
        if (missing) fprintf(stderr, "tessera embed: %s is required\n", missing);
        else fprintf(stderr, "tessera embed: give one of --images, --texts and "
                     "--trajectories\n");
        embed_usage(stderr);
        return 2;
    }
    if (format && strcmp(format, "h5") && strcmp(format, "npy")) {
        fprintf(stderr, "tessera embed: --format is h5 or npy, not '%s'\n", format);
        return 2;
    }
    if (csv_key && (!images || !is_csv(images))) {
        fprintf(stderr, "tessera embed: --csv-img-key needs --images FILE.csv\n");
        return 2;
    }
    int npy = format ? !strcmp(format, "npy") : has_suffix(out, ".npy");
    if (trajectories) return embed_trajectories(&co, trajectories, out, npy);

    ts_err err = { 0 };
    ts_clip_model m;
    if (open_model(&co, &m, &err)) return fail(&err);
    ts_ctx *c = ts_ctx_new(TS_CPU, 16u << 20, 1);
    int64_t E = m.embed_dim, total = -1, n = 0, ids_cap = 0;
    char **ids = NULL, **lines = NULL;
    int nlines = 0;
    float *emb = NULL;
    skip_list sk = { 0 };
    out_file of;
    ts_pipe *pipe = NULL;
    ts_source *src = NULL;
    progress pr;
    ts_status st;
    out_init(&of);
    if (images) st = open_images(images, csv_key, &src, &total, &err);
    else st = ts_clip_read_lines(texts, &lines, &nlines, &err);
    if (st) goto done;
    if (texts) total = nlines;
    if ((st = out_open(&of, out, npy, E, &err))) goto done;
    progress_init(&pr, images ? "images" : "texts", total, co.quiet);
    if (images) {
        ts_pipe_cfg pc;
        ts_clip_eval_pipe_cfg(m.task, &pc);
        if (co.batch > 0) pc.batch_size = co.batch;
        pc.prepare = id_prepare;
        pc.prepare_bytes = ID_BYTES;
        pc.on_skip = on_skip;
        pc.on_skip_user = &sk;
        st = ts_pipe_open(&pipe, src, &pc, NULL, &err);
        src = NULL; /* the pipeline's now */
        if (!st && !(emb = malloc((size_t)(pc.batch_size * E) * sizeof *emb)))
            st = ts_fail(&err, TS_ERR_NOMEM, "out of memory");
        while (!st) {
            ts_pipe_batch pb;
            if ((st = ts_pipe_next(pipe, &pb, &err)) || pb.n == 0) break;
            if ((st = ts_clip_encode_images(m.task, c, pb.images, pb.n, emb, !raw, &err)))
                break;
            if ((st = out_append(&of, emb, pb.n, &err))) break;
            if (ids_reserve(&ids, &ids_cap, n + pb.n)) {
                st = ts_fail(&err, TS_ERR_NOMEM, "out of memory");
                break;
            }
            for (int i = 0; i < pb.n; i++, n++) {
                const char *id = (const char *)pb.extra + (size_t)i * ID_BYTES;
                if (!(ids[n] = strdup(id))) {
                    st = ts_fail(&err, TS_ERR_NOMEM, "out of memory");
                    break;
                }
            }
            progress_show(&pr, n + sk.n, 0);
        }
    } else {
        int64_t B = co.batch > 0 ? co.batch : 256;
        if (!(emb = malloc((size_t)(B * E) * sizeof *emb)))
            st = ts_fail(&err, TS_ERR_NOMEM, "out of memory");
        for (int64_t i0 = 0; !st && i0 < nlines; i0 += B) {
            int64_t b = nlines - i0 < B ? nlines - i0 : B;
            st = ts_clip_encode_texts(m.task, c, (const char *const *)lines + i0, b, emb, !raw,
                                      &err);
            if (!st) st = out_append(&of, emb, b, &err);
            progress_show(&pr, i0 + b, 0);
        }
        if (!st) {
            ids = lines; /* the ids are the texts */
            n = nlines;
            lines = NULL;
        }
    }
    if (!st && sk.oom) st = ts_fail(&err, TS_ERR_NOMEM, "out of memory listing skipped samples");
    if (!st && n == 0)
        st = ts_fail(&err, TS_ERR_DATA, "%s: no sample could be embedded (%lld skipped)",
                     images, (long long)sk.n);
    if (st) goto done;
    progress_show(&pr, n + sk.n, 1);
    char ckpt[PATH_MAX];
    if (!realpath(m.checkpoint, ckpt)) snprintf(ckpt, sizeof ckpt, "%s", m.checkpoint);
    out_meta meta = { m.describe, m.recipe_text, ckpt, images ? "image" : "text",
                      images ? images : texts, !raw };
    if ((st = out_finish(&of, ids, &sk, &meta, &err))) goto done;
    double dt = now_s() - pr.t0;
    if (!co.quiet || sk.n)
        fprintf(stderr, "tessera embed: %lld %s embedded (%lld x %lld%s) in %.1f s -> %s%s%s\n",
                (long long)n, images ? "images" : "texts", (long long)n, (long long)E,
                raw ? ", raw" : ", normalised", dt, of.path, sk.n ? "; skipped: " : "",
                sk.n ? (npy ? "listed in the .skipped.txt beside it" : "listed in its dataset "
                        "'skipped'") : "");
done:
    if (st) out_abort(&of);
    ts_pipe_close(pipe);
    ts_source_free(src);
    ts_clip_free_lines(ids, (int)n);
    ts_clip_free_lines(lines, nlines);
    skip_list_free(&sk);
    free(emb);
    ts_ctx_free(c);
    ts_clip_model_free(&m);
    return st ? fail(&err) : 0;
}

/* ---------------------------------------------------------------------------------------- */
/* tessera eval                                                                             */

static void eval_usage(FILE *out) {
    fprintf(out,
            "usage: tessera eval zeroshot --checkpoint RUN|CKPT --data SHARDS|DIR\n"
            "                    [--classes FILE] [--templates FILE] [--label FIELD|cls]\n"
            "                    [--per-class] [--batch N] [--workers N]\n"
            "       tessera eval retrieval --checkpoint RUN|CKPT --data SHARDS|CSV\n"
            "                    [--batch N] [--workers N]\n"
            "       tessera eval rollout --checkpoint POLICY --task reach2d [--episodes N]\n"
            "\n"
            "Evaluate a trained CLIP model as its training-time evaluation does, or a policy in\n"
            "closed loop (tessera eval rollout --help).\n"
            "\n"
            "  zeroshot   classify images by the text embeddings of prompts: for each class the\n"
            "             normalised mean over the templates (open_clip's ensembling); prints\n"
            "             top-1 and top-5 accuracy\n"
            "  retrieval  image->text and text->image recall@1/5/10, where the caption of\n"
            "             image i is text i\n"
            "\n"
            "options:\n"
            "  --checkpoint P   a run folder, a checkpoint folder or a model.safetensors file\n"
            "  --data SRC       WebDataset shards (dir/val-{000000..000003}.tar); zeroshot also\n"
            "                   takes class folders DIR/<class>/<image>, retrieval a CSV/TSV\n"
            "                   with filepath and title columns\n"
            "  --classes FILE   class names, one a line, in label order (default for class\n"
            "                   folders: the folder names; required for shards)\n"
            "  --templates FILE prompt templates with {} for the class, one a line (default:\n"
            "                   \"a photo of a {}.\")\n"
            "  --label L        where a shard sample's class is: cls (the .cls member, default)\n"
            "                   or a field of its .json\n"
            "  --per-class      also print the top-1 accuracy of each class\n"
            "  --max-samples N  stop after N samples\n"
            "  --batch N        images per forward pass (default: the recipe's data.batch_size)\n"
            "  --workers N      loader threads (default: the recipe's data.workers)\n"
            "  --threads N      compute threads (default: all cores)\n"
            "  --recipe FILE    the recipe the checkpoint was trained with (default: its own)\n"
            "  --set KEY=VALUE  override a key of that recipe (repeatable)\n"
            "  --quiet          no progress, warnings and errors only\n"
            "  -h, --help       this help\n"
            "\n"
            "Bad samples are skipped and counted. Results go to standard output.\n"
            "Exit status: 0 ok, 1 runtime failure, 2 usage error.\n");
}

static void rollout_usage(FILE *out) {
    fprintf(out,
            "usage: tessera eval rollout --checkpoint POLICY --task reach2d [--episodes N]\n"
            "                            [--seed S] [--targets K] [--instruction-shift K]\n"
            "                            [--instruction TEXT]\n"
            "\n"
            "Run a trained policy (model.type vla) in closed loop in a built-in simulated task\n"
            "and report its success rate. Episodes come from seeds S, S+1, ... (default\n"
            "1000000, away from those `tessera data synth reach2d` uses for demonstrations).\n"
            "\n"
            "options:\n"
            "  --checkpoint P        a run folder, a checkpoint folder or a model.safetensors\n"
            "  --task T              reach2d: reach the target the instruction names\n"
            "  --episodes N          episodes, run side by side (default 50)\n"
            "  --targets K           reach2d: targets per episode (default: the recipe's)\n"
            "  --instruction-shift K give episode e the instruction of episode e+K (an ablation:\n"
            "                        a policy that follows its instruction then fails)\n"
            "  --instruction TEXT    give every episode this instruction\n"
            "  --set KEY=VALUE       override a key of the policy's recipe (repeatable)\n"
            "  --threads N           compute threads\n"
            "  -h, --help            this help\n");
}

static int cmd_rollout(int argc, char **argv) {
    common_opts co = { 0 };
    const char *task = NULL, *v, *instruction = NULL;
    int episodes = 50, targets = 0, shift = 0, k;
    long long seed = 1000000;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            rollout_usage(stdout);
            return 0;
        }
        if ((k = common_opt("eval rollout", argc, argv, &i, &co))) {
            if (k < 0) return 2;
        } else if ((k = opt_value("eval rollout", argc, argv, &i, "--task", &v))) {
            if (k < 0) return 2;
            task = v;
        } else if ((k = opt_value("eval rollout", argc, argv, &i, "--instruction", &v))) {
            if (k < 0) return 2;
            instruction = v;
        } else if ((k = opt_value("eval rollout", argc, argv, &i, "--episodes", &v))) {
            if (k < 0 || (episodes = parse_count("eval rollout", "--episodes", v, 100000)) < 0)
                return 2;
        } else if ((k = opt_value("eval rollout", argc, argv, &i, "--targets", &v))) {
            if (k < 0 || (targets = parse_count("eval rollout", "--targets", v, 16)) < 0) return 2;
        } else if ((k = opt_value("eval rollout", argc, argv, &i, "--instruction-shift", &v))) {
            if (k < 0 || (shift = parse_count("eval rollout", "--instruction-shift", v, 100000)) < 0)
                return 2;
        } else if ((k = opt_value("eval rollout", argc, argv, &i, "--seed", &v))) {
            char *end;
            if (k < 0) return 2;
            seed = strtoll(v, &end, 10);
            if (end == v || *end || seed < 0) {
                fprintf(stderr, "tessera eval rollout: --seed expects a non-negative integer\n");
                return 2;
            }
        } else {
            fprintf(stderr, "tessera eval rollout: unknown %s %s (see tessera eval rollout "
                    "--help)\n", argv[i][0] == '-' ? "option" : "argument", argv[i]);
            return 2;
        }
    }
    if (!co.checkpoint || !task) {
        fprintf(stderr, "tessera eval rollout: %s is required\n",
                !co.checkpoint ? "--checkpoint" : "--task");
        rollout_usage(stderr);
        return 2;
    }
    ts_err err = { 0 };
    ts_task *t = NULL;
    ts_recipe *r = NULL;
    char weights[4200];
    ts_ctx *c = ts_ctx_new(TS_CPU, 16u << 20, 1);
    if (co.threads > 0) c->nthreads = co.threads;
    double t0 = now_s();
    ts_vla_rollout_opts o = { targets, shift, instruction };
    ts_vla_rollout_result res;
    ts_status st = ts_vla_load(co.checkpoint, co.sets, co.nsets, &t, &r, weights,
                               sizeof weights, &err);
    if (!st) st = ts_vla_rollout(t, c, task, episodes, (uint64_t)seed, &o, &res, &err);
    if (!st) {
        printf("rollout: %s: %s: %d of %d episodes succeeded (%.1f%%), %.1f steps per episode",
               weights, task, res.successes, res.episodes, 100.0 * res.success_rate,
               (double)res.steps / res.episodes);
        if (res.undecodable) printf(", %lld undecodable predictions", (long long)res.undecodable);
        printf("%s%s%s; %.1f s\n", shift ? "; instructions shifted" : "",
               instruction ? "; instruction: " : "", instruction ? instruction : "",
               now_s() - t0);
    }
    ts_ctx_free(c);
    ts_task_free(t);
    ts_recipe_free(r);
    return st ? fail(&err) : 0;
}

int ts_cmd_eval(int argc, char **argv) {
    if (argc < 1) {
        eval_usage(stderr);
        return 2;
    }
    if (!strcmp(argv[0], "-h") || !strcmp(argv[0], "--help")) {
        eval_usage(stdout);
        return 0;
    }
    if (!strcmp(argv[0], "rollout")) return cmd_rollout(argc - 1, argv + 1);
    int zs = !strcmp(argv[0], "zeroshot");
    if (!zs && strcmp(argv[0], "retrieval")) {
        fprintf(stderr, "tessera eval: unknown evaluation '%s' (valid: zeroshot, retrieval, rollout; see "
                "tessera eval --help)\n", argv[0]);
        return 2;
    }
    const char *verb = zs ? "eval zeroshot" : "eval retrieval";
    common_opts co = { 0 };
    const char *data = NULL, *classes = NULL, *templates = NULL, *label = NULL, *v;
    int per_class = 0, k;
    int64_t max_samples = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            eval_usage(stdout);
            return 0;
        }
        if ((k = common_opt(verb, argc, argv, &i, &co))) {
            if (k < 0) return 2;
        } else if ((k = opt_value(verb, argc, argv, &i, "--data", &v))) {
            if (k < 0) return 2;
            data = v;
        } else if (zs && (k = opt_value(verb, argc, argv, &i, "--classes", &v))) {
            if (k < 0) return 2;
            classes = v;
        } else if (zs && (k = opt_value(verb, argc, argv, &i, "--templates", &v))) {
            if (k < 0) return 2;
            templates = v;
        } else if (zs && (k = opt_value(verb, argc, argv, &i, "--label", &v))) {
            if (k < 0) return 2;
            label = v;
        } else if ((k = opt_value(verb, argc, argv, &i, "--max-samples", &v))) {
            int x;
            if (k < 0 || (x = parse_count(verb, "--max-samples", v, 2147483647)) < 0) return 2;
            max_samples = x;
        } else if (zs && !strcmp(a, "--per-class")) {
            per_class = 1;
        } else {
            fprintf(stderr, "tessera %s: unknown %s %s (see tessera eval --help)\n", verb,
                    a[0] == '-' ? "option" : "argument", a);
            return 2;
        }
    }
    if (!co.checkpoint || !data) {
        fprintf(stderr, "tessera %s: %s is required\n", verb, !co.checkpoint ? "--checkpoint"
                                                                              : "--data");
        eval_usage(stderr);
        return 2;
    }
    int folder = is_dir(data);
    if (zs && !folder && !classes) {
        fprintf(stderr, "tessera %s: --classes FILE is required with shards (class folders "
                "name their classes)\n", verb);
        return 2;
    }
    if (zs && folder && label && strcmp(label, "cls")) {
        fprintf(stderr, "tessera %s: --label %s needs shards: the label of a class folder's "
                "image is its folder\n", verb, label);
        return 2;
    }
    if (!zs && folder) {
        fprintf(stderr, "tessera %s: --data %s is a folder; retrieval needs captions: shards "
                "with .txt members or a CSV with a title column\n", verb, data);
        return 2;
    }

    ts_err err = { 0 };
    ts_clip_model m;
    if (open_model(&co, &m, &err)) return fail(&err);
    ts_ctx *c = ts_ctx_new(TS_CPU, 16u << 20, 1);
    ts_source *src = NULL;
    ts_folder *f = NULL;
    char **cls = NULL, **tpl = NULL;
    int ncls = 0, ntpl = 0;
    int64_t total = -1;
    ts_clip_eval_result res;
    memset(&res, 0, sizeof res);
    ts_status st = TS_OK;
    if (zs && folder) {
        if (!(st = ts_folder_open(&f, data, &err))) total = ts_folder_count(f);
    } else if (!zs && is_csv(data)) {
        ts_csv *csv;
        ts_csv_spec cs = { data, NULL, NULL, 0 };
        if (!(st = ts_csv_open(&csv, &cs, &err))) {
            total = ts_csv_rows(csv);
            st = ts_csv_source_new(&src, csv, 0, &err);
        }
    } else {
        st = open_shards(data, &src, &err);
    }
    if (!st && classes) st = ts_clip_read_lines(classes, &cls, &ncls, &err);
    if (!st && templates) st = ts_clip_read_lines(templates, &tpl, &ntpl, &err);
    if (!st && f && !classes) { /* the folder names are the class names */
        ncls = ts_folder_classes(f);
        if (!(cls = calloc((size_t)ncls, sizeof *cls))) st = ts_fail(&err, TS_ERR_NOMEM, "oom");
        for (int i = 0; !st && i < ncls; i++)
            if (!(cls[i] = strdup(ts_folder_class_name(f, i))))
                st = ts_fail(&err, TS_ERR_NOMEM, "out of memory");
    }
    if (!st && f && ncls != ts_folder_classes(f))
        st = ts_fail(&err, TS_ERR_DATA, "%s: %d class names, but %s has %d class folders",
                     classes, ncls, data, ts_folder_classes(f));
    if (!st && f) {
        st = ts_folder_source_new(&src, f, 0, &err);
        f = NULL;
    }
    if (!st && zs)
        st = ts_clip_zeroshot_set(m.task, "zeroshot", cls, ncls, tpl, ntpl, label, &err);
    if (st) goto done;
    progress pr;
    progress_init(&pr, "images", total, co.quiet);
    ts_clip_eval_opts o = {
        .data = data, .batch = co.batch, .workers = co.workers, .retrieval = !zs,
        .max_samples = max_samples, .on_bad = TS_ON_BAD_SKIP, .progress = progress_cb,
        .progress_user = &pr,
    };
    st = ts_clip_evaluate(m.task, c, src, &o, &res, &err);
    src = NULL; /* ts_clip_evaluate owns it */
    if (st) goto done;
    progress_show(&pr, res.samples + res.skipped, 1);
    if (zs) {
        const ts_clip_zs_result *r = &res.zs[0];
        printf("zeroshot: %s: %lld samples (%lld labelled, %lld skipped), %d classes, %d "
               "templates\n", data, (long long)res.samples, (long long)r->counted,
               (long long)res.skipped, ncls, tpl ? ntpl : 1);
        printf("top1: %.6f\n", (double)r->top1 / (double)r->counted);
        printf("top5: %.6f\n", (double)r->top5 / (double)r->counted);
        if (per_class) {
            printf("per-class top1:\n");
            for (int i = 0; i < ncls; i++) {
                if (r->class_count[i])
                    printf("  %s: %.6f (%lld samples)\n", cls[i],
                           (double)r->class_top1[i] / (double)r->class_count[i],
                           (long long)r->class_count[i]);
                else
                    printf("  %s: - (0 samples)\n", cls[i]);
            }
        }
    } else {
        printf("retrieval: %s: %lld image-text pairs (%lld skipped)\n", data,
               (long long)res.samples, (long long)res.skipped);
        static const int at[3] = { 1, 5, 10 };
        for (int i = 0; i < 3; i++) printf("image_to_text_R@%d: %.6f\n", at[i], res.i2t[i]);
        for (int i = 0; i < 3; i++) printf("text_to_image_R@%d: %.6f\n", at[i], res.t2i[i]);
    }
done:
    ts_clip_eval_result_free(&res);
    ts_source_free(src);
    ts_folder_close(f);
    ts_clip_free_lines(cls, ncls);
    ts_clip_free_lines(tpl, ntpl);
    ts_ctx_free(c);
    ts_clip_model_free(&m);
    return st ? fail(&err) : 0;
}
