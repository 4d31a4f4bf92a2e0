/* loaders.h: the public header of tessera's input layer.
 *
 * Image decoders (JPEG through libjpeg-turbo's TurboJPEG API, PNG through libspng) that turn a
 * file or a memory buffer into an 8-bit RGB image, and the image transforms of CLIP-style
 * training (resize with antialiasing, center crop, RandomResizedCrop, horizontal flip,
 * normalisation to float CHW), written to match torchvision 0.14 on uint8 tensors.
 *
 * What this header deliberately is not: a general imaging library. Every decoded image is
 * 8-bit RGB, height x width x 3 (HWC), row-major and contiguous; there is no colour management
 * (ICC profiles are ignored, as PIL and torchvision ignore them) and no 16-bit output.
 *
 * This layer includes only core/tessera.h. Errors from outside (a truncated JPEG, a PNG with a
 * bad CRC) return a ts_status and leave a message in the ts_err that names the file or the
 * sample; bad arguments from the program itself (a negative size) stop with TS_CHECK.
 */
#ifndef TESSERA_LOADERS_H
#define TESSERA_LOADERS_H

#include <stddef.h>
#include <stdint.h>

#include "tessera.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------------------------------- */
/* Images                                                                                   */

/* An 8-bit RGB image: data is (h, w, 3), row-major, no padding between rows. The struct owns
 * data; cap is the allocated size in bytes, so that a worker can decode and transform image
 * after image into the same buffers without calling malloc once they have grown. */
typedef struct ts_image_u8 {
    int w, h;
    uint8_t *data; /* (h, w, 3) */
    size_t cap;    /* bytes allocated at data */
} ts_image_u8;

/* An empty image (w = h = 0, no buffer). Every function below accepts an image in this state. */
void ts_image_u8_init(ts_image_u8 *im);
/* Release the buffer and return to the empty state. NULL is a no-op. */
void ts_image_u8_free(ts_image_u8 *im);
/* Make im w x h, growing its buffer if needed; the pixels are left undefined. Returns
 * TS_ERR_NOMEM (message naming the size) when the allocation fails. w, h >= 0. */
ts_status ts_image_u8_reserve(ts_image_u8 *im, int w, int h, ts_err *err);

/* How an alpha channel becomes RGB: composited on white (out = (c*a + 255*(255-a)) / 255,
 * rounded), or dropped (the colour as stored, which is what PIL's convert("RGB") does). */
typedef enum { TS_ALPHA_WHITE, TS_ALPHA_DROP } ts_alpha_mode;

/* Decoding options. A zeroed struct is the default: full size, alpha on white, EXIF
 * orientation applied. The minimum sizes let a JPEG decode straight to a smaller size through
 * DCT-domain scaling (1/8, 2/8, ..., 8/8): the smallest scale whose result, after orientation,
 * is at least min_w wide, min_h high and has a shorter side of at least min_short. An image
 * already smaller than that is decoded at full size, never upscaled. PNG ignores them. */
typedef struct ts_decode_opts {
    int min_w, min_h;       /* 0: no constraint */
    int min_short;          /* 0: no constraint; e.g. 224 before Resize(224) */
    ts_alpha_mode alpha;    /* TS_ALPHA_WHITE by default */
    int ignore_orientation; /* 1: keep the stored orientation, as torchvision.io.decode_jpeg */
} ts_decode_opts;

/* What a decode found out about the file, for `tessera data inspect` and for tests. */
typedef enum { TS_IMG_JPEG, TS_IMG_PNG } ts_image_format;
typedef struct ts_image_info {
    ts_image_format format;
    int stored_w, stored_h; /* as stored in the file, before scaling and orientation */
    int orientation;        /* EXIF orientation 1..8 (1 when absent) */
    int scale_num, scale_den; /* the DCT scale used (1/1 for PNG) */
} ts_image_info;

/* Decode a JPEG or PNG (told apart by their signatures) held in memory into out (which may
 * already hold a buffer; it is reused when large enough). name names the sample in error
 * messages: a path, or "shard-000001.tar:key.jpg". opts and info may be NULL.
 * Returns TS_OK, or TS_ERR_FORMAT for a corrupt, truncated or unknown file, or one libjpeg
 * cannot decode (12-bit); every libjpeg warning, such as "Premature end of JPEG file",
 * counts as an error, so there is never a partial image. Junk bytes between the segments of a
 * JPEG header are skipped, as PIL skips them. TS_ERR_UNSUPPORTED for WebP and GIF,
 * TS_ERR_NOMEM. An image whose decoded size (after DCT scaling) is over 2^28 pixels is refused
 * (TS_ERR_FORMAT) before any allocation.
 * On error out keeps its buffer but is empty-sized (w = h = 0). */
ts_status ts_image_decode(ts_image_u8 *out, const void *buf, size_t n, const char *name,
                          const ts_decode_opts *opts, ts_image_info *info, ts_err *err);
/* The same for a file; the path names it in errors. TS_ERR_IO when it cannot be read. */
ts_status ts_image_load(ts_image_u8 *out, const char *path, const ts_decode_opts *opts,
                        ts_image_info *info, ts_err *err);

/* The EXIF orientation (1..8) of a JPEG (APP1 "Exif") or of a TIFF-structured EXIF block as a
 * PNG eXIf chunk holds it; 1 when there is none or it cannot be read. Never fails. */
int ts_jpeg_orientation(const void *buf, size_t n);
int ts_exif_orientation(const void *tiff, size_t n);
/* Apply EXIF orientation o (1..8) so that the image displays upright: 2 mirror, 3 rotate 180,
 * 4 flip vertically, 5 transpose, 6 rotate 90 clockwise, 7 transverse, 8 rotate 90
 * counter-clockwise (PIL's ImageOps.exif_transpose). tmp is scratch space (grown as needed);
 * the result replaces im. */
ts_status ts_image_orient(ts_image_u8 *im, int o, ts_image_u8 *tmp, ts_err *err);

/* ---------------------------------------------------------------------------------------- */
/* Transforms (torchvision.transforms.functional on uint8 tensors)                          */

typedef enum { TS_INTERP_BILINEAR, TS_INTERP_BICUBIC } ts_interp;

/* Resize in to out_w x out_h with antialiasing, as F.resize(t, (out_h, out_w), interpolation,
 * antialias=True) does on a uint8 tensor: separable filters (triangle, or Keys cubic with
 * a = -0.5) whose support widens by the downscale factor, horizontal pass then vertical, in
 * float32, rounded half to even and clamped to 0..255. out must not be in. */
ts_status ts_image_resize(ts_image_u8 *out, const ts_image_u8 *in, int out_w, int out_h,
                          ts_interp interp, ts_err *err);
/* The size Resize(size) gives an image of w x h: the shorter side becomes size, the longer
 * side int(size * long / short), as torchvision computes it. */
void ts_resize_short_size(int w, int h, int size, int *out_w, int *out_h);
/* Resize so that the shorter side is size (torchvision's Resize(size)). */
ts_status ts_image_resize_short(ts_image_u8 *out, const ts_image_u8 *in, int size,
                                ts_interp interp, ts_err *err);

/* Copy the h x w window whose top-left corner is (top, left) in in; pixels outside in are 0,
 * as F.crop pads. top and left may be negative. out must not be in. */
ts_status ts_image_crop(ts_image_u8 *out, const ts_image_u8 *in, int top, int left, int h,
                        int w, ts_err *err);
/* F.center_crop(img, (h, w)): offsets int(round((H - h) / 2)) with Python's half-to-even
 * rounding, zero padding when the image is smaller than the crop. */
ts_status ts_image_center_crop(ts_image_u8 *out, const ts_image_u8 *in, int h, int w,
                               ts_err *err);

/* A crop window: rows top..top+h-1, columns left..left+w-1. */
typedef struct ts_crop_box {
    int top, left, h, w;
} ts_crop_box;

/* RandomResizedCrop.get_params of torchvision: up to 10 tries of an area fraction uniform in
 * [scale[0], scale[1]] and a log-uniform aspect ratio in [ratio[0], ratio[1]]; a try that fits
 * takes a uniform position; after 10 misses, the largest centred crop whose aspect ratio is
 * clamped into the range. Draws from r only; the same r state gives the same box. */
ts_crop_box ts_random_resized_crop_box(ts_rng *r, int w, int h, const float scale[2],
                                       const float ratio[2]);
/* torchvision's defaults: scale (0.08, 1), ratio (3/4, 4/3). */
extern const float TS_RRC_SCALE[2], TS_RRC_RATIO[2];
/* F.resized_crop: crop box out of in, then resize it to out_w x out_h (antialiased). The
 * box must lie inside in (as every box from ts_random_resized_crop_box does). */
ts_status ts_image_resized_crop(ts_image_u8 *out, const ts_image_u8 *in, ts_crop_box box,
                                int out_w, int out_h, ts_interp interp, ts_err *err);

/* Mirror left-right in place (F.hflip). */
void ts_image_hflip(ts_image_u8 *im);

/* CLIP's normalisation constants (OpenAI CLIP, open_clip OPENAI_DATASET_MEAN/STD). */
extern const float TS_CLIP_MEAN[3], TS_CLIP_STD[3];

/* ToTensor then Normalize(mean, std): out (3, h, w) float32 gets (x / 255 - mean[c]) / std[c],
 * computed in float32 in that order. out holds 3 * w * h floats (a slot of a batch buffer). */
void ts_image_to_chw(const ts_image_u8 *im, const float mean[3], const float std[3],
                     float *out /* (3, h, w) */);

#ifdef __cplusplus
}
#endif

#endif
