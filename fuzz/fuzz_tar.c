/* fuzz_tar.c: a libFuzzer target for the WebDataset shard reader (loaders/webdataset.c).
 *
 * Every input is read as a shard held in memory (libarchive sniffs tar, gzip and the other
 * filters it knows), sample after sample, the way the pipeline reads a shard: grouping by key,
 * the choice of the image field, .cls parsing, duplicate fields, members cut short and damaged
 * headers all see hostile bytes. The reader must return samples or an error; a crash, a leak,
 * undefined behaviour or an endless loop is a finding. It is not a test of correctness:
 * tests/unit_webdataset.c is.
 *
 * Build and run: fuzz/run.sh (clang, -DTESSERA_FUZZ=ON). Seeds are the small shards of
 * ../shared/data/webdataset; a crash replays with build-fuzz/fuzz/fuzz_tar CRASH_FILE.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "loaders.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ts_err err;
    ts_wds_shard *s;
    if (ts_wds_shard_open_memory(&s, data, size, "fuzz.tar", &err) != TS_OK) return 0;
    ts_sample sm;
    ts_sample_init(&sm);
    /* A shard of n bytes holds at most n / 512 members: more samples than that is a loop. */
    for (size_t k = 0; k <= size / 512 + 1; k++) {
        int got = 0;
        if (ts_wds_shard_next(s, &sm, &got, &err) != TS_OK || !got) break;
        /* Touch every field the way the pipeline does. */
        volatile size_t sum = sm.image.n + sm.text.n + sm.json.n + sm.video.n + strlen(sm.key) +
                              strlen(sm.where) + strlen(sm.bad_msg);
        (void)sum;
        if (sm.has_text && sm.text.data[sm.text.n] != 0) __builtin_trap();
    }
    ts_sample_free(&sm);
    ts_wds_shard_close(s);
    return 0;
}
