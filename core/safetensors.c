/* safetensors.c: reading and writing the safetensors format, and atomic file writes.
 *
 * The format: 8 bytes little-endian header length N, N bytes of JSON
 * {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
 *  "__metadata__": {"key": "string", ...}}, then the raw little-endian data, offsets relative to
 * the end of the header. A reader trusts nothing: every offset, size and shape is checked against
 * the file and the message names the file and the tensor.
 *
 * It is not a lazy or memory-mapped reader; checkpoints of the models we train fit in memory.
 */
#include "tessera-impl.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

struct ts_st_file {
    char *path;
    uint8_t *buf; /* whole file */
    size_t size;
    ts_st_entry *e;
    int n;
    char **meta_k, **meta_v;
    int nmeta;
};

void ts_st_close(ts_st_file *f) {
    if (!f) return;
    for (int i = 0; i < f->n; i++) free((char *)f->e[i].name);
    for (int i = 0; i < f->nmeta; i++) {
        free(f->meta_k[i]);
        free(f->meta_v[i]);
    }
    free(f->meta_k);
    free(f->meta_v);
    free(f->e);
    free(f->buf);
    free(f->path);
    free(f);
}

static ts_status read_file(const char *path, uint8_t **out, size_t *size, ts_err *err) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return ts_fail(err, TS_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    if (fseek(fp, 0, SEEK_END) != 0) {
        fclose(fp);
        return ts_fail(err, TS_ERR_IO, "%s: cannot seek", path);
    }
    long n = ftell(fp);
    rewind(fp);
    uint8_t *buf = malloc(n > 0 ? (size_t)n : 1);
    if (!buf) {
        fclose(fp);
        return ts_fail(err, TS_ERR_NOMEM, "%s: cannot allocate %ld bytes", path, n);
    }
    if (n > 0 && fread(buf, 1, (size_t)n, fp) != (size_t)n) {
        free(buf);
        fclose(fp);
        return ts_fail(err, TS_ERR_IO, "%s: short read", path);
    }
    fclose(fp);
    *out = buf;
    *size = (size_t)n;
    return TS_OK;
}

ts_status ts_st_read(const char *path, ts_st_file **out, ts_err *err) {
    *out = NULL;
    ts_st_file *f = calloc(1, sizeof *f);
    if (!f) return ts_fail(err, TS_ERR_NOMEM, "out of memory");
    f->path = strdup(path);
    ts_status st = read_file(path, &f->buf, &f->size, err);
    cJSON *root = NULL;
    if (st) goto fail;
    if (f->size < 8) {
        st = ts_fail(err, TS_ERR_FORMAT, "%s: not a safetensors file: %zu bytes, shorter than "
                     "the 8-byte header length", path, f->size);
        goto fail;
    }
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | f->buf[i];
    if (hlen > f->size - 8 || hlen > (100u << 20)) {
        st = ts_fail(err, TS_ERR_FORMAT, "%s: header length %llu exceeds the file (%zu bytes): "
                     "truncated or not safetensors", path, (unsigned long long)hlen, f->size);
        goto fail;
    }
    root = cJSON_ParseWithLength((const char *)f->buf + 8, (size_t)hlen);
    if (!root || !cJSON_IsObject(root)) {
        st = ts_fail(err, TS_ERR_FORMAT, "%s: header is not a JSON object", path);
        goto fail;
    }
    const uint8_t *data = f->buf + 8 + hlen;
    size_t dsize = f->size - 8 - (size_t)hlen;
    int count = cJSON_GetArraySize(root);
    f->e = calloc((size_t)count + 1, sizeof *f->e);
    for (cJSON *it = root->child; it; it = it->next) {
        if (strcmp(it->string, "__metadata__") == 0) {
            if (!cJSON_IsObject(it)) {
                st = ts_fail(err, TS_ERR_FORMAT, "%s: __metadata__ is not an object", path);
                goto fail;
            }
            int nm = cJSON_GetArraySize(it);
            f->meta_k = calloc((size_t)nm + 1, sizeof(char *));
            f->meta_v = calloc((size_t)nm + 1, sizeof(char *));
            for (cJSON *m = it->child; m; m = m->next) {
                if (!cJSON_IsString(m)) {
                    st = ts_fail(err, TS_ERR_FORMAT, "%s: metadata %s is not a string", path,
                                 m->string);
                    goto fail;
                }
                f->meta_k[f->nmeta] = strdup(m->string);
                f->meta_v[f->nmeta++] = strdup(m->valuestring);
            }
            continue;
        }
        ts_st_entry *e = &f->e[f->n];
        cJSON *dt = cJSON_GetObjectItemCaseSensitive(it, "dtype");
        cJSON *sh = cJSON_GetObjectItemCaseSensitive(it, "shape");
        cJSON *off = cJSON_GetObjectItemCaseSensitive(it, "data_offsets");
        if (!cJSON_IsString(dt) || !cJSON_IsArray(sh) || !cJSON_IsArray(off) ||
            cJSON_GetArraySize(off) != 2) {
            st = ts_fail(err, TS_ERR_FORMAT, "%s: tensor %s: needs dtype, shape and two "
                         "data_offsets", path, it->string);
            goto fail;
        }
        if (ts_dtype_from_name(dt->valuestring, &e->dtype) != 0) {
            st = ts_fail(err, TS_ERR_FORMAT, "%s: tensor %s: unsupported dtype %s", path,
                         it->string, dt->valuestring);
            goto fail;
        }
        e->ndim = cJSON_GetArraySize(sh);
        if (e->ndim > TS_MAX_DIMS) {
            st = ts_fail(err, TS_ERR_FORMAT, "%s: tensor %s has %d dims (at most %d)", path,
                         it->string, e->ndim, TS_MAX_DIMS);
            goto fail;
        }
        double numel = 1;
        int d = 0;
        for (cJSON *s = sh->child; s; s = s->next, d++) {
            if (!cJSON_IsNumber(s) || s->valuedouble < 0) {
                st = ts_fail(err, TS_ERR_FORMAT, "%s: tensor %s: bad shape", path, it->string);
                goto fail;
            }
            e->shape[d] = (int64_t)s->valuedouble;
            numel *= s->valuedouble;
        }
        double b = cJSON_GetArrayItem(off, 0)->valuedouble;
        double en = cJSON_GetArrayItem(off, 1)->valuedouble;
        if (!(b >= 0 && en >= b && en <= (double)dsize)) {
            st = ts_fail(err, TS_ERR_FORMAT, "%s: tensor %s: data [%.0f, %.0f) lies outside the "
                         "%zu data bytes (truncated file?)", path, it->string, b, en, dsize);
            goto fail;
        }
        if ((double)ts_dtype_size(e->dtype) * numel != en - b) {
            st = ts_fail(err, TS_ERR_FORMAT, "%s: tensor %s: %.0f bytes for %.0f elements of %s",
                         path, it->string, en - b, numel, dt->valuestring);
            goto fail;
        }
        e->name = strdup(it->string);
        e->data = data + (size_t)b;
        e->nbytes = (size_t)(en - b);
        f->n++;
    }
    cJSON_Delete(root);
    *out = f;
    return TS_OK;
fail:
    cJSON_Delete(root);
    ts_st_close(f);
    return st;
}

int ts_st_count(const ts_st_file *f) { return f->n; }
const ts_st_entry *ts_st_get(const ts_st_file *f, int i) { return &f->e[i]; }

const ts_st_entry *ts_st_find(const ts_st_file *f, const char *name) {
    for (int i = 0; i < f->n; i++)
        if (strcmp(f->e[i].name, name) == 0) return &f->e[i];
    return NULL;
}

const char *ts_st_meta(const ts_st_file *f, const char *key) {
    for (int i = 0; i < f->nmeta; i++)
        if (strcmp(f->meta_k[i], key) == 0) return f->meta_v[i];
    return NULL;
}

/* IEEE half to float: normals, subnormals (renormalised), infinities and NaN. */
static float half_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 31, man = h & 1023, bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else {
            int e = -1;
            do {
                e++;
                man <<= 1;
            } while (!(man & 1024));
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 1023) << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

void ts_st_entry_to_f32(const ts_st_entry *e, float *dst) {
    TS_CHECK(e->dtype == TS_F32 || e->dtype == TS_BF16 || e->dtype == TS_F16,
             "tensor %s: %s is not a float dtype", e->name, ts_dtype_name(e->dtype));
    size_t n = e->nbytes / ts_dtype_size(e->dtype);
    const uint8_t *s = e->data;
    if (e->dtype == TS_F32) {
        memcpy(dst, s, n * sizeof(float));
        return;
    }
    for (size_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, s + 2 * i, sizeof h);
        dst[i] = e->dtype == TS_BF16 ? ts_bf16_to_f32(h) : half_to_f32(h);
    }
}

/* "(2, 3, 4)" from a dims array. */
static void dims_text(char *buf, size_t n, int ndim, const int64_t *shape) {
    size_t len = (size_t)snprintf(buf, n, "(");
    for (int i = 0; i < ndim && len < n; i++)
        len += (size_t)snprintf(buf + len, n - len, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (len < n) snprintf(buf + len, n - len, ")");
}

int ts_st_check(const ts_st_file *f, ts_tensor *const *t, int n,
                int (*accept)(const ts_tensor *t, const ts_st_entry *e, void *user), void *user,
                char *msg, size_t cap) {
    char want[96], got[96];
    size_t len = 0;
    int bad = 0;
    if (cap) msg[0] = 0;
    for (int i = 0; i < n; i++) {
        const ts_st_entry *e = ts_st_find(f, t[i]->name);
        const char *why = NULL;
        if (!e) {
            why = "missing";
        } else if (e->dtype != TS_F32 && e->dtype != TS_BF16 && e->dtype != TS_F16) {
            why = "dtype is not F32, BF16 or F16";
        } else {
            int same = e->ndim == t[i]->ndim;
            for (int d = 0; same && d < e->ndim; d++) same = e->shape[d] == t[i]->shape[d];
            if (!same && !(accept && accept(t[i], e, user))) why = "shape differs";
        }
        if (!why) continue;
        bad++;
        dims_text(want, sizeof want, t[i]->ndim, t[i]->shape);
        if (e) dims_text(got, sizeof got, e->ndim, e->shape);
        if (len < cap)
            len += (size_t)snprintf(msg + len, cap - len, "\n  %s: %s (model %s%s%s)", t[i]->name,
                                    why, want, e ? ", file " : "", e ? got : "");
    }
    return bad;
}

/* ---- writing ---- */

typedef struct w_entry {
    char *name;
    ts_dtype dtype;
    int ndim;
    int64_t shape[TS_MAX_DIMS];
    const void *data;
} w_entry;

struct ts_st_writer {
    w_entry *e;
    int n, cap;
    cJSON *meta;
};

ts_st_writer *ts_st_writer_new(void) {
    ts_st_writer *w = calloc(1, sizeof *w);
    TS_CHECK(w != NULL, "out of memory");
    w->meta = cJSON_CreateObject();
    return w;
}

void ts_st_writer_free(ts_st_writer *w) {
    if (!w) return;
    for (int i = 0; i < w->n; i++) free(w->e[i].name);
    free(w->e);
    cJSON_Delete(w->meta);
    free(w);
}

void ts_st_writer_add(ts_st_writer *w, const char *name, ts_dtype dtype, int ndim,
                      const int64_t *shape, const void *data) {
    if (w->n == w->cap) {
        w->cap = w->cap ? w->cap * 2 : 64;
        w->e = realloc(w->e, (size_t)w->cap * sizeof *w->e);
        TS_CHECK(w->e != NULL, "out of memory");
    }
    w_entry *e = &w->e[w->n++];
    e->name = strdup(name);
    e->dtype = dtype;
    e->ndim = ndim;
    for (int i = 0; i < ndim; i++) e->shape[i] = shape[i];
    e->data = data;
}

void ts_st_writer_meta(ts_st_writer *w, const char *key, const char *value) {
    cJSON_DeleteItemFromObjectCaseSensitive(w->meta, key);
    cJSON_AddStringToObject(w->meta, key, value);
}

static size_t entry_bytes(const w_entry *e) {
    size_t n = ts_dtype_size(e->dtype);
    for (int i = 0; i < e->ndim; i++) n *= (size_t)e->shape[i];
    return n;
}

ts_status ts_st_write(ts_st_writer *w, const char *path, ts_err *err) {
    cJSON *root = cJSON_CreateObject();
    if (cJSON_GetArraySize(w->meta) > 0)
        cJSON_AddItemToObject(root, "__metadata__", cJSON_Duplicate(w->meta, 1));
    size_t off = 0;
    for (int i = 0; i < w->n; i++) {
        w_entry *e = &w->e[i];
        cJSON *t = cJSON_CreateObject();
        cJSON_AddStringToObject(t, "dtype", ts_dtype_name(e->dtype));
        cJSON *sh = cJSON_AddArrayToObject(t, "shape");
        for (int d = 0; d < e->ndim; d++)
            cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)e->shape[d]));
        cJSON *o = cJSON_AddArrayToObject(t, "data_offsets");
        size_t nb = entry_bytes(e);
        cJSON_AddItemToArray(o, cJSON_CreateNumber((double)off));
        cJSON_AddItemToArray(o, cJSON_CreateNumber((double)(off + nb)));
        off += nb;
        cJSON_AddItemToObject(root, e->name, t);
    }
    char *json = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    size_t hlen = strlen(json);
    size_t padded = (hlen + 7) / 8 * 8; /* data starts 8-byte aligned; pad with spaces */
    size_t total = 8 + padded + off;
    uint8_t *buf = malloc(total);
    if (!buf) {
        free(json);
        return ts_fail(err, TS_ERR_NOMEM, "%s: cannot allocate %zu bytes", path, total);
    }
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    memcpy(buf + 8, json, hlen);
    memset(buf + 8 + hlen, ' ', padded - hlen);
    free(json);
    uint8_t *p = buf + 8 + padded;
    for (int i = 0; i < w->n; i++) {
        size_t nb = entry_bytes(&w->e[i]);
        if (nb) memcpy(p, w->e[i].data, nb);
        p += nb;
    }
    ts_status st = ts_write_atomic(path, buf, total, err);
    free(buf);
    return st;
}

/* ---- atomic writes ---- */

ts_status ts_write_atomic(const char *path, const void *data, size_t n, ts_err *err) {
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return ts_fail(err, TS_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
    const uint8_t *p = data;
    size_t left = n;
    while (left > 0) {
        ssize_t k = write(fd, p, left);
        if (k < 0) {
            if (errno == EINTR) continue;
            int e = errno;
            close(fd);
            unlink(tmp);
            return ts_fail(err, TS_ERR_IO, "%s: write failed: %s", path, strerror(e));
        }
        p += k;
        left -= (size_t)k;
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        int e = errno;
        unlink(tmp);
        return ts_fail(err, TS_ERR_IO, "%s: cannot flush to disk: %s", path, strerror(e));
    }
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return ts_fail(err, TS_ERR_IO, "%s: cannot rename into place: %s", path, strerror(e));
    }
    /* make the rename itself durable */
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    int dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return TS_OK;
}
