/* unit_synth.c: the synthetic shapes dataset (loaders/synth.c).
 *
 * Writes a small set into a scratch folder through the loaders API and reads it back as any
 * WebDataset is read: every shard through ts_wds_shard_open / ts_wds_shard_next, every JPEG
 * through ts_image_decode, every json through cJSON. The labels must be truthful, not just
 * strings: the caption names the json's four classes; in the decoded pixels, the pixels of the
 * stated colour have their centroid at the stated position and their extent matches the
 * stated size, and the shape's centre has the stated colour. Also: the same options give the
 * same bytes whatever the thread count, val draws differ from train draws, a folder with
 * foreign files is refused without force, stale shards of a larger earlier run are removed,
 * and the pipeline reads the shards through a brace pattern.
 *
 * What it is not: a test that a model can learn the set (the CLIP quickstart's end-to-end test
 * trains on it).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "loaders.h"
#include "tessera.h"
#include "fixtures_data.h"

#define S 64
#define PER 40

static ts_synth_cfg small_cfg(void) {
    ts_synth_cfg c = { .seed = 7, .size = S, .train_shards = 2, .val_shards = 1,
                       .per_shard = PER, .quality = 90 };
    return c;
}

static void write_set(const char *name, char *dir, size_t cap, const ts_synth_cfg *c) {
    fx_scratch(dir, cap, name);
    ts_err err = { 0 };
    ts_status st = ts_synth_shapes_write(dir, c, 0, NULL, NULL, &err);
    if (st) fprintf(stderr, "%s\n", err.msg);
    assert_int_equal(st, TS_OK);
    st = ts_synth_shapes_manifest(dir, c, NULL, 0, &err);
    if (st) fprintf(stderr, "%s\n", err.msg);
    assert_int_equal(st, TS_OK);
}

static int json_int(const cJSON *j, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    assert_true(cJSON_IsNumber(v));
    return v->valueint;
}
static double json_num(const cJSON *j, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    assert_true(cJSON_IsNumber(v));
    return v->valuedouble;
}
static const char *json_str(const cJSON *j, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    assert_true(cJSON_IsString(v));
    return v->valuestring;
}

/* The palette colour nearest to rgb, and its distance. */
static int nearest_colour(const float rgb[3], float *dist) {
    int best = -1;
    float bd = 1e30f;
    for (int k = 0; k < TS_SYNTH_COLOURS; k++) {
        float c[3], d = 0;
        ts_synth_class_rgb(k, c);
        for (int i = 0; i < 3; i++) d += (rgb[i] - c[i]) * (rgb[i] - c[i]);
        if (d < bd) bd = d, best = k;
    }
    *dist = sqrtf(bd);
    return best;
}

static int nearest_anchor(float x, float y) {
    int best = -1;
    float bd = 1e30f;
    for (int p = 0; p < TS_SYNTH_POSITIONS; p++) {
        float ax, ay;
        ts_synth_anchor(p, S, &ax, &ay);
        float d = (x - ax) * (x - ax) + (y - ay) * (y - ay);
        if (d < bd) bd = d, best = p;
    }
    return best;
}

/* Check one decoded sample against its labels. */
static void check_sample(const ts_image_u8 *im, const char *caption, const cJSON *j,
                         const char *where) {
    int attr[TS_SYNTH_NATTR] = { json_int(j, "shape"), json_int(j, "colour"), json_int(j, "size"),
                                 json_int(j, "position") };
    static const char *const names[] = { "shape_name", "colour_name", "size_name",
                                         "position_name" };
    for (int a = 0; a < TS_SYNTH_NATTR; a++) {
        assert_in_range(attr[a], 0, ts_synth_num_classes(a) - 1);
        assert_string_equal(json_str(j, names[a]), ts_synth_class_name(a, attr[a]));
    }
    /* The caption names all four, the position as its phrase. */
    assert_string_equal(json_str(j, "caption"), caption);
    for (int a = 0; a < 3; a++)
        if (!strstr(caption, ts_synth_class_name(a, attr[a])))
            fail_msg("%s: caption '%s' lacks '%s'", where, caption, ts_synth_class_name(a, attr[a]));
    if (!strstr(caption, ts_synth_position_phrase(attr[3])))
        fail_msg("%s: caption '%s' lacks '%s'", where, caption, ts_synth_position_phrase(attr[3]));

    /* The centre of the shape has the stated colour. */
    float cx = (float)json_num(j, "cx"), cy = (float)json_num(j, "cy"), r = (float)json_num(j, "radius");
    float mean[3] = { 0 }, d;
    int n = 0;
    for (int y = (int)cy - 1; y <= (int)cy + 1; y++)
        for (int x = (int)cx - 1; x <= (int)cx + 1; x++, n++)
            for (int c = 0; c < 3; c++) mean[c] += im->data[((size_t)y * im->w + x) * 3 + c];
    for (int c = 0; c < 3; c++) mean[c] /= (float)n;
    if (nearest_colour(mean, &d) != attr[1] || d > 70)
        fail_msg("%s: centre colour (%.0f, %.0f, %.0f) is not %s (distance %.0f)", where,
                 (double)mean[0], (double)mean[1], (double)mean[2],
                 ts_synth_class_name(1, attr[1]), (double)d);

    /* The pixels of that colour: their centroid is at the stated position, near the centre. */
    double sx = 0, sy = 0;
    int count = 0;
    uint8_t *mask = calloc((size_t)S * S, 1);
    for (int y = 0; y < S; y++)
        for (int x = 0; x < S; x++) {
            const uint8_t *p = im->data + ((size_t)y * S + x) * 3;
            float rgb[3] = { p[0], p[1], p[2] };
            if (nearest_colour(rgb, &d) == attr[1] && d < 70) {
                mask[y * S + x] = 1;
                sx += x + 0.5, sy += y + 0.5, count++;
            }
        }
    assert_true(count > 20);
    float gx = (float)(sx / count), gy = (float)(sy / count);
    if (nearest_anchor(gx, gy) != attr[3] || fabsf(gx - cx) > 2 || fabsf(gy - cy) > 2)
        fail_msg("%s: the %s pixels' centroid (%.1f, %.1f) is not %s (centre %.1f, %.1f)", where,
                 ts_synth_class_name(1, attr[1]), (double)gx, (double)gy,
                 ts_synth_class_name(3, attr[3]), (double)cx, (double)cy);
    /* Their extent matches the radius, and the radius the stated size. */
    float ext = 0;
    for (int y = 0; y < S; y++)
        for (int x = 0; x < S; x++)
            if (mask[y * S + x]) {
                float dx = x + 0.5f - cx, dy = y + 0.5f - cy, e = sqrtf(dx * dx + dy * dy);
                if (e > ext) ext = e;
            }
    free(mask);
    if (ext < 0.7f * r || ext > r + 1.5f)
        fail_msg("%s: the shape reaches %.1f px from its centre, radius %.1f", where, (double)ext,
                 (double)r);
    float rel = r / S;
    if (attr[2] == 0 ? !(rel >= 0.119f && rel <= 0.141f) : !(rel >= 0.189f && rel <= 0.221f))
        fail_msg("%s: radius %.1f px is not %s", where, (double)r, ts_synth_class_name(2, attr[2]));
    if (attr[2] == 0 ? ext > 0.15f * S : ext < 0.15f * S)
        fail_msg("%s: extent %.1f px does not look %s", where, (double)ext,
                 ts_synth_class_name(2, attr[2]));
}

/* Read every shard of dir back and check each sample. Returns the samples read. */
static int read_back(const char *dir, int split, int nshards, int per) {
    ts_image_u8 im;
    ts_image_u8_init(&im);
    ts_sample sm;
    ts_sample_init(&sm);
    int total = 0, seen[TS_SYNTH_NATTR][8] = { { 0 } };
    for (int k = 0; k < nshards; k++) {
        char path[1200];
        snprintf(path, sizeof path, "%s/%s-%06d.tar", dir, split ? "val" : "train", k);
        ts_wds_shard *sh;
        ts_err err = { 0 };
        assert_int_equal(ts_wds_shard_open(&sh, path, &err), TS_OK);
        int got, i = 0;
        while (ts_wds_shard_next(sh, &sm, &got, &err) == TS_OK && got) {
            assert_int_equal(sm.bad, TS_BAD_NONE);
            assert_string_equal(sm.image_ext, "jpg");
            assert_true(sm.has_text && sm.has_json);
            assert_int_equal(sm.nfields, 3);
            char key[64];
            snprintf(key, sizeof key, "%s-%07d", split ? "val" : "train", k * per + i);
            assert_string_equal(sm.key, key);
            assert_int_equal(ts_image_decode(&im, sm.image.data, sm.image.n, sm.where, NULL, NULL,
                                             &err), TS_OK);
            assert_int_equal(im.w, S);
            assert_int_equal(im.h, S);
            cJSON *j = cJSON_Parse((const char *)sm.json.data);
            assert_non_null(j);
            assert_int_equal(json_int(j, "index"), k * per + i);
            assert_string_equal(json_str(j, "split"), split ? "val" : "train");
            check_sample(&im, (const char *)sm.text.data, j, sm.where);
            for (int a = 0; a < TS_SYNTH_NATTR; a++)
                seen[a][json_int(j, a == 0 ? "shape" : a == 1 ? "colour" : a == 2 ? "size"
                                                                                  : "position")]++;
            cJSON_Delete(j);
            i++;
        }
        assert_int_equal(err.code, TS_OK);
        assert_int_equal(i, per);
        total += i;
        ts_wds_shard_close(sh);
    }
    /* Uniform draws: with this many samples every class shows up. */
    if (total >= 60)
        for (int a = 0; a < TS_SYNTH_NATTR; a++)
            for (int c = 0; c < ts_synth_num_classes(a); c++) assert_true(seen[a][c] > 0);
    ts_sample_free(&sm);
    ts_image_u8_free(&im);
    return total;
}

static void test_truthful_samples(void **state) {
    (void)state;
    char dir[600];
    ts_synth_cfg c = small_cfg();
    write_set("unit_synth_a", dir, sizeof dir, &c);
    assert_int_equal(read_back(dir, 0, 2, PER), 2 * PER);
    assert_int_equal(read_back(dir, 1, 1, PER), PER);

    /* The class files list the names in label order (positions as the captions' phrases). */
    static const char *const files[] = { "shapes.txt", "colours.txt", "sizes.txt", "positions.txt" };
    for (int a = 0; a < TS_SYNTH_NATTR; a++) {
        char path[700], want[512] = "";
        snprintf(path, sizeof path, "%s/%s", dir, files[a]);
        for (int k = 0; k < ts_synth_num_classes(a); k++) {
            strcat(want, a == 3 ? ts_synth_position_phrase(k) : ts_synth_class_name(a, k));
            strcat(want, "\n");
        }
        size_t n;
        unsigned char *b = fx_read(path, &n);
        assert_non_null(b);
        assert_int_equal(n, strlen(want));
        assert_memory_equal(b, want, n);
        free(b);
    }
}

/* More samples through the draw API alone (no files): the checks hold for 600 of them. */
static void test_many_draws(void **state) {
    (void)state;
    ts_synth_cfg c = small_cfg();
    ts_image_u8 im;
    ts_image_u8_init(&im);
    for (int split = 0; split < 2; split++)
        for (int i = 0; i < 300; i++) {
            ts_synth_sample s;
            ts_err err = { 0 };
            assert_int_equal(ts_synth_shapes_draw(&c, split, i, &s, &im, &err), TS_OK);
            /* Through JPEG as the shards hold it, so that the checks see what a reader sees. */
            tjhandle tj = tjInitCompress();
            unsigned char *jpg = NULL;
            unsigned long nj = 0;
            assert_int_equal(tjCompress2(tj, im.data, S, 0, S, TJPF_RGB, &jpg, &nj, TJSAMP_444,
                                         90, 0), 0);
            tjDestroy(tj);
            ts_image_u8 dec;
            ts_image_u8_init(&dec);
            assert_int_equal(ts_image_decode(&dec, jpg, nj, "draw", NULL, NULL, &err), TS_OK);
            tjFree(jpg);
            char js[512], where[64];
            snprintf(js, sizeof js,
                     "{\"shape\": %d, \"colour\": %d, \"size\": %d, \"position\": %d, "
                     "\"shape_name\": \"%s\", \"colour_name\": \"%s\", \"size_name\": \"%s\", "
                     "\"position_name\": \"%s\", \"caption\": \"%s\", \"cx\": %f, \"cy\": %f, "
                     "\"radius\": %f}",
                     s.attr[0], s.attr[1], s.attr[2], s.attr[3], ts_synth_class_name(0, s.attr[0]),
                     ts_synth_class_name(1, s.attr[1]), ts_synth_class_name(2, s.attr[2]),
                     ts_synth_class_name(3, s.attr[3]), s.caption, (double)s.cx, (double)s.cy,
                     (double)s.r);
            snprintf(where, sizeof where, "%s sample %d", split ? "val" : "train", i);
            cJSON *j = cJSON_Parse(js);
            check_sample(&dec, s.caption, j, where);
            cJSON_Delete(j);
            ts_image_u8_free(&dec);
        }
    ts_image_u8_free(&im);
}

static unsigned char *slurp(const char *dir, const char *name, size_t *n) {
    char path[800];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    unsigned char *b = fx_read(path, n);
    if (!b) fail_msg("cannot read %s", path);
    return b;
}

static void test_deterministic_and_held_out(void **state) {
    (void)state;
    char a[600], b[600];
    ts_synth_cfg c = small_cfg();
    int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    write_set("unit_synth_b1", a, sizeof a, &c);
    omp_set_num_threads(threads > 1 ? threads : 2);
    write_set("unit_synth_b2", b, sizeof b, &c);
    omp_set_num_threads(threads);
    static const char *const names[] = { "train-000000.tar", "train-000001.tar", "val-000000.tar",
                                         "captions-train.txt", "manifest.json", "README.txt",
                                         "shapes-templates.txt", NULL };
    for (int i = 0; names[i]; i++) {
        size_t na, nb;
        unsigned char *x = slurp(a, names[i], &na), *y = slurp(b, names[i], &nb);
        assert_int_equal(na, nb);
        assert_memory_equal(x, y, na);
        free(x);
        free(y);
    }
    /* Val draws are not train draws: sample 0 of each split differ. */
    ts_image_u8 im0, im1;
    ts_image_u8_init(&im0);
    ts_image_u8_init(&im1);
    ts_synth_sample s0, s1;
    ts_err err;
    assert_int_equal(ts_synth_shapes_draw(&c, 0, 0, &s0, &im0, &err), TS_OK);
    assert_int_equal(ts_synth_shapes_draw(&c, 1, 0, &s1, &im1, &err), TS_OK);
    assert_memory_not_equal(im0.data, im1.data, (size_t)S * S * 3);
    /* A sample depends on (seed, split, index) only, not on the shard layout. */
    ts_synth_cfg c2 = c;
    c2.per_shard = 3;
    c2.train_shards = 9;
    assert_int_equal(ts_synth_shapes_draw(&c2, 0, 0, &s1, &im1, &err), TS_OK);
    assert_memory_equal(im0.data, im1.data, (size_t)S * S * 3);
    assert_string_equal(s0.caption, s1.caption);
    /* Another seed gives other pictures. */
    c2.seed = 8;
    assert_int_equal(ts_synth_shapes_draw(&c2, 0, 0, &s1, &im1, &err), TS_OK);
    assert_memory_not_equal(im0.data, im1.data, (size_t)S * S * 3);
    ts_image_u8_free(&im0);
    ts_image_u8_free(&im1);
}

static void test_folders(void **state) {
    (void)state;
    char dir[600], path[800];
    ts_synth_cfg c = small_cfg();
    c.per_shard = 5;
    c.train_shards = 3;
    write_set("unit_synth_c", dir, sizeof dir, &c);

    /* A rerun with fewer shards removes the ones it no longer writes, and what an interrupted
     * run left. */
    snprintf(path, sizeof path, "%s/val-000007.tar.tmp", dir);
    fx_write(path, "half", 4);
    c.train_shards = 1;
    ts_err err = { 0 };
    assert_int_equal(ts_synth_shapes_write(dir, &c, 0, NULL, NULL, &err), TS_OK);
    snprintf(path, sizeof path, "%s/manifest.json", dir); /* until the manifest is rewritten */
    assert_null(fopen(path, "rb"));
    snprintf(path, sizeof path, "%s/train-000001.tar", dir);
    assert_null(fopen(path, "rb"));
    snprintf(path, sizeof path, "%s/train-000000.tar", dir);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fclose(f);
    snprintf(path, sizeof path, "%s/val-000007.tar.tmp", dir);
    assert_null(fopen(path, "rb"));

    /* A folder with other files is refused, naming it, unless forced; the files stay. */
    snprintf(path, sizeof path, "%s/notes.md", dir);
    fx_write(path, "mine", 4);
    snprintf(path, sizeof path, "%s/train-000005.tar", dir);
    fx_write(path, "x", 1);
    assert_int_equal(ts_synth_shapes_write(dir, &c, 0, NULL, NULL, &err), TS_ERR_USAGE);
    assert_non_null(strstr(err.msg, dir));
    assert_non_null(strstr(err.msg, "notes.md"));
    assert_int_equal(ts_synth_shapes_write(dir, &c, 1, NULL, NULL, &err), TS_OK);
    size_t n;
    unsigned char *b = slurp(dir, "notes.md", &n);
    assert_int_equal(n, 4);
    free(b);
    b = slurp(dir, "train-000005.tar", &n); /* not ours to remove in a forced folder */
    free(b);

    /* A path under a file cannot be created; bad sizes are usage errors. */
    snprintf(path, sizeof path, "%s/notes.md/sub", dir);
    assert_int_equal(ts_synth_shapes_write(path, &c, 0, NULL, NULL, &err), TS_ERR_IO);
    assert_non_null(strstr(err.msg, "cannot create"));
    c.size = 8;
    assert_int_equal(ts_synth_shapes_write(dir, &c, 0, NULL, NULL, &err), TS_ERR_USAGE);
    assert_non_null(strstr(err.msg, "16..1024"));
}

/* The batch pipeline reads the shards through the manifest's brace pattern. */
static void test_pipeline(void **state) {
    (void)state;
    char dir[600], spec[800];
    ts_synth_cfg c = small_cfg();
    c.per_shard = 10;
    c.train_shards = 3;
    write_set("unit_synth_d", dir, sizeof dir, &c);
    size_t n;
    char *manifest = (char *)slurp(dir, "manifest.json", &n);
    manifest = realloc(manifest, n + 1);
    manifest[n] = 0;
    cJSON *m = cJSON_Parse(manifest);
    assert_non_null(m);
    const cJSON *train = cJSON_GetObjectItemCaseSensitive(m, "train");
    assert_string_equal(json_str(train, "pattern"), "train-{000000..000002}.tar");
    assert_int_equal(json_int(train, "samples"), 30);
    snprintf(spec, sizeof spec, "%s/%s", dir, json_str(train, "pattern"));
    cJSON_Delete(m);
    free(manifest);

    ts_source *src;
    ts_err err = { 0 };
    assert_int_equal(ts_wds_source_new(&src, spec, 1, &err), TS_OK);
    ts_pipe_cfg pc = { 0 };
    pc.batch_size = 8;
    pc.workers = 2;
    pc.epochs = 1;
    pc.need_text = 1;
    pc.xform.mode = TS_XFORM_EVAL;
    pc.xform.size = S;
    pc.xform.interp = TS_INTERP_BICUBIC;
    ts_pipe *p;
    assert_int_equal(ts_pipe_open(&p, src, &pc, NULL, &err), TS_OK);
    int rows = 0;
    ts_pipe_batch b;
    for (;;) {
        assert_int_equal(ts_pipe_next(p, &b, &err), TS_OK);
        if (!b.n) break;
        rows += b.n;
    }
    int64_t bad[TS_BAD_COUNT];
    ts_pipe_bad_counts(p, bad);
    for (int r = 0; r < TS_BAD_COUNT; r++) assert_int_equal(bad[r], 0);
    ts_pipe_close(p);
    assert_int_equal(rows, 30);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_truthful_samples),
        cmocka_unit_test(test_many_draws),
        cmocka_unit_test(test_deterministic_and_held_out),
        cmocka_unit_test(test_folders),
        cmocka_unit_test(test_pipeline),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
