/* arena.c: the bump allocator behind the step arena (and any other per-phase scratch).
 *
 * An arena is a list of blocks. While the first step of a run discovers how much it needs,
 * new blocks are malloc'ed as allocations spill over; at the next reset the blocks are merged
 * into one block of the high-water size. From then on a step of the same shape allocates
 * nothing from the system. It is not a general allocator: nothing is freed individually.
 */
#include "tessera-impl.h"

#include <stdlib.h>

#define ARENA_ALIGN 64

typedef struct block {
    struct block *next;
    size_t cap, used;
    uint8_t *data;
} block;

struct ts_arena {
    char name[32];
    block *head;      /* current block (newest) */
    size_t used_total, high, mallocs;
    int grown_after_merge;
    int merged;
};

static block *block_new(size_t cap) {
    block *b = malloc(sizeof *b);
    if (!b) return NULL;
    b->data = aligned_alloc(ARENA_ALIGN, (cap + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN);
    if (!b->data) {
        free(b);
        return NULL;
    }
    b->cap = cap;
    b->used = 0;
    b->next = NULL;
    return b;
}

ts_arena *ts_arena_new(const char *name, size_t initial_bytes) {
    ts_arena *a = calloc(1, sizeof *a);
    TS_CHECK(a != NULL, "out of memory creating arena %s", name);
    snprintf(a->name, sizeof a->name, "%s", name);
    if (initial_bytes < (1u << 16)) initial_bytes = 1u << 16;
    a->head = block_new(initial_bytes);
    TS_CHECK(a->head != NULL, "cannot allocate %zu bytes for arena %s", initial_bytes, name);
    a->mallocs = 1;
    return a;
}

void ts_arena_free(ts_arena *a) {
    if (!a) return;
    block *b = a->head;
    while (b) {
        block *n = b->next;
        free(b->data);
        free(b);
        b = n;
    }
    free(a);
}

void *ts_arena_alloc(ts_arena *a, size_t bytes) {
    size_t need = (bytes + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN;
    if (need == 0) need = ARENA_ALIGN;
    block *b = a->head;
    if (b->used + need > b->cap) {
        size_t cap = b->cap * 2 > need ? b->cap * 2 : need;
        block *nb = block_new(cap);
        TS_CHECK(nb != NULL, "arena %s: out of memory allocating %zu bytes (in use %zu)", a->name,
                 need, a->used_total);
        nb->next = a->head;
        a->head = nb;
        a->mallocs++;
        if (a->merged && !a->grown_after_merge) {
            a->grown_after_merge = 1;
            ts_log(TS_LOG_DEBUG, "arena %s grew past its first-step size to %zu bytes", a->name,
                   a->used_total + need);
        }
        b = nb;
    }
    void *p = b->data + b->used;
#ifdef TS_ARENA_POISON
    /* debug builds: fresh memory reads as NaN, so an op that reads what it never wrote fails
     * its tests instead of passing on the zeros a new page happens to hold */
    memset(p, 0xff, need);
#endif
    b->used += need;
    a->used_total += need;
    if (a->used_total > a->high) a->high = a->used_total;
    return p;
}

void ts_arena_reset(ts_arena *a) {
    if (a->head->next) {
        /* several blocks: merge into one of the high-water size */
        block *b = a->head;
        while (b) {
            block *n = b->next;
            free(b->data);
            free(b);
            b = n;
        }
        a->head = block_new(a->high);
        TS_CHECK(a->head != NULL, "arena %s: cannot allocate %zu bytes", a->name, a->high);
        a->mallocs++;
    }
    a->head->used = 0;
    a->used_total = 0;
    a->merged = 1;
}

size_t ts_arena_used(const ts_arena *a) { return a->used_total; }
size_t ts_arena_high_water(const ts_arena *a) { return a->high; }
size_t ts_arena_mallocs(const ts_arena *a) { return a->mallocs; }

size_t ts_arena_capacity(const ts_arena *a) {
    size_t cap = 0;
    for (const block *b = a->head; b; b = b->next) cap += b->cap;
    return cap;
}
