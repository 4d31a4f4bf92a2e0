/* hdf5.c: robot demonstrations in HDF5 files, read as padded windows of T steps.
 *
 * Through the HDF5 C library (the serial build Debian ships), this file lists the data/demo_N
 * groups of a robomimic, LIBERO or raw robosuite file, checks the datasets a recipe names in
 * every demo once when the file opens, and then reads windows of steps straight into the
 * caller's buffers with hyperslab reads: actions and low-dimensional observations converted to
 * float32 by HDF5 on the way, images as stored (uint8 H x W x C). Padding at the episode ends
 * is Diffusion Policy's: the edge step repeated. It also prints the summary behind
 * `tessera data inspect`, and writes demonstrations in the robomimic layout (ts_traj_writer:
 * for the synthetic datasets of `tessera data synth`).
 *
 * What it is not: a dataset (shuffling, batching and normalisation live in the pipeline), or a
 * reader of arbitrary layouts; which dataset means what is the caller's word.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <hdf5.h>

#include "loaders.h"

#define MAX_KEYS (1 + 2 * TS_TRAJ_MAX_KEYS) /* actions, lowdim..., images... */

typedef struct demo {
    char name[64];      /* "demo_3" */
    int64_t len;        /* L */
    hid_t dset[MAX_KEYS];
    char *instruction;  /* the group's language_instruction attribute, or NULL */
} demo;

struct ts_traj {
    char *path;
    hid_t file;
    int nkeys;                      /* 1 + n_lowdim + n_images */
    char *key[MAX_KEYS];            /* dataset paths under the demo group, in spec order */
    int n_lowdim, n_images;
    int64_t row[MAX_KEYS];          /* elements per step of each key */
    int64_t shape[MAX_KEYS][8];     /* trailing dims of each key (after L) */
    int rank[MAX_KEYS];             /* number of trailing dims */
    int64_t col0[MAX_KEYS], col1[MAX_KEYS]; /* lowdim "key[a:b]": columns [a, b) (b -1: all) */
    int sliced[MAX_KEYS];
    int64_t lowdim_total;
    demo *demos;
    int ndemos, skipped;
    int T, pad_before, pad_after;
    int64_t *wcum;                  /* wcum[d] = windows in demos 0..d-1; ndemos + 1 entries */
    char *file_instruction;         /* LIBERO's data@problem_info language_instruction, or NULL */
};

/* HDF5 prints its error stack to stderr unless told not to; tessera reports errors itself.
 * In the thread-safe build this setting belongs to the calling thread. */
static void quiet(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }

/* The innermost message of HDF5's error stack ("truncated file: eof = ..."), for hints. */
static herr_t last_msg_cb(unsigned n, const H5E_error2_t *e, void *buf) {
    if (n == 0 && e->desc) snprintf(buf, 256, "%s", e->desc);
    return 0;
}
static const char *h5_reason(char buf[256]) {
    buf[0] = 0;
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, last_msg_cb, buf);
    if (!buf[0]) snprintf(buf, 256, "HDF5 error");
    return buf;
}

/* demo_12 -> 12; -1 when the name is not demo_<digits>. */
static long demo_number(const char *name) {
    if (strncmp(name, "demo_", 5) || !isdigit((unsigned char)name[5])) return -1;
    char *end;
    long n = strtol(name + 5, &end, 10);
    return *end ? -1 : n;
}

/* The names of the links in group g, malloc'ed; sorted with demo_N in numeric order first,
 * then the rest by name. */
static int name_cmp(const void *a, const void *b) {
    const char *x = *(char *const *)a, *y = *(char *const *)b;
    long nx = demo_number(x), ny = demo_number(y);
    if (nx >= 0 && ny >= 0) return nx < ny ? -1 : nx > ny;
    if ((nx >= 0) != (ny >= 0)) return nx >= 0 ? -1 : 1;
    return strcmp(x, y);
}
static char **list_names(hid_t g, int *n_out) {
    H5G_info_t gi;
    *n_out = 0;
    if (H5Gget_info(g, &gi) < 0) return NULL;
    char **names = calloc(gi.nlinks ? gi.nlinks : 1, sizeof *names);
    if (!names) return NULL;
    int n = 0;
    for (hsize_t i = 0; i < gi.nlinks; i++) {
        ssize_t len = H5Lget_name_by_idx(g, ".", H5_INDEX_NAME, H5_ITER_INC, i, NULL, 0,
                                         H5P_DEFAULT);
        if (len < 0) continue;
        char *s = malloc((size_t)len + 1);
        if (!s) break;
        H5Lget_name_by_idx(g, ".", H5_INDEX_NAME, H5_ITER_INC, i, s, (size_t)len + 1,
                           H5P_DEFAULT);
        names[n++] = s;
    }
    qsort(names, (size_t)n, sizeof *names, name_cmp);
    *n_out = n;
    return names;
}
static void free_names(char **names, int n) {
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
}

/* The type of the object at name under loc: H5I_GROUP, H5I_DATASET, ... or H5I_BADID when
 * there is none. Opening the object works the same in HDF5 1.10, 1.12 and 1.14. */
static H5I_type_t object_type(hid_t loc, const char *name) {
    if (H5Lexists(loc, name, H5P_DEFAULT) <= 0) return H5I_BADID;
    hid_t o = H5Oopen(loc, name, H5P_DEFAULT);
    if (o < 0) return H5I_BADID;
    H5I_type_t t = H5Iget_type(o);
    H5Oclose(o);
    return t;
}

/* Whether every prefix of a slash path exists, so that H5Lexists is never asked about a link
 * below a missing group (an error in HDF5 1.10). */
static int path_exists(hid_t loc, const char *path) {
    char buf[512];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf; (p = strchr(p, '/')); p++) {
        *p = 0;
        int ok = buf[0] == 0 || H5Lexists(loc, buf, H5P_DEFAULT) > 0;
        *p = '/';
        if (!ok) return 0;
    }
    return H5Lexists(loc, buf, H5P_DEFAULT) > 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Opening: demos, masks, the check of every named dataset                                  */

static void demo_close(demo *d, int nkeys) {
    for (int k = 0; k < nkeys; k++)
        if (d->dset[k] > 0) H5Dclose(d->dset[k]);
    free(d->instruction);
    d->instruction = NULL;
}

/* The string attribute name of object o (variable- or fixed-length, any character set),
 * malloc'ed; NULL when there is none or it is not one string. */
static char *read_str_attr(hid_t o, const char *name) {
    if (H5Aexists(o, name) <= 0) return NULL;
    hid_t a = H5Aopen(o, name, H5P_DEFAULT), ty = H5Aget_type(a), sp = H5Aget_space(a);
    char *out = NULL;
    if (H5Tget_class(ty) == H5T_STRING && H5Sget_simple_extent_npoints(sp) == 1) {
        if (H5Tis_variable_str(ty) > 0) {
            hid_t mt = H5Tcopy(H5T_C_S1);
            H5Tset_size(mt, H5T_VARIABLE);
            H5Tset_cset(mt, H5Tget_cset(ty)); /* HDF5 does not convert between character sets */
            char *s = NULL;
            if (H5Aread(a, mt, &s) >= 0 && s) {
                out = strdup(s);
                H5free_memory(s);
            }
            H5Tclose(mt);
        } else {
            size_t w = H5Tget_size(ty);
            char *s = calloc(w + 1, 1);
            if (s && H5Aread(a, ty, s) >= 0) out = s;
            else free(s);
        }
    }
    H5Sclose(sp);
    H5Tclose(ty);
    H5Aclose(a);
    return out;
}

void ts_traj_close(ts_traj *t) {
    if (!t) return;
    for (int i = 0; i < t->ndemos; i++) demo_close(&t->demos[i], t->nkeys);
    for (int k = 0; k < t->nkeys; k++) free(t->key[k]);
    if (t->file > 0) H5Fclose(t->file);
    free(t->file_instruction);
    free(t->demos);
    free(t->wcum);
    free(t->path);
    free(t);
}

/* Read the demo names listed at mask/<filter> (fixed-length or variable-length strings). */
static ts_status read_mask(ts_traj *t, const char *filter, char ***names_out, int *n_out,
                           ts_err *err) {
    char path[300];
    snprintf(path, sizeof path, "mask/%s", filter);
    if (!path_exists(t->file, path) || object_type(t->file, path) != H5I_DATASET) {
        char have[512] = "";
        hid_t g = path_exists(t->file, "mask") ? H5Gopen2(t->file, "mask", H5P_DEFAULT) : -1;
        if (g >= 0) {
            int n;
            char **names = list_names(g, &n);
            for (int i = 0; i < n; i++) {
                size_t l = strlen(have);
                snprintf(have + l, sizeof have - l, "%s%s", i ? ", " : "", names[i]);
            }
            free_names(names, n);
            H5Gclose(g);
        }
        return ts_fail(err, TS_ERR_DATA, "%s: no demo filter '%s' (the file's masks: %s)",
                       t->path, filter, have[0] ? have : "none");
    }
    ts_status st = TS_OK;
    char reason[256];
    hid_t ds = H5Dopen2(t->file, path, H5P_DEFAULT), ft = H5Dget_type(ds),
          sp = H5Dget_space(ds);
    hssize_t n = H5Sget_simple_extent_npoints(sp);
    char **names = calloc(n > 0 ? (size_t)n : 1, sizeof *names);
    if (H5Tget_class(ft) != H5T_STRING || n < 0 || !names) {
        st = ts_fail(err, TS_ERR_FORMAT, "%s: %s is not a list of demo names", t->path, path);
        goto out;
    }
    if (H5Tis_variable_str(ft) > 0) {
        hid_t mt = H5Tcopy(H5T_C_S1);
        H5Tset_size(mt, H5T_VARIABLE);
        H5Tset_cset(mt, H5Tget_cset(ft));
        char **v = calloc((size_t)n + 1, sizeof *v);
        if (v && H5Dread(ds, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, v) >= 0) {
            for (hssize_t i = 0; i < n; i++) names[i] = strdup(v[i] ? v[i] : "");
            H5Dvlen_reclaim(mt, sp, H5P_DEFAULT, v);
        } else {
            st = ts_fail(err, TS_ERR_FORMAT, "%s: cannot read %s: %s", t->path, path,
                         h5_reason(reason));
        }
        free(v);
        H5Tclose(mt);
    } else {
        size_t w = H5Tget_size(ft);
        char *raw = malloc((size_t)n * w + 1);
        if (raw && H5Dread(ds, ft, H5S_ALL, H5S_ALL, H5P_DEFAULT, raw) >= 0) {
            for (hssize_t i = 0; i < n; i++) names[i] = strndup(raw + (size_t)i * w, w);
        } else {
            st = ts_fail(err, TS_ERR_FORMAT, "%s: cannot read %s: %s", t->path, path,
                         h5_reason(reason));
        }
        free(raw);
    }
out:
    H5Sclose(sp);
    H5Tclose(ft);
    H5Dclose(ds);
    if (st) {
        free_names(names, names ? (int)n : 0);
        return st;
    }
    *names_out = names;
    *n_out = (int)n;
    return TS_OK;
}

/* Open and check dataset k of demo d. The first demo that gets here sets the trailing shape. */
static ts_status check_key(ts_traj *t, hid_t g, demo *d, int k, int *shape_set, ts_err *err) {
    const char *key = t->key[k];
    int image = k > t->n_lowdim;
    if (!path_exists(g, key) || object_type(g, key) != H5I_DATASET)
        return ts_fail(err, TS_ERR_DATA, "%s: data/%s: no dataset '%s'", t->path, d->name, key);
    hid_t ds = H5Dopen2(g, key, H5P_DEFAULT);
    d->dset[k] = ds;
    hid_t ft = H5Dget_type(ds), sp = H5Dget_space(ds);
    H5T_class_t cls = H5Tget_class(ft);
    size_t size = H5Tget_size(ft);
    int rank = H5Sget_simple_extent_ndims(sp);
    hsize_t dims[16] = { 0 };
    if (rank > 0 && rank <= 9) H5Sget_simple_extent_dims(sp, dims, NULL);
    H5Sclose(sp);
    H5Tclose(ft);
    if (image && (cls != H5T_INTEGER || size != 1))
        return ts_fail(err, TS_ERR_DATA, "%s: data/%s/%s: image data must be uint8", t->path,
                       d->name, key);
    if (!image && cls != H5T_INTEGER && cls != H5T_FLOAT)
        return ts_fail(err, TS_ERR_DATA, "%s: data/%s/%s: not numbers (HDF5 type class %d)",
                       t->path, d->name, key, (int)cls);
    if (rank < 1 || rank > 9 || (image && rank != 4))
        return ts_fail(err, TS_ERR_DATA, "%s: data/%s/%s: %d dimensions, wanted %s", t->path,
                       d->name, key, rank, image ? "4 (L, H, W, C)" : "1 to 9 (L, ...)");
    if (t->sliced[k]) {
        int64_t D = rank == 2 ? (int64_t)dims[1] : 0;
        int64_t a = t->col0[k], b = t->col1[k] < 0 ? D : t->col1[k];
        if (rank != 2)
            return ts_fail(err, TS_ERR_DATA, "%s: data/%s/%s: a column range needs a dataset "
                           "of shape (L, D), this one has %d dimensions", t->path, d->name, key,
                           rank);
        if (a >= b || b > D)
            return ts_fail(err, TS_ERR_DATA, "%s: data/%s/%s: columns [%" PRId64 ":%" PRId64
                           "] of a dataset of shape (%" PRId64 ", %" PRId64 ")", t->path,
                           d->name, key, a, b, (int64_t)dims[0], D);
        dims[1] = (hsize_t)(b - a);
    }
    if (k == 0) d->len = (int64_t)dims[0];
    if ((int64_t)dims[0] != d->len)
        return ts_fail(err, TS_ERR_DATA,
                       "%s: data/%s/%s: %" PRId64 " steps, but the actions have %" PRId64,
                       t->path, d->name, key, (int64_t)dims[0], d->len);
    if (!shape_set[k]) {
        shape_set[k] = 1;
        t->rank[k] = rank - 1;
        t->row[k] = 1;
        for (int i = 1; i < rank; i++) {
            t->shape[k][i - 1] = (int64_t)dims[i];
            t->row[k] *= (int64_t)dims[i];
        }
        return TS_OK;
    }
    int same = t->rank[k] == rank - 1;
    for (int i = 1; same && i < rank; i++) same = t->shape[k][i - 1] == (int64_t)dims[i];
    if (!same)
        return ts_fail(err, TS_ERR_DATA,
                       "%s: data/%s/%s: per-step shape differs from the earlier demos'",
                       t->path, d->name, key);
    return TS_OK;
}

/* Open demo group name and check it; on failure d holds what was opened (closed by caller). */
static ts_status check_demo(ts_traj *t, demo *d, int *shape_set, ts_err *err) {
    char gpath[128];
    snprintf(gpath, sizeof gpath, "data/%s", d->name);
    if (object_type(t->file, gpath) != H5I_GROUP)
        return ts_fail(err, TS_ERR_DATA, "%s: no group data/%s", t->path, d->name);
    hid_t g = H5Gopen2(t->file, gpath, H5P_DEFAULT);
    ts_status st = TS_OK;
    for (int k = 0; k < t->nkeys && !st; k++) st = check_key(t, g, d, k, shape_set, err);
    if (!st && H5Aexists(g, "num_samples") > 0) {
        hid_t a = H5Aopen(g, "num_samples", H5P_DEFAULT);
        long long ns = -1;
        if (H5Aread(a, H5T_NATIVE_LLONG, &ns) >= 0 && ns != d->len)
            st = ts_fail(err, TS_ERR_DATA,
                         "%s: data/%s: num_samples is %lld, but the actions have %" PRId64
                         " steps", t->path, d->name, ns, d->len);
        H5Aclose(a);
    }
    if (!st && d->len < 1)
        st = ts_fail(err, TS_ERR_DATA, "%s: data/%s: no steps", t->path, d->name);
    if (!st) d->instruction = read_str_attr(g, "language_instruction");
    H5Gclose(g);
    return st;
}

ts_status ts_traj_open(ts_traj **out, const char *path, const ts_traj_spec *spec, ts_err *err) {
    TS_CHECK(spec && spec->actions && spec->actions[0], "ts_traj_open needs an actions key");
    TS_CHECK(spec->n_lowdim >= 0 && spec->n_lowdim <= TS_TRAJ_MAX_KEYS &&
                 spec->n_images >= 0 && spec->n_images <= TS_TRAJ_MAX_KEYS,
             "%d lowdim and %d image keys", spec->n_lowdim, spec->n_images);
    TS_CHECK(spec->horizon >= 1 && spec->pad_before >= 0 && spec->pad_after >= 0,
             "horizon %d, pad_before %d, pad_after %d", spec->horizon, spec->pad_before,
             spec->pad_after);
    quiet();
    *out = NULL;
    ts_traj *t = calloc(1, sizeof *t);
    if (!t || !(t->path = strdup(path))) {
        free(t);
        return ts_fail(err, TS_ERR_NOMEM, "%s: out of memory", path);
    }
    t->T = spec->horizon;
    t->pad_before = spec->pad_before;
    t->pad_after = spec->pad_after;
    t->n_lowdim = spec->n_lowdim;
    t->n_images = spec->n_images;
    t->nkeys = 1 + spec->n_lowdim + spec->n_images;
    t->key[0] = strdup(spec->actions);
    for (int k = 0; k < spec->n_lowdim; k++) {
        const char *name = spec->lowdim[k], *br = strchr(name, '[');
        if (!br) {
            t->key[1 + k] = strdup(name);
            continue;
        }
        /* "key[a:b]": columns a .. b-1 */
        long long a = 0, b = -1;
        const char *q = br + 1;
        char *end;
        int ok = 1;
        if (*q != ':') {
            a = strtoll(q, &end, 10);
            ok = end != q && a >= 0;
            q = end;
        }
        ok = ok && *q == ':';
        if (ok) {
            q++;
            if (*q != ']') {
                b = strtoll(q, &end, 10);
                ok = end != q && b > a;
                q = end;
            }
            ok = ok && q[0] == ']' && !q[1];
        }
        if (!ok || br == name) {
            ts_status st = ts_fail(err, TS_ERR_USAGE, "%s: low-dimensional key '%s': columns "
                                   "are written key[a:b] with 0 <= a < b", path, name);
            for (int j = 0; j < 1 + k; j++) free(t->key[j]);
            free(t->path);
            free(t);
            return st;
        }
        t->key[1 + k] = strndup(name, (size_t)(br - name));
        t->sliced[1 + k] = 1;
        t->col0[1 + k] = a;
        t->col1[1 + k] = b;
    }
    for (int k = 0; k < spec->n_images; k++)
        t->key[1 + spec->n_lowdim + k] = strdup(spec->images[k]);
    for (int k = 0; k < t->nkeys; k++) TS_CHECK(t->key[k] && t->key[k][0], "empty key %d", k);

    ts_status st = TS_OK;
    char reason[256];
    char **names = NULL;
    int nnames = 0;
    t->file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (t->file < 0) {
        FILE *f = fopen(path, "rb");
        if (!f) {
            st = ts_fail(err, TS_ERR_IO, "%s: cannot open", path);
        } else {
            fclose(f);
            st = ts_fail(err, TS_ERR_FORMAT, "%s: not a readable HDF5 file (%s)", path,
                         h5_reason(reason));
        }
        goto fail;
    }
    if (object_type(t->file, "data") != H5I_GROUP) {
        st = ts_fail(err, TS_ERR_FORMAT,
                     "%s: no 'data' group (not a robomimic, LIBERO or robosuite file)", path);
        goto fail;
    }
    {
        hid_t g = H5Gopen2(t->file, "data", H5P_DEFAULT);
        char *info = read_str_attr(g, "problem_info");
        H5Gclose(g);
        cJSON *j = info ? cJSON_Parse(info) : NULL;
        const cJSON *li = cJSON_GetObjectItemCaseSensitive(j, "language_instruction");
        if (cJSON_IsString(li) && li->valuestring) t->file_instruction = strdup(li->valuestring);
        cJSON_Delete(j);
        free(info);
    }
    if (spec->filter && spec->filter[0]) {
        if ((st = read_mask(t, spec->filter, &names, &nnames, err))) goto fail;
        for (int i = 0; i < nnames; i++) {
            char p[128];
            snprintf(p, sizeof p, "data/%s", names[i]);
            if (demo_number(names[i]) < 0 || !path_exists(t->file, p)) {
                st = ts_fail(err, TS_ERR_DATA, "%s: mask/%s names '%s', which is not a demo "
                             "group under data/", path, spec->filter, names[i]);
                goto fail;
            }
        }
        qsort(names, (size_t)nnames, sizeof *names, name_cmp);
    } else {
        hid_t g = H5Gopen2(t->file, "data", H5P_DEFAULT);
        names = list_names(g, &nnames);
        H5Gclose(g);
        int m = 0; /* keep demo_N only */
        for (int i = 0; i < nnames; i++) {
            if (demo_number(names[i]) >= 0) names[m++] = names[i];
            else free(names[i]);
        }
        nnames = m;
    }
    if (nnames == 0) {
        st = ts_fail(err, TS_ERR_DATA, "%s: no demo_N groups under data/%s%s", path,
                     spec->filter && spec->filter[0] ? " in mask/" : "",
                     spec->filter ? spec->filter : "");
        goto fail;
    }
    t->demos = calloc((size_t)nnames, sizeof *t->demos);
    t->wcum = calloc((size_t)nnames + 1, sizeof *t->wcum);
    if (!t->demos || !t->wcum) {
        st = ts_fail(err, TS_ERR_NOMEM, "%s: out of memory", path);
        goto fail;
    }
    int shape_set[MAX_KEYS] = { 0 };
    for (int i = 0; i < nnames; i++) {
        demo *d = &t->demos[t->ndemos];
        memset(d, 0, sizeof *d);
        snprintf(d->name, sizeof d->name, "%s", names[i]);
        ts_err e1 = { 0 };
        if (check_demo(t, d, shape_set, &e1)) {
            demo_close(d, t->nkeys);
            memset(d, 0, sizeof *d);
            if (!spec->skip_bad) {
                if (err) *err = e1;
                st = e1.code;
                goto fail;
            }
            ts_log(TS_LOG_WARN, "skipping a demo: %s", e1.msg);
            t->skipped++;
            continue;
        }
        t->ndemos++;
    }
    if (t->ndemos == 0) {
        st = ts_fail(err, TS_ERR_DATA, "%s: all %d demos were skipped as malformed", path,
                     t->skipped);
        goto fail;
    }
    for (int k = 1; k <= t->n_lowdim; k++) t->lowdim_total += t->row[k];
    for (int i = 0; i < t->ndemos; i++) {
        int64_t n = t->demos[i].len - t->T + t->pad_before + t->pad_after + 1;
        t->wcum[i + 1] = t->wcum[i] + (n > 0 ? n : 0);
    }
    free_names(names, nnames);
    *out = t;
    return TS_OK;
fail:
    free_names(names, nnames);
    ts_traj_close(t);
    return st;
}

/* ---------------------------------------------------------------------------------------- */
/* Queries                                                                                  */

int ts_traj_num_demos(const ts_traj *t) { return t->ndemos; }
int ts_traj_num_skipped(const ts_traj *t) { return t->skipped; }
const char *ts_traj_demo_name(const ts_traj *t, int d) {
    TS_CHECK(d >= 0 && d < t->ndemos, "demo %d of %d", d, t->ndemos);
    return t->demos[d].name;
}
int64_t ts_traj_demo_len(const ts_traj *t, int d) {
    TS_CHECK(d >= 0 && d < t->ndemos, "demo %d of %d", d, t->ndemos);
    return t->demos[d].len;
}
const char *ts_traj_instruction(const ts_traj *t, int d) {
    TS_CHECK(d >= 0 && d < t->ndemos, "demo %d of %d", d, t->ndemos);
    return t->demos[d].instruction ? t->demos[d].instruction : t->file_instruction;
}
int64_t ts_traj_action_dim(const ts_traj *t) { return t->row[0]; }
int64_t ts_traj_lowdim_dim(const ts_traj *t, int k) {
    TS_CHECK(k >= 0 && k < t->n_lowdim, "lowdim key %d of %d", k, t->n_lowdim);
    return t->row[1 + k];
}
int64_t ts_traj_lowdim_total(const ts_traj *t) { return t->lowdim_total; }
void ts_traj_image_shape(const ts_traj *t, int k, int *h, int *w, int *c) {
    TS_CHECK(k >= 0 && k < t->n_images, "image key %d of %d", k, t->n_images);
    const int64_t *s = t->shape[1 + t->n_lowdim + k];
    *h = (int)s[0];
    *w = (int)s[1];
    *c = (int)s[2];
}
int64_t ts_traj_num_windows(const ts_traj *t) { return t->wcum[t->ndemos]; }

void ts_traj_window(const ts_traj *t, int64_t i, int *demo_out, int64_t *start) {
    TS_CHECK(i >= 0 && i < t->wcum[t->ndemos], "window %" PRId64 " of %" PRId64, i,
             t->wcum[t->ndemos]);
    int lo = 0, hi = t->ndemos - 1; /* the demo d with wcum[d] <= i < wcum[d + 1] */
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (t->wcum[mid] <= i) lo = mid;
        else hi = mid - 1;
    }
    *demo_out = lo;
    *start = i - t->wcum[lo] - t->pad_before;
}

/* ---------------------------------------------------------------------------------------- */
/* Reading windows                                                                          */

/* Rows [r0, r0 + n) of key k of demo d into dst (n rows of row[k] elements of mem type). */
static ts_status read_rows(ts_traj *t, demo *d, int k, int64_t r0, int64_t n, hid_t mem,
                           void *dst, ts_err *err) {
    hid_t fs = H5Dget_space(d->dset[k]);
    hsize_t start[9] = { (hsize_t)r0 }, count[9] = { (hsize_t)n };
    for (int i = 0; i < t->rank[k]; i++) count[i + 1] = (hsize_t)t->shape[k][i];
    if (t->sliced[k]) start[1] = (hsize_t)t->col0[k];
    /* The memory space has the selection's own shape: with a flat (n, row) one HDF5 maps the
     * two selections onto each other piece by piece, which cost more than the read. */
    hid_t ms = H5Screate_simple(t->rank[k] + 1, count, NULL);
    herr_t rc = H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL);
    if (rc >= 0) rc = H5Dread(d->dset[k], mem, ms, fs, H5P_DEFAULT, dst);
    H5Sclose(ms);
    H5Sclose(fs);
    if (rc < 0) {
        char reason[256];
        return ts_fail(err, TS_ERR_FORMAT, "%s: data/%s/%s: cannot read steps %" PRId64
                       "..%" PRId64 ": %s", t->path, d->name, t->key[k], r0, r0 + n - 1,
                       h5_reason(reason));
    }
    return TS_OK;
}

/* Read the in-demo part of a window of one key into its slots, then repeat the edge rows. For
 * a lowdim key the slots are row[k] wide inside a row of stride floats (the keys side by
 * side); the in-demo rows are read into a scratch buffer first when stride is wider. */
static ts_status read_key(ts_traj *t, demo *d, int k, int64_t s, int T, void *dst, size_t esize,
                          int64_t stride, hid_t mem, ts_err *err) {
    int64_t a = s < 0 ? 0 : s, b = s + T < d->len ? s + T : d->len; /* in-demo rows [a, b) */
    size_t rowb = (size_t)t->row[k] * esize, strideb = (size_t)stride * esize;
    uint8_t *base = dst;
    ts_status st;
    if (stride == t->row[k]) {
        st = read_rows(t, d, k, a, b - a, mem, base + (size_t)(a - s) * strideb, err);
    } else {
        uint8_t *tmp = malloc((size_t)(b - a) * rowb);
        if (!tmp) return ts_fail(err, TS_ERR_NOMEM, "%s: out of memory", t->path);
        st = read_rows(t, d, k, a, b - a, mem, tmp, err);
        for (int64_t i = a; !st && i < b; i++)
            memcpy(base + (size_t)(i - s) * strideb, tmp + (size_t)(i - a) * rowb, rowb);
        free(tmp);
    }
    if (st) return st;
    for (int64_t i = s; i < a; i++) /* before the start: step 0 */
        memcpy(base + (size_t)(i - s) * strideb, base + (size_t)(a - s) * strideb, rowb);
    for (int64_t i = b; i < s + T; i++) /* past the end: step L - 1 */
        memcpy(base + (size_t)(i - s) * strideb, base + (size_t)(b - 1 - s) * strideb, rowb);
    return TS_OK;
}

ts_status ts_traj_read(ts_traj *t, int d, int64_t start, int T, float *actions, float *lowdim,
                       uint8_t *const *images, ts_err *err) {
    TS_CHECK(d >= 0 && d < t->ndemos, "demo %d of %d", d, t->ndemos);
    demo *dm = &t->demos[d];
    TS_CHECK(T >= 1 && start < dm->len && start + T > 0,
             "window of %d steps from %" PRId64 " lies outside %s (%" PRId64 " steps)", T,
             start, dm->name, dm->len);
    quiet();
    ts_status st = TS_OK;
    if (actions)
        st = read_key(t, dm, 0, start, T, actions, sizeof(float), t->row[0], H5T_NATIVE_FLOAT,
                      err);
    int64_t off = 0;
    for (int k = 1; !st && k <= t->n_lowdim; k++) {
        if (lowdim)
            st = read_key(t, dm, k, start, T, lowdim + off, sizeof(float), t->lowdim_total,
                          H5T_NATIVE_FLOAT, err);
        off += t->row[k];
    }
    for (int k = 0; !st && images && k < t->n_images; k++) {
        int key = 1 + t->n_lowdim + k;
        if (images[k])
            st = read_key(t, dm, key, start, T, images[k], 1, t->row[key], H5T_NATIVE_UINT8,
                          err);
    }
    return st;
}

ts_status ts_traj_read_window(ts_traj *t, int64_t i, float *actions, float *lowdim,
                              uint8_t *const *images, ts_err *err) {
    int d;
    int64_t s;
    ts_traj_window(t, i, &d, &s);
    return ts_traj_read(t, d, s, t->T, actions, lowdim, images, err);
}

/* ---------------------------------------------------------------------------------------- */
/* Summary for `tessera data inspect`                                                       */

/* numpy's names for the common types: float64, uint8, string; "compound" and so on else. */
static const char *type_name(hid_t ty, char buf[32]) {
    size_t size = H5Tget_size(ty);
    switch (H5Tget_class(ty)) {
    case H5T_FLOAT: snprintf(buf, 32, "float%zu", size * 8); break;
    case H5T_INTEGER:
        snprintf(buf, 32, "%sint%zu", H5Tget_sign(ty) == H5T_SGN_NONE ? "u" : "", size * 8);
        break;
    case H5T_STRING:
        if (H5Tis_variable_str(ty) > 0) snprintf(buf, 32, "string");
        else snprintf(buf, 32, "string[%zu]", size);
        break;
    case H5T_ENUM: snprintf(buf, 32, "enum (bool?)"); break;
    case H5T_COMPOUND: snprintf(buf, 32, "compound"); break;
    case H5T_VLEN: snprintf(buf, 32, "vlen"); break;
    case H5T_ARRAY: snprintf(buf, 32, "array"); break;
    default: snprintf(buf, 32, "other"); break;
    }
    return buf;
}

static const char *space_str(hid_t sp, char *buf, size_t cap) {
    hsize_t dims[32];
    int r = H5Sget_simple_extent_ndims(sp);
    if (r < 0 || r > 32) return snprintf(buf, cap, "(?)"), buf;
    if (r == 0) return snprintf(buf, cap, "scalar"), buf;
    H5Sget_simple_extent_dims(sp, dims, NULL);
    size_t k = (size_t)snprintf(buf, cap, "(");
    for (int i = 0; i < r && k < cap; i++)
        k += (size_t)snprintf(buf + k, cap - k, "%s%llu", i ? ", " : "",
                              (unsigned long long)dims[i]);
    if (k < cap) snprintf(buf + k, cap - k, r == 1 ? ",)" : ")");
    return buf;
}

/* One attribute as "@name = value" (strings and numbers of one element; shape and type else). */
typedef struct attr_ctx {
    FILE *out;
    int indent;
} attr_ctx;
static herr_t print_attr(hid_t loc, const char *name, const H5A_info_t *info, void *user) {
    (void)info;
    const attr_ctx *ac = user;
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT), ty = H5Aget_type(a), sp = H5Aget_space(a);
    hssize_t n = H5Sget_simple_extent_npoints(sp);
    char val[96] = "", tb[32];
    H5T_class_t cls = H5Tget_class(ty);
    if (n == 1 && cls == H5T_STRING) {
        char *s = NULL;
        if (H5Tis_variable_str(ty) > 0) {
            hid_t mt = H5Tcopy(H5T_C_S1);
            H5Tset_size(mt, H5T_VARIABLE);
            H5Tset_cset(mt, H5Tget_cset(ty)); /* h5py writes UTF-8; HDF5 will not convert */
            if (H5Aread(a, mt, &s) >= 0 && s) {
                snprintf(val, sizeof val, "\"%.60s%s\"", s, strlen(s) > 60 ? "..." : "");
                H5free_memory(s);
            }
            H5Tclose(mt);
        } else {
            size_t w = H5Tget_size(ty);
            s = calloc(w + 1, 1);
            if (s && H5Aread(a, ty, s) >= 0)
                snprintf(val, sizeof val, "\"%.60s%s\"", s, strlen(s) > 60 ? "..." : "");
            free(s);
        }
    } else if (n == 1 && cls == H5T_INTEGER) {
        long long v;
        if (H5Aread(a, H5T_NATIVE_LLONG, &v) >= 0) snprintf(val, sizeof val, "%lld", v);
    } else if (n == 1 && cls == H5T_FLOAT) {
        double v;
        if (H5Aread(a, H5T_NATIVE_DOUBLE, &v) >= 0) snprintf(val, sizeof val, "%g", v);
    }
    if (!val[0]) {
        char sb[96];
        snprintf(val, sizeof val, "%s %s", space_str(sp, sb, sizeof sb), type_name(ty, tb));
    }
    fprintf(ac->out, "%*s@%s = %s\n", ac->indent, "", name, val);
    H5Sclose(sp);
    H5Tclose(ty);
    H5Aclose(a);
    return 0;
}

static void print_attrs(FILE *out, hid_t o, int depth) {
    attr_ctx ac = { out, 2 * depth + 2 };
    hsize_t idx = 0;
    H5Aiterate2(o, H5_INDEX_NAME, H5_ITER_INC, &idx, print_attr, &ac);
}

static void print_tree(FILE *out, hid_t g, int depth) {
    int n;
    char **names = list_names(g, &n);
    int demos_shown = 0, demos_hidden = 0;
    for (int i = 0; i < n; i++) {
        H5I_type_t ty = object_type(g, names[i]);
        if (ty == H5I_GROUP && demo_number(names[i]) >= 0 && demos_shown >= 3) {
            demos_hidden++;
            continue;
        }
        if (ty == H5I_GROUP) {
            if (demo_number(names[i]) >= 0) demos_shown++;
            fprintf(out, "%*s%s/\n", 2 * depth, "", names[i]);
            hid_t c = H5Gopen2(g, names[i], H5P_DEFAULT);
            print_attrs(out, c, depth);
            print_tree(out, c, depth + 1);
            H5Gclose(c);
        } else if (ty == H5I_DATASET) {
            hid_t ds = H5Dopen2(g, names[i], H5P_DEFAULT), dt = H5Dget_type(ds),
                  sp = H5Dget_space(ds);
            char sb[128], tb[32];
            fprintf(out, "%*s%s  %s %s\n", 2 * depth, "", names[i], space_str(sp, sb, sizeof sb),
                    type_name(dt, tb));
            print_attrs(out, ds, depth);
            H5Sclose(sp);
            H5Tclose(dt);
            H5Dclose(ds);
        } else {
            fprintf(out, "%*s%s  (link or other object)\n", 2 * depth, "", names[i]);
        }
    }
    if (demos_hidden)
        fprintf(out, "%*s... %d more demo groups\n", 2 * depth, "", demos_hidden);
    free_names(names, n);
}

/* The first dimension of data/<demo>/actions, else of the first dataset of the demo; -1. */
static int64_t demo_steps(hid_t data, const char *demo_name) {
    char p[160];
    snprintf(p, sizeof p, "%s/actions", demo_name);
    hid_t g = H5Gopen2(data, demo_name, H5P_DEFAULT);
    if (g < 0) return -1;
    int64_t len = -1;
    hid_t ds = -1;
    if (object_type(g, "actions") == H5I_DATASET) {
        ds = H5Dopen2(g, "actions", H5P_DEFAULT);
    } else {
        int n;
        char **names = list_names(g, &n);
        for (int i = 0; i < n && ds < 0; i++)
            if (object_type(g, names[i]) == H5I_DATASET) ds = H5Dopen2(g, names[i], H5P_DEFAULT);
        free_names(names, n);
    }
    if (ds >= 0) {
        hid_t sp = H5Dget_space(ds);
        hsize_t dims[32];
        int r = H5Sget_simple_extent_ndims(sp);
        if (r >= 1 && r <= 32 && H5Sget_simple_extent_dims(sp, dims, NULL) >= 0)
            len = (int64_t)dims[0];
        H5Sclose(sp);
        H5Dclose(ds);
    }
    H5Gclose(g);
    return len;
}

ts_status ts_hdf5_summary(FILE *out, const char *path, ts_err *err) {
    quiet();
    char reason[256];
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) {
        FILE *fp = fopen(path, "rb");
        if (!fp) return ts_fail(err, TS_ERR_IO, "%s: cannot open", path);
        fclose(fp);
        return ts_fail(err, TS_ERR_FORMAT, "%s: not a readable HDF5 file (%s)", path,
                       h5_reason(reason));
    }
    fprintf(out, "%s: HDF5\n/\n", path);
    print_attrs(out, f, 0);
    print_tree(out, f, 1);
    if (object_type(f, "data") == H5I_GROUP) {
        hid_t data = H5Gopen2(f, "data", H5P_DEFAULT);
        int n, nd = 0;
        char **names = list_names(data, &n);
        int64_t total = 0, mn = INT64_MAX, mx = 0;
        const char *first = NULL, *last = NULL;
        for (int i = 0; i < n; i++) {
            if (demo_number(names[i]) < 0 || object_type(data, names[i]) != H5I_GROUP) continue;
            int64_t len = demo_steps(data, names[i]);
            if (!first) first = names[i];
            last = names[i];
            nd++;
            if (len < 0) continue;
            total += len;
            if (len < mn) mn = len;
            if (len > mx) mx = len;
        }
        if (nd) {
            fprintf(out, "demos: %d (%s .. %s)\n", nd, first, last);
            fprintf(out, "steps: %" PRId64 " (per demo: min %" PRId64 ", mean %.1f, max %" PRId64
                    ")\n", total, mn == INT64_MAX ? 0 : mn, (double)total / nd, mx);
        } else {
            fprintf(out, "demos: 0 (no demo_N groups under data/)\n");
        }
        free_names(names, n);
        H5Gclose(data);
    }
    if (object_type(f, "mask") == H5I_GROUP) {
        hid_t m = H5Gopen2(f, "mask", H5P_DEFAULT);
        int n;
        char **names = list_names(m, &n);
        fprintf(out, "masks:");
        for (int i = 0; i < n; i++) {
            hid_t ds = object_type(m, names[i]) == H5I_DATASET
                           ? H5Dopen2(m, names[i], H5P_DEFAULT) : -1;
            if (ds < 0) continue;
            hid_t sp = H5Dget_space(ds);
            fprintf(out, " %s (%lld demos)", names[i],
                    (long long)H5Sget_simple_extent_npoints(sp));
            H5Sclose(sp);
            H5Dclose(ds);
        }
        fprintf(out, "\n");
        free_names(names, n);
        H5Gclose(m);
    }
    H5Fclose(f);
    return TS_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* Writing the robomimic layout                                                             */

typedef struct writer_mask {
    char *name;
    int *idx;
    int n;
} writer_mask;

struct ts_traj_writer {
    char *path, *tmp;
    hid_t file, data;
    hid_t gcpl, dcpl, lcpl; /* no object times; intermediate groups created on demand */
    int ndemos;
    int64_t total;
    writer_mask *masks;
    int nmasks;
};

static void writer_free(ts_traj_writer *w, int remove_tmp) {
    if (w->data > 0) H5Gclose(w->data);
    if (w->file > 0) H5Fclose(w->file);
    if (w->gcpl > 0) H5Pclose(w->gcpl);
    if (w->dcpl > 0) H5Pclose(w->dcpl);
    if (w->lcpl > 0) H5Pclose(w->lcpl);
    if (remove_tmp && w->tmp) unlink(w->tmp);
    for (int i = 0; i < w->nmasks; i++) {
        free(w->masks[i].name);
        free(w->masks[i].idx);
    }
    free(w->masks);
    free(w->path);
    free(w->tmp);
    free(w);
}

void ts_traj_writer_abort(ts_traj_writer *w) {
    if (w) writer_free(w, 1);
}

ts_status ts_traj_writer_open(ts_traj_writer **out, const char *path, ts_err *err) {
    quiet();
    *out = NULL;
    ts_traj_writer *w = calloc(1, sizeof *w);
    size_t n = strlen(path);
    if (!w || !(w->path = strdup(path)) || !(w->tmp = malloc(n + 5))) {
        if (w) writer_free(w, 0);
        return ts_fail(err, TS_ERR_NOMEM, "%s: out of memory", path);
    }
    snprintf(w->tmp, n + 5, "%s.tmp", path);
    /* The file creation list is a group creation list for the root group: no times there
     * either. */
    hid_t fcpl = H5Pcreate(H5P_FILE_CREATE);
    H5Pset_obj_track_times(fcpl, 0);
    w->file = H5Fcreate(w->tmp, H5F_ACC_TRUNC, fcpl, H5P_DEFAULT);
    if (w->file < 0) {
        char reason[256];
        ts_status st = ts_fail(err, TS_ERR_IO, "cannot create %s: %s", w->tmp, h5_reason(reason));
        H5Pclose(fcpl);
        writer_free(w, 0);
        return st;
    }
    H5Pclose(fcpl);
    w->gcpl = H5Pcreate(H5P_GROUP_CREATE);
    H5Pset_obj_track_times(w->gcpl, 0);
    w->dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_obj_track_times(w->dcpl, 0);
    w->lcpl = H5Pcreate(H5P_LINK_CREATE);
    H5Pset_create_intermediate_group(w->lcpl, 1);
    w->data = H5Gcreate2(w->file, "data", H5P_DEFAULT, w->gcpl, H5P_DEFAULT);
    if (w->data < 0) {
        char reason[256];
        ts_status st = ts_fail(err, TS_ERR_IO, "%s: cannot create the data group: %s", w->tmp,
                               h5_reason(reason));
        writer_free(w, 1);
        return st;
    }
    *out = w;
    return TS_OK;
}

/* Groups that H5Dcreate makes on the way (obs/ of obs/proprio) take the link creation list's
 * group defaults, which record times; create them first with gcpl instead. */
static herr_t make_parents(ts_traj_writer *w, hid_t g, const char *key) {
    char buf[512];
    snprintf(buf, sizeof buf, "%s", key);
    for (char *p = buf; (p = strchr(p, '/')); p++) {
        *p = 0;
        if (buf[0] && H5Lexists(g, buf, H5P_DEFAULT) <= 0) {
            hid_t c = H5Gcreate2(g, buf, H5P_DEFAULT, w->gcpl, H5P_DEFAULT);
            if (c < 0) return -1;
            H5Gclose(c);
        }
        *p = '/';
    }
    return 0;
}

/* Dataset key under g of rank dims, file type ft, from memory of type mt; chunked by step and
 * deflated when chunk is set. */
static herr_t write_dataset(ts_traj_writer *w, hid_t g, const char *key, int rank,
                            const hsize_t *dims, hid_t ft, hid_t mt, const void *buf,
                            int chunk) {
    if (make_parents(w, g, key) < 0) return -1;
    hid_t dcpl = w->dcpl;
    if (chunk) {
        dcpl = H5Pcopy(w->dcpl);
        hsize_t cd[8];
        cd[0] = 1;
        for (int i = 1; i < rank; i++) cd[i] = dims[i];
        H5Pset_chunk(dcpl, rank, cd);
        H5Pset_deflate(dcpl, 4);
    }
    hid_t sp = H5Screate_simple(rank, dims, NULL);
    hid_t ds = H5Dcreate2(g, key, ft, sp, w->lcpl, dcpl, H5P_DEFAULT);
    herr_t rc = ds < 0 ? -1 : H5Dwrite(ds, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
    if (ds >= 0) H5Dclose(ds);
    H5Sclose(sp);
    if (dcpl != w->dcpl) H5Pclose(dcpl);
    return rc;
}

static herr_t write_attr_i64(hid_t o, const char *name, int64_t v) {
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(o, name, H5T_STD_I64LE, sp, H5P_DEFAULT, H5P_DEFAULT);
    herr_t rc = a < 0 ? -1 : H5Awrite(a, H5T_NATIVE_INT64, &v);
    if (a >= 0) H5Aclose(a);
    H5Sclose(sp);
    return rc;
}

/* A variable-length UTF-8 string attribute, as h5py writes a str. */
static herr_t write_attr_str(hid_t o, const char *name, const char *v) {
    hid_t ty = H5Tcopy(H5T_C_S1);
    H5Tset_size(ty, H5T_VARIABLE);
    H5Tset_cset(ty, H5T_CSET_UTF8);
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(o, name, ty, sp, H5P_DEFAULT, H5P_DEFAULT);
    herr_t rc = a < 0 ? -1 : H5Awrite(a, ty, &v);
    if (a >= 0) H5Aclose(a);
    H5Sclose(sp);
    H5Tclose(ty);
    return rc;
}

ts_status ts_traj_writer_demo(ts_traj_writer *w, const ts_traj_demo_data *d, ts_err *err) {
    TS_CHECK(d->len >= 1 && d->actions && d->action_dim >= 1, "demo of %lld steps, A = %d",
             (long long)d->len, d->action_dim);
    TS_CHECK(d->n_lowdim >= 0 && d->n_lowdim <= TS_TRAJ_MAX_KEYS && d->n_images >= 0 &&
                 d->n_images <= TS_TRAJ_MAX_KEYS,
             "%d lowdim and %d image keys", d->n_lowdim, d->n_images);
    quiet();
    char name[32];
    snprintf(name, sizeof name, "demo_%d", w->ndemos);
    hsize_t L = (hsize_t)d->len;
    hid_t g = H5Gcreate2(w->data, name, H5P_DEFAULT, w->gcpl, H5P_DEFAULT);
    herr_t rc = g < 0 ? -1 : 0;
    const char *what = "the group";
    if (rc >= 0) {
        what = "num_samples";
        rc = write_attr_i64(g, "num_samples", d->len);
    }
    if (rc >= 0 && d->instruction) {
        what = "language_instruction";
        rc = write_attr_str(g, "language_instruction", d->instruction);
    }
    if (rc >= 0) {
        what = "actions";
        rc = write_dataset(w, g, "actions", 2, (hsize_t[]){ L, (hsize_t)d->action_dim },
                           H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, d->actions, 0);
    }
    for (int k = 0; rc >= 0 && k < d->n_lowdim; k++) {
        TS_CHECK(d->lowdim_keys[k] && d->lowdim[k] && d->lowdim_dim[k] >= 1, "lowdim key %d", k);
        what = d->lowdim_keys[k];
        rc = write_dataset(w, g, what, 2, (hsize_t[]){ L, (hsize_t)d->lowdim_dim[k] },
                           H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, d->lowdim[k], 0);
    }
    for (int k = 0; rc >= 0 && k < d->n_images; k++) {
        const int *s = d->image_shape[k];
        TS_CHECK(d->image_keys[k] && d->images[k] && s[0] >= 1 && s[1] >= 1 && s[2] >= 1,
                 "image key %d", k);
        what = d->image_keys[k];
        rc = write_dataset(w, g, what, 4,
                           (hsize_t[]){ L, (hsize_t)s[0], (hsize_t)s[1], (hsize_t)s[2] },
                           H5T_STD_U8LE, H5T_NATIVE_UINT8, d->images[k], 1);
    }
    if (rc >= 0 && d->rewards) {
        what = "rewards";
        rc = write_dataset(w, g, "rewards", 1, &L, H5T_IEEE_F64LE, H5T_NATIVE_FLOAT, d->rewards,
                           0);
    }
    if (rc >= 0 && d->dones) {
        what = "dones";
        rc = write_dataset(w, g, "dones", 1, &L, H5T_STD_I64LE, H5T_NATIVE_UINT8, d->dones, 0);
    }
    if (g >= 0) H5Gclose(g);
    if (rc < 0) {
        char reason[256];
        return ts_fail(err, TS_ERR_IO, "%s: data/%s: cannot write %s: %s", w->tmp, name, what,
                       h5_reason(reason));
    }
    w->ndemos++;
    w->total += d->len;
    return TS_OK;
}

ts_status ts_traj_writer_mask(ts_traj_writer *w, const char *name, const int *idx, int n,
                              ts_err *err) {
    TS_CHECK(name && name[0] && !strchr(name, '/') && n >= 0, "mask '%s' of %d demos",
             name ? name : "(null)", n);
    writer_mask *m = realloc(w->masks, (size_t)(w->nmasks + 1) * sizeof *m);
    if (!m) return ts_fail(err, TS_ERR_NOMEM, "%s: out of memory", w->path);
    w->masks = m;
    m = &w->masks[w->nmasks];
    m->name = strdup(name);
    m->idx = malloc((size_t)(n ? n : 1) * sizeof *m->idx);
    m->n = n;
    if (!m->name || !m->idx) {
        free(m->name);
        free(m->idx);
        return ts_fail(err, TS_ERR_NOMEM, "%s: out of memory", w->path);
    }
    if (n) memcpy(m->idx, idx, (size_t)n * sizeof *idx);
    w->nmasks++;
    return TS_OK;
}

/* mask/<m->name> as fixed-length byte strings "demo_N", NUL-padded to the longest (numpy's
 * "S" dtype, as robomimic writes them). */
static herr_t write_mask(ts_traj_writer *w, hid_t mg, const writer_mask *m) {
    size_t width = 1;
    char one[32];
    for (int i = 0; i < m->n; i++) {
        size_t l = (size_t)snprintf(one, sizeof one, "demo_%d", m->idx[i]);
        if (l > width) width = l;
    }
    char *buf = calloc((size_t)(m->n ? m->n : 1), width);
    if (!buf) return -1;
    for (int i = 0; i < m->n; i++) {
        snprintf(one, sizeof one, "demo_%d", m->idx[i]);
        memcpy(buf + (size_t)i * width, one, strlen(one));
    }
    hid_t ty = H5Tcopy(H5T_C_S1);
    H5Tset_size(ty, width);
    H5Tset_strpad(ty, H5T_STR_NULLPAD);
    hsize_t n = (hsize_t)m->n;
    herr_t rc = write_dataset(w, mg, m->name, 1, &n, ty, ty, buf, 0);
    H5Tclose(ty);
    free(buf);
    return rc;
}

ts_status ts_traj_writer_close(ts_traj_writer *w, const char *env_args, ts_err *err) {
    quiet();
    char reason[256];
    ts_status st = TS_OK;
    for (int i = 0; i < w->nmasks; i++)
        for (int j = 0; j < w->masks[i].n; j++)
            TS_CHECK(w->masks[i].idx[j] >= 0 && w->masks[i].idx[j] < w->ndemos,
                     "mask %s names demo %d of %d", w->masks[i].name, w->masks[i].idx[j],
                     w->ndemos);
    if (write_attr_i64(w->data, "total", w->total) < 0 ||
        write_attr_str(w->data, "env_args", env_args ? env_args : "{}") < 0) {
        st = ts_fail(err, TS_ERR_IO, "%s: cannot write the data attributes: %s", w->tmp,
                     h5_reason(reason));
        goto fail;
    }
    if (w->nmasks) {
        hid_t mg = H5Gcreate2(w->file, "mask", H5P_DEFAULT, w->gcpl, H5P_DEFAULT);
        herr_t rc = mg < 0 ? -1 : 0;
        for (int i = 0; rc >= 0 && i < w->nmasks; i++) rc = write_mask(w, mg, &w->masks[i]);
        if (mg >= 0) H5Gclose(mg);
        if (rc < 0) {
            st = ts_fail(err, TS_ERR_IO, "%s: cannot write the masks: %s", w->tmp,
                         h5_reason(reason));
            goto fail;
        }
    }
    H5Gclose(w->data);
    w->data = -1;
    herr_t rc = H5Fclose(w->file);
    w->file = -1;
    if (rc < 0) {
        st = ts_fail(err, TS_ERR_IO, "cannot write %s: %s", w->tmp, h5_reason(reason));
        goto fail;
    }
    int fd = open(w->tmp, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) != 0) {
        st = ts_fail(err, TS_ERR_IO, "cannot sync %s: %s", w->tmp, strerror(errno));
        if (fd >= 0) close(fd);
        goto fail;
    }
    close(fd);
    if (rename(w->tmp, w->path) != 0) {
        st = ts_fail(err, TS_ERR_IO, "cannot rename %s to %s: %s", w->tmp, w->path,
                     strerror(errno));
        goto fail;
    }
    writer_free(w, 0);
    return TS_OK;
fail:
    writer_free(w, 1);
    return st;
}
