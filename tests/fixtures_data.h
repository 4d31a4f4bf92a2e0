/* fixtures_data.h: small writers of test data for the dataset tests (unit_webdataset.c,
 * unit_pipeline.c, unit_csvdata.c): JPEGs through TurboJPEG and tar shards through libarchive.
 *
 * Every function is static inline: each test includes this once and uses what it needs. The images are patterns that differ
 * from sample to sample, so that a mixed-up order shows in the pixels. What it is not: a
 * reference implementation of anything; the tests compare the loaders with the decoders and
 * transforms that have their own torchvision-parity tests.
 */
#ifndef TESSERA_FIXTURES_DATA_H
#define TESSERA_FIXTURES_DATA_H

#include <archive.h>
#include <archive_entry.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <turbojpeg.h>

/* A w x h JPEG (quality 90, 4:2:0) of a pattern seeded by id; malloc'ed into *out. */
static inline size_t fx_jpeg(int w, int h, int id, unsigned char **out) {
    unsigned char *rgb = malloc((size_t)w * h * 3);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            unsigned char *p = rgb + ((size_t)y * w + x) * 3;
            p[0] = (unsigned char)(x * 255 / (w > 1 ? w - 1 : 1) + id * 37);
            p[1] = (unsigned char)(y * 255 / (h > 1 ? h - 1 : 1) + id * 11);
            p[2] = (unsigned char)(((x / 8 + y / 8 + id) & 1) * 200 + id);
        }
    tjhandle tj = tjInitCompress();
    unsigned char *jpg = NULL;
    unsigned long n = 0;
    if (tjCompress2(tj, rgb, w, 0, h, TJPF_RGB, &jpg, &n, TJSAMP_420, 90, 0) != 0) {
        fprintf(stderr, "fx_jpeg: %s\n", tjGetErrorStr2(tj));
        abort();
    }
    tjDestroy(tj);
    free(rgb);
    *out = malloc(n);
    memcpy(*out, jpg, n);
    tjFree(jpg);
    return n;
}

/* One member of a tar being written. */
typedef struct fx_member {
    const char *name;
    const void *data;
    size_t n;
} fx_member;

/* Write members[0..k-1] as a ustar file at path. */
static inline void fx_tar(const char *path, const fx_member *m, int k) {
    struct archive *a = archive_write_new();
    archive_write_set_format_ustar(a);
    if (archive_write_open_filename(a, path) != ARCHIVE_OK) {
        fprintf(stderr, "fx_tar: %s: %s\n", path, archive_error_string(a));
        abort();
    }
    for (int i = 0; i < k; i++) {
        struct archive_entry *e = archive_entry_new();
        archive_entry_set_pathname(e, m[i].name);
        archive_entry_set_size(e, (la_int64_t)m[i].n);
        archive_entry_set_filetype(e, AE_IFREG);
        archive_entry_set_perm(e, 0644);
        archive_entry_set_mtime(e, 1609459200, 0);
        archive_write_header(a, e);
        if (m[i].n) archive_write_data(a, m[i].data, m[i].n);
        archive_entry_free(e);
    }
    archive_write_close(a);
    archive_write_free(a);
}

/* The bytes of a file (malloc'ed), its size in *n. */
static inline unsigned char *fx_read(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc(len > 0 ? (size_t)len : 1);
    *n = fread(b, 1, (size_t)len, f);
    fclose(f);
    return b;
}

static inline void fx_write(const char *path, const void *b, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) {
        fprintf(stderr, "fx_write: cannot write %s\n", path);
        abort();
    }
    fwrite(b, 1, n, f);
    fclose(f);
}

/* A fresh scratch folder path under the build tree: TS_BINARY_DIR/<name>. */
static inline void fx_scratch(char *out, size_t n, const char *name) {
    snprintf(out, n, "%s/%s", TS_BINARY_DIR, name);
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", out, out);
    if (system(cmd) != 0) abort();
}

#endif
