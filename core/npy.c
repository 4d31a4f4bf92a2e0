/* npy.c: a reader of 2-D NumPy .npy files into float32, for matrices saved by Python such as
 * ProtoCLIP's external teacher features (np.save of a (samples, width) array).
 *
 * The format (numpy.lib.format): the magic "\x93NUMPY", a major and minor version byte, the
 * header length (2 bytes little-endian in version 1, 4 bytes in versions 2 and 3), and a
 * header that is a Python dict literal such as
 *     {'descr': '<f4', 'fortran_order': False, 'shape': (1000, 64), }
 * padded with spaces and a newline; the raw array follows. This reader takes float32, float16
 * and float64 in little-endian C order. It deliberately is not a general .npy reader: no
 * .npz archives, no object or structured dtypes, no other ranks.
 */
#include "tessera-impl.h"

#include <errno.h>
#include <stdlib.h>

/* IEEE half to float, subnormals and specials included. */
static float half_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, man = h & 0x3ff, u;
    if (exp == 0x1f) {
        u = sign | 0x7f800000u | (man << 13);
    } else if (exp != 0) {
        u = sign | ((exp + 112) << 23) | (man << 13);
    } else if (man == 0) {
        u = sign;
    } else { /* subnormal: normalise the mantissa */
        int e = -1;
        do { man <<= 1; e++; } while (!(man & 0x400));
        u = sign | ((uint32_t)(112 - e) << 23) | ((man & 0x3ff) << 13);
    }
    union { uint32_t u; float f; } v = { u };
    return v.f;
}

/* The text after 'key': in the header dict, or NULL. */
static const char *dict_value(const char *h, const char *key) {
    char pat[32];
    snprintf(pat, sizeof pat, "'%s'", key);
    const char *p = strstr(h, pat);
    if (!p) return NULL;
    p += strlen(pat);
    while (*p == ' ') p++;
    if (*p++ != ':') return NULL;
    while (*p == ' ') p++;
    return p;
}

ts_status ts_npy_read_f32(const char *path, float **out, int64_t *rows, int64_t *cols,
                          ts_err *err) {
    *out = NULL;
    *rows = *cols = 0;
    ts_status st = TS_OK;
    char *hdr = NULL;
    void *raw = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return ts_fail(err, TS_ERR_IO, "%s: cannot open: %s", path, strerror(errno));

    unsigned char pre[12];
    if (fread(pre, 1, 10, f) != 10 || memcmp(pre, "\x93NUMPY", 6) != 0) {
        st = ts_fail(err, TS_ERR_FORMAT, "%s: not a .npy file (no \\x93NUMPY magic)", path);
        goto done;
    }
    int major = pre[6];
    size_t hlen;
    if (major == 1) {
        hlen = (size_t)pre[8] | (size_t)pre[9] << 8;
    } else if (major == 2 || major == 3) {
        if (fread(pre + 10, 1, 2, f) != 2) {
            st = ts_fail(err, TS_ERR_FORMAT, "%s: truncated .npy header", path);
            goto done;
        }
        hlen = (size_t)pre[8] | (size_t)pre[9] << 8 | (size_t)pre[10] << 16 |
               (size_t)pre[11] << 24;
    } else {
        st = ts_fail(err, TS_ERR_UNSUPPORTED, "%s: .npy format version %d is not supported",
                     path, major);
        goto done;
    }
    if (hlen > (1u << 24)) {
        st = ts_fail(err, TS_ERR_FORMAT, "%s: .npy header of %zu bytes", path, hlen);
        goto done;
    }
    hdr = malloc(hlen + 1);
    if (!hdr) { st = ts_fail(err, TS_ERR_NOMEM, "%s: out of memory", path); goto done; }
    if (fread(hdr, 1, hlen, f) != hlen) {
        st = ts_fail(err, TS_ERR_FORMAT, "%s: truncated .npy header", path);
        goto done;
    }
    hdr[hlen] = '\0';

    const char *descr = dict_value(hdr, "descr"), *fo = dict_value(hdr, "fortran_order"),
               *shape = dict_value(hdr, "shape");
    if (!descr || !fo || !shape || (*descr != '\'' && *descr != '"') || *shape != '(') {
        st = ts_fail(err, TS_ERR_FORMAT, "%s: malformed .npy header: %s", path, hdr);
        goto done;
    }
    size_t isz;
    char dt[8] = { 0 };
    for (int i = 0; i < 3 && descr[1 + i]; i++) dt[i] = descr[1 + i];
    if (!strcmp(dt, "<f4") || !strcmp(dt, "|f4")) isz = 4;
    else if (!strcmp(dt, "<f2") || !strcmp(dt, "|f2")) isz = 2;
    else if (!strcmp(dt, "<f8") || !strcmp(dt, "|f8")) isz = 8;
    else {
        st = ts_fail(err, TS_ERR_UNSUPPORTED, "%s: dtype %s is not supported (float32, "
                     "float16 or float64, little-endian)", path, dt);
        goto done;
    }
    if (strncmp(fo, "False", 5) != 0) {
        st = ts_fail(err, TS_ERR_UNSUPPORTED, "%s: a Fortran-order array is not supported "
                     "(save np.ascontiguousarray(a))", path);
        goto done;
    }
    /* shape: "(R, C)" with optional spaces and a trailing comma for other ranks */
    int64_t dims[3];
    int nd = 0;
    const char *p = shape + 1;
    for (;;) {
        while (*p == ' ') p++;
        if (*p == ')') break;
        char *end;
        errno = 0;
        long long v = strtoll(p, &end, 10);
        if (end == p || errno || v < 0 || nd == 3) {
            st = ts_fail(err, TS_ERR_FORMAT, "%s: malformed shape in the .npy header: %s",
                         path, hdr);
            goto done;
        }
        dims[nd++] = v;
        p = end;
        while (*p == ' ') p++;
        if (*p == ',') p++;
    }
    if (nd != 2) {
        st = ts_fail(err, TS_ERR_FORMAT, "%s: a %d-d array, expected 2-d (samples, width)",
                     path, nd);
        goto done;
    }
    if (dims[0] && dims[1] > (int64_t)(SIZE_MAX / 8) / dims[0]) {
        st = ts_fail(err, TS_ERR_FORMAT, "%s: shape (%lld, %lld) is too large", path,
                     (long long)dims[0], (long long)dims[1]);
        goto done;
    }
    size_t numel = (size_t)dims[0] * (size_t)dims[1];
    raw = malloc(numel * isz + 1);
    float *dst = malloc(numel * sizeof(float) + 1);
    if (!raw || !dst) {
        free(dst);
        st = ts_fail(err, TS_ERR_NOMEM, "%s: out of memory for (%lld, %lld)", path,
                     (long long)dims[0], (long long)dims[1]);
        goto done;
    }
    if (fread(raw, isz, numel, f) != numel) {
        free(dst);
        st = ts_fail(err, TS_ERR_FORMAT, "%s: truncated: the header says (%lld, %lld) %.3s "
                     "but the data is shorter", path, (long long)dims[0], (long long)dims[1], dt);
        goto done;
    }
    for (size_t i = 0; i < numel; i++) {
        if (isz == 4) {
            float v;
            memcpy(&v, (char *)raw + 4 * i, 4);
            dst[i] = v;
        } else if (isz == 2) {
            uint16_t h;
            memcpy(&h, (char *)raw + 2 * i, 2);
            dst[i] = half_to_f32(h);
        } else {
            double v;
            memcpy(&v, (char *)raw + 8 * i, 8);
            dst[i] = (float)v;
        }
    }
    *out = dst;
    *rows = dims[0];
    *cols = dims[1];
done:
    free(raw);
    free(hdr);
    fclose(f);
    return st;
}
