/* prof.h: the per-op profile table of the bench programs (encoders, transformer_block,
 * vla_step): seconds and calls summed per label, rows in order of first appearance. Header
 * only, static inline; what is timed and how it is printed stays with each program. */
#ifndef TS_BENCH_PROF_H
#define TS_BENCH_PROF_H

#include <stdint.h>
#include <stdio.h>
#include <string.h>

typedef struct bench_prof_row { char label[112]; double s; int64_t n; } bench_prof_row;
typedef struct bench_prof {
    bench_prof_row rows[128];
    int nrows;
} bench_prof;

/* Add s seconds and one call to the row of label (a new row when it has none; a full table
 * drops new labels). */
static inline void bench_prof_add(bench_prof *p, const char *label, double s) {
    int i;
    for (i = 0; i < p->nrows; i++)
        if (strcmp(p->rows[i].label, label) == 0) break;
    if (i == p->nrows) {
        if (p->nrows == (int)(sizeof p->rows / sizeof p->rows[0])) return;
        snprintf(p->rows[p->nrows++].label, sizeof p->rows[0].label, "%s", label);
    }
    p->rows[i].s += s;
    p->rows[i].n++;
}

#endif
