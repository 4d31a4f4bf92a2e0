/* checkpoint.c: saving and loading training checkpoints.
 *
 * A checkpoint is a folder of four files (model.safetensors, optim.safetensors, state.json,
 * recipe.yaml) inside RUN/checkpoints/. It is written under a temporary name, each file fsync'ed,
 * renamed into place in one step, and only then is RUN/checkpoints/latest replaced atomically.
 * A process killed at any instant therefore leaves the previous checkpoint and the latest
 * pointer whole; a stale temporary folder is cleared by the next save.
 *
 * Loading trusts nothing: names, shapes and dtypes are checked for every tensor, every mismatch
 * is listed by name, and nothing is copied into the model until all of them agree.
 */
#include "tessera-impl.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

ts_status ts_read_text(const char *path, char **out, ts_err *err) {
    *out = NULL;
    FILE *fp = fopen(path, "rb");
    if (!fp) return ts_fail(err, TS_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    rewind(fp);
    char *buf = malloc((size_t)(n > 0 ? n : 0) + 1);
    if (!buf) {
        fclose(fp);
        return ts_fail(err, TS_ERR_NOMEM, "%s: cannot allocate %ld bytes", path, n);
    }
    size_t got = n > 0 ? fread(buf, 1, (size_t)n, fp) : 0;
    fclose(fp);
    if ((long)got != (n > 0 ? n : 0)) {
        free(buf);
        return ts_fail(err, TS_ERR_IO, "%s: short read", path);
    }
    buf[got] = 0;
    *out = buf;
    return TS_OK;
}

/* snprintf through a function, for paths: truncation is checked where it matters. */
static int pathf(char *buf, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int pathf(char *buf, size_t n, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(buf, n, fmt, ap);
    va_end(ap);
    return k >= 0 && (size_t)k < n;
}

ts_status ts_mkdirs(const char *dir, ts_err *err) {
    char p[4096];
    size_t n = strlen(dir);
    if (!n || n >= sizeof p) return ts_fail(err, TS_ERR_IO, "folder '%s': bad path", dir);
    memcpy(p, dir, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (p[i] != '/' && p[i] != 0) continue;
        char keep = p[i];
        p[i] = 0;
        if (mkdir(p, 0755) != 0 && errno != EEXIST)
            return ts_fail(err, TS_ERR_IO, "cannot create %s: %s", p, strerror(errno));
        p[i] = keep;
    }
    struct stat sb;
    if (stat(dir, &sb) != 0)
        return ts_fail(err, TS_ERR_IO, "cannot create %s: %s", dir, strerror(errno));
    if (!S_ISDIR(sb.st_mode))
        return ts_fail(err, TS_ERR_IO, "cannot create %s: a file of that name exists", dir);
    return TS_OK;
}

static void rm_rf(const char *path) {
    DIR *d = opendir(path);
    if (!d) {
        unlink(path);
        return;
    }
    struct dirent *e;
    char sub[4096];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        pathf(sub, sizeof sub, "%s/%s", path, e->d_name);
        rm_rf(sub);
    }
    closedir(d);
    rmdir(path);
}

static void fsync_dir(const char *path) {
    int fd = open(path, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

/* ---- saving ---- */

static ts_status save_model(const char *path, const ts_params *p, const ts_ckpt_meta *meta,
                            int nmeta, int64_t step, ts_err *err) {
    ts_st_writer *w = ts_st_writer_new();
    for (int i = 0; i < ts_params_count(p); i++) {
        ts_tensor *t = ts_params_get(p, i);
        ts_st_writer_add(w, t->name, TS_F32, t->ndim, t->shape, t->data);
    }
    char buf[32];
    ts_st_writer_meta(w, "tessera.format", "1");
    snprintf(buf, sizeof buf, "%lld", (long long)step);
    ts_st_writer_meta(w, "tessera.step", buf);
    for (int i = 0; i < nmeta; i++) ts_st_writer_meta(w, meta[i].key, meta[i].value);
    ts_status st = ts_st_write(w, path, err);
    ts_st_writer_free(w);
    return st;
}

static ts_status save_optim(const char *path, const ts_params *p, const ts_optim *o,
                            ts_err *err) {
    ts_st_writer *w = ts_st_writer_new();
    char name[512], buf[32];
    int adam = o->cfg.kind == TS_OPTIM_ADAMW;
    for (int i = 0; i < ts_params_count(p); i++) {
        if (ts_params_flags(p, i) & TS_PARAM_BUFFER) continue;
        ts_tensor *t = ts_params_get(p, i);
        pathf(name, sizeof name, "%s.%s", t->name, adam ? "exp_avg" : "momentum_buffer");
        ts_st_writer_add(w, name, TS_F32, t->ndim, t->shape, ts_params_state(p, i, 0));
        if (adam) {
            snprintf(name, sizeof name, "%s.exp_avg_sq", t->name);
            ts_st_writer_add(w, name, TS_F32, t->ndim, t->shape, ts_params_state(p, i, 1));
        }
    }
    ts_st_writer_meta(w, "optimizer", adam ? "adamw" : "sgd");
    snprintf(buf, sizeof buf, "%lld", (long long)o->t);
    ts_st_writer_meta(w, "step", buf);
    ts_status st = ts_st_write(w, path, err);
    ts_st_writer_free(w);
    return st;
}

/* Remove checkpoints beyond the newest keep, and stale temporary folders. */
static void prune(const char *ckdir, int keep) {
    DIR *d = opendir(ckdir);
    if (!d) return;
    char *names[4096];
    int n = 0;
    struct dirent *e;
    char path[4096];
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, "step_", 5) != 0) continue;
        if (strstr(e->d_name, ".tmp")) {
            pathf(path, sizeof path, "%s/%s", ckdir, e->d_name);
            rm_rf(path);
        } else if (n < 4096) {
            names[n++] = strdup(e->d_name);
        }
    }
    closedir(d);
    /* names are zero-padded, so text order is step order */
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++)
            if (strcmp(names[i], names[j]) > 0) {
                char *t = names[i];
                names[i] = names[j];
                names[j] = t;
            }
    for (int i = 0; i < n; i++) {
        if (keep > 0 && i < n - keep) {
            pathf(path, sizeof path, "%s/%s", ckdir, names[i]);
            rm_rf(path);
        }
        free(names[i]);
    }
}

ts_status ts_ckpt_save(const char *run_dir, int64_t step, const ts_params *p, const ts_optim *o,
                       const char *state_json, const char *recipe_yaml, const ts_ckpt_meta *meta,
                       int nmeta, int keep, ts_err *err) {
    char ckdir[4096], final[4096], tmp[4096], path[4200];
    if (!pathf(ckdir, sizeof ckdir, "%s/checkpoints", run_dir))
        return ts_fail(err, TS_ERR_IO, "%s: path too long", run_dir);
    ts_status st = ts_mkdirs(ckdir, err);
    if (st) return st;
    pathf(final, sizeof final, "%s/step_%08lld", ckdir, (long long)step);
    pathf(tmp, sizeof tmp, "%s.tmp.%d", final, (int)getpid());
    rm_rf(tmp);
    if (mkdir(tmp, 0755) != 0)
        return ts_fail(err, TS_ERR_IO, "%s: cannot create folder: %s", tmp, strerror(errno));
    pathf(path, sizeof path, "%s/model.safetensors", tmp);
    if ((st = save_model(path, p, meta, nmeta, step, err))) goto fail;
    pathf(path, sizeof path, "%s/optim.safetensors", tmp);
    if ((st = save_optim(path, p, o, err))) goto fail;
    pathf(path, sizeof path, "%s/state.json", tmp);
    if ((st = ts_write_atomic(path, state_json, strlen(state_json), err))) goto fail;
    pathf(path, sizeof path, "%s/recipe.yaml", tmp);
    if ((st = ts_write_atomic(path, recipe_yaml, strlen(recipe_yaml), err))) goto fail;
    fsync_dir(tmp);
    /* a checkpoint of the same step (a resumed run saving again) is replaced */
    char old[4200];
    pathf(old, sizeof old, "%s.old.tmp", final);
    rm_rf(old);
    if (rename(final, old) != 0 && errno != ENOENT) {
        st = ts_fail(err, TS_ERR_IO, "%s: cannot move aside: %s", final, strerror(errno));
        goto fail;
    }
    if (rename(tmp, final) != 0) {
        st = ts_fail(err, TS_ERR_IO, "%s: cannot rename into place: %s", final, strerror(errno));
        goto fail;
    }
    fsync_dir(ckdir);
    char latest[4200], name[64];
    pathf(latest, sizeof latest, "%s/latest", ckdir);
    int k = snprintf(name, sizeof name, "step_%08lld\n", (long long)step);
    if ((st = ts_write_atomic(latest, name, (size_t)k, err))) return st;
    rm_rf(old);
    prune(ckdir, keep);
    return TS_OK;
fail:
    rm_rf(tmp);
    return st;
}

ts_status ts_ckpt_find(const char *dir, char *out, size_t n, ts_err *err) {
    char path[4200];
    struct stat sb;
    pathf(path, sizeof path, "%s/model.safetensors", dir);
    if (stat(path, &sb) == 0) {
        pathf(out, n, "%s", dir);
        return TS_OK;
    }
    pathf(path, sizeof path, "%s/checkpoints/latest", dir);
    char *name = NULL;
    if (ts_read_text(path, &name, NULL) != TS_OK) {
        if (stat(dir, &sb) != 0)
            return ts_fail(err, TS_ERR_IO, "%s: no such folder", dir);
        return ts_fail(err, TS_ERR_IO, "%s: no checkpoint here (neither model.safetensors nor "
                       "checkpoints/latest)", dir);
    }
    name[strcspn(name, "\r\n")] = 0;
    pathf(out, n, "%s/checkpoints/%s", dir, name);
    free(name);
    pathf(path, sizeof path, "%s/model.safetensors", out);
    if (stat(path, &sb) != 0)
        return ts_fail(err, TS_ERR_IO, "%s: checkpoints/latest names %s, which has no "
                       "model.safetensors", dir, out);
    return TS_OK;
}

/* ---- loading ---- */

/* Appends a line to the mismatch report; counts every problem, shows the first 40. */
typedef struct report { char buf[8192]; size_t len; int count; } report;

static void report_add(report *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void report_add(report *r, const char *fmt, ...) {
    r->count++;
    if (r->count > 40 || r->len >= sizeof r->buf - 1) return;
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(r->buf + r->len, sizeof r->buf - r->len, fmt, ap);
    va_end(ap);
    if (k > 0) r->len += (size_t)k;
    if (r->len > sizeof r->buf - 1) r->len = sizeof r->buf - 1;
}

static void shape_text(char *buf, size_t n, int ndim, const int64_t *shape) {
    size_t k = (size_t)snprintf(buf, n, "(");
    for (int i = 0; i < ndim && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, i ? ", %lld" : "%lld", (long long)shape[i]);
    if (k < n) snprintf(buf + k, n - k, ")");
}

/* Check that every (name, shape) the model expects is in f, with a float dtype. */
static void check_entry(report *r, const ts_st_file *f, const char *name, const ts_tensor *t) {
    const ts_st_entry *e = ts_st_find(f, name);
    if (!e) {
        report_add(r, "\n  missing: %s", name);
        return;
    }
    if (e->dtype != TS_F32 && e->dtype != TS_BF16 && e->dtype != TS_F16) {
        report_add(r, "\n  dtype of %s is %s in the file, the model needs floats", name,
                   ts_dtype_name(e->dtype));
        return;
    }
    int same = e->ndim == t->ndim;
    for (int d = 0; same && d < t->ndim; d++) same = e->shape[d] == t->shape[d];
    if (!same) {
        char a[96], b[96];
        shape_text(a, sizeof a, e->ndim, e->shape);
        shape_text(b, sizeof b, t->ndim, t->shape);
        report_add(r, "\n  shape of %s is %s in the file, %s in the model", name, a, b);
    }
}

ts_status ts_ckpt_load_model(ts_params *p, const char *path, int allow_extra, ts_err *err) {
    ts_st_file *f;
    ts_status st = ts_st_read(path, &f, err);
    if (st) return st;
    report r;
    memset(&r, 0, sizeof r);
    for (int i = 0; i < ts_params_count(p); i++) {
        ts_tensor *t = ts_params_get(p, i);
        check_entry(&r, f, t->name, t);
    }
    if (!allow_extra)
        for (int i = 0; i < ts_st_count(f); i++)
            if (!ts_params_find(p, ts_st_get(f, i)->name))
                report_add(&r, "\n  unexpected: %s", ts_st_get(f, i)->name);
    if (r.count) {
        st = ts_fail(err, TS_ERR_MISMATCH, "%s: %d tensor%s do%s not match the model:%s%s", path,
                     r.count, r.count == 1 ? "" : "s", r.count == 1 ? "es" : "", r.buf,
                     r.count > 40 ? "\n  ..." : "");
        ts_st_close(f);
        return st;
    }
    for (int i = 0; i < ts_params_count(p); i++) {
        ts_tensor *t = ts_params_get(p, i);
        ts_st_entry_to_f32(ts_st_find(f, t->name), ts_f32(t));
    }
    ts_st_close(f);
    return TS_OK;
}

ts_status ts_ckpt_load_optim(ts_params *p, ts_optim *o, const char *path, ts_err *err) {
    ts_st_file *f;
    ts_status st = ts_st_read(path, &f, err);
    if (st) return st;
    int adam = o->cfg.kind == TS_OPTIM_ADAMW;
    const char *kind = ts_st_meta(f, "optimizer"), *step = ts_st_meta(f, "step");
    if (!kind || !step || strcmp(kind, adam ? "adamw" : "sgd") != 0) {
        st = ts_fail(err, TS_ERR_MISMATCH, "%s: optimizer state is for %s, the recipe uses %s",
                     path, kind ? kind : "(unknown)", adam ? "adamw" : "sgd");
        ts_st_close(f);
        return st;
    }
    report r;
    memset(&r, 0, sizeof r);
    char name[512];
    const char *slots[2] = { adam ? "exp_avg" : "momentum_buffer", "exp_avg_sq" };
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < ts_params_count(p); i++) {
            if (ts_params_flags(p, i) & TS_PARAM_BUFFER) continue;
            ts_tensor *t = ts_params_get(p, i);
            for (int s = 0; s < (adam ? 2 : 1); s++) {
                snprintf(name, sizeof name, "%s.%s", t->name, slots[s]);
                if (pass == 0) check_entry(&r, f, name, t);
                else ts_st_entry_to_f32(ts_st_find(f, name), ts_params_state(p, i, s));
            }
        }
        if (pass == 0 && r.count) {
            st = ts_fail(err, TS_ERR_MISMATCH, "%s: %d optimizer tensors do not match the "
                         "model:%s", path, r.count, r.buf);
            ts_st_close(f);
            return st;
        }
    }
    o->t = strtoll(step, NULL, 10);
    ts_st_close(f);
    return TS_OK;
}

/* A growing list of names, one per line. */
typedef struct namelist { char *buf; size_t len, cap; } namelist;
static void namelist_add(namelist *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void namelist_add(namelist *l, const char *fmt, ...) {
    char line[768];
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (k < 0) return;
    size_t n = strlen(line);
    if (l->len + n + 2 > l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 1024;
        while (cap < l->len + n + 2) cap *= 2;
        char *b = realloc(l->buf, cap);
        TS_CHECK(b != NULL, "out of memory");
        l->buf = b;
        l->cap = cap;
    }
    memcpy(l->buf + l->len, line, n);
    l->len += n;
    l->buf[l->len++] = '\n';
    l->buf[l->len] = 0;
}

ts_status ts_ckpt_load_matching(ts_params *p, const char *path, const char *const *keep_prefixes,
                                ts_ckpt_match *m, ts_err *err) {
    memset(m, 0, sizeof *m);
    struct stat sb;
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        char dir[4096];
        ts_status st = ts_ckpt_find(path, dir, sizeof dir, err);
        if (st) return st;
        pathf(m->file, sizeof m->file, "%s/model.safetensors", dir);
    } else {
        snprintf(m->file, sizeof m->file, "%s", path);
    }
    ts_st_file *f;
    ts_status st = ts_st_read(m->file, &f, err);
    if (st) return st;
    namelist loaded = { 0 }, fresh = { 0 }, ignored = { 0 };
    for (int i = 0; i < ts_params_count(p); i++) {
        ts_tensor *t = ts_params_get(p, i);
        const ts_st_entry *e = ts_st_find(f, t->name);
        int same = e && e->ndim == t->ndim &&
                   (e->dtype == TS_F32 || e->dtype == TS_BF16 || e->dtype == TS_F16);
        for (int d = 0; same && d < t->ndim; d++) same = e->shape[d] == t->shape[d];
        int keep = 0;
        for (int k = 0; keep_prefixes && keep_prefixes[k]; k++)
            keep |= !strncmp(t->name, keep_prefixes[k], strlen(keep_prefixes[k]));
        if (keep && e) {
            namelist_add(&fresh, "%s (kept: not taken from the file)", t->name);
            m->fresh++;
        } else if (same) {
            ts_st_entry_to_f32(e, ts_f32(t));
            namelist_add(&loaded, "%s", t->name);
            m->loaded++;
        } else if (e) {
            char a[96], b[96];
            shape_text(a, sizeof a, e->ndim, e->shape);
            shape_text(b, sizeof b, t->ndim, t->shape);
            namelist_add(&fresh, "%s (%s %s in the file, %s in the model)", t->name,
                         ts_dtype_name(e->dtype), a, b);
            m->fresh++;
        } else {
            namelist_add(&fresh, "%s", t->name);
            m->fresh++;
        }
    }
    for (int i = 0; i < ts_st_count(f); i++)
        if (!ts_params_find(p, ts_st_get(f, i)->name)) {
            namelist_add(&ignored, "%s", ts_st_get(f, i)->name);
            m->ignored++;
        }
    ts_st_close(f);
    m->loaded_names = loaded.buf ? loaded.buf : strdup("");
    m->fresh_names = fresh.buf ? fresh.buf : strdup("");
    m->ignored_names = ignored.buf ? ignored.buf : strdup("");
    return TS_OK;
}

void ts_ckpt_match_free(ts_ckpt_match *m) {
    if (!m) return;
    free(m->loaded_names);
    free(m->fresh_names);
    free(m->ignored_names);
    m->loaded_names = m->fresh_names = m->ignored_names = NULL;
}
