/* loaders-impl.h: what the files of loaders/ share and nobody else includes.
 *
 * The seed mixer behind every shuffle of the data sources and the pipeline, and the per-epoch
 * order of a source whose samples are indexed (CSV rows, class-folder files). Not a public API:
 * names start with ts__.
 */
#ifndef TS_LOADERS_IMPL_H
#define TS_LOADERS_IMPL_H

#include "loaders.h"

/* splitmix64's finaliser: a well-spread 64-bit value from any input, for deriving seeds. */
static inline uint64_t ts__mix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* The order of n indexed samples in one epoch, for one rank: 0..n-1, Fisher-Yates shuffled from
 * (seed, salt, epoch) when shuffle is set, then rank r keeps positions r, r + world, ...,
 * n / world of them (all n with one rank), moved to the front of order (n entries). Returns how
 * many the rank keeps. salt tells the sources apart so they do not share one order. */
int64_t ts__epoch_order(int64_t *order, int64_t n, int shuffle, uint64_t seed, uint64_t salt,
                        int64_t epoch, int rank, int world);

#endif
