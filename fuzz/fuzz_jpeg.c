/* fuzz_jpeg.c: a libFuzzer target for the JPEG path of ts_image_decode.
 *
 * Every input is decoded three ways (full size; DCT-scaled with EXIF orientation ignored; at
 * the smallest scale) and a decoded image is resized once, so that the marker walk, the EXIF
 * parser, the scale choice, the CMYK conversion and the orientation transforms all see
 * hostile bytes. The decoder must return TS_OK or an error; a crash, a leak or undefined
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
    ts_image_u8_free(&im);
    ts_image_u8_free(&out);
    return 0;
}
