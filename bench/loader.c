/* loader.c: the timing half of bench/loader.py, tessera's input pipeline on its own.
 *
 * Four commands, each printing one JSON line: `gen DIR N` writes N deterministic 500x375 JPEGs
 * (quality 90, 4:2:0: smooth gradients, a few shaded shapes and sensor-like noise, so that the
 * entropy decoder sees photo-like data) once into DIR as class folders, a CSV and WebDataset
 * shards; `images SOURCE WORKERS COUNT` times the batch pipeline (decode, RandomResizedCrop(224)
 * bilinear, flip, ToTensor + CLIP Normalize) over a source ("folder:DIR", "csv:FILE",
 * "wds:SPEC") until COUNT images are delivered; `video PATH` times decoding every frame to
 * 224x224 and sampling 8 frames uniformly from clips; `hdf5 PATH` times reading every window of
 * 16 steps in a shuffled order. What it is not: a test, or the reference side (the Python driver
 * runs PIL + torchvision in the same run and prints the table).
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <archive.h>
#include <archive_entry.h>
#include <turbojpeg.h>

#include "loaders.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int die(const char *what, const ts_err *err) {
    fprintf(stderr, "bench/loader: %s: %s\n", what, err ? err->msg : "failed");
    return 1;
}

/* ---------------------------------------------------------------------------------------- */
/* Test images                                                                              */

static uint8_t clamp_u8(float v) { return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v + 0.5f); }

/* Image id as RGB (h, w, 3): a diagonal two-colour gradient, five shaded discs and rectangles,
 * and noise of about 6 levels, all drawn from an RNG seeded by id. */
static void draw(uint8_t *rgb, int w, int h, int id) {
    ts_rng r;
    ts_rng_seed(&r, 1000u + (uint64_t)id);
    float c0[3], c1[3];
    for (int k = 0; k < 3; k++) c0[k] = 255 * ts_rng_uniform(&r), c1[k] = 255 * ts_rng_uniform(&r);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            float t = 0.5f * ((float)x / (float)w + (float)y / (float)h);
            for (int k = 0; k < 3; k++) rgb[((size_t)y * w + x) * 3 + k] = clamp_u8(c0[k] + t * (c1[k] - c0[k]));
        }
    for (int s = 0; s < 5; s++) {
        float cx = (float)w * ts_rng_uniform(&r), cy = (float)h * ts_rng_uniform(&r);
        float rad = 20 + 80 * ts_rng_uniform(&r), col[3];
        for (int k = 0; k < 3; k++) col[k] = 255 * ts_rng_uniform(&r);
        int disc = s & 1;
        for (int y = (int)fmaxf(0, cy - rad); y < (int)fminf((float)h, cy + rad); y++)
            for (int x = (int)fmaxf(0, cx - rad); x < (int)fminf((float)w, cx + rad); x++) {
                float dx = (float)x - cx, dy = (float)y - cy, d2 = dx * dx + dy * dy;
                if (disc && d2 > rad * rad) continue;
                float shade = 0.6f + 0.4f * (dy + rad) / (2 * rad); /* lit from below */
                for (int k = 0; k < 3; k++) rgb[((size_t)y * w + x) * 3 + k] = clamp_u8(col[k] * shade);
            }
    }
    for (size_t i = 0; i < (size_t)w * h * 3; i++) {
        float n = 6.0f * ts_rng_normal(&r);
        rgb[i] = clamp_u8((float)rgb[i] + n);
    }
}

static int write_file(const char *path, const void *b, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(b, 1, n, f);
    return (fclose(f) == 0 && w == n) ? 0 : -1;
}

/* gen DIR N: DIR/folder/c{0,1}/NNNNNN.jpg, DIR/train.csv, DIR/shards/shard-00000{0..3}.tar.
 * A DIR/done-N marker makes a second call free. */
static int cmd_gen(const char *dir, int n) {
    char p[4096];
    snprintf(p, sizeof p, "%s/done-%d", dir, n);
    struct stat st;
    if (stat(p, &st) == 0) {
        printf("{\"generated\": 0, \"dir\": \"%s\"}\n", dir);
        return 0;
    }
    const int W = 500, H = 375, SHARDS = 4;
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s/folder/c0' '%s/folder/c1' '%s/shards'",
             dir, dir, dir, dir);
    if (system(cmd) != 0) return 1;
    uint8_t *rgb = malloc((size_t)W * H * 3);
    tjhandle tj = tjInitCompress();
    snprintf(p, sizeof p, "%s/train.csv", dir);
    FILE *csv = fopen(p, "w");
    if (!rgb || !tj || !csv) return 1;
    fprintf(csv, "filepath,title\n");
    struct archive *tar[4];
    for (int s = 0; s < SHARDS; s++) {
        tar[s] = archive_write_new();
        archive_write_set_format_ustar(tar[s]);
        snprintf(p, sizeof p, "%s/shards/shard-%06d.tar", dir, s);
        if (archive_write_open_filename(tar[s], p) != ARCHIVE_OK) return 1;
    }
    size_t bytes = 0;
    for (int i = 0; i < n; i++) {
        draw(rgb, W, H, i);
        unsigned char *jpg = NULL;
        unsigned long len = 0;
        if (tjCompress2(tj, rgb, W, 0, H, TJPF_RGB, &jpg, &len, TJSAMP_420, 90, 0) != 0) return 1;
        bytes += len;
        snprintf(p, sizeof p, "%s/folder/c%d/%06d.jpg", dir, i & 1, i);
        if (write_file(p, jpg, len) != 0) return 1;
        fprintf(csv, "folder/c%d/%06d.jpg,image %d\n", i & 1, i, i);
        /* Sample i goes to shard i mod 4 as key.jpg, key.txt and key.cls. */
        char key[32], name[48], txt[32], cls[8];
        snprintf(key, sizeof key, "%06d", i);
        snprintf(txt, sizeof txt, "image %d", i);
        snprintf(cls, sizeof cls, "%d", i & 1);
        const char *ext[3] = { "jpg", "txt", "cls" };
        const void *data[3] = { jpg, txt, cls };
        size_t sz[3] = { len, strlen(txt), strlen(cls) };
        for (int m = 0; m < 3; m++) {
            struct archive_entry *e = archive_entry_new();
            snprintf(name, sizeof name, "%s.%s", key, ext[m]);
            archive_entry_set_pathname(e, name);
            archive_entry_set_size(e, (la_int64_t)sz[m]);
            archive_entry_set_filetype(e, AE_IFREG);
            archive_entry_set_perm(e, 0644);
            archive_entry_set_mtime(e, 1609459200, 0);
            archive_write_header(tar[i % SHARDS], e);
            archive_write_data(tar[i % SHARDS], data[m], sz[m]);
            archive_entry_free(e);
        }
        tjFree(jpg);
    }
    for (int s = 0; s < SHARDS; s++) {
        archive_write_close(tar[s]);
        archive_write_free(tar[s]);
    }
    fclose(csv);
    tjDestroy(tj);
    free(rgb);
    snprintf(p, sizeof p, "%s/done-%d", dir, n);
    if (write_file(p, "", 0) != 0) return 1;
    printf("{\"generated\": %d, \"dir\": \"%s\", \"mean_kib\": %.1f}\n", n, dir,
           (double)bytes / n / 1024.0);
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* The image pipeline                                                                       */

static int cmd_images(const char *source, int workers, int64_t count) {
    ts_err err;
    ts_source *src = NULL;
    if (!strncmp(source, "folder:", 7)) {
        ts_folder *f;
        if (ts_folder_open(&f, source + 7, &err) || ts_folder_source_new(&src, f, 1, &err))
            return die(source, &err);
    } else if (!strncmp(source, "csv:", 4)) {
        ts_csv *c;
        ts_csv_spec spec = { .path = source + 4 };
        if (ts_csv_open(&c, &spec, &err) || ts_csv_source_new(&src, c, 1, &err))
            return die(source, &err);
    } else if (!strncmp(source, "wds:", 4)) {
        if (ts_wds_source_new(&src, source + 4, 1, &err)) return die(source, &err);
    } else {
        fprintf(stderr, "bench/loader: unknown source %s (folder:, csv:, wds:)\n", source);
        return 2;
    }
    ts_pipe_cfg c = { .batch_size = 32, .workers = workers, .seed = 1, .shuffle_buffer = 64 };
    c.xform.mode = TS_XFORM_TRAIN;
    c.xform.size = 224;
    c.xform.hflip = 0.5f;
    c.xform.interp = TS_INTERP_BILINEAR; /* torchvision's RandomResizedCrop default */
    if (getenv("TS_BENCH_DCT")) c.xform.decode_min_short = 224;
    ts_pipe *p;
    if (ts_pipe_open(&p, src, &c, NULL, &err)) return die("ts_pipe_open", &err);
    ts_pipe_batch b;
    /* The first batch pays for thread start and cold caches: the clock starts after it. */
    if (ts_pipe_next(p, &b, &err)) return die("ts_pipe_next", &err);
    double t0 = now();
    int64_t n = 0;
    volatile float sink = 0;
    while (n < count) {
        if (ts_pipe_next(p, &b, &err)) return die("ts_pipe_next", &err);
        if (b.n == 0) break;
        sink += b.images[0];
        n += b.n;
    }
    double dt = now() - t0;
    ts_pipe_close(p);
    printf("{\"images\": %lld, \"seconds\": %.4f, \"images_per_s\": %.2f}\n", (long long)n, dt,
           (double)n / dt);
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Video and HDF5                                                                           */

/* Every frame in order at 224x224 (sequential decode), then 8 uniform frames from each of up
 * to 16 two-second clips at 224x224 (seeks included), each as frames/s. */
static int cmd_video(const char *path) {
    ts_err err;
    ts_video *v;
    if (ts_video_open(&v, path, 1, &err)) return die(path, &err);
    const ts_video_info *info = ts_video_get_info(v);
    int64_t nf = info->frames;
    const int K = 8, S = 224;
    uint8_t *out = malloc((size_t)K * S * S * 3);
    int64_t idx[8];
    double t0 = now();
    for (int64_t i = 0; i < nf; i += K) {
        int k = 0;
        for (; k < K && i + k < nf; k++) idx[k] = i + k;
        if (ts_video_read(v, idx, k, S, S, TS_VSCALE_BILINEAR, out, &err)) return die(path, &err);
    }
    double seq = (double)nf / (now() - t0);
    int clips = 0;
    t0 = now();
    for (int c = 0; c < 16; c++) {
        double start = info->duration * c / 16.0;
        if (ts_video_uniform_indices(v, K, start, start + 2.0, idx, &err)) break;
        if (ts_video_read(v, idx, K, S, S, TS_VSCALE_BILINEAR, out, &err)) return die(path, &err);
        clips++;
    }
    double clip = (double)(clips * K) / (now() - t0);
    printf("{\"codec\": \"%s\", \"w\": %d, \"h\": %d, \"frames\": %lld, \"seq_fps\": %.1f, "
           "\"clip_fps\": %.1f}\n", info->codec, info->w, info->h, (long long)nf, seq, clip);
    free(out);
    ts_video_close(v);
    return 0;
}

/* Every window of 16 steps (actions and states, Diffusion Policy's padding 1 / 7) in a shuffled
 * order, windows/s. */
static int cmd_hdf5(const char *path) {
    ts_err err;
    ts_traj_spec spec = { .actions = "actions", .lowdim = { "states" }, .n_lowdim = 1,
                          .horizon = 16, .pad_before = 1, .pad_after = 7 };
    ts_traj *t;
    if (ts_traj_open(&t, path, &spec, &err)) return die(path, &err);
    int64_t nw = ts_traj_num_windows(t), A = ts_traj_action_dim(t), D = ts_traj_lowdim_total(t);
    float *act = malloc((size_t)(16 * A) * sizeof(float)), *low = malloc((size_t)(16 * D) * sizeof(float));
    int64_t *order = malloc((size_t)nw * sizeof *order);
    ts_rng r;
    ts_rng_seed(&r, 3);
    for (int64_t i = 0; i < nw; i++) order[i] = i;
    for (int64_t i = nw - 1; i > 0; i--) {
        int64_t j = (int64_t)(ts_rng_next(&r) % (uint64_t)(i + 1)), x = order[i];
        order[i] = order[j], order[j] = x;
    }
    double t0 = now();
    for (int64_t i = 0; i < nw; i++)
        if (ts_traj_read_window(t, order[i], act, low, NULL, &err)) return die(path, &err);
    double dt = now() - t0;
    printf("{\"demos\": %d, \"windows\": %lld, \"A\": %lld, \"D\": %lld, \"windows_per_s\": %.1f}\n",
           ts_traj_num_demos(t), (long long)nw, (long long)A, (long long)D, (double)nw / dt);
    free(act), free(low), free(order);
    ts_traj_close(t);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 4 && !strcmp(argv[1], "gen")) return cmd_gen(argv[2], atoi(argv[3]));
    if (argc == 5 && !strcmp(argv[1], "images"))
        return cmd_images(argv[2], atoi(argv[3]), atoll(argv[4]));
    if (argc == 3 && !strcmp(argv[1], "video")) return cmd_video(argv[2]);
    if (argc == 3 && !strcmp(argv[1], "hdf5")) return cmd_hdf5(argv[2]);
    fprintf(stderr, "usage: loader gen DIR N | images SOURCE WORKERS COUNT | video PATH | "
                    "hdf5 PATH\n(bench/loader.py runs it beside PIL + torchvision)\n");
    return 2;
}
