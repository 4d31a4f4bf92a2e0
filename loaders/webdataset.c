/* webdataset.c: WebDataset tar shards read through libarchive, and the sample they become.
 *
 * A shard is a tar file (possibly gzip'ed) whose members are grouped into samples by key, as
 * webdataset's tar_file_iterator and group_by_keys do: "000123.jpg" and "000123.txt" form the
 * sample "000123" with the fields jpg and txt. Shard lists are written as open_clip takes them
 * (brace patterns joined by "::"), and the source shuffles the shard order per epoch and splits
 * it over ranks. Nothing is decoded here: image bytes go to the pipeline's workers.
 *
 * What this file is not: a tar writer, a reader of remote URLs ("pipe:curl ..." specs), or a
 * cache. Damage is reported, never repaired: a member cut short marks its sample, a header that
 * cannot be read ends the shard with an error that names it.
 */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <archive.h>
#include <archive_entry.h>

#include "loaders-impl.h"

/* ---------------------------------------------------------------------------------------- */
/* Samples                                                                                  */

static const char *const bad_names[] = {
#define TS__BAD_STR(name, msg) msg,
    TS_BAD_LIST(TS__BAD_STR)
#undef TS__BAD_STR
};
_Static_assert(sizeof bad_names / sizeof bad_names[0] == TS_BAD_COUNT, "one name per reason");

const char *ts_bad_reason_str(int reason) {
    return reason >= 0 && reason < TS_BAD_COUNT ? bad_names[reason] : "unknown reason";
}

void ts_sample_init(ts_sample *s) { memset(s, 0, sizeof *s); }

static void bytes_clear(ts_bytes *b) {
    b->n = 0;
    if (b->data) b->data[0] = 0;
}

void ts_sample_clear(ts_sample *s) {
    s->key[0] = s->where[0] = s->image_ext[0] = s->bad_msg[0] = 0;
    bytes_clear(&s->image);
    bytes_clear(&s->path);
    bytes_clear(&s->text);
    bytes_clear(&s->json);
    bytes_clear(&s->video);
    s->has_text = s->has_json = s->has_video = s->has_label = 0;
    s->label = -1;
    s->nfields = 0;
    s->bad = TS_BAD_NONE;
    s->index = -1;
}

void ts_sample_free(ts_sample *s) {
    if (!s) return;
    free(s->image.data);
    free(s->path.data);
    free(s->text.data);
    free(s->json.data);
    free(s->video.data);
    ts_sample_init(s);
}

/* Make room for n bytes plus a terminating NUL. 0 on success. */
static int bytes_reserve(ts_bytes *b, size_t n) {
    if (n + 1 <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < n + 1) cap *= 2;
    uint8_t *d = realloc(b->data, cap);
    if (!d) return -1;
    b->data = d, b->cap = cap;
    return 0;
}

void ts_source_free(ts_source *s) {
    if (s && s->free) s->free(s);
}

/* ---------------------------------------------------------------------------------------- */
/* Shard lists: "a-{000..009}.tar::b-{x,y}.tar"                                             */

#define SHARD_LIST_MAX 10000000

typedef struct strlist {
    char **v;
    int64_t n, cap;
} strlist;

static int strlist_push(strlist *l, char *s) {
    if (l->n == l->cap) {
        int64_t cap = l->cap ? l->cap * 2 : 16;
        char **v = realloc(l->v, (size_t)cap * sizeof *v);
        if (!v) return -1;
        l->v = v, l->cap = cap;
    }
    l->v[l->n++] = s;
    return 0;
}

/* The index of the '}' that closes the '{' at open, or -1. */
static long brace_close(const char *s, long open) {
    int depth = 0;
    for (long i = open; s[i]; i++) {
        if (s[i] == '{') depth++;
        else if (s[i] == '}' && --depth == 0) return i;
    }
    return -1;
}

/* "12..340" as a numeric range; 1 when it is one (width: zero padding, 0 for none). */
static int parse_range(const char *s, size_t n, long long *a, long long *b, int *width) {
    const char *dots = NULL;
    for (size_t i = 0; i + 1 < n; i++)
        if (s[i] == '.' && s[i + 1] == '.') {
            dots = s + i;
            break;
        }
    if (!dots) return 0;
    size_t na = (size_t)(dots - s), nb = n - na - 2;
    if (!na || !nb || na > 18 || nb > 18) return 0;
    for (size_t i = 0; i < na; i++)
        if (!isdigit((unsigned char)s[i])) return 0;
    for (size_t i = 0; i < nb; i++)
        if (!isdigit((unsigned char)dots[2 + i])) return 0;
    *a = strtoll(s, NULL, 10);
    *b = strtoll(dots + 2, NULL, 10);
    int pad = (na > 1 && s[0] == '0') || (nb > 1 && dots[2] == '0');
    *width = pad ? (int)(na > nb ? na : nb) : 0;
    return 1;
}

static char *join3(const char *a, size_t na, const char *b, size_t nb, const char *c) {
    size_t nc = strlen(c);
    char *s = malloc(na + nb + nc + 1);
    if (!s) return NULL;
    memcpy(s, a, na);
    memcpy(s + na, b, nb);
    memcpy(s + na + nb, c, nc + 1);
    return s;
}

/* Expand the first brace group of pat (recursively); every result is pushed to out. */
static ts_status expand_one(const char *pat, const char *whole, strlist *out, ts_err *err) {
    long open = -1;
    for (long i = 0; pat[i]; i++)
        if (pat[i] == '{') {
            open = i;
            break;
        } else if (pat[i] == '}') {
            return ts_fail(err, TS_ERR_USAGE, "shard list '%s': unbalanced '}'", whole);
        }
    if (open < 0) {
        char *s = strdup(pat);
        if (!s || strlist_push(out, s)) {
            free(s);
            return ts_fail(err, TS_ERR_NOMEM, "shard list '%s': out of memory", whole);
        }
        return out->n > SHARD_LIST_MAX
                   ? ts_fail(err, TS_ERR_USAGE, "shard list '%s' expands to more than %d names",
                             whole, SHARD_LIST_MAX)
                   : TS_OK;
    }
    long close = brace_close(pat, open);
    if (close < 0) return ts_fail(err, TS_ERR_USAGE, "shard list '%s': unbalanced '{'", whole);
    const char *in = pat + open + 1;
    size_t nin = (size_t)(close - open - 1);
    const char *rest = pat + close + 1;
    long long a, b;
    int width;
    if (parse_range(in, nin, &a, &b, &width)) {
        if ((a > b ? a - b : b - a) > SHARD_LIST_MAX)
            return ts_fail(err, TS_ERR_USAGE, "shard list '%s' expands to more than %d names",
                           whole, SHARD_LIST_MAX);
        long long step = a <= b ? 1 : -1;
        for (long long v = a;; v += step) {
            char num[32];
            int nn = snprintf(num, sizeof num, "%0*lld", width, v);
            char *s = join3(pat, (size_t)open, num, (size_t)nn, rest);
            if (!s) return ts_fail(err, TS_ERR_NOMEM, "shard list '%s': out of memory", whole);
            ts_status st = expand_one(s, whole, out, err);
            free(s);
            if (st) return st;
            if (v == b) break;
        }
        return TS_OK;
    }
    /* Alternatives split at the commas that are not inside a nested group. */
    int depth = 0, alternatives = 0;
    for (size_t i = 0; i < nin; i++) {
        if (in[i] == '{') depth++;
        else if (in[i] == '}') depth--;
        else if (in[i] == ',' && depth == 0) alternatives = 1;
    }
    if (!alternatives) {
        /* "{x}" stays literal, as braceexpand leaves it; expand what follows it. */
        char *head = join3(pat, (size_t)close + 1, "", 0, "");
        strlist tail = { 0 };
        if (!head) return ts_fail(err, TS_ERR_NOMEM, "shard list '%s': out of memory", whole);
        ts_status st = expand_one(rest, whole, &tail, err);
        for (int64_t k = 0; k < tail.n; k++) {
            char *s = st ? NULL : join3(head, strlen(head), tail.v[k], strlen(tail.v[k]), "");
            if (!st && (!s || strlist_push(out, s))) {
                free(s);
                st = ts_fail(err, TS_ERR_NOMEM, "shard list '%s': out of memory", whole);
            }
            free(tail.v[k]);
        }
        free(tail.v);
        free(head);
        return st;
    }
    size_t start = 0;
    depth = 0;
    for (size_t i = 0; i <= nin; i++) {
        if (i < nin && in[i] == '{') depth++;
        else if (i < nin && in[i] == '}') depth--;
        if (i == nin || (in[i] == ',' && depth == 0)) {
            char *s = join3(pat, (size_t)open, in + start, i - start, rest);
            if (!s) return ts_fail(err, TS_ERR_NOMEM, "shard list '%s': out of memory", whole);
            ts_status st = expand_one(s, whole, out, err);
            free(s);
            if (st) return st;
            start = i + 1;
        }
    }
    return TS_OK;
}

ts_status ts_shard_list_expand(const char *spec, char ***out, int64_t *n, ts_err *err) {
    *out = NULL, *n = 0;
    strlist l = { 0 };
    ts_status st = TS_OK;
    const char *p = spec;
    while (!st) {
        const char *sep = strstr(p, "::");
        size_t len = sep ? (size_t)(sep - p) : strlen(p);
        if (len) {
            char *one = join3(p, len, "", 0, "");
            if (!one) st = ts_fail(err, TS_ERR_NOMEM, "shard list: out of memory");
            else st = expand_one(one, spec, &l, err);
            free(one);
        }
        if (!sep) break;
        p = sep + 2;
    }
    if (!st && l.n == 0) st = ts_fail(err, TS_ERR_USAGE, "shard list '%s' names no shard", spec);
    if (st) {
        ts_shard_list_free(l.v, l.n);
        return st;
    }
    *out = l.v, *n = l.n;
    return TS_OK;
}

void ts_shard_list_free(char **list, int64_t n) {
    for (int64_t i = 0; list && i < n; i++) free(list[i]);
    free(list);
}

/* ---------------------------------------------------------------------------------------- */
/* One shard                                                                                */

struct ts_wds_shard {
    struct archive *a;
    char name[1024];
    int done;           /* end reached or an error seen: no more samples */
    int pending;        /* a header was read whose data belongs to the next sample */
    char pkey[512];     /* key and extension of the pending member */
    char pext[24];
    int64_t psize;
    int64_t members;
    ts_bytes scratch;   /* member data before it is swapped into its field */
    ts_err derr;        /* a damaged header met after a sample: reported by the next call */
    int has_derr;
};

/* webdataset's base_plus_ext: key = folder + basename up to its first dot, ext = the rest
 * (lowercased). 0 when the name has no such split (no dot, or a dot first). */
static int split_name(const char *name, char *key, size_t nkey, char *ext, size_t next) {
    const char *slash = strrchr(name, '/');
    const char *base = slash ? slash + 1 : name;
    const char *dot = strchr(base, '.');
    if (!dot || dot == base) return 0;
    snprintf(key, nkey, "%.*s", (int)(dot - name), name);
    size_t i = 0;
    for (const char *e = dot + 1; *e && i + 1 < next; e++) ext[i++] = (char)tolower((unsigned char)*e);
    ext[i] = 0;
    return 1;
}

static ts_status shard_start(ts_wds_shard *s, ts_err *err) {
    s->a = archive_read_new();
    if (!s->a) return ts_fail(err, TS_ERR_NOMEM, "%s: cannot start libarchive", s->name);
    archive_read_support_filter_all(s->a);
    archive_read_support_format_tar(s->a);
    return TS_OK;
}

ts_status ts_wds_shard_open(ts_wds_shard **out, const char *path, ts_err *err) {
    *out = NULL;
    ts_wds_shard *s = calloc(1, sizeof *s);
    if (!s) return ts_fail(err, TS_ERR_NOMEM, "%s: out of memory", path);
    snprintf(s->name, sizeof s->name, "%s", path);
    ts_status st = shard_start(s, err);
    if (!st && archive_read_open_filename(s->a, path, 1 << 16) != ARCHIVE_OK) {
        int e = archive_errno(s->a);
        st = ts_fail(err, e == ENOENT || e == EACCES ? TS_ERR_IO : TS_ERR_FORMAT,
                     "%s: cannot open shard: %s", path, archive_error_string(s->a));
    }
    if (st) {
        ts_wds_shard_close(s);
        return st;
    }
    *out = s;
    return TS_OK;
}

ts_status ts_wds_shard_open_memory(ts_wds_shard **out, const void *buf, size_t n,
                                   const char *name, ts_err *err) {
    *out = NULL;
    ts_wds_shard *s = calloc(1, sizeof *s);
    if (!s) return ts_fail(err, TS_ERR_NOMEM, "%s: out of memory", name);
    snprintf(s->name, sizeof s->name, "%s", name);
    ts_status st = shard_start(s, err);
    if (!st && archive_read_open_memory(s->a, buf, n) != ARCHIVE_OK)
        st = ts_fail(err, TS_ERR_FORMAT, "%s: cannot open shard: %s", name,
                     archive_error_string(s->a));
    if (st) {
        ts_wds_shard_close(s);
        return st;
    }
    *out = s;
    return TS_OK;
}

void ts_wds_shard_close(ts_wds_shard *s) {
    if (!s) return;
    if (s->a) archive_read_free(s->a);
    free(s->scratch.data);
    free(s);
}

int64_t ts_wds_shard_members(const ts_wds_shard *s) { return s->members; }

/* Read the next member header that can belong to a sample into s->pkey / pext. Returns 1 with
 * a pending member, 0 at the end, -1 on a damaged header (message in err). */
static int next_member(ts_wds_shard *s, ts_err *err) {
    for (;;) {
        struct archive_entry *e;
        int r = archive_read_next_header(s->a, &e);
        if (r == ARCHIVE_EOF) return 0;
        /* ARCHIVE_RETRY is a damaged header that libarchive would skip; webdataset (Python's
         * tarfile) stops there, and so do we: the samples after it are not trusted. */
        if (r != ARCHIVE_OK && r != ARCHIVE_WARN) {
            ts_fail(err, TS_ERR_FORMAT, "%s: corrupt shard after %lld members: %s", s->name,
                    (long long)s->members, archive_error_string(s->a));
            return -1;
        }
        if (archive_entry_filetype(e) != AE_IFREG) continue;
        const char *name = archive_entry_pathname(e);
        if (!name) continue;
        s->members++;
        if (!strchr(name, '/') && !strncmp(name, "__", 2) && strlen(name) >= 4 &&
            !strcmp(name + strlen(name) - 2, "__"))
            continue; /* webdataset's metadata members */
        if (!split_name(name, s->pkey, sizeof s->pkey, s->pext, sizeof s->pext)) continue;
        s->psize = archive_entry_size_is_set(e) ? archive_entry_size(e) : -1;
        s->pending = 1;
        return 1;
    }
}

/* What a field extension becomes. */
enum { F_OTHER, F_IMAGE, F_TEXT, F_JSON, F_CLS, F_VIDEO };
static const char *const image_exts[] = { "jpg", "jpeg", "png", "webp" }; /* preference order */

static int field_kind(const char *ext, int *image_rank) {
    for (int i = 0; i < 4; i++)
        if (!strcmp(ext, image_exts[i])) {
            *image_rank = i;
            return F_IMAGE;
        }
    if (!strcmp(ext, "txt")) return F_TEXT;
    if (!strcmp(ext, "json")) return F_JSON;
    if (!strcmp(ext, "cls")) return F_CLS;
    if (!strcmp(ext, "mp4")) return F_VIDEO;
    return F_OTHER;
}

static void mark_bad(ts_sample *out, int reason, const char *fmt, const char *a, const char *b) {
    if (out->bad) return; /* the first problem names the sample */
    out->bad = reason;
    snprintf(out->bad_msg, sizeof out->bad_msg, fmt, a, b);
}

static void swap_bytes(ts_bytes *a, ts_bytes *b) {
    ts_bytes t = *a;
    *a = *b;
    *b = t;
}

/* Read the pending member's data into its field of out. Returns 0, or -1 when the shard
 * cannot go on (the sample is marked truncated). */
static int take_member(ts_wds_shard *s, ts_sample *out) {
    s->pending = 0;
    const char *ext = s->pext;
    for (int i = 0; i < out->nfields; i++)
        if (!strcmp(out->fields[i], ext)) {
            mark_bad(out, TS_BAD_DUPLICATE, "%.400s: two members with the extension '%s'",
                     out->where, ext);
            archive_read_data_skip(s->a);
            return 0;
        }
    if (out->nfields < TS_SAMPLE_MAX_FIELDS)
        snprintf(out->fields[out->nfields++], sizeof out->fields[0], "%s", ext);
    int rank = 0, kind = field_kind(ext, &rank);
    int cur_rank = 4;
    for (int i = 0; i < 4 && out->image_ext[0]; i++)
        if (!strcmp(out->image_ext, image_exts[i])) cur_rank = i;
    if (kind == F_OTHER || (kind == F_IMAGE && rank >= cur_rank)) {
        return archive_read_data_skip(s->a) < ARCHIVE_WARN ? (mark_bad(out, TS_BAD_TRUNCATED,
                   "%.400s.%s: member cut short", out->where, ext), -1) : 0;
    }
    if (s->psize > (int64_t)TS_SAMPLE_MAX_FIELD) {
        char size[32];
        snprintf(size, sizeof size, "%lld", (long long)s->psize);
        mark_bad(out, TS_BAD_TOO_LARGE, "%.400s: member of %s bytes is over the limit", out->where,
                 size);
        return archive_read_data_skip(s->a) < ARCHIVE_WARN ? -1 : 0;
    }
    /* Read in chunks: the header's size is a hint, the data is the truth. */
    ts_bytes *b = &s->scratch;
    b->n = 0;
    size_t want = s->psize > 0 ? (size_t)s->psize : 4096;
    for (;;) {
        if (b->n + 1 >= b->cap || b->cap < want + 1) {
            size_t need = b->n + 1 < want ? want : b->n * 2 + 4096;
            if (need > TS_SAMPLE_MAX_FIELD || bytes_reserve(b, need)) {
                mark_bad(out, TS_BAD_TOO_LARGE, "%.400s.%s: member too large to hold", out->where,
                         ext);
                return archive_read_data_skip(s->a) < ARCHIVE_WARN ? -1 : 0;
            }
        }
        la_ssize_t r = archive_read_data(s->a, b->data + b->n, b->cap - 1 - b->n);
        if (r < 0) {
            mark_bad(out, TS_BAD_TRUNCATED, "%.400s.%s: member cut short", out->where, ext);
            return -1;
        }
        if (r == 0) break;
        b->n += (size_t)r;
    }
    if (s->psize >= 0 && (int64_t)b->n != s->psize) {
        mark_bad(out, TS_BAD_TRUNCATED, "%.400s.%s: member cut short", out->where, ext);
        return -1;
    }
    b->data[b->n] = 0;
    switch (kind) {
    case F_IMAGE:
        swap_bytes(&out->image, b);
        strcpy(out->image_ext, image_exts[rank]);
        break;
    case F_TEXT:
        swap_bytes(&out->text, b);
        out->has_text = 1;
        break;
    case F_JSON:
        swap_bytes(&out->json, b);
        out->has_json = 1;
        break;
    case F_VIDEO:
        swap_bytes(&out->video, b);
        out->has_video = 1;
        break;
    case F_CLS: {
        /* webdataset reads .cls as int(text): optional spaces, a sign, digits. */
        char *p = (char *)b->data, *end;
        while (isspace((unsigned char)*p)) p++;
        errno = 0;
        long long v = strtoll(p, &end, 10);
        while (isspace((unsigned char)*end)) end++;
        if (end == p || *end || errno) {
            mark_bad(out, TS_BAD_LABEL, "%.400s.cls: not an integer label%s", out->where, "");
        } else {
            out->label = v;
            out->has_label = 1;
        }
        break;
    }
    }
    return 0;
}

ts_status ts_wds_shard_next(ts_wds_shard *s, ts_sample *out, int *got, ts_err *err) {
    *got = 0;
    if (s->has_derr) {
        s->has_derr = 0;
        s->done = 1;
        if (err) *err = s->derr;
        return s->derr.code;
    }
    if (s->done) return TS_OK;
    if (!s->pending) {
        ts_err e;
        int r = next_member(s, &e);
        if (r <= 0) {
            s->done = 1;
            if (r < 0 && err) *err = e;
            return r < 0 ? e.code : TS_OK;
        }
    }
    ts_sample_clear(out);
    snprintf(out->key, sizeof out->key, "%s", s->pkey);
    snprintf(out->where, sizeof out->where, "%.500s:%.500s", s->name, s->pkey);
    *got = 1;
    while (s->pending && !strcmp(s->pkey, out->key)) {
        if (take_member(s, out) < 0) {
            s->done = 1; /* libarchive cannot go on after a short read */
            return TS_OK;
        }
        int r = next_member(s, &s->derr);
        if (r < 0) {
            /* The sample read so far is returned; the error comes with the next call. */
            s->has_derr = 1;
            return TS_OK;
        }
        if (r == 0) s->done = 1;
    }
    return TS_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* The WebDataset source                                                                    */

typedef struct wds_src {
    char **shards;
    int64_t nshards;
    int shuffle;
    int64_t *order; /* this rank's shards in this epoch's order */
    int64_t norder, k;
    ts_wds_shard *cur;
} wds_src;

static ts_status wds_begin(ts_source *src, uint64_t seed, int64_t epoch, int rank, int world,
                           ts_err *err) {
    wds_src *w = src->impl;
    if (world < 1) world = 1;
    if (w->nshards < world)
        return ts_fail(err, TS_ERR_USAGE,
                       "webdataset: %lld shard(s) for %d ranks: every rank needs at least one "
                       "shard (shard list starting '%s')",
                       (long long)w->nshards, world, w->shards[0]);
    ts_wds_shard_close(w->cur);
    w->cur = NULL;
    int64_t *all = malloc((size_t)w->nshards * sizeof *all);
    if (!all) return ts_fail(err, TS_ERR_NOMEM, "webdataset: out of memory");
    for (int64_t i = 0; i < w->nshards; i++) all[i] = i;
    if (w->shuffle) {
        /* Fisher-Yates from (seed, epoch): the same order on every rank, then split. */
        ts_rng r;
        ts_rng_seed(&r, ts__mix64(seed ^ ts__mix64(0x5ba4d5ull + (uint64_t)epoch)));
        for (int64_t i = w->nshards - 1; i > 0; i--) {
            int64_t j = (int64_t)(ts_rng_next(&r) % (uint64_t)(i + 1));
            int64_t t = all[i];
            all[i] = all[j], all[j] = t;
        }
    }
    w->norder = 0;
    for (int64_t i = rank; i < w->nshards; i += world) all[w->norder++] = all[i];
    free(w->order);
    w->order = all;
    w->k = 0;
    return TS_OK;
}

static ts_status wds_next(ts_source *src, ts_sample *out, int *got, ts_err *err) {
    wds_src *w = src->impl;
    *got = 0;
    for (;;) {
        if (!w->cur) {
            if (w->k >= w->norder) return TS_OK;
            ts_status st = ts_wds_shard_open(&w->cur, w->shards[w->order[w->k++]], err);
            if (st) return st;
        }
        ts_wds_shard *s = w->cur;
        ts_status st = ts_wds_shard_next(s, out, got, err);
        if (st || !*got) {
            ts_wds_shard_close(s);
            w->cur = NULL;
            if (st) return st;
            continue;
        }
        return TS_OK;
    }
}

static void wds_free(ts_source *src) {
    wds_src *w = src->impl;
    ts_wds_shard_close(w->cur);
    ts_shard_list_free(w->shards, w->nshards);
    free(w->order);
    free(w);
    free(src);
}

ts_status ts_wds_source_new(ts_source **out, const char *spec, int shuffle, ts_err *err) {
    *out = NULL;
    ts_source *src = calloc(1, sizeof *src);
    wds_src *w = calloc(1, sizeof *w);
    if (!src || !w) {
        free(src);
        free(w);
        return ts_fail(err, TS_ERR_NOMEM, "webdataset: out of memory");
    }
    ts_status st = ts_shard_list_expand(spec, &w->shards, &w->nshards, err);
    if (st) {
        free(src);
        free(w);
        return st;
    }
    w->shuffle = shuffle;
    src->type = "webdataset";
    src->begin = wds_begin;
    src->next = wds_next;
    src->free = wds_free;
    src->impl = w;
    *out = src;
    return TS_OK;
}
