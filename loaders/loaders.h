/* loaders.h: the public header of tessera's input layer.
 *
 * Image decoders (JPEG through libjpeg-turbo's TurboJPEG API, and its libjpeg API to decode
 * only a crop box; PNG through libspng) that turn a file or a memory buffer into an 8-bit RGB
 * image, and the image transforms of CLIP-style
 * training (resize with antialiasing, center crop, RandomResizedCrop, horizontal flip,
 * normalisation to float CHW), written to match torchvision 0.14 on uint8 tensors; video
 * frames through FFmpeg with accurate seeking; robot demonstrations in HDF5 (robomimic, LIBERO,
 * robosuite) read as padded windows of steps; dataset formats (WebDataset tar shards, CSV/TSV,
 * class folders) and the threaded batch pipeline that turns their samples into batches,
 * calling a per-sample prepare hook that the factory wires in (this layer never includes text/).
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

/* Decoding only the part of an image that a crop will keep. pick chooses the box from the
 * image's size (w x h, upright, as ts_image_decode would give it: after DCT scaling and EXIF
 * orientation), as RandomResizedCrop does; it is called exactly once per successful decode
 * (and at most once on failure), and must return a box inside the image. */
typedef ts_crop_box (*ts_box_fn)(void *user, int w, int h);
/* Decode buf as ts_image_decode does, but only as far as the box that pick chooses needs. On
 * success the box's pixels are in out at *where (a box of out, box.w x box.h): a JPEG is
 * decoded over the box's rows only, and over its columns plus a margin of up to a few dozen
 * columns on each side, so out is the box or a little wider; other images are decoded whole
 * and *where is the box itself. Either way the pixels are those of ts_image_decode followed by
 * a crop, bit for bit.
 * Errors are ts_image_decode's, with the same messages, for the same files: a JPEG is still
 * entropy-decoded to its end (only the inverse DCT, upsampling and colour conversion are
 * skipped outside the box), so damage anywhere in it, above, inside or below the box, is
 * found; a JPEG that libjpeg stops on is decoded again whole, and the full decode's error is
 * returned. */
ts_status ts_image_decode_box(ts_image_u8 *out, const void *buf, size_t n, const char *name,
                              const ts_decode_opts *opts, ts_box_fn pick, void *user,
                              ts_crop_box *where, ts_image_info *info, ts_err *err);
/* The same for a file; the path names it in errors. TS_ERR_IO when it cannot be read. */
ts_status ts_image_load_box(ts_image_u8 *out, const char *path, const ts_decode_opts *opts,
                            ts_box_fn pick, void *user, ts_crop_box *where,
                            ts_image_info *info, ts_err *err);

/* Mirror left-right in place (F.hflip). */
void ts_image_hflip(ts_image_u8 *im);

/* CLIP's normalisation constants (OpenAI CLIP, open_clip OPENAI_DATASET_MEAN/STD). */
extern const float TS_CLIP_MEAN[3], TS_CLIP_STD[3];

/* ToTensor then Normalize(mean, std): out (3, h, w) float32 gets (x / 255 - mean[c]) / std[c],
 * computed in float32 in that order. out holds 3 * w * h floats (a slot of a batch buffer). */
void ts_image_to_chw(const ts_image_u8 *im, const float mean[3], const float std[3],
                     float *out /* (3, h, w) */);
/* The same for the mirror image of im: ts_image_hflip then ts_image_to_chw, bit for bit, in
 * one pass and without touching im. */
void ts_image_to_chw_hflip(const ts_image_u8 *im, const float mean[3], const float std[3],
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
    const char *lowdim[TS_TRAJ_MAX_KEYS]; /* e.g. "obs/robot0_eef_pos", "states"; a (L, D)
                                             dataset may be cut to columns [a, b) with a
                                             suffix "[a:b]" ("states[1:10]"; a or b may be
                                             left out, as in Python) */
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

/* The language instruction of demo d: its group's "language_instruction" attribute (as
 * ts_traj_writer writes it), else the "language_instruction" of the JSON in the data group's
 * "problem_info" attribute (LIBERO's, one for the whole file), else NULL. Read at open; the
 * string lives as long as t. */
const char *ts_traj_instruction(const ts_traj *t, int d);

/* Writing demonstrations in the robomimic layout (loaders/hdf5.c):
 *   data/                 @total (int64: steps of all demos), @env_args (JSON string)
 *     demo_N/             @num_samples (int64: L), @language_instruction (string, optional)
 *       actions           (L, A) float32
 *       <lowdim key>      (L, D) float32, e.g. obs/proprio
 *       <image key>       (L, H, W, C) uint8, chunked by step, deflate-compressed
 *       rewards           (L,) float64 (optional)
 *       dones             (L,) int64 (optional)
 *   mask/<name>           (n,) fixed-length byte strings "demo_N" (robomimic's train/valid)
 * Demos are numbered demo_0, demo_1, ... in the order they are written. Strings are
 * variable-length UTF-8 as h5py writes them. Object times are not recorded, so the same demos
 * give the same bytes. The file is written to PATH.tmp and renamed onto path (after fsync)
 * only by ts_traj_writer_close: a run that stops early leaves no half-written file. */
typedef struct ts_traj_writer ts_traj_writer;

typedef struct ts_traj_demo_data {
    int64_t len;                               /* L >= 1 */
    const float *actions;                      /* (L, A) */
    int action_dim;                            /* A */
    int n_lowdim;
    const char *lowdim_keys[TS_TRAJ_MAX_KEYS]; /* paths under the demo group: "obs/proprio" */
    const float *lowdim[TS_TRAJ_MAX_KEYS];     /* (L, D_k) */
    int lowdim_dim[TS_TRAJ_MAX_KEYS];          /* D_k */
    int n_images;
    const char *image_keys[TS_TRAJ_MAX_KEYS];  /* "obs/agentview_image" */
    const uint8_t *images[TS_TRAJ_MAX_KEYS];   /* (L, H, W, C) */
    int image_shape[TS_TRAJ_MAX_KEYS][3];      /* H, W, C */
    const float *rewards;                      /* (L) or NULL: no rewards dataset */
    const uint8_t *dones;                      /* (L) or NULL: no dones dataset */
    const char *instruction;                   /* NULL: no language_instruction attribute */
} ts_traj_demo_data;

/* Create path.tmp (TS_ERR_IO naming it when it cannot be created). */
ts_status ts_traj_writer_open(ts_traj_writer **out, const char *path, ts_err *err);
/* Append the next demo (demo_<number of demos written so far>). */
ts_status ts_traj_writer_demo(ts_traj_writer *w, const ts_traj_demo_data *d, ts_err *err);
/* Record mask/<name> listing demos idx[0..n) (indices into the written demos, each < the
 * number written when the writer closes); written at close. */
ts_status ts_traj_writer_mask(ts_traj_writer *w, const char *name, const int *idx, int n,
                              ts_err *err);
/* Write data@total, data@env_args (a JSON string; NULL: "{}") and the masks, close, fsync and
 * rename onto path. w is freed whatever happens; on failure the temporary file is removed. */
ts_status ts_traj_writer_close(ts_traj_writer *w, const char *env_args, ts_err *err);
/* Give up: free w and remove the temporary file. NULL is a no-op. */
void ts_traj_writer_abort(ts_traj_writer *w);

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

/* ---------------------------------------------------------------------------------------- */
/* Samples and dataset formats (loaders/webdataset.c, csvdata.c, folder.c)                  */

/* Why a sample was left out. One table gives the names, so the log and the counts agree. */
#define TS_BAD_LIST(X)                                                                       \
    X(TS_BAD_NONE, "none")                                                                   \
    X(TS_BAD_DECODE, "corrupt image")          /* the decoder refused it (truncated JPEG) */ \
    X(TS_BAD_UNSUPPORTED, "unsupported format") /* WebP, GIF */                              \
    X(TS_BAD_TRUNCATED, "truncated member")     /* a tar member cut short */                 \
    X(TS_BAD_TOO_LARGE, "member too large")     /* over TS_SAMPLE_MAX_FIELD bytes */         \
    X(TS_BAD_MISSING, "missing field")          /* no image, caption or label */             \
    X(TS_BAD_DUPLICATE, "duplicate field")      /* two members key.jpg in one sample */      \
    X(TS_BAD_LABEL, "bad label")                /* a .cls that is not an integer */          \
    X(TS_BAD_FILE, "missing file")              /* a CSV or folder path cannot be read */    \
    X(TS_BAD_PREPARE, "prepare failed")         /* the prepare hook refused the sample */    \
    X(TS_BAD_SHARD, "corrupt shard")            /* a shard that cannot be opened or read */

typedef enum {
#define TS__BAD_ENUM(name, msg) name,
    TS_BAD_LIST(TS__BAD_ENUM)
#undef TS__BAD_ENUM
    TS_BAD_COUNT
} ts_bad_reason;
/* "corrupt image", ...; never NULL. */
const char *ts_bad_reason_str(int reason);

/* A growable byte buffer owned by a sample; data is NUL-terminated when n > 0 or cap > 0. */
typedef struct ts_bytes {
    uint8_t *data;
    size_t n, cap;
} ts_bytes;

#define TS_SAMPLE_MAX_FIELDS 16
#define TS_SAMPLE_MAX_FIELD ((size_t)1 << 28) /* 256 MiB: a larger tar member is refused */

/* One raw sample, as a dataset format reads it and before anything is decoded. The buffers are
 * owned by the sample and reused from sample to sample (ts_sample_free releases them).
 * WebDataset fields by extension: jpg/jpeg/png/webp -> image (the first of them in that order),
 * txt -> text, json -> json, cls -> label, mp4 -> video. CSV and folders set path instead of
 * image bytes: the worker reads the file, so that file reads run in parallel. */
typedef struct ts_sample {
    char key[512];    /* WebDataset key ("000123", "dir/000123"), CSV row, file name */
    char where[1024]; /* for messages: "cc3m-000001.tar:000123", "train.csv:row 12" */
    ts_bytes image;   /* encoded image bytes, or empty */
    char image_ext[8]; /* "jpg", "png", "webp"; "" when none */
    ts_bytes path;    /* image file to read (CSV, folders), NUL-terminated, or empty */
    ts_bytes text;    /* caption (.txt), NUL-terminated */
    ts_bytes json;    /* raw .json text, NUL-terminated */
    ts_bytes video;   /* raw .mp4 bytes for the video decoder */
    int has_text, has_json, has_video, has_label;
    int64_t label;    /* .cls, or the class index of a folder */
    int nfields;      /* the extensions seen, in order (for inspect) */
    char fields[TS_SAMPLE_MAX_FIELDS][24];
    int bad;          /* ts_bad_reason found while reading; TS_BAD_NONE when fine */
    char bad_msg[512];
    int64_t index;    /* position in this rank's stream of the epoch (set by the pipeline) */
} ts_sample;
void ts_sample_init(ts_sample *s);
void ts_sample_clear(ts_sample *s); /* empty every field, keep the buffers */
void ts_sample_free(ts_sample *s);  /* NULL is a no-op */

/* A dataset format: a stream of samples per epoch. The two plug-in points of the pipeline are
 * the format (this) and the prepare hook. begin() starts epoch e of rank `rank` of `world`:
 * every rank gets a disjoint part (shards for WebDataset, rows for CSV and folders), in an order
 * that depends only on (seed, epoch). next() fills out and sets *got = 1, or *got = 0 at the
 * end of the epoch. An error from next() (a shard that cannot be opened or is corrupt: the
 * message names it) leaves the source usable: the following call goes on with the next shard,
 * so that a policy of skipping can count it and continue. Not thread-safe: the pipeline calls
 * it under its lock. free() releases everything; ts_source_free(NULL) is a no-op. */
typedef struct ts_source ts_source;
struct ts_source {
    const char *type; /* "webdataset", "csv", "folder" */
    ts_status (*begin)(ts_source *s, uint64_t seed, int64_t epoch, int rank, int world,
                       ts_err *err);
    ts_status (*next)(ts_source *s, ts_sample *out, int *got, ts_err *err);
    void (*free)(ts_source *s);
    void *impl;
};
void ts_source_free(ts_source *s);

/* Expand a shard list as open_clip and braceexpand take it: patterns joined by "::", each with
 * any number of {a..b} numeric ranges (zero-padded to the longer width when either bound has a
 * leading zero: "{000000..000331}"; descending when a > b) and {x,y,z} alternatives (nested
 * groups too; "{x}" stays literal), expanded left to right. On success *out is a malloc'ed
 * array of *n malloc'ed strings (ts_shard_list_free). TS_ERR_USAGE for an unbalanced brace, an
 * empty list or more than 10 million names, naming the pattern. */
ts_status ts_shard_list_expand(const char *spec, char ***out, int64_t *n, ts_err *err);
void ts_shard_list_free(char **list, int64_t n);

/* One WebDataset shard read through libarchive (tar, optionally gzip/bzip2/xz/zstd
 * compressed). Members are grouped into samples by key as webdataset's group_by_keys does:
 * key = the name up to the first dot of its last path component (with the folder), extension
 * = the rest, lowercased; consecutive members with one key form a sample; names without a dot,
 * "__meta__" names, and non-regular members are skipped. A member cut short marks its sample
 * TS_BAD_TRUNCATED and ends the shard; a header that cannot be read ends the shard with
 * TS_ERR_FORMAT (the message names the shard and the last key read). */
typedef struct ts_wds_shard ts_wds_shard;
ts_status ts_wds_shard_open(ts_wds_shard **out, const char *path, ts_err *err);
/* The same over bytes in memory (which must outlive the shard); name is used in messages. */
ts_status ts_wds_shard_open_memory(ts_wds_shard **out, const void *buf, size_t n,
                                   const char *name, ts_err *err);
/* The next sample into out (*got = 1), or *got = 0 at the end of the shard. After an error the
 * shard is finished: further calls give *got = 0. */
ts_status ts_wds_shard_next(ts_wds_shard *s, ts_sample *out, int *got, ts_err *err);
int64_t ts_wds_shard_members(const ts_wds_shard *s); /* regular members read so far */
void ts_wds_shard_close(ts_wds_shard *s); /* NULL is a no-op */

/* A WebDataset source over the shards of spec (ts_shard_list_expand). shuffle: shard order
 * drawn from (seed, epoch) each epoch; the shuffled list is split over ranks (shard k of the
 * order goes to rank k mod world), so ranks read disjoint shards; begin() fails when there are
 * fewer shards than ranks. Within a shard samples come in tar order (the pipeline's shuffle
 * buffer mixes them). */
ts_status ts_wds_source_new(ts_source **out, const char *spec, int shuffle, ts_err *err);

/* CSV/TSV as open_clip reads it (--csv-img-key, --csv-caption-key, --csv-separator): a header
 * row naming the columns, fields quoted as RFC 4180 says ("a ""b""", commas and line breaks
 * inside quotes, CRLF or LF). Image paths are relative to the CSV file's folder unless
 * absolute. */
typedef struct ts_csv_spec {
    const char *path;
    const char *img_key;     /* column of image paths; NULL: "filepath" (open_clip's
                                default); "" for none (inspecting only: no source) */
    const char *caption_key; /* column of captions; NULL: "title"; "" for none */
    char sep;                /* 0: tab for .tsv and files whose header has a tab, else comma */
} ts_csv_spec;
typedef struct ts_csv ts_csv;
/* Read and check the whole file: TS_ERR_IO, or TS_ERR_FORMAT naming file and line for an
 * unterminated quote or a row with the wrong number of fields, or TS_ERR_DATA for a key that is
 * not a column (listing the columns). An empty image path or a missing file is found when the
 * row is read: a bad sample (TS_BAD_FILE) naming the row. */
ts_status ts_csv_open(ts_csv **out, const ts_csv_spec *spec, ts_err *err);
void ts_csv_close(ts_csv *c); /* NULL is a no-op */
int64_t ts_csv_rows(const ts_csv *c);     /* data rows, without the header */
int ts_csv_cols(const ts_csv *c);
const char *ts_csv_col_name(const ts_csv *c, int j);
const char *ts_csv_cell(const ts_csv *c, int64_t row, int j); /* NUL-terminated, unquoted */
int64_t ts_csv_line(const ts_csv *c, int64_t row); /* 1-based line of the row in the file */
int ts_csv_img_col(const ts_csv *c);     /* -1 when the spec named none and there is none */
int ts_csv_caption_col(const ts_csv *c); /* -1 when none */
/* The resolved image path of row (relative paths joined to the CSV's folder) into buf. */
const char *ts_csv_image_path(const ts_csv *c, int64_t row, char *buf, size_t n);
/* Any path p read from the file, resolved the same way, into buf. */
const char *ts_csv_resolve(const ts_csv *c, const char *p, char *buf, size_t n);
/* A source over the rows (the source owns c and closes it, also on failure; TS_ERR_USAGE when
 * c has no image column). shuffle: a permutation of the rows
 * drawn from (seed, epoch); rank r of world takes rows k = r, r + world, ... of that order, at
 * most rows / world each, so that every rank has the same number of samples. Samples have
 * path, text (the caption) and where "file.csv:row N (line L)". */
ts_status ts_csv_source_new(ts_source **out, ts_csv *c, int shuffle, ts_err *err);

/* ImageNet-style class folders: root/<class>/<image>. Classes are the sub-folders sorted by
 * name (strcmp, as torchvision's ImageFolder sorts them) and labelled 0, 1, ...; images are the
 * files with torchvision's image extensions (case-insensitive), sorted within their class. */
typedef struct ts_folder ts_folder;
ts_status ts_folder_open(ts_folder **out, const char *root, ts_err *err);
void ts_folder_close(ts_folder *f); /* NULL is a no-op */
int ts_folder_classes(const ts_folder *f);
const char *ts_folder_class_name(const ts_folder *f, int k);
int64_t ts_folder_count(const ts_folder *f);
const char *ts_folder_path(const ts_folder *f, int64_t i); /* full path of image i */
int ts_folder_label(const ts_folder *f, int64_t i);
/* A plain folder of images, without classes: the files directly in root (sub-folders are not
 * read) with the image extensions above, sorted by name (strcmp). ts_folder_classes is 0 and
 * every label -1; the folder source gives its samples no label. TS_ERR_IO when root cannot be
 * read, TS_ERR_DATA when it holds no image (both naming root). */
ts_status ts_folder_open_flat(ts_folder **out, const char *root, ts_err *err);
/* A source over the images (it owns f), split over ranks and shuffled as the CSV source. */
ts_status ts_folder_source_new(ts_source **out, ts_folder *f, int shuffle, ts_err *err);


/* ---------------------------------------------------------------------------------------- */
/* The synthetic shapes dataset (loaders/synth.c)                                           */

/* "shapes": a generated image-caption dataset written as real WebDataset shards, so that a
 * CLIP-style quickstart reads it through the same reader and pipeline as real data. Each
 * S x S image holds one shape on a textured background; four attributes are drawn uniformly
 * and the caption names them all ("a small red triangle at the top left"). Sample i of a split
 * depends only on (seed, size, split, i): not on the shard layout or the thread count. */
enum { TS_SYNTH_SHAPE, TS_SYNTH_COLOUR, TS_SYNTH_SIZE, TS_SYNTH_POSITION, TS_SYNTH_NATTR };
#define TS_SYNTH_SHAPES 5    /* circle, square, triangle, star, cross */
#define TS_SYNTH_COLOURS 7   /* red, green, blue, yellow, purple, orange, white */
#define TS_SYNTH_SIZES 2     /* small, large */
#define TS_SYNTH_POSITIONS 5 /* top left, top right, bottom left, bottom right, center */

/* The files of an output folder besides the shards (train-NNNNNN.tar, val-NNNNNN.tar): one
 * class name a line in label order (positions.txt holds the captions' phrases, "at the top
 * left", ..., "in the center"), with open_clip-style prompt templates ("a photo of a {}.") in
 * shapes-templates.txt, colours-templates.txt, sizes-templates.txt, positions-templates.txt;
 * the training captions one a line; the BPE merges the command line trains on them; and
 * manifest.json and README.txt, written last. */
#define TS_SYNTH_SHAPES_FILE "shapes.txt"
#define TS_SYNTH_COLOURS_FILE "colours.txt"
#define TS_SYNTH_SIZES_FILE "sizes.txt"
#define TS_SYNTH_POSITIONS_FILE "positions.txt"
#define TS_SYNTH_CAPTIONS_FILE "captions-train.txt"
#define TS_SYNTH_VOCAB_FILE "bpe.txt.gz"

/* How much to generate. Zero size, per_shard and quality take the defaults 64, 500 and 90. */
typedef struct ts_synth_cfg {
    uint64_t seed;
    int size;         /* S: 16..1024 */
    int train_shards; /* 1..999999 */
    int val_shards;   /* 0..999999 */
    int per_shard;    /* samples per shard, 1..1000000 */
    int quality;      /* JPEG quality 1..100 */
} ts_synth_cfg;

/* One drawn sample: the class of each attribute (indexed by TS_SYNTH_SHAPE ...), the caption,
 * and where the shape is: centre (cx, cy) and radius r in pixels (every shape lies within
 * that circle; its centroid is the centre), rotation in degrees. */
typedef struct ts_synth_sample {
    int attr[TS_SYNTH_NATTR];
    int phrasing;      /* which of the caption forms */
    char caption[128];
    float cx, cy, r, angle;
} ts_synth_sample;

int ts_synth_num_classes(int attr);              /* attr: TS_SYNTH_SHAPE ... */
const char *ts_synth_class_name(int attr, int k); /* "circle", "top left" */
const char *ts_synth_position_phrase(int k);      /* "at the top left", "in the center" */
void ts_synth_class_rgb(int colour, float rgb[3]); /* the nominal colour, 0..255 */
/* The nominal centre of a position in an image of side size, in pixels. */
void ts_synth_anchor(int position, int size, float *x, float *y);

/* Draw sample index of split (0 train, 1 val) into out and render its image into im (made
 * S x S, reusing its buffer). Errors: TS_ERR_NOMEM. */
ts_status ts_synth_shapes_draw(const ts_synth_cfg *cfg, int split, int64_t index,
                               ts_synth_sample *out, ts_image_u8 *im, ts_err *err);

/* Called after each shard is written: its path, samples written so far, samples in all. */
typedef void (*ts_synth_progress_fn)(void *user, const char *path, int64_t done, int64_t total);

/* Write the dataset into dir (created with its parents when missing): the shards (samples in
 * parallel with OpenMP), the class and template files and the captions file; every file goes
 * to NAME.tmp, is synced and renamed. A folder holding any name synth does not write is refused
 * (TS_ERR_USAGE naming it) unless force is set; in a folder of only synth's names (an earlier
 * output) the shards beyond this run's counts are removed, and temporaries of synth's names
 * that an interrupted run left are removed in any case. Samples are drawn and encoded a chunk
 * at a time, so memory does not grow with the shard size. The same cfg gives byte-identical
 * files. Errors: TS_ERR_USAGE (a cfg out of range, a foreign folder), TS_ERR_IO naming the
 * path, TS_ERR_NOMEM. progress may be NULL. */
ts_status ts_synth_shapes_write(const char *dir, const ts_synth_cfg *cfg, int force,
                                ts_synth_progress_fn progress, void *user, ts_err *err);
/* Write manifest.json and README.txt, which describe the folder (shard patterns as brace
 * lists, counts, classes and template files); vocab_file names the merges file trained on the
 * captions (NULL: none) and vocab_size its vocabulary. Call it last: ts_synth_shapes_write
 * removes manifest.json first, so that the manifest marks a finished output. */
ts_status ts_synth_shapes_manifest(const char *dir, const ts_synth_cfg *cfg,
                                   const char *vocab_file, int vocab_size, ts_err *err);


/* ---------------------------------------------------------------------------------------- */
/* The batch pipeline (loaders/pipeline.c)                                                  */

/* What workers do to a sample's image: nothing (no image wanted), training augmentation
 * (RandomResizedCrop(size, scale, ratio) then a horizontal flip with probability hflip, as
 * open_clip's train transform), or evaluation (Resize(resize) on the shorter side, then
 * CenterCrop(size)). Then ToTensor + Normalize(mean, std) into the batch. */
typedef enum { TS_XFORM_NONE, TS_XFORM_TRAIN, TS_XFORM_EVAL } ts_xform_mode;
typedef struct ts_xform_cfg {
    ts_xform_mode mode;
    int size;             /* S: output side, e.g. 224 */
    int resize;           /* eval: shorter side before the crop; 0: size */
    float scale[2], ratio[2]; /* train; zeros: torchvision's defaults (0.08, 1), (3/4, 4/3) */
    float hflip;          /* train: flip probability (0: none) */
    float mean[3], std[3]; /* all zero: CLIP's */
    ts_interp interp;     /* bicubic for CLIP */
    int decode_min_short; /* > 0: let JPEG decode DCT-scaled (faster, not torchvision-exact) */
    int frames;           /* > 0: the sample is a video clip (.mp4): K frames spread uniformly
                           * over it, each resized to S x S (bicubic) and normalised, so that a
                           * row is (K, 3, S, S); no crop or flip */
} ts_xform_cfg;

typedef enum { TS_ON_BAD_SKIP, TS_ON_BAD_FAIL } ts_on_bad;

/* A sample the skip policy left out, as the on_skip hook of ts_pipe_cfg is told of it. The
 * strings belong to the pipeline and are valid during the call only. */
typedef struct ts_skipped {
    int reason;           /* ts_bad_reason */
    int64_t epoch, index; /* its stream position; index -1 for a shard that could not be read */
    const char *where;    /* the sample: "shard.tar:key", "file.csv:row 3 (line 4)", a folder
                             image's path; "" for a shard that could not be read */
    const char *path;     /* the image file of a CSV or folder sample, else "" */
    const char *msg;      /* what was wrong, naming the sample (or the shard) */
} ts_skipped;
/* Called by ts_pipe_next on the consumer's thread, once for every sample left out of a batch
 * (and for every shard that could not be read while it filled), in stream order, before the
 * batch is returned; also for batches whose samples were all bad and so are never returned.
 * It runs with the pipeline's lock held: it must be quick and must not call ts_pipe_* on the
 * same pipeline. The counts of ts_pipe_bad_counts include these samples. */
typedef void (*ts_skip_fn)(void *user, const ts_skipped *s);

/* The per-sample prepare hook: write prepare_bytes into row for sample s (e.g. tokenize
 * s->text into a (T) int32 row). Called from several worker threads at once: it must be
 * thread-safe. An error makes the sample bad (TS_BAD_PREPARE), with err's message. */
typedef ts_status (*ts_prepare_fn)(void *user, const ts_sample *s, void *row, ts_err *err);

/* The batch buffer hook: told of each page-aligned batch buffer (a slot's images, and its
 * prepare rows) once, right after it is allocated (release 0), and again just before it is
 * freed (release 1), on the thread that opens or closes the pipeline. A CUDA build page-locks
 * the buffers here so that a batch goes to the device by an asynchronous copy straight from
 * the slot the workers wrote. A buffer may stay unregistered (an error of the hook's own): the
 * pipeline does not depend on it. */
typedef void (*ts_buffer_fn)(void *user, void *buf, size_t bytes, int release);

typedef struct ts_pipe_cfg {
    int batch_size;       /* B */
    int workers;          /* worker threads, >= 1 */
    int slots;            /* batches in flight (the pool of batch buffers); 0: workers + 2 */
    int shuffle_buffer;   /* samples held for shuffling (WebDataset); 0 or 1: none */
    uint64_t seed;
    int rank, world;      /* this process of a multi-process run; world 0 means 1 */
    int64_t epochs;       /* epochs to read; 0: no end (training) */
    int drop_last;        /* drop the partial batch at the end of each epoch */
    ts_on_bad on_bad;     /* skip and count, or stop with the sample's error */
    int need_text, need_label; /* a sample without a caption / label is bad (missing field) */
    ts_xform_cfg xform;
    ts_prepare_fn prepare; /* NULL: none */
    void *prepare_user;
    size_t prepare_bytes; /* bytes per row written by prepare */
    ts_skip_fn on_skip;   /* NULL: none; see ts_skip_fn (skip policy only) */
    void *on_skip_user;
    ts_buffer_fn on_buffer; /* NULL: none; see ts_buffer_fn */
    void *on_buffer_user;
} ts_pipe_cfg;

/* Where the data stream stands: the epoch, and how many samples of this rank's stream of that
 * epoch the delivered batches covered (bad samples included). Saved with a checkpoint; a
 * pipeline opened at a position delivers the batches that would have followed it. */
typedef struct ts_pipe_pos {
    int64_t epoch, samples;
} ts_pipe_pos;

/* One batch. Rows are the good samples of B consecutive stream positions, in stream order:
 * n = B unless samples were skipped as bad (their rows are left out and n is smaller) or the
 * epoch ended. The buffers belong to the pipeline, were allocated once, and stay valid until
 * the next ts_pipe_next or ts_pipe_close. */
typedef struct ts_pipe_batch {
    int n;                 /* rows; 0 at the end of the data (cfg.epochs done) */
    int64_t epoch, index;  /* epoch, and batch number within it (position / B) */
    float *images;         /* (n, 3, S, S), (n, K, 3, S, S) for video clips, or NULL when
                            * xform.mode is NONE */
    int64_t *labels;       /* (n); -1 where a sample has none */
    uint8_t *extra;        /* (n, prepare_bytes) from the prepare hook, or NULL */
    int64_t *sample_index; /* (n) stream position of each row in its epoch */
    char (*keys)[64];      /* (n) the sample keys, cut at 63 bytes, for logs and tests */
} ts_pipe_batch;

typedef struct ts_pipe ts_pipe;

/* Start the workers over src (the pipeline owns it from here on, even on failure) from start
 * (NULL: epoch 0, sample 0). Errors: TS_ERR_USAGE for a bad cfg, TS_ERR_NOMEM. */
ts_status ts_pipe_open(ts_pipe **out, ts_source *src, const ts_pipe_cfg *cfg,
                       const ts_pipe_pos *start, ts_err *err);
/* The next batch, in the same order for a given seed whatever the number of workers (sample i
 * of an epoch always lands in batch i / B; its augmentation draws from an RNG seeded by
 * (seed, epoch, rank, i)). With on_bad = FAIL the first bad sample (in stream order) stops the
 * pipeline: the error names it (file, key or row) and every later call returns it too. */
ts_status ts_pipe_next(ts_pipe *p, ts_pipe_batch *b, ts_err *err);
/* The position after the last delivered batch. */
ts_pipe_pos ts_pipe_position(const ts_pipe *p);
/* Bad samples by reason (indexed by ts_bad_reason) in the batches delivered so far. */
void ts_pipe_bad_counts(const ts_pipe *p, int64_t counts[TS_BAD_COUNT]);
/* Stop and join the workers and free everything, the source too. NULL is a no-op. */
void ts_pipe_close(ts_pipe *p);

#ifdef __cplusplus
}
#endif

#endif
