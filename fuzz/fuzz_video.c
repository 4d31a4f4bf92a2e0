/* fuzz_video.c: a libFuzzer target for the video reader (loaders/video.c over FFmpeg).
 *
 * ts_video_open takes a path, so every input is written to a file in /dev/shm (the temporary
 * folder when /dev/shm is missing) and opened as the pipeline opens a clip: the packet scan that
 * counts frames and collects their times, the metadata, both ways of choosing frame indices, and
 * a read of up to four frames (first, last, middle, and the first again, which seeks back) at a
 * small output size. Container probing, the timestamp bookkeeping, accurate seeking and the
 * colour conversion all see hostile bytes. The reader must return frames or an error; a crash,
 * a leak or undefined behaviour in loaders/video.c is a finding. FFmpeg itself is not
 * instrumented, and this is not a test of correctness: tests/unit_video.c is.
 *
 * Seeds: tiny clips fuzz/run.sh encodes with the ffmpeg command (H.264 in mp4, MPEG-4 in
 * Matroska) and the small clips of ../shared/data/video. A crash replays with
 * build-fuzz/fuzz/fuzz_video CRASH_FILE.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "loaders.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void quiet_log(ts_log_level level, const char *msg, void *user) {
    (void)level, (void)msg, (void)user;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ts_log_set_sink(quiet_log, NULL);
    static char path[256];
    const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(path, sizeof path, "%s/tessera-fuzz-%d.video", dir, (int)getpid());
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    size_t w = size ? fwrite(data, 1, size, f) : 0;
    if (fclose(f) != 0 || w != size) return 0;

    ts_err err;
    ts_video *v = NULL;
    if (ts_video_open(&v, path, 1, &err) == TS_OK) {
        const ts_video_info *info = ts_video_get_info(v);
        volatile double sum = info->fps + info->duration + (double)info->header_frames +
                              (double)strlen(info->codec) + (double)strlen(info->container) +
                              (double)strlen(info->pix_fmt);
        int64_t n = info->frames;
        if (n > 0) {
            sum += ts_video_frame_time(v, 0) + ts_video_frame_time(v, n - 1);
            int64_t idx[4] = { 0, n - 1, n / 2, 0 };
            enum { OW = 16, OH = 12 };
            static uint8_t out[4 * OH * OW * 3];
            /* The frames in one call; on error, the first frame alone (a fresh decoder path). */
            if (ts_video_read(v, idx, 4, OW, OH, TS_VSCALE_BILINEAR, out, &err) != TS_OK)
                ts_video_read(v, idx, 1, OW, OH, TS_VSCALE_AREA, out, &err);
            int64_t pick[3];
            if (ts_video_uniform_indices(v, 3, 0.0, -1.0, pick, &err) == TS_OK)
                sum += (double)(pick[0] + pick[1] + pick[2]);
            if (ts_video_fps_indices(v, 3, 0.0, 7.5, pick, &err) == TS_OK)
                sum += (double)(pick[0] + pick[1] + pick[2]);
        }
        (void)sum;
        ts_video_close(v);
    }
    unlink(path);
    return 0;
}
