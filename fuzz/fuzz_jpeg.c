/* fuzz_jpeg.c: a libFuzzer target for the JPEG path of ts_image_decode.
 *
 * Every input is decoded three ways (full size; DCT-scaled with EXIF orientation ignored; at
 * the smallest scale) and a decoded image is resized once, so that the marker walk, the EXIF
 * parser, the scale choice, the CMYK conversion and the orientation transforms all see
 * hostile bytes; then twice over a crop box (ts_image_decode_box, the libjpeg path that skips
 * rows and crops columns), with a box placed by the input's last bytes. The decoder must return TS_OK or an error; a crash, a leak or undefined
 * behaviour is a finding. It is not a test of correctness: tests/unit_image.c is.
 *
 * Build and run: fuzz/run.sh (clang, -DTESSERA_FUZZ=ON). A crash file replays with
 * build-fuzz/fuzz/fuzz_jpeg CRASH_FILE; found crashes become regression tests.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "loaders.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A box inside w x h placed by four bytes of the input (ts_box_fn). */
static ts_crop_box pick_box(void *user, int w, int h) {
    const uint8_t *k = user;
    ts_crop_box b;
    b.w = 1 + (int)((int64_t)k[0] * (w - 1) / 255);
    b.h = 1 + (int)((int64_t)k[1] * (h - 1) / 255);
    b.left = (int)((int64_t)k[2] * (w - b.w) / 255);
    b.top = (int)((int64_t)k[3] * (h - b.h) / 255);
    return b;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* Make every input a JPEG to the sniffer, so the fuzzer spends no time finding FF D8 FF. */
    static uint8_t copy[1 << 20];
    if (size + 3 > sizeof copy) return 0;
    copy[0] = 0xFF, copy[1] = 0xD8, copy[2] = 0xFF;
    size_t n = size;
    const uint8_t *in = data;
    if (!(size >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF)) {
        memcpy(copy + 3, data, size);
        in = copy, n = size + 3;
    }
    ts_image_u8 im, out;
    ts_image_u8_init(&im);
    ts_image_u8_init(&out);
    ts_err err;
    ts_decode_opts opts[3] = { { 0 },
                               { .min_short = 32, .ignore_orientation = 1 },
                               { .min_w = 1, .alpha = TS_ALPHA_DROP } };
    for (int k = 0; k < 3; k++) {
        ts_image_info info;
        if (ts_image_decode(&im, in, n, "fuzz.jpg", &opts[k], &info, &err) == TS_OK && im.w > 0 &&
            im.h > 0)
            ts_image_resize(&out, &im, 7, 5, k ? TS_INTERP_BICUBIC : TS_INTERP_BILINEAR, &err);
    }
    uint8_t key[4] = { 255, 255, 0, 0 };
    if (size >= 4) memcpy(key, data + size - 4, 4);
    for (int k = 0; k < 2; k++) {
        ts_crop_box where;
        if (ts_image_decode_box(&im, in, n, "fuzz.jpg", &opts[k], pick_box, key, &where, NULL,
                                &err) == TS_OK)
            ts_image_resized_crop(&out, &im, where, 7, 5, TS_INTERP_BILINEAR, &err);
    }
    ts_image_u8_free(&im);
    ts_image_u8_free(&out);
    return 0;
}
