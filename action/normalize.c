/* normalize.c: per-dimension affine normalisation of actions and proprioception.
 *
 * x_norm = x * scale + offset, fitted once on a dataset: minmax maps [min, max] to [-1, 1]
 * (Diffusion Policy's "limits" mode), meanstd subtracts the mean and divides by the standard
 * deviation (population, as numpy's std), quantile maps numpy's 1st and 99th percentiles
 * (linear interpolation) to [-1, 1] and clips (OpenVLA's BOUNDS_Q99). A dimension with no
 * spread (range or std below 1e-8) maps to 0 and inverts to its centre.
 */
#include "action.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* numpy.percentile(v, q) with the default linear interpolation; v sorted, n >= 1. */
static double percentile(const float *v, int64_t n, double q) {
    double pos = q / 100.0 * (double)(n - 1);
    int64_t lo = (int64_t)floor(pos), hi = lo + 1 < n ? lo + 1 : lo;
    double f = pos - (double)lo;
    return (double)v[lo] + f * ((double)v[hi] - (double)v[lo]);
}

void ts_norm_fit(ts_normalizer *nz, ts_norm_kind kind, const float *x, int64_t n, int dim) {
    memset(nz, 0, sizeof *nz);
    nz->kind = kind;
    nz->dim = dim;
    nz->clip = kind == TS_NORM_QUANTILE;
    nz->scale = malloc((size_t)(dim ? dim : 1) * sizeof(float));
    nz->offset = malloc((size_t)(dim ? dim : 1) * sizeof(float));
    TS_CHECK(nz->scale && nz->offset, "out of memory");
    float *col = kind == TS_NORM_QUANTILE ? malloc((size_t)(n ? n : 1) * sizeof(float)) : NULL;
    TS_CHECK(kind != TS_NORM_QUANTILE || col, "out of memory");
    for (int j = 0; j < dim; j++) {
        double lo = 0, hi = 0, mean = 0, sd = 0;
        if (n > 0 && kind == TS_NORM_MINMAX) {
            lo = hi = x[j];
            for (int64_t i = 1; i < n; i++) {
                double v = x[i * dim + j];
                lo = v < lo ? v : lo;
                hi = v > hi ? v : hi;
            }
        } else if (n > 0 && kind == TS_NORM_MEANSTD) {
            for (int64_t i = 0; i < n; i++) mean += x[i * dim + j];
            mean /= (double)n;
            for (int64_t i = 0; i < n; i++) {
                double e = x[i * dim + j] - mean;
                sd += e * e;
            }
            sd = sqrt(sd / (double)n);
        } else if (n > 0 && kind == TS_NORM_QUANTILE) {
            for (int64_t i = 0; i < n; i++) col[i] = x[i * dim + j];
            qsort(col, (size_t)n, sizeof(float), cmp_float);
            lo = percentile(col, n, 1.0);
            hi = percentile(col, n, 99.0);
        }
        double s = 1.0, o = 0.0;
        if (kind == TS_NORM_MINMAX || kind == TS_NORM_QUANTILE) {
            if (hi - lo < 1e-8) {
                s = 0.0;
                o = 0.0;
                nz->offset[j] = (float)lo; /* kept below for inversion */
            } else {
                s = 2.0 / (hi - lo);
                o = -1.0 - lo * s;
            }
        } else if (kind == TS_NORM_MEANSTD) {
            if (sd < 1e-8) {
                s = 0.0;
                o = 0.0;
                nz->offset[j] = (float)mean;
            } else {
                s = 1.0 / sd;
                o = -mean * s;
            }
        }
        nz->scale[j] = (float)s;
        /* a constant dimension stores its centre as -offset with scale 0 (inverted below) */
        if (s == 0.0 && kind != TS_NORM_NONE) nz->offset[j] = -nz->offset[j];
        else nz->offset[j] = (float)o;
    }
    free(col);
}

void ts_norm_free(ts_normalizer *nz) {
    if (!nz) return;
    free(nz->scale);
    free(nz->offset);
    nz->scale = nz->offset = NULL;
}

void ts_norm_apply(const ts_normalizer *nz, float *x, int64_t n) {
    int dim = nz->dim;
    for (int64_t i = 0; i < n; i++)
        for (int j = 0; j < dim; j++) {
            float *v = &x[i * dim + j];
            if (nz->scale[j] == 0.0f) {
                *v = 0.0f;
                continue;
            }
            float y = *v * nz->scale[j] + nz->offset[j];
            if (nz->clip) y = y < -1.0f ? -1.0f : y > 1.0f ? 1.0f : y;
            *v = y;
        }
}

void ts_norm_invert(const ts_normalizer *nz, float *x, int64_t n) {
    int dim = nz->dim;
    for (int64_t i = 0; i < n; i++)
        for (int j = 0; j < dim; j++) {
            float *v = &x[i * dim + j];
            *v = nz->scale[j] == 0.0f ? -nz->offset[j] : (*v - nz->offset[j]) / nz->scale[j];
        }
}
