/* fuzz_png.c: a libFuzzer target for the PNG path of ts_image_decode.
 *
 * Every input is decoded with alpha composited on white and with alpha dropped, and a decoded
 * image is resized once, so that libspng's checks, the tRNS and alpha handling, the IEND check
 * and the eXIf orientation see hostile bytes. The decoder must return TS_OK or an error; a
 * crash, a leak or undefined behaviour is a finding. Correctness is tests/unit_image.c's job.
 *
 * Build and run: fuzz/run.sh (clang, -DTESSERA_FUZZ=ON). A crash file replays with
 * build-fuzz/fuzz/fuzz_png CRASH_FILE; found crashes become regression tests.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "loaders.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* Put the PNG signature in front of inputs that lack it, so that every input reaches
     * libspng instead of the sniffer's "not an image". */
    static const uint8_t sig[8] = { 0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n' };
    static uint8_t copy[1 << 20];
    const uint8_t *in = data;
    size_t n = size;
    if (size < 8 || memcmp(data, sig, 8) != 0) {
        if (size + 8 > sizeof copy) return 0;
        memcpy(copy, sig, 8);
        memcpy(copy + 8, data, size);
        in = copy, n = size + 8;
    }
    ts_image_u8 im, out;
    ts_image_u8_init(&im);
    ts_image_u8_init(&out);
    ts_err err;
    for (int k = 0; k < 2; k++) {
        ts_decode_opts o = { .alpha = k ? TS_ALPHA_DROP : TS_ALPHA_WHITE };
        if (ts_image_decode(&im, in, n, "fuzz.png", &o, NULL, &err) == TS_OK && im.w > 0 &&
            im.h > 0)
            ts_image_resize(&out, &im, 5, 7, k ? TS_INTERP_BICUBIC : TS_INTERP_BILINEAR, &err);
    }
    ts_image_u8_free(&im);
    ts_image_u8_free(&out);
    return 0;
}
