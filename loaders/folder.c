/* folder.c: ImageNet-style class folders (root/<class>/<image>) for zero-shot and linear-probe
 * evaluation, labelled as torchvision's ImageFolder labels them.
 *
 * Classes are the sub-folders of root sorted by name and numbered from 0; the images of a
 * class are the files below its folder (sub-folders included, as os.walk finds them) whose
 * names end in one of torchvision's image extensions, in the order sorted(os.walk(...)) gives.
 * A class without images is an error, as in torchvision. A flat folder (ts_folder_open_flat) is
 * the images directly in root, sorted, without labels: what `tessera embed --images DIR` reads
 * when DIR holds images rather than class folders.
 *
 * What this file is not: a loader of the images themselves (the pipeline's workers read them)
 * or a reader of class-name files (the zero-shot class names come from the recipe).
 */
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "loaders-impl.h"

struct ts_folder {
    char *root;
    char **classes;
    int nclasses;
    char **paths;   /* (count) full paths */
    int *labels;    /* (count) */
    int64_t count, cap;
};

void ts_folder_close(ts_folder *f) {
    if (!f) return;
    for (int i = 0; i < f->nclasses; i++) free(f->classes[i]);
    for (int64_t i = 0; i < f->count; i++) free(f->paths[i]);
    free(f->classes);
    free(f->paths);
    free(f->labels);
    free(f->root);
    free(f);
}

int ts_folder_classes(const ts_folder *f) { return f->nclasses; }
const char *ts_folder_class_name(const ts_folder *f, int k) { return f->classes[k]; }
int64_t ts_folder_count(const ts_folder *f) { return f->count; }
const char *ts_folder_path(const ts_folder *f, int64_t i) { return f->paths[i]; }
int ts_folder_label(const ts_folder *f, int64_t i) { return f->labels[i]; }

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int is_image_name(const char *name) {
    static const char *const ext[] = { ".jpg", ".jpeg", ".png", ".ppm", ".bmp",
                                       ".pgm", ".tif",  ".tiff", ".webp" };
    size_t n = strlen(name);
    for (size_t i = 0; i < sizeof ext / sizeof ext[0]; i++) {
        size_t m = strlen(ext[i]);
        if (n >= m && !strcasecmp(name + n - m, ext[i])) return 1;
    }
    return 0;
}

static int is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* The entries of dir (without . and ..), sorted; dirs_only keeps folders, else files. */
static ts_status list_dir(const char *dir, int dirs_only, char ***out, int *n, ts_err *err) {
    *out = NULL, *n = 0;
    DIR *d = opendir(dir);
    if (!d) return ts_fail(err, TS_ERR_IO, "%s: cannot open the folder", dir);
    char **v = NULL;
    int cap = 0;
    ts_status st = TS_OK;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        size_t len = strlen(dir) + strlen(e->d_name) + 2;
        char *full = malloc(len);
        if (!full) {
            st = ts_fail(err, TS_ERR_NOMEM, "%s: out of memory", dir);
            break;
        }
        snprintf(full, len, "%s/%s", dir, e->d_name);
        int isd = is_dir(full);
        free(full);
        if (isd != dirs_only) continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 64;
            char **nv = realloc(v, (size_t)cap * sizeof *nv);
            if (!nv) {
                st = ts_fail(err, TS_ERR_NOMEM, "%s: out of memory", dir);
                break;
            }
            v = nv;
        }
        if (!(v[*n] = strdup(e->d_name))) {
            st = ts_fail(err, TS_ERR_NOMEM, "%s: out of memory", dir);
            break;
        }
        (*n)++;
    }
    closedir(d);
    if (st) {
        for (int i = 0; i < *n; i++) free(v[i]);
        free(v);
        *n = 0;
        return st;
    }
    if (*n) qsort(v, (size_t)*n, sizeof *v, cmp_str);
    *out = v;
    return TS_OK;
}

static void free_list(char **v, int n) {
    for (int i = 0; i < n; i++) free(v[i]);
    free(v);
}

static ts_status add_path(ts_folder *f, const char *dir, const char *name, int label, ts_err *err) {
    if (f->count == f->cap) {
        int64_t cap = f->cap ? f->cap * 2 : 1024;
        char **p = realloc(f->paths, (size_t)cap * sizeof *p);
        if (p) f->paths = p;
        int *l = realloc(f->labels, (size_t)cap * sizeof *l);
        if (l) f->labels = l;
        if (!p || !l) return ts_fail(err, TS_ERR_NOMEM, "%s: out of memory", f->root);
        f->cap = cap;
    }
    size_t len = strlen(dir) + strlen(name) + 2;
    char *full = malloc(len);
    if (!full) return ts_fail(err, TS_ERR_NOMEM, "%s: out of memory", f->root);
    snprintf(full, len, "%s/%s", dir, name);
    f->paths[f->count] = full;
    f->labels[f->count++] = label;
    return TS_OK;
}

/* The folders under dir, dir included, in the order sorted(os.walk(dir)) visits them: sorted
 * by their full path. */
static ts_status walk_dirs(const char *dir, char ***all, int *n, int *cap, int depth, ts_err *err) {
    if (depth > 64) return ts_fail(err, TS_ERR_DATA, "%s: folders nested too deep", dir);
    if (*n == *cap) {
        *cap = *cap ? *cap * 2 : 16;
        char **v = realloc(*all, (size_t)*cap * sizeof *v);
        if (!v) return ts_fail(err, TS_ERR_NOMEM, "%s: out of memory", dir);
        *all = v;
    }
    if (!((*all)[*n] = strdup(dir))) return ts_fail(err, TS_ERR_NOMEM, "%s: out of memory", dir);
    (*n)++;
    char **subs;
    int ns;
    ts_status st = list_dir(dir, 1, &subs, &ns, err);
    for (int i = 0; !st && i < ns; i++) {
        size_t len = strlen(dir) + strlen(subs[i]) + 2;
        char *full = malloc(len);
        if (!full) {
            st = ts_fail(err, TS_ERR_NOMEM, "%s: out of memory", dir);
            break;
        }
        snprintf(full, len, "%s/%s", dir, subs[i]);
        st = walk_dirs(full, all, n, cap, depth + 1, err);
        free(full);
    }
    free_list(subs, ns);
    return st;
}

ts_status ts_folder_open_flat(ts_folder **out, const char *root, ts_err *err) {
    *out = NULL;
    ts_folder *f = calloc(1, sizeof *f);
    if (!f || !(f->root = strdup(root))) {
        free(f);
        return ts_fail(err, TS_ERR_NOMEM, "%s: out of memory", root);
    }
    size_t rl = strlen(f->root);
    while (rl > 1 && f->root[rl - 1] == '/') f->root[--rl] = 0;
    char **files;
    int nf;
    ts_status st = list_dir(f->root, 0, &files, &nf, err);
    for (int i = 0; !st && i < nf; i++)
        if (is_image_name(files[i])) st = add_path(f, f->root, files[i], -1, err);
    free_list(files, nf);
    if (!st && !f->count)
        st = ts_fail(err, TS_ERR_DATA, "%s: no image files (.jpg, .jpeg, .png, .ppm, .bmp, "
                     ".pgm, .tif, .tiff, .webp)", root);
    if (st) {
        ts_folder_close(f);
        return st;
    }
    *out = f;
    return TS_OK;
}

ts_status ts_folder_open(ts_folder **out, const char *root, ts_err *err) {
    *out = NULL;
    ts_folder *f = calloc(1, sizeof *f);
    if (!f || !(f->root = strdup(root))) {
        free(f);
        return ts_fail(err, TS_ERR_NOMEM, "%s: out of memory", root);
    }
    size_t rl = strlen(f->root);
    while (rl > 1 && f->root[rl - 1] == '/') f->root[--rl] = 0;
    ts_status st = list_dir(f->root, 1, &f->classes, &f->nclasses, err);
    if (!st && !f->nclasses)
        st = ts_fail(err, TS_ERR_DATA, "%s: no class folders (expected root/<class>/<image>)",
                     root);
    for (int k = 0; !st && k < f->nclasses; k++) {
        size_t len = rl + strlen(f->classes[k]) + 2;
        char *cdir = malloc(len);
        if (!cdir) {
            st = ts_fail(err, TS_ERR_NOMEM, "%s: out of memory", root);
            break;
        }
        snprintf(cdir, len, "%s/%s", f->root, f->classes[k]);
        char **dirs = NULL;
        int nd = 0, cap = 0;
        int64_t before = f->count;
        st = walk_dirs(cdir, &dirs, &nd, &cap, 0, err);
        if (!st) qsort(dirs, (size_t)nd, sizeof *dirs, cmp_str);
        for (int d = 0; !st && d < nd; d++) {
            char **files;
            int nf;
            st = list_dir(dirs[d], 0, &files, &nf, err);
            for (int i = 0; !st && i < nf; i++)
                if (is_image_name(files[i])) st = add_path(f, dirs[d], files[i], k, err);
            free_list(files, nf);
        }
        free_list(dirs, nd);
        if (!st && f->count == before)
            st = ts_fail(err, TS_ERR_DATA,
                         "%s: class folder '%s' holds no image (.jpg, .jpeg, .png, .ppm, .bmp, "
                         ".pgm, .tif, .tiff, .webp)",
                         root, f->classes[k]);
        free(cdir);
    }
    if (st) {
        ts_folder_close(f);
        return st;
    }
    *out = f;
    return TS_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* The folder source                                                                        */

typedef struct folder_src {
    ts_folder *f;
    int shuffle;
    int64_t *order, norder, k;
} folder_src;

static ts_status folder_begin(ts_source *src, uint64_t seed, int64_t epoch, int rank, int world,
                              ts_err *err) {
    folder_src *s = src->impl;
    int64_t n = s->f->count;
    if (!s->order && !(s->order = malloc((size_t)(n ? n : 1) * sizeof *s->order)))
        return ts_fail(err, TS_ERR_NOMEM, "%s: out of memory", s->f->root);
    s->norder = ts__epoch_order(s->order, n, s->shuffle, seed, 0xf01d3ull, epoch, rank, world);
    s->k = 0;
    return TS_OK;
}

static ts_status folder_next(ts_source *src, ts_sample *out, int *got, ts_err *err) {
    folder_src *s = src->impl;
    *got = 0;
    if (s->k >= s->norder) return TS_OK;
    int64_t i = s->order[s->k++];
    const char *path = s->f->paths[i];
    ts_sample_clear(out);
    size_t m = strlen(path);
    if (!out->path.data || out->path.cap < m + 1) {
        uint8_t *d = realloc(out->path.data, m + 1);
        if (!d) return ts_fail(err, TS_ERR_NOMEM, "%s: out of memory", path);
        out->path.data = d, out->path.cap = m + 1;
    }
    memcpy(out->path.data, path, m + 1);
    out->path.n = m;
    const char *rel = path + strlen(s->f->root) + 1;
    snprintf(out->key, sizeof out->key, "%s", rel);
    snprintf(out->where, sizeof out->where, "%s", path);
    out->label = s->f->labels[i];
    out->has_label = out->label >= 0; /* a flat folder has no classes */
    *got = 1;
    return TS_OK;
}

static void folder_free(ts_source *src) {
    folder_src *s = src->impl;
    ts_folder_close(s->f);
    free(s->order);
    free(s);
    free(src);
}

ts_status ts_folder_source_new(ts_source **out, ts_folder *f, int shuffle, ts_err *err) {
    *out = NULL;
    ts_source *src = calloc(1, sizeof *src);
    folder_src *s = calloc(1, sizeof *s);
    if (!src || !s) {
        free(src);
        free(s);
        ts_folder_close(f);
        return ts_fail(err, TS_ERR_NOMEM, "folder: out of memory");
    }
    s->f = f;
    s->shuffle = shuffle;
    src->type = "folder";
    src->begin = folder_begin;
    src->next = folder_next;
    src->free = folder_free;
    src->impl = s;
    *out = src;
    return TS_OK;
}
