/* csvdata.c: CSV/TSV files of image paths and captions, as open_clip's CsvDataset reads them.
 *
 * The file is read whole at open: a header row names the columns, fields follow RFC 4180
 * (double quotes around a field that holds the separator, a quote or a line break; a quote
 * inside doubled), lines end in LF or CRLF, blank lines are skipped as pandas skips them. The
 * image column (--csv-img-key, default "filepath") and the caption column (--csv-caption-key,
 * default "title") are found by name; image paths are taken relative to the CSV's folder.
 *
 * What this file is not: a CSV writer, or a reader of any other column types (numbers stay
 * text). Images are read by the pipeline's workers, so a missing file is a bad sample that
 * names its row, found when the row is used, not at open.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "loaders-impl.h"

struct ts_csv {
    char *path;
    char *dir;         /* the CSV's folder, "" for the current one */
    char *cells;       /* every field, unquoted and NUL-terminated, one after the other */
    size_t *cell_off;  /* (rows + 1, cols): offsets into cells; row 0 is the header */
    int64_t *line;     /* (rows + 1) 1-based line where each row starts */
    int64_t rows;      /* data rows */
    int cols;
    int img_col, cap_col;
};

void ts_csv_close(ts_csv *c) {
    if (!c) return;
    free(c->path);
    free(c->dir);
    free(c->cells);
    free(c->cell_off);
    free(c->line);
    free(c);
}

int64_t ts_csv_rows(const ts_csv *c) { return c->rows; }
int ts_csv_cols(const ts_csv *c) { return c->cols; }
const char *ts_csv_col_name(const ts_csv *c, int j) { return c->cells + c->cell_off[j]; }
const char *ts_csv_cell(const ts_csv *c, int64_t row, int j) {
    return c->cells + c->cell_off[(size_t)(row + 1) * (size_t)c->cols + (size_t)j];
}
int64_t ts_csv_line(const ts_csv *c, int64_t row) { return c->line[row + 1]; }
int ts_csv_img_col(const ts_csv *c) { return c->img_col; }
int ts_csv_caption_col(const ts_csv *c) { return c->cap_col; }

const char *ts_csv_resolve(const ts_csv *c, const char *p, char *buf, size_t n) {
    if (p[0] == '/' || !c->dir[0]) snprintf(buf, n, "%s", p);
    else snprintf(buf, n, "%s/%s", c->dir, p);
    return buf;
}

const char *ts_csv_image_path(const ts_csv *c, int64_t row, char *buf, size_t n) {
    return ts_csv_resolve(c, ts_csv_cell(c, row, c->img_col), buf, n);
}

/* A growing array of offsets. */
typedef struct offs {
    size_t *v;
    size_t n, cap;
} offs;
static int offs_push(offs *o, size_t x) {
    if (o->n == o->cap) {
        size_t cap = o->cap ? o->cap * 2 : 1024;
        size_t *v = realloc(o->v, cap * sizeof *v);
        if (!v) return -1;
        o->v = v, o->cap = cap;
    }
    o->v[o->n++] = x;
    return 0;
}

/* The whole file, NUL-terminated, into *out (malloc'ed); its length in *n. */
static ts_status read_file(const char *path, char **out, size_t *n, ts_err *err) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return ts_fail(err, TS_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 1 << 16, len = 0;
    char *b = malloc(cap);
    while (b) {
        len += fread(b + len, 1, cap - 1 - len, f);
        if (len < cap - 1) break;
        char *nb = realloc(b, cap * 2);
        if (!nb) free(b);
        b = nb, cap *= 2;
    }
    int bad = ferror(f);
    fclose(f);
    if (!b) return ts_fail(err, TS_ERR_NOMEM, "%s: out of memory", path);
    if (bad) {
        free(b);
        return ts_fail(err, TS_ERR_IO, "%s: read error", path);
    }
    b[len] = 0;
    *out = b, *n = len;
    return TS_OK;
}

static int has_suffix(const char *s, const char *suf) {
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && !strcasecmp(s + n - m, suf);
}

/* Parse text (n bytes, NUL-terminated) in place into c. The unquoted fields are written over
 * the text itself: a field never grows when its quotes are removed. */
static ts_status parse(ts_csv *c, char *text, size_t n, char sep, ts_err *err) {
    offs cells = { 0 }, lines = { 0 };
    size_t i = 0, w = 0;
    int64_t line = 1;
    int cols = -1;
    if (n >= 3 && !memcmp(text, "\xEF\xBB\xBF", 3)) i = 3; /* a UTF-8 byte-order mark */
    ts_status st = TS_OK;
    while (i < n && !st) {
        /* A blank line is no row. */
        if (text[i] == '\n' || (text[i] == '\r' && i + 1 < n && text[i + 1] == '\n')) {
            i += text[i] == '\r' ? 2 : 1;
            line++;
            continue;
        }
        int64_t row_line = line;
        size_t row_start = cells.n;
        for (;;) { /* one field */
            size_t start = w;
            if (i < n && text[i] == '"') {
                int64_t qline = line;
                i++;
                for (;;) {
                    if (i >= n) {
                        st = ts_fail(err, TS_ERR_FORMAT,
                                     "%s:%lld: a quoted field is never closed", c->path,
                                     (long long)qline);
                        break;
                    }
                    if (text[i] == '"') {
                        if (i + 1 < n && text[i + 1] == '"') {
                            text[w++] = '"';
                            i += 2;
                            continue;
                        }
                        i++;
                        break;
                    }
                    if (text[i] == '\n') line++;
                    text[w++] = text[i++];
                }
                if (st) break;
            }
            /* Unquoted text, or what follows a closing quote (kept, as pandas keeps it). */
            while (i < n && text[i] != sep && text[i] != '\n' &&
                   !(text[i] == '\r' && i + 1 < n && text[i + 1] == '\n'))
                text[w++] = text[i++];
            char t = i < n ? text[i] : 0; /* the NUL below may land on it */
            text[w++] = 0;
            if (offs_push(&cells, start)) {
                st = ts_fail(err, TS_ERR_NOMEM, "%s: out of memory", c->path);
                break;
            }
            if (i < n && t == sep) {
                i++;
                continue;
            }
            if (i < n) i += t == '\r' ? 2 : 1;
            line++;
            break;
        }
        if (st) break;
        int nf = (int)(cells.n - row_start);
        if (cols < 0) cols = nf;
        else if (nf != cols)
            st = ts_fail(err, TS_ERR_FORMAT, "%s:%lld: row %lld has %d field%s, the header has %d",
                         c->path, (long long)row_line, (long long)lines.n, nf, nf == 1 ? "" : "s",
                         cols);
        if (!st && offs_push(&lines, (size_t)row_line))
            st = ts_fail(err, TS_ERR_NOMEM, "%s: out of memory", c->path);
    }
    if (!st && cols < 0) st = ts_fail(err, TS_ERR_FORMAT, "%s: empty file, no header row", c->path);
    if (st) {
        free(cells.v);
        free(lines.v);
        return st;
    }
    c->cols = cols;
    c->rows = (int64_t)lines.n - 1;
    c->cell_off = cells.v;
    c->line = (int64_t *)lines.v; /* size_t and int64_t have one size on every target */
    _Static_assert(sizeof(size_t) == sizeof(int64_t), "line numbers are stored as size_t");
    return TS_OK;
}

static ts_status find_col(ts_csv *c, const char *key, const char *what, int *out, ts_err *err) {
    for (int j = 0; j < c->cols; j++)
        if (!strcmp(ts_csv_col_name(c, j), key)) {
            *out = j;
            return TS_OK;
        }
    char list[512] = "";
    for (int j = 0; j < c->cols; j++) {
        size_t l = strlen(list);
        snprintf(list + l, sizeof list - l, "%s'%s'", j ? ", " : "", ts_csv_col_name(c, j));
    }
    return ts_fail(err, TS_ERR_DATA, "%s: no column '%s' for the %s (columns: %s)", c->path, key,
                   what, list);
}

ts_status ts_csv_open(ts_csv **out, const ts_csv_spec *spec, ts_err *err) {
    *out = NULL;
    ts_csv *c = calloc(1, sizeof *c);
    if (!c) return ts_fail(err, TS_ERR_NOMEM, "%s: out of memory", spec->path);
    c->img_col = c->cap_col = -1;
    c->path = strdup(spec->path);
    c->dir = strdup(spec->path);
    if (!c->path || !c->dir) {
        ts_csv_close(c);
        return ts_fail(err, TS_ERR_NOMEM, "%s: out of memory", spec->path);
    }
    char *slash = strrchr(c->dir, '/');
    if (slash) slash[slash == c->dir ? 1 : 0] = 0;
    else c->dir[0] = 0;
    size_t n = 0;
    ts_status st = read_file(spec->path, &c->cells, &n, err);
    if (st) {
        ts_csv_close(c);
        return st;
    }
    char sep = spec->sep;
    if (!sep) {
        const char *nl = memchr(c->cells, '\n', n);
        size_t head = nl ? (size_t)(nl - c->cells) : n;
        sep = has_suffix(spec->path, ".tsv") || memchr(c->cells, '\t', head) ? '\t' : ',';
    }
    st = parse(c, c->cells, n, sep, err);
    if (!st) {
        const char *ik = spec->img_key ? spec->img_key : "filepath";
        const char *ck = spec->caption_key ? spec->caption_key : "title";
        if (ik[0]) st = find_col(c, ik, "image paths", &c->img_col, err);
        if (!st && ck[0]) st = find_col(c, ck, "captions", &c->cap_col, err);
    }
    if (st) {
        ts_csv_close(c);
        return st;
    }
    *out = c;
    return TS_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* The CSV source                                                                           */

typedef struct csv_src {
    ts_csv *c;
    int shuffle;
    int64_t *order, norder, k;
} csv_src;

static ts_status csv_begin(ts_source *src, uint64_t seed, int64_t epoch, int rank, int world,
                           ts_err *err) {
    csv_src *s = src->impl;
    int64_t n = s->c->rows;
    if (!s->order) {
        s->order = malloc((size_t)(n ? n : 1) * sizeof *s->order);
        if (!s->order) return ts_fail(err, TS_ERR_NOMEM, "%s: out of memory", s->c->path);
    }
    s->norder = ts__epoch_order(s->order, n, s->shuffle, seed, 0xc5full, epoch, rank, world);
    s->k = 0;
    return TS_OK;
}

static ts_status csv_next(ts_source *src, ts_sample *out, int *got, ts_err *err) {
    csv_src *s = src->impl;
    (void)err;
    *got = 0;
    if (s->k >= s->norder) return TS_OK;
    int64_t row = s->order[s->k++];
    const ts_csv *c = s->c;
    ts_sample_clear(out);
    snprintf(out->key, sizeof out->key, "%lld", (long long)row + 1);
    snprintf(out->where, sizeof out->where, "%.900s:%lld: row %lld", c->path,
             (long long)ts_csv_line(c, row), (long long)row + 1);
    const char *cell = ts_csv_cell(c, row, c->img_col);
    size_t need = strlen(cell) + strlen(c->dir) + 2;
    if (!out->path.data || out->path.cap < need) {
        uint8_t *d = realloc(out->path.data, need);
        if (!d) return ts_fail(err, TS_ERR_NOMEM, "%s: out of memory", out->where);
        out->path.data = d, out->path.cap = need;
    }
    if (!cell[0]) {
        out->bad = TS_BAD_FILE;
        snprintf(out->bad_msg, sizeof out->bad_msg, "%.480s: empty image path", out->where);
    } else {
        ts_csv_image_path(c, row, (char *)out->path.data, need);
        out->path.n = strlen((char *)out->path.data);
    }
    if (c->cap_col >= 0) {
        const char *cap = ts_csv_cell(c, row, c->cap_col);
        size_t m = strlen(cap);
        if (!out->text.data || out->text.cap < m + 1) {
            uint8_t *d = realloc(out->text.data, m + 1);
            if (!d) return ts_fail(err, TS_ERR_NOMEM, "%s: out of memory", out->where);
            out->text.data = d, out->text.cap = m + 1;
        }
        memcpy(out->text.data, cap, m + 1);
        out->text.n = m;
        out->has_text = 1;
    }
    *got = 1;
    return TS_OK;
}

static void csv_free(ts_source *src) {
    csv_src *s = src->impl;
    ts_csv_close(s->c);
    free(s->order);
    free(s);
    free(src);
}

ts_status ts_csv_source_new(ts_source **out, ts_csv *c, int shuffle, ts_err *err) {
    *out = NULL;
    ts_source *src = calloc(1, sizeof *src);
    if (c->img_col < 0) {
        ts_status st = ts_fail(err, TS_ERR_USAGE, "%s: no image column chosen", c->path);
        ts_csv_close(c);
        return st;
    }
    csv_src *s = calloc(1, sizeof *s);
    if (!src || !s) {
        free(src);
        free(s);
        ts_csv_close(c);
        return ts_fail(err, TS_ERR_NOMEM, "csv: out of memory");
    }
    s->c = c;
    s->shuffle = shuffle;
    src->type = "csv";
    src->begin = csv_begin;
    src->next = csv_next;
    src->free = csv_free;
    src->impl = s;
    *out = src;
    return TS_OK;
}
