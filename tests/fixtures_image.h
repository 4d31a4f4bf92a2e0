/* fixtures_image.h: small helpers of the image decoder tests (unit_image.c, unit_image_box.c):
 * JPEG encoding through TurboJPEG, an EXIF orientation segment spliced into a JPEG, reading a
 * whole file, and the sample-file filter.
 *
 * Every function is static inline; include after cmocka.h (a failed encode fails the test).
 * What it is not: a reference of anything; the tests compare the decoders with PIL and with
 * themselves.
 */
#ifndef TESSERA_FIXTURES_IMAGE_H
#define TESSERA_FIXTURES_IMAGE_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>

/* px (w x h, pixel format pf) as a JPEG of the given subsampling, quality and TurboJPEG flags;
 * malloc'ed, its size in *n. */
static inline uint8_t *fx_jpeg_encode(const uint8_t *px, int w, int h, int pf, int samp,
                                      int quality, int flags, size_t *n) {
    tjhandle tj = tjInitCompress();
    unsigned char *out = NULL;
    unsigned long len = 0;
    if (tjCompress2(tj, px, w, 0, h, pf, &out, &len, samp, quality, flags) != 0)
        fail_msg("tjCompress2: %s", tjGetErrorStr2(tj));
    tjDestroy(tj);
    uint8_t *copy = malloc(len);
    memcpy(copy, out, len);
    tjFree(out);
    *n = len;
    return copy;
}

/* jpg with an APP1 Exif segment holding orientation o inserted right after SOI (a TIFF of
 * either byte order); malloc'ed, its size in *out_n. */
static inline uint8_t *fx_with_exif(const uint8_t *jpg, size_t n, int o, int big_endian,
                                    size_t *out_n) {
    uint8_t seg[40];
    size_t k = 0;
    seg[k++] = 0xFF, seg[k++] = 0xE1, seg[k++] = 0, seg[k++] = 0; /* length below */
    memcpy(seg + k, "Exif\0\0", 6), k += 6;
    const uint8_t be[] = { 'M', 'M', 0, 42, 0, 0, 0, 8, 0, 1, 0x01, 0x12, 0,
                           3,   0,   0, 0,  1, 0, 0, 0, 0, 0, 0,    0,    0 };
    const uint8_t le[] = { 'I', 'I', 42, 0, 8, 0, 0, 0, 1, 0, 0x12, 0x01, 3,
                           0,   1,   0,  0, 0, 0, 0, 0, 0, 0, 0,    0,    0 };
    memcpy(seg + k, big_endian ? be : le, sizeof be);
    seg[k + 18 + (big_endian ? 1 : 0)] = (uint8_t)o;
    k += sizeof be;
    seg[2] = (uint8_t)((k - 2) >> 8), seg[3] = (uint8_t)(k - 2);
    uint8_t *out = malloc(n + k);
    memcpy(out, jpg, 2);
    memcpy(out + 2, seg, k);
    memcpy(out + 2 + k, jpg + 2, n - 2);
    *out_n = n + k;
    return out;
}

/* The whole file (malloc'ed, its size in *n), or NULL when it cannot be opened. */
static inline uint8_t *fx_read_all(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc(len > 0 ? (size_t)len : 1);
    if (fread(b, 1, (size_t)len, f) != (size_t)len) len = 0;
    fclose(f);
    *n = (size_t)len;
    return b;
}

/* A sample image file name: .jpg or .png. */
static inline int fx_is_image_name(const char *f) {
    size_t n = strlen(f);
    return n > 4 && (!strcmp(f + n - 4, ".jpg") || !strcmp(f + n - 4, ".png"));
}

#endif
