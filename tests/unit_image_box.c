/* unit_image_box.c: decoding only a crop box (ts_image_decode_box, ts_image_load_box).
 *
 * The promise under test: the box's pixels are those of the full decode (ts_image_decode)
 * followed by a crop, bit for bit, and the errors are the full decode's, for the same files.
 * Without arguments the test makes its own JPEGs with TurboJPEG: every chroma subsampling it
 * writes (4:4:4, 4:2:2, 4:2:0, 4:4:0, 4:1:1, gray), progressive, CMYK, sizes that are not a
 * multiple of the MCU, each EXIF orientation, DCT scaling; and for each it compares many
 * random boxes and the boxes that touch each edge or corner. Then it cuts the files short and
 * damages bytes of their entropy-coded data, and checks that the box decode fails exactly when
 * the full decode fails, with the same status and message, wherever the box lies. With a
 * folder argument (ctest's unit_image_box_samples) it does the same comparisons on every
 * sample image there (JPEG and PNG). What it is not: a test of the decoder against PIL
 * (unit_image is) or of speed (bench/loader is).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <turbojpeg.h>

#include "loaders.h"
#include "tessera.h"
#include "fixtures_image.h"

static const char *g_data; /* the sample folder, NULL when run without one */

/* ---------------------------------------------------------------------------------------- */
/* Helpers                                                                                  */

/* A pick function that hands out a fixed box and records how it was called. */
typedef struct fixed_pick {
    ts_crop_box box;
    int calls, w, h;
} fixed_pick;

static ts_crop_box pick_fixed(void *user, int w, int h) {
    fixed_pick *f = user;
    f->calls++;
    f->w = w, f->h = h;
    return f->box;
}

/* A box uniform over sizes and positions inside w x h, drawn from r. */
static ts_crop_box random_box(ts_rng *r, int w, int h) {
    ts_crop_box b;
    b.w = 1 + (int)(ts_rng_next(r) % (uint64_t)w);
    b.h = 1 + (int)(ts_rng_next(r) % (uint64_t)h);
    b.left = (int)(ts_rng_next(r) % (uint64_t)(w - b.w + 1));
    b.top = (int)(ts_rng_next(r) % (uint64_t)(h - b.h + 1));
    return b;
}

/* The boxes every image is tried with: the whole image, thin strips along each edge, small
 * boxes in each corner, boxes that touch one edge each, then n random ones. Returns how many
 * were written to out (room for 16 + n). */
static int boxes_for(ts_crop_box *out, int w, int h, int n, ts_rng *r) {
    int k = 0;
    int bw = w > 3 ? w / 3 : 1, bh = h > 3 ? h / 3 : 1;
    out[k++] = (ts_crop_box){ 0, 0, h, w };                  /* everything */
    out[k++] = (ts_crop_box){ 0, 0, 1, w };                  /* the top row */
    out[k++] = (ts_crop_box){ h - 1, 0, 1, w };              /* the bottom row */
    out[k++] = (ts_crop_box){ 0, 0, h, 1 };                  /* the left column */
    out[k++] = (ts_crop_box){ 0, w - 1, h, 1 };              /* the right column */
    out[k++] = (ts_crop_box){ 0, 0, bh, bw };                /* the corners */
    out[k++] = (ts_crop_box){ 0, w - bw, bh, bw };
    out[k++] = (ts_crop_box){ h - bh, 0, bh, bw };
    out[k++] = (ts_crop_box){ h - bh, w - bw, bh, bw };
    out[k++] = (ts_crop_box){ h - 1, w - 1, 1, 1 };          /* the last pixel */
    out[k++] = (ts_crop_box){ h / 3, w / 3, bh, bw };        /* inside, touching nothing */
    out[k++] = (ts_crop_box){ 0, w / 3, bh, bw };            /* one edge each */
    out[k++] = (ts_crop_box){ h - bh, w / 3, bh, bw };
    out[k++] = (ts_crop_box){ h / 3, 0, bh, bw };
    out[k++] = (ts_crop_box){ h / 3, w - bw, bh, bw };
    out[k++] = (ts_crop_box){ h / 2, w / 2, h - h / 2, w - w / 2 }; /* to the far corner */
    for (int i = 0; i < n; i++) out[k++] = random_box(r, w, h);
    return k;
}

/* Compare the box decode of buf with the crop of full (the full decode of buf with the same
 * opts), for each box; on a mismatch fail naming the file, box and first differing pixel.
 * jpeg: buf is a JPEG, so the box decode must have decoded the box's rows alone and its
 * columns with a margin of at most 3 iMCUs of 32 columns (out is no taller than the box and at
 * most 96 columns wider), not fallen back to the full decode. */
static void compare_boxes(const uint8_t *buf, size_t n, const char *name,
                          const ts_decode_opts *opts, const ts_image_u8 *full, int jpeg,
                          int nrandom, uint64_t seed) {
    ts_rng r;
    ts_rng_seed(&r, seed);
    ts_crop_box *boxes = malloc(sizeof *boxes * (size_t)(16 + nrandom));
    int nb = boxes_for(boxes, full->w, full->h, nrandom, &r);
    ts_image_u8 im;
    ts_image_u8_init(&im);
    for (int k = 0; k < nb; k++) {
        fixed_pick f = { boxes[k], 0, 0, 0 };
        ts_crop_box where;
        ts_err err;
        if (ts_image_decode_box(&im, buf, n, name, opts, pick_fixed, &f, &where, NULL, &err))
            fail_msg("%s: box decode failed: %s", name, err.msg);
        assert_int_equal(f.calls, 1);
        assert_int_equal(f.w, full->w);
        assert_int_equal(f.h, full->h);
        assert_int_equal(where.w, boxes[k].w);
        assert_int_equal(where.h, boxes[k].h);
        if (jpeg && (im.h != where.h || where.top || im.w > where.w + 96))
            fail_msg("%s: the box (%d x %d) was not decoded alone (%d x %d decoded)", name,
                     where.w, where.h, im.w, im.h);
        assert_true(where.left >= 0 && where.top >= 0 && where.left + where.w <= im.w &&
                    where.top + where.h <= im.h);
        ts_crop_box b = boxes[k];
        for (int y = 0; y < b.h; y++) {
            const uint8_t *got = im.data + ((size_t)(where.top + y) * im.w + where.left) * 3;
            const uint8_t *want = full->data + ((size_t)(b.top + y) * full->w + b.left) * 3;
            if (memcmp(got, want, (size_t)b.w * 3) == 0) continue;
            int x = 0;
            while (memcmp(got + 3 * x, want + 3 * x, 3) == 0) x++;
            fail_msg("%s: box (top %d, left %d, %d x %d) of %d x %d: pixel (%d, %d) is "
                     "%d,%d,%d, the full decode has %d,%d,%d",
                     name, b.top, b.left, b.w, b.h, full->w, full->h, b.left + x, b.top + y,
                     got[3 * x], got[3 * x + 1], got[3 * x + 2], want[3 * x], want[3 * x + 1],
                     want[3 * x + 2]);
        }
    }
    free(boxes);
    ts_image_u8_free(&im);
}

/* Full decode of buf, then compare_boxes. */
static void check_file(const uint8_t *buf, size_t n, const char *name,
                       const ts_decode_opts *opts, int nrandom, uint64_t seed) {
    ts_image_u8 full;
    ts_image_u8_init(&full);
    ts_err err;
    if (ts_image_decode(&full, buf, n, name, opts, NULL, &err)) fail_msg("%s", err.msg);
    compare_boxes(buf, n, name, opts, &full, 1, nrandom, seed);
    ts_image_u8_free(&full);
}

/* Both decodes of a damaged file must agree: both succeed with the same pixels in the box,
 * or both fail with the same status and message and an empty image. Returns 1 when they
 * failed. */
static int same_outcome(const uint8_t *buf, size_t n, const char *name, ts_crop_box box) {
    ts_image_u8 full, im;
    ts_image_u8_init(&full);
    ts_image_u8_init(&im);
    ts_err e1 = { 0 }, e2 = { 0 };
    ts_status s1 = ts_image_decode(&full, buf, n, name, NULL, NULL, &e1);
    int fits = s1 == TS_OK && box.left + box.w <= full.w && box.top + box.h <= full.h;
    fixed_pick f = { box, 0, 0, 0 };
    if (s1 == TS_OK && !fits) f.box = (ts_crop_box){ 0, 0, full.h, full.w };
    ts_crop_box where;
    ts_status s2 = ts_image_decode_box(&im, buf, n, name, NULL, pick_fixed, &f, &where, NULL, &e2);
    if (s1 != s2)
        fail_msg("%s: full decode %s (%s), box decode %s (%s)", name, ts_status_str(s1), e1.msg,
                 ts_status_str(s2), e2.msg);
    assert_true(f.calls <= 1);
    if (s1 != TS_OK) {
        assert_string_equal(e1.msg, e2.msg);
        assert_non_null(strstr(e2.msg, name));
        assert_int_equal(im.w, 0);
        assert_int_equal(im.h, 0);
    } else {
        assert_int_equal(f.calls, 1);
        for (int y = 0; y < f.box.h; y++)
            assert_memory_equal(
                im.data + ((size_t)(where.top + y) * im.w + where.left) * 3,
                full.data + ((size_t)(f.box.top + y) * full.w + f.box.left) * 3,
                (size_t)f.box.w * 3);
    }
    ts_image_u8_free(&full);
    ts_image_u8_free(&im);
    return s1 != TS_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* Generated JPEGs                                                                          */

/* A w x h picture with gradients, stripes and noise, so that chroma changes from pixel to
 * pixel and any upsampling difference at a window's edge shows. */
static uint8_t *picture(int w, int h, int comps, uint64_t seed) {
    uint8_t *p = malloc((size_t)w * h * comps);
    ts_rng r;
    ts_rng_seed(&r, seed);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < comps; c++) {
                int v = (x * (c + 1) * 7 + y * (3 - c % 3) * 5 + ((x / 5 + y / 3) % 2) * 60) % 256;
                p[((size_t)y * w + x) * comps + c] = (uint8_t)((v + (ts_rng_next(&r) & 31)) & 255);
            }
    return p;
}

typedef struct kind {
    const char *name;
    int samp, flags, cmyk;
} kind;

static const kind KINDS[] = {
    { "4:4:4", TJSAMP_444, 0, 0 },
    { "4:2:2", TJSAMP_422, 0, 0 },
    { "4:2:0", TJSAMP_420, 0, 0 },
    { "4:4:0", TJSAMP_440, 0, 0 },
    { "4:1:1", TJSAMP_411, 0, 0 },
    { "gray", TJSAMP_GRAY, 0, 0 },
    { "4:2:0 progressive", TJSAMP_420, TJFLAG_PROGRESSIVE, 0 },
    { "4:2:2 progressive", TJSAMP_422, TJFLAG_PROGRESSIVE, 0 },
    { "CMYK (YCCK 4:2:0)", TJSAMP_420, 0, 1 },
    { "CMYK (YCCK 4:4:4)", TJSAMP_444, 0, 1 },
};
enum { NKINDS = sizeof KINDS / sizeof KINDS[0] };

/* Sizes around the MCU sizes (8, 16, 32 for 4:1:1) and a few odd ones. */
static const int SIZES[][2] = { { 1, 1 },   { 7, 5 },    { 16, 16 },  { 17, 33 },
                                { 33, 17 }, { 64, 48 },  { 97, 61 },  { 131, 77 },
                                { 200, 150 }, { 257, 190 } };
enum { NSIZES = sizeof SIZES / sizeof SIZES[0] };

static void every_kind_and_size(void **state) {
    (void)state;
    char name[128];
    for (int k = 0; k < NKINDS; k++)
        for (int s = 0; s < NSIZES; s++) {
            int w = SIZES[s][0], h = SIZES[s][1];
            uint8_t *px = picture(w, h, KINDS[k].cmyk ? 4 : 3, 100u + (uint64_t)(k * 31 + s));
            size_t n;
            uint8_t *jpg = fx_jpeg_encode(px, w, h, KINDS[k].cmyk ? TJPF_CMYK : TJPF_RGB,
                                          KINDS[k].samp, 90, KINDS[k].flags, &n);
            snprintf(name, sizeof name, "gen %s %dx%d.jpg", KINDS[k].name, w, h);
            check_file(jpg, n, name, NULL, 40, 7u + (uint64_t)s);
            free(jpg);
            free(px);
        }
    print_message("%d kinds x %d sizes, 56 boxes each: box decode == full decode + crop\n",
                  NKINDS, NSIZES);
}

/* Every EXIF orientation, on a subsampled image whose sides are not MCU multiples, so that
 * the mapping of the box to stored coordinates meets partial MCUs at every edge. */
static void every_orientation(void **state) {
    (void)state;
    const int W = 121, H = 75;
    const int samps[] = { TJSAMP_420, TJSAMP_422, TJSAMP_440 };
    char name[96];
    for (int si = 0; si < 3; si++) {
        uint8_t *px = picture(W, H, 3, 55u + (uint64_t)si);
        size_t n;
        uint8_t *jpg = fx_jpeg_encode(px, W, H, TJPF_RGB, samps[si], 90, 0, &n);
        for (int o = 1; o <= 8; o++) {
            size_t m;
            uint8_t *ex = fx_with_exif(jpg, n, o, 0, &m);
            assert_int_equal(ts_jpeg_orientation(ex, m), o);
            snprintf(name, sizeof name, "gen orientation %d samp %d.jpg", o, samps[si]);
            check_file(ex, m, name, NULL, 60, 1000u + (uint64_t)o);
            ts_decode_opts keep = { .ignore_orientation = 1 };
            check_file(ex, m, name, &keep, 10, 2000u + (uint64_t)o);
            free(ex);
        }
        free(jpg);
        free(px);
    }
}

/* DCT scaling (ts_decode_opts' minimum sizes): the box is drawn on the scaled size and its
 * pixels are those of the scaled full decode. */
static void dct_scaled(void **state) {
    (void)state;
    const int W = 413, H = 290;
    const ts_decode_opts opts[] = { { .min_short = 100 }, { .min_short = 40 },
                                    { .min_w = 200, .min_h = 10 }, { .min_short = 1 } };
    char name[96];
    for (int k = 0; k < 3; k++) {
        const int samp[] = { TJSAMP_420, TJSAMP_444, TJSAMP_422 };
        uint8_t *px = picture(W, H, 3, 77u + (uint64_t)k);
        size_t n;
        uint8_t *jpg = fx_jpeg_encode(px, W, H, TJPF_RGB, samp[k], 90,
                                      k == 2 ? TJFLAG_PROGRESSIVE : 0, &n);
        size_t m;
        uint8_t *ex = fx_with_exif(jpg, n, 6, 0, &m);
        for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++) {
            ts_image_info info;
            ts_image_u8 full;
            ts_image_u8_init(&full);
            ts_err err;
            assert_int_equal(ts_image_decode(&full, ex, m, "scaled.jpg", &opts[i], &info, &err),
                             TS_OK);
            assert_true(info.scale_num < info.scale_den); /* really scaled */
            snprintf(name, sizeof name, "gen scaled %d/%d samp %d.jpg", info.scale_num,
                     info.scale_den, samp[k]);
            compare_boxes(ex, m, name, &opts[i], &full, 1, 40, 300u + i);
            ts_image_u8_free(&full);
        }
        free(ex);
        free(jpg);
        free(px);
    }
}

/* Files cut short and files with damaged bytes in their entropy-coded data: the box decode
 * succeeds exactly when the full decode does, with the same pixels, and otherwise fails with
 * the same status and message, whether the box lies above the damage, around it or below it.
 * Damage that the Huffman decoder only notices at the end of the scan is the case that a
 * decode stopping after the box would miss. */
static void damaged_files(void **state) {
    (void)state;
    const int W = 160, H = 120;
    uint8_t *px = picture(W, H, 3, 9);
    const ts_crop_box boxes[] = { { 0, 0, 8, W },       /* the top rows */
                                  { 0, 0, H / 2, W / 2 }, { H / 3, W / 3, 20, 30 },
                                  { H - 8, 0, 8, W },   /* the bottom rows */
                                  { 0, 0, H, W } };
    const int nboxes = sizeof boxes / sizeof boxes[0];
    int refused = 0, tried = 0;
    for (int prog = 0; prog < 2; prog++) {
        size_t n;
        uint8_t *jpg = fx_jpeg_encode(px, W, H, TJPF_RGB, TJSAMP_420, 90,
                                      prog ? TJFLAG_PROGRESSIVE : 0, &n);
        /* Truncation: from inside the header to the last byte. */
        size_t cuts[] = { 1, 2, 3, 50, 200, n / 4, n / 2, 3 * n / 4, n - 100, n - 2, n - 1 };
        for (size_t c = 0; c < sizeof cuts / sizeof cuts[0]; c++)
            for (int b = 0; b < nboxes; b++) {
                int bad = same_outcome(jpg, cuts[c], "shard-3.tar:cut.jpg", boxes[b]);
                if (!bad) fail_msg("%s file cut at %zu of %zu decoded", prog ? "progressive" :
                                   "baseline", cuts[c], n);
            }
        /* Damage: bytes of the scan data set to other values, at many places. */
        size_t sos = 0;
        for (size_t i = 2; i + 1 < n; i++)
            if (jpg[i] == 0xFF && jpg[i + 1] == 0xDA) sos = i;
        assert_true(sos > 0);
        uint8_t *bad = malloc(n);
        ts_rng r;
        ts_rng_seed(&r, 4242u + (uint64_t)prog);
        for (int t = 0; t < 60; t++) {
            memcpy(bad, jpg, n);
            size_t at = sos + 20 + (size_t)(ts_rng_next(&r) % (uint64_t)(n - sos - 24));
            static const uint8_t vals[] = { 0x00, 0xFF, 0x5A, 0xD9 };
            bad[at] = (uint8_t)(t % 5 == 4 ? bad[at] ^ 0x10 : vals[t % 4]);
            for (int b = 0; b < nboxes; b++) {
                refused += same_outcome(bad, n, "shard-3.tar:damaged.jpg", boxes[b]);
                tried++;
            }
        }
        free(bad);
        free(jpg);
    }
    print_message("damaged files: %d of %d decodes refused by both paths alike\n", refused,
                  tried);
    assert_true(refused > 0); /* the damage was noticed at all */
    free(px);
}

/* PNG and other formats go through the full decode: the box is returned as where. */
static void other_formats(void **state) {
    (void)state;
    ts_image_u8 im;
    ts_image_u8_init(&im);
    ts_err err;
    fixed_pick f = { { 0, 0, 1, 1 }, 0, 0, 0 };
    ts_crop_box where;
    assert_int_equal(ts_image_decode_box(&im, "hello", 5, "a.txt", NULL, pick_fixed, &f, &where,
                                         NULL, &err),
                     TS_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "a.txt"));
    assert_int_equal(ts_image_decode_box(&im, "RIFF\0\0\0\0WEBPVP8 ", 16, "x.webp", NULL,
                                         pick_fixed, &f, &where, NULL, &err),
                     TS_ERR_UNSUPPORTED);
    assert_int_equal(ts_image_load_box(&im, "/nonexistent/x.jpg", NULL, pick_fixed, &f, &where,
                                       NULL, &err),
                     TS_ERR_IO);
    assert_non_null(strstr(err.msg, "/nonexistent/x.jpg"));
    assert_int_equal(f.calls, 0);
    ts_image_u8_free(&im);
}

/* ---------------------------------------------------------------------------------------- */
/* The sample files                                                                         */

/* Every .jpg and .png one folder below the sample folder: box decodes against the full decode
 * (fewer random boxes on the large photos), and the files the full decode refuses are refused
 * by the box decode with the same message. The same through ts_image_load_box. */
static void samples(void **state) {
    (void)state;
    DIR *d = opendir(g_data);
    assert_non_null(d);
    struct dirent *e;
    int files = 0, refused = 0;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char sub[1024];
        snprintf(sub, sizeof sub, "%s/%s", g_data, e->d_name);
        DIR *s = opendir(sub);
        if (!s) continue;
        struct dirent *f;
        while ((f = readdir(s))) {
            if (!fx_is_image_name(f->d_name)) continue;
            char path[2048];
            snprintf(path, sizeof path, "%s/%s", sub, f->d_name);
            size_t n = 0;
            uint8_t *buf = fx_read_all(path, &n);
            assert_non_null(buf);
            ts_image_u8 full, im;
            ts_image_u8_init(&full);
            ts_image_u8_init(&im);
            ts_err e1 = { 0 }, e2 = { 0 };
            ts_image_info info;
            ts_status st = ts_image_load(&full, path, NULL, &info, &e1);
            fixed_pick p = { { 0, 0, 1, 1 }, 0, 0, 0 };
            ts_crop_box where;
            if (st) {
                assert_int_equal(ts_image_load_box(&im, path, NULL, pick_fixed, &p, &where,
                                                   NULL, &e2),
                                 st);
                assert_string_equal(e1.msg, e2.msg);
                assert_int_equal(im.w, 0);
                print_message("%-40s refused alike: %s\n", f->d_name, e2.msg);
                refused++;
            } else {
                int64_t px = (int64_t)full.w * full.h;
                int nrandom = px > 4000000 ? 4 : px > 500000 ? 12 : 40;
                int jpeg = info.format == TS_IMG_JPEG;
                compare_boxes(buf, n, path, NULL, &full, jpeg, nrandom, (uint64_t)n);
                ts_decode_opts scaled = { .min_short = 64 };
                ts_image_u8 sfull;
                ts_image_u8_init(&sfull);
                assert_int_equal(ts_image_decode(&sfull, buf, n, path, &scaled, NULL, &e1), TS_OK);
                compare_boxes(buf, n, path, &scaled, &sfull, jpeg, 4, (uint64_t)n + 1);
                ts_image_u8_free(&sfull);
                /* And through the file path. */
                p.box = (ts_crop_box){ full.h / 4, full.w / 4, full.h / 2 > 0 ? full.h / 2 : 1,
                                       full.w / 2 > 0 ? full.w / 2 : 1 };
                if (ts_image_load_box(&im, path, NULL, pick_fixed, &p, &where, NULL, &e2))
                    fail_msg("%s", e2.msg);
                for (int y = 0; y < p.box.h; y++)
                    assert_memory_equal(
                        im.data + ((size_t)(where.top + y) * im.w + where.left) * 3,
                        full.data + ((size_t)(p.box.top + y) * full.w + p.box.left) * 3,
                        (size_t)p.box.w * 3);
                print_message("%-40s %5d x %-5d %s orient %d: %d boxes identical\n", f->d_name,
                              full.w, full.h, info.format == TS_IMG_JPEG ? "JPEG" : "PNG ",
                              info.orientation, 16 + nrandom + 20);
            }
            files++;
            ts_image_u8_free(&full);
            ts_image_u8_free(&im);
            free(buf);
        }
        closedir(s);
    }
    closedir(d);
    print_message("%d sample files, %d refused by both decodes\n", files, refused);
    assert_true(files > 10);
    assert_true(refused >= 2); /* pillow/truncated_jpeg.jpg and skimage/truncated.jpg */
}

int main(int argc, char **argv) {
    if (argc > 1) {
        g_data = argv[1];
        const struct CMUnitTest tests[] = { cmocka_unit_test(samples) };
        return cmocka_run_group_tests_name("unit_image_box_samples", tests, NULL, NULL);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_kind_and_size), cmocka_unit_test(every_orientation),
        cmocka_unit_test(dct_scaled),          cmocka_unit_test(damaged_files),
        cmocka_unit_test(other_formats),
    };
    return cmocka_run_group_tests_name("unit_image_box", tests, NULL, NULL);
}
