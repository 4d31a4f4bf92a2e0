/* kmeans.c: Lloyd's k-means on float32 points, deterministic for a seed on any thread count.
 *
 * It follows faiss's Clustering with its default parameters, which is what ProtoCLIP's official
 * code runs (faiss.Kmeans(d, k, niter, nredo)): initial centroids are k distinct points drawn
 * at random, distances are squared L2, centroids are plain means (not normalised: faiss's
 * spherical option is off), an empty cluster is refilled by splitting a larger one, and when
 * there are more than 256 points per centroid the iterations run on a random subset of
 * 256 k points. The random streams are tessera's, not faiss's, so the clusters are those of
 * faiss's algorithm, not bit-for-bit its results.
 *
 * The n x k distances come from products x @ c^T (sgemm through ts__gemm) on fixed blocks of
 * points and centroids: ||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2. Blocks are spread over the
 * OpenMP threads, but every block's arithmetic and every sum's order is fixed by the data
 * alone, which is what makes the result independent of the thread count. Centroid sums run
 * per centroid over its points in point order, in double.
 *
 * Seeding by k-means++ is the other choice (cfg->init): one pass over the points per centroid,
 * costlier than faiss's draw, but it finds well-separated clusters, which random seeds often
 * do not (two seeds in one cluster and none in another is a fixed point of the iterations).
 *
 * What this file is not: a nearest-neighbour index, or spherical / mini-batch k-means.
 *
 * Shapes: x (n, d) points, centroids (k, d), labels (n).
 */
#include "tessera-impl.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>

#define KM_BP 256                /* points per block of the distance products */
#define KM_BC 1024               /* centroids per block */
#define KM_MAX_PER_CENTROID 256  /* faiss's max_points_per_centroid */
#define KM_EPS (1.0f / 1024.0f)  /* faiss's split perturbation */

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    TS_CHECK(p != NULL, "k-means: out of memory (%zu bytes)", n);
    return p;
}

/* Label of each of the n points x: its nearest centroid (ties to the lower index). Returns
 * the sum of the squared distances of the points to their centroids. */
static double assign(const float *x, int64_t n, int64_t d, const float *cent, int64_t k, int nt,
                     int32_t *labels) {
    float *cn = xmalloc((size_t)k * sizeof(float)); /* (k) ||c_j||^2 */
    for (int64_t j = 0; j < k; j++) {
        double s = 0;
        for (int64_t t = 0; t < d; t++) s += (double)cent[j * d + t] * cent[j * d + t];
        cn[j] = (float)s;
    }
    const int64_t nb = (n + KM_BP - 1) / KM_BP;
    double *part = xmalloc((size_t)nb * sizeof(double)); /* (nb) per-block objective */
    float *buf = xmalloc((size_t)nt * KM_BP * KM_BC * sizeof(float));
    /* ts__gemm in float32 precision reads nothing else of the context and is safe to call
     * from the threads of a parallel region. Each block's product runs on its own thread:
     * with one thread the region is inactive, and dnnl_sgemm would otherwise spread it over
     * the machine's threads, whose split of the sums depends on their count (AVX2 kernels). */
    ts_ctx g;
    memset(&g, 0, sizeof g);
    g.precision = TS_PREC_F32;
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
    for (int64_t b = 0; b < nb; b++) {
        omp_set_num_threads(1); /* for the product's own parallel region, if it opens one */
        float *G = buf + (size_t)omp_get_thread_num() * KM_BP * KM_BC; /* (m, nc) x @ c^T */
        const int64_t i0 = b * KM_BP, m = n - i0 < KM_BP ? n - i0 : KM_BP;
        float best[KM_BP];
        int32_t arg[KM_BP];
        for (int64_t r = 0; r < m; r++) { best[r] = INFINITY; arg[r] = 0; }
        for (int64_t j0 = 0; j0 < k; j0 += KM_BC) {
            const int64_t nc = k - j0 < KM_BC ? k - j0 : KM_BC;
            ts__gemm(&g, 0, 1, m, nc, d, 1.0f, x + i0 * d, d, cent + j0 * d, d, 0.0f, G, nc);
            for (int64_t r = 0; r < m; r++) {
                const float *gr = G + r * nc;
                for (int64_t j = 0; j < nc; j++) {
                    float v = cn[j0 + j] - 2.0f * gr[j];
                    if (v < best[r]) { best[r] = v; arg[r] = (int32_t)(j0 + j); }
                }
            }
        }
        double s = 0;
        for (int64_t r = 0; r < m; r++) {
            const float *xr = x + (i0 + r) * d;
            double xn = 0;
            for (int64_t t = 0; t < d; t++) xn += (double)xr[t] * xr[t];
            double dd = (double)best[r] + xn;
            if (!(dd > 0)) dd = 0; /* rounding can dip below zero; and NaN stays out */
            labels[i0 + r] = arg[r];
            s += dd;
        }
        part[b] = s;
    }
    double obj = 0;
    for (int64_t b = 0; b < nb; b++) obj += part[b];
    free(buf);
    free(part);
    free(cn);
    return obj;
}

/* Centroid j = mean of the points labelled j, in point order; count[j] = their number.
 * Centroids of empty clusters are zeroed (split_empty refills them). */
static void update(const float *x, int64_t n, int64_t d, const int32_t *labels, int64_t k,
                   int nt, float *cent, double *count) {
    int64_t *start = xmalloc((size_t)(k + 1) * sizeof(int64_t)); /* (k+1) offsets into order */
    int64_t *order = xmalloc((size_t)n * sizeof(int64_t));       /* (n) points by cluster */
    for (int64_t j = 0; j <= k; j++) start[j] = 0;
    for (int64_t i = 0; i < n; i++) start[labels[i] + 1]++;
    for (int64_t j = 0; j < k; j++) start[j + 1] += start[j];
    int64_t *fill = xmalloc((size_t)k * sizeof(int64_t));
    for (int64_t j = 0; j < k; j++) fill[j] = start[j];
    for (int64_t i = 0; i < n; i++) order[fill[labels[i]]++] = i;
    double *acc = xmalloc((size_t)nt * (size_t)d * sizeof(double)); /* (nt, d) */
#pragma omp parallel for num_threads(nt) schedule(dynamic, 16)
    for (int64_t j = 0; j < k; j++) {
        double *a = acc + (size_t)omp_get_thread_num() * (size_t)d;
        float *cj = cent + j * d;
        const int64_t cnt = start[j + 1] - start[j];
        count[j] = (double)cnt;
        if (cnt == 0) {
            for (int64_t t = 0; t < d; t++) cj[t] = 0.0f;
            continue;
        }
        for (int64_t t = 0; t < d; t++) a[t] = 0;
        for (int64_t q = start[j]; q < start[j + 1]; q++) {
            const float *xi = x + order[q] * d;
            for (int64_t t = 0; t < d; t++) a[t] += xi[t];
        }
        for (int64_t t = 0; t < d; t++) cj[t] = (float)(a[t] / (double)cnt);
    }
    free(acc);
    free(fill);
    free(order);
    free(start);
}

/* faiss's split_clusters: every empty centroid i takes a copy of a centroid j picked with
 * probability (count[j] - 1) / (n - k) on a round-robin walk, and the two are pushed apart by
 * multiplying even coordinates of i and odd ones of j by 1 + eps, the others by 1 - eps; the
 * count of j is shared between them. n > k, so some cluster has two points or more. Returns
 * the number of splits. */
static int64_t split_empty(int64_t n, int64_t d, int64_t k, float *cent, double *count,
                           ts_rng *rng) {
    int64_t nsplit = 0;
    for (int64_t i = 0; i < k; i++) {
        if (count[i] != 0) continue;
        int64_t j = 0;
        for (;; j = (j + 1) % k) {
            double p = (count[j] - 1.0) / (double)(n - k);
            if ((double)ts_rng_uniform(rng) < p) break;
        }
        float *ci = cent + i * d, *cj = cent + j * d;
        for (int64_t t = 0; t < d; t++) {
            float v = cj[t];
            ci[t] = v * (t % 2 == 0 ? 1.0f + KM_EPS : 1.0f - KM_EPS);
            cj[t] = v * (t % 2 == 0 ? 1.0f - KM_EPS : 1.0f + KM_EPS);
        }
        count[i] = count[j] / 2;
        count[j] -= count[i];
        nsplit++;
    }
    return nsplit;
}

/* ||a - b||^2 over d floats, in 16 interleaved partial sums (which the compiler vectorises)
 * added up in a fixed order. */
static float sqdist(const float *a, const float *b, int64_t d) {
    float acc[16] = { 0 };
    int64_t t = 0;
    for (; t + 16 <= d; t += 16)
        for (int j = 0; j < 16; j++) acc[j] += (a[t + j] - b[t + j]) * (a[t + j] - b[t + j]);
    for (; t < d; t++) acc[0] += (a[t] - b[t]) * (a[t] - b[t]);
    float s = 0;
    for (int j = 0; j < 16; j++) s += acc[j];
    return s;
}

/* k-means++ seeding (Arthur and Vassilvitskii): the first centroid is a random point, each
 * next one a point drawn with probability proportional to its squared distance to the nearest
 * centroid so far. One pass over the points per centroid, parallel over the points; the sums
 * that the draw walks are per fixed block, so the draw does not depend on the thread count. */
static void seed_plusplus(const float *x, int64_t n, int64_t d, int64_t k, int nt, ts_rng *rng,
                          float *cent) {
    float *mind = xmalloc((size_t)n * sizeof(float));            /* (n) to the nearest so far */
    const int64_t nb = (n + KM_BP - 1) / KM_BP;
    double *bsum = xmalloc((size_t)nb * sizeof(double));          /* (nb) block sums of mind */
    for (int64_t i = 0; i < n; i++) mind[i] = INFINITY;
    int64_t pick = (int64_t)(ts_rng_next(rng) % (uint64_t)n);
    for (int64_t j = 0; j < k; j++) {
        memcpy(cent + j * d, x + pick * d, (size_t)d * sizeof(float));
        if (j == k - 1) break;
        const float *c = cent + j * d;
#pragma omp parallel for num_threads(nt) schedule(static)
        for (int64_t b = 0; b < nb; b++) {
            const int64_t i1 = (b + 1) * KM_BP < n ? (b + 1) * KM_BP : n;
            double s = 0;
            for (int64_t i = b * KM_BP; i < i1; i++) {
                const float dd = sqdist(x + i * d, c, d);
                if (dd < mind[i]) mind[i] = dd;
                s += mind[i];
            }
            bsum[b] = s;
        }
        double total = 0;
        for (int64_t b = 0; b < nb; b++) total += bsum[b];
        /* a uniform draw in [0, total) with 53 random bits */
        double r = (double)(ts_rng_next(rng) >> 11) * 0x1.0p-53 * total;
        if (!(total > 0)) { /* every point sits on a centroid: any point will do */
            pick = (int64_t)(ts_rng_next(rng) % (uint64_t)n);
            continue;
        }
        int64_t b = 0;
        while (b < nb - 1 && r >= bsum[b]) r -= bsum[b++];
        pick = -1;
        const int64_t i1 = (b + 1) * KM_BP < n ? (b + 1) * KM_BP : n;
        for (int64_t i = b * KM_BP; i < i1; i++) {
            if (mind[i] > 0) pick = i; /* the last point with weight, should r run past */
            if (r < mind[i]) break;
            r -= mind[i];
        }
        if (pick < 0) pick = b * KM_BP; /* a block of zero weight (rounding): its first point */
    }
    free(bsum);
    free(mind);
}

double ts_kmeans(const float *x, int64_t n, int64_t d, const ts_kmeans_cfg *cfg,
                 float *centroids, int32_t *labels) {
    const int64_t k = cfg->k;
    TS_CHECK(n >= 1 && d >= 1 && k >= 1 && k <= n, "k-means: %lld points of width %lld into "
             "%lld clusters (needs 1 <= k <= n)", (long long)n, (long long)d, (long long)k);
    TS_CHECK(cfg->iters >= 0, "k-means: %d iterations", cfg->iters);
    const int nt = cfg->nthreads > 0 ? cfg->nthreads : omp_get_max_threads();
    ts_rng rng;
    ts_rng_seed(&rng, cfg->seed);

    /* The training set: every point, or a random 256 k of them. A partial Fisher-Yates
     * shuffle makes perm[0..want) distinct random points. */
    const int64_t want = n > k * KM_MAX_PER_CENTROID ? k * KM_MAX_PER_CENTROID : k;
    int64_t *perm = xmalloc((size_t)n * sizeof(int64_t));
    for (int64_t i = 0; i < n; i++) perm[i] = i;
    for (int64_t i = 0; i < want; i++) {
        int64_t r = i + (int64_t)(ts_rng_next(&rng) % (uint64_t)(n - i));
        int64_t t = perm[i];
        perm[i] = perm[r];
        perm[r] = t;
    }
    const float *xt = x;
    float *sub = NULL;
    int64_t ntrain = n;
    if (want > k) {
        ntrain = want;
        sub = xmalloc((size_t)ntrain * (size_t)d * sizeof(float));
        for (int64_t i = 0; i < ntrain; i++)
            memcpy(sub + i * d, x + perm[i] * d, (size_t)d * sizeof(float));
        xt = sub;
        for (int64_t i = 0; i < k; i++) perm[i] = i; /* the subset is already in random order */
    }
    if (cfg->init == TS_KMEANS_PLUSPLUS && ntrain > k) {
        seed_plusplus(xt, ntrain, d, k, nt, &rng, centroids);
    } else { /* faiss: the first k points of a random permutation */
        for (int64_t i = 0; i < k; i++)
            memcpy(centroids + i * d, xt + perm[i] * d, (size_t)d * sizeof(float));
    }
    free(perm);

    if (ntrain > k) { /* with as many points as clusters the points are the centroids */
        int32_t *lab = xmalloc((size_t)ntrain * sizeof(int32_t));
        double *count = xmalloc((size_t)k * sizeof(double));
        for (int it = 0; it < cfg->iters; it++) {
            assign(xt, ntrain, d, centroids, k, nt, lab);
            update(xt, ntrain, d, lab, k, nt, centroids, count);
            split_empty(ntrain, d, k, centroids, count, &rng);
        }
        free(count);
        free(lab);
    }
    free(sub);
    return assign(x, n, d, centroids, k, nt, labels);
}
