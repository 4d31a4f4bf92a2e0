/* params.c: the parameter arena.
 *
 * Building a model registers every parameter by name, shape, initialiser and flags; nothing is
 * allocated yet. ts_params_finalize then lays out one block: all data, then all gradients,
 * then two optimizer-state slots, each tensor 64-byte aligned inside it, and runs the
 * initialisers in registration order from one seed, so a model is the same for the same seed.
 */
#include "tessera-impl.h"

#include <stdarg.h>
#include <stdlib.h>

typedef struct pspec {
    ts_tensor *t;
    ts_init init;
    int flags;
    size_t offset; /* in floats, of this tensor inside each section */
} pspec;

struct ts_params {
    pspec *p;
    int n, cap;
    float *block;       /* data | grads | state0 | state1 */
    size_t section;     /* floats per section */
    int finalized;
};

ts_params *ts_params_new(void) {
    ts_params *p = calloc(1, sizeof *p);
    TS_CHECK(p != NULL, "out of memory");
    return p;
}

void ts_params_free(ts_params *p) {
    if (!p) return;
    for (int i = 0; i < p->n; i++) {
        free((char *)p->p[i].t->name);
        free(p->p[i].t->grad);
        free(p->p[i].t);
    }
    free(p->p);
    free(p->block);
    free(p);
}

const char *ts_pname(char *buf, size_t n, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, n, fmt, ap);
    va_end(ap);
    return buf;
}

ts_tensor *ts_param(ts_params *p, const char *name, int ndim, const int64_t *shape, ts_init init,
                    int flags) {
    TS_CHECK(!p->finalized, "parameter %s registered after finalize", name);
    TS_CHECK(ndim >= 0 && ndim <= TS_MAX_DIMS, "parameter %s: %d dims", name, ndim);
    for (int i = 0; i < p->n; i++)
        TS_CHECK(strcmp(p->p[i].t->name, name) != 0, "parameter %s registered twice", name);
    if (p->n == p->cap) {
        p->cap = p->cap ? p->cap * 2 : 64;
        p->p = realloc(p->p, (size_t)p->cap * sizeof *p->p);
        TS_CHECK(p->p != NULL, "out of memory");
    }
    ts_tensor *t = calloc(1, sizeof *t);
    TS_CHECK(t != NULL, "out of memory");
    t->dtype = TS_F32;
    t->device = TS_CPU;
    t->ndim = ndim;
    t->numel = 1;
    for (int i = 0; i < ndim; i++) {
        t->shape[i] = shape[i];
        t->numel *= shape[i];
    }
    t->name = strdup(name);
    t->requires_grad = !(flags & (TS_PARAM_BUFFER | TS_PARAM_FROZEN));
    pspec *s = &p->p[p->n++];
    s->t = t;
    s->init = init;
    s->flags = flags;
    return t;
}

void ts_param_set_init(ts_params *p, const ts_tensor *t, ts_init init) {
    TS_CHECK(!p->finalized, "parameter %s: init changed after finalize", t->name);
    for (int i = 0; i < p->n; i++)
        if (p->p[i].t == t) {
            p->p[i].init = init;
            return;
        }
    TS_CHECK(0, "parameter %s is not in this set", t->name);
}

void ts_param_set_flags(ts_params *p, const ts_tensor *t, int flags) {
    TS_CHECK(!p->finalized, "parameter %s: flags changed after finalize", t->name);
    for (int i = 0; i < p->n; i++)
        if (p->p[i].t == t) {
            TS_CHECK((p->p[i].flags & TS_PARAM_BUFFER) == (flags & TS_PARAM_BUFFER),
                     "parameter %s: TS_PARAM_BUFFER cannot change after registration", t->name);
            p->p[i].flags = flags;
            p->p[i].t->requires_grad = !(flags & (TS_PARAM_BUFFER | TS_PARAM_FROZEN));
            return;
        }
    TS_CHECK(0, "parameter %s is not in this set", t->name);
}

ts_status ts_params_finalize(ts_params *p, uint64_t seed, ts_err *err) {
    TS_CHECK(!p->finalized, "ts_params_finalize called twice");
    size_t off = 0;
    for (int i = 0; i < p->n; i++) {
        p->p[i].offset = off;
        off += ((size_t)p->p[i].t->numel + 15) / 16 * 16; /* 64-byte aligned */
    }
    p->section = off;
    size_t bytes = 4 * off * sizeof(float);
    p->block = aligned_alloc(64, bytes ? bytes : 64);
    if (!p->block)
        return ts_fail(err, TS_ERR_NOMEM, "cannot allocate %zu bytes for %d parameters", bytes,
                       p->n);
    memset(p->block, 0, bytes);
    ts_rng rng;
    ts_rng_seed(&rng, seed);
    for (int i = 0; i < p->n; i++) {
        pspec *s = &p->p[i];
        ts_tensor *t = s->t;
        t->data = p->block + s->offset;
        if (t->requires_grad) {
            ts_tensor *g = calloc(1, sizeof *g);
            TS_CHECK(g != NULL, "out of memory");
            *g = *t;
            g->name = NULL;
            g->requires_grad = 0;
            g->data = p->block + p->section + s->offset;
            t->grad = g;
        }
        float *d = ts_f32(t);
        for (int64_t j = 0; j < t->numel; j++) {
            switch (s->init.kind) {
            case TS_INIT_ZEROS: d[j] = 0.0f; break;
            case TS_INIT_ONES: d[j] = 1.0f; break;
            case TS_INIT_CONST: d[j] = s->init.a; break;
            case TS_INIT_NORMAL: d[j] = s->init.a * ts_rng_normal(&rng); break;
            case TS_INIT_UNIFORM:
                d[j] = s->init.a + (s->init.b - s->init.a) * ts_rng_uniform(&rng);
                break;
            }
        }
    }
    p->finalized = 1;
    return TS_OK;
}

int ts_params_count(const ts_params *p) { return p->n; }
size_t ts__params_offset(const ts_params *p, int i) { return p->p[i].offset; }
ts_tensor *ts_params_get(const ts_params *p, int i) { return p->p[i].t; }
int ts_params_flags(const ts_params *p, int i) { return p->p[i].flags; }

ts_tensor *ts_params_find(const ts_params *p, const char *name) {
    for (int i = 0; i < p->n; i++)
        if (strcmp(p->p[i].t->name, name) == 0) return p->p[i].t;
    return NULL;
}

float *ts_params_state(const ts_params *p, int i, int slot) {
    TS_CHECK(p->finalized && slot >= 0 && slot < 2, "optimizer state slot %d", slot);
    return p->block + (size_t)(2 + slot) * p->section + p->p[i].offset;
}

int64_t ts_params_numel(const ts_params *p, int trainable_only) {
    int64_t n = 0;
    for (int i = 0; i < p->n; i++)
        if (!trainable_only || !(p->p[i].flags & TS_PARAM_BUFFER)) n += p->p[i].t->numel;
    return n;
}

void ts_params_zero_grad(ts_params *p) {
    if (p->finalized) memset(p->block + p->section, 0, p->section * sizeof(float));
}

size_t ts_params_bytes(const ts_params *p) { return 4 * p->section * sizeof(float); }

float *ts_params_section(const ts_params *p, int section, size_t *n) {
    TS_CHECK(p->finalized && (section == 0 || section == 1), "parameter section %d", section);
    *n = p->section;
    return p->block + (size_t)section * p->section;
}
