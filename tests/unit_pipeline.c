/* unit_pipeline.c: the threaded batch pipeline (loaders/pipeline.c) over WebDataset shards.
 *
 * The test writes shards of small JPEGs with captions and labels, then checks: batches are
 * bit for bit the same with 1, 2 and 4 workers (images, labels, keys, the prepare hook's rows)
 * over two epochs with a shuffle buffer; another seed gives another order; a pipeline opened at
 * a saved position delivers exactly the batches that followed it, across an epoch boundary;
 * ranks read disjoint samples; eval mode equals decode + resize + center crop + normalise done
 * by hand; bad samples (a truncated JPEG, a WebP, a missing caption, a shard cut short, a file
 * that is no tar) are skipped and counted by reason, or stop the run naming the sample; the
 * on_skip hook is told of each of them by name; the on_buffer hook is shown every batch
 * buffer once each way, and the batches lie in them.
 * Last it prints samples/s with 1 and 2 workers on 500x375 JPEGs (decode + RandomResizedCrop
 * 224 + flip + normalise): a figure for the log, not a pass mark.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "loaders.h"
#include "tessera.h"
#include "fixtures_data.h"

static char g_tmp[512];
static char g_spec[1024]; /* the good shards */

enum { NSHARDS = 4, PER_SHARD = 11, CAP = 24 };

/* Shards good-0..3 with PER_SHARD samples each: key "g<shard>_<i>", a 40x30 JPEG, a caption
 * "caption <shard> <i>" and a label shard * 100 + i. */
static void write_good_shards(void) {
    for (int k = 0; k < NSHARDS; k++) {
        fx_member m[PER_SHARD * 3];
        char names[PER_SHARD * 3][32], caps[PER_SHARD][32], cls[PER_SHARD][16];
        unsigned char *jpg[PER_SHARD];
        for (int i = 0; i < PER_SHARD; i++) {
            size_t nj = fx_jpeg(40, 30, k * PER_SHARD + i, &jpg[i]);
            snprintf(names[3 * i], 32, "g%d_%02d.jpg", k, i);
            snprintf(names[3 * i + 1], 32, "g%d_%02d.txt", k, i);
            snprintf(names[3 * i + 2], 32, "g%d_%02d.cls", k, i);
            snprintf(caps[i], 32, "caption %d %d", k, i);
            snprintf(cls[i], 16, "%d", k * 100 + i);
            m[3 * i] = (fx_member){ names[3 * i], jpg[i], nj };
            m[3 * i + 1] = (fx_member){ names[3 * i + 1], caps[i], strlen(caps[i]) };
            m[3 * i + 2] = (fx_member){ names[3 * i + 2], cls[i], strlen(cls[i]) };
        }
        char path[700];
        snprintf(path, sizeof path, "%s/good-%d.tar", g_tmp, k);
        fx_tar(path, m, PER_SHARD * 3);
        for (int i = 0; i < PER_SHARD; i++) free(jpg[i]);
    }
    snprintf(g_spec, sizeof g_spec, "%s/good-{0..%d}.tar", g_tmp, NSHARDS - 1);
}

/* The prepare hook of the tests: the caption, NUL-padded to CAP bytes. */
static ts_status prep_caption(void *user, const ts_sample *s, void *row, ts_err *err) {
    (void)user;
    if (s->text.n >= CAP) return ts_fail(err, TS_ERR_DATA, "caption too long");
    memset(row, 0, CAP);
    memcpy(row, s->text.data, s->text.n);
    return TS_OK;
}

static ts_pipe_cfg train_cfg(int workers) {
    ts_pipe_cfg c = { 0 };
    c.batch_size = 8;
    c.workers = workers;
    c.shuffle_buffer = 10;
    c.seed = 1234;
    c.epochs = 2;
    c.need_text = 1;
    c.xform.mode = TS_XFORM_TRAIN;
    c.xform.size = 24;
    c.xform.hflip = 0.5f;
    c.xform.interp = TS_INTERP_BICUBIC;
    c.prepare = prep_caption;
    c.prepare_bytes = CAP;
    return c;
}

/* Every batch of a run, flattened: for each batch n, epoch, index, then per row the key,
 * label, sample index, caption row and image. */
typedef struct run {
    unsigned char *b;
    size_t n, cap;
    int batches;
    int64_t bad[TS_BAD_COUNT];
    ts_pipe_pos pos[64]; /* position after each batch */
} run;

static void put(run *r, const void *p, size_t n) {
    if (r->n + n > r->cap) {
        r->cap = (r->n + n) * 2;
        r->b = realloc(r->b, r->cap);
    }
    memcpy(r->b + r->n, p, n);
    r->n += n;
}

static void put_batch(run *r, const ts_pipe_batch *b, size_t img_floats) {
    put(r, &b->n, sizeof b->n);
    put(r, &b->epoch, sizeof b->epoch);
    put(r, &b->index, sizeof b->index);
    for (int i = 0; i < b->n; i++) {
        put(r, b->keys[i], 64);
        put(r, &b->labels[i], 8);
        put(r, &b->sample_index[i], 8);
        if (b->extra) put(r, b->extra + (size_t)i * CAP, CAP);
        if (b->images) put(r, b->images + (size_t)i * img_floats, img_floats * sizeof(float));
    }
}

/* Run a pipeline over spec from start for at most max batches (0: to the end). Returns the
 * status of the last ts_pipe_next; its message in err. */
static ts_status do_run(const char *spec, const ts_pipe_cfg *cfg, const ts_pipe_pos *start,
                        int max, run *r, ts_err *err) {
    memset(r, 0, sizeof *r);
    ts_source *src;
    assert_int_equal(ts_wds_source_new(&src, spec, 1, err), TS_OK);
    ts_pipe *p;
    assert_int_equal(ts_pipe_open(&p, src, cfg, start, err), TS_OK);
    size_t fl = cfg->xform.mode ? 3 * (size_t)cfg->xform.size * cfg->xform.size : 0;
    ts_status st;
    for (;;) {
        ts_pipe_batch b;
        st = ts_pipe_next(p, &b, err);
        if (st || !b.n) break;
        put_batch(r, &b, fl);
        if (r->batches < 64) r->pos[r->batches] = ts_pipe_position(p);
        r->batches++;
        if (max && r->batches == max) break;
    }
    ts_pipe_bad_counts(p, r->bad);
    ts_pipe_close(p);
    return st;
}

static void test_workers_identical(void **state) {
    (void)state;
    run r[3];
    int workers[3] = { 1, 2, 4 };
    ts_err err;
    for (int k = 0; k < 3; k++) {
        ts_pipe_cfg c = train_cfg(workers[k]);
        assert_int_equal(do_run(g_spec, &c, NULL, 0, &r[k], &err), TS_OK);
    }
    /* 44 samples an epoch, batches of 8: 5 full and one of 4, for two epochs. */
    assert_int_equal(r[0].batches, 12);
    for (int k = 1; k < 3; k++) {
        assert_int_equal(r[k].n, r[0].n);
        assert_memory_equal(r[k].b, r[0].b, r[0].n);
    }
    /* Each epoch holds every sample once, and its caption matches its key. */
    ts_pipe_cfg c = train_cfg(2);
    ts_source *src;
    ts_pipe *p;
    assert_int_equal(ts_wds_source_new(&src, g_spec, 1, &err), TS_OK);
    assert_int_equal(ts_pipe_open(&p, src, &c, NULL, &err), TS_OK);
    int seen[2][NSHARDS * PER_SHARD] = { { 0 } };
    char first[2][64] = { "", "" };
    for (;;) {
        ts_pipe_batch b;
        assert_int_equal(ts_pipe_next(p, &b, &err), TS_OK);
        if (!b.n) break;
        for (int i = 0; i < b.n; i++) {
            int sh, j;
            assert_int_equal(sscanf(b.keys[i], "g%d_%d", &sh, &j), 2);
            char want[CAP];
            snprintf(want, sizeof want, "caption %d %d", sh, j);
            assert_string_equal((char *)b.extra + (size_t)i * CAP, want);
            assert_int_equal(b.labels[i], sh * 100 + j);
            assert_int_equal(b.sample_index[i], b.index * 8 + i);
            seen[b.epoch][sh * PER_SHARD + j]++;
            if (!first[b.epoch][0]) snprintf(first[b.epoch], 64, "%s", b.keys[i]);
        }
    }
    for (int e = 0; e < 2; e++)
        for (int i = 0; i < NSHARDS * PER_SHARD; i++) assert_int_equal(seen[e][i], 1);
    ts_pipe_close(p);

    /* Another seed, another order. */
    run other;
    c = train_cfg(2);
    c.seed = 99;
    assert_int_equal(do_run(g_spec, &c, NULL, 0, &other, &err), TS_OK);
    assert_int_equal(other.n, r[0].n);
    assert_true(memcmp(other.b, r[0].b, r[0].n) != 0);
    free(other.b);
    for (int k = 0; k < 3; k++) free(r[k].b);
}

static void test_resume(void **state) {
    (void)state;
    ts_err err;
    run full;
    ts_pipe_cfg c = train_cfg(2);
    assert_int_equal(do_run(g_spec, &c, NULL, 0, &full, &err), TS_OK);
    /* Resume after batch 3 (mid-epoch) and after batch 6 (the epoch's last, partial). */
    int cuts[2] = { 3, 6 };
    for (int k = 0; k < 2; k++) {
        run head, tail;
        c = train_cfg(k ? 1 : 4);
        assert_int_equal(do_run(g_spec, &c, NULL, cuts[k], &head, &err), TS_OK);
        ts_pipe_pos pos = head.pos[cuts[k] - 1];
        assert_int_equal(pos.epoch, full.pos[cuts[k] - 1].epoch);
        assert_int_equal(pos.samples, full.pos[cuts[k] - 1].samples);
        assert_int_equal(do_run(g_spec, &c, &pos, 0, &tail, &err), TS_OK);
        assert_int_equal(head.batches + tail.batches, full.batches);
        assert_int_equal(head.n + tail.n, full.n);
        assert_memory_equal(head.b, full.b, head.n);
        assert_memory_equal(tail.b, full.b + head.n, tail.n);
        free(head.b);
        free(tail.b);
    }
    assert_int_equal(full.pos[2].epoch, 0);
    assert_int_equal(full.pos[2].samples, 24);
    free(full.b);
}

static void test_ranks_disjoint(void **state) {
    (void)state;
    ts_err err;
    int seen[NSHARDS * PER_SHARD] = { 0 };
    for (int rank = 0; rank < 2; rank++) {
        ts_pipe_cfg c = train_cfg(2);
        c.epochs = 1;
        c.rank = rank, c.world = 2;
        c.xform.mode = TS_XFORM_NONE;
        ts_source *src;
        ts_pipe *p;
        assert_int_equal(ts_wds_source_new(&src, g_spec, 1, &err), TS_OK);
        assert_int_equal(ts_pipe_open(&p, src, &c, NULL, &err), TS_OK);
        for (;;) {
            ts_pipe_batch b;
            assert_int_equal(ts_pipe_next(p, &b, &err), TS_OK);
            if (!b.n) break;
            assert_null(b.images);
            for (int i = 0; i < b.n; i++) {
                int sh, j;
                assert_int_equal(sscanf(b.keys[i], "g%d_%d", &sh, &j), 2);
                seen[sh * PER_SHARD + j]++;
            }
        }
        ts_pipe_close(p);
    }
    for (int i = 0; i < NSHARDS * PER_SHARD; i++) assert_int_equal(seen[i], 1);
}

static void test_eval_matches_transforms(void **state) {
    (void)state;
    ts_err err;
    ts_pipe_cfg c = { 0 };
    c.batch_size = 5;
    c.workers = 3;
    c.epochs = 1;
    c.drop_last = 0;
    c.xform.mode = TS_XFORM_EVAL;
    c.xform.size = 20;
    c.xform.resize = 22;
    c.xform.interp = TS_INTERP_BICUBIC;
    char spec[700];
    snprintf(spec, sizeof spec, "%s/good-1.tar", g_tmp);
    ts_source *src;
    ts_pipe *p;
    assert_int_equal(ts_wds_source_new(&src, spec, 0, &err), TS_OK);
    assert_int_equal(ts_pipe_open(&p, src, &c, NULL, &err), TS_OK);
    ts_image_u8 im, rs, cc;
    ts_image_u8_init(&im);
    ts_image_u8_init(&rs);
    ts_image_u8_init(&cc);
    float *want = malloc(3 * 20 * 20 * sizeof(float));
    int total = 0;
    for (;;) {
        ts_pipe_batch b;
        assert_int_equal(ts_pipe_next(p, &b, &err), TS_OK);
        if (!b.n) break;
        for (int i = 0; i < b.n; i++, total++) {
            char key[32];
            snprintf(key, sizeof key, "g1_%02d", total); /* tar order without shuffling */
            assert_string_equal(b.keys[i], key);
            unsigned char *jpg;
            size_t nj = fx_jpeg(40, 30, PER_SHARD + total, &jpg);
            assert_int_equal(ts_image_decode(&im, jpg, nj, key, NULL, NULL, &err), TS_OK);
            assert_int_equal(ts_image_resize_short(&rs, &im, 22, TS_INTERP_BICUBIC, &err), TS_OK);
            assert_int_equal(ts_image_center_crop(&cc, &rs, 20, 20, &err), TS_OK);
            ts_image_to_chw(&cc, TS_CLIP_MEAN, TS_CLIP_STD, want);
            assert_memory_equal(b.images + (size_t)i * 1200, want, 1200 * sizeof(float));
            free(jpg);
        }
    }
    assert_int_equal(total, PER_SHARD); /* the last batch is partial and kept */
    free(want);
    ts_image_u8_free(&im);
    ts_image_u8_free(&rs);
    ts_image_u8_free(&cc);
    ts_pipe_close(p);
}

/* A shard with good samples around bad ones, a shard cut short inside a member, and a file
 * that is no tar at all. */
static void write_bad_shards(char *spec, size_t n) {
    unsigned char *jpg;
    size_t nj = fx_jpeg(40, 30, 5, &jpg);
    fx_member m[] = {
        { "b0.jpg", jpg, nj },     { "b0.txt", "ok 0", 4 },
        { "b1.jpg", jpg, nj / 2 }, { "b1.txt", "truncated jpeg", 14 },
        { "b2.webp", "RIFF\x10\0\0\0WEBPVP8 ", 16 }, { "b2.txt", "webp", 4 },
        { "b3.jpg", jpg, nj },     /* no caption */
        { "b4.jpg", jpg, nj },     { "b4.txt", "ok 4", 4 },
    };
    char path[700];
    snprintf(path, sizeof path, "%s/bad-0.tar", g_tmp);
    fx_tar(path, m, 9);
    fx_member m2[] = { { "c0.jpg", jpg, nj }, { "c0.txt", "ok c0", 5 }, { "c1.jpg", jpg, nj },
                       { "c1.txt", "cut", 3 } };
    snprintf(path, sizeof path, "%s/bad-1.tar", g_tmp);
    fx_tar(path, m2, 4);
    size_t len;
    unsigned char *b = fx_read(path, &len);
    fx_write(path, b, 512 * 4 + ((nj + 511) / 512) * 512 + 100); /* inside c1.jpg */
    free(b);
    snprintf(path, sizeof path, "%s/bad-2.tar", g_tmp);
    fx_write(path, "this is not a tar file, only text that is long enough", 53);
    snprintf(spec, n, "%s/bad-{0..2}.tar", g_tmp);
    free(jpg);
}

static void test_bad_samples(void **state) {
    (void)state;
    char spec[800];
    write_bad_shards(spec, sizeof spec);
    ts_err err;
    ts_pipe_cfg c = train_cfg(2);
    c.shuffle_buffer = 0;
    c.epochs = 1;
    c.batch_size = 4;
    run r;
    assert_int_equal(do_run(spec, &c, NULL, 0, &r, &err), TS_OK);
    printf("  counts:");
    for (int k = 1; k < TS_BAD_COUNT; k++)
        if (r.bad[k]) printf(" %s %lld,", ts_bad_reason_str(k), (long long)r.bad[k]);
    printf("\n");
    assert_int_equal(r.bad[TS_BAD_DECODE], 1);
    assert_int_equal(r.bad[TS_BAD_UNSUPPORTED], 1);
    assert_int_equal(r.bad[TS_BAD_MISSING], 1);
    assert_int_equal(r.bad[TS_BAD_TRUNCATED], 1);
    assert_int_equal(r.bad[TS_BAD_SHARD], 1);
    /* The good ones, and only they, came through: b0, b4, c0 (shard order is shuffled). */
    int good = 0;
    size_t off = 0;
    for (int k = 0; k < r.batches; k++) {
        int n;
        memcpy(&n, r.b + off, sizeof n);
        off += sizeof n + 16;
        for (int i = 0; i < n; i++) {
            const char *key = (const char *)r.b + off;
            assert_true(!strcmp(key, "b0") || !strcmp(key, "b4") || !strcmp(key, "c0"));
            good++;
            off += 64 + 16 + CAP + 3 * 24 * 24 * sizeof(float);
        }
    }
    assert_int_equal(good, 3);
    free(r.b);

    /* The fail policy: the first bad sample in stream order stops the run, named. */
    c.on_bad = TS_ON_BAD_FAIL;
    c.seed = 5;
    ts_status st = do_run(spec, &c, NULL, 0, &r, &err);
    assert_int_not_equal(st, TS_OK);
    printf("  fail policy: %s\n", err.msg);
    assert_true(strstr(err.msg, "bad-") != NULL);
    free(r.b);

    /* Not a single shard readable: an error, not an endless loop. */
    char only[800];
    snprintf(only, sizeof only, "%s/bad-2.tar", g_tmp);
    c.on_bad = TS_ON_BAD_SKIP;
    st = do_run(only, &c, NULL, 0, &r, &err);
    assert_int_equal(st, TS_ERR_DATA);
    assert_non_null(strstr(err.msg, "no samples"));
    free(r.b);
}

/* The on_skip hook hears of every sample the skip policy left out, in stream order, with
 * its reason and name, and of the shard that could not be read; its count is the counts'. */
typedef struct skip_log {
    int n;
    int reason[16];
    int64_t index[16];
    char where[16][128];
} skip_log;

static void log_skip(void *user, const ts_skipped *k) {
    skip_log *l = user;
    if (l->n < 16) {
        l->reason[l->n] = k->reason;
        l->index[l->n] = k->index;
        snprintf(l->where[l->n], sizeof l->where[0], "%s", k->where[0] ? k->where : k->msg);
    }
    l->n++;
}

static void test_skip_hook(void **state) {
    (void)state;
    char spec[800];
    write_bad_shards(spec, sizeof spec);
    ts_err err;
    ts_pipe_cfg c = train_cfg(3);
    c.shuffle_buffer = 0;
    c.epochs = 1;
    c.batch_size = 2;
    skip_log l = { 0 };
    c.on_skip = log_skip;
    c.on_skip_user = &l;
    run r;
    assert_int_equal(do_run(spec, &c, NULL, 0, &r, &err), TS_OK);
    int64_t total = 0;
    for (int k = 1; k < TS_BAD_COUNT; k++) total += r.bad[k];
    assert_int_equal(l.n, total);
    assert_int_equal(l.n, 5);
    int seen[TS_BAD_COUNT] = { 0 };
    for (int i = 0; i < l.n; i++) {
        printf("  skipped: %s (%s)\n", l.where[i], ts_bad_reason_str(l.reason[i]));
        seen[l.reason[i]]++;
        if (l.reason[i] == TS_BAD_SHARD) {
            assert_int_equal(l.index[i], -1);
            assert_non_null(strstr(l.where[i], "bad-2.tar"));
        } else {
            assert_true(l.index[i] >= 0);
            assert_non_null(strstr(l.where[i], ".tar:"));
        }
    }
    assert_int_equal(seen[TS_BAD_DECODE], 1);
    assert_int_equal(seen[TS_BAD_UNSUPPORTED], 1);
    assert_int_equal(seen[TS_BAD_MISSING], 1);
    assert_int_equal(seen[TS_BAD_TRUNCATED], 1);
    assert_int_equal(seen[TS_BAD_SHARD], 1);
    for (int i = 0; i < l.n; i++) /* the truncated JPEG is named by its key */
        if (l.reason[i] == TS_BAD_DECODE) assert_non_null(strstr(l.where[i], "bad-0.tar:b1"));
    free(r.b);
}

/* The buffers the on_buffer hook was shown, and whether each is still registered. */
typedef struct buffers {
    void *buf[32];
    size_t bytes[32];
    int live[32], n, calls;
} buffers;

static void note_buffer(void *user, void *buf, size_t bytes, int release) {
    buffers *k = user;
    k->calls++;
    int i = 0;
    while (i < k->n && k->buf[i] != buf) i++;
    if (!release) {
        assert_true(i == k->n || !k->live[i]); /* told once per allocation */
        assert_int_equal((uintptr_t)buf % 4096, 0);
        assert_true(k->n < 32);
        i = k->n++;
        k->buf[i] = buf, k->bytes[i] = bytes, k->live[i] = 1;
        memset(buf, 0xa5, bytes); /* the whole buffer is ours to touch (ASan checks it) */
    } else {
        assert_true(i < k->n && k->live[i]);
        assert_int_equal(k->bytes[i], bytes);
        k->live[i] = 0;
    }
}

/* The live buffer of exactly `bytes` that holds p, or -1 */
static int buffer_of(const buffers *k, const void *p, size_t bytes) {
    for (int i = 0; i < k->n; i++)
        if (k->live[i] && k->bytes[i] == bytes && (const char *)p == (const char *)k->buf[i])
            return i;
    return -1;
}

/* The on_buffer hook sees every slot's images and prepare rows once when allocated and once
 * before they are freed, and every delivered batch lies in buffers it was shown. */
static void test_buffer_hook(void **state) {
    (void)state;
    for (int with_images = 1; with_images >= 0; with_images--) {
        ts_err err;
        ts_pipe_cfg c = train_cfg(2);
        c.slots = 3;
        if (!with_images) c.xform.mode = TS_XFORM_NONE;
        buffers k = { 0 };
        c.on_buffer = note_buffer;
        c.on_buffer_user = &k;
        ts_source *src;
        ts_pipe *p;
        assert_int_equal(ts_wds_source_new(&src, g_spec, 1, &err), TS_OK);
        assert_int_equal(ts_pipe_open(&p, src, &c, NULL, &err), TS_OK);
        int per_slot = with_images ? 2 : 1;
        assert_int_equal(k.n, c.slots * per_slot);
        size_t img = (size_t)c.batch_size * 3 * 24 * 24 * sizeof(float);
        size_t rows = (size_t)c.batch_size * CAP;
        int used[32] = { 0 }, batches = 0;
        ts_pipe_batch b;
        while (ts_pipe_next(p, &b, &err) == TS_OK && b.n) {
            int e = buffer_of(&k, b.extra, rows);
            assert_true(e >= 0);
            used[e] = 1;
            if (with_images) {
                int i = buffer_of(&k, b.images, img);
                assert_true(i >= 0);
                used[i] = 1;
            } else {
                assert_null(b.images);
            }
            batches++;
        }
        assert_true(batches > c.slots);
        for (int i = 0; i < k.n; i++) assert_true(used[i]); /* every slot delivered */
        assert_int_equal(k.calls, k.n);
        ts_pipe_close(p);
        assert_int_equal(k.calls, 2 * k.n);
        for (int i = 0; i < k.n; i++) assert_false(k.live[i]);
    }
}

static void test_bad_config(void **state) {
    (void)state;
    ts_err err;
    ts_source *src;
    ts_pipe *p;
    ts_pipe_cfg c = train_cfg(0);
    assert_int_equal(ts_wds_source_new(&src, g_spec, 1, &err), TS_OK);
    assert_int_equal(ts_pipe_open(&p, src, &c, NULL, &err), TS_ERR_USAGE);
    assert_non_null(strstr(err.msg, "workers"));
    c = train_cfg(1);
    c.rank = 2, c.world = 2;
    assert_int_equal(ts_wds_source_new(&src, g_spec, 1, &err), TS_OK);
    assert_int_equal(ts_pipe_open(&p, src, &c, NULL, &err), TS_ERR_USAGE);
    /* Closing early, with workers blocked on full slots, returns at once. */
    c = train_cfg(3);
    c.epochs = 0;
    assert_int_equal(ts_wds_source_new(&src, g_spec, 1, &err), TS_OK);
    assert_int_equal(ts_pipe_open(&p, src, &c, NULL, &err), TS_OK);
    ts_pipe_batch b;
    assert_int_equal(ts_pipe_next(p, &b, &err), TS_OK);
    ts_pipe_close(p);
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* samples/s on 500x375 JPEGs: decode + RandomResizedCrop(224) + flip + normalise. */
static void test_throughput(void **state) {
    (void)state;
    enum { N = 64 };
    fx_member m[2 * N];
    unsigned char *jpg[N];
    char names[2 * N][32];
    for (int i = 0; i < N; i++) {
        size_t nj = fx_jpeg(500, 375, i, &jpg[i]);
        snprintf(names[2 * i], 32, "%04d.jpg", i);
        snprintf(names[2 * i + 1], 32, "%04d.txt", i);
        m[2 * i] = (fx_member){ names[2 * i], jpg[i], nj };
        m[2 * i + 1] = (fx_member){ names[2 * i + 1], "a photo", 7 };
    }
    char spec[700];
    snprintf(spec, sizeof spec, "%s/speed.tar", g_tmp);
    fx_tar(spec, m, 2 * N);
    for (int i = 0; i < N; i++) free(jpg[i]);
    for (int workers = 1; workers <= 2; workers++) {
        ts_pipe_cfg c = train_cfg(workers);
        c.prepare = NULL, c.prepare_bytes = 0;
        c.xform.size = 224;
        c.batch_size = 32;
        c.epochs = 4;
        c.shuffle_buffer = 0;
        ts_err err;
        ts_source *src;
        ts_pipe *p;
        assert_int_equal(ts_wds_source_new(&src, spec, 1, &err), TS_OK);
        double t0 = now();
        assert_int_equal(ts_pipe_open(&p, src, &c, NULL, &err), TS_OK);
        int64_t n = 0;
        for (;;) {
            ts_pipe_batch b;
            assert_int_equal(ts_pipe_next(p, &b, &err), TS_OK);
            if (!b.n) break;
            n += b.n;
        }
        double dt = now() - t0;
        ts_pipe_close(p);
        assert_int_equal(n, 4 * N);
        printf("  pipeline, %d worker%s: %.0f samples/s (500x375 JPEG, RRC 224, flip, "
               "normalise)\n", workers, workers > 1 ? "s" : "", (double)n / dt);
    }
}

int main(void) {
    fx_scratch(g_tmp, sizeof g_tmp, "unit_pipeline_tmp");
    write_good_shards();
    ts_log_set_level(TS_LOG_ERROR); /* the skipped samples are logged as warnings */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_workers_identical),
        cmocka_unit_test(test_resume),
        cmocka_unit_test(test_ranks_disjoint),
        cmocka_unit_test(test_eval_matches_transforms),
        cmocka_unit_test(test_bad_samples),
        cmocka_unit_test(test_skip_hook),
        cmocka_unit_test(test_buffer_hook),
        cmocka_unit_test(test_bad_config),
        cmocka_unit_test(test_throughput),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
