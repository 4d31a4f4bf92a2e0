/* unit_image.c: the JPEG and PNG decoders and the image transforms of loaders/.
 *
 * Without arguments the test needs no data: it makes its own files with the encoders of the
 * same libraries (libspng writes a PNG of every colour type and bit depth, with and without
 * tRNS; TurboJPEG writes baseline, progressive, grayscale and CMYK JPEGs), cuts them short at
 * several points, inserts EXIF orientation segments, and checks the transforms' own rules
 * (identity sizes, half-to-even crop offsets, RandomResizedCrop's fallback). When PIL and
 * torchvision import (tests/images/reference.py check), the transforms are also compared
 * with torchvision on a generated image.
 *
 * With a folder argument (ctest's unit_image_samples, registered when ../shared/data exists)
 * it decodes every sample image there and compares it with PIL, and runs the torchvision
 * comparison on real photos. What it is not: a speed test (bench/ times the loaders).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <spng.h>
#include <turbojpeg.h>

#include "loaders.h"
#include "tessera.h"
#include "fixtures_image.h"

static const char *g_data; /* the sample folder, NULL when run without one */
static char g_tmp[512]; /* scratch folder under the build tree */

/* ---------------------------------------------------------------------------------------- */
/* Helpers                                                                                  */

typedef struct diff {
    int max;
    double mean;
} diff;

static diff image_diff(const ts_image_u8 *a, const uint8_t *b) {
    diff d = { 0, 0.0 };
    size_t n = (size_t)a->w * a->h * 3;
    double sum = 0.0;
    for (size_t i = 0; i < n; i++) {
        int e = abs((int)a->data[i] - (int)b[i]);
        if (e > d.max) d.max = e;
        sum += e;
    }
    d.mean = n ? sum / (double)n : 0.0;
    return d;
}

static const char *python(void) {
    const char *p = getenv("TS_PYTHON");
    return p && *p ? p : "/usr/bin/python3";
}

/* Run tests/images/reference.py with the given arguments; 0 on success. */
static int reference(const char *args) {
    size_t n = strlen(args) + 1024;
    char *cmd = malloc(n);
    snprintf(cmd, n, "%s %s/tests/images/reference.py %s", python(), TS_SOURCE_DIR, args);
    int rc = system(cmd);
    free(cmd);
    return rc;
}

static int have_reference(void) {
    static int known = -1;
    if (known < 0) known = reference("check >/dev/null 2>&1") == 0;
    return known;
}

static void write_raw(const char *path, const ts_image_u8 *im) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    int32_t wh[2] = { im->w, im->h };
    fwrite(wh, 4, 2, f);
    fwrite(im->data, 1, (size_t)im->w * im->h * 3, f);
    fclose(f);
}

/* One record of a reference output file: w, h, then the bytes (elem bytes per value). */
static uint8_t *next_record(const uint8_t *buf, size_t n, size_t *pos, int *w, int *h,
                            size_t elem) {
    int32_t wh[2];
    assert_true(*pos + 8 <= n);
    memcpy(wh, buf + *pos, 8);
    *pos += 8;
    *w = wh[0], *h = wh[1];
    if (wh[0] < 0) return NULL;
    size_t bytes = (size_t)wh[0] * wh[1] * 3 * elem;
    assert_true(*pos + bytes <= n);
    uint8_t *p = (uint8_t *)buf + *pos;
    *pos += bytes;
    return p;
}

/* A smooth test picture with some texture, w x h. */
static void make_picture(ts_image_u8 *im, int w, int h, uint64_t seed) {
    assert_int_equal(ts_image_u8_reserve(im, w, h, NULL), TS_OK);
    ts_rng r;
    ts_rng_seed(&r, seed);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            uint8_t *p = im->data + ((size_t)y * w + x) * 3;
            p[0] = (uint8_t)(x * 255 / (w - 1));
            p[1] = (uint8_t)(y * 255 / (h - 1));
            p[2] = (uint8_t)(128 + 100 * sin(x * 0.11 + y * 0.07));
            if (seed & 1) /* noise: the hardest input for a resampling filter */
                for (int c = 0; c < 3; c++) p[c] = (uint8_t)(p[c] / 2 + (ts_rng_next(&r) & 127));
        }
}

/* ---------------------------------------------------------------------------------------- */
/* PNG: every colour type and bit depth, written by libspng                                  */

static int scale_to_8(int v, int depth) {
    if (depth == 16) return v >> 8;
    return v * 255 / ((1 << depth) - 1);
}

static void png_case(int color, int depth, int with_trns) {
    const int W = 13, H = 7; /* an odd width exercises the packing of 1, 2 and 4-bit rows */
    int ch = color == 0 || color == 3 ? 1 : color == 4 ? 2 : color == 2 ? 3 : 4;
    int maxv = (1 << depth) - 1, npal = color == 3 ? (1 << depth) : 0;
    ts_rng r;
    ts_rng_seed(&r, (uint64_t)(color * 100 + depth * 2 + with_trns));
    int *s = malloc(sizeof(int) * W * H * ch); /* the samples, before packing */
    for (int i = 0; i < W * H * ch; i++) {
        /* Few distinct values, so that tRNS colour keys match some pixels. */
        int v = (int)(ts_rng_next(&r) % 5);
        s[i] = color == 3 ? v % npal : v * maxv / 4;
    }
    struct spng_plte plte = { 0 };
    struct spng_trns trns = { 0 };
    if (color == 3) {
        plte.n_entries = (uint32_t)npal;
        for (int i = 0; i < npal; i++) {
            plte.entries[i].red = (uint8_t)(37 * i + 11);
            plte.entries[i].green = (uint8_t)(91 * i + 5);
            plte.entries[i].blue = (uint8_t)(255 - 13 * i);
        }
        trns.n_type3_entries = (uint32_t)(npal < 3 ? npal : 3);
        for (uint32_t i = 0; i < trns.n_type3_entries; i++)
            trns.type3_alpha[i] = (uint8_t)(i * 100);
    } else if (color == 0) {
        trns.gray = (uint16_t)s[0];
    } else if (color == 2) {
        trns.red = (uint16_t)s[0], trns.green = (uint16_t)s[1], trns.blue = (uint16_t)s[2];
    }
    /* Pack into PNG rows (MSB first below 8 bits, host-endian 16-bit for SPNG_FMT_PNG). */
    size_t bpr = ((size_t)W * ch * depth + 7) / 8;
    uint8_t *raw = calloc(bpr * H, 1);
    for (int y = 0; y < H; y++)
        for (int i = 0; i < W * ch; i++) {
            int v = s[y * W * ch + i];
            uint8_t *row = raw + (size_t)y * bpr;
            if (depth == 16) {
                uint16_t u = (uint16_t)v;
                memcpy(row + 2 * i, &u, 2);
            } else if (depth == 8) {
                row[i] = (uint8_t)v;
            } else {
                int bit = i * depth;
                row[bit / 8] |= (uint8_t)(v << (8 - depth - bit % 8));
            }
        }
    spng_ctx *enc = spng_ctx_new(SPNG_CTX_ENCODER);
    spng_set_option(enc, SPNG_ENCODE_TO_BUFFER, 1);
    struct spng_ihdr ihdr = { W, H, (uint8_t)depth, (uint8_t)color, 0, 0, 0 };
    assert_int_equal(spng_set_ihdr(enc, &ihdr), 0);
    if (color == 3) assert_int_equal(spng_set_plte(enc, &plte), 0);
    if (with_trns) assert_int_equal(spng_set_trns(enc, &trns), 0);
    assert_int_equal(spng_encode_image(enc, raw, bpr * H, SPNG_FMT_PNG, SPNG_ENCODE_FINALIZE), 0);
    size_t png_n = 0;
    int e = 0;
    uint8_t *png = spng_get_png_buffer(enc, &png_n, &e);
    assert_non_null(png);
    spng_ctx_free(enc);

    /* What the decoder must give: samples scaled to 8 bits, palette looked up, alpha from the
     * alpha channel or from tRNS, then composited on white or dropped. */
    uint8_t *want_white = malloc((size_t)W * H * 3), *want_drop = malloc((size_t)W * H * 3);
    for (int p = 0; p < W * H; p++) {
        const int *q = s + p * ch;
        int rgb[3], a = 255;
        if (color == 3) {
            rgb[0] = plte.entries[q[0]].red, rgb[1] = plte.entries[q[0]].green,
            rgb[2] = plte.entries[q[0]].blue;
            if (with_trns && (uint32_t)q[0] < trns.n_type3_entries) a = trns.type3_alpha[q[0]];
        } else if (color == 0 || color == 4) {
            rgb[0] = rgb[1] = rgb[2] = scale_to_8(q[0], depth);
            if (color == 4) a = scale_to_8(q[1], depth);
            if (color == 0 && with_trns && q[0] == trns.gray) a = 0;
        } else {
            for (int c = 0; c < 3; c++) rgb[c] = scale_to_8(q[c], depth);
            if (color == 6) a = scale_to_8(q[3], depth);
            if (color == 2 && with_trns && q[0] == trns.red && q[1] == trns.green &&
                q[2] == trns.blue)
                a = 0;
        }
        for (int c = 0; c < 3; c++) {
            want_drop[3 * p + c] = (uint8_t)rgb[c];
            want_white[3 * p + c] = (uint8_t)((rgb[c] * a + 255 * (255 - a) + 127) / 255);
        }
    }
    ts_image_u8 im;
    ts_image_u8_init(&im);
    ts_err err = { 0 };
    ts_decode_opts o = { 0 };
    ts_image_info info;
    for (int mode = 0; mode < 2; mode++) {
        o.alpha = mode ? TS_ALPHA_DROP : TS_ALPHA_WHITE;
        ts_status st = ts_image_decode(&im, png, png_n, "gen.png", &o, &info, &err);
        if (st) fail_msg("color %d depth %d trns %d: %s", color, depth, with_trns, err.msg);
        assert_int_equal(im.w, W);
        assert_int_equal(im.h, H);
        assert_int_equal(info.format, TS_IMG_PNG);
        diff d = image_diff(&im, mode ? want_drop : want_white);
        if (d.max)
            fail_msg("color %d depth %d trns %d alpha %s: max diff %d", color, depth, with_trns,
                     mode ? "drop" : "white", d.max);
    }
    /* Cut short at several points, and with a damaged byte in the image data: errors that
     * name the sample, never a partial image. */
    size_t cuts[] = { 0, 7, 20, 40, png_n / 2, png_n - 13, png_n - 1 };
    for (size_t k = 0; k < sizeof cuts / sizeof cuts[0]; k++) {
        err.msg[0] = 0;
        ts_status st = ts_image_decode(&im, png, cuts[k], "gen-cut.png", &o, NULL, &err);
        if (st == TS_OK)
            fail_msg("color %d depth %d: PNG cut at %zu of %zu decoded", color, depth, cuts[k],
                     png_n);
        assert_non_null(strstr(err.msg, "gen-cut.png"));
        assert_int_equal(im.w, 0);
    }
    png[png_n - 20] ^= 0x55; /* inside the IDAT payload or its CRC */
    assert_int_not_equal(ts_image_decode(&im, png, png_n, "gen-bad.png", &o, NULL, &err), TS_OK);
    assert_non_null(strstr(err.msg, "gen-bad.png"));
    ts_image_u8_free(&im);
    free(want_white);
    free(want_drop);
    free(png);
    free(raw);
    free(s);
}

static void png_every_kind(void **state) {
    (void)state;
    static const int kinds[][2] = { { 0, 1 }, { 0, 2 },  { 0, 4 },  { 0, 8 }, { 0, 16 },
                                    { 2, 8 }, { 2, 16 }, { 3, 1 },  { 3, 2 }, { 3, 4 },
                                    { 3, 8 }, { 4, 8 },  { 4, 16 }, { 6, 8 }, { 6, 16 } };
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        int color = kinds[i][0], depth = kinds[i][1];
        png_case(color, depth, 0);
        if (color == 0 || color == 2 || color == 3) png_case(color, depth, 1);
    }
}

/* ---------------------------------------------------------------------------------------- */
/* JPEG: written by TurboJPEG                                                                */

/* The pixels every generated JPEG is compared with, and the tolerance of a lossy round trip
 * at quality 95: the mean error of these smooth pictures stays well under 2 levels. */
static void check_close(const ts_image_u8 *im, const uint8_t *want, const char *what) {
    diff d = image_diff(im, want);
    print_message("%-28s %4d x %-4d mean |diff| %.3f, max %d\n", what, im->w, im->h, d.mean, d.max);
    if (d.mean > 2.0 || d.max > 48) fail_msg("%s: mean diff %.3f max %d", what, d.mean, d.max);
}

static void jpeg_kinds(void **state) {
    (void)state;
    const int W = 97, H = 61;
    ts_image_u8 src, im;
    ts_image_u8_init(&src);
    ts_image_u8_init(&im);
    make_picture(&src, W, H, 2);
    ts_err err = { 0 };
    ts_image_info info;
    struct {
        const char *name;
        int samp, flags;
    } kinds[] = { { "baseline 4:4:4", TJSAMP_444, 0 },
                  { "baseline 4:2:0", TJSAMP_420, 0 },
                  { "baseline 4:2:2", TJSAMP_422, 0 },
                  { "progressive 4:2:0", TJSAMP_420, TJFLAG_PROGRESSIVE } };
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        size_t n;
        uint8_t *jpg = fx_jpeg_encode(src.data, W, H, TJPF_RGB, kinds[k].samp, 95, kinds[k].flags,
                                      &n);
        if (ts_image_decode(&im, jpg, n, "gen.jpg", NULL, &info, &err)) fail_msg("%s", err.msg);
        assert_int_equal(info.format, TS_IMG_JPEG);
        assert_int_equal(info.orientation, 1);
        check_close(&im, src.data, kinds[k].name);
        free(jpg);
    }
    /* Grayscale: the decoder replicates the luma into R, G and B. */
    uint8_t *luma = malloc((size_t)W * H * 3);
    for (int i = 0; i < W * H; i++) {
        const uint8_t *p = src.data + 3 * i;
        double y = 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2];
        luma[3 * i] = luma[3 * i + 1] = luma[3 * i + 2] = (uint8_t)lround(y);
    }
    size_t n;
    uint8_t *jpg = fx_jpeg_encode(src.data, W, H, TJPF_RGB, TJSAMP_GRAY, 95, 0, &n);
    if (ts_image_decode(&im, jpg, n, "gray.jpg", NULL, NULL, &err)) fail_msg("%s", err.msg);
    check_close(&im, luma, "grayscale");
    free(jpg);
    /* CMYK: libjpeg writes YCCK with an Adobe marker, so the decoder reads the inks as
     * inverted (PIL's convention): ink 255 - v, and RGB = (255 - k') * (1 - c'/255). */
    uint8_t *cmyk = malloc((size_t)W * H * 4), *want = malloc((size_t)W * H * 3);
    for (int i = 0; i < W * H; i++) {
        const uint8_t *p = src.data + 3 * i;
        uint8_t k = (uint8_t)(i % W < W / 2 ? 0 : 60);
        cmyk[4 * i] = p[0], cmyk[4 * i + 1] = p[1], cmyk[4 * i + 2] = p[2],
                 cmyk[4 * i + 3] = (uint8_t)(255 - k);
        for (int c = 0; c < 3; c++) {
            double ink = 255 - p[c], nk = 255 - k;
            want[3 * i + c] = (uint8_t)lround(nk - ink * nk / 255.0);
        }
    }
    jpg = fx_jpeg_encode(cmyk, W, H, TJPF_CMYK, TJSAMP_444, 95, 0, &n);
    if (ts_image_decode(&im, jpg, n, "cmyk.jpg", NULL, NULL, &err)) fail_msg("%s", err.msg);
    check_close(&im, want, "CMYK (YCCK, Adobe)");
    free(jpg);
    free(cmyk);
    free(want);
    free(luma);
    ts_image_u8_free(&src);
    ts_image_u8_free(&im);
}

/* A JPEG cut anywhere, or damaged, is an error naming the sample; never a partial image. */
static void jpeg_truncated(void **state) {
    (void)state;
    const int W = 160, H = 120;
    ts_image_u8 src, im;
    ts_image_u8_init(&src);
    ts_image_u8_init(&im);
    make_picture(&src, W, H, 3);
    ts_err err;
    for (int prog = 0; prog < 2; prog++) {
        size_t n;
        uint8_t *jpg = fx_jpeg_encode(src.data, W, H, TJPF_RGB, TJSAMP_420, 95,
                                      prog ? TJFLAG_PROGRESSIVE : 0, &n);
        size_t cuts[] = { 1, 2, 3, 50, 200, n / 4, n / 2, 3 * n / 4, n - 100, n - 2 };
        for (size_t k = 0; k < sizeof cuts / sizeof cuts[0]; k++) {
            err.msg[0] = 0;
            ts_status st =
                ts_image_decode(&im, jpg, cuts[k], "shard-7.tar:cut.jpg", NULL, NULL, &err);
            if (st == TS_OK)
                fail_msg("%s JPEG cut at %zu of %zu decoded", prog ? "progressive" : "baseline",
                         cuts[k], n);
            assert_int_equal(st, TS_ERR_FORMAT);
            assert_non_null(strstr(err.msg, "shard-7.tar:cut.jpg"));
            if (cuts[k] >= 3 && !strstr(err.msg, "truncated")) /* still a JPEG to the sniffer */
                fail_msg("cut at %zu: %s", cuts[k], err.msg);
            assert_int_equal(im.w, 0);
            if (k == 6) print_message("cut at %zu: %s\n", cuts[k], err.msg);
        }
        free(jpg);
    }
    /* Not an image at all, and an empty buffer. */
    assert_int_equal(ts_image_decode(&im, "hello", 5, "a.txt", NULL, NULL, &err), TS_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "a.txt"));
    assert_int_equal(ts_image_decode(&im, "", 0, "empty.jpg", NULL, NULL, &err), TS_ERR_FORMAT);
    assert_int_equal(ts_image_decode(&im, "RIFF\0\0\0\0WEBPVP8 ", 16, "x.webp", NULL, NULL, &err),
                     TS_ERR_UNSUPPORTED);
    assert_int_equal(ts_image_load(&im, "/nonexistent/x.jpg", NULL, NULL, &err), TS_ERR_IO);
    assert_non_null(strstr(err.msg, "/nonexistent/x.jpg"));
    ts_image_u8_free(&src);
    ts_image_u8_free(&im);
}

/* The 8 orientations, written independently of the decoder: transpose for 5..8, then mirror
 * left-right for 2, 3, 6, 7 and top-bottom for 3, 4, 7, 8. */
static void expected_orientation(const ts_image_u8 *in, int o, ts_image_u8 *out) {
    int t = o >= 5, ow = t ? in->h : in->w, oh = t ? in->w : in->h;
    int lr = o == 2 || o == 3 || o == 6 || o == 7, tb = o == 3 || o == 4 || o == 7 || o == 8;
    ts_image_u8_reserve(out, ow, oh, NULL);
    for (int y = 0; y < oh; y++)
        for (int x = 0; x < ow; x++) {
            int xx = lr ? ow - 1 - x : x, yy = tb ? oh - 1 - y : y;
            int sx = t ? yy : xx, sy = t ? xx : yy;
            memcpy(out->data + ((size_t)y * ow + x) * 3, in->data + ((size_t)sy * in->w + sx) * 3,
                   3);
        }
}

static void jpeg_exif_orientation(void **state) {
    (void)state;
    const int W = 40, H = 24; /* not square: 5..8 swap the sides */
    ts_image_u8 src, plain, im, want;
    ts_image_u8_init(&src), ts_image_u8_init(&plain), ts_image_u8_init(&im),
        ts_image_u8_init(&want);
    make_picture(&src, W, H, 4);
    size_t n;
    uint8_t *jpg = fx_jpeg_encode(src.data, W, H, TJPF_RGB, TJSAMP_444, 95, 0, &n);
    ts_err err;
    assert_int_equal(ts_image_decode(&plain, jpg, n, "plain.jpg", NULL, NULL, &err), TS_OK);
    for (int o = 1; o <= 8; o++)
        for (int be = 0; be < 2; be++) {
            size_t m;
            uint8_t *ex = fx_with_exif(jpg, n, o, be, &m);
            assert_int_equal(ts_jpeg_orientation(ex, m), o);
            ts_image_info info;
            if (ts_image_decode(&im, ex, m, "exif.jpg", NULL, &info, &err)) fail_msg("%s", err.msg);
            assert_int_equal(info.orientation, o);
            expected_orientation(&plain, o, &want);
            assert_int_equal(im.w, want.w);
            assert_int_equal(im.h, want.h);
            assert_int_equal(image_diff(&im, want.data).max, 0);
            ts_decode_opts keep = { .ignore_orientation = 1 };
            assert_int_equal(ts_image_decode(&im, ex, m, "exif.jpg", &keep, NULL, &err), TS_OK);
            assert_int_equal(image_diff(&im, plain.data).max, 0);
            free(ex);
        }
    free(jpg);
    ts_image_u8_free(&src), ts_image_u8_free(&plain), ts_image_u8_free(&im),
        ts_image_u8_free(&want);
}

/* DCT scaling: the smallest of 1/8 .. 8/8 that keeps the asked-for size, after orientation. */
static void jpeg_dct_scaling(void **state) {
    (void)state;
    const int W = 1000, H = 600;
    ts_image_u8 src, im;
    ts_image_u8_init(&src), ts_image_u8_init(&im);
    make_picture(&src, W, H, 6);
    size_t n;
    uint8_t *jpg = fx_jpeg_encode(src.data, W, H, TJPF_RGB, TJSAMP_420, 95, 0, &n);
    ts_err err;
    ts_image_info info;
    struct {
        ts_decode_opts o;
        int exif, w, h, num;
    } cases[] = {
        { { .min_short = 224 }, 1, 375, 225, 3 }, /* 600 * 3/8 = 225 >= 224 */
        { { .min_short = 75 }, 1, 125, 75, 1 }, /* exactly 1/8 */
        { { .min_short = 76 }, 1, 250, 150, 2 },
        { { .min_w = 300, .min_h = 10 }, 6, 300, 500, 4 }, /* rotated: width is the stored height */
        { { .min_short = 5000 }, 1, 1000, 600, 8 }, /* never upscaled */
        { { 0 }, 1, 1000, 600, 8 },
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        size_t m;
        uint8_t *buf = fx_with_exif(jpg, n, cases[k].exif, 0, &m);
        if (ts_image_decode(&im, buf, m, "big.jpg", &cases[k].o, &info, &err))
            fail_msg("%s", err.msg);
        assert_int_equal(im.w, cases[k].w);
        assert_int_equal(im.h, cases[k].h);
        assert_int_equal(info.scale_num * 8 / info.scale_den, cases[k].num);
        assert_int_equal(info.stored_w, W);
        free(buf);
    }
    free(jpg);
    ts_image_u8_free(&src), ts_image_u8_free(&im);
}

/* Junk bytes between header segments are skipped (as PIL does), not an error. */
static void jpeg_junk_between_markers(void **state) {
    (void)state;
    ts_image_u8 src, a, b;
    ts_image_u8_init(&src), ts_image_u8_init(&a), ts_image_u8_init(&b);
    make_picture(&src, 32, 16, 8);
    size_t n;
    uint8_t *jpg = fx_jpeg_encode(src.data, 32, 16, TJPF_RGB, TJSAMP_444, 95, 0, &n);
    /* After SOI and the 18-byte JFIF APP0 comes the first DQT: put 5 junk bytes there. */
    uint8_t *junk = malloc(n + 5);
    memcpy(junk, jpg, 20);
    memcpy(junk + 20, "\x01\x02\x03\x04\x05", 5);
    memcpy(junk + 25, jpg + 20, n - 20);
    ts_err err;
    assert_int_equal(ts_image_decode(&a, jpg, n, "a.jpg", NULL, NULL, &err), TS_OK);
    if (ts_image_decode(&b, junk, n + 5, "junk.jpg", NULL, NULL, &err)) fail_msg("%s", err.msg);
    assert_int_equal(image_diff(&a, b.data).max, 0);
    free(junk);
    free(jpg);
    ts_image_u8_free(&src), ts_image_u8_free(&a), ts_image_u8_free(&b);
}

/* An eXIf chunk in a PNG turns it too. */
static void png_exif_orientation(void **state) {
    (void)state;
    const int W = 5, H = 3;
    uint8_t px[W * H * 3];
    for (int i = 0; i < W * H * 3; i++) px[i] = (uint8_t)(i * 5);
    spng_ctx *enc = spng_ctx_new(SPNG_CTX_ENCODER);
    spng_set_option(enc, SPNG_ENCODE_TO_BUFFER, 1);
    struct spng_ihdr ihdr = { W, H, 8, SPNG_COLOR_TYPE_TRUECOLOR, 0, 0, 0 };
    spng_set_ihdr(enc, &ihdr);
    uint8_t tiff[] = { 'M', 'M', 0, 42, 0, 0, 0, 8, 0, 1, 0x01, 0x12, 0,
                       3,   0,   0, 0,  1, 0, 6, 0, 0, 0, 0,    0,    0 };
    struct spng_exif exif = { sizeof tiff, (char *)tiff };
    assert_int_equal(spng_set_exif(enc, &exif), 0);
    assert_int_equal(spng_encode_image(enc, px, sizeof px, SPNG_FMT_PNG, SPNG_ENCODE_FINALIZE), 0);
    size_t n;
    int e;
    uint8_t *png = spng_get_png_buffer(enc, &n, &e);
    spng_ctx_free(enc);
    ts_image_u8 im, plain, want;
    ts_image_u8_init(&im), ts_image_u8_init(&plain), ts_image_u8_init(&want);
    ts_err err;
    ts_image_info info;
    if (ts_image_decode(&im, png, n, "exif.png", NULL, &info, &err)) fail_msg("%s", err.msg);
    assert_int_equal(info.orientation, 6);
    assert_int_equal(ts_image_u8_reserve(&plain, W, H, NULL), TS_OK);
    memcpy(plain.data, px, sizeof px);
    expected_orientation(&plain, 6, &want);
    assert_int_equal(im.w, H);
    assert_int_equal(image_diff(&im, want.data).max, 0);
    free(png);
    ts_image_u8_free(&im), ts_image_u8_free(&plain), ts_image_u8_free(&want);
}

/* ---------------------------------------------------------------------------------------- */
/* Transforms: their own rules                                                               */

/* Regression from fuzz_jpeg: a bare start-of-image marker made the header reader report a
 * garbage size, whose scaled size then overflowed. It must be a named error. */
static void jpeg_bare_marker(void **state) {
    (void)state;
    static const uint8_t soi[3] = { 0xFF, 0xD8, 0xFF };
    ts_decode_opts opts[3] = { { 0 }, { .min_short = 32, .ignore_orientation = 1 }, { .min_w = 1 } };
    for (int k = 0; k < 3; k++) {
        ts_image_u8 im;
        ts_image_u8_init(&im);
        ts_err err = { 0 };
        ts_image_info info;
        assert_int_not_equal(ts_image_decode(&im, soi, sizeof soi, "bare.jpg", &opts[k], &info,
                                             &err), TS_OK);
        assert_non_null(strstr(err.msg, "bare.jpg"));
        ts_image_u8_free(&im);
    }
}

/* The resize's passes are separable, so a one-dimensional resize of an image is the same,
 * bit for bit, as that resize of each of its rows (or columns) alone: the whole image goes
 * through the passes' vector paths (rows in groups, sixteen values at a time) and a single
 * row or column through their remainders. Sizes are odd so that the groups do not come out
 * even; both shrinking and enlarging. */
static void resize_rows_alone(void **state) {
    (void)state;
    ts_image_u8 src, all, one, line;
    ts_image_u8_init(&src), ts_image_u8_init(&all), ts_image_u8_init(&one);
    ts_image_u8_init(&line);
    ts_err err;
    const int W = 37, H = 13;
    make_picture(&src, W, H, 5);
    int widths[] = { 23, 5, 61 };
    for (int interp = 0; interp < 2; interp++)
        for (int k = 0; k < 3; k++) {
            int w = widths[k];
            /* Horizontal only: row y of the result is row y resized alone. */
            assert_int_equal(ts_image_resize(&all, &src, w, H, (ts_interp)interp, &err), TS_OK);
            ts_image_u8_reserve(&line, W, 1, NULL);
            for (int y = 0; y < H; y++) {
                memcpy(line.data, src.data + (size_t)y * W * 3, (size_t)W * 3);
                assert_int_equal(ts_image_resize(&one, &line, w, 1, (ts_interp)interp, &err),
                                 TS_OK);
                assert_memory_equal(one.data, all.data + (size_t)y * w * 3, (size_t)w * 3);
            }
            /* Vertical only: column x of the result is column x resized alone. */
            int h = widths[k];
            assert_int_equal(ts_image_resize(&all, &src, W, h, (ts_interp)interp, &err), TS_OK);
            ts_image_u8_reserve(&line, 1, H, NULL);
            for (int x = 0; x < W; x++) {
                for (int y = 0; y < H; y++)
                    memcpy(line.data + y * 3, src.data + ((size_t)y * W + x) * 3, 3);
                assert_int_equal(ts_image_resize(&one, &line, 1, h, (ts_interp)interp, &err),
                                 TS_OK);
                for (int y = 0; y < h; y++)
                    assert_memory_equal(one.data + y * 3, all.data + ((size_t)y * W + x) * 3, 3);
            }
        }
    ts_image_u8_free(&src), ts_image_u8_free(&all), ts_image_u8_free(&one);
    ts_image_u8_free(&line);
}

static void transform_rules(void **state) {
    (void)state;
    ts_image_u8 src, a, b;
    ts_image_u8_init(&src), ts_image_u8_init(&a), ts_image_u8_init(&b);
    ts_err err;
    make_picture(&src, 31, 17, 9);
    /* The same size is the identity; a constant image stays constant at any size. */
    for (int interp = 0; interp < 2; interp++) {
        assert_int_equal(ts_image_resize(&a, &src, 31, 17, (ts_interp)interp, &err), TS_OK);
        assert_int_equal(image_diff(&a, src.data).max, 0);
    }
    ts_image_u8 flat;
    ts_image_u8_init(&flat);
    ts_image_u8_reserve(&flat, 23, 19, NULL);
    memset(flat.data, 200, 23 * 19 * 3);
    int sizes[][2] = { { 7, 5 }, { 1, 1 }, { 50, 3 }, { 64, 64 } };
    for (int k = 0; k < 4; k++)
        for (int interp = 0; interp < 2; interp++) {
            assert_int_equal(
                ts_image_resize(&a, &flat, sizes[k][0], sizes[k][1], (ts_interp)interp, &err),
                TS_OK);
            for (int i = 0; i < a.w * a.h * 3; i++) assert_int_equal(a.data[i], 200);
        }
    /* Resize(size): the shorter side becomes size, the longer int(size * long / short). */
    int w, h;
    ts_resize_short_size(500, 375, 224, &w, &h);
    assert_int_equal(w, 298), assert_int_equal(h, 224);
    ts_resize_short_size(123, 456, 224, &w, &h);
    assert_int_equal(w, 224), assert_int_equal(h, 830);
    /* Center crop offsets round half to even: (31 - 4) / 2 = 13.5 -> 14,
     * (17 - 4) / 2 = 6.5 -> 6. */
    assert_int_equal(ts_image_center_crop(&a, &src, 4, 4, &err), TS_OK);
    assert_int_equal(ts_image_crop(&b, &src, 6, 14, 4, 4, &err), TS_OK);
    assert_int_equal(image_diff(&a, b.data).max, 0);
    /* A crop larger than the image pads with zeros: 31 wide in 36 starts at -(5 // 2) = -2. */
    assert_int_equal(ts_image_center_crop(&a, &src, 17, 36, &err), TS_OK);
    assert_int_equal(a.data[0], 0);
    assert_int_equal(a.data[3 * 1 + 2], 0);
    assert_memory_equal(a.data + 3 * 2, src.data, 31 * 3);
    assert_int_equal(a.data[3 * 33], 0);
    /* Flip twice is the identity; once mirrors. */
    assert_int_equal(ts_image_crop(&a, &src, 0, 0, 17, 31, &err), TS_OK);
    ts_image_hflip(&a);
    assert_memory_equal(a.data, src.data + 30 * 3, 3);
    ts_image_hflip(&a);
    assert_int_equal(image_diff(&a, src.data).max, 0);
    /* ToTensor + Normalize, in float32 in torchvision's order. */
    float *chw = malloc(sizeof(float) * 3 * 31 * 17);
    ts_image_to_chw(&src, TS_CLIP_MEAN, TS_CLIP_STD, chw);
    for (int c = 0; c < 3; c++)
        for (int i = 0; i < 31 * 17; i++) {
            float want = ((float)src.data[3 * i + c] / 255.0f - TS_CLIP_MEAN[c]) / TS_CLIP_STD[c];
            assert_true(chw[c * 31 * 17 + i] == want);
        }
    /* The mirrored version equals flip then ToTensor + Normalize, bit for bit. */
    float *flipped = malloc(sizeof(float) * 3 * 31 * 17);
    ts_image_to_chw_hflip(&src, TS_CLIP_MEAN, TS_CLIP_STD, flipped);
    assert_int_equal(ts_image_crop(&a, &src, 0, 0, 17, 31, &err), TS_OK);
    ts_image_hflip(&a);
    ts_image_to_chw(&a, TS_CLIP_MEAN, TS_CLIP_STD, chw);
    assert_memory_equal(flipped, chw, sizeof(float) * 3 * 31 * 17);
    ts_image_to_chw(&src, TS_CLIP_MEAN, TS_CLIP_STD, chw); /* and differs from the unflipped */
    assert_true(memcmp(flipped, chw, sizeof(float) * 3 * 31 * 17) != 0);
    free(flipped);
    free(chw);
    /* Also for rows wider than the spans the mirrored conversion works in. */
    ts_image_u8 wide;
    ts_image_u8_init(&wide);
    make_picture(&wide, 601, 3, 4);
    size_t nw = (size_t)3 * 601 * 3;
    flipped = malloc(sizeof(float) * nw), chw = malloc(sizeof(float) * nw);
    ts_image_to_chw_hflip(&wide, TS_CLIP_MEAN, TS_CLIP_STD, flipped);
    ts_image_hflip(&wide);
    ts_image_to_chw(&wide, TS_CLIP_MEAN, TS_CLIP_STD, chw);
    assert_memory_equal(flipped, chw, sizeof(float) * nw);
    free(flipped);
    free(chw);
    ts_image_u8_free(&wide);
    ts_image_u8_free(&src), ts_image_u8_free(&a), ts_image_u8_free(&b), ts_image_u8_free(&flat);
}

static void random_resized_crop(void **state) {
    (void)state;
    ts_rng r1, r2;
    ts_rng_seed(&r1, 42);
    ts_rng_seed(&r2, 42);
    int fallbacks = 0;
    double area_sum = 0;
    for (int i = 0; i < 2000; i++) {
        ts_crop_box a = ts_random_resized_crop_box(&r1, 500, 375, TS_RRC_SCALE, TS_RRC_RATIO);
        ts_crop_box b = ts_random_resized_crop_box(&r2, 500, 375, TS_RRC_SCALE, TS_RRC_RATIO);
        assert_memory_equal(&a, &b, sizeof a); /* the same seed gives the same boxes */
        assert_true(a.top >= 0 && a.left >= 0 && a.w > 0 && a.h > 0);
        assert_true(a.top + a.h <= 375 && a.left + a.w <= 500);
        double frac = (double)a.w * a.h / (500.0 * 375.0), ratio = (double)a.w / a.h;
        /* Rounding w and h to integers moves the area and the ratio a little. */
        if (a.w == 500 && a.h == 375)
            fallbacks++;
        else {
            assert_true(frac > 0.075 && frac <= 1.0);
            assert_true(ratio > 0.74 && ratio < 1.35);
        }
        area_sum += frac;
    }
    print_message(
        "RandomResizedCrop on 500 x 375: mean area fraction %.3f, %d whole-image fallbacks\n",
        area_sum / 2000, fallbacks);
    assert_true(area_sum / 2000 > 0.4 && area_sum / 2000 < 0.6);
    /* The fallback after ten misses: scale (1, 1) never fits a 10:1 image. */
    const float one[2] = { 1.0f, 1.0f };
    ts_crop_box b = ts_random_resized_crop_box(&r1, 1000, 100, one, TS_RRC_RATIO);
    assert_int_equal(b.h, 100), assert_int_equal(b.w, 133), assert_int_equal(b.top, 0),
        assert_int_equal(b.left, 433);
    b = ts_random_resized_crop_box(&r1, 100, 1000, one, TS_RRC_RATIO);
    assert_int_equal(b.w, 100), assert_int_equal(b.h, 133), assert_int_equal(b.left, 0),
        assert_int_equal(b.top, 433);
}

/* ---------------------------------------------------------------------------------------- */
/* Transforms against torchvision                                                            */

/* Run every op on im here and in torchvision; print and check the differences. */
static void torchvision_parity(const ts_image_u8 *im, const char *label) {
    char in[600], out[600], ops[2048];
    snprintf(in, sizeof in, "%s/tv_in.raw", g_tmp);
    snprintf(out, sizeof out, "%s/tv_out.bin", g_tmp);
    write_raw(in, im);
    int W = im->w, H = im->h;
    ts_crop_box box = { H / 7, W / 5, H / 2 + 3, W / 3 + 1 };
    snprintf(
        ops, sizeof ops,
        "short:bilinear:224 short:bicubic:224 resize:bilinear:100:37 resize:bicubic:100:37 "
        "resize:bilinear:%d:%d resize:bicubic:%d:%d resize:bicubic:%d:%d resize:bilinear:%d:%d "
        "center:224:224 center:%d:%d crop:-3:-5:20:30 rcrop:%d:%d:%d:%d:224:224:bicubic "
        "rcrop:%d:%d:%d:%d:64:48:bilinear hflip norm",
        2 * W - 1, H + H / 2, 2 * W - 1, H + H / 2, W, H / 3, W / 3, H, H + 10, W + 3, box.top,
        box.left, box.h, box.w, box.top, box.left, box.h, box.w);
    char args[4096];
    snprintf(args, sizeof args, "transform %s %s %s", in, out, ops);
    assert_int_equal(reference(args), 0);
    size_t n, pos = 0;
    uint8_t *ref = fx_read_all(out, &n);
    assert_non_null(ref);
    ts_image_u8 a, tmp;
    ts_image_u8_init(&a), ts_image_u8_init(&tmp);
    ts_err err;
    char *save = NULL;
    for (char *op = strtok_r(ops, " ", &save); op; op = strtok_r(NULL, " ", &save)) {
        int rw, rh, p[8] = { 0 };
        char interp_name[16] = "";
        ts_interp ip = strstr(op, "bicubic") ? TS_INTERP_BICUBIC : TS_INTERP_BILINEAR;
        ts_status st = TS_OK;
        int tol = 0;
        if (!strcmp(op, "norm")) {
            uint8_t *r = next_record(ref, n, &pos, &rw, &rh, 4);
            float *chw = malloc(sizeof(float) * 3 * W * H);
            ts_image_to_chw(im, TS_CLIP_MEAN, TS_CLIP_STD, chw);
            double mx = 0;
            for (int i = 0; i < 3 * W * H; i++) {
                float v;
                memcpy(&v, r + 4 * (size_t)i, 4);
                mx = fmax(mx, fabs((double)v - chw[i]));
            }
            print_message("%-12s %-42s max |diff| %.3g\n", label, op, mx);
            assert_true(mx <= 1e-6);
            free(chw);
            continue;
        }
        uint8_t *r = next_record(ref, n, &pos, &rw, &rh, 1);
        if (sscanf(op, "short:%15[a-z]:%d", interp_name, &p[0]) == 2) {
            st = ts_image_resize_short(&a, im, p[0], ip, &err), tol = 1;
        } else if (sscanf(op, "resize:%15[a-z]:%d:%d", interp_name, &p[0], &p[1]) == 3) {
            st = ts_image_resize(&a, im, p[0], p[1], ip, &err), tol = 1;
        } else if (sscanf(op, "center:%d:%d", &p[0], &p[1]) == 2) {
            st = ts_image_center_crop(&a, im, p[0], p[1], &err);
        } else if (sscanf(op, "crop:%d:%d:%d:%d", &p[0], &p[1], &p[2], &p[3]) == 4) {
            st = ts_image_crop(&a, im, p[0], p[1], p[2], p[3], &err);
        } else if (sscanf(op, "rcrop:%d:%d:%d:%d:%d:%d", &p[0], &p[1], &p[2], &p[3], &p[4],
                          &p[5]) == 6) {
            ts_crop_box b = { p[0], p[1], p[2], p[3] };
            st = ts_image_resized_crop(&a, im, b, p[4], p[5], ip, &err), tol = 1;
        } else if (!strcmp(op, "hflip")) {
            st = ts_image_crop(&a, im, 0, 0, H, W, &err);
            ts_image_hflip(&a);
        } else {
            fail_msg("unknown op %s", op);
        }
        assert_int_equal(st, TS_OK);
        if (a.w != rw || a.h != rh)
            fail_msg("%s: %d x %d here, %d x %d in torchvision", op, a.w, a.h, rw, rh);
        diff d = image_diff(&a, r);
        size_t off = 0;
        for (size_t i = 0; i < (size_t)a.w * a.h * 3; i++) off += a.data[i] != r[i];
        print_message("%-12s %-42s %4d x %-4d max |diff| %d (%.4f/255 mean, %zu values differ)\n",
                      label, op, a.w, a.h, d.max, d.mean, off);
        if (d.max > tol) fail_msg("%s %s: max diff %d > %d", label, op, d.max, tol);
    }
    assert_int_equal(pos, n);
    free(ref);
    ts_image_u8_free(&a), ts_image_u8_free(&tmp);
}

static void transforms_vs_torchvision_generated(void **state) {
    (void)state;
    if (!have_reference()) {
        print_message("PIL or torchvision missing (%s): torchvision parity skipped\n", python());
        skip();
    }
    ts_image_u8 im;
    ts_image_u8_init(&im);
    make_picture(&im, 317, 211, 11); /* noise over gradients */
    torchvision_parity(&im, "noise");
    make_picture(&im, 250, 333, 12); /* smooth, portrait */
    torchvision_parity(&im, "smooth");
    ts_image_u8_free(&im);
}

/* ---------------------------------------------------------------------------------------- */
/* The sample files of ../shared/data/images against PIL                                    */

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Every .jpg and .png under the sample folder (one level of subfolders), sorted. */
static int list_samples(char ***out) {
    int n = 0, cap = 64;
    char **v = malloc(sizeof(char *) * cap);
    DIR *d = opendir(g_data);
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char sub[1024];
        snprintf(sub, sizeof sub, "%s/%s", g_data, e->d_name);
        DIR *s = opendir(sub);
        if (!s) continue;
        struct dirent *f;
        while ((f = readdir(s))) {
            if (!fx_is_image_name(f->d_name)) continue;
            if (n == cap) v = realloc(v, sizeof(char *) * (cap *= 2));
            size_t len = strlen(sub) + strlen(f->d_name) + 2;
            v[n] = malloc(len);
            snprintf(v[n++], len, "%s/%s", sub, f->d_name);
        }
        closedir(s);
    }
    closedir(d);
    qsort(v, (size_t)n, sizeof *v, cmp_str);
    *out = v;
    return n;
}

/* PIL on Debian decodes with the same libjpeg-turbo, DCT method (islow) and upsampling
 * (fancy) as TurboJPEG's defaults, so the pixels are expected to agree exactly; the bounds
 * (mean < 1, max <= 16) leave room for a reference built on another libjpeg, whose IDCT and
 * chroma upsampling may round differently near edges. PNG decoding is exact everywhere. */
static void samples_vs_pil_mode(ts_alpha_mode mode) {
    char **files;
    int n = list_samples(&files);
    assert_true(n > 10);
    size_t len = 1024;
    for (int i = 0; i < n; i++) len += strlen(files[i]) + 1;
    char *args = malloc(len), out[600];
    snprintf(out, sizeof out, "%s/pil_%d.bin", g_tmp, (int)mode);
    int k = snprintf(args, len, "decode %s %s", mode == TS_ALPHA_WHITE ? "white" : "drop", out);
    for (int i = 0; i < n; i++) k += snprintf(args + k, len - (size_t)k, " %s", files[i]);
    assert_int_equal(reference(args), 0);
    size_t rn, pos = 0;
    uint8_t *ref = fx_read_all(out, &rn);
    ts_image_u8 im;
    ts_image_u8_init(&im);
    ts_decode_opts o = { .alpha = mode };
    int failures = 0;
    for (int i = 0; i < n; i++) {
        int rw, rh;
        uint8_t *r = next_record(ref, rn, &pos, &rw, &rh, 1);
        ts_err err = { 0 };
        ts_image_info info = { 0 };
        ts_status st = ts_image_load(&im, files[i], &o, &info, &err);
        const char *name = files[i] + strlen(g_data) + 1;
        if (!r) { /* PIL refuses it: so must we, naming the file */
            print_message("%-36s refused: %s\n", name, err.msg);
            if (st == TS_OK || !strstr(err.msg, files[i]))
                failures++, print_message("  ^ should have failed\n");
            continue;
        }
        if (st != TS_OK) {
            print_message("%-36s FAILED: %s\n", name, err.msg);
            failures++;
            continue;
        }
        if (im.w != rw || im.h != rh) {
            print_message("%-36s size %d x %d, PIL %d x %d\n", name, im.w, im.h, rw, rh);
            failures++;
            continue;
        }
        diff d = image_diff(&im, r);
        int jpeg = info.format == TS_IMG_JPEG;
        print_message("%-36s %5d x %-5d orient %d  mean |diff| %.4f max %d\n", name, im.w, im.h,
                      info.orientation, d.mean, d.max);
        if (jpeg ? (d.mean >= 1.0 || d.max > 16) : d.max != 0)
            failures++, print_message("  ^ too far from PIL\n");
    }
    assert_int_equal(pos, rn);
    assert_int_equal(failures, 0);
    for (int i = 0; i < n; i++) free(files[i]);
    free(files);
    free(args);
    free(ref);
    ts_image_u8_free(&im);
}

static void samples_vs_pil(void **state) {
    (void)state;
    if (!have_reference()) {
        print_message("PIL or torchvision missing (%s): sample comparison skipped\n", python());
        skip();
    }
    samples_vs_pil_mode(TS_ALPHA_WHITE);
    samples_vs_pil_mode(TS_ALPHA_DROP);
}

/* Samples that must fail whether or not PIL is installed, naming the file. */
static void samples_truncated(void **state) {
    (void)state;
    const char *bad[] = { "pillow/truncated_jpeg.jpg", "skimage/truncated.jpg" };
    ts_image_u8 im;
    ts_image_u8_init(&im);
    for (int i = 0; i < 2; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", g_data, bad[i]);
        ts_err err = { 0 };
        assert_int_equal(ts_image_load(&im, path, NULL, NULL, &err), TS_ERR_FORMAT);
        assert_non_null(strstr(err.msg, path));
        assert_int_equal(im.w, 0);
    }
    ts_image_u8_free(&im);
}

/* DCT-domain scaling against PIL's draft mode, which asks libjpeg for the same 1/4 scale:
 * rommel.jpg (3072 x 2304, EXIF orientation 6) and two photos, asked for at least a quarter
 * of their upright size. */
static void samples_scaled_vs_pil(void **state) {
    (void)state;
    if (!have_reference()) skip();
    const char *pics[] = { "imageio/rommel.jpg", "skimage/retina.jpg", "imageio/chelsea.jpg" };
    char args[4096], out[600];
    snprintf(out, sizeof out, "%s/pil_draft.bin", g_tmp);
    int k = snprintf(args, sizeof args, "draft 4 %s", out);
    for (int i = 0; i < 3; i++)
        k += snprintf(args + k, sizeof args - (size_t)k, " %s/%s", g_data, pics[i]);
    assert_int_equal(reference(args), 0);
    size_t rn, pos = 0;
    uint8_t *ref = fx_read_all(out, &rn);
    ts_image_u8 im;
    ts_image_u8_init(&im);
    for (int i = 0; i < 3; i++) {
        int rw, rh;
        uint8_t *r = next_record(ref, rn, &pos, &rw, &rh, 1);
        assert_non_null(r);
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", g_data, pics[i]);
        ts_decode_opts o = { .min_w = rw, .min_h = rh };
        ts_image_info info;
        ts_err err;
        if (ts_image_load(&im, path, &o, &info, &err)) fail_msg("%s", err.msg);
        diff d = image_diff(&im, r);
        print_message("%-22s scale %d/%d: %d x %d (PIL draft %d x %d), mean |diff| %.4f max %d\n",
                      pics[i], info.scale_num, info.scale_den, im.w, im.h, rw, rh, d.mean, d.max);
        assert_int_equal(info.scale_num * 4, info.scale_den);
        assert_int_equal(im.w, rw);
        assert_int_equal(im.h, rh);
        assert_true(d.mean < 1.0 && d.max <= 16);
    }
    free(ref);
    ts_image_u8_free(&im);
}

static void samples_vs_torchvision(void **state) {
    (void)state;
    if (!have_reference()) skip();
    const char *pics[] = { "imageio/chelsea.jpg", "img2dataset/524_316.jpg",
                           "skimage/astronaut.png", "pillow/hopper_orientation_6.jpg",
                           "img2dataset/123_456.jpg" };
    ts_image_u8 im;
    ts_image_u8_init(&im);
    for (int i = 0; i < 5; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", g_data, pics[i]);
        ts_err err;
        if (ts_image_load(&im, path, NULL, NULL, &err)) fail_msg("%s", err.msg);
        torchvision_parity(&im, strrchr(pics[i], '/') + 1);
    }
    ts_image_u8_free(&im);
}

int main(int argc, char **argv) {
    snprintf(g_tmp, sizeof g_tmp, "%s/unit_image_tmp%s", TS_BINARY_DIR, argc > 1 ? "_samples" : "");
    mkdir(g_tmp, 0755);
    if (argc > 1) {
        g_data = argv[1];
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(samples_truncated),
            cmocka_unit_test(samples_vs_pil),
            cmocka_unit_test(samples_scaled_vs_pil),
            cmocka_unit_test(samples_vs_torchvision),
        };
        return cmocka_run_group_tests_name("unit_image_samples", tests, NULL, NULL);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(png_every_kind),
        cmocka_unit_test(png_exif_orientation),
        cmocka_unit_test(jpeg_kinds),
        cmocka_unit_test(jpeg_truncated),
        cmocka_unit_test(jpeg_exif_orientation),
        cmocka_unit_test(jpeg_dct_scaling),
        cmocka_unit_test(jpeg_junk_between_markers),
        cmocka_unit_test(jpeg_bare_marker),
        cmocka_unit_test(resize_rows_alone),
        cmocka_unit_test(transform_rules),
        cmocka_unit_test(random_resized_crop),
        cmocka_unit_test(transforms_vs_torchvision_generated),
    };
    return cmocka_run_group_tests_name("unit_image", tests, NULL, NULL);
}
