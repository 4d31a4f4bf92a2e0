/* transform.c: the image transforms of CLIP-style training, on 8-bit RGB images.
 *
 * Resize with antialiasing, crops, RandomResizedCrop's box sampling, horizontal flip, and
 * ToTensor + Normalize into float CHW. Each function reproduces what
 * torchvision.transforms.functional (0.14) does to a uint8 tensor, down to its rounding, so
 * that a model trained here sees the pixels it would see under open_clip's preprocessing.
 *
 * What it is not: PIL's resize. PIL computes in fixed point and rounds to 8 bits between the
 * horizontal and the vertical pass; torchvision's tensor path (torch's upsample_*_aa kernels)
 * stays in float32 until the end. The two differ by 1 here and there; this file follows
 * torch. Letters: W, H input size, w, h output size; images are (H, W, 3).
 */
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "loaders.h"

const float TS_CLIP_MEAN[3] = { 0.48145466f, 0.4578275f, 0.40821073f };
const float TS_CLIP_STD[3] = { 0.26862954f, 0.26130258f, 0.27577711f };
const float TS_RRC_SCALE[2] = { 0.08f, 1.0f };
const float TS_RRC_RATIO[2] = { 3.0f / 4.0f, 4.0f / 3.0f };

/* ---------------------------------------------------------------------------------------- */
/* Antialiased resize                                                                       */

/* The two filters of torch's antialiased interpolation: the triangle (bilinear) and Keys'
 * cubic convolution with a = -0.5 (bicubic), as PIL uses them too. */
static float filter_linear(float x) {
    if (x < 0.0f) x = -x;
    return x < 1.0f ? 1.0f - x : 0.0f;
}
static float filter_cubic(float x) {
    const float a = -0.5f;
    x = fabsf(x);
    if (x < 1.0f) return ((a + 2.0f) * x - (a + 3.0f)) * x * x + 1.0f;
    if (x < 2.0f) return ((a * x - 5.0f * a) * x + 8.0f * a) * x - 4.0f * a;
    return 0.0f;
}

/* The taps of one output position: input indices xmin .. xmin + n - 1, weights w[0 .. n-1]. */
typedef struct taps {
    int n_out, stride; /* stride: weights per output position */
    int *xmin, *n;
    float *w;
} taps;

static void taps_free(taps *t) {
    free(t->xmin);
    free(t->n);
    free(t->w);
}

/* Weights for resampling in_size samples to out_size, as torch's _compute_weights_aa does:
 * scale = in/out; when downscaling the filter is stretched by scale (support = radius *
 * scale) so that every input sample contributes, which is the antialiasing. Output sample i
 * is centred on input coordinate scale * (i + 0.5); each weight is the filter at the distance
 * from that centre to the centre of input sample j, and the weights are normalised to sum to
 * one. The mix of float and double below is torch's, so that the weights match to the bit. */
static int taps_make(taps *t, int in_size, int out_size, ts_interp interp) {
    float (*filt)(float) = interp == TS_INTERP_BICUBIC ? filter_cubic : filter_linear;
    double radius = interp == TS_INTERP_BICUBIC ? 2.0 : 1.0;
    float scale = (float)in_size / (float)out_size;
    float support = (float)(scale >= 1.0f ? radius * scale : radius);
    float invscale = scale >= 1.0f ? (float)(1.0 / scale) : 1.0f;
    t->n_out = out_size;
    t->stride = (int)ceilf(support) * 2 + 1;
    t->xmin = malloc(sizeof(int) * (size_t)out_size);
    t->n = malloc(sizeof(int) * (size_t)out_size);
    t->w = malloc(sizeof(float) * (size_t)out_size * (size_t)t->stride);
    if (!t->xmin || !t->n || !t->w) return -1;
    for (int i = 0; i < out_size; i++) {
        float center = (float)(scale * (i + 0.5));
        long lo = (long)(center - support + 0.5);
        long hi = (long)(center + support + 0.5);
        int xmin = lo > 0 ? (int)lo : 0;
        int n = (int)((hi < in_size ? hi : in_size) - xmin);
        if (n > t->stride) n = t->stride;
        float *w = t->w + (size_t)i * t->stride, total = 0.0f;
        for (int j = 0; j < n; j++) {
            float d = (float)(j + xmin) - center;
            w[j] = filt((float)((d + 0.5) * invscale));
            total += w[j];
        }
        for (int j = 0; j < n; j++)
            if (total != 0.0f) w[j] /= total;
        t->xmin[i] = xmin;
        t->n[i] = n > 0 ? n : 0;
    }
    return 0;
}

/* The horizontal pass handles ROWS rows at once, their pixels side by side in one register
 * of vf (the vector extension of GCC and Clang: arithmetic lane by lane, each lane rounded as
 * the scalar operation would be), four lanes a pixel (three channels and a spare lane): as
 * many rows as the target's widest float vector holds. The vertical pass uses the same
 * register for 4 ROWS consecutive values of a row. */
#if defined(__AVX512F__)
#define ROWS 4
#elif defined(__AVX__)
#define ROWS 2
#else
#define ROWS 1
#endif
#define LANES (4 * ROWS)
typedef float vf __attribute__((vector_size(LANES * sizeof(float))));
/* acc = p * wt, or acc += p * wt, for the LANES floats at p. Macros, not functions, so that
 * no vf crosses a call, whose ABI would depend on the target's vectors. */
#define VF_MUL(acc, p, wt) (memcpy(&(acc), (p), sizeof(vf)), (acc) *= (wt))
#define VF_MULADD(acc, p, wt)                                                                  \
    do {                                                                                       \
        vf vf_t_;                                                                              \
        memcpy(&vf_t_, (p), sizeof vf_t_);                                                     \
        (acc) += vf_t_ * (wt);                                                                 \
    } while (0)

/* torch.round then the cast to uint8: half to even (the default rounding mode), clamped. */
static inline uint8_t to_u8(float v) {
    v = nearbyintf(v);
    return (uint8_t)(v < 0.0f ? 0.0f : v > 255.0f ? 255.0f : v);
}

/* Resize the W x H window at src (row pitch `pitch` bytes) into out, w x h. Horizontal pass
 * into a float buffer (H, w, 3), then the vertical pass, each a weighted sum accumulated in
 * float32 in index order, as torch's separable kernel does; a pass whose size does not change
 * is skipped (its weights would be the identity). */
static ts_status resize_window(ts_image_u8 *out, const uint8_t *src, size_t pitch, int W, int H,
                               int w, int h, ts_interp interp, ts_err *err) {
    TS_CHECK(W > 0 && H > 0 && w > 0 && h > 0, "resize %d x %d to %d x %d", W, H, w, h);
    ts_status st = ts_image_u8_reserve(out, w, h, err);
    if (st) return st;
    taps tx = { 0 }, ty = { 0 };
    size_t rw = (size_t)w * 3; /* floats in a row of mid, bytes in a row of out */
    float *mid = malloc(sizeof(float) * (size_t)H * rw);
    float *inr = malloc(sizeof(float) * (size_t)W * LANES);
    /* row: a row of the input widened to float (3 W + 1, the last 0), or of the output's
     * sums (3 w) */
    size_t row_n = (size_t)(W > w ? W : w) * 3 + 1;
    float *row = calloc(row_n, sizeof(float));
    if (!mid || !inr || !row || (w != W && taps_make(&tx, W, w, interp)) ||
        (h != H && taps_make(&ty, H, h, interp))) {
        st = ts_fail(err, TS_ERR_NOMEM, "cannot allocate the buffers to resize %d x %d to %d x %d",
                     W, H, w, h);
        goto done;
    }
    /* Horizontal: mid (H, w, 3), ROWS rows at a time, which share the taps. Their pixels are
     * widened to float side by side, LANES floats a column (row r's channels in lanes 4r ..
     * 4r + 2), so that a tap is one multiply and add for the three channels of all the rows;
     * each value is still the same products added in the same order. The last group repeats
     * its last row where fewer than ROWS are left, and stores only the real ones. Four lanes
     * a row are stored, the spare one landing on the next pixel's first value, which is
     * written next; not at a row's last pixel, where it would land on the following row,
     * already written. */
    for (int y = 0; y < H; y += ROWS) {
        int rows = H - y < ROWS ? H - y : ROWS;
        if (w == W) {
            for (int r = 0; r < rows; r++) {
                const uint8_t *s = src + (size_t)(y + r) * pitch;
                float *m = mid + (size_t)(y + r) * rw;
                for (size_t k = 0; k < rw; k++) m[k] = s[k];
            }
            continue;
        }
        for (int r = 0; r < ROWS; r++) {
            const uint8_t *s = src + (size_t)(y + (r < rows ? r : rows - 1)) * pitch;
#if ROWS > 1 /* widened in one pass, then placed four floats at a time */
            for (int k = 0; k < 3 * W; k++) row[k] = s[k]; /* row[3 W] stays 0 */
            for (int x = 0; x < W; x++) memcpy(inr + LANES * x + 4 * r, row + 3 * x, 16);
#else
            for (int x = 0; x < W; x++) {
                inr[4 * x] = s[3 * x], inr[4 * x + 1] = s[3 * x + 1];
                inr[4 * x + 2] = s[3 * x + 2], inr[4 * x + 3] = 0.0f;
            }
#endif
        }
        float *m0 = mid + (size_t)y * rw;
        for (int x = 0; x < w; x++) {
            const float *wt = tx.w + (size_t)x * tx.stride;
            const float *p = inr + (size_t)tx.xmin[x] * LANES;
            vf acc = { 0.0f };
            if (tx.n[x] > 0) VF_MUL(acc, p, wt[0]);
            for (int j = 1; j < tx.n[x]; j++) VF_MULADD(acc, p + LANES * j, wt[j]);
            float a[LANES];
            memcpy(a, &acc, sizeof a);
            if (x + 1 < w) /* constant sizes: each memcpy is one store */
                for (int r = 0; r < rows; r++) memcpy(m0 + r * rw + 3 * x, a + 4 * r, 16);
            else
                for (int r = 0; r < rows; r++) memcpy(m0 + r * rw + 3 * x, a + 4 * r, 12);
        }
    }
    /* Vertical: out (h, w, 3), one output row at a time as a sum of rows of mid, LANES
     * values at a time held in a register over the taps, then the row rounded to 8 bits. */
    for (int y = 0; y < h; y++) {
        uint8_t *o = out->data + (size_t)y * rw;
        if (h == H) {
            const float *m = mid + (size_t)y * rw;
            for (size_t k = 0; k < rw; k++) o[k] = to_u8(m[k]);
            continue;
        }
        const float *wt = ty.w + (size_t)y * ty.stride;
        const float *m = mid + (size_t)ty.xmin[y] * rw;
        int n = ty.n[y];
        if (n == 0) {
            memset(o, 0, rw);
            continue;
        }
        size_t k = 0;
#if LANES >= 8
        for (; k + LANES <= rw; k += LANES) {
            vf acc;
            VF_MUL(acc, m + k, wt[0]);
            for (int j = 1; j < n; j++) VF_MULADD(acc, m + (size_t)j * rw + k, wt[j]);
            memcpy(row + k, &acc, sizeof acc);
        }
#else /* four lanes: tap by tap over the whole row, which the compiler vectorises */
        for (; k < rw; k++) row[k] = m[k] * wt[0];
        for (int j = 1; j < n; j++)
            for (k = 0; k < rw; k++) row[k] += m[(size_t)j * rw + k] * wt[j];
#endif
        for (; k < rw; k++) {
            row[k] = m[k] * wt[0];
            for (int j = 1; j < n; j++) row[k] += m[(size_t)j * rw + k] * wt[j];
        }
        for (k = 0; k < rw; k++) o[k] = to_u8(row[k]);
    }
done:
    taps_free(&tx);
    taps_free(&ty);
    free(mid);
    free(inr);
    free(row);
    return st;
}

ts_status ts_image_resize(ts_image_u8 *out, const ts_image_u8 *in, int out_w, int out_h,
                          ts_interp interp, ts_err *err) {
    TS_CHECK(out != in, "ts_image_resize: out and in are the same image");
    return resize_window(out, in->data, (size_t)in->w * 3, in->w, in->h, out_w, out_h, interp, err);
}

void ts_resize_short_size(int w, int h, int size, int *out_w, int *out_h) {
    TS_CHECK(w > 0 && h > 0 && size > 0, "resize %d x %d to a shorter side of %d", w, h, size);
    int shorter = w <= h ? w : h, longer = w <= h ? h : w;
    /* Python's int(size * long / short): an exact product, one correctly rounded division,
     * truncated. */
    int new_long = (int)((double)((int64_t)size * longer) / shorter);
    *out_w = w <= h ? size : new_long;
    *out_h = w <= h ? new_long : size;
}

ts_status ts_image_resize_short(ts_image_u8 *out, const ts_image_u8 *in, int size, ts_interp interp,
                                ts_err *err) {
    int w, h;
    ts_resize_short_size(in->w, in->h, size, &w, &h);
    return ts_image_resize(out, in, w, h, interp, err);
}

/* ---------------------------------------------------------------------------------------- */
/* Crops                                                                                    */

ts_status ts_image_crop(ts_image_u8 *out, const ts_image_u8 *in, int top, int left, int h, int w,
                        ts_err *err) {
    TS_CHECK(out != in, "ts_image_crop: out and in are the same image");
    TS_CHECK(w > 0 && h > 0, "crop of %d x %d", w, h);
    ts_status st = ts_image_u8_reserve(out, w, h, err);
    if (st) return st;
    int x0 = left < 0 ? -left : 0, x1 = in->w - left < w ? in->w - left : w;
    for (int y = 0; y < h; y++) {
        uint8_t *o = out->data + (size_t)y * w * 3;
        int sy = top + y;
        if (sy < 0 || sy >= in->h || x1 <= x0) {
            memset(o, 0, (size_t)w * 3);
            continue;
        }
        memset(o, 0, (size_t)x0 * 3);
        memcpy(o + (size_t)x0 * 3, in->data + ((size_t)sy * in->w + left + x0) * 3,
               (size_t)(x1 - x0) * 3);
        memset(o + (size_t)x1 * 3, 0, (size_t)(w - x1) * 3);
    }
    return TS_OK;
}

/* Python's int(round(d / 2.0)) for an integer d >= 0: halves go to the even neighbour. */
static int half_round_even(int d) {
    int q = d / 2;
    return (d % 2 != 0 && q % 2 != 0) ? q + 1 : q;
}

/* torchvision pads a too-small image by ((c - W) // 2, (c - W + 1) // 2) on each side and
 * then takes the centred window of the padded image; in the coordinates of the unpadded
 * image that window starts at -((c - W) // 2). */
static int center_offset(int size, int crop) {
    return crop > size ? -((crop - size) / 2) : half_round_even(size - crop);
}

ts_status ts_image_center_crop(ts_image_u8 *out, const ts_image_u8 *in, int h, int w, ts_err *err) {
    return ts_image_crop(out, in, center_offset(in->h, h), center_offset(in->w, w), h, w, err);
}

/* ---------------------------------------------------------------------------------------- */
/* RandomResizedCrop                                                                        */

/* An integer uniform in [0, n), n >= 1. The modulo bias is below 2^-40 for image sizes. */
static int rand_below(ts_rng *r, int n) { return (int)(ts_rng_next(r) % (uint64_t)n); }

ts_crop_box ts_random_resized_crop_box(ts_rng *r, int w, int h, const float scale[2],
                                       const float ratio[2]) {
    TS_CHECK(w > 0 && h > 0, "random resized crop of a %d x %d image", w, h);
    TS_CHECK(scale[0] <= scale[1] && ratio[0] <= ratio[1] && ratio[0] > 0,
             "scale (%g, %g), ratio (%g, %g)", (double)scale[0], (double)scale[1], (double)ratio[0],
             (double)ratio[1]);
    double area = (double)w * h;
    double log_lo = log((double)ratio[0]), log_hi = log((double)ratio[1]);
    for (int attempt = 0; attempt < 10; attempt++) {
        double target = area * (scale[0] + (scale[1] - scale[0]) * (double)ts_rng_uniform(r));
        double aspect = exp(log_lo + (log_hi - log_lo) * (double)ts_rng_uniform(r));
        int cw = (int)nearbyint(sqrt(target * aspect));
        int ch = (int)nearbyint(sqrt(target / aspect));
        if (cw > 0 && cw <= w && ch > 0 && ch <= h) {
            ts_crop_box b = { 0, 0, ch, cw };
            b.top = rand_below(r, h - ch + 1);
            b.left = rand_below(r, w - cw + 1);
            return b;
        }
    }
    /* Ten misses: the whole image, or its centred part with the aspect ratio clamped. */
    double in_ratio = (double)w / h;
    int cw = w, ch = h;
    if (in_ratio < ratio[0])
        ch = (int)nearbyint(w / (double)ratio[0]);
    else if (in_ratio > ratio[1])
        cw = (int)nearbyint(h * (double)ratio[1]);
    ts_crop_box b = { (h - ch) / 2, (w - cw) / 2, ch, cw };
    return b;
}

ts_status ts_image_resized_crop(ts_image_u8 *out, const ts_image_u8 *in, ts_crop_box box, int out_w,
                                int out_h, ts_interp interp, ts_err *err) {
    TS_CHECK(out != in, "ts_image_resized_crop: out and in are the same image");
    TS_CHECK(box.top >= 0 && box.left >= 0 && box.h > 0 && box.w > 0 && box.top + box.h <= in->h &&
                 box.left + box.w <= in->w,
             "crop box (top %d, left %d, %d x %d) outside a %d x %d image", box.top, box.left,
             box.w, box.h, in->w, in->h);
    const uint8_t *src = in->data + ((size_t)box.top * in->w + box.left) * 3;
    return resize_window(out, src, (size_t)in->w * 3, box.w, box.h, out_w, out_h, interp, err);
}

/* ---------------------------------------------------------------------------------------- */
/* Flip and normalisation                                                                   */

void ts_image_hflip(ts_image_u8 *im) {
    for (int y = 0; y < im->h; y++) {
        uint8_t *row = im->data + (size_t)y * im->w * 3;
        for (int a = 0, b = im->w - 1; a < b; a++, b--) {
            uint8_t t[3];
            memcpy(t, row + 3 * a, 3);
            memcpy(row + 3 * a, row + 3 * b, 3);
            memcpy(row + 3 * b, t, 3);
        }
    }
}

/* ToTensor + Normalize of im into out (3, h, w), or of its mirror image when flip is set. Each
 * value as torchvision computes it: x / 255, minus the mean, divided by the standard
 * deviation, all in float32. Where the target has wide vectors (AVX2 and up) the compiler
 * vectorises that arithmetic itself, three times faster than looking the 256 possible values
 * of each channel up in a table; elsewhere the table is faster. Both give the same bits. */
#if defined(__AVX2__)
/* n pixels of s (RGB) into the planes o0, o1, o2 */
static void chw_span(const uint8_t *s, size_t n, const float mean[3], const float std[3],
                     float *o0, float *o1, float *o2) {
    const float m0 = mean[0], m1 = mean[1], m2 = mean[2];
    const float d0 = std[0], d1 = std[1], d2 = std[2];
    for (size_t i = 0; i < n; i++) {
        o0[i] = ((float)s[3 * i] / 255.0f - m0) / d0;
        o1[i] = ((float)s[3 * i + 1] / 255.0f - m1) / d1;
        o2[i] = ((float)s[3 * i + 2] / 255.0f - m2) / d2;
    }
}

/* Mirrored: each row a span of up to SPAN pixels at a time into tmp, copied out back to
 * front, the span starting at column x0 landing at w - x0 - its length. */
#define SPAN 256
static void to_chw(const ts_image_u8 *im, const float mean[3], const float std[3], int flip,
                   float *out) {
    size_t w = (size_t)im->w, n = w * (size_t)im->h;
    float *o0 = out, *o1 = out + n, *o2 = out + 2 * n;
    if (!flip) {
        chw_span(im->data, n, mean, std, o0, o1, o2);
        return;
    }
    float tmp[3 * SPAN];
    for (int y = 0; y < im->h; y++) {
        size_t at = (size_t)y * w;
        for (size_t x0 = 0; x0 < w; x0 += SPAN) {
            size_t c = w - x0 < SPAN ? w - x0 : SPAN;
            chw_span(im->data + (at + x0) * 3, c, mean, std, tmp, tmp + SPAN, tmp + 2 * SPAN);
            size_t d = at + w - x0 - c;
            for (size_t x = 0; x < c; x++) {
                o0[d + x] = tmp[c - 1 - x];
                o1[d + x] = tmp[SPAN + c - 1 - x];
                o2[d + x] = tmp[2 * SPAN + c - 1 - x];
            }
        }
    }
}
#undef SPAN
#else
/* Mirrored: each row read from its end. */
static void to_chw(const ts_image_u8 *im, const float mean[3], const float std[3], int flip,
                   float *out) {
    float lut[3][256];
    for (int c = 0; c < 3; c++)
        for (int v = 0; v < 256; v++) lut[c][v] = ((float)v / 255.0f - mean[c]) / std[c];
    size_t w = (size_t)im->w, n = w * (size_t)im->h;
    float *o0 = out, *o1 = out + n, *o2 = out + 2 * n;
    for (int y = 0; y < im->h; y++) {
        const uint8_t *s = im->data + (size_t)y * w * 3 + (flip ? (w - 1) * 3 : 0);
        ptrdiff_t step = flip ? -3 : 3;
        for (size_t i = (size_t)y * w, e = i + w; i < e; i++, s += step) {
            o0[i] = lut[0][s[0]];
            o1[i] = lut[1][s[1]];
            o2[i] = lut[2][s[2]];
        }
    }
}
#endif

void ts_image_to_chw(const ts_image_u8 *im, const float mean[3], const float std[3], float *out) {
    to_chw(im, mean, std, 0, out);
}

void ts_image_to_chw_hflip(const ts_image_u8 *im, const float mean[3], const float std[3],
                           float *out) {
    to_chw(im, mean, std, 1, out);
}
