/* unit_tokenizer.c: the CLIP tokenizer against open_clip, bad input, and the BPE trainer.
 *
 * The expected outputs are in tests/text/tokenizer_expected.json, written by
 * tests/text/make_tokenizer_expected.py with the real open_clip tokenizer (its docstring says
 * how to regenerate them): 74 inline strings and the 1000 real captions of
 * ../shared/data/captions. For each, the cleaned text, the ids and the 77-long context row
 * must match bit for bit; the first mismatches are printed with both sides.
 *
 * The merges file is not part of tessera: it is read from ../shared/data/clip. CMake registers
 * this test only when that file exists (and says so when it does not); run by hand without
 * it, the test fails with a message naming the file. It does not time anything.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "tessera.h"
#include "text.h"

#define MERGES TS_SOURCE_DIR "/../shared/data/clip/bpe_simple_vocab_16e6.txt.gz"
#define EXPECTED TS_SOURCE_DIR "/tests/text/tokenizer_expected.json"

static ts_tokenizer *tok;
static cJSON *doc;
static char tmpdir[256];

static char *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)len + 1);
    if (buf && fread(buf, 1, (size_t)len, f) != (size_t)len) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf) buf[len] = 0;
    if (n) *n = (size_t)len;
    return buf;
}

static int setup(void **state) {
    (void)state;
    ts_err err = { 0 };
    if (ts_tokenizer_load(MERGES, &tok, &err)) {
        fprintf(stderr, "unit_tokenizer: %s\n", err.msg);
        return -1;
    }
    char *json = slurp(EXPECTED, NULL);
    if (!json) {
        fprintf(stderr, "unit_tokenizer: cannot read %s\n", EXPECTED);
        return -1;
    }
    doc = cJSON_Parse(json);
    free(json);
    if (!doc) {
        fprintf(stderr, "unit_tokenizer: %s is not valid JSON\n", EXPECTED);
        return -1;
    }
    snprintf(tmpdir, sizeof tmpdir, "/tmp/tessera-unit-tokenizer-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    ts_tokenizer_free(tok);
    cJSON_Delete(doc);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* The input bytes of a case: "text" (UTF-8) or "hex" (raw, maybe invalid UTF-8). */
static char *case_input(const cJSON *c, size_t *n) {
    const cJSON *hex = cJSON_GetObjectItem(c, "hex");
    if (hex) {
        size_t len = strlen(hex->valuestring) / 2;
        char *b = malloc(len + 1);
        for (size_t i = 0; i < len; i++) {
            unsigned v;
            sscanf(hex->valuestring + 2 * i, "%2x", &v);
            b[i] = (char)v;
        }
        b[len] = 0;
        *n = len;
        return b;
    }
    const char *t = cJSON_GetObjectItem(c, "text")->valuestring;
    *n = strlen(t);
    return strdup(t);
}

static int ints_of(const cJSON *arr, int32_t *out, int cap) {
    int n = 0;
    const cJSON *v;
    cJSON_ArrayForEach(v, arr) {
        if (n < cap) out[n] = (int32_t)v->valueint;
        n++;
    }
    return n;
}

static void print_ids(const char *what, const int32_t *a, int n) {
    fprintf(stderr, "    %s (%d):", what, n);
    for (int i = 0; i < n && i < 80; i++) fprintf(stderr, " %d", a[i]);
    fprintf(stderr, "%s\n", n > 80 ? " ..." : "");
}

/* Compare one case; returns 1 when everything matches. Prints the first mismatches. */
static int check_case(const cJSON *c, int *printed) {
    const char *name = cJSON_GetObjectItem(c, "name")->valuestring;
    size_t len;
    char *in = case_input(c, &len);
    int ok = 1;
    char what[256] = "";
    /* Cleaned text. */
    size_t clen;
    char *clean = ts_tokenizer_clean(tok, in, len, &clen);
    const char *want_clean = cJSON_GetObjectItem(c, "clean")->valuestring;
    if (strcmp(clean, want_clean)) ok = 0, snprintf(what, sizeof what, "clean text");
    /* Ids. */
    static int32_t want[4096], got[4096];
    int nw = ints_of(cJSON_GetObjectItem(c, "ids"), want, 4096);
    int64_t ng = ts_tokenizer_encode(tok, in, len, got, 4096);
    int ids_ok = ng == nw && !memcmp(want, got, sizeof(int32_t) * (size_t)(nw < 4096 ? nw : 4096));
    if (!ids_ok && ok) ok = 0, snprintf(what, sizeof what, "ids");
    /* The 77-long row and the short one. */
    int32_t row[TS_CLIP_CONTEXT], want_row[TS_CLIP_CONTEXT] = { 0 };
    ts_tokenizer_encode_context(tok, in, len, row, TS_CLIP_CONTEXT);
    int nr = ints_of(cJSON_GetObjectItem(c, "ctx"), want_row, TS_CLIP_CONTEXT);
    int row_ok = nr <= TS_CLIP_CONTEXT && !memcmp(row, want_row, sizeof row);
    if (!row_ok && ok) ok = 0, snprintf(what, sizeof what, "context row");
    const cJSON *short_ctx = cJSON_GetObjectItem(c, "ctx_short");
    if (short_ctx) {
        int sl = cJSON_GetObjectItem(doc, "short_context_length")->valueint;
        int32_t srow[64], want_srow[64] = { 0 };
        ts_tokenizer_encode_context(tok, in, len, srow, sl);
        ints_of(short_ctx, want_srow, 64);
        if (memcmp(srow, want_srow, sizeof(int32_t) * (size_t)sl) && ok)
            ok = 0, snprintf(what, sizeof what, "short context row");
    }
    /* Decoding. */
    const cJSON *dec = cJSON_GetObjectItem(c, "decoded");
    if (dec) {
        char *d = NULL;
        ts_err err = { 0 };
        if (ts_tokenizer_decode(tok, want, nw, &d, &err) || strcmp(d, dec->valuestring))
            if (ok) ok = 0, snprintf(what, sizeof what, "decoded text");
        free(d);
    }
    if (!ok && (*printed)++ < 10) {
        fprintf(stderr, "  MISMATCH %s (%s)\n    input:    %.*s\n    clean:    %s\n    expected: %s\n",
                name, what, (int)(len > 300 ? 300 : len), in, clean, want_clean);
        print_ids("want ids", want, nw);
        print_ids("got ids ", got, (int)(ng < 4096 ? ng : 4096));
        print_ids("want row", want_row, TS_CLIP_CONTEXT);
        print_ids("got row ", row, TS_CLIP_CONTEXT);
    }
    free(clean);
    free(in);
    return ok;
}

static void run_cases(int captions) {
    const cJSON *cases = cJSON_GetObjectItem(doc, "cases"), *c;
    int total = 0, matched = 0, printed = 0;
    cJSON_ArrayForEach(c, cases) {
        int is_caption = !cJSON_GetObjectItem(c, "decoded"); /* inline cases have it */
        if (is_caption != captions) continue;
        total++;
        matched += check_case(c, &printed);
    }
    fprintf(stderr, "  %s: %d of %d match open_clip bit for bit (clean text, ids, context row%s)\n",
            captions ? "real captions" : "inline strings", matched, total,
            captions ? "" : ", short row, decode");
    assert_true(total >= (captions ? 1000 : 50));
    assert_int_equal(matched, total);
}

static void vocabulary_matches_open_clip(void **state) {
    (void)state;
    assert_int_equal(ts_tokenizer_vocab_size(tok), cJSON_GetObjectItem(doc, "vocab_size")->valueint);
    assert_int_equal(ts_tokenizer_vocab_size(tok), 49408);
    assert_int_equal(ts_tokenizer_sot(tok), 49406);
    assert_int_equal(ts_tokenizer_eot(tok), 49407);
    /* Byte symbols come in bytes_to_unicode order: '!' is 0, 'a' is 64, "a</w>" is 320. */
    int32_t ids[4];
    assert_int_equal(ts_tokenizer_encode(tok, "!", 1, ids, 4), 1);
    assert_int_equal(ids[0], 256);
    assert_int_equal(ts_tokenizer_encode(tok, "a", 1, ids, 4), 1);
    assert_int_equal(ids[0], 320);
}

static void inline_strings_match_open_clip(void **state) {
    (void)state;
    run_cases(0);
}

static void real_captions_match_open_clip(void **state) {
    (void)state;
    run_cases(1);
}

/* Random bytes never crash and always encode to ids in the vocabulary. */
static void invalid_utf8_never_crashes(void **state) {
    (void)state;
    ts_rng rng;
    ts_rng_seed(&rng, 7);
    char buf[512];
    static int32_t ids[8192];
    for (int round = 0; round < 2000; round++) {
        size_t n = ts_rng_next(&rng) % sizeof buf;
        for (size_t i = 0; i < n; i++) {
            uint64_t r = ts_rng_next(&rng);
            /* Mostly high bytes, some ASCII, '&' and ';' for the entity paths. */
            buf[i] = (char)(r % 5 == 0 ? "&#;x a<"[r / 5 % 7] : (int)(r >> 8));
        }
        int64_t k = ts_tokenizer_encode(tok, buf, n, ids, 8192);
        assert_true(k >= 0);
        for (int64_t i = 0; i < k && i < 8192; i++)
            assert_true(ids[i] >= 0 && ids[i] < ts_tokenizer_vocab_size(tok));
        int32_t row[TS_CLIP_CONTEXT];
        int m = ts_tokenizer_encode_context(tok, buf, n, row, TS_CLIP_CONTEXT);
        assert_true(m >= 2 && m <= TS_CLIP_CONTEXT);
        assert_int_equal(row[m - 1], 49407);
    }
}

static void write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, n, f), n);
    fclose(f);
}

static void expect_load_error(const char *path, ts_status code, const char *needle) {
    ts_tokenizer *t = NULL;
    ts_err err = { 0 };
    ts_status st = ts_tokenizer_load(path, &t, &err);
    fprintf(stderr, "  %s -> %s\n", path, err.msg);
    assert_int_equal(st, code);
    assert_null(t);
    assert_non_null(strstr(err.msg, path));
    if (needle) assert_non_null(strstr(err.msg, needle));
}

static void bad_merges_files_are_clear_errors(void **state) {
    (void)state;
    char path[512];
    snprintf(path, sizeof path, "%s/missing.txt.gz", tmpdir);
    expect_load_error(path, TS_ERR_IO, "cannot open");

    /* Corrupt gzip: the magic bytes, then garbage. */
    snprintf(path, sizeof path, "%s/corrupt.txt.gz", tmpdir);
    unsigned char junk[256] = { 0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0, 0, 3 };
    for (int i = 10; i < 256; i++) junk[i] = (unsigned char)(i * 37 + 11);
    write_file(path, junk, sizeof junk);
    expect_load_error(path, TS_ERR_FORMAT, "gzip");

    /* Truncated: the first half of the real file. */
    size_t n;
    char *real = slurp(MERGES, &n);
    assert_non_null(real);
    snprintf(path, sizeof path, "%s/truncated.txt.gz", tmpdir);
    write_file(path, real, n / 2);
    expect_load_error(path, TS_ERR_FORMAT, "gzip");
    free(real);

    /* Not a merges file: no version header. */
    snprintf(path, sizeof path, "%s/notmerges.txt", tmpdir);
    write_file(path, "hello world\nfoo bar\n", 20);
    expect_load_error(path, TS_ERR_FORMAT, "#version");

    /* A line that is not two symbols. */
    snprintf(path, sizeof path, "%s/badline.txt", tmpdir);
    write_file(path, "#version: 0.2\ni n\na b c\n", 24);
    expect_load_error(path, TS_ERR_FORMAT, "line 3");

    /* Only the header. */
    snprintf(path, sizeof path, "%s/empty.txt", tmpdir);
    write_file(path, "#version: 0.2\n", 14);
    expect_load_error(path, TS_ERR_FORMAT, "no merges");

    /* Not UTF-8. */
    snprintf(path, sizeof path, "%s/latin1.txt", tmpdir);
    write_file(path, "#version: 0.2\n\xe9 a\n", 18);
    expect_load_error(path, TS_ERR_FORMAT, "UTF-8");
}

static void decode_rejects_unknown_ids(void **state) {
    (void)state;
    int32_t ids[] = { 320, 49408 };
    char *out = (char *)1;
    ts_err err = { 0 };
    assert_int_equal(ts_tokenizer_decode(tok, ids, 2, &out, &err), TS_ERR_DATA);
    assert_null(out);
    assert_non_null(strstr(err.msg, "49408"));
}

/* ---- the trainer ---- */

/* The captions of the expected file, one a line (their raw text). */
static void write_corpus(const char *path) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(doc, "cases")) {
        if (cJSON_GetObjectItem(c, "decoded")) continue; /* the real captions only */
        fprintf(f, "%s\n", cJSON_GetObjectItem(c, "text")->valuestring);
    }
    fclose(f);
}

static void strip_spaces(char *s) {
    char *w = s;
    for (; *s; s++)
        if (*s != ' ') *w++ = *s;
    *w = 0;
}

static void trainer_is_deterministic_and_round_trips(void **state) {
    (void)state;
    char corpus[512], a[512], b[512];
    snprintf(corpus, sizeof corpus, "%s/captions.txt", tmpdir);
    snprintf(a, sizeof a, "%s/a.txt.gz", tmpdir);
    snprintf(b, sizeof b, "%s/b.txt.gz", tmpdir);
    write_corpus(corpus);
    const char *paths[] = { corpus };
    ts_err err = { 0 };
    int na = 0, nb = 0;
    assert_int_equal(ts_bpe_train(paths, 1, 2000, a, &na, &err), TS_OK);
    assert_int_equal(ts_bpe_train(paths, 1, 2000, b, &nb, &err), TS_OK);
    assert_int_equal(na, 2000 - 514);
    assert_int_equal(nb, na);
    size_t la, lb;
    char *da = slurp(a, &la), *db = slurp(b, &lb);
    assert_non_null(da);
    assert_non_null(db);
    assert_int_equal(la, lb);
    assert_memory_equal(da, db, la);
    free(da), free(db);

    ts_tokenizer *t = NULL;
    assert_int_equal(ts_tokenizer_load(a, &t, &err), TS_OK);
    assert_int_equal(ts_tokenizer_vocab_size(t), 2000);
    assert_int_equal(ts_tokenizer_sot(t), 1998);
    assert_int_equal(ts_tokenizer_eot(t), 1999);
    /* Round trip: decoding gives the cleaned text back (tokens end in a space), and encoding
     * that again gives the same ids; the trained merges make fewer tokens than bytes. */
    static int32_t ids[4096], again[4096];
    int64_t total_ids = 0, total_bytes = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(doc, "cases")) {
        if (cJSON_GetObjectItem(c, "decoded")) continue; /* the real captions only */
        const char *text = cJSON_GetObjectItem(c, "text")->valuestring;
        int64_t n = ts_tokenizer_encode(t, text, strlen(text), ids, 4096);
        assert_true(n <= 4096);
        char *dec = NULL;
        assert_int_equal(ts_tokenizer_decode(t, ids, n, &dec, &err), TS_OK);
        int64_t m = ts_tokenizer_encode(t, dec, strlen(dec), again, 4096);
        assert_int_equal(m, n);
        assert_memory_equal(ids, again, sizeof(int32_t) * (size_t)n);
        char *clean = ts_tokenizer_clean(t, text, strlen(text), NULL);
        strip_spaces(clean);
        strip_spaces(dec);
        assert_string_equal(dec, clean);
        total_ids += n;
        total_bytes += (int64_t)strlen(clean);
        free(dec), free(clean);
    }
    fprintf(stderr, "  trained 1486 merges: %lld bytes -> %lld tokens\n", (long long)total_bytes,
            (long long)total_ids);
    assert_true(total_ids * 2 < total_bytes);
    ts_tokenizer_free(t);
}

static void trainer_rejects_bad_input(void **state) {
    (void)state;
    char out[512], missing[512];
    snprintf(out, sizeof out, "%s/never.txt.gz", tmpdir);
    snprintf(missing, sizeof missing, "%s/no-such-corpus.txt", tmpdir);
    const char *paths[] = { missing };
    ts_err err = { 0 };
    assert_int_equal(ts_bpe_train(paths, 1, 10, out, NULL, &err), TS_ERR_USAGE);
    assert_int_equal(ts_bpe_train(paths, 1, 1000, out, NULL, &err), TS_ERR_IO);
    assert_non_null(strstr(err.msg, missing));
    assert_int_equal(access(out, F_OK), -1);
}

int main(void) {
    if (access(MERGES, R_OK) != 0) {
        fprintf(stderr, "unit_tokenizer: FAILED: the CLIP merges file %s is missing; this test "
                        "needs the shared data folder next to the repository\n", MERGES);
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(vocabulary_matches_open_clip),
        cmocka_unit_test(inline_strings_match_open_clip),
        cmocka_unit_test(real_captions_match_open_clip),
        cmocka_unit_test(invalid_utf8_never_crashes),
        cmocka_unit_test(bad_merges_files_are_clear_errors),
        cmocka_unit_test(decode_rejects_unknown_ids),
        cmocka_unit_test(trainer_is_deterministic_and_round_trips),
        cmocka_unit_test(trainer_rejects_bad_input),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
