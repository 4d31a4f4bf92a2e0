/* loaders.h: the public header of tessera's input layer.
 *
 * Image decoders (JPEG through libjpeg-turbo's TurboJPEG API, PNG through libspng) that turn a
 * file or a memory buffer into an 8-bit RGB image, and the image transforms of CLIP-style
 * training (resize with antialiasing, center crop, RandomResizedCrop, horizontal flip,
 * normalisation to float CHW), written to match torchvision 0.14 on uint8 tensors; video
 * frames through FFmpeg with accurate seeking; robot demonstrations in HDF5 (robomimic, LIBERO,
 * robosuite) read as padded windows of steps.
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


/* ---------------------------------------------------------------------------------------- */
/* Robot trajectories in HDF5 (loaders/hdf5.c)                                              */

/* A file of demonstrations in the robomimic / LIBERO layout (data/demo_N/actions,
 * data/demo_N/obs/<key>, rewards, dones, mask/<filter>) or in robosuite's raw layout
 * (data/demo_N/actions and states, float64, demos numbered from 1). Nothing about which
 * dataset means what is built in: the caller (a recipe) names the datasets, each as a path
 * under the demo group ("actions", "obs/robot0_eef_pos", "states", "rewards").
 *
 * Every named dataset of a demo has the demo's length L as its first dimension (L is the first
 * dimension of the actions). Actions and low-dimensional datasets may be any integer or float
 * type and are converted to float32 on read (HDF5's conversion: float64 rounds to nearest);
 * their trailing dimensions are flattened. Image datasets are uint8 (L, H, W, C).
 *
 * Windows are Diffusion Policy's SequenceSampler: in a demo of length L, a window of T =
 * horizon steps starts at s for every s in [-pad_before, L - T + pad_after]; the steps of a
 * window that fall before 0 repeat step 0, those past L - 1 repeat step L - 1. A demo has
 * max(0, L - T + pad_before + pad_after + 1) windows; they are numbered demo after demo.
 *
 * Thread safety: Debian's serial libhdf5 is built thread-safe (one lock inside the library),
 * so several workers may read from one ts_traj; reads are serialised by that lock. */
#define TS_TRAJ_MAX_KEYS 16

typedef struct ts_traj_spec {
    const char *actions;                  /* e.g. "actions"; required */
    const char *lowdim[TS_TRAJ_MAX_KEYS]; /* e.g. "obs/robot0_eef_pos", "states" */
    int n_lowdim;
    const char *images[TS_TRAJ_MAX_KEYS]; /* e.g. "obs/agentview_image" */
    int n_images;
    const char *filter;     /* NULL or "": every demo; else the demo list at mask/<filter> */
    int horizon;            /* T, steps per window (>= 1) */
    int pad_before;         /* >= 0; Diffusion Policy uses n_obs_steps - 1 */
    int pad_after;          /* >= 0; Diffusion Policy uses n_action_steps - 1 */
    int skip_bad;           /* 0: a demo with a missing or malformed dataset is an error;
                               1: it is left out, logged and counted (ts_traj_num_skipped) */
} ts_traj_spec;

typedef struct ts_traj ts_traj;

/* Open path and check every selected demo against spec: each named dataset exists, has the
 * demo's length and the same trailing shape in every demo (the first demo sets it), and a
 * num_samples attribute, where present, agrees with the length. Demos are data/demo_N groups
 * sorted by N. Errors (TS_ERR_IO, TS_ERR_FORMAT, TS_ERR_DATA) name the file and, where it is
 * one demo's fault, the demo and the key: "f.hdf5: data/demo_3: no dataset 'obs/eef_pos'".
 * An unknown filter lists the masks the file has. On success *out is freed by ts_traj_close. */
ts_status ts_traj_open(ts_traj **out, const char *path, const ts_traj_spec *spec, ts_err *err);
void ts_traj_close(ts_traj *t); /* NULL is a no-op */

int ts_traj_num_demos(const ts_traj *t);               /* the selected demos that were kept */
const char *ts_traj_demo_name(const ts_traj *t, int d); /* "demo_3" */
int64_t ts_traj_demo_len(const ts_traj *t, int d);      /* L */
int ts_traj_num_skipped(const ts_traj *t);              /* demos left out by skip_bad */
int64_t ts_traj_action_dim(const ts_traj *t);           /* A: the actions' trailing size */
int64_t ts_traj_lowdim_dim(const ts_traj *t, int k);    /* D_k of lowdim key k */
int64_t ts_traj_lowdim_total(const ts_traj *t);         /* D = sum of the D_k */
void ts_traj_image_shape(const ts_traj *t, int k, int *h, int *w, int *c);
int64_t ts_traj_num_windows(const ts_traj *t);
/* Window i (0 <= i < ts_traj_num_windows) as a demo and a start step (may be negative). */
void ts_traj_window(const ts_traj *t, int64_t i, int *demo, int64_t *start);

/* Read steps start .. start+T-1 of demo d, padded at the episode ends as above (start may be
 * negative and the window may run past the end; at least one step must lie inside the demo).
 * actions: (T, A) float32; lowdim: (T, D) float32, the lowdim keys side by side in spec order;
 * images: n_images pointers, image key k to (T, H, W, C) uint8. Any of them may be NULL to skip
 * that part (images[k] may be NULL to skip one key). Errors name the file, demo and key. */
ts_status ts_traj_read(ts_traj *t, int d, int64_t start, int T, float *actions, float *lowdim,
                       uint8_t *const *images, ts_err *err);
/* ts_traj_read of window i with T = horizon. */
ts_status ts_traj_read_window(ts_traj *t, int64_t i, float *actions, float *lowdim,
                              uint8_t *const *images, ts_err *err);

/* Print a summary of any HDF5 file to out: the tree of groups and datasets with shapes, dtypes
 * and short attributes (at most 3 demo groups in full), then, for a file with data/demo_N
 * groups, the number of demos, their steps (total, min, mean, max) and the masks. For
 * `tessera data inspect`. TS_ERR_IO / TS_ERR_FORMAT name the file. */
ts_status ts_hdf5_summary(FILE *out, const char *path, ts_err *err);


/* ---------------------------------------------------------------------------------------- */
/* Video (loaders/video.c)                                                                  */

/* A video file opened through FFmpeg (libavformat, libavcodec, libswscale): any container and
 * codec the installed FFmpeg knows (H.264 in mp4 and Matroska, AV1 through libdav1d, ...).
 * Opening reads every packet of the best video stream once, without decoding (as decord's
 * VideoReader does), to learn the exact frame count and the presentation time of each frame
 * even where the header has neither. Frame i is the i-th frame in presentation order; its time
 * is in seconds from the first frame.
 *
 * Seeking is accurate: a frame is found by seeking to the last keyframe at or before it and
 * decoding forward to its exact timestamp, so frame i read after a seek is bit-identical to
 * frame i of a sequential decode. Frames asked for in increasing order within a group of
 * pictures are decoded straight on, without seeking again.
 *
 * Output frames are RGB uint8, (h, w, 3) row-major, converted and scaled by libswscale with
 * the frame's colour matrix and range (BT.601 limited range when the file does not say).
 * Errors name the file: a file FFmpeg cannot open, no video stream, a truncated file (fewer
 * packets than the header lists, or a packet cut short), a packet the decoder rejects, a
 * frame it marks corrupt. One ts_video is used by one thread at a time. */
typedef struct ts_video ts_video;

typedef enum { TS_VSCALE_BICUBIC, TS_VSCALE_AREA, TS_VSCALE_BILINEAR } ts_video_scale;

typedef struct ts_video_info {
    char codec[32];       /* "h264", "av1" */
    char container[64];   /* libavformat's name: "mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm" */
    char pix_fmt[32];     /* as decoded: "yuv420p", "yuv444p" */
    int w, h;             /* coded picture size */
    double fps;           /* the nominal rate when the timestamps agree with it, else measured */
    double duration;      /* seconds: last frame's time plus its duration */
    int64_t frames;       /* counted at open: exact */
    int64_t header_frames; /* what the container header says, -1 when it says nothing */
} ts_video_info;

/* Open path. threads: decoder threads (0 or 1: one, the right choice inside a worker pool).
 * On success *out is closed by ts_video_close. */
ts_status ts_video_open(ts_video **out, const char *path, int threads, ts_err *err);
void ts_video_close(ts_video *v); /* NULL is a no-op */
const ts_video_info *ts_video_get_info(const ts_video *v);
double ts_video_frame_time(const ts_video *v, int64_t i); /* 0 <= i < frames */

/* Decode frames idx[0..K-1] (any order, repeats allowed) into out, (K, out_h, out_w, 3)
 * uint8. out_w, out_h: the output size; both 0 for the video's own size. */
ts_status ts_video_read(ts_video *v, const int64_t *idx, int K, int out_w, int out_h,
                        ts_video_scale scale, uint8_t *out, ts_err *err);

/* K frame indices spread uniformly over the frames whose times lie in [start, end) seconds
 * (end <= 0: to the end of the video): with n such frames from a, a + floor(k (n-1) / (K-1)),
 * which is PyTorchVideo's UniformTemporalSubsample (torch.linspace(0, n-1, K).long()); K = 1
 * gives the first. TS_ERR_DATA (naming the file) when no frame lies in the range. */
ts_status ts_video_uniform_indices(const ts_video *v, int K, double start, double end,
                                   int64_t *idx, ts_err *err);
/* K frame indices at fps from start: for times start + k / fps, the frame whose time is the
 * nearest (the earlier on a tie), as LeRobot matches timestamps to frames; times after the
 * last frame give the last frame. TS_ERR_DATA when start is negative or past the last frame. */
ts_status ts_video_fps_indices(const ts_video *v, int K, double start, double fps,
                               int64_t *idx, ts_err *err);

#ifdef __cplusplus
}
#endif

#endif
