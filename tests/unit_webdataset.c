/* unit_webdataset.c: WebDataset shards (loaders/webdataset.c).
 *
 * Without arguments the test writes its own shards with libarchive and checks: brace
 * expansion of shard lists as braceexpand and open_clip do it; grouping of members into
 * samples by key (folders in keys, upper-case extensions, metadata and dot-less names skipped,
 * the preferred image field, .cls labels, duplicates); a member cut short and a damaged header
 * reported without a crash; shard order per epoch from the seed and disjoint shards per rank.
 *
 * With a folder argument (ctest's unit_webdataset_samples, registered when
 * ../shared/data/webdataset exists) it reads the real shards there and checks their sample
 * counts and fields. What it is not: a test of decoding (unit_pipeline.c decodes).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loaders.h"
#include "tessera.h"
#include "fixtures_data.h"

static const char *g_data;
static char g_tmp[512];

static void test_brace_expansion(void **state) {
    (void)state;
    char **v;
    int64_t n;
    ts_err err;
    assert_int_equal(ts_shard_list_expand("cc3m-{000000..000331}.tar", &v, &n, &err), TS_OK);
    assert_int_equal(n, 332);
    assert_string_equal(v[0], "cc3m-000000.tar");
    assert_string_equal(v[331], "cc3m-000331.tar");
    ts_shard_list_free(v, n);

    assert_int_equal(ts_shard_list_expand("a/{x,y}-{8..10}.tar::b.tar", &v, &n, &err), TS_OK);
    const char *want[] = { "a/x-8.tar", "a/x-9.tar", "a/x-10.tar", "a/y-8.tar", "a/y-9.tar",
                           "a/y-10.tar", "b.tar" };
    assert_int_equal(n, 7);
    for (int i = 0; i < 7; i++) assert_string_equal(v[i], want[i]);
    ts_shard_list_free(v, n);

    /* Descending ranges count down, nested groups and literal {x} stay as braceexpand does. */
    assert_int_equal(ts_shard_list_expand("s{3..1}{a,{b,c}}{z}", &v, &n, &err), TS_OK);
    assert_int_equal(n, 9);
    assert_string_equal(v[0], "s3a{z}");
    assert_string_equal(v[2], "s3c{z}");
    assert_string_equal(v[8], "s1c{z}");
    ts_shard_list_free(v, n);

    assert_int_equal(ts_shard_list_expand("bad-{000..003.tar", &v, &n, &err), TS_ERR_USAGE);
    assert_non_null(strstr(err.msg, "unbalanced"));
    assert_int_equal(ts_shard_list_expand("bad-}.tar", &v, &n, &err), TS_ERR_USAGE);
    assert_int_equal(ts_shard_list_expand("::", &v, &n, &err), TS_ERR_USAGE);
    assert_int_equal(ts_shard_list_expand("{0..99999999}", &v, &n, &err), TS_ERR_USAGE);
}

/* A shard exercising every grouping rule. */
static void write_grouping_shard(const char *path) {
    unsigned char *jpg;
    size_t nj = fx_jpeg(16, 12, 1, &jpg);
    fx_member m[] = {
        { "__meta__", "x", 1 },
        { "000.jpg", jpg, nj },
        { "000.txt", "a cat", 5 },
        { "000.cls", " 7\n", 3 },
        { "000.png", "\x89PNG", 4 },         /* jpg is preferred: this one is ignored */
        { "README", "no dot", 6 },           /* no extension: skipped */
        { "dir.v1/001.JPEG", jpg, nj },      /* folder in the key, upper-case extension */
        { "dir.v1/001.json", "{\"a\": 1}", 8 },
        { "dir.v1/001.seg.png", "zz", 2 },   /* extension "seg.png": kept as a field name */
        { "002.webp", "RIFF0000WEBPVP8 ", 16 },
        { "002.txt", "webp", 4 },
        { "003.cls", "seven", 5 },
        { "003.mp4", "\0\0\0\x18" "ftypmp42", 12 },
        { "004.txt", "one", 3 },
        { "004.txt", "two", 3 },
    };
    fx_tar(path, m, (int)(sizeof m / sizeof m[0]));
    free(jpg);
}

static void test_grouping(void **state) {
    (void)state;
    char path[600];
    snprintf(path, sizeof path, "%s/group.tar", g_tmp);
    write_grouping_shard(path);
    ts_wds_shard *s;
    ts_err err;
    if (ts_wds_shard_open(&s, path, &err)) fail_msg("%s", err.msg);
    ts_sample sm;
    ts_sample_init(&sm);
    int got;
    assert_int_equal(ts_wds_shard_next(s, &sm, &got, &err), TS_OK);
    assert_true(got);
    assert_string_equal(sm.key, "000");
    assert_string_equal(sm.image_ext, "jpg");
    assert_int_equal(sm.image.data[0], 0xFF);
    assert_true(sm.has_text && sm.has_label);
    assert_string_equal((char *)sm.text.data, "a cat");
    assert_int_equal(sm.label, 7);
    assert_int_equal(sm.nfields, 4);
    assert_string_equal(sm.fields[3], "png");
    assert_int_equal(sm.bad, TS_BAD_NONE);
    assert_non_null(strstr(sm.where, "group.tar:000"));

    assert_int_equal(ts_wds_shard_next(s, &sm, &got, &err), TS_OK);
    assert_string_equal(sm.key, "dir.v1/001");
    assert_string_equal(sm.image_ext, "jpeg");
    assert_true(sm.has_json && !sm.has_text && !sm.has_label);
    assert_string_equal((char *)sm.json.data, "{\"a\": 1}");
    assert_string_equal(sm.fields[2], "seg.png");

    assert_int_equal(ts_wds_shard_next(s, &sm, &got, &err), TS_OK);
    assert_string_equal(sm.key, "002");
    assert_string_equal(sm.image_ext, "webp");

    assert_int_equal(ts_wds_shard_next(s, &sm, &got, &err), TS_OK);
    assert_string_equal(sm.key, "003");
    assert_int_equal(sm.bad, TS_BAD_LABEL);
    assert_true(sm.has_video);
    assert_int_equal(sm.video.n, 12);

    assert_int_equal(ts_wds_shard_next(s, &sm, &got, &err), TS_OK);
    assert_string_equal(sm.key, "004");
    assert_int_equal(sm.bad, TS_BAD_DUPLICATE);
    assert_string_equal((char *)sm.text.data, "one");

    assert_int_equal(ts_wds_shard_next(s, &sm, &got, &err), TS_OK);
    assert_false(got);
    assert_int_equal(ts_wds_shard_members(s), 15);
    ts_wds_shard_close(s);
    ts_sample_free(&sm);
}

/* Read every sample of a shard in memory; returns how many, the last status in *st. */
static int read_all(const unsigned char *b, size_t n, ts_sample *sm, ts_status *st, ts_err *err) {
    ts_wds_shard *s;
    *st = ts_wds_shard_open_memory(&s, b, n, "mem.tar", err);
    if (*st) return 0;
    int count = 0, got;
    for (;;) {
        *st = ts_wds_shard_next(s, sm, &got, err);
        if (*st || !got) break;
        count++;
        if (sm->bad) break;
    }
    ts_wds_shard_close(s);
    return count;
}

static void test_truncated_and_corrupt(void **state) {
    (void)state;
    char path[600];
    snprintf(path, sizeof path, "%s/trunc.tar", g_tmp);
    unsigned char *jpg;
    size_t nj = fx_jpeg(64, 48, 2, &jpg);
    fx_member m[] = { { "a.jpg", jpg, nj }, { "a.txt", "x", 1 }, { "b.jpg", jpg, nj },
                      { "b.txt", "y", 1 } };
    fx_tar(path, m, 4);
    size_t n = 0;
    unsigned char *b = fx_read(path, &n);
    ts_sample sm;
    ts_sample_init(&sm);
    ts_status st;
    ts_err err;

    /* Cut inside b.jpg's data: a is whole, b is marked truncated. */
    size_t b_data = 512 + ((nj + 511) / 512) * 512 + 1024 + 512;
    int c = read_all(b, b_data + nj / 2, &sm, &st, &err);
    assert_int_equal(st, TS_OK);
    assert_int_equal(c, 2);
    assert_string_equal(sm.key, "b");
    assert_int_equal(sm.bad, TS_BAD_TRUNCATED);
    assert_non_null(strstr(sm.bad_msg, "mem.tar:b.jpg: member cut short"));

    /* Every cut point: never a crash, never a sample longer than its member. */
    for (size_t cut = 0; cut < n; cut += 97) {
        read_all(b, cut, &sm, &st, &err);
        assert_true(sm.image.n <= nj);
    }

    /* A damaged header after sample a: a comes back, then the error naming the shard. */
    unsigned char *d = malloc(n);
    memcpy(d, b, n);
    memset(d + b_data - 512, 0x5A, 512);
    ts_wds_shard *s;
    assert_int_equal(ts_wds_shard_open_memory(&s, d, n, "mem.tar", &err), TS_OK);
    int got;
    assert_int_equal(ts_wds_shard_next(s, &sm, &got, &err), TS_OK);
    assert_true(got);
    assert_string_equal(sm.key, "a");
    assert_int_equal(sm.bad, TS_BAD_NONE);
    st = ts_wds_shard_next(s, &sm, &got, &err);
    assert_int_equal(st, TS_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "mem.tar: corrupt shard"));
    assert_int_equal(ts_wds_shard_next(s, &sm, &got, &err), TS_OK);
    assert_false(got);
    ts_wds_shard_close(s);

    /* Not a tar at all, and an empty file. */
    assert_int_equal(read_all((const unsigned char *)"hello world, no tar here", 24, &sm, &st, &err), 0);
    assert_int_not_equal(st, TS_OK);
    snprintf(path, sizeof path, "%s/missing.tar", g_tmp);
    assert_int_equal(ts_wds_shard_open(&s, path, &err), TS_ERR_IO);
    assert_non_null(strstr(err.msg, "missing.tar"));
    free(d);
    free(b);
    free(jpg);
    ts_sample_free(&sm);
}

/* Shards s-0..s-5, two samples each, keys "<shard>_<i>". */
static void write_small_shards(void) {
    for (int k = 0; k < 6; k++) {
        char path[600], n0[32], n1[32];
        snprintf(path, sizeof path, "%s/s-%d.tar", g_tmp, k);
        snprintf(n0, sizeof n0, "%d_0.txt", k);
        snprintf(n1, sizeof n1, "%d_1.txt", k);
        fx_member m[] = { { n0, "t", 1 }, { n1, "t", 1 } };
        fx_tar(path, m, 2);
    }
}

/* The first letters of the keys of one epoch, e.g. "001122...": the shard order. */
static void epoch_order(ts_source *src, uint64_t seed, int64_t epoch, int rank, int world,
                        char *out) {
    ts_err err;
    assert_int_equal(src->begin(src, seed, epoch, rank, world, &err), TS_OK);
    ts_sample sm;
    ts_sample_init(&sm);
    int got, k = 0;
    for (;;) {
        assert_int_equal(src->next(src, &sm, &got, &err), TS_OK);
        if (!got) break;
        out[k++] = sm.key[0];
    }
    out[k] = 0;
    ts_sample_free(&sm);
}

static void test_shard_order_and_ranks(void **state) {
    (void)state;
    write_small_shards();
    char spec[700];
    snprintf(spec, sizeof spec, "%s/s-{0..5}.tar", g_tmp);
    ts_source *src;
    ts_err err;
    assert_int_equal(ts_wds_source_new(&src, spec, 1, &err), TS_OK);
    char a[64], b[64], c[64], r0[64], r1[64], plain[64];
    epoch_order(src, 42, 0, 0, 1, a);
    epoch_order(src, 42, 0, 0, 1, b);
    epoch_order(src, 42, 1, 0, 1, c);
    assert_int_equal(strlen(a), 12);
    assert_string_equal(a, b);          /* same seed and epoch: same order */
    assert_string_not_equal(a, c);      /* another epoch: another order (for this seed) */
    epoch_order(src, 42, 3, 0, 2, r0);
    epoch_order(src, 42, 3, 1, 2, r1);
    assert_int_equal(strlen(r0), 6);
    assert_int_equal(strlen(r1), 6);
    for (int i = 0; r0[i]; i++) assert_null(strchr(r1, r0[i])); /* disjoint shards */
    assert_int_equal(src->begin(src, 42, 0, 0, 7, &err), TS_ERR_USAGE);
    assert_non_null(strstr(err.msg, "6 shard(s) for 7 ranks"));
    ts_source_free(src);

    assert_int_equal(ts_wds_source_new(&src, spec, 0, &err), TS_OK);
    epoch_order(src, 42, 5, 0, 1, plain);
    assert_string_equal(plain, "001122334455");
    ts_source_free(src);
}

/* The real shards of ../shared/data/webdataset. */
typedef struct real_shard {
    const char *name;
    int samples;
    const char *field; /* a field every sample has */
} real_shard;

static void test_real_shards(void **state) {
    (void)state;
    if (!g_data) skip();
    const real_shard want[] = {
        { "clip_notebook_skimage_000000.tar", 8, "txt" },
        { "clip_retrieval_image1.tar", 4, "jpg" },
        { "clip_retrieval_image2.tar", 3, "jpg" },
        { "webdataset_sample.tgz", 90, "cls" },
        { "compressed.tar", 3, "txt.gz" },
        { "testgz.tar", 1000, "txt.gz" },
    };
    ts_sample sm;
    ts_sample_init(&sm);
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", g_data, want[i].name);
        ts_wds_shard *s;
        ts_err err;
        assert_int_equal(ts_wds_shard_open(&s, path, &err), TS_OK);
        int n = 0, got;
        for (;;) {
            ts_status st = ts_wds_shard_next(s, &sm, &got, &err);
            if (st) fail_msg("%s", err.msg);
            if (!got) break;
            assert_int_equal(sm.bad, TS_BAD_NONE);
            int has = 0;
            for (int f = 0; f < sm.nfields; f++) has |= !strcmp(sm.fields[f], want[i].field);
            if (!has) fail_msg("%s: sample %s has no %s", want[i].name, sm.key, want[i].field);
            n++;
        }
        printf("  %-34s %5d samples, e.g. %s\n", want[i].name, n, sm.key);
        assert_int_equal(n, want[i].samples);
        ts_wds_shard_close(s);
    }
    ts_sample_free(&sm);
}

int main(int argc, char **argv) {
    g_data = argc > 1 ? argv[1] : NULL;
    fx_scratch(g_tmp, sizeof g_tmp, "unit_webdataset_tmp");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_brace_expansion),
        cmocka_unit_test(test_grouping),
        cmocka_unit_test(test_truncated_and_corrupt),
        cmocka_unit_test(test_shard_order_and_ranks),
        cmocka_unit_test(test_real_shards),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
