/* tokenize_fast.c: FAST action tokens (Pertsch et al., 2025).
 *
 * A normalised chunk (H steps x A dimensions) is compressed per dimension with an orthonormal
 * DCT-II over time (scipy.fft.dct(norm="ortho")), the coefficients scaled and rounded to
 * integers (half to even, as numpy.around), and flattened frequency-major: every dimension's
 * coefficient 0, then every dimension's coefficient 1, ... Smooth chunks put almost all their
 * energy in the first coefficients, so the tail is mostly zeros, which byte-pair encoding
 * then merges into few tokens.
 *
 * The BPE alphabet is the integers in [lo, hi] seen in the training chunks (others are clipped
 * to that range); merges are learnt greedily, the most frequent adjacent pair first (ties to
 * the smallest pair of ids), until the vocabulary is full or no pair occurs min_freq times.
 * Encoding applies the lowest-ranked merge present until none applies (as BPE tokenizers do);
 * decoding expands every id back to integers exactly, then inverts the scale and the DCT.
 */
#include "action.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct fast_impl {
    float scale;
    int lo, base;          /* integer lo + i is symbol i, i < base */
    int nmerge;
    int32_t (*merge)[2];   /* merge r makes id base + r from the pair */
    /* pair -> rank, open addressing */
    uint64_t *hkey;
    int32_t *hval;
    size_t hcap;
    double *basis;         /* (H, H): basis[k * H + t] = s_k cos(pi (t + 0.5) k / H) */
} fast_impl;

static uint64_t pair_key(int32_t a, int32_t b) { return ((uint64_t)(uint32_t)a << 32) | (uint32_t)b; }

static uint64_t hash64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return x;
}

static void index_merges(fast_impl *f) {
    free(f->hkey);
    free(f->hval);
    f->hcap = 16;
    while (f->hcap < (size_t)f->nmerge * 2 + 16) f->hcap *= 2;
    f->hkey = malloc(f->hcap * sizeof *f->hkey);
    f->hval = malloc(f->hcap * sizeof *f->hval);
    TS_CHECK(f->hkey && f->hval, "out of memory");
    for (size_t i = 0; i < f->hcap; i++) f->hval[i] = -1;
    for (int r = 0; r < f->nmerge; r++) {
        uint64_t k = pair_key(f->merge[r][0], f->merge[r][1]);
        size_t i = hash64(k) & (f->hcap - 1);
        while (f->hval[i] >= 0) i = (i + 1) & (f->hcap - 1);
        f->hkey[i] = k;
        f->hval[i] = r;
    }
}

static int32_t merge_rank(const fast_impl *f, int32_t a, int32_t b) {
    uint64_t k = pair_key(a, b);
    for (size_t i = hash64(k) & (f->hcap - 1); f->hval[i] >= 0; i = (i + 1) & (f->hcap - 1))
        if (f->hkey[i] == k) return f->hval[i];
    return -1;
}

static void make_basis(fast_impl *f, int H) {
    f->basis = malloc((size_t)H * H * sizeof *f->basis);
    TS_CHECK(f->basis != NULL, "out of memory");
    for (int k = 0; k < H; k++)
        for (int t = 0; t < H; t++)
            f->basis[k * H + t] = (k ? sqrt(2.0 / H) : sqrt(1.0 / H)) *
                                  cos(M_PI * (t + 0.5) * k / H);
}

/* chunk (H, A) -> rounded coefficients, frequency-major (H * A) */
static void dct_round(const fast_impl *f, int H, int A, const float *chunk, int32_t *q) {
    for (int k = 0; k < H; k++)
        for (int a = 0; a < A; a++) {
            double s = 0;
            for (int t = 0; t < H; t++) s += f->basis[k * H + t] * chunk[t * A + a];
            q[k * A + a] = (int32_t)nearbyint(s * f->scale);
        }
}

static int fast_encode(const ts_act_tok *t, const float *chunk, int32_t *ids) {
    const fast_impl *f = t->impl;
    int n = t->horizon * t->dim;
    dct_round(f, t->horizon, t->dim, chunk, ids);
    for (int i = 0; i < n; i++) {
        int32_t v = ids[i] - f->lo;
        ids[i] = v < 0 ? 0 : v >= f->base ? f->base - 1 : v;
    }
    for (;;) { /* the lowest-ranked merge present, leftmost first */
        int best = -1, at = -1;
        for (int i = 0; i + 1 < n; i++) {
            int32_t r = merge_rank(f, ids[i], ids[i + 1]);
            if (r >= 0 && (best < 0 || r < best)) {
                best = r;
                at = i;
            }
        }
        if (best < 0) break;
        int w = 0;
        for (int i = 0; i < n; i++) {
            if (i >= at && i + 1 < n && ids[i] == f->merge[best][0] &&
                ids[i + 1] == f->merge[best][1]) {
                ids[w++] = f->base + best;
                i++;
            } else {
                ids[w++] = ids[i];
            }
        }
        n = w;
    }
    return n;
}

/* Expand id into base symbols at out (room for cap); returns the count or -1 when it does not
 * fit. */
static int expand(const fast_impl *f, int32_t id, int32_t *out, int cap) {
    if (id < f->base) {
        if (cap < 1) return -1;
        out[0] = id;
        return 1;
    }
    int a = expand(f, f->merge[id - f->base][0], out, cap);
    if (a < 0) return -1;
    int b = expand(f, f->merge[id - f->base][1], out + a, cap - a);
    return b < 0 ? -1 : a + b;
}

static ts_status fast_decode(const ts_act_tok *t, const int32_t *ids, int n, float *chunk,
                             ts_err *err) {
    const fast_impl *f = t->impl;
    int H = t->horizon, A = t->dim, want = H * A, got = 0;
    int32_t *q = malloc((size_t)want * sizeof *q);
    if (!q) return ts_fail(err, TS_ERR_NOMEM, "out of memory");
    for (int i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= t->vocab) {
            free(q);
            return ts_fail(err, TS_ERR_DATA, "FAST: id %d at %d is outside 0..%d", (int)ids[i], i,
                           t->vocab - 1);
        }
        int k = expand(f, ids[i], q + got, want - got);
        if (k < 0) {
            free(q);
            return ts_fail(err, TS_ERR_DATA, "FAST: %d ids expand to more than the %d "
                           "coefficients of a chunk", n, want);
        }
        got += k;
    }
    if (got != want) {
        free(q);
        return ts_fail(err, TS_ERR_DATA, "FAST: %d ids expand to %d coefficients, a chunk of %d "
                       "x %d has %d", n, got, H, A, want);
    }
    for (int ti = 0; ti < H; ti++)
        for (int a = 0; a < A; a++) {
            double s = 0;
            for (int k = 0; k < H; k++)
                s += f->basis[k * H + ti] * (double)(q[k * A + a] + f->lo) / f->scale;
            chunk[ti * A + a] = (float)s;
        }
    free(q);
    return TS_OK;
}

static void fast_free(ts_act_tok *t) {
    fast_impl *f = t->impl;
    free(f->merge);
    free(f->hkey);
    free(f->hval);
    free(f->basis);
    free(f);
    free(t);
}

static ts_act_tok *fast_make(int H, int A, fast_impl *f) {
    ts_act_tok *t = calloc(1, sizeof *t);
    TS_CHECK(t != NULL, "out of memory");
    index_merges(f);
    *t = (ts_act_tok){ "fast", H, A, f->base + f->nmerge, H * A, fast_encode, fast_decode,
                       fast_free, f };
    return t;
}

ts_fast_cfg ts_fast_cfg_default(void) { return (ts_fast_cfg){ 10.0f, 1024, 2 }; }

ts_status ts_act_tok_fast_train(ts_act_tok **out, const float *chunks, int64_t n, int horizon,
                                int dim, const ts_fast_cfg *cfg, ts_err *err) {
    *out = NULL;
    if (n < 1 || horizon < 1 || dim < 1 || !(cfg->scale > 0) || cfg->vocab < 2)
        return ts_fail(err, TS_ERR_USAGE, "FAST: %lld chunks of %d x %d, scale %g, vocabulary %d",
                       (long long)n, horizon, dim, cfg->scale, cfg->vocab);
    fast_impl *f = calloc(1, sizeof *f);
    if (!f) return ts_fail(err, TS_ERR_NOMEM, "out of memory");
    f->scale = cfg->scale;
    make_basis(f, horizon);
    int L = horizon * dim;
    int32_t *seq = malloc((size_t)n * L * sizeof *seq);
    int *len = malloc((size_t)n * sizeof *len);
    if (!seq || !len) {
        free(seq);
        free(len);
        free(f->basis);
        free(f);
        return ts_fail(err, TS_ERR_NOMEM, "out of memory");
    }
    int lo = INT32_MAX, hi = INT32_MIN;
    for (int64_t i = 0; i < n; i++) {
        dct_round(f, horizon, dim, chunks + i * L, seq + i * L);
        for (int j = 0; j < L; j++) {
            lo = seq[i * L + j] < lo ? seq[i * L + j] : lo;
            hi = seq[i * L + j] > hi ? seq[i * L + j] : hi;
        }
        len[i] = L;
    }
    f->lo = lo;
    f->base = hi - lo + 1;
    for (int64_t i = 0; i < n * L; i++) seq[i] -= lo;
    int want = cfg->vocab > f->base ? cfg->vocab - f->base : 0;
    if (cfg->vocab < f->base)
        ts_log(TS_LOG_WARN, "FAST: the coefficients span %d integers, more than the vocabulary "
               "of %d; no merges (lower the scale or raise the vocabulary)", f->base, cfg->vocab);
    f->merge = malloc((size_t)(want ? want : 1) * sizeof *f->merge);
    /* pair counts in a hash table rebuilt per merge (the sequences are short) */
    size_t cap = 1024;
    while (cap < (size_t)n * L * 2) cap *= 2;
    uint64_t *ck = malloc(cap * sizeof *ck);
    int64_t *cv = malloc(cap * sizeof *cv);
    if (!f->merge || !ck || !cv) {
        free(ck);
        free(cv);
        free(seq);
        free(len);
        fast_free(fast_make(horizon, dim, f));
        return ts_fail(err, TS_ERR_NOMEM, "out of memory");
    }
    while (f->nmerge < want) {
        memset(cv, 0, cap * sizeof *cv);
        uint64_t best_k = 0;
        int64_t best_c = 0;
        for (int64_t i = 0; i < n; i++) {
            const int32_t *s = seq + i * L;
            for (int j = 0; j + 1 < len[i]; j++) {
                uint64_t k = pair_key(s[j], s[j + 1]);
                size_t h = hash64(k) & (cap - 1);
                while (cv[h] && ck[h] != k) h = (h + 1) & (cap - 1);
                ck[h] = k;
                int64_t c = ++cv[h];
                if (c > best_c || (c == best_c && k < best_k)) {
                    best_c = c;
                    best_k = k;
                }
            }
        }
        if (best_c < (cfg->min_freq > 1 ? cfg->min_freq : 1)) break;
        int32_t a = (int32_t)(best_k >> 32), b = (int32_t)(best_k & 0xffffffffu);
        int32_t id = f->base + f->nmerge;
        f->merge[f->nmerge][0] = a;
        f->merge[f->nmerge][1] = b;
        f->nmerge++;
        for (int64_t i = 0; i < n; i++) {
            int32_t *s = seq + i * L;
            int w = 0;
            for (int j = 0; j < len[i]; j++) {
                if (j + 1 < len[i] && s[j] == a && s[j + 1] == b) {
                    s[w++] = id;
                    j++;
                } else {
                    s[w++] = s[j];
                }
            }
            len[i] = w;
        }
    }
    free(ck);
    free(cv);
    free(seq);
    free(len);
    *out = fast_make(horizon, dim, f);
    return TS_OK;
}

char *ts_act_tok_fast_save(const ts_act_tok *t) {
    TS_CHECK(t && !strcmp(t->type, "fast"), "ts_act_tok_fast_save: not a FAST tokenizer");
    const fast_impl *f = t->impl;
    size_t cap = 256 + (size_t)f->nmerge * 24;
    char *s = malloc(cap);
    if (!s) return NULL;
    size_t k = (size_t)snprintf(s, cap, "tessera-fast 1\nhorizon %d\ndim %d\nscale %.9g\n"
                                "lo %d\nbase %d\nmerges %d\n", t->horizon, t->dim, f->scale,
                                f->lo, f->base, f->nmerge);
    for (int r = 0; r < f->nmerge; r++)
        k += (size_t)snprintf(s + k, cap - k, "%d %d\n", (int)f->merge[r][0],
                              (int)f->merge[r][1]);
    return s;
}

ts_status ts_act_tok_fast_load(ts_act_tok **out, const char *text, const char *name,
                               ts_err *err) {
    *out = NULL;
    int H, A, lo, base, nm, used;
    float scale;
    if (sscanf(text, "tessera-fast 1 horizon %d dim %d scale %f lo %d base %d merges %d%n", &H, &A,
               &scale, &lo, &base, &nm, &used) != 6 || H < 1 || A < 1 || !(scale > 0) ||
        base < 1 || nm < 0)
        return ts_fail(err, TS_ERR_FORMAT, "%s: not a FAST tokenizer (header)", name);
    fast_impl *f = calloc(1, sizeof *f);
    if (!f || !(f->merge = malloc((size_t)(nm ? nm : 1) * sizeof *f->merge))) {
        free(f);
        return ts_fail(err, TS_ERR_NOMEM, "out of memory");
    }
    f->scale = scale;
    f->lo = lo;
    f->base = base;
    const char *p = text + used;
    for (int r = 0; r < nm; r++) {
        char *end;
        errno = 0;
        long a = strtol(p, &end, 10);
        long b = end != p ? strtol(end, &end, 10) : -1;
        if (end == p || errno || a < 0 || b < 0 || a >= base + r || b >= base + r) {
            free(f->merge);
            free(f);
            return ts_fail(err, TS_ERR_FORMAT, "%s: merge %d is malformed or names an id not "
                           "yet made", name, r);
        }
        f->merge[r][0] = (int32_t)a;
        f->merge[r][1] = (int32_t)b;
        p = end;
    }
    f->nmerge = nm;
    make_basis(f, H);
    *out = fast_make(H, A, f);
    return TS_OK;
}
