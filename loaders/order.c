/* order.c: the per-epoch sample order shared by the indexed sources (CSV rows, class folders).
 *
 * It is not the WebDataset order: tar shards are shuffled as whole files and their samples go
 * through the pipeline's shuffle buffer instead.
 */
#include "loaders-impl.h"

int64_t ts__epoch_order(int64_t *order, int64_t n, int shuffle, uint64_t seed, uint64_t salt,
                        int64_t epoch, int rank, int world) {
    if (world < 1) world = 1;
    for (int64_t i = 0; i < n; i++) order[i] = i;
    if (shuffle) {
        ts_rng r;
        ts_rng_seed(&r, ts__mix64(seed ^ ts__mix64(salt + (uint64_t)epoch)));
        for (int64_t i = n - 1; i > 0; i--) {
            int64_t j = (int64_t)(ts_rng_next(&r) % (uint64_t)(i + 1));
            int64_t t = order[i];
            order[i] = order[j], order[j] = t;
        }
    }
    int64_t per = world > 1 ? n / world : n;
    for (int64_t k = 0; k < per; k++) order[k] = order[rank + k * world];
    return per;
}
