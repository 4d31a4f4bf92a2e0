/* unit_csvdata.c: CSV/TSV datasets (loaders/csvdata.c) and class folders (loaders/folder.c).
 *
 * The test writes its own files and checks: RFC 4180 quoting (separators, doubled quotes and
 * line breaks inside quotes, CRLF, a byte-order mark, blank lines), the separator taken from
 * the extension or the header, open_clip's column keys, errors that name the file and line (an
 * unclosed quote, a row with the wrong number of fields, an unknown column listing the real
 * ones); through the pipeline, paths relative to the CSV's folder, a missing image skipped and
 * counted (or failing) with a message naming the row; class folders sorted into labels as
 * torchvision's ImageFolder does, with nested folders and non-image files; a flat folder of
 * images, its corrupt file named to the pipeline's on_skip hook.
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

static char g_tmp[512];

static void write_text(const char *name, const char *text) {
    char path[700];
    snprintf(path, sizeof path, "%s/%s", g_tmp, name);
    fx_write(path, text, strlen(text));
}

static ts_status open_csv(const char *name, const char *img, const char *cap, char sep,
                          ts_csv **c, ts_err *err) {
    char path[700];
    snprintf(path, sizeof path, "%s/%s", g_tmp, name);
    ts_csv_spec spec = { path, img, cap, sep };
    return ts_csv_open(c, &spec, err);
}

static void test_quoting(void **state) {
    (void)state;
    write_text("q.csv", "\xEF\xBB\xBF" "filepath,title,extra\r\n"
                        "a.jpg,\"a cat, sitting\",1\r\n"
                        "\r\n"
                        "\"b \"\"quoted\"\".jpg\",\"two\nlines\",\"\"\n"
                        "c.jpg,plain \"inner\" quotes,3");
    ts_csv *c;
    ts_err err;
    assert_int_equal(open_csv("q.csv", NULL, NULL, 0, &c, &err), TS_OK);
    assert_int_equal(ts_csv_rows(c), 3);
    assert_int_equal(ts_csv_cols(c), 3);
    assert_string_equal(ts_csv_col_name(c, 0), "filepath");
    assert_string_equal(ts_csv_cell(c, 0, 1), "a cat, sitting");
    assert_string_equal(ts_csv_cell(c, 1, 0), "b \"quoted\".jpg");
    assert_string_equal(ts_csv_cell(c, 1, 1), "two\nlines");
    assert_string_equal(ts_csv_cell(c, 1, 2), "");
    assert_string_equal(ts_csv_cell(c, 2, 1), "plain \"inner\" quotes");
    assert_string_equal(ts_csv_cell(c, 2, 2), "3");
    assert_int_equal(ts_csv_line(c, 0), 2);
    assert_int_equal(ts_csv_line(c, 1), 4);
    assert_int_equal(ts_csv_line(c, 2), 6);
    char buf[800], want[800];
    snprintf(want, sizeof want, "%s/a.jpg", g_tmp);
    assert_string_equal(ts_csv_image_path(c, 0, buf, sizeof buf), want);
    ts_csv_close(c);

    /* Tab-separated (open_clip's default separator), found from the header. */
    write_text("t.csv", "id\timg\tcaption\n1\t/abs/x.png\ta, b\n");
    assert_int_equal(open_csv("t.csv", "img", "caption", 0, &c, &err), TS_OK);
    assert_int_equal(ts_csv_cols(c), 3);
    assert_string_equal(ts_csv_cell(c, 0, 2), "a, b");
    assert_string_equal(ts_csv_image_path(c, 0, buf, sizeof buf), "/abs/x.png");
    assert_int_equal(ts_csv_img_col(c), 1);
    assert_int_equal(ts_csv_caption_col(c), 2);
    ts_csv_close(c);
}

static void test_csv_errors(void **state) {
    (void)state;
    ts_csv *c;
    ts_err err;
    write_text("e1.csv", "filepath,title\na.jpg,\"never closed\nb.jpg,x\n");
    assert_int_equal(open_csv("e1.csv", NULL, NULL, 0, &c, &err), TS_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "e1.csv:2: a quoted field is never closed"));
    write_text("e2.csv", "filepath,title\na.jpg,x\nb.jpg,y,z\n");
    assert_int_equal(open_csv("e2.csv", NULL, NULL, 0, &c, &err), TS_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "e2.csv:3: row 2 has 3 fields, the header has 2"));
    write_text("e3.csv", "path,caption\na.jpg,x\n");
    assert_int_equal(open_csv("e3.csv", NULL, NULL, 0, &c, &err), TS_ERR_DATA);
    assert_non_null(strstr(err.msg, "no column 'filepath'"));
    assert_non_null(strstr(err.msg, "'path', 'caption'"));
    assert_int_equal(open_csv("e3.csv", "path", "title", 0, &c, &err), TS_ERR_DATA);
    assert_non_null(strstr(err.msg, "no column 'title' for the captions"));
    assert_int_equal(open_csv("e3.csv", "path", "", 0, &c, &err), TS_OK);
    assert_int_equal(ts_csv_caption_col(c), -1);
    ts_csv_close(c);
    write_text("e4.csv", "");
    assert_int_equal(open_csv("e4.csv", NULL, NULL, 0, &c, &err), TS_ERR_FORMAT);
    assert_int_equal(open_csv("nope.csv", NULL, NULL, 0, &c, &err), TS_ERR_IO);
    assert_non_null(strstr(err.msg, "nope.csv"));
}

static ts_status prep_caption(void *user, const ts_sample *s, void *row, ts_err *err) {
    (void)user, (void)err;
    memset(row, 0, 32);
    snprintf(row, 32, "%s", (const char *)s->text.data);
    return TS_OK;
}

static void test_csv_pipeline(void **state) {
    (void)state;
    char path[800];
    snprintf(path, sizeof path, "%s/img", g_tmp);
    char cmd[900];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", path);
    assert_int_equal(system(cmd), 0);
    for (int i = 0; i < 5; i++) {
        unsigned char *jpg;
        size_t n = fx_jpeg(30, 20, i, &jpg);
        snprintf(path, sizeof path, "%s/img/%d.jpg", g_tmp, i);
        fx_write(path, jpg, n);
        free(jpg);
    }
    write_text("data.tsv", "filepath\ttitle\nimg/0.jpg\tzero\nimg/1.jpg\tone\nimg/missing.jpg\t"
                           "gone\nimg/3.jpg\tthree\n\ttwo tabs\nimg/4.jpg\tfour\n");
    for (int policy = 0; policy < 2; policy++) {
        ts_csv *c;
        ts_err err;
        assert_int_equal(open_csv("data.tsv", NULL, NULL, 0, &c, &err), TS_OK);
        ts_source *src;
        assert_int_equal(ts_csv_source_new(&src, c, 0, &err), TS_OK);
        ts_pipe_cfg cfg = { .batch_size = 3, .workers = 2, .epochs = 1, .need_text = 1,
                            .on_bad = policy ? TS_ON_BAD_FAIL : TS_ON_BAD_SKIP,
                            .xform = { .mode = TS_XFORM_EVAL, .size = 16 },
                            .prepare = prep_caption, .prepare_bytes = 32 };
        ts_pipe *p;
        assert_int_equal(ts_pipe_open(&p, src, &cfg, NULL, &err), TS_OK);
        ts_pipe_batch b;
        if (policy) {
            assert_int_equal(ts_pipe_next(p, &b, &err), TS_ERR_DATA);
            assert_non_null(strstr(err.msg, "data.tsv:4: row 3"));
            assert_non_null(strstr(err.msg, "missing.jpg"));
            ts_pipe_close(p);
            continue;
        }
        const char *want[] = { "zero", "one", "three", "four" };
        int k = 0;
        for (;;) {
            assert_int_equal(ts_pipe_next(p, &b, &err), TS_OK);
            if (!b.n) break;
            for (int i = 0; i < b.n; i++, k++) {
                assert_true(k < 4);
                assert_string_equal((char *)b.extra + 32 * i, want[k]);
                assert_int_equal(b.labels[i], -1);
            }
        }
        assert_int_equal(k, 4);
        int64_t counts[TS_BAD_COUNT];
        ts_pipe_bad_counts(p, counts);
        assert_int_equal(counts[TS_BAD_FILE], 2); /* the missing file and the empty path */
        ts_pipe_close(p);
    }
}

static void test_folders(void **state) {
    (void)state;
    char root[700], cmd[4000];
    snprintf(root, sizeof root, "%s/classes", g_tmp);
    snprintf(cmd, sizeof cmd,
             "mkdir -p '%s/zebra' '%s/ant/sub' '%s/Bee' && touch '%s/ant/notes.txt'", root, root,
             root, root);
    assert_int_equal(system(cmd), 0);
    const char *files[] = { "zebra/z1.jpg", "ant/b.JPG", "ant/a.jpg", "ant/sub/c.jpg", "Bee/x.png" };
    for (int i = 0; i < 5; i++) {
        unsigned char *jpg;
        size_t n = fx_jpeg(20, 20, i, &jpg);
        char path[800];
        snprintf(path, sizeof path, "%s/%s", root, files[i]);
        fx_write(path, jpg, n); /* a JPEG named .png decodes all the same: bytes decide */
        free(jpg);
    }
    ts_folder *f;
    ts_err err;
    assert_int_equal(ts_folder_open(&f, root, &err), TS_OK);
    assert_int_equal(ts_folder_classes(f), 3);
    assert_string_equal(ts_folder_class_name(f, 0), "Bee"); /* byte order: upper case first */
    assert_string_equal(ts_folder_class_name(f, 1), "ant");
    assert_string_equal(ts_folder_class_name(f, 2), "zebra");
    assert_int_equal(ts_folder_count(f), 5);
    const char *order[] = { "Bee/x.png", "ant/a.jpg", "ant/b.JPG", "ant/sub/c.jpg", "zebra/z1.jpg" };
    const int labels[] = { 0, 1, 1, 1, 2 };
    for (int i = 0; i < 5; i++) {
        assert_non_null(strstr(ts_folder_path(f, i), order[i]));
        assert_int_equal(ts_folder_label(f, i), labels[i]);
    }
    ts_source *src;
    assert_int_equal(ts_folder_source_new(&src, f, 1, &err), TS_OK);
    ts_pipe_cfg cfg = { .batch_size = 2, .workers = 2, .epochs = 1, .need_label = 1, .seed = 3,
                        .xform = { .mode = TS_XFORM_EVAL, .size = 8 } };
    ts_pipe *p;
    assert_int_equal(ts_pipe_open(&p, src, &cfg, NULL, &err), TS_OK);
    int n = 0, sum = 0;
    for (;;) {
        ts_pipe_batch b;
        assert_int_equal(ts_pipe_next(p, &b, &err), TS_OK);
        if (!b.n) break;
        for (int i = 0; i < b.n; i++) sum += (int)b.labels[i];
        n += b.n;
    }
    assert_int_equal(n, 5);
    assert_int_equal(sum, 5);
    ts_pipe_close(p);

    /* An empty class is an error naming it; so is a root without classes. */
    snprintf(cmd, sizeof cmd, "mkdir -p '%s/empty'", root);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(ts_folder_open(&f, root, &err), TS_ERR_DATA);
    assert_non_null(strstr(err.msg, "'empty' holds no image"));
    snprintf(cmd, sizeof cmd, "%s/empty", root);
    assert_int_equal(ts_folder_open(&f, cmd, &err), TS_ERR_DATA);
    assert_int_equal(ts_folder_open(&f, "/nonexistent/folder", &err), TS_ERR_IO);
}

/* A flat folder: the images directly in it, sorted, unlabelled; sub-folders and other files
 * are passed over; a corrupt one is skipped through the pipeline and the on_skip hook names
 * it by its path. */
typedef struct skipped_seen {
    int n;
    char path[4][512];
    int reason[4];
} skipped_seen;

static void note_skip(void *user, const ts_skipped *k) {
    skipped_seen *s = user;
    if (s->n < 4) {
        snprintf(s->path[s->n], sizeof s->path[0], "%s", k->path);
        s->reason[s->n] = k->reason;
        assert_string_equal(k->where, k->path); /* a folder's sample is named by its path */
        assert_true(k->index >= 0 && strstr(k->msg, "flat/") != NULL);
    }
    s->n++;
}

static void test_flat_folder(void **state) {
    (void)state;
    char root[700], cmd[4000];
    snprintf(root, sizeof root, "%s/flat", g_tmp);
    snprintf(cmd, sizeof cmd, "mkdir -p '%s/sub' && touch '%s/readme.txt'", root, root);
    assert_int_equal(system(cmd), 0);
    const char *files[] = { "c.jpg", "a.PNG", "b.jpeg", "sub/d.jpg" };
    for (int i = 0; i < 4; i++) {
        unsigned char *jpg;
        size_t n = fx_jpeg(20, 20, i, &jpg);
        char path[800];
        snprintf(path, sizeof path, "%s/%s", root, files[i]);
        fx_write(path, jpg, i == 2 ? n / 2 : n); /* b.jpeg is cut short */
        free(jpg);
    }
    ts_folder *f;
    ts_err err;
    assert_int_equal(ts_folder_open_flat(&f, root, &err), TS_OK);
    assert_int_equal(ts_folder_classes(f), 0);
    assert_int_equal(ts_folder_count(f), 3);
    const char *order[] = { "flat/a.PNG", "flat/b.jpeg", "flat/c.jpg" };
    for (int i = 0; i < 3; i++) {
        assert_non_null(strstr(ts_folder_path(f, i), order[i]));
        assert_int_equal(ts_folder_label(f, i), -1);
    }
    ts_source *src;
    assert_int_equal(ts_folder_source_new(&src, f, 0, &err), TS_OK);
    skipped_seen seen = { 0 };
    ts_pipe_cfg cfg = { .batch_size = 2, .workers = 2, .epochs = 1,
                        .xform = { .mode = TS_XFORM_EVAL, .size = 8 },
                        .on_skip = note_skip, .on_skip_user = &seen };
    ts_pipe *p;
    assert_int_equal(ts_pipe_open(&p, src, &cfg, NULL, &err), TS_OK);
    int n = 0;
    for (;;) {
        ts_pipe_batch b;
        assert_int_equal(ts_pipe_next(p, &b, &err), TS_OK);
        if (!b.n) break;
        for (int i = 0; i < b.n; i++) assert_int_equal(b.labels[i], -1);
        n += b.n;
    }
    ts_pipe_close(p);
    assert_int_equal(n, 2);
    assert_int_equal(seen.n, 1);
    assert_non_null(strstr(seen.path[0], "flat/b.jpeg"));
    assert_int_equal(seen.reason[0], TS_BAD_DECODE);

    /* No image directly in it (only in a sub-folder): an error naming it; so is no folder. */
    snprintf(cmd, sizeof cmd, "%s/classes", g_tmp);
    assert_int_equal(ts_folder_open_flat(&f, cmd, &err), TS_ERR_DATA);
    assert_non_null(strstr(err.msg, "no image files"));
    assert_int_equal(ts_folder_open_flat(&f, "/nonexistent/folder", &err), TS_ERR_IO);
}

int main(void) {
    fx_scratch(g_tmp, sizeof g_tmp, "unit_csvdata_tmp");
    ts_log_set_level(TS_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_quoting),
        cmocka_unit_test(test_csv_errors),
        cmocka_unit_test(test_csv_pipeline),
        cmocka_unit_test(test_folders),
        cmocka_unit_test(test_flat_folder),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
