/* synth.c: "shapes", the bundled synthetic image-caption dataset, written as WebDataset shards.
 *
 * Each sample is one S x S picture: a textured background (two muted colours mixed by a sum of
 * two sinusoidal waves of random period, angle and phase, plus mild pixel noise) with one
 * saturated shape on it, drawn with 4 x 4 supersampling. Four attributes are drawn uniformly
 * and independently (shape, colour, size, position), and the caption names all four ("a small
 * red triangle at the top left", in one of a few phrasings). Every random draw of sample i of a
 * split comes from one RNG seeded by (seed, split, i), so a sample never depends on the
 * number of shards, on threads, or on any other sample; train and val draw from different
 * streams, so val images are held out.
 *
 * The shards are real tar files (ustar through libarchive, fixed mtime, owner and mode) of
 * KEY.jpg (TurboJPEG, 4:4:4), KEY.txt (the caption) and KEY.json (the labels and the shape's
 * geometry), so that a model trained on them runs the same reader and pipeline as one trained
 * on real data. Every file goes to NAME.tmp, is synced, then renamed: an interrupted run never
 * leaves a file that looks whole. The same options give byte-identical files.
 *
 * What it is not: a benchmark of vision. The attributes are deliberately easy at 64 pixels, so
 * that a tiny CLIP model learns them in minutes on a CPU; the tokenizer trained on the captions
 * lives in text/ and the command line (cli/cmd_data.c) calls both.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <archive.h>
#include <archive_entry.h>
#include <turbojpeg.h>

#include "loaders-impl.h"

/* ---------------------------------------------------------------------------------------- */
/* The classes                                                                              */

static const char *const shape_names[] = { "circle", "square", "triangle", "star", "cross" };
static const char *const colour_names[] = { "red",    "green",  "blue", "yellow",
                                            "purple", "orange", "white" };
/* Saturated or bright, so that none is near a muted background. */
static const float colour_rgb[][3] = {
    { 225, 30, 30 }, { 30, 185, 45 },  { 35, 70, 235 },  { 245, 220, 25 },
    { 155, 40, 205 }, { 250, 135, 15 }, { 250, 250, 250 },
};
static const char *const size_names[] = { "small", "large" };
static const char *const position_names[] = { "top left", "top right", "bottom left",
                                              "bottom right", "center" };
static const char *const position_phrases[] = { "at the top left", "at the top right",
                                                "at the bottom left", "at the bottom right",
                                                "in the center" };
/* The anchor of each position, as fractions of S (x, y); y grows downwards. */
static const float anchors[][2] = {
    { 0.25f, 0.25f }, { 0.75f, 0.25f }, { 0.25f, 0.75f }, { 0.75f, 0.75f }, { 0.5f, 0.5f },
};
#define NARR(a) ((int)(sizeof(a) / sizeof((a)[0])))
_Static_assert(NARR(colour_names) == NARR(colour_rgb), "one colour per name");
_Static_assert(NARR(position_names) == NARR(anchors) && NARR(position_phrases) == NARR(anchors),
               "one anchor and phrase per position");
_Static_assert(NARR(shape_names) == TS_SYNTH_SHAPES && NARR(colour_names) == TS_SYNTH_COLOURS &&
               NARR(size_names) == TS_SYNTH_SIZES && NARR(position_names) == TS_SYNTH_POSITIONS,
               "class counts of loaders.h");

/* The radius r of a shape (the circle around it), as fractions of S; the centre moves up to
 * JITTER * S from its anchor. The largest shape at a corner anchor still fits the image. */
static const float size_range[][2] = { { 0.12f, 0.14f }, { 0.19f, 0.22f } };
#define JITTER 0.03f
#define MAX_TILT 15.0f /* degrees of rotation either way (not for circles) */

/* Prompt templates for zero-shot classification of each attribute (open_clip style); the
 * class names of the position are the phrases of the captions. The shape's name with a size, as
 * in OpenAI's ImageNet templates ("a photo of a small {}.", "a photo of a big {}."): every
 * caption gives the size before the shape. */
static const char *const shape_templates[] = { "a small {}.", "a large {}.",
                                               "a photo of a small {}.", "a photo of a large {}.",
                                               "a picture of a small {}.",
                                               "a picture of a large {}.", "there is a small {}.",
                                               "there is a large {}." };
static const char *const colour_templates[] = { "a {} shape.", "a photo of a {} shape.",
                                                "a picture of something {}.", "something {}." };
static const char *const size_templates[] = { "a {} shape.", "a photo of a {} shape.",
                                              "a picture of a {} object." };
static const char *const position_templates[] = { "a shape {}.", "a photo of a shape {}.",
                                                  "a picture of something {}." };

#define NPHRASINGS 5

int ts_synth_num_classes(int attr) {
    static const int n[] = { TS_SYNTH_SHAPES, TS_SYNTH_COLOURS, TS_SYNTH_SIZES, TS_SYNTH_POSITIONS };
    TS_CHECK(attr >= 0 && attr < TS_SYNTH_NATTR, "attribute %d of 0..%d", attr, TS_SYNTH_NATTR - 1);
    return n[attr];
}

const char *ts_synth_class_name(int attr, int k) {
    TS_CHECK(k >= 0 && k < ts_synth_num_classes(attr), "class %d of attribute %d", k, attr);
    switch (attr) {
    case TS_SYNTH_SHAPE: return shape_names[k];
    case TS_SYNTH_COLOUR: return colour_names[k];
    case TS_SYNTH_SIZE: return size_names[k];
    default: return position_names[k];
    }
}

/* A line of the classes file of attribute a: the class name, or for positions the phrase. */
static const char *class_line(int a, int k) {
    return a == TS_SYNTH_POSITION ? position_phrases[k] : ts_synth_class_name(a, k);
}

const char *ts_synth_position_phrase(int k) {
    TS_CHECK(k >= 0 && k < TS_SYNTH_POSITIONS, "position %d", k);
    return position_phrases[k];
}

void ts_synth_class_rgb(int colour, float rgb[3]) {
    TS_CHECK(colour >= 0 && colour < TS_SYNTH_COLOURS, "colour %d", colour);
    for (int c = 0; c < 3; c++) rgb[c] = colour_rgb[colour][c];
}

void ts_synth_anchor(int position, int size, float *x, float *y) {
    TS_CHECK(position >= 0 && position < TS_SYNTH_POSITIONS, "position %d", position);
    *x = anchors[position][0] * (float)size;
    *y = anchors[position][1] * (float)size;
}

/* ---------------------------------------------------------------------------------------- */
/* Drawing one sample                                                                       */

static ts_synth_cfg cfg_defaults(const ts_synth_cfg *in) {
    ts_synth_cfg c = *in;
    if (!c.size) c.size = 64;
    if (!c.per_shard) c.per_shard = 500;
    if (!c.quality) c.quality = 90;
    return c;
}

static ts_status cfg_check(const ts_synth_cfg *c, ts_err *err) {
    if (c->size < 16 || c->size > 1024)
        return ts_fail(err, TS_ERR_USAGE, "image size %d is outside 16..1024", c->size);
    if (c->train_shards < 1 || c->train_shards > 999999 || c->val_shards < 0 ||
        c->val_shards > 999999)
        return ts_fail(err, TS_ERR_USAGE, "shard counts %d (train) and %d (val) must be 1..999999 "
                       "and 0..999999", c->train_shards, c->val_shards);
    if (c->per_shard < 1 || c->per_shard > 1000000)
        return ts_fail(err, TS_ERR_USAGE, "samples per shard %d is outside 1..1000000",
                       c->per_shard);
    if (c->quality < 1 || c->quality > 100)
        return ts_fail(err, TS_ERR_USAGE, "JPEG quality %d is outside 1..100", c->quality);
    return TS_OK;
}

static int draw_int(ts_rng *r, int n) { return (int)(ts_rng_next(r) % (uint64_t)n); }
static float draw_range(ts_rng *r, float lo, float hi) { return lo + (hi - lo) * ts_rng_uniform(r); }

/* HSV (h in [0, 6), s, v in [0, 1]) to RGB in 0..255. */
static void hsv_rgb(float h, float s, float v, float rgb[3]) {
    int i = (int)h % 6;
    float f = h - floorf(h), p = v * (1 - s), q = v * (1 - s * f), t = v * (1 - s * (1 - f));
    float r, g, b;
    switch (i) {
    case 0: r = v, g = t, b = p; break;
    case 1: r = q, g = v, b = p; break;
    case 2: r = p, g = v, b = t; break;
    case 3: r = p, g = q, b = v; break;
    case 4: r = t, g = p, b = v; break;
    default: r = v, g = p, b = q; break;
    }
    rgb[0] = 255 * r, rgb[1] = 255 * g, rgb[2] = 255 * b;
}

/* The outline of a shape of radius r centred at 0, in image orientation (y down, "up" is -y),
 * before rotation. The circle has none (inside test below). Returns the vertex count. */
static int shape_polygon(int shape, float r, float (*v)[2]) {
    const float PI = 3.14159265358979f;
    int n = 0;
    switch (shape) {
    case 1: { /* square, corners on the circle of radius ~r */
        float a = 0.71f * r;
        float sq[4][2] = { { -a, -a }, { a, -a }, { a, a }, { -a, a } };
        memcpy(v, sq, sizeof sq);
        return 4;
    }
    case 2: /* equilateral triangle pointing up, circumradius r (its centroid is the centre) */
        for (int k = 0; k < 3; k++) {
            float t = -PI / 2 + (float)k * 2 * PI / 3;
            v[n][0] = r * cosf(t), v[n][1] = r * sinf(t), n++;
        }
        return n;
    case 3: /* five-pointed star: outer radius r, inner 0.42 r */
        for (int k = 0; k < 10; k++) {
            float t = -PI / 2 + (float)k * PI / 5, rr = k % 2 ? 0.42f * r : r;
            v[n][0] = rr * cosf(t), v[n][1] = rr * sinf(t), n++;
        }
        return n;
    case 4: { /* plus-shaped cross: arms 0.96 r long, 0.3 r half-wide */
        float L = 0.96f * r, w = 0.3f * r;
        float cr[12][2] = { { -w, -L }, { w, -L }, { w, -w }, { L, -w }, { L, w },  { w, w },
                            { w, L },   { -w, L }, { -w, w }, { -L, w }, { -L, -w }, { -w, -w } };
        memcpy(v, cr, sizeof cr);
        return 12;
    }
    default: return 0;
    }
}

/* Even-odd rule: is (x, y) inside the polygon v[0..n-1]? */
static int inside_polygon(const float (*v)[2], int n, float x, float y) {
    int in = 0;
    for (int i = 0, j = n - 1; i < n; j = i++) {
        if ((v[i][1] > y) != (v[j][1] > y) &&
            x < (v[j][0] - v[i][0]) * (y - v[i][1]) / (v[j][1] - v[i][1]) + v[i][0])
            in = !in;
    }
    return in;
}

static const char *caption_form(int phrasing) {
    static const char *const forms[NPHRASINGS] = {
        "a %s %s %s %s",          /* size colour shape position */
        "a photo of a %s %s %s %s",
        "a picture of a %s %s %s %s",
        "there is a %s %s %s %s",
        "a %s %s in %s %s",       /* size shape colour position */
    };
    return forms[phrasing];
}

ts_status ts_synth_shapes_draw(const ts_synth_cfg *cfg_in, int split, int64_t index,
                               ts_synth_sample *out, ts_image_u8 *im, ts_err *err) {
    TS_CHECK(split == 0 || split == 1, "split %d (0 train, 1 val)", split);
    TS_CHECK(index >= 0, "sample index %lld", (long long)index);
    ts_synth_cfg cfg = cfg_defaults(cfg_in);
    TS_CHECK(cfg.size >= 16 && cfg.size <= 1024, "image size %d", cfg.size);
    const int S = cfg.size;
    ts_rng r;
    ts_rng_seed(&r, ts__mix64(ts__mix64(ts__mix64(cfg.seed) + 0x53484150ull + (uint64_t)split) +
                              (uint64_t)index));

    /* The labels and the caption. */
    ts_synth_sample *s = out;
    memset(s, 0, sizeof *s);
    for (int a = 0; a < TS_SYNTH_NATTR; a++) s->attr[a] = draw_int(&r, ts_synth_num_classes(a));
    s->phrasing = draw_int(&r, NPHRASINGS);
    const char *sz = size_names[s->attr[TS_SYNTH_SIZE]],
               *col = colour_names[s->attr[TS_SYNTH_COLOUR]],
               *shp = shape_names[s->attr[TS_SYNTH_SHAPE]],
               *pos = position_phrases[s->attr[TS_SYNTH_POSITION]];
    if (s->phrasing == 4)
        snprintf(s->caption, sizeof s->caption, caption_form(4), sz, shp, col, pos);
    else
        snprintf(s->caption, sizeof s->caption, caption_form(s->phrasing), sz, col, shp, pos);

    /* The geometry: radius, centre near the anchor, tilt. */
    const float *range = size_range[s->attr[TS_SYNTH_SIZE]];
    s->r = draw_range(&r, range[0], range[1]) * (float)S;
    s->cx = (anchors[s->attr[TS_SYNTH_POSITION]][0] + draw_range(&r, -JITTER, JITTER)) * (float)S;
    s->cy = (anchors[s->attr[TS_SYNTH_POSITION]][1] + draw_range(&r, -JITTER, JITTER)) * (float)S;
    s->angle = s->attr[TS_SYNTH_SHAPE] == 0 ? 0.0f : draw_range(&r, -MAX_TILT, MAX_TILT);

    /* The shape's colour: the class colour, a little brighter or darker per channel. */
    float fg[3];
    float shade = draw_range(&r, 0.92f, 1.0f);
    for (int c = 0; c < 3; c++) {
        float v = colour_rgb[s->attr[TS_SYNTH_COLOUR]][c] * shade + draw_range(&r, -8, 8);
        fg[c] = v < 0 ? 0 : v > 255 ? 255 : v;
    }

    /* The background: two muted colours mixed along two waves. */
    float bg0[3], bg1[3];
    hsv_rgb(draw_range(&r, 0, 6), draw_range(&r, 0.05f, 0.3f), draw_range(&r, 0.28f, 0.55f), bg0);
    hsv_rgb(draw_range(&r, 0, 6), draw_range(&r, 0.05f, 0.3f), draw_range(&r, 0.28f, 0.55f), bg1);
    const float TWO_PI = 6.28318530717959f;
    float wave[2][3]; /* kx, ky, phase of each wave (radians per pixel) */
    for (int k = 0; k < 2; k++) {
        float period = (float)S * (k ? draw_range(&r, 0.4f, 1.2f) : draw_range(&r, 0.12f, 0.45f));
        float theta = draw_range(&r, 0, TWO_PI / 2);
        wave[k][0] = TWO_PI / period * cosf(theta);
        wave[k][1] = TWO_PI / period * sinf(theta);
        wave[k][2] = draw_range(&r, 0, TWO_PI);
    }
    float amp2 = draw_range(&r, 0, 0.6f);

    ts_status st = ts_image_u8_reserve(im, S, S, err);
    if (st) return st;

    /* Coverage of the shape: 4 x 4 subpixel samples in its bounding box. */
    float poly[12][2];
    int nv = shape_polygon(s->attr[TS_SYNTH_SHAPE], s->r, poly);
    float ca = cosf(s->angle * TWO_PI / 360), sa = sinf(s->angle * TWO_PI / 360);
    float rc = 0.9f * s->r; /* the circle's own radius */
    int x0 = (int)floorf(s->cx - s->r - 1), x1 = (int)ceilf(s->cx + s->r + 1);
    int y0 = (int)floorf(s->cy - s->r - 1), y1 = (int)ceilf(s->cy + s->r + 1);

    for (int y = 0; y < S; y++) {
        for (int x = 0; x < S; x++) {
            float w = sinf(wave[0][0] * (float)x + wave[0][1] * (float)y + wave[0][2]) +
                      amp2 * sinf(wave[1][0] * (float)x + wave[1][1] * (float)y + wave[1][2]);
            float t = 0.5f + 0.5f * w / (1 + amp2);
            float cov = 0;
            if (x >= x0 && x <= x1 && y >= y0 && y <= y1) {
                int hits = 0;
                for (int j = 0; j < 4; j++)
                    for (int i = 0; i < 4; i++) {
                        float dx = (float)x + (i + 0.5f) / 4 - s->cx;
                        float dy = (float)y + (j + 0.5f) / 4 - s->cy;
                        /* Rotate the point by -angle into the shape's frame. */
                        float u = ca * dx + sa * dy, v = -sa * dx + ca * dy;
                        hits += nv ? inside_polygon((const float(*)[2])poly, nv, u, v)
                                   : u * u + v * v <= rc * rc;
                    }
                cov = (float)hits / 16;
            }
            uint8_t *p = im->data + ((size_t)y * S + x) * 3;
            for (int c = 0; c < 3; c++) {
                float b = bg0[c] + (bg1[c] - bg0[c]) * t;
                float v = b + (fg[c] - b) * cov;
                v += 7 * (ts_rng_uniform(&r) + ts_rng_uniform(&r) - 1); /* mild noise */
                v = v < 0 ? 0 : v > 255 ? 255 : v;
                p[c] = (uint8_t)lrintf(v);
            }
        }
    }
    return TS_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* Files                                                                                    */

/* Names in the output folder. */
static const char *const text_files[] = {
    TS_SYNTH_SHAPES_FILE, TS_SYNTH_COLOURS_FILE, TS_SYNTH_SIZES_FILE, TS_SYNTH_POSITIONS_FILE,
    "shapes-templates.txt", "colours-templates.txt", "sizes-templates.txt",
    "positions-templates.txt", TS_SYNTH_CAPTIONS_FILE, TS_SYNTH_VOCAB_FILE, "manifest.json",
    "README.txt", NULL,
};
static const char *const split_names[] = { "train", "val" };

/* Is name one synth writes (or its temporary)? Shard names are train-NNNNNN.tar and
 * val-NNNNNN.tar; *shard_split and *shard_k tell which (-1 for other names). */
static int synth_name(const char *name, int *shard_split, long *shard_k) {
    *shard_split = -1;
    *shard_k = -1;
    size_t n = strlen(name);
    char base[256];
    if (n >= sizeof base) return 0;
    memcpy(base, name, n + 1);
    if (n > 4 && !strcmp(base + n - 4, ".tmp")) base[n -= 4] = 0;
    for (int i = 0; text_files[i]; i++)
        if (!strcmp(base, text_files[i])) return 1;
    for (int sp = 0; sp < 2; sp++) {
        size_t m = strlen(split_names[sp]);
        if (n == m + 11 && !strncmp(base, split_names[sp], m) && base[m] == '-' &&
            !strcmp(base + m + 7, ".tar")) {
            long k = 0;
            for (size_t i = m + 1; i < m + 7; i++) {
                if (base[i] < '0' || base[i] > '9') return 0;
                k = k * 10 + (base[i] - '0');
            }
            if (n == strlen(name)) *shard_split = sp, *shard_k = k; /* not for a .tmp */
            return 1;
        }
    }
    return 0;
}

/* Look at what dir holds: *ours = 1 when every entry is a name synth writes. Refuses a folder
 * with anything else unless force is set. */
static ts_status check_dir(const char *dir, int force, int *ours, ts_err *err) {
    DIR *d = opendir(dir);
    if (!d) return ts_fail(err, TS_ERR_IO, "cannot read %s: %s", dir, strerror(errno));
    char foreign[256] = "";
    int nforeign = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        int sp;
        long k;
        if (!synth_name(e->d_name, &sp, &k)) {
            if (!nforeign++) snprintf(foreign, sizeof foreign, "%.200s", e->d_name);
        }
    }
    closedir(d);
    *ours = nforeign == 0;
    if (nforeign && !force)
        return ts_fail(err, TS_ERR_USAGE,
                       "%s is not empty and holds %d file%s that synth does not write (e.g. "
                       "'%s'); choose an empty or new folder, or use --force to write into it",
                       dir, nforeign, nforeign == 1 ? "" : "s", foreign);
    return TS_OK;
}

/* Remove the temporaries of synth's names that an interrupted run left, and, when shards is
 * set, the shards of an earlier run that this run does not write (more shards than now). */
static ts_status remove_stale(const char *dir, const ts_synth_cfg *c, int shards, ts_err *err) {
    DIR *d = opendir(dir);
    if (!d) return ts_fail(err, TS_ERR_IO, "cannot read %s: %s", dir, strerror(errno));
    ts_status st = TS_OK;
    struct dirent *e;
    while ((e = readdir(d)) && !st) {
        int sp;
        long k;
        size_t n = strlen(e->d_name);
        int tmp = n > 4 && !strcmp(e->d_name + n - 4, ".tmp");
        if (!synth_name(e->d_name, &sp, &k)) continue;
        if (!tmp && (!shards || sp < 0 || k < (sp == 0 ? c->train_shards : c->val_shards)))
            continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (unlink(path) != 0 && errno != ENOENT)
            st = ts_fail(err, TS_ERR_IO, "cannot remove the stale file %s: %s", path,
                         strerror(errno));
    }
    closedir(d);
    return st;
}

/* Sync and rename fd's file tmp to path; closes fd. */
static ts_status commit_file(int fd, const char *tmp, const char *path, ts_err *err) {
    if (fsync(fd) != 0) {
        ts_status st = ts_fail(err, TS_ERR_IO, "cannot write %s: %s", tmp, strerror(errno));
        close(fd);
        unlink(tmp);
        return st;
    }
    if (close(fd) != 0) {
        ts_status st = ts_fail(err, TS_ERR_IO, "cannot write %s: %s", tmp, strerror(errno));
        unlink(tmp);
        return st;
    }
    if (rename(tmp, path) != 0) {
        ts_status st = ts_fail(err, TS_ERR_IO, "cannot rename %s to %s: %s", tmp, path,
                               strerror(errno));
        unlink(tmp);
        return st;
    }
    return TS_OK;
}

static ts_status sync_dir(const char *dir, ts_err *err) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return ts_fail(err, TS_ERR_IO, "cannot open %s: %s", dir, strerror(errno));
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    if (rc != 0) return ts_fail(err, TS_ERR_IO, "cannot sync %s: %s", dir, strerror(e));
    return TS_OK;
}

/* Write n bytes to dir/name atomically. */
static ts_status write_file(const char *dir, const char *name, const void *buf, size_t n,
                            ts_err *err) {
    char path[4096], tmp[4200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return ts_fail(err, TS_ERR_IO, "cannot create %s: %s", tmp, strerror(errno));
    const char *p = buf;
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            ts_status st = ts_fail(err, TS_ERR_IO, "cannot write %s: %s", tmp,
                                   w < 0 ? strerror(errno) : "short write");
            close(fd);
            unlink(tmp);
            return st;
        }
        p += w, n -= (size_t)w;
    }
    return commit_file(fd, tmp, path, err);
}

/* A growable string. */
typedef struct strbuf {
    char *p;
    size_t n, cap;
    int oom;
} strbuf;

static void sb_printf(strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(strbuf *b, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(b->p ? b->p + b->n : NULL, b->p ? b->cap - b->n : 0, fmt, ap);
        va_end(ap);
        if (k < 0 || b->oom) return;
        if (b->p && b->n + (size_t)k < b->cap) {
            b->n += (size_t)k;
            return;
        }
        size_t cap = b->cap ? b->cap : 4096;
        while (cap <= b->n + (size_t)k) cap *= 2;
        char *q = realloc(b->p, cap);
        if (!q) {
            b->oom = 1;
            return;
        }
        b->p = q, b->cap = cap;
    }
}

static ts_status sb_write(strbuf *b, const char *dir, const char *name, ts_err *err) {
    if (b->oom) return ts_fail(err, TS_ERR_NOMEM, "out of memory writing %s/%s", dir, name);
    return write_file(dir, name, b->p ? b->p : "", b->n, err);
}

static ts_status write_lines(const char *dir, const char *name, const char *const *lines, int n,
                             ts_err *err) {
    strbuf b = { 0 };
    for (int i = 0; i < n; i++) sb_printf(&b, "%s\n", lines[i]);
    ts_status st = sb_write(&b, dir, name, err);
    free(b.p);
    return st;
}

/* One sample's members, encoded. */
typedef struct enc_sample {
    unsigned char *jpg; /* TurboJPEG's buffer (tjFree) */
    unsigned long njpg;
    char json[640];
    ts_synth_sample s;
    ts_status st;
    char msg[256];
} enc_sample;

static void sample_json(char *out, size_t cap, const ts_synth_sample *s, int split,
                        int64_t index) {
    snprintf(out, cap,
             "{\"shape\": %d, \"colour\": %d, \"size\": %d, \"position\": %d, "
             "\"shape_name\": \"%s\", \"colour_name\": \"%s\", \"size_name\": \"%s\", "
             "\"position_name\": \"%s\", \"caption\": \"%s\", \"cx\": %.2f, \"cy\": %.2f, "
             "\"radius\": %.2f, \"angle\": %.2f, \"split\": \"%s\", \"index\": %lld}",
             s->attr[0], s->attr[1], s->attr[2], s->attr[3], shape_names[s->attr[0]],
             colour_names[s->attr[1]], size_names[s->attr[2]], position_names[s->attr[3]],
             s->caption, (double)s->cx, (double)s->cy, (double)s->r, (double)s->angle,
             split_names[split], (long long)index);
}

/* Add one regular member to the tar being written. */
static int tar_member(struct archive *a, const char *name, const void *data, size_t n) {
    struct archive_entry *e = archive_entry_new();
    if (!e) return -1;
    archive_entry_set_pathname(e, name);
    archive_entry_set_size(e, (la_int64_t)n);
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_perm(e, 0644);
    archive_entry_set_mtime(e, 0, 0); /* no time stamps: the same options give the same bytes */
    archive_entry_set_uid(e, 0);
    archive_entry_set_gid(e, 0);
    int rc = archive_write_header(a, e);
    archive_entry_free(e);
    if (rc != ARCHIVE_OK) return -1;
    if (n && archive_write_data(a, data, n) != (la_ssize_t)n) return -1;
    return 0;
}

/* Draw and encode samples base .. base+n-1 of split into es, in parallel over samples. */
static ts_status encode_samples(const ts_synth_cfg *c, int split, int64_t base, int n,
                                enc_sample *es, ts_err *err) {
    int failed = 0;
#pragma omp parallel
    {
        tjhandle tj = tjInitCompress();
        ts_image_u8 im;
        ts_image_u8_init(&im);
#pragma omp for schedule(dynamic, 16)
        for (int i = 0; i < n; i++) {
            enc_sample *e = &es[i];
            ts_err e_err = { 0 };
            e->st = TS_OK;
            if (!tj) {
                e->st = TS_ERR_NOMEM;
                snprintf(e->msg, sizeof e->msg, "cannot start the JPEG encoder: %s",
                         tjGetErrorStr2(NULL));
            } else if ((e->st = ts_synth_shapes_draw(c, split, base + i, &e->s, &im, &e_err))) {
                snprintf(e->msg, sizeof e->msg, "%.200s", e_err.msg);
            } else if (tjCompress2(tj, im.data, im.w, 0, im.h, TJPF_RGB, &e->jpg, &e->njpg,
                                   TJSAMP_444, c->quality, 0) != 0) {
                e->st = TS_ERR_DATA;
                snprintf(e->msg, sizeof e->msg, "JPEG encoding failed: %s", tjGetErrorStr2(tj));
            }
            if (e->st) {
#pragma omp atomic write
                failed = 1;
            }
            if (!e->st) sample_json(e->json, sizeof e->json, &e->s, split, base + i);
        }
        ts_image_u8_free(&im);
        if (tj) tjDestroy(tj);
    }
    if (failed)
        for (int i = 0; i < n; i++)
            if (es[i].st)
                return ts_fail(err, es[i].st, "%s sample %lld: %s", split_names[split],
                               (long long)(base + i), es[i].msg);
    return TS_OK;
}

/* Samples are drawn and encoded CHUNK at a time, so that memory stays bounded whatever the
 * shard size and image size. */
#define CHUNK 256

/* Write samples base .. base+n-1 of split as the shard path: path.tmp, sync, rename. The
 * training captions are appended to captions (NULL for val). es holds CHUNK samples. */
static ts_status write_shard(const ts_synth_cfg *c, const char *path, int split, int64_t base,
                             int n, enc_sample *es, strbuf *captions, ts_err *err) {
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return ts_fail(err, TS_ERR_IO, "cannot create %s: %s", tmp, strerror(errno));
    struct archive *a = archive_write_new();
    ts_status st = TS_OK;
    if (!a || archive_write_set_format_ustar(a) != ARCHIVE_OK ||
        archive_write_open_fd(a, fd) != ARCHIVE_OK) {
        st = ts_fail(err, TS_ERR_IO, "cannot write %s: %s", tmp,
                     a ? archive_error_string(a) : "out of memory");
        goto fail;
    }
    for (int start = 0; start < n && !st; start += CHUNK) {
        int m = n - start < CHUNK ? n - start : CHUNK;
        st = encode_samples(c, split, base + start, m, es, err);
        for (int i = 0; i < m && !st; i++) {
            char name[64];
            long long idx = (long long)(base + start + i);
            const char *sp = split_names[split];
            snprintf(name, sizeof name, "%s-%07lld.jpg", sp, idx);
            int bad = tar_member(a, name, es[i].jpg, es[i].njpg);
            snprintf(name, sizeof name, "%s-%07lld.txt", sp, idx);
            bad = bad || tar_member(a, name, es[i].s.caption, strlen(es[i].s.caption));
            snprintf(name, sizeof name, "%s-%07lld.json", sp, idx);
            bad = bad || tar_member(a, name, es[i].json, strlen(es[i].json));
            if (bad)
                st = ts_fail(err, TS_ERR_IO, "cannot write %s: %s", tmp,
                             archive_error_string(a) ? archive_error_string(a) : strerror(errno));
            if (captions) sb_printf(captions, "%s\n", es[i].s.caption);
        }
        for (int i = 0; i < m; i++) {
            tjFree(es[i].jpg);
            es[i].jpg = NULL;
            es[i].njpg = 0;
        }
    }
    if (!st && archive_write_close(a) != ARCHIVE_OK)
        st = ts_fail(err, TS_ERR_IO, "cannot write %s: %s", tmp, archive_error_string(a));
    if (st) goto fail;
    archive_write_free(a); /* the fd stays open: archive_write_open_fd never closes it */
    return commit_file(fd, tmp, path, err);
fail:
    if (a) archive_write_free(a);
    close(fd);
    unlink(tmp);
    return st;
}

/* The brace pattern of a split's shards, or "" when it has none. */
static void shard_pattern(char *out, size_t cap, int split, int n) {
    if (n <= 0) out[0] = 0;
    else if (n == 1) snprintf(out, cap, "%s-000000.tar", split_names[split]);
    else snprintf(out, cap, "%s-{000000..%06d}.tar", split_names[split], n - 1);
}

ts_status ts_synth_shapes_write(const char *dir, const ts_synth_cfg *cfg_in, int force,
                                ts_synth_progress_fn progress, void *user, ts_err *err) {
    ts_synth_cfg c = cfg_defaults(cfg_in);
    ts_status st = cfg_check(&c, err);
    if (st) return st;
    if (strlen(dir) > 3000) return ts_fail(err, TS_ERR_USAGE, "output folder path too long");
    int ours = 0;
    if ((st = ts_mkdirs(dir, err)) || (st = check_dir(dir, force, &ours, err))) return st;
    /* The manifest marks a finished output: gone until ts_synth_shapes_manifest rewrites it. */
    char mpath[4096];
    snprintf(mpath, sizeof mpath, "%s/manifest.json", dir);
    if (unlink(mpath) != 0 && errno != ENOENT)
        return ts_fail(err, TS_ERR_IO, "cannot remove %s: %s", mpath, strerror(errno));

    /* The class and template files first: they are small and name what the shards hold. */
    static const char *const *const tmpl[] = { shape_templates, colour_templates, size_templates,
                                               position_templates };
    static const int ntmpl[] = { NARR(shape_templates), NARR(colour_templates),
                                 NARR(size_templates), NARR(position_templates) };
    static const char *const tmpl_files[] = { "shapes-templates.txt", "colours-templates.txt",
                                              "sizes-templates.txt", "positions-templates.txt" };
    static const char *const class_files[] = { TS_SYNTH_SHAPES_FILE, TS_SYNTH_COLOURS_FILE,
                                               TS_SYNTH_SIZES_FILE, TS_SYNTH_POSITIONS_FILE };
    const char *const *classes[] = { shape_names, colour_names, size_names, position_phrases };
    for (int a = 0; a < TS_SYNTH_NATTR && !st; a++) {
        st = write_lines(dir, class_files[a], classes[a], ts_synth_num_classes(a), err);
        if (!st) st = write_lines(dir, tmpl_files[a], tmpl[a], ntmpl[a], err);
    }
    if (st) return st;

    enc_sample *es = calloc(CHUNK, sizeof *es);
    if (!es) return ts_fail(err, TS_ERR_NOMEM, "out of memory for %d samples", CHUNK);
    strbuf captions = { 0 };
    int64_t total = (int64_t)(c.train_shards + c.val_shards) * c.per_shard, done = 0;
    for (int split = 0; split < 2 && !st; split++) {
        int nshards = split ? c.val_shards : c.train_shards;
        for (int k = 0; k < nshards && !st; k++) {
            char path[4096];
            snprintf(path, sizeof path, "%s/%s-%06d.tar", dir, split_names[split], k);
            st = write_shard(&c, path, split, (int64_t)k * c.per_shard, c.per_shard, es,
                             split ? NULL : &captions, err);
            done += c.per_shard;
            if (!st && progress) progress(user, path, done, total);
        }
    }
    free(es);
    if (!st) st = sb_write(&captions, dir, TS_SYNTH_CAPTIONS_FILE, err);
    free(captions.p);
    /* Shards of an earlier, larger run in a folder of ours would look like part of this one;
     * in a folder written into with force, shard-like names may be someone else's. */
    if (!st) st = remove_stale(dir, &c, ours, err);
    if (!st) st = sync_dir(dir, err);
    return st;
}

ts_status ts_synth_shapes_manifest(const char *dir, const ts_synth_cfg *cfg_in,
                                   const char *vocab_file, int vocab_size, ts_err *err) {
    ts_synth_cfg c = cfg_defaults(cfg_in);
    ts_status st = cfg_check(&c, err);
    if (st) return st;
    char pat[2][64];
    shard_pattern(pat[0], sizeof pat[0], 0, c.train_shards);
    shard_pattern(pat[1], sizeof pat[1], 1, c.val_shards);
    static const char *const attr_keys[] = { "shape", "colour", "size", "position" };
    static const char *const class_files[] = { TS_SYNTH_SHAPES_FILE, TS_SYNTH_COLOURS_FILE,
                                               TS_SYNTH_SIZES_FILE, TS_SYNTH_POSITIONS_FILE };
    static const char *const tmpl_files[] = { "shapes-templates.txt", "colours-templates.txt",
                                              "sizes-templates.txt", "positions-templates.txt" };

    strbuf m = { 0 };
    sb_printf(&m, "{\n  \"dataset\": \"tessera-synth-shapes\",\n  \"version\": 1,\n");
    sb_printf(&m, "  \"seed\": %llu,\n  \"image_size\": %d,\n  \"jpeg_quality\": %d,\n",
              (unsigned long long)c.seed, c.size, c.quality);
    sb_printf(&m, "  \"fields\": [\"jpg\", \"txt\", \"json\"],\n");
    for (int sp = 0; sp < 2; sp++) {
        int n = sp ? c.val_shards : c.train_shards;
        sb_printf(&m, "  \"%s\": {\"shards\": %d, \"per_shard\": %d, \"samples\": %lld, "
                  "\"pattern\": \"%s\"},\n", split_names[sp], n, c.per_shard,
                  (long long)n * c.per_shard, pat[sp]);
    }
    sb_printf(&m, "  \"attributes\": {\n");
    for (int a = 0; a < TS_SYNTH_NATTR; a++) {
        sb_printf(&m, "    \"%s\": {\"classes_file\": \"%s\", \"templates_file\": \"%s\", "
                  "\"names\": [", attr_keys[a], class_files[a], tmpl_files[a]);
        for (int k = 0; k < ts_synth_num_classes(a); k++)
            sb_printf(&m, "%s\"%s\"", k ? ", " : "", class_line(a, k));
        sb_printf(&m, "]}%s\n", a + 1 < TS_SYNTH_NATTR ? "," : "");
    }
    sb_printf(&m, "  },\n  \"captions_file\": \"%s\",\n", TS_SYNTH_CAPTIONS_FILE);
    if (vocab_file) sb_printf(&m, "  \"tokenizer\": {\"merges_file\": \"%s\", \"vocab_size\": %d},\n",
                              vocab_file, vocab_size);
    sb_printf(&m, "  \"generator\": \"tessera data synth shapes --seed %llu --size %d "
              "--train-shards %d --val-shards %d --per-shard %d --quality %d\"\n}\n",
              (unsigned long long)c.seed, c.size, c.train_shards, c.val_shards, c.per_shard,
              c.quality);

    strbuf r = { 0 };
    sb_printf(&r,
              "tessera synthetic shapes: an image-caption dataset made by `tessera data synth "
              "shapes`\n"
              "(seed %llu, %d x %d pixels, JPEG quality %d).\n\n",
              (unsigned long long)c.seed, c.size, c.size, c.quality);
    sb_printf(&r, "Each picture shows one shape on a textured background; the caption names its\n"
                  "shape, colour, size and position, e.g. \"a small red triangle at the top left\".\n\n");
    sb_printf(&r, "WebDataset shards (KEY.jpg, KEY.txt caption, KEY.json labels and geometry):\n");
    for (int sp = 0; sp < 2; sp++) {
        int n = sp ? c.val_shards : c.train_shards;
        if (n)
            sb_printf(&r, "  %-5s %s  (%d shards of %d samples: %lld)\n", split_names[sp],
                      pat[sp], n, c.per_shard, (long long)n * c.per_shard);
    }
    sb_printf(&r, "\nZero-shot classes (one a line, in label order) and prompt templates ({} is "
                  "the class):\n");
    for (int a = 0; a < TS_SYNTH_NATTR; a++) {
        sb_printf(&r, "  %-9s %-14s %-24s", attr_keys[a], class_files[a], tmpl_files[a]);
        for (int k = 0; k < ts_synth_num_classes(a); k++)
            sb_printf(&r, "%s%s", k ? ", " : "", class_line(a, k));
        sb_printf(&r, "\n");
    }
    sb_printf(&r, "(positions.txt holds the phrases of the captions; the json's position_name is "
                  "the bare name, \"top left\".)\n\n");
    sb_printf(&r, "%s: the training captions, one a line.\n", TS_SYNTH_CAPTIONS_FILE);
    if (vocab_file)
        sb_printf(&r, "%s: CLIP-format BPE merges trained on them (vocabulary %d; `tessera "
                      "tokenize encode --merges %s`).\n", vocab_file, vocab_size, vocab_file);
    sb_printf(&r, "manifest.json: all of this, machine-readable.\n");

    st = sb_write(&m, dir, "manifest.json", err);
    if (!st) st = sb_write(&r, dir, "README.txt", err);
    if (!st) st = sync_dir(dir, err);
    free(m.p);
    free(r.p);
    return st;
}
