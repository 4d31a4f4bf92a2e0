/* unit_video.c: video decoding, accurate seeking and frame sampling (loaders/video.c).
 *
 * Without arguments the test encodes its own clips through libavcodec and libavformat: MPEG-4
 * part 2 with B-frames in mp4 and in Matroska, and H.264 with B-frames through libx264 when
 * this FFmpeg has it. Every frame carries its own number as a row of black and white blocks,
 * so a decoded frame says which frame it is. Checked: the frame table (count, times, fps),
 * that a sequential read gives frames 0, 1, 2, ... in order, that each frame read alone after
 * a seek (in shuffled and in reverse order) is bit-identical to the sequential one, the
 * uniform and fps index rules, scaling to other sizes, and that truncated files are errors
 * naming the file.
 *
 * With the shared data folder as argument (ctest's unit_video_samples) it does the same
 * seek-versus-sequential check on the real clips (H.264 4:2:0 and 4:4:4 in mp4 and Matroska,
 * AV1 from a LeRobot dataset), checks their frame counts and sizes, and prints frames/s.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/opt.h>

#include "loaders.h"
#include "tessera.h"

static const char *g_data; /* the shared data folder, NULL when run without one */
static char g_tmp[512];    /* scratch folder under the build tree */

enum { VW = 160, VH = 128, NFRAMES = 50, FPS = 25, BITS = 8, BLOCK = 16 };

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void tmp_path(char *buf, size_t n, const char *name) {
    snprintf(buf, n, "%s/%s", g_tmp, name);
}

/* ---------------------------------------------------------------------------------------- */
/* Writing test clips                                                                       */

/* Frame i: a smooth moving gradient, and the bits of i as 16 x 16 blocks along the top
 * (white for 1, black for 0) that survive lossy coding. */
static void draw(AVFrame *f, int i) {
    for (int y = 0; y < VH; y++)
        for (int x = 0; x < VW; x++) {
            int v = 64 + ((x + 2 * i) & 63) + (y & 63);
            if (y >= 8 && y < 8 + BLOCK && x >= 8 && x < 8 + BITS * BLOCK)
                v = (i >> ((x - 8) / BLOCK)) & 1 ? 235 : 16;
            f->data[0][y * f->linesize[0] + x] = (uint8_t)v;
        }
    for (int y = 0; y < VH / 2; y++)
        for (int x = 0; x < VW / 2; x++) {
            f->data[1][y * f->linesize[1] + x] = (uint8_t)(128 + ((x + i) & 15));
            f->data[2][y * f->linesize[2] + x] = (uint8_t)(128 - ((y + i) & 15));
        }
}

/* The frame number a decoded RGB frame of size w x h carries. */
static int read_number(const uint8_t *rgb, int w, int h) {
    int n = 0;
    for (int b = 0; b < BITS; b++) {
        int x = (8 + b * BLOCK + BLOCK / 2) * w / VW, y = (8 + BLOCK / 2) * h / VH;
        if (rgb[((size_t)y * w + x) * 3 + 1] > 128) n |= 1 << b;
    }
    return n;
}

static int write_packets(AVCodecContext *enc, AVFormatContext *oc, AVStream *st, AVFrame *f) {
    AVPacket *pkt = av_packet_alloc();
    int rc = avcodec_send_frame(enc, f);
    while (rc >= 0) {
        rc = avcodec_receive_packet(enc, pkt);
        if (rc == AVERROR(EAGAIN) || rc == AVERROR_EOF) {
            rc = 0;
            break;
        }
        pkt->duration = 1; /* one frame, so that mp4's edit list covers the last one */
        av_packet_rescale_ts(pkt, enc->time_base, st->time_base);
        pkt->stream_index = st->index;
        rc = av_interleaved_write_frame(oc, pkt);
    }
    av_packet_free(&pkt);
    return rc;
}

/* Encode NFRAMES frames with encoder `codec` into path (container from the extension).
 * Returns 0, or -1 when the encoder is not in this FFmpeg. faststart puts mp4's index first. */
static int write_clip(const char *path, const char *codec, int faststart) {
    const AVCodec *c = avcodec_find_encoder_by_name(codec);
    if (!c) return -1;
    AVFormatContext *oc = NULL;
    assert_true(avformat_alloc_output_context2(&oc, NULL, NULL, path) >= 0);
    AVStream *st = avformat_new_stream(oc, NULL);
    AVCodecContext *enc = avcodec_alloc_context3(c);
    enc->width = VW;
    enc->height = VH;
    enc->pix_fmt = AV_PIX_FMT_YUV420P;
    enc->time_base = (AVRational){ 1, FPS };
    enc->framerate = (AVRational){ FPS, 1 };
    enc->gop_size = 12;
    enc->max_b_frames = 2;
    enc->bit_rate = 2000000;
    enc->thread_count = 1;
    if (oc->oformat->flags & AVFMT_GLOBALHEADER) enc->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
    if (!strcmp(codec, "libx264")) av_opt_set(enc->priv_data, "preset", "veryfast", 0);
    assert_true(avcodec_open2(enc, c, NULL) >= 0);
    avcodec_parameters_from_context(st->codecpar, enc);
    st->time_base = enc->time_base;
    assert_true(avio_open(&oc->pb, path, AVIO_FLAG_WRITE) >= 0);
    AVDictionary *opt = NULL;
    if (faststart) av_dict_set(&opt, "movflags", "faststart", 0);
    assert_true(avformat_write_header(oc, &opt) >= 0);
    av_dict_free(&opt);
    AVFrame *f = av_frame_alloc();
    f->format = enc->pix_fmt;
    f->width = VW;
    f->height = VH;
    assert_true(av_frame_get_buffer(f, 0) >= 0);
    for (int i = 0; i < NFRAMES; i++) {
        assert_true(av_frame_make_writable(f) >= 0);
        draw(f, i);
        f->pts = i;
        assert_true(write_packets(enc, oc, st, f) >= 0);
    }
    assert_true(write_packets(enc, oc, st, NULL) >= 0);
    assert_true(av_write_trailer(oc) >= 0);
    av_frame_free(&f);
    avcodec_free_context(&enc);
    avio_closep(&oc->pb);
    avformat_free_context(oc);
    return 0;
}

/* Copy the first frac of src to dst. */
static void cut_file(const char *src, const char *dst, double frac) {
    FILE *in = fopen(src, "rb");
    assert_non_null(in);
    fseek(in, 0, SEEK_END);
    long n = ftell(in);
    fseek(in, 0, SEEK_SET);
    char *buf = malloc((size_t)n);
    assert_int_equal(fread(buf, 1, (size_t)n, in), (size_t)n);
    fclose(in);
    FILE *out = fopen(dst, "wb");
    fwrite(buf, 1, (size_t)((double)n * frac), out);
    fclose(out);
    free(buf);
}

/* ---------------------------------------------------------------------------------------- */
/* Seek against sequential                                                                  */

static uint64_t fnv(const uint8_t *p, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

/* Hash every frame of a sequential read, then read ntests frames one at a time in a shuffled
 * order (each a seek or a jump backwards) and all of them in one call in reverse order, and
 * require equal hashes. Returns the sequential frames/s. numbered: also check the numbers. */
static double seek_vs_sequential(const char *path, int ow, int oh, int ntests, int numbered) {
    ts_video *v;
    ts_err err;
    if (ts_video_open(&v, path, 1, &err)) fail_msg("%s", err.msg);
    const ts_video_info *in = ts_video_get_info(v);
    int64_t n = in->frames;
    int w = ow ? ow : in->w, h = oh ? oh : in->h;
    size_t fs = (size_t)w * h * 3;
    uint8_t *buf = malloc(fs);
    uint64_t *seq = malloc(sizeof *seq * (size_t)n);
    double t0 = now();
    for (int64_t i = 0; i < n; i++) {
        if (ts_video_read(v, &i, 1, ow, oh, TS_VSCALE_BICUBIC, buf, &err)) fail_msg("%s", err.msg);
        seq[i] = fnv(buf, fs);
        if (numbered && read_number(buf, w, h) != (int)i)
            fail_msg("%s: frame %" PRId64 " carries number %d", path, i, read_number(buf, w, h));
    }
    double fps = (double)n / (now() - t0);
    ts_rng r;
    ts_rng_seed(&r, 7);
    for (int t = 0; t < ntests; t++) {
        int64_t i = (int64_t)(ts_rng_next(&r) % (uint64_t)n);
        if (t == 0) i = n - 1;
        if (t == 1) i = 0;
        if (ts_video_read(v, &i, 1, ow, oh, TS_VSCALE_BICUBIC, buf, &err)) fail_msg("%s", err.msg);
        if (fnv(buf, fs) != seq[i]) fail_msg("%s: frame %" PRId64 " after a seek differs", path, i);
    }
    int K = n < 12 ? (int)n : 12;
    int64_t idx[12];
    for (int k = 0; k < K; k++) idx[k] = n - 1 - k * (n - 1) / (K > 1 ? K - 1 : 1);
    idx[K - 1] = idx[0]; /* a repeat */
    uint8_t *many = malloc(fs * (size_t)K);
    if (ts_video_read(v, idx, K, ow, oh, TS_VSCALE_BICUBIC, many, &err)) fail_msg("%s", err.msg);
    for (int k = 0; k < K; k++)
        if (fnv(many + fs * (size_t)k, fs) != seq[idx[k]])
            fail_msg("%s: frame %" PRId64 " of a batch read differs", path, idx[k]);
    free(many);
    free(seq);
    free(buf);
    ts_video_close(v);
    return fps;
}

/* ---------------------------------------------------------------------------------------- */
/* Generated clips                                                                          */

static void generated_clips_seek_exactly(void **state) {
    (void)state;
    const char *clips[][2] = { { "mpeg4.mp4", "mpeg4" }, { "mpeg4.mkv", "mpeg4" },
                               { "x264.mp4", "libx264" }, { "x264.mkv", "libx264" } };
    for (int c = 0; c < 4; c++) {
        char path[600];
        tmp_path(path, sizeof path, clips[c][0]);
        if (write_clip(path, clips[c][1], 0)) {
            printf("  %s: no %s encoder in this FFmpeg, skipped\n", clips[c][0], clips[c][1]);
            continue;
        }
        ts_video *v;
        ts_err err;
        if (ts_video_open(&v, path, 1, &err)) fail_msg("%s", err.msg);
        const ts_video_info *in = ts_video_get_info(v);
        assert_int_equal(in->frames, NFRAMES);
        assert_int_equal(in->w, VW);
        assert_int_equal(in->h, VH);
        assert_true(fabs(in->fps - FPS) < 1e-6);
        assert_true(fabs(in->duration - (double)NFRAMES / FPS) < 1e-3);
        for (int i = 0; i < NFRAMES; i++)
            assert_true(fabs(ts_video_frame_time(v, i) - (double)i / FPS) < 1e-3);
        printf("  %s: %s in %s, %" PRId64 " frames (header: %" PRId64 "), %.2f fps, %.2f s\n",
               clips[c][0], in->codec, in->container, in->frames, in->header_frames, in->fps,
               in->duration);
        ts_video_close(v);
        seek_vs_sequential(path, 0, 0, 25, 1);
        seek_vs_sequential(path, 224, 224, 10, 1);
        seek_vs_sequential(path, 80, 64, 10, 1);
    }
}

static void sampling_rules(void **state) {
    (void)state;
    char path[600];
    tmp_path(path, sizeof path, "mpeg4.mp4");
    assert_int_equal(write_clip(path, "mpeg4", 0), 0);
    ts_video *v;
    ts_err err;
    if (ts_video_open(&v, path, 1, &err)) fail_msg("%s", err.msg);
    int64_t idx[8];
    /* torch.linspace(0, 49, 8).long() = 0, 7, 14, 21, 28, 35, 42, 49 */
    if (ts_video_uniform_indices(v, 8, 0, 0, idx, &err)) fail_msg("%s", err.msg);
    for (int k = 0; k < 8; k++) assert_int_equal(idx[k], 7 * k);
    /* [1.0 s, 1.6 s) holds frames 25..39: linspace(0, 14, 4).long() = 0, 4, 9, 14 */
    if (ts_video_uniform_indices(v, 4, 1.0, 1.6, idx, &err)) fail_msg("%s", err.msg);
    assert_true(idx[0] == 25 && idx[1] == 29 && idx[2] == 34 && idx[3] == 39);
    assert_int_equal(ts_video_uniform_indices(v, 4, 3.0, 4.0, idx, &err), TS_ERR_DATA);
    assert_non_null(strstr(err.msg, "mpeg4.mp4"));
    /* 5 fps from 0.52 s: 0.52, 0.72, 0.92, ... are frames 13, 18, 23, ...; past the end, 49. */
    if (ts_video_fps_indices(v, 8, 0.52, 5, idx, &err)) fail_msg("%s", err.msg);
    const int64_t want[8] = { 13, 18, 23, 28, 33, 38, 43, 48 };
    for (int k = 0; k < 8; k++) assert_int_equal(idx[k], want[k]);
    if (ts_video_fps_indices(v, 3, 1.91, 2, idx, &err)) fail_msg("%s", err.msg);
    assert_true(idx[0] == 48 && idx[1] == 49 && idx[2] == 49);
    assert_int_equal(ts_video_fps_indices(v, 3, 2.5, 2, idx, &err), TS_ERR_DATA);
    /* The frames read by those indices carry those numbers, scaled with area averaging. */
    if (ts_video_fps_indices(v, 8, 0.52, 5, idx, &err)) fail_msg("%s", err.msg);
    uint8_t *out = malloc((size_t)8 * 96 * 80 * 3);
    if (ts_video_read(v, idx, 8, 96, 80, TS_VSCALE_AREA, out, &err)) fail_msg("%s", err.msg);
    for (int k = 0; k < 8; k++)
        assert_int_equal(read_number(out + (size_t)k * 96 * 80 * 3, 96, 80), want[k]);
    free(out);
    ts_video_close(v);
}

static void truncated_and_bad_files(void **state) {
    (void)state;
    char full[600], cut[600];
    ts_video *v = NULL;
    ts_err err;
    /* mp4 with its index at the end: cut, the index is gone. */
    tmp_path(full, sizeof full, "mpeg4.mp4");
    assert_int_equal(write_clip(full, "mpeg4", 0), 0);
    tmp_path(cut, sizeof cut, "cut_end_index.mp4");
    cut_file(full, cut, 0.5);
    assert_int_equal(ts_video_open(&v, cut, 1, &err), TS_ERR_FORMAT);
    printf("  mp4 cut, index at the end: %s\n", err.msg);
    assert_non_null(strstr(err.msg, "cut_end_index.mp4"));
    /* mp4 with its index first: the index lists frames that are not in the file. */
    tmp_path(full, sizeof full, "faststart.mp4");
    assert_int_equal(write_clip(full, "mpeg4", 1), 0);
    tmp_path(cut, sizeof cut, "cut_faststart.mp4");
    cut_file(full, cut, 0.6);
    assert_int_equal(ts_video_open(&v, cut, 1, &err), TS_ERR_FORMAT);
    printf("  mp4 cut, index first: %s\n", err.msg);
    assert_non_null(strstr(err.msg, "cut_faststart.mp4"));
    /* Matroska has no frame count: a cut file either fails to open or holds fewer frames,
     * and every frame it claims either decodes or fails with the file's name. */
    tmp_path(full, sizeof full, "mpeg4.mkv");
    assert_int_equal(write_clip(full, "mpeg4", 0), 0);
    tmp_path(cut, sizeof cut, "cut.mkv");
    cut_file(full, cut, 0.6);
    ts_status st = ts_video_open(&v, cut, 1, &err);
    if (st) {
        printf("  mkv cut: %s\n", err.msg);
        assert_non_null(strstr(err.msg, "cut.mkv"));
    } else {
        int64_t n = ts_video_get_info(v)->frames;
        assert_true(n < NFRAMES);
        uint8_t *buf = malloc((size_t)VW * VH * 3);
        int64_t bad = -1;
        for (int64_t i = 0; i < n && bad < 0; i++) {
            if (ts_video_read(v, &i, 1, 0, 0, TS_VSCALE_BICUBIC, buf, &err)) bad = i;
            else /* B-frames may be missing before the cut: the number is the time's */
                assert_int_equal(read_number(buf, VW, VH),
                                 (int)lround(ts_video_frame_time(v, i) * FPS));
        }
        if (bad >= 0) assert_non_null(strstr(err.msg, "cut.mkv"));
        printf("  mkv cut: opens with %" PRId64 " of %d frames; %s\n", n, NFRAMES,
               bad >= 0 ? err.msg : "each decodes to the frame of its timestamp");
        free(buf);
        ts_video_close(v);
    }
    /* Garbage, and a file that does not exist. */
    tmp_path(cut, sizeof cut, "garbage.mp4");
    FILE *f = fopen(cut, "wb");
    for (int i = 0; i < 5000; i++) fputc((i * 7919) & 255, f);
    fclose(f);
    assert_int_not_equal(ts_video_open(&v, cut, 1, &err), TS_OK);
    printf("  garbage: %s\n", err.msg);
    assert_non_null(strstr(err.msg, "garbage.mp4"));
    assert_int_equal(ts_video_open(&v, "/nonexistent/clip.mp4", 1, &err), TS_ERR_IO);
    assert_non_null(strstr(err.msg, "/nonexistent/clip.mp4"));
}

/* ---------------------------------------------------------------------------------------- */
/* The real clips                                                                           */

static void samples_real_clips(void **state) {
    (void)state;
    static const struct {
        const char *file, *codec;
        int w, h;
        int64_t frames;
        double fps;
    } clips[] = {
        { "video/realshort.mp4", "h264", 320, 240, 36, 45000.0 / 1499 },
        { "video/cockatoo.mp4", "h264", 1280, 720, 280, 20 },
        { "video/test.webm", "h264", 640, 480, 94, 30 },
        { "lerobot/g1_v21/videos/chunk-000/observation.images.cam_high/episode_000010.mp4", "av1",
          640, 480, 290, 30 },
        { "lerobot/g1_v21/videos/chunk-000/observation.images.cam_high/episode_000029.mp4", "av1",
          640, 480, 221, 30 },
    };
    for (size_t c = 0; c < sizeof clips / sizeof clips[0]; c++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", g_data, clips[c].file);
        ts_video *v;
        ts_err err;
        if (ts_video_open(&v, path, 1, &err)) fail_msg("%s", err.msg);
        const ts_video_info *in = ts_video_get_info(v);
        assert_string_equal(in->codec, clips[c].codec);
        assert_int_equal(in->w, clips[c].w);
        assert_int_equal(in->h, clips[c].h);
        assert_int_equal(in->frames, clips[c].frames);
        assert_true(fabs(in->fps - clips[c].fps) < 1e-6);
        char info[256];
        snprintf(info, sizeof info, "%s %s %dx%d, %" PRId64 " frames, %.3f fps, %.3f s",
                 in->codec, in->pix_fmt, in->w, in->h, in->frames, in->fps, in->duration);
        ts_video_close(v);
        double native = seek_vs_sequential(path, 0, 0, 12, 0);
        double small = seek_vs_sequential(path, 224, 224, 6, 0);
        printf("  %s: %s; seeks exact; sequential decode %.0f frames/s (native), %.0f frames/s "
               "(224x224)\n", strrchr(clips[c].file, '/') + 1, info, native, small);
    }
}

int main(int argc, char **argv) {
    snprintf(g_tmp, sizeof g_tmp, "%s/unit_video_tmp", TS_BINARY_DIR);
    mkdir(g_tmp, 0755);
    if (argc > 1) {
        g_data = argv[1];
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(samples_real_clips),
        };
        return cmocka_run_group_tests_name("unit_video_samples", tests, NULL, NULL);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(generated_clips_seek_exactly),
        cmocka_unit_test(sampling_rules),
        cmocka_unit_test(truncated_and_bad_files),
    };
    return cmocka_run_group_tests_name("unit_video", tests, NULL, NULL);
}
