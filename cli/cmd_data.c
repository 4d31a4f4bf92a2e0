/* cmd_data.c: the `tessera data` verb; for now one command, `inspect`.
 *
 * `tessera data inspect PATH...` tells what a data file holds, through the same loaders the
 * training pipeline uses: for an HDF5 file the group tree with shapes and dtypes and the demos
 * and steps of a robomimic, LIBERO or robosuite file; for a video its container, codec, size,
 * fps, frame count and duration; for a JPEG or PNG its size and format. Files are told apart by
 * their signatures (the extension only for tar and CSV, which are not supported yet).
 * Exit codes as every verb: 0 ok, 1 a file that cannot be read or is not understood, 2 usage.
 *
 * What it is not: a validator that decodes every frame or sample; reading a file whole is the
 * loaders' tests' job.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "tessera.h"
#include "loaders.h"
#include "cli.h"

static void data_usage(FILE *out) {
    fprintf(out,
            "usage: tessera data inspect PATH...\n"
            "\n"
            "Print a summary of each data file:\n"
            "  HDF5    the tree of groups and datasets (shapes, dtypes, short attributes);\n"
            "          for robomimic/LIBERO/robosuite files the demos, steps and masks\n"
            "  video   container, codec, size, fps, frame count (counted) and duration\n"
            "  image   JPEG or PNG: format and size\n"
            "WebDataset tar shards and CSV/TSV files are not supported yet.\n"
            "\n"
            "options:\n"
            "  -h, --help   this help\n"
            "\n"
            "Exit status: 0 ok, 1 a file that cannot be read or understood, 2 usage error.\n");
}

static int has_suffix(const char *s, const char *suf) {
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && !strcasecmp(s + n - m, suf);
}

/* HDF5's signature sits at 0 or, after a user block, at 512, 1024, 2048, ... */
static int is_hdf5(FILE *f) {
    static const unsigned char sig[8] = { 0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n' };
    for (long off = 0; off <= 1 << 20; off = off ? off * 2 : 512) {
        unsigned char b[8];
        if (fseek(f, off, SEEK_SET) || fread(b, 1, 8, f) != 8) return 0;
        if (!memcmp(b, sig, 8)) return 1;
    }
    return 0;
}

static int inspect_image(const char *path, ts_err *err) {
    ts_image_u8 im;
    ts_image_u8_init(&im);
    ts_image_info info;
    ts_status st = ts_image_load(&im, path, NULL, &info, err);
    if (!st) {
        printf("%s: image\n", path);
        printf("  format:      %s\n", info.format == TS_IMG_JPEG ? "JPEG" : "PNG");
        printf("  size:        %d x %d (as stored)\n", info.stored_w, info.stored_h);
        if (info.orientation != 1)
            printf("  orientation: EXIF %d, decodes to %d x %d\n", info.orientation, im.w, im.h);
    }
    ts_image_u8_free(&im);
    return st;
}

static int inspect_video(const char *path, ts_err *err) {
    ts_video *v;
    ts_status st = ts_video_open(&v, path, 1, err);
    if (st) return st;
    const ts_video_info *in = ts_video_get_info(v);
    printf("%s: video\n", path);
    printf("  container: %s\n", in->container);
    printf("  codec:     %s (%s)\n", in->codec, in->pix_fmt);
    printf("  size:      %d x %d\n", in->w, in->h);
    printf("  fps:       %.3f\n", in->fps);
    if (in->header_frames >= 0)
        printf("  frames:    %lld (header: %lld)\n", (long long)in->frames,
               (long long)in->header_frames);
    else
        printf("  frames:    %lld (the header does not say; counted)\n", (long long)in->frames);
    printf("  duration:  %.3f s\n", in->duration);
    ts_video_close(v);
    return TS_OK;
}

/* One file: 0 ok, 1 failure (message printed). */
static int inspect(const char *path) {
    ts_err err = { 0 };
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "tessera: error: %s: cannot open\n", path);
        return 1;
    }
    unsigned char head[8] = { 0 };
    size_t n = fread(head, 1, sizeof head, f);
    int hdf5 = is_hdf5(f);
    fclose(f);
    if (has_suffix(path, ".tar") || has_suffix(path, ".tgz") || has_suffix(path, ".tar.gz") ||
        has_suffix(path, ".csv") || has_suffix(path, ".tsv")) {
        fprintf(stderr, "tessera: error: %s: %s files are not supported by `tessera data "
                "inspect` yet\n", path, has_suffix(path, "sv") ? "CSV/TSV" : "tar");
        return 1;
    }
    ts_status st;
    if (hdf5) {
        st = ts_hdf5_summary(stdout, path, &err);
    } else if ((n >= 3 && head[0] == 0xFF && head[1] == 0xD8 && head[2] == 0xFF) ||
               (n == 8 && !memcmp(head, "\x89PNG\r\n\x1a\n", 8))) {
        st = inspect_image(path, &err);
    } else {
        st = inspect_video(path, &err);
        static const char *const video_ext[] = { ".mp4", ".mkv", ".webm", ".mov", ".avi",
                                                 ".m4v", ".gif", NULL };
        int known = 0;
        for (int i = 0; video_ext[i]; i++) known |= has_suffix(path, video_ext[i]);
        if (st == TS_ERR_FORMAT && !known && strstr(err.msg, "cannot open as a video"))
            snprintf(err.msg + strlen(err.msg), sizeof err.msg - strlen(err.msg),
                     " (tessera data inspect knows HDF5, video, JPEG and PNG files)");
    }
    if (st) {
        fprintf(stderr, "tessera: error: %s\n", err.msg);
        return 1;
    }
    return 0;
}

int ts_cmd_data(int argc, char **argv) {
    if (argc < 1) {
        data_usage(stderr);
        return 2;
    }
    if (!strcmp(argv[0], "-h") || !strcmp(argv[0], "--help")) {
        data_usage(stdout);
        return 0;
    }
    if (strcmp(argv[0], "inspect")) {
        fprintf(stderr, "tessera data: unknown command '%s' (valid: inspect; see tessera data "
                "--help)\n", argv[0]);
        return 2;
    }
    int npaths = 0, rc = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            data_usage(stdout);
            return 0;
        }
        if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "tessera data inspect: unknown option %s (see tessera data --help)\n",
                    argv[i]);
            return 2;
        }
    }
    for (int i = 1; i < argc; i++) {
        if (npaths++) printf("\n");
        fflush(stdout);
        if (inspect(argv[i])) rc = 1;
        fflush(stdout);
    }
    if (!npaths) {
        fprintf(stderr, "tessera data inspect: no PATH given\n");
        data_usage(stderr);
        return 2;
    }
    return rc;
}
