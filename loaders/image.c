/* image.c: JPEG and PNG decoding into 8-bit RGB images, and EXIF orientation.
 *
 * JPEG goes through libjpeg-turbo's TurboJPEG API (the 2.x functions, which Debian 12 ships),
 * PNG through libspng. Both decode from memory; a path is read whole first. Around the
 * libraries this file adds what a training pipeline needs and they leave out: a walk over the
 * JPEG markers before the image data (EXIF orientation, the Adobe marker that says CMYK is
 * stored inverted, junk bytes between markers that PIL skips), the choice of a DCT scale, the
 * CMYK and alpha conversions to RGB, and strictness: any libjpeg warning is an error, so a
 * truncated file never becomes a half-grey image.
 *
 * What it is not: a colour-managed decoder (ICC profiles and PNG gamma are ignored, as PIL's
 * convert("RGB") ignores them) or a general-purpose one (no 16-bit output, no GIF or WebP).
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <spng.h>
#include <turbojpeg.h>

#include "loaders.h"

/* Images above this many pixels are refused before any allocation: a 20-byte header can claim
 * 65535 x 65535, and a worker must not try to allocate 16 GB for it. */
#define MAX_PIXELS ((int64_t)1 << 28)

/* ---------------------------------------------------------------------------------------- */
/* The image type                                                                           */

void ts_image_u8_init(ts_image_u8 *im) { memset(im, 0, sizeof *im); }

void ts_image_u8_free(ts_image_u8 *im) {
    if (!im) return;
    free(im->data);
    ts_image_u8_init(im);
}

ts_status ts_image_u8_reserve(ts_image_u8 *im, int w, int h, ts_err *err) {
    TS_CHECK(w >= 0 && h >= 0, "image size %d x %d", w, h);
    size_t need = (size_t)w * (size_t)h * 3;
    if (need > im->cap) {
        uint8_t *p = realloc(im->data, need);
        if (!p) return ts_fail(err, TS_ERR_NOMEM, "cannot allocate a %d x %d image", w, h);
        im->data = p;
        im->cap = need;
    }
    im->w = w;
    im->h = h;
    return TS_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* EXIF orientation                                                                         */

static unsigned rd16(const uint8_t *p, int be) {
    return be ? (unsigned)p[0] << 8 | p[1] : (unsigned)p[1] << 8 | p[0];
}
static uint32_t rd32(const uint8_t *p, int be) {
    return be ? (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]
              : (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}

/* A TIFF header ("II*\0" or "MM\0*", then the offset of IFD0), IFD0's entry count, and
 * 12-byte entries {tag, type, count, value}. Orientation is tag 0x0112, a SHORT (some writers
 * use a LONG), whose value sits in the first bytes of the value field. */
int ts_exif_orientation(const void *tiff, size_t n) {
    const uint8_t *t = tiff;
    if (!t || n < 8) return 1;
    int be;
    if (t[0] == 'I' && t[1] == 'I')
        be = 0;
    else if (t[0] == 'M' && t[1] == 'M')
        be = 1;
    else
        return 1;
    if (rd16(t + 2, be) != 42) return 1;
    uint32_t ifd = rd32(t + 4, be);
    if (ifd > n - 2) return 1;
    unsigned count = rd16(t + ifd, be);
    for (unsigned i = 0; i < count; i++) {
        size_t e = (size_t)ifd + 2 + (size_t)i * 12;
        if (e + 12 > n) return 1;
        if (rd16(t + e, be) != 0x0112) continue;
        unsigned type = rd16(t + e + 2, be);
        unsigned v = type == 3 ? rd16(t + e + 8, be) : type == 4 ? rd32(t + e + 8, be) : 1;
        return v >= 1 && v <= 8 ? (int)v : 1;
    }
    return 1;
}

/* What the walk over a JPEG's markers (SOI up to SOS) finds. */
typedef struct jpeg_scan {
    int orientation; /* from the first APP1 "Exif" segment, 1 when none */
    int adobe; /* an APP14 "Adobe" segment is present: CMYK is stored inverted */
    size_t junk; /* bytes between segments that are not markers */
} jpeg_scan;

/* Walk the segments as libjpeg's next_marker does: skip bytes until 0xFF, skip 0xFF fill
 * bytes, read the marker code, then the segment length for markers that have one. Stops at
 * SOS (the entropy-coded data follows) or at the end of the buffer; a broken header is left
 * for libjpeg to report. When out is not NULL, the header is rewritten there without the junk
 * bytes, followed by the rest of the file; *out_n is its length (at most n). */
static jpeg_scan jpeg_walk(const uint8_t *b, size_t n, uint8_t *out, size_t *out_n) {
    jpeg_scan s = { 1, 0, 0 };
    size_t p = 2, o = 2;
    int have_exif = 0;
    if (out) memcpy(out, b, 2);
    while (p < n) {
        while (p < n && b[p] != 0xFF) p++, s.junk++;
        while (p < n && b[p] == 0xFF) p++;
        if (p >= n) break;
        uint8_t m = b[p++];
        size_t seg = p; /* the length field, for markers that have one */
        if (m == 0xD8 || m == 0x01 || (m >= 0xD0 && m <= 0xD7)) {
            if (out) out[o++] = 0xFF, out[o++] = m;
            continue;
        }
        if (m == 0xD9 || m == 0xDA || p + 2 > n) {
            /* SOS (or EOI, or a cut length): copy the rest of the file from the marker on. */
            if (out) {
                out[o++] = 0xFF;
                memcpy(out + o, b + p - 1, n - (p - 1));
                o += n - (p - 1);
            }
            break;
        }
        size_t len = (size_t)b[p] << 8 | b[p + 1];
        if (len < 2 || seg + len > n) len = n - seg; /* cut short: libjpeg reports it */
        const uint8_t *d = b + seg + 2;
        size_t dn = len >= 2 ? len - 2 : 0;
        if (m == 0xE1 && !have_exif && dn >= 6 && memcmp(d, "Exif\0\0", 6) == 0) {
            have_exif = 1;
            s.orientation = ts_exif_orientation(d + 6, dn - 6);
        }
        if (m == 0xEE && dn >= 5 && memcmp(d, "Adobe", 5) == 0) s.adobe = 1;
        if (out) {
            out[o++] = 0xFF, out[o++] = m;
            memcpy(out + o, b + seg, len);
            o += len;
        }
        p = seg + len;
    }
    if (out_n) *out_n = out ? o : n;
    return s;
}

int ts_jpeg_orientation(const void *buf, size_t n) {
    const uint8_t *b = buf;
    if (!b || n < 4 || b[0] != 0xFF || b[1] != 0xD8) return 1;
    return jpeg_walk(b, n, NULL, NULL).orientation;
}

/* Where output pixel (x, y) of an image oriented by o comes from in the stored w x h image. */
static inline void orient_src(int o, int w, int h, int x, int y, int *sx, int *sy) {
    switch (o) {
    case 2:
        *sx = w - 1 - x, *sy = y;
        break; /* mirror left-right */
    case 3:
        *sx = w - 1 - x, *sy = h - 1 - y;
        break; /* rotate 180 */
    case 4:
        *sx = x, *sy = h - 1 - y;
        break; /* mirror top-bottom */
    case 5:
        *sx = y, *sy = x;
        break; /* transpose */
    case 6:
        *sx = y, *sy = h - 1 - x;
        break; /* rotate 90 clockwise */
    case 7:
        *sx = w - 1 - y, *sy = h - 1 - x;
        break; /* transverse */
    case 8:
        *sx = w - 1 - y, *sy = x;
        break; /* rotate 90 counter-clockwise */
    default:
        *sx = x, *sy = y;
        break;
    }
}

ts_status ts_image_orient(ts_image_u8 *im, int o, ts_image_u8 *tmp, ts_err *err) {
    if (o < 2 || o > 8) return TS_OK;
    int w = im->w, h = im->h;
    int ow = o >= 5 ? h : w, oh = o >= 5 ? w : h;
    ts_status st = ts_image_u8_reserve(tmp, ow, oh, err);
    if (st) return st;
    for (int y = 0; y < oh; y++) {
        uint8_t *dst = tmp->data + (size_t)y * ow * 3;
        for (int x = 0; x < ow; x++) {
            int sx, sy;
            orient_src(o, w, h, x, y, &sx, &sy);
            const uint8_t *src = im->data + ((size_t)sy * w + sx) * 3;
            dst[3 * x] = src[0], dst[3 * x + 1] = src[1], dst[3 * x + 2] = src[2];
        }
    }
    ts_image_u8 t = *im; /* swap buffers: the result becomes im, the old buffer tmp */
    *im = *tmp;
    *tmp = t;
    return TS_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* JPEG                                                                                     */

/* The smallest DCT scale num/den <= 1 whose output (after orientation o) meets the minimum
 * sizes of opts; 1/1 when none of the smaller ones does. */
static tjscalingfactor jpeg_pick_scale(int w, int h, int o, const ts_decode_opts *opts) {
    tjscalingfactor best = { 1, 1 };
    if (!opts || (opts->min_w <= 0 && opts->min_h <= 0 && opts->min_short <= 0)) return best;
    int nsf = 0;
    tjscalingfactor *sf = tjGetScalingFactors(&nsf);
    int64_t best_px = (int64_t)w * h;
    for (int i = 0; sf && i < nsf; i++) {
        if (sf[i].num > sf[i].denom) continue;
        int sw = TJSCALED(w, sf[i]), sh = TJSCALED(h, sf[i]);
        int ow = o >= 5 ? sh : sw, oh = o >= 5 ? sw : sh;
        int shorter = ow < oh ? ow : oh;
        if (ow < opts->min_w || oh < opts->min_h || shorter < opts->min_short) continue;
        if ((int64_t)sw * sh < best_px) best = sf[i], best_px = (int64_t)sw * sh;
    }
    return best;
}

/* PIL's CMYK to RGB (Pillow 9's cmyk2rgb): nk = 255 - k, r = nk - c * nk / 255 with rounding,
 * where c, m, y, k are ink amounts. Adobe writes them inverted (255 = no ink), which PIL
 * assumes whenever the APP14 Adobe marker is present; libjpeg hands them out as stored. */
static inline uint8_t muldiv255(unsigned a, unsigned b) {
    unsigned t = a * b + 128;
    return (uint8_t)(((t >> 8) + t) >> 8);
}
static void cmyk_to_rgb(uint8_t *rgb, const uint8_t *cmyk, size_t npix, int inverted) {
    for (size_t i = 0; i < npix; i++) {
        unsigned c = cmyk[4 * i], m = cmyk[4 * i + 1], y = cmyk[4 * i + 2], k = cmyk[4 * i + 3];
        if (inverted) c = 255 - c, m = 255 - m, y = 255 - y, k = 255 - k;
        unsigned nk = 255 - k;
        rgb[3 * i] = (uint8_t)(nk - muldiv255(c, nk));
        rgb[3 * i + 1] = (uint8_t)(nk - muldiv255(m, nk));
        rgb[3 * i + 2] = (uint8_t)(nk - muldiv255(y, nk));
    }
}

static ts_status jpeg_fail(ts_err *err, tjhandle tj, const char *name, const char *what) {
    /* TJERR_WARNING means libjpeg carried on past damage (a truncated file is padded with a
     * fake end-of-image); for training data that is a corrupt sample, not a picture. */
    const char *kind =
        tjGetErrorCode(tj) == TJERR_WARNING ? "corrupt or truncated JPEG" : "bad JPEG";
    return ts_fail(err, TS_ERR_FORMAT, "%s: %s (%s): %s", name, kind, what, tjGetErrorStr2(tj));
}

static ts_status decode_jpeg(ts_image_u8 *out, const uint8_t *b, size_t n, const char *name,
                             const ts_decode_opts *opts, ts_image_info *info, ts_err *err) {
    ts_status st = TS_OK;
    uint8_t *clean = NULL, *cmyk = NULL;
    tjhandle tj = NULL;
    if (n > ULONG_MAX) return ts_fail(err, TS_ERR_FORMAT, "%s: JPEG too large", name);

    jpeg_scan s = jpeg_walk(b, n, NULL, NULL);
    if (s.junk) {
        /* Junk between header segments: PIL skips it, libjpeg warns. Hand libjpeg a copy
         * without it, so that warnings keep meaning damage. */
        clean = malloc(n);
        if (!clean) return ts_fail(err, TS_ERR_NOMEM, "%s: cannot allocate %zu bytes", name, n);
        jpeg_walk(b, n, clean, &n);
        b = clean;
    }
    tj = tjInitDecompress();
    if (!tj) {
        st = ts_fail(err, TS_ERR_NOMEM, "%s: cannot start TurboJPEG: %s", name,
                     tjGetErrorStr2(NULL));
        goto done;
    }
    int w, h, subsamp, cs;
    if (tjDecompressHeader3(tj, b, (unsigned long)n, &w, &h, &subsamp, &cs) != 0) {
        st = jpeg_fail(err, tj, name, "header");
        goto done;
    }
    /* A JPEG frame header holds 16-bit sizes; anything else is a damaged header, and would
     * overflow the scaled-size arithmetic below. */
    if (w <= 0 || h <= 0 || w > 65535 || h > 65535) {
        st = ts_fail(err, TS_ERR_FORMAT, "%s: JPEG header gives an impossible size %d x %d", name,
                     w, h);
        goto done;
    }
    int o = opts && opts->ignore_orientation ? 1 : s.orientation;
    tjscalingfactor sf = jpeg_pick_scale(w, h, o, opts);
    int sw = TJSCALED(w, sf), sh = TJSCALED(h, sf);
    if (sw <= 0 || sh <= 0 || (int64_t)sw * sh > MAX_PIXELS) {
        st = ts_fail(err, TS_ERR_FORMAT,
                     "%s: JPEG of %d x %d pixels (decoded at %d/%d) is over the limit of %lld",
                     name, w, h, sf.num, sf.denom, (long long)MAX_PIXELS);
        goto done;
    }
    int is_cmyk = cs == TJCS_CMYK || cs == TJCS_YCCK;
    if ((st = ts_image_u8_reserve(out, sw, sh, err))) goto done;
    uint8_t *dst = out->data;
    if (is_cmyk) {
        cmyk = malloc((size_t)sw * sh * 4);
        if (!cmyk) {
            st = ts_fail(err, TS_ERR_NOMEM, "%s: cannot allocate a %d x %d CMYK image", name, sw,
                         sh);
            goto done;
        }
        dst = cmyk;
    }
    /* Accurate integer DCT and fancy upsampling are TurboJPEG's defaults and what PIL uses,
     * so the pixels match PIL's bit for bit with the same libjpeg-turbo. LIMITSCANS refuses
     * progressive files of more than 500 scans (a denial-of-service pattern). */
    int flags = TJFLAG_STOPONWARNING | TJFLAG_LIMITSCANS;
    if (tjDecompress2(tj, b, (unsigned long)n, dst, sw, 0, sh, is_cmyk ? TJPF_CMYK : TJPF_RGB,
                      flags) != 0) {
        st = jpeg_fail(err, tj, name, "data");
        goto done;
    }
    if (is_cmyk) cmyk_to_rgb(out->data, cmyk, (size_t)sw * sh, s.adobe);
    if (o > 1) {
        ts_image_u8 tmp;
        ts_image_u8_init(&tmp);
        st = ts_image_orient(out, o, &tmp, err);
        ts_image_u8_free(&tmp);
        if (st) goto done;
    }
    if (info) {
        info->format = TS_IMG_JPEG;
        info->stored_w = w, info->stored_h = h;
        info->orientation = s.orientation;
        info->scale_num = sf.num, info->scale_den = sf.denom;
    }
done:
    if (st) out->w = out->h = 0;
    if (tj) tjDestroy(tj);
    free(cmyk);
    free(clean);
    return st;
}

/* ---------------------------------------------------------------------------------------- */
/* PNG                                                                                      */

static ts_status png_fail(ts_err *err, const char *name, const char *what, int rc) {
    ts_status code = rc == SPNG_EMEM ? TS_ERR_NOMEM : TS_ERR_FORMAT;
    return ts_fail(err, code, "%s: bad PNG (%s): %s", name, what, spng_strerror(rc));
}

/* Whether the file holds a whole IEND chunk (length 0, "IEND", its fixed CRC). libspng stops
 * reading at IEND without checking that its CRC is there; a file cut inside it is truncated
 * all the same. Bytes after IEND are allowed, as PIL allows them. */
static int png_has_iend(const uint8_t *b, size_t n) {
    static const uint8_t iend[12] = { 0, 0, 0, 0, 'I', 'E', 'N', 'D', 0xAE, 0x42, 0x60, 0x82 };
    for (size_t p = n >= 12 ? n - 12 + 1 : 0; p-- > 8;)
        if (b[p] == 0 && memcmp(b + p, iend, 12) == 0) return 1;
    return 0;
}

static ts_status decode_png(ts_image_u8 *out, const uint8_t *b, size_t n, const char *name,
                            const ts_decode_opts *opts, ts_image_info *info, ts_err *err) {
    ts_status st = TS_OK;
    uint8_t *rgba = NULL;
    int rc;
    spng_ctx *ctx = spng_ctx_new(0);
    if (!ctx) return ts_fail(err, TS_ERR_NOMEM, "%s: cannot start libspng", name);
    /* Bound what a hostile file can make libspng allocate for metadata chunks. */
    spng_set_chunk_limits(ctx, (size_t)1 << 24, (size_t)1 << 26);
    spng_set_image_limits(ctx, 1u << 16, 1u << 16);
    if ((rc = spng_set_png_buffer(ctx, b, n))) {
        st = png_fail(err, name, "buffer", rc);
        goto done;
    }
    struct spng_ihdr ihdr;
    if ((rc = spng_get_ihdr(ctx, &ihdr))) {
        st = png_fail(err, name, "header", rc);
        goto done;
    }
    int w = (int)ihdr.width, h = (int)ihdr.height;
    if ((int64_t)w * h > MAX_PIXELS) {
        st = ts_fail(err, TS_ERR_FORMAT, "%s: PNG of %d x %d pixels is over the limit of %lld",
                     name, w, h, (long long)MAX_PIXELS);
        goto done;
    }
    struct spng_trns trns;
    int alpha = ihdr.color_type == SPNG_COLOR_TYPE_GRAYSCALE_ALPHA ||
                ihdr.color_type == SPNG_COLOR_TYPE_TRUECOLOR_ALPHA ||
                spng_get_trns(ctx, &trns) == 0;
    if ((st = ts_image_u8_reserve(out, w, h, err))) goto done;
    size_t npix = (size_t)w * h;
    /* libspng scales 1, 2 and 4-bit samples up (x255, x85, x17) and 16-bit ones down by
     * keeping the high byte, as PIL does; palettes are expanded and tRNS becomes alpha. */
    if (!alpha) {
        if ((rc = spng_decode_image(ctx, out->data, npix * 3, SPNG_FMT_RGB8, 0))) {
            st = png_fail(err, name, "data", rc);
            goto done;
        }
    } else {
        rgba = malloc(npix * 4);
        if (!rgba) {
            st = ts_fail(err, TS_ERR_NOMEM, "%s: cannot allocate a %d x %d RGBA image", name, w, h);
            goto done;
        }
        if ((rc = spng_decode_image(ctx, rgba, npix * 4, SPNG_FMT_RGBA8, SPNG_DECODE_TRNS))) {
            st = png_fail(err, name, "data", rc);
            goto done;
        }
        int white = !opts || opts->alpha == TS_ALPHA_WHITE;
        for (size_t i = 0; i < npix; i++) {
            const uint8_t *s = rgba + 4 * i;
            uint8_t *d = out->data + 3 * i;
            if (white) {
                /* Straight alpha over white: c * a/255 + 255 * (1 - a/255), rounded. */
                unsigned a = s[3];
                for (int c = 0; c < 3; c++)
                    d[c] = (uint8_t)((s[c] * a + 255 * (255 - a) + 127) / 255);
            } else {
                d[0] = s[0], d[1] = s[1], d[2] = s[2];
            }
        }
    }
    /* An eXIf chunk holds a bare TIFF block; PIL's exif_transpose honours it too. Asking for
     * it makes libspng read the chunks after the image data, which also finds a file cut
     * between the image data and IEND, which the decode itself does not notice. */
    int o = 1;
    struct spng_exif exif;
    rc = spng_get_exif(ctx, &exif);
    if (rc == 0)
        o = ts_exif_orientation(exif.data, exif.length);
    else if (rc != SPNG_ECHUNKAVAIL) {
        st = png_fail(err, name, "after the image data", rc);
        goto done;
    }
    if (!png_has_iend(b, n)) {
        st = ts_fail(err, TS_ERR_FORMAT, "%s: truncated PNG: no complete IEND chunk", name);
        goto done;
    }
    if (o > 1 && !(opts && opts->ignore_orientation)) {
        ts_image_u8 tmp;
        ts_image_u8_init(&tmp);
        st = ts_image_orient(out, o, &tmp, err);
        ts_image_u8_free(&tmp);
        if (st) goto done;
    }
    if (info) {
        info->format = TS_IMG_PNG;
        info->stored_w = w, info->stored_h = h;
        info->orientation = o;
        info->scale_num = info->scale_den = 1;
    }
done:
    if (st) out->w = out->h = 0;
    free(rgba);
    spng_ctx_free(ctx);
    return st;
}

/* ---------------------------------------------------------------------------------------- */
/* Entry points                                                                             */

ts_status ts_image_decode(ts_image_u8 *out, const void *buf, size_t n, const char *name,
                          const ts_decode_opts *opts, ts_image_info *info, ts_err *err) {
    const uint8_t *b = buf;
    if (!name) name = "(image)";
    out->w = out->h = 0;
    if (n >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF)
        return decode_jpeg(out, b, n, name, opts, info, err);
    if (n >= 8 && memcmp(b, "\x89PNG\r\n\x1a\n", 8) == 0)
        return decode_png(out, b, n, name, opts, info, err);
    if (n >= 12 && memcmp(b, "RIFF", 4) == 0 && memcmp(b + 8, "WEBP", 4) == 0)
        return ts_fail(err, TS_ERR_UNSUPPORTED,
                       "%s: WebP images are not supported (JPEG and PNG are)", name);
    if (n >= 6 && (memcmp(b, "GIF87a", 6) == 0 || memcmp(b, "GIF89a", 6) == 0))
        return ts_fail(err, TS_ERR_UNSUPPORTED,
                       "%s: GIF images are not supported (JPEG and PNG are)", name);
    if (n == 0) return ts_fail(err, TS_ERR_FORMAT, "%s: empty file, not an image", name);
    return ts_fail(err, TS_ERR_FORMAT, "%s: not a JPEG or PNG image (first bytes %02x %02x)", name,
                   b[0], n > 1 ? b[1] : 0);
}

ts_status ts_image_load(ts_image_u8 *out, const char *path, const ts_decode_opts *opts,
                        ts_image_info *info, ts_err *err) {
    out->w = out->h = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return ts_fail(err, TS_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    ts_status st = TS_OK;
    uint8_t *buf = NULL;
    long n = -1;
    if (fseek(f, 0, SEEK_END) == 0) n = ftell(f);
    if (n < 0 || fseek(f, 0, SEEK_SET) != 0) {
        st = ts_fail(err, TS_ERR_IO, "%s: cannot seek: %s", path, strerror(errno));
        goto done;
    }
    buf = malloc(n > 0 ? (size_t)n : 1);
    if (!buf) {
        st = ts_fail(err, TS_ERR_NOMEM, "%s: cannot allocate %ld bytes", path, n);
        goto done;
    }
    if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
        st = ts_fail(err, TS_ERR_IO, "%s: read error", path);
        goto done;
    }
    st = ts_image_decode(out, buf, (size_t)n, path, opts, info, err);
done:
    free(buf);
    fclose(f);
    return st;
}
