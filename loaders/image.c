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
 * A JPEG can also be decoded over a crop box only (ts_image_decode_box, for RandomResizedCrop,
 * whose box depends on nothing but the image's size): the libjpeg API of the same
 * libjpeg-turbo (TurboJPEG 2.x cannot crop) inverse-transforms, upsamples and converts only
 * the box's columns and rows; the rest of the file is entropy-decoded only, so that damage
 * anywhere is still found. The pixels are those of the full decode, bit for bit.
 *
 * What it is not: a colour-managed decoder (ICC profiles and PNG gamma are ignored, as PIL's
 * convert("RGB") ignores them) or a general-purpose one (no 16-bit output, no GIF or WebP).
 */
#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
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
    int w = 0, h = 0, subsamp, cs;
    if (tjDecompressHeader3(tj, b, (unsigned long)n, &w, &h, &subsamp, &cs) != 0) {
        st = jpeg_fail(err, tj, name, "header");
        goto done;
    }
    /* TurboJPEG reports success without a size when the data ends (or an end-of-image marker
     * comes) before the frame header: a file cut inside its header. */
    if (w == 0 && h == 0) {
        st = ts_fail(err, TS_ERR_FORMAT,
                     "%s: corrupt or truncated JPEG (header): the data ends before the frame "
                     "header", name);
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
/* JPEG over a crop box                                                                     */

/* libjpeg reports an error by calling error_exit, which must not return: it jumps back out of
 * the decode. Warnings jump too, as TJFLAG_STOPONWARNING makes them stop the full decode, and
 * so does a 501st scan, as TJFLAG_LIMITSCANS does. No message is kept: a region decode that
 * fails is done again whole, and the full decode's error, in its words, is the one returned. */
typedef struct jpeg_trap {
    struct jpeg_error_mgr pub; /* first: libjpeg's err pointer is a pointer to it */
    jmp_buf jb;
} jpeg_trap;

static void trap_error_exit(j_common_ptr c) { longjmp(((jpeg_trap *)(void *)c->err)->jb, 1); }
static void trap_emit_message(j_common_ptr c, int level) {
    if (level < 0) longjmp(((jpeg_trap *)(void *)c->err)->jb, 1);
}
static void trap_output_message(j_common_ptr c) { (void)c; }
static void trap_progress(j_common_ptr c) {
    if (c->is_decompressor && ((j_decompress_ptr)c)->input_scan_number > 500)
        longjmp(((jpeg_trap *)(void *)c->err)->jb, 1);
}

/* What a region decode holds. It lives in the caller's frame, not in the frame of the function
 * that calls setjmp, so that its fields keep their values across the jump. */
typedef struct jpeg_region {
    struct jpeg_decompress_struct d;
    jpeg_trap trap;
    struct jpeg_progress_mgr progress;
    int created;         /* d is a live decompressor */
    uint8_t *row;        /* one decoded row of the crop window */
    uint8_t *cmyk;       /* the region as CMYK, for CMYK and YCCK files */
    int picked, ow, oh;  /* pick was called, with the upright size ow x oh */
    ts_crop_box box;     /* what it returned */
    int rw, rh;          /* the region's size as stored (before orientation) */
    int wx;              /* where the box starts in out: out is wider than the box when the
                            window was decoded into it whole */
} jpeg_region;

static void box_check(ts_crop_box b, int w, int h) {
    TS_CHECK(b.top >= 0 && b.left >= 0 && b.h > 0 && b.w > 0 && b.top + b.h <= h &&
                 b.left + b.w <= w,
             "crop box (top %d, left %d, %d x %d) outside a %d x %d image", b.top, b.left, b.w,
             b.h, w, h);
}

/* Decode the box that pick chooses, in stored orientation, into out (RGB) or r->cmyk.
 * Returns 0, or -1 when libjpeg stopped (an error, a warning, or memory).
 *
 * The box is mapped to stored coordinates through orientation o (a rectangle stays a
 * rectangle). Columns: jpeg_crop_scanline, so that only the blocks of a window of columns are
 * inverse-transformed, upsampled and converted. The window is the box widened by one iMCU on
 * each side that is not an image edge: libjpeg's fancy upsampling makes each output pixel
 * from its neighbours' chroma, and at the edge of a cropped window it has none, so the
 * window's first and last columns differ from the full decode; inside the margin they are the
 * same, bit for bit. Rows: jpeg_skip_scanlines over the rows above the box, which keeps the
 * upsampler's context rows (it entropy-decodes whole iMCU rows without transforming them and
 * reads the last few), so no margin is needed there; unit_image_box checks both. */
static int jpeg_region_run(jpeg_region *r, ts_image_u8 *out, const uint8_t *b, size_t n, int o,
                           tjscalingfactor sf, int is_cmyk, ts_box_fn pick, void *user) {
    j_decompress_ptr d = &r->d;
    d->err = jpeg_std_error(&r->trap.pub);
    r->trap.pub.error_exit = trap_error_exit;
    r->trap.pub.emit_message = trap_emit_message;
    r->trap.pub.output_message = trap_output_message;
    if (setjmp(r->trap.jb)) return -1;
    jpeg_create_decompress(d);
    r->created = 1;
    r->progress.progress_monitor = trap_progress;
    d->progress = &r->progress;
    jpeg_mem_src(d, b, (unsigned long)n);
    jpeg_read_header(d, TRUE);
    /* TurboJPEG's settings for TJPF_RGB / TJPF_CMYK: accurate integer IDCT and fancy
     * upsampling are libjpeg's defaults too. */
    d->out_color_space = is_cmyk ? JCS_CMYK : JCS_EXT_RGB;
    d->scale_num = (unsigned)sf.num, d->scale_denom = (unsigned)sf.denom;
    jpeg_calc_output_dimensions(d);
    int W = (int)d->output_width, H = (int)d->output_height;
    if (W != TJSCALED((int)d->image_width, sf) || H != TJSCALED((int)d->image_height, sf))
        return -1;
    r->ow = o >= 5 ? H : W, r->oh = o >= 5 ? W : H;
    r->box = pick(user, r->ow, r->oh);
    r->picked = 1;
    box_check(r->box, r->ow, r->oh);
    int ax, ay, bx, by;
    orient_src(o, W, H, r->box.left, r->box.top, &ax, &ay);
    orient_src(o, W, H, r->box.left + r->box.w - 1, r->box.top + r->box.h - 1, &bx, &by);
    int x0 = ax < bx ? ax : bx, x1 = (ax < bx ? bx : ax) + 1;
    int y0 = ay < by ? ay : by, y1 = (ay < by ? by : ay) + 1;
    r->rw = x1 - x0, r->rh = y1 - y0;

    jpeg_start_decompress(d);
    int mx = d->max_h_samp_factor * d->min_DCT_scaled_size;
    JDIMENSION cx = (JDIMENSION)(x0 > mx ? x0 - mx : 0);
    JDIMENSION cw = (JDIMENSION)(x1 + mx < W ? x1 + mx : W) - cx;
    jpeg_crop_scanline(d, &cx, &cw);
    if ((int)cx > x0 || (int)(cx + cw) < x1) return -1;
    int nc = is_cmyk ? 4 : 3;
    r->row = malloc((size_t)cw * (size_t)nc);
    if (!r->row) return -1;
    if (y0 > 0 && jpeg_skip_scanlines(d, (JDIMENSION)y0) != (JDIMENSION)y0) return -1;
    if (o == 1 && !is_cmyk) {
        /* Upright RGB: the window's rows go straight into out, margins and all; the box
         * starts r->wx columns in. */
        ts_err e;
        if (ts_image_u8_reserve(out, (int)cw, r->rh, &e)) return -1;
        r->wx = x0 - (int)cx;
        while ((int)d->output_scanline < y1) {
            JSAMPROW rows[16];
            int y = (int)d->output_scanline, k = 0;
            for (; k < 16 && y + k < y1; k++) rows[k] = out->data + (size_t)(y + k - y0) * cw * 3;
            if (jpeg_read_scanlines(d, rows, (JDIMENSION)k) == 0) return -1;
        }
    } else {
        /* CMYK, or a box to be oriented: the box alone, one row at a time. */
        uint8_t *dst;
        if (is_cmyk) {
            dst = r->cmyk = malloc((size_t)r->rw * (size_t)r->rh * 4);
            if (!dst) return -1;
        } else {
            ts_err e;
            if (ts_image_u8_reserve(out, r->rw, r->rh, &e)) return -1;
            dst = out->data;
        }
        size_t span = (size_t)r->rw * (size_t)nc;
        while ((int)d->output_scanline < y1) {
            int y = (int)d->output_scanline;
            JSAMPROW rows[1] = { r->row };
            if (jpeg_read_scanlines(d, rows, 1) != 1) return -1;
            memcpy(dst + (size_t)(y - y0) * span, r->row + (size_t)(x0 - (int)cx) * nc, span);
        }
    }
    /* The rows below the box are entropy-decoded and thrown away (no inverse transform, no
     * upsampling, no colour conversion), and the decode is finished as the full decode
     * finishes it, reading on to the end-of-image marker. Stopping after the box would save
     * that entropy decoding, but it would also stop seeing damage: in a baseline file a
     * damaged byte often throws the Huffman decoder off without a word until the scan hits
     * the next marker, so a box above or around the damage would be handed on as garbage
     * pixels. This way the region decode refuses exactly what the full decode refuses. */
    if ((int)d->output_scanline < H - 1) {
        JDIMENSION left = (JDIMENSION)(H - 1) - d->output_scanline;
        if (jpeg_skip_scanlines(d, left) != left) return -1;
    }
    if ((int)d->output_scanline < H) {
        JSAMPROW rows[1] = { r->row };
        if (jpeg_read_scanlines(d, rows, 1) != 1) return -1;
    }
    jpeg_finish_decompress(d);
    return 0;
}

static ts_status decode_jpeg_box(ts_image_u8 *out, const uint8_t *b, size_t n, const char *name,
                                 const ts_decode_opts *opts, ts_box_fn pick, void *user,
                                 ts_crop_box *where, ts_image_info *info, ts_err *err) {
    jpeg_region r;
    memset(&r, 0, sizeof r);
    uint8_t *clean = NULL;
    tjhandle tj = NULL;
    int done = 0;
    if (n <= ULONG_MAX) {
        jpeg_scan s = jpeg_walk(b, n, NULL, NULL);
        const uint8_t *jb = b;
        size_t jn = n;
        if (s.junk && (clean = malloc(n))) {
            jpeg_walk(b, n, clean, &jn);
            jb = clean;
        }
        /* TurboJPEG reads the header first, so that the region decode takes exactly the files
         * the full decode takes (TurboJPEG refuses subsampling layouts that libjpeg decodes). */
        int w = 0, h = 0, subsamp, cs;
        if ((!s.junk || clean) && (tj = tjInitDecompress()) &&
            tjDecompressHeader3(tj, jb, (unsigned long)jn, &w, &h, &subsamp, &cs) == 0 && w > 0 &&
            h > 0 && w <= 65535 && h <= 65535) {
            int o = opts && opts->ignore_orientation ? 1 : s.orientation;
            tjscalingfactor sf = jpeg_pick_scale(w, h, o, opts);
            int is_cmyk = cs == TJCS_CMYK || cs == TJCS_YCCK;
            if ((int64_t)TJSCALED(w, sf) * TJSCALED(h, sf) <= MAX_PIXELS &&
                jpeg_region_run(&r, out, jb, jn, o, sf, is_cmyk, pick, user) == 0) {
                ts_status st = TS_OK;
                if (is_cmyk && !(st = ts_image_u8_reserve(out, r.rw, r.rh, err)))
                    cmyk_to_rgb(out->data, r.cmyk, (size_t)r.rw * r.rh, s.adobe);
                if (!st && o > 1) {
                    ts_image_u8 tmp;
                    ts_image_u8_init(&tmp);
                    st = ts_image_orient(out, o, &tmp, err);
                    ts_image_u8_free(&tmp);
                }
                done = st == TS_OK;
                if (done && info) {
                    info->format = TS_IMG_JPEG;
                    info->stored_w = w, info->stored_h = h;
                    info->orientation = s.orientation;
                    info->scale_num = sf.num, info->scale_den = sf.denom;
                }
            }
        }
    }
    if (r.created) jpeg_destroy_decompress(&r.d); /* also ends a decode stopped early */
    if (tj) tjDestroy(tj);
    free(r.row);
    free(r.cmyk);
    free(clean);
    if (done) {
        ts_crop_box in_out = { 0, r.wx, r.box.h, r.box.w };
        *where = in_out;
        return TS_OK;
    }
    /* Anything the region decode did not take (a damaged or truncated file, memory) is
     * decoded whole: the result, or the error, is the full decode's, in its words. */
    out->w = out->h = 0;
    ts_status st = decode_jpeg(out, b, n, name, opts, info, err);
    if (st) return st;
    if (r.picked)
        TS_CHECK(out->w == r.ow && out->h == r.oh,
                 "%s: the region decode saw %d x %d, the full decode %d x %d", name, r.ow, r.oh,
                 out->w, out->h);
    else
        r.box = pick(user, out->w, out->h);
    box_check(r.box, out->w, out->h);
    *where = r.box;
    return TS_OK;
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

/* Read the file at path whole into *buf (malloc'ed, at least 1 byte) and *n. */
static ts_status read_file(const char *path, uint8_t **buf, size_t *n, ts_err *err) {
    *buf = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return ts_fail(err, TS_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    ts_status st = TS_OK;
    long len = -1;
    if (fseek(f, 0, SEEK_END) == 0) len = ftell(f);
    if (len < 0 || fseek(f, 0, SEEK_SET) != 0) {
        st = ts_fail(err, TS_ERR_IO, "%s: cannot seek: %s", path, strerror(errno));
        goto done;
    }
    *buf = malloc(len > 0 ? (size_t)len : 1);
    if (!*buf) {
        st = ts_fail(err, TS_ERR_NOMEM, "%s: cannot allocate %ld bytes", path, len);
        goto done;
    }
    if (fread(*buf, 1, (size_t)len, f) != (size_t)len) {
        st = ts_fail(err, TS_ERR_IO, "%s: read error", path);
        free(*buf);
        *buf = NULL;
        goto done;
    }
    *n = (size_t)len;
done:
    fclose(f);
    return st;
}

ts_status ts_image_load(ts_image_u8 *out, const char *path, const ts_decode_opts *opts,
                        ts_image_info *info, ts_err *err) {
    out->w = out->h = 0;
    uint8_t *buf;
    size_t n;
    ts_status st = read_file(path, &buf, &n, err);
    if (!st) st = ts_image_decode(out, buf, n, path, opts, info, err);
    free(buf);
    return st;
}

ts_status ts_image_decode_box(ts_image_u8 *out, const void *buf, size_t n, const char *name,
                              const ts_decode_opts *opts, ts_box_fn pick, void *user,
                              ts_crop_box *where, ts_image_info *info, ts_err *err) {
    const uint8_t *b = buf;
    if (!name) name = "(image)";
    out->w = out->h = 0;
    if (n >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF)
        return decode_jpeg_box(out, b, n, name, opts, pick, user, where, info, err);
    ts_status st = ts_image_decode(out, buf, n, name, opts, info, err);
    if (st) return st;
    *where = pick(user, out->w, out->h);
    box_check(*where, out->w, out->h);
    return TS_OK;
}

ts_status ts_image_load_box(ts_image_u8 *out, const char *path, const ts_decode_opts *opts,
                            ts_box_fn pick, void *user, ts_crop_box *where, ts_image_info *info,
                            ts_err *err) {
    out->w = out->h = 0;
    uint8_t *buf;
    size_t n;
    ts_status st = read_file(path, &buf, &n, err);
    if (!st) st = ts_image_decode_box(out, buf, n, path, opts, pick, user, where, info, err);
    free(buf);
    return st;
}
