/* video.c: frames out of video files through FFmpeg, found by exact timestamp.
 *
 * libavformat opens the container, libavcodec decodes (libdav1d for AV1 in Debian's build),
 * libswscale converts to RGB at the target size. At open the packets of the video stream are
 * read once without decoding to build a frame table: every frame's presentation timestamp in
 * presentation order, and the keyframes with their decode timestamps. With it, frame i has an
 * exact timestamp; reading it means seeking to the last keyframe whose timestamp is not after
 * it, then decoding forward and dropping frames until that timestamp comes out (accurate
 * seeking, as torchvision's and decord's readers do it). Reads in increasing order decode
 * straight on when no keyframe lies between the current position and the target.
 *
 * What it is not: an audio reader, a hardware decoder or a streaming reader (the frame table
 * needs the whole file); variable frame rate is handled through the table, not resampled.
 */
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/imgutils.h>
#include <libavutil/pixdesc.h>
#include <libswscale/swscale.h>

#include "loaders.h"

struct ts_video {
    char *path;
    ts_video_info info;
    AVFormatContext *fmt;
    AVCodecContext *dec;
    AVPacket *pkt;
    AVFrame *frame;
    int stream;
    AVRational tb;          /* the stream's time base */
    int64_t *pts;           /* (frames) presentation timestamps, sorted */
    int64_t *kf_pts, *kf_seek; /* (nkf) keyframe pts, sorted, and where to seek for each */
    int64_t nkf;
    int64_t last_pts;       /* pts of the last frame the decoder gave; INT64_MIN after a seek */
    int eof;                /* the decoder has been drained: a seek is needed to go on */
    int fresh;              /* nothing decoded since open or the last seek */
    struct SwsContext *sws;
    uint8_t *rgb[4];        /* aligned scratch for swscale's output */
    int rgb_stride[4];
    int rgb_w, rgb_h;
};

/* FFmpeg logs through a global callback; route it into tessera's log at debug level, so
 * decoder chatter ("libdav1d 1.0.0") stays off stderr while the errors come back as ts_err. */
static void av_log_to_ts(void *avcl, int level, const char *fmt, va_list vl) {
    (void)avcl;
    if (level > AV_LOG_WARNING) return;
    char line[512];
    vsnprintf(line, sizeof line, fmt, vl);
    size_t n = strlen(line);
    if (n && line[n - 1] == '\n') line[n - 1] = 0;
    ts_log(TS_LOG_DEBUG, "ffmpeg: %s", line);
}
static pthread_once_t log_once = PTHREAD_ONCE_INIT;
static void log_init(void) { av_log_set_callback(av_log_to_ts); }

static const char *averr(int e, char buf[AV_ERROR_MAX_STRING_SIZE]) {
    av_strerror(e, buf, AV_ERROR_MAX_STRING_SIZE);
    return buf;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

void ts_video_close(ts_video *v) {
    if (!v) return;
    sws_freeContext(v->sws);
    av_freep(&v->rgb[0]);
    av_frame_free(&v->frame);
    av_packet_free(&v->pkt);
    avcodec_free_context(&v->dec);
    avformat_close_input(&v->fmt);
    free(v->pts);
    free(v->kf_pts);
    free(v->kf_seek);
    free(v->path);
    free(v);
}

/* ---------------------------------------------------------------------------------------- */
/* Opening: the stream, the decoder, the frame table                                        */

typedef struct kf {
    int64_t pts, seek;
} kf;
static int cmp_kf(const void *a, const void *b) { return cmp_i64(a, b); }

/* Read every packet of the video stream: timestamps, keyframes, and the checks that catch a
 * truncated file. */
static ts_status build_table(ts_video *v, ts_err *err) {
    char eb[AV_ERROR_MAX_STRING_SIZE];
    int64_t cap = 256, n = 0, nk = 0, last_dur = 0, npackets = 0;
    kf *k = malloc(sizeof *k * (size_t)cap);
    v->pts = malloc(sizeof *v->pts * (size_t)cap);
    if (!k || !v->pts) goto nomem;
    int rc;
    while ((rc = av_read_frame(v->fmt, v->pkt)) >= 0) {
        if (v->pkt->stream_index != v->stream) {
            av_packet_unref(v->pkt);
            continue;
        }
        if (v->pkt->flags & AV_PKT_FLAG_CORRUPT) {
            av_packet_unref(v->pkt);
            free(k);
            return ts_fail(err, TS_ERR_FORMAT, "%s: video packet %" PRId64 " is cut short or "
                           "corrupt (truncated file?)", v->path, n);
        }
        npackets++;
        if (v->pkt->flags & AV_PKT_FLAG_DISCARD) { /* outside mp4's edit list: never shown */
            av_packet_unref(v->pkt);
            continue;
        }
        int64_t pts = v->pkt->pts != AV_NOPTS_VALUE ? v->pkt->pts : v->pkt->dts;
        if (pts == AV_NOPTS_VALUE) pts = n ? v->pts[n - 1] + 1 : 0; /* no timestamps at all */
        if (n == cap) {
            cap *= 2;
            int64_t *p = realloc(v->pts, sizeof *p * (size_t)cap);
            kf *q = realloc(k, sizeof *q * (size_t)cap);
            if (p) v->pts = p;
            if (q) k = q;
            if (!p || !q) goto nomem;
        }
        if (v->pkt->flags & AV_PKT_FLAG_KEY) {
            int64_t dts = v->pkt->dts != AV_NOPTS_VALUE ? v->pkt->dts : pts;
            k[nk++] = (kf){ pts, dts < pts ? dts : pts };
        }
        v->pts[n++] = pts;
        last_dur = v->pkt->duration;
        av_packet_unref(v->pkt);
    }
    if (rc != AVERROR_EOF) {
        free(k);
        return ts_fail(err, TS_ERR_FORMAT, "%s: cannot read packet %" PRId64 ": %s", v->path,
                       n, averr(rc, eb));
    }
    if (n == 0) {
        free(k);
        return ts_fail(err, TS_ERR_FORMAT, "%s: the video stream has no frames", v->path);
    }
    AVStream *st = v->fmt->streams[v->stream];
    if (st->nb_frames > 0 && npackets < st->nb_frames) {
        free(k);
        return ts_fail(err, TS_ERR_FORMAT, "%s: truncated: the header lists %" PRId64
                       " frames, the file holds %" PRId64, v->path, (int64_t)st->nb_frames,
                       npackets);
    }
    if (nk == 0) { /* no key flags: treat the first frame as the only entry point */
        k[0] = (kf){ v->pts[0], v->pts[0] };
        nk = 1;
    }
    qsort(v->pts, (size_t)n, sizeof *v->pts, cmp_i64);
    qsort(k, (size_t)nk, sizeof *k, cmp_kf);
    v->kf_pts = malloc(sizeof(int64_t) * (size_t)nk);
    v->kf_seek = malloc(sizeof(int64_t) * (size_t)nk);
    if (!v->kf_pts || !v->kf_seek) goto nomem;
    for (int64_t i = 0; i < nk; i++) {
        v->kf_pts[i] = k[i].pts;
        v->kf_seek[i] = k[i].seek;
    }
    v->nkf = nk;
    free(k);

    ts_video_info *in = &v->info;
    in->frames = n;
    in->header_frames = st->nb_frames > 0 ? st->nb_frames : -1;
    double tb = av_q2d(v->tb), span = (double)(v->pts[n - 1] - v->pts[0]) * tb;
    double measured = n > 1 && span > 0 ? (double)(n - 1) / span : 0.0;
    double nominal[2] = { av_q2d(st->r_frame_rate), av_q2d(st->avg_frame_rate) };
    in->fps = measured;
    for (int i = 1; i >= 0; i--) /* r_frame_rate wins when both agree with the timestamps */
        if (nominal[i] > 0 && (measured == 0 || fabs(nominal[i] / measured - 1) < 0.01))
            in->fps = nominal[i];
    double last = last_dur > 0 ? (double)last_dur * tb : in->fps > 0 ? 1.0 / in->fps : 0.0;
    in->duration = span + last;
    return TS_OK;
nomem:
    free(k);
    return ts_fail(err, TS_ERR_NOMEM, "%s: out of memory for the frame table", v->path);
}

ts_status ts_video_open(ts_video **out, const char *path, int threads, ts_err *err) {
    pthread_once(&log_once, log_init);
    *out = NULL;
    char eb[AV_ERROR_MAX_STRING_SIZE];
    ts_video *v = calloc(1, sizeof *v);
    if (!v || !(v->path = strdup(path))) {
        free(v);
        return ts_fail(err, TS_ERR_NOMEM, "%s: out of memory", path);
    }
    ts_status st;
    int rc = avformat_open_input(&v->fmt, path, NULL, NULL);
    if (rc < 0) {
        st = ts_fail(err, rc == AVERROR(ENOENT) || rc == AVERROR(EACCES) ? TS_ERR_IO
                     : TS_ERR_FORMAT, "%s: cannot open as a video: %s", path, averr(rc, eb));
        goto fail;
    }
    if ((rc = avformat_find_stream_info(v->fmt, NULL)) < 0) {
        st = ts_fail(err, TS_ERR_FORMAT, "%s: cannot read the stream headers: %s", path,
                     averr(rc, eb));
        goto fail;
    }
    const AVCodec *codec = NULL;
    v->stream = av_find_best_stream(v->fmt, AVMEDIA_TYPE_VIDEO, -1, -1, &codec, 0);
    if (v->stream < 0) {
        st = ts_fail(err, v->stream == AVERROR_DECODER_NOT_FOUND ? TS_ERR_UNSUPPORTED
                     : TS_ERR_FORMAT, "%s: %s", path, v->stream == AVERROR_DECODER_NOT_FOUND
                     ? "no decoder for its video codec in this FFmpeg" : "no video stream");
        goto fail;
    }
    AVStream *s = v->fmt->streams[v->stream];
    v->tb = s->time_base;
    v->dec = avcodec_alloc_context3(codec);
    v->pkt = av_packet_alloc();
    v->frame = av_frame_alloc();
    if (!v->dec || !v->pkt || !v->frame) {
        st = ts_fail(err, TS_ERR_NOMEM, "%s: out of memory", path);
        goto fail;
    }
    avcodec_parameters_to_context(v->dec, s->codecpar);
    v->dec->thread_count = threads > 1 ? threads : 1;
    v->dec->pkt_timebase = s->time_base;
    if ((rc = avcodec_open2(v->dec, codec, NULL)) < 0) {
        st = ts_fail(err, TS_ERR_UNSUPPORTED, "%s: cannot open the %s decoder: %s", path,
                     codec->name, averr(rc, eb));
        goto fail;
    }
    ts_video_info *in = &v->info;
    snprintf(in->codec, sizeof in->codec, "%s", avcodec_get_name(s->codecpar->codec_id));
    snprintf(in->container, sizeof in->container, "%s", v->fmt->iformat->name);
    const char *pf = av_get_pix_fmt_name((enum AVPixelFormat)s->codecpar->format);
    snprintf(in->pix_fmt, sizeof in->pix_fmt, "%s", pf ? pf : "unknown");
    in->w = s->codecpar->width;
    in->h = s->codecpar->height;
    if (in->w <= 0 || in->h <= 0 || (int64_t)in->w * in->h > ((int64_t)1 << 28)) {
        st = ts_fail(err, TS_ERR_FORMAT, "%s: bad picture size %d x %d", path, in->w, in->h);
        goto fail;
    }
    if ((st = build_table(v, err))) goto fail;
    v->eof = 1; /* the demuxer sits at the end: the first read seeks */
    *out = v;
    return TS_OK;
fail:
    ts_video_close(v);
    return st;
}

const ts_video_info *ts_video_get_info(const ts_video *v) { return &v->info; }

double ts_video_frame_time(const ts_video *v, int64_t i) {
    TS_CHECK(i >= 0 && i < v->info.frames, "frame %" PRId64 " of %" PRId64, i, v->info.frames);
    return (double)(v->pts[i] - v->pts[0]) * av_q2d(v->tb);
}

/* ---------------------------------------------------------------------------------------- */
/* Decoding one frame by timestamp                                                          */

/* The index of the last keyframe whose pts is <= target (0 when none is). */
static int64_t keyframe_before(const ts_video *v, int64_t target) {
    int64_t lo = 0, hi = v->nkf - 1;
    while (lo < hi) {
        int64_t mid = (lo + hi + 1) / 2;
        if (v->kf_pts[mid] <= target) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

static ts_status seek_to(ts_video *v, int64_t kf, ts_err *err) {
    char eb[AV_ERROR_MAX_STRING_SIZE];
    int rc = av_seek_frame(v->fmt, v->stream, v->kf_seek[kf], AVSEEK_FLAG_BACKWARD);
    if (rc < 0 && kf == 0) /* some demuxers refuse a seek before their first entry */
        rc = avformat_seek_file(v->fmt, v->stream, INT64_MIN, v->kf_seek[0], v->kf_seek[0], 0);
    if (rc < 0)
        return ts_fail(err, TS_ERR_FORMAT, "%s: cannot seek to %.3f s: %s", v->path,
                       (double)(v->kf_pts[kf] - v->pts[0]) * av_q2d(v->tb), averr(rc, eb));
    avcodec_flush_buffers(v->dec);
    v->eof = 0;
    v->fresh = 1;
    v->last_pts = INT64_MIN;
    return TS_OK;
}

/* Decode forward until the frame with pts target is in v->frame. Returns TS_OK, or
 * TS_ERR_DATA with *overshot set when the first frame after the seek already lies past the
 * target (the caller then seeks to an earlier keyframe). */
static ts_status decode_until(ts_video *v, int64_t target, int *overshot, ts_err *err) {
    char eb[AV_ERROR_MAX_STRING_SIZE];
    *overshot = 0;
    for (;;) {
        int rc = avcodec_receive_frame(v->dec, v->frame);
        if (rc == 0) {
            int64_t p = v->frame->best_effort_timestamp;
            if (p == AV_NOPTS_VALUE) p = v->frame->pts;
            if (p == AV_NOPTS_VALUE) p = v->last_pts == INT64_MIN ? v->pts[0] : v->last_pts + 1;
            int first = v->fresh;
            v->fresh = 0;
            v->last_pts = p;
            if (p < target) {
                av_frame_unref(v->frame);
                continue;
            }
            if (p > target && first) {
                av_frame_unref(v->frame);
                *overshot = 1;
                return TS_ERR_DATA;
            }
            if ((v->frame->flags & AV_FRAME_FLAG_CORRUPT) || v->frame->decode_error_flags)
                return ts_fail(err, TS_ERR_FORMAT, "%s: the frame at %.3f s decodes corrupt",
                               v->path, (double)(p - v->pts[0]) * av_q2d(v->tb));
            return TS_OK; /* p == target, or the nearest after it in a stream that lied */
        }
        if (rc == AVERROR_EOF) {
            v->eof = 1;
            return ts_fail(err, TS_ERR_FORMAT, "%s: the decoder ended before the frame at "
                           "%.3f s (truncated or undecodable video)", v->path,
                           (double)(target - v->pts[0]) * av_q2d(v->tb));
        }
        if (rc != AVERROR(EAGAIN))
            return ts_fail(err, TS_ERR_FORMAT, "%s: cannot decode: %s", v->path, averr(rc, eb));
        rc = av_read_frame(v->fmt, v->pkt);
        if (rc == AVERROR_EOF) {
            avcodec_send_packet(v->dec, NULL); /* drain the frames still inside */
            continue;
        }
        if (rc < 0)
            return ts_fail(err, TS_ERR_FORMAT, "%s: cannot read: %s", v->path, averr(rc, eb));
        if (v->pkt->stream_index != v->stream) {
            av_packet_unref(v->pkt);
            continue;
        }
        rc = avcodec_send_packet(v->dec, v->pkt);
        av_packet_unref(v->pkt);
        if (rc < 0 && rc != AVERROR(EAGAIN))
            return ts_fail(err, TS_ERR_FORMAT, "%s: the decoder rejects a packet: %s", v->path,
                           averr(rc, eb));
    }
}

/* Put the frame with pts target into v->frame: decode straight on when that is cheaper than a
 * seek, else seek to the last keyframe not after it (and further back if the demuxer landed
 * after the target). */
static ts_status frame_at(ts_video *v, int64_t target, ts_err *err) {
    int64_t kf = keyframe_before(v, target);
    int straight = !v->eof && v->last_pts != INT64_MIN && v->last_pts < target &&
                   v->kf_pts[kf] <= v->last_pts;
    ts_status st;
    if (!straight && (st = seek_to(v, kf, err))) return st;
    for (;;) {
        int overshot;
        st = decode_until(v, target, &overshot, err);
        if (!overshot) return st;
        if (kf == 0)
            return ts_fail(err, TS_ERR_FORMAT, "%s: the frame at %.3f s cannot be reached by "
                           "seeking", v->path, (double)(target - v->pts[0]) * av_q2d(v->tb));
        if ((st = seek_to(v, --kf, err))) return st;
    }
}

/* swscale flags and the colour matrix of the frame (BT.601 when it does not say). */
static ts_status convert(ts_video *v, int ow, int oh, ts_video_scale scale, uint8_t *dst,
                         ts_err *err) {
    AVFrame *f = v->frame;
    enum AVPixelFormat fmt = (enum AVPixelFormat)f->format;
    int full = f->color_range == AVCOL_RANGE_JPEG;
    switch (fmt) { /* the deprecated full-range formats, as their plain twins */
    case AV_PIX_FMT_YUVJ420P: fmt = AV_PIX_FMT_YUV420P, full = 1; break;
    case AV_PIX_FMT_YUVJ422P: fmt = AV_PIX_FMT_YUV422P, full = 1; break;
    case AV_PIX_FMT_YUVJ444P: fmt = AV_PIX_FMT_YUV444P, full = 1; break;
    default: break;
    }
    int flags = scale == TS_VSCALE_AREA ? SWS_AREA
                : scale == TS_VSCALE_BILINEAR ? SWS_BILINEAR : SWS_BICUBIC;
    flags |= SWS_ACCURATE_RND | SWS_FULL_CHR_H_INT;
    v->sws = sws_getCachedContext(v->sws, f->width, f->height, fmt, ow, oh, AV_PIX_FMT_RGB24,
                                  flags, NULL, NULL, NULL);
    if (!v->sws)
        return ts_fail(err, TS_ERR_UNSUPPORTED, "%s: cannot convert %s %d x %d to RGB %d x %d",
                       v->path, av_get_pix_fmt_name(fmt), f->width, f->height, ow, oh);
    int cs = f->colorspace == AVCOL_SPC_UNSPECIFIED || f->colorspace == AVCOL_SPC_RGB
                 ? SWS_CS_DEFAULT : (int)f->colorspace;
    const int *coef = sws_getCoefficients(cs);
    sws_setColorspaceDetails(v->sws, coef, full, sws_getCoefficients(SWS_CS_DEFAULT), 1, 0,
                             1 << 16, 1 << 16);
    if (v->rgb_w != ow || v->rgb_h != oh) {
        av_freep(&v->rgb[0]);
        v->rgb_w = v->rgb_h = 0;
        if (av_image_alloc(v->rgb, v->rgb_stride, ow, oh, AV_PIX_FMT_RGB24, 64) < 0)
            return ts_fail(err, TS_ERR_NOMEM, "%s: out of memory for a %d x %d frame", v->path,
                           ow, oh);
        v->rgb_w = ow;
        v->rgb_h = oh;
    }
    sws_scale(v->sws, (const uint8_t *const *)f->data, f->linesize, 0, f->height, v->rgb,
              v->rgb_stride);
    for (int y = 0; y < oh; y++)
        memcpy(dst + (size_t)y * ow * 3, v->rgb[0] + (size_t)y * v->rgb_stride[0],
               (size_t)ow * 3);
    return TS_OK;
}

typedef struct order {
    int64_t idx;
    int k;
} order;
static int cmp_order(const void *a, const void *b) {
    const order *x = a, *y = b;
    return x->idx < y->idx ? -1 : x->idx > y->idx ? 1 : x->k - y->k;
}

ts_status ts_video_read(ts_video *v, const int64_t *idx, int K, int out_w, int out_h,
                        ts_video_scale scale, uint8_t *out, ts_err *err) {
    TS_CHECK(K >= 0 && out_w >= 0 && out_h >= 0 && (out_w > 0) == (out_h > 0),
             "K %d, size %d x %d", K, out_w, out_h);
    int ow = out_w ? out_w : v->info.w, oh = out_h ? out_h : v->info.h;
    size_t fsize = (size_t)ow * oh * 3;
    order *o = malloc(sizeof *o * (size_t)(K ? K : 1));
    if (!o) return ts_fail(err, TS_ERR_NOMEM, "%s: out of memory", v->path);
    for (int k = 0; k < K; k++) {
        TS_CHECK(idx[k] >= 0 && idx[k] < v->info.frames, "frame %" PRId64 " of %" PRId64,
                 idx[k], v->info.frames);
        o[k] = (order){ idx[k], k };
    }
    qsort(o, (size_t)K, sizeof *o, cmp_order);
    ts_status st = TS_OK;
    for (int j = 0; j < K && !st; j++) {
        uint8_t *dst = out + fsize * (size_t)o[j].k;
        if (j > 0 && o[j].idx == o[j - 1].idx) { /* a repeat: copy the slot just decoded */
            memcpy(dst, out + fsize * (size_t)o[j - 1].k, fsize);
            continue;
        }
        st = frame_at(v, v->pts[o[j].idx], err);
        if (!st) st = convert(v, ow, oh, scale, dst, err);
        av_frame_unref(v->frame);
    }
    free(o);
    return st;
}

/* ---------------------------------------------------------------------------------------- */
/* Which frames                                                                             */

/* The first frame whose time is >= t (frames when none is). */
static int64_t first_at_or_after(const ts_video *v, double t) {
    int64_t lo = 0, hi = v->info.frames;
    while (lo < hi) {
        int64_t mid = (lo + hi) / 2;
        if (ts_video_frame_time(v, mid) < t - 1e-9) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

ts_status ts_video_uniform_indices(const ts_video *v, int K, double start, double end,
                                   int64_t *idx, ts_err *err) {
    TS_CHECK(K >= 1, "K = %d", K);
    int64_t a = first_at_or_after(v, start < 0 ? 0 : start);
    int64_t b = end > 0 ? first_at_or_after(v, end) : v->info.frames;
    if (b <= a)
        return ts_fail(err, TS_ERR_DATA, "%s: no frame between %.3f s and %.3f s (the video "
                       "is %.3f s long)", v->path, start, end, v->info.duration);
    int64_t n = b - a;
    for (int k = 0; k < K; k++)
        idx[k] = K == 1 ? a : a + (int64_t)floor((double)k * (double)(n - 1) / (K - 1) + 1e-9);
    return TS_OK;
}

ts_status ts_video_fps_indices(const ts_video *v, int K, double start, double fps,
                               int64_t *idx, ts_err *err) {
    TS_CHECK(K >= 1 && fps > 0, "K = %d, fps = %g", K, fps);
    int64_t n = v->info.frames;
    if (start < 0 || start > ts_video_frame_time(v, n - 1) + 1e-9)
        return ts_fail(err, TS_ERR_DATA, "%s: start %.3f s lies outside the video (frames "
                       "from 0 to %.3f s)", v->path, start, ts_video_frame_time(v, n - 1));
    for (int k = 0; k < K; k++) {
        double t = start + k / fps;
        int64_t j = first_at_or_after(v, t);
        if (j >= n) j = n - 1;
        else if (j > 0 && t - ts_video_frame_time(v, j - 1) <= ts_video_frame_time(v, j) - t)
            j--; /* the earlier frame is as near or nearer */
        idx[k] = j;
    }
    return TS_OK;
}
