/* fuzz_csv.c: a libFuzzer target for the CSV/TSV reader (loaders/csvdata.c).
 *
 * ts_csv_open takes a path, so every input is written to a file in /dev/shm (the temporary
 * folder when /dev/shm is missing) and opened three ways: with open_clip's default keys and
 * the separator sniffed from the header, as a TSV with no image or caption column (what
 * `tessera data inspect` does), and with the first two columns' names as keys. Every cell, line
 * number and resolved path is touched, and a source over the rows is walked for two epochs
 * with shuffling, so that quoting, CRLF, blank lines, ragged rows and the column lookup all see
 * hostile bytes. The reader must return rows or an error; a crash, a leak or undefined
 * behaviour is a finding. It is not a test of correctness: tests/unit_csvdata.c is.
 *
 * Build and run: fuzz/run.sh (clang, -DTESSERA_FUZZ=ON). A crash replays with
 * build-fuzz/fuzz/fuzz_csv CRASH_FILE; found crashes become regression tests.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "loaders.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void quiet_log(ts_log_level level, const char *msg, void *user) {
    (void)level, (void)msg, (void)user;
}

/* Write the input to a per-process file once named; returns its path or NULL. */
static const char *write_input(const uint8_t *data, size_t size, const char *ext) {
    static char path[256];
    const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(path, sizeof path, "%s/tessera-fuzz-%d.%s", dir, (int)getpid(), ext);
    FILE *f = fopen(path, "wb");
    if (!f) return NULL;
    size_t w = size ? fwrite(data, 1, size, f) : 0;
    if (fclose(f) != 0 || w != size) return NULL;
    return path;
}

/* Read every row of c as the inspector and the pipeline do. */
static void touch_all(ts_csv *c) {
    volatile size_t sum = 0;
    char buf[4096];
    for (int j = 0; j < ts_csv_cols(c); j++) sum += strlen(ts_csv_col_name(c, j));
    for (int64_t r = 0; r < ts_csv_rows(c); r++) {
        for (int j = 0; j < ts_csv_cols(c); j++) sum += strlen(ts_csv_cell(c, r, j));
        sum += (size_t)ts_csv_line(c, r);
        if (ts_csv_img_col(c) >= 0) sum += strlen(ts_csv_image_path(c, r, buf, sizeof buf));
        if (ts_csv_cols(c) > 0) sum += strlen(ts_csv_resolve(c, ts_csv_cell(c, r, 0), buf, 8));
    }
    (void)sum;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ts_log_set_sink(quiet_log, NULL);
    const char *path = write_input(data, size, "csv");
    if (!path) return 0;
    ts_err err;
    ts_csv *c = NULL;

    /* 1: open_clip's defaults and a source over the rows. */
    ts_csv_spec spec = { .path = path };
    if (ts_csv_open(&c, &spec, &err) == TS_OK) {
        touch_all(c);
        ts_source *src = NULL;
        if (ts_csv_source_new(&src, c, 1, &err) == TS_OK) {
            ts_sample sm;
            ts_sample_init(&sm);
            for (int64_t e = 0; e < 2; e++) {
                if (src->begin(src, 7, e, (int)e, 2, &err) != TS_OK) break;
                for (int64_t k = 0; k <= ts_csv_rows(c) + 1; k++) {
                    int got = 0;
                    if (src->next(src, &sm, &got, &err) != TS_OK || !got) break;
                    if (sm.path.n && sm.path.data[sm.path.n] != 0) __builtin_trap();
                }
            }
            ts_sample_free(&sm);
            ts_source_free(src); /* closes c */
        }
        c = NULL;
    }

    /* 2: tab-separated, no image or caption column (the inspector). */
    ts_csv_spec tsv = { .path = path, .img_key = "", .caption_key = "", .sep = '\t' };
    if (ts_csv_open(&c, &tsv, &err) == TS_OK) {
        touch_all(c);
        /* 3: the first two columns' names as keys, on a second reading of the file. */
        char k0[64] = "", k1[64] = "";
        if (ts_csv_cols(c) >= 1) snprintf(k0, sizeof k0, "%s", ts_csv_col_name(c, 0));
        if (ts_csv_cols(c) >= 2) snprintf(k1, sizeof k1, "%s", ts_csv_col_name(c, 1));
        ts_csv_close(c);
        c = NULL;
        ts_csv_spec named = { .path = path, .img_key = k0, .caption_key = k1, .sep = ';' };
        if (ts_csv_open(&c, &named, &err) == TS_OK) touch_all(c);
        ts_csv_close(c);
    }
    unlink(path);
    return 0;
}
