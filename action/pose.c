/* pose.c: skeleton sequences (T, K, d) for pose-conditioned or pose-predicting models.
 *
 * Normalisation is per frame: the root keypoint is subtracted and the frame divided by its
 * largest keypoint distance from the root (1 when every keypoint sits on the root), so every
 * coordinate lies in [-1, 1]. Discrete form: each normalised coordinate in one of bins equal
 * cells over [-1, 1] (as the bins action tokenizer). Continuous form: a linear patch embedding
 * over time plus a learned position table, tokens (B, T / p, width).
 *
 * What this file is not: a skeleton format reader (COCO, SMPL); the caller gives float arrays.
 */
#include <math.h>
#include <stdio.h>

#include "action.h"

void ts_pose_normalize(const float *pose, int T, int K, int d, int root, float *out,
                       float *root_xyz, float *scale) {
    TS_CHECK(T > 0 && K > 0 && (d == 2 || d == 3) && root >= 0 && root < K,
             "pose (T %d, K %d, d %d), root %d", T, K, d, root);
    for (int t = 0; t < T; t++) {
        const float *f = pose + (int64_t)t * K * d, *r = f + (int64_t)root * d;
        float *o = out + (int64_t)t * K * d;
        double far = 0.0;
        for (int k = 0; k < K; k++) {
            double s = 0.0;
            for (int j = 0; j < d; j++) {
                double v = (double)f[k * d + j] - r[j];
                s += v * v;
            }
            far = fmax(far, sqrt(s));
        }
        double div = far > 0.0 ? far : 1.0;
        float rv[3] = {r[0], r[1], d == 3 ? r[2] : 0.0f}; /* out may alias pose */
        for (int k = 0; k < K; k++)
            for (int j = 0; j < d; j++)
                o[k * d + j] = (float)(((double)f[k * d + j] - rv[j]) / div);
        if (root_xyz)
            for (int j = 0; j < d; j++) root_xyz[t * d + j] = rv[j];
        if (scale) scale[t] = (float)div;
    }
}

void ts_pose_tokenize(const float *norm, int64_t n, int bins, int32_t *ids) {
    TS_CHECK(bins > 0, "bins %d", bins);
    for (int64_t i = 0; i < n; i++) {
        float v = norm[i];
        if (!(v > -1.0f)) v = -1.0f;
        if (v > 1.0f) v = 1.0f;
        int32_t id = (int32_t)((v + 1.0f) * 0.5f * (float)bins);
        ids[i] = id >= bins ? bins - 1 : id;
    }
}

/* Cell centres; an id outside [0, bins) is clamped to the nearest cell. */
void ts_pose_detokenize(const int32_t *ids, int64_t n, int bins, float *norm) {
    TS_CHECK(bins > 0, "bins %d", bins);
    for (int64_t i = 0; i < n; i++) {
        int32_t id = ids[i] < 0 ? 0 : (ids[i] >= bins ? bins - 1 : ids[i]);
        norm[i] = -1.0f + ((float)id + 0.5f) * (2.0f / (float)bins);
    }
}

void ts_pose_embed_init(ts_pose_embed *m, ts_params *p, const char *prefix, int patch,
                        int keypoints, int coords, int width, int max_patches) {
    TS_CHECK(patch > 0 && keypoints > 0 && coords > 0 && width > 0 && max_patches > 0,
             "pose embed: patch %d keypoints %d coords %d width %d max_patches %d", patch,
             keypoints, coords, width, max_patches);
    char name[256];
    m->patch = patch;
    m->keypoints = keypoints;
    m->coords = coords;
    m->width = width;
    m->max_patches = max_patches;
    ts_nn_linear_init(&m->proj, p, ts_pname(name, sizeof name, "%s.proj", prefix),
                      patch * keypoints * coords, width, 1);
    m->pos = ts_param(p, ts_pname(name, sizeof name, "%s.pos_embed", prefix), 2,
                      TS_SHAPE(max_patches, width), TS_INIT_N(0.02f), TS_PARAM_NO_DECAY);
}

/* x (B, T, K, d) -> (B, P, p * K * d) (frames are contiguous, so a patch is one row) ->
 * linear -> (B, P, width) + pos[:P]. */
ts_tensor *ts_pose_embed_forward(ts_ctx *c, const ts_pose_embed *m, const ts_tensor *x) {
    TS_CHECK(x->ndim == 4 && x->shape[2] == m->keypoints && x->shape[3] == m->coords &&
                 x->shape[1] % m->patch == 0,
             "pose embed: x (%lld, %lld, %lld, %lld) is not (B, T, %d, %d) with T a multiple "
             "of %d", (long long)x->shape[0], (long long)(x->ndim > 1 ? x->shape[1] : 0),
             (long long)(x->ndim > 2 ? x->shape[2] : 0), (long long)(x->ndim > 3 ? x->shape[3] : 0),
             m->keypoints, m->coords, m->patch);
    int64_t B = x->shape[0], P = x->shape[1] / m->patch;
    TS_CHECK(P <= m->max_patches, "pose embed: %lld patches, at most %d", (long long)P,
             m->max_patches);
    int64_t row = (int64_t)m->patch * m->keypoints * m->coords;
    ts_tensor *h = ts_reshape(c, x, 3, TS_SHAPE(B, P, row));
    h = ts_nn_linear_forward(c, &m->proj, h);
    ts_tensor *pos = P == m->max_patches ? m->pos : ts_slice(c, m->pos, 0, 0, P);
    return ts_add(c, h, pos);
}
