/* absent.c: the video and HDF5 entry points of a build configured without FFmpeg
 * (TESSERA_VIDEO) or without HDF5 (TESSERA_HDF5).
 *
 * Every call that would open a file fails with TS_ERR_UNSUPPORTED, naming the file and what the
 * build lacks. No handle can exist, so the accessors that take one are never reached with a
 * real one; they return zeros. A full build compiles video.c and hdf5.c instead and this file
 * is empty.
 */
#include "loaders.h"

#include <string.h>

#ifndef TS_HAVE_VIDEO
static ts_status no_video(const char *path, ts_err *err) {
    return ts_fail(err, TS_ERR_UNSUPPORTED, "%s: this build of tessera has no video decoding "
                   "(FFmpeg's libraries were not found when it was configured; install them, "
                   "e.g. with scripts/install-deps.sh, and build again)", path ? path : "video");
}

ts_status ts_video_open(ts_video **out, const char *path, int threads, ts_err *err) {
    (void)threads;
    *out = NULL;
    return no_video(path, err);
}
void ts_video_close(ts_video *v) { (void)v; }
const ts_video_info *ts_video_get_info(const ts_video *v) {
    (void)v;
    return NULL;
}
double ts_video_frame_time(const ts_video *v, int64_t i) {
    (void)v, (void)i;
    return 0.0;
}
ts_status ts_video_read(ts_video *v, const int64_t *idx, int K, int out_w, int out_h,
                        ts_video_scale scale, uint8_t *out, ts_err *err) {
    (void)v, (void)idx, (void)K, (void)out_w, (void)out_h, (void)scale, (void)out;
    return no_video(NULL, err);
}
ts_status ts_video_uniform_indices(const ts_video *v, int K, double start, double end,
                                   int64_t *idx, ts_err *err) {
    (void)v, (void)K, (void)start, (void)end, (void)idx;
    return no_video(NULL, err);
}
ts_status ts_video_fps_indices(const ts_video *v, int K, double start, double fps,
                               int64_t *idx, ts_err *err) {
    (void)v, (void)K, (void)start, (void)fps, (void)idx;
    return no_video(NULL, err);
}
#endif

#ifndef TS_HAVE_HDF5
static ts_status no_hdf5(const char *path, ts_err *err) {
    return ts_fail(err, TS_ERR_UNSUPPORTED, "%s: this build of tessera has no HDF5 (libhdf5 was "
                   "not found when it was configured; install it, e.g. with "
                   "scripts/install-deps.sh, and build again)", path ? path : "HDF5");
}

ts_status ts_traj_open(ts_traj **out, const char *path, const ts_traj_spec *spec, ts_err *err) {
    (void)spec;
    *out = NULL;
    return no_hdf5(path, err);
}
void ts_traj_close(ts_traj *t) { (void)t; }
int ts_traj_num_demos(const ts_traj *t) { return (void)t, 0; }
const char *ts_traj_demo_name(const ts_traj *t, int d) { return (void)t, (void)d, ""; }
int64_t ts_traj_demo_len(const ts_traj *t, int d) { return (void)t, (void)d, 0; }
int ts_traj_num_skipped(const ts_traj *t) { return (void)t, 0; }
int64_t ts_traj_action_dim(const ts_traj *t) { return (void)t, 0; }
int64_t ts_traj_lowdim_dim(const ts_traj *t, int k) { return (void)t, (void)k, 0; }
int64_t ts_traj_lowdim_total(const ts_traj *t) { return (void)t, 0; }
void ts_traj_image_shape(const ts_traj *t, int k, int *h, int *w, int *c) {
    (void)t, (void)k;
    *h = *w = *c = 0;
}
int64_t ts_traj_num_windows(const ts_traj *t) { return (void)t, 0; }
void ts_traj_window(const ts_traj *t, int64_t i, int *demo, int64_t *start) {
    (void)t, (void)i;
    *demo = 0, *start = 0;
}
ts_status ts_traj_read(ts_traj *t, int d, int64_t start, int T, float *actions, float *lowdim,
                       uint8_t *const *images, ts_err *err) {
    (void)t, (void)d, (void)start, (void)T, (void)actions, (void)lowdim, (void)images;
    return no_hdf5(NULL, err);
}
ts_status ts_traj_read_window(ts_traj *t, int64_t i, float *actions, float *lowdim,
                              uint8_t *const *images, ts_err *err) {
    (void)t, (void)i, (void)actions, (void)lowdim, (void)images;
    return no_hdf5(NULL, err);
}
const char *ts_traj_instruction(const ts_traj *t, int d) { return (void)t, (void)d, NULL; }

ts_status ts_traj_writer_open(ts_traj_writer **out, const char *path, ts_err *err) {
    *out = NULL;
    return no_hdf5(path, err);
}
ts_status ts_traj_writer_demo(ts_traj_writer *w, const ts_traj_demo_data *d, ts_err *err) {
    (void)w, (void)d;
    return no_hdf5(NULL, err);
}
ts_status ts_traj_writer_mask(ts_traj_writer *w, const char *name, const int *idx, int n,
                              ts_err *err) {
    (void)w, (void)name, (void)idx, (void)n;
    return no_hdf5(NULL, err);
}
ts_status ts_traj_writer_close(ts_traj_writer *w, const char *env_args, ts_err *err) {
    (void)w, (void)env_args;
    return no_hdf5(NULL, err);
}
void ts_traj_writer_abort(ts_traj_writer *w) { (void)w; }
ts_status ts_hdf5_summary(FILE *out, const char *path, ts_err *err) {
    (void)out;
    return no_hdf5(path, err);
}
#endif
