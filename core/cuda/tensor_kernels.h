/* tensor_kernels.h: the kernels of tensor.cu (see there), in a header of their own so that
 * tests/emu_tensor.cpp runs the same source on the CPU under the host emulation of
 * tests/emu_cuda.h, against the CPU backend's ops. Included by tensor.cu alone.
 *
 * Every output value is one thread's (or one block's, for the sums), written once, and every
 * sum is in a fixed order. Backward kernels add to their gradients.
 */
#ifndef TS_TENSOR_KERNELS_H
#define TS_TENSOR_KERNELS_H

#define TS_CU_PERMUTE_DIMS 8

/* ---- elementwise: a (R, C) against b (C), which repeats every C values ---- */

enum { EW_ADD, EW_SUB, EW_MUL };                  /* ts_cuda_binop's order */
enum { EW_SCALE, EW_RELU, EW_EXP, EW_LOG_SIGMOID }; /* ts_cuda_unop's order */

static __global__ void binary_kernel(int op, const float *a, const float *b, float *y,
                                     int64_t na, int64_t nb) {
    FOR_EACH(i, na) {
        float u = a[i], v = b[i % nb];
        y[i] = op == EW_ADD ? u + v : op == EW_SUB ? u - v : u * v;
    }
}

/* da += dy (times b for mul) */
static __global__ void binary_da_kernel(int op, const float *b, const float *dy, float *da,
                                        int64_t na, int64_t nb) {
    FOR_EACH(i, na) da[i] += op == EW_MUL ? dy[i] * b[i % nb] : dy[i];
}

/* db (nb) += the sum over the R = na / nb rows of dy (times a for mul; negated for sub):
 * block j sums column j (grid-stride over columns), a fixed tree */
static __global__ void binary_db_kernel(int op, const float *a, const float *dy, float *db,
                                        int64_t na, int64_t nb) {
    __shared__ float sh[32];
    int64_t R = na / nb;
    for (int64_t j = blockIdx.x; j < nb; j += gridDim.x) {
        float acc = 0.0f;
        for (int64_t r = threadIdx.x; r < R; r += blockDim.x)
            acc += op == EW_MUL ? dy[r * nb + j] * a[r * nb + j] : dy[r * nb + j];
        acc = block_sum(acc, sh);
        if (threadIdx.x == 0) db[j] += op == EW_SUB ? -acc : acc;
    }
}

/* the same when b is as large as a: one term each */
static __global__ void binary_db_flat_kernel(int op, const float *a, const float *dy,
                                             float *db, int64_t n) {
    FOR_EACH(i, n) db[i] += op == EW_MUL ? dy[i] * a[i] : op == EW_SUB ? -dy[i] : dy[i];
}

/* y = s x, max(x, 0), e^x, or log sigmoid(x) = min(x, 0) - log1p(e^-|x|) */
static __global__ void unary_kernel(int op, const float *x, float *y, int64_t n, float s) {
    FOR_EACH(i, n) {
        float v = x[i];
        y[i] = op == EW_SCALE ? s * v
             : op == EW_RELU  ? (v > 0.0f ? v : 0.0f)
             : op == EW_EXP   ? expf(v)
                              : fminf(v, 0.0f) - log1pf(expf(-fabsf(v)));
    }
}

/* dx += dy times the slope: s, 1 where x > 0 (0 at 0), y (exp), sigmoid(-x) */
static __global__ void unary_backward_kernel(int op, const float *x, const float *y,
                                             const float *dy, float *dx, int64_t n, float s) {
    FOR_EACH(i, n) {
        float d;
        if (op == EW_SCALE) {
            d = s * dy[i];
        } else if (op == EW_RELU) {
            d = x[i] > 0.0f ? dy[i] : 0.0f;
        } else if (op == EW_EXP) {
            d = dy[i] * y[i];
        } else {
            float e = expf(-fabsf(x[i]));
            d = dy[i] * (x[i] >= 0.0f ? e / (1.0f + e) : 1.0f / (1.0f + e));
        }
        dx[i] += d;
    }
}

/* ---- sums over one dim: a (O, R, I) -> y (O, I) ---- */

/* I == 1: block o sums row o (grid-stride over rows) */
static __global__ void reduce_rows_kernel(const float *a, float *y, int64_t O, int64_t R,
                                          float scale) {
    __shared__ float sh[32];
    for (int64_t o = blockIdx.x; o < O; o += gridDim.x) {
        float acc = 0.0f;
        for (int64_t r = threadIdx.x; r < R; r += blockDim.x) acc += a[o * R + r];
        acc = block_sum(acc, sh);
        if (threadIdx.x == 0) y[o] = scale * acc;
    }
}

/* I > 1: thread (o, i) sums its column of R, in order (neighbouring threads read neighbours) */
static __global__ void reduce_cols_kernel(const float *a, float *y, int64_t O, int64_t R,
                                          int64_t I, float scale) {
    FOR_EACH(j, O * I) {
        const float *p = a + j / I * R * I + j % I;
        float acc = 0.0f;
        for (int64_t r = 0; r < R; r++) acc += p[r * I];
        y[j] = scale * acc;
    }
}

static __global__ void reduce_backward_kernel(const float *dy, float *da, int64_t O, int64_t R,
                                              int64_t I, float scale) {
    FOR_EACH(j, O * R * I) da[j] += scale * dy[j / (R * I) * I + j % I];
}

/* ---- layouts ---- */

/* y's dims and, for each, the stride in x of a step along it */
typedef struct perm_geom {
    int ndim;
    int64_t n, shape[TS_CU_PERMUTE_DIMS], stride[TS_CU_PERMUTE_DIMS];
} perm_geom;

static __global__ void permute_kernel(const float *x, float *y, perm_geom p, int acc) {
    FOR_EACH(j, p.n) {
        int64_t rest = j, src = 0;
        for (int d = p.ndim - 1; d >= 0; d--) {
            src += rest % p.shape[d] * p.stride[d];
            rest /= p.shape[d];
        }
        if (acc)
            y[j] += x[src];
        else
            y[j] = x[src];
    }
}

/* y (O, Dy, I) rows [y_at, y_at + n) = x (O, Dx, I) rows [x_at, x_at + n), or += */
static __global__ void copy_rows_kernel(const float *x, int64_t Dx, int64_t x_at, float *y,
                                        int64_t Dy, int64_t y_at, int64_t O, int64_t n,
                                        int64_t I, int acc) {
    FOR_EACH(j, O * n * I) {
        int64_t i = j % I, t = j / I, d = t % n, o = t / n;
        float v = x[(o * Dx + x_at + d) * I + i];
        float *q = &y[(o * Dy + y_at + d) * I + i];
        if (acc)
            *q += v;
        else
            *q = v;
    }
}

/* ---- gathers of rows: index_select and embedding ---- */

/* y (O, n, I) = rows idx of a (O, L, I); an index outside [0, L) gives a row of NaN, never a
 * quiet value (the CPU op stops on it; callers check ids on the host) */
static __global__ void index_rows_kernel(const float *a, const int32_t *idx, float *y,
                                         int64_t O, int64_t L, int64_t n, int64_t I) {
    FOR_EACH(e, O * n * I) {
        int64_t i = e % I, t = e / I, k = t % n, o = t / n;
        int32_t r = idx[k];
        y[e] = r >= 0 && r < L ? a[(o * L + r) * I + i] : NAN;
    }
}

/* da (O, L, I) rows idx += dy (O, n, I): thread (o, column) walks the indices in order, as the
 * CPU op does, so repeated indices add in the same order and no two threads meet */
static __global__ void index_rows_backward_kernel(const float *dy, const int32_t *idx,
                                                  float *da, int64_t O, int64_t L, int64_t n,
                                                  int64_t I) {
    FOR_EACH(e, O * I) {
        int64_t o = e / I, i = e % I;
        for (int64_t k = 0; k < n; k++) {
            int32_t r = idx[k];
            if (r >= 0 && r < L) da[(o * L + r) * I + i] += dy[(o * n + k) * I + i];
        }
    }
}

/* ---- dropout ---- */

/* a uniform in [0, 1) on 24 bits from (seed, i): splitmix64's finalizer */
static __device__ __forceinline__ float hash_uniform(uint64_t seed, int64_t i) {
    uint64_t z = seed + 0x9e3779b97f4a7c15ull * (uint64_t)(i + 1);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (float)(z >> 40) * (1.0f / 16777216.0f);
}

/* keep x[i] with probability 1 - p (mask 1), scaled by `scale` (1 / (1 - p)) */
static __global__ void dropout_kernel(const float *x, float *y, uint8_t *mask, int64_t n,
                                      float p, float scale, uint64_t seed) {
    FOR_EACH(i, n) {
        uint8_t m = hash_uniform(seed, i) >= p;
        mask[i] = m;
        y[i] = x[i] * (scale * (float)m);
    }
}

static __global__ void dropout_backward_kernel(const float *dy, const uint8_t *mask, float *dx,
                                               int64_t n, float scale) {
    FOR_EACH(i, n) dx[i] += dy[i] * (scale * (float)mask[i]);
}

/* ---- batch norm over (N, C) ---- */

/* block c (grid-stride over channels): the batch's mean, then the squares around it; rstd =
 * 1/sqrt(var + eps) (biased var); running statistics (when given) move by momentum, the
 * variance entering them unbiased */
static __global__ void bn_stats_kernel(const float *x, float *mean, float *rstd,
                                       float *run_mean, float *run_var, int64_t N, int64_t C,
                                       float momentum, float eps) {
    __shared__ float sh[32];
    for (int64_t c = blockIdx.x; c < C; c += gridDim.x) {
        float s = 0.0f;
        for (int64_t r = threadIdx.x; r < N; r += blockDim.x) s += x[r * C + c];
        float mu = block_sum(s, sh) / (float)N, v = 0.0f;
        for (int64_t r = threadIdx.x; r < N; r += blockDim.x) {
            float d = x[r * C + c] - mu;
            v += d * d;
        }
        float var = block_sum(v, sh) / (float)N;
        if (threadIdx.x == 0) {
            mean[c] = mu;
            rstd[c] = 1.0f / sqrtf(var + eps);
            if (run_mean) {
                run_mean[c] = (1.0f - momentum) * run_mean[c] + momentum * mu;
                run_var[c] = (1.0f - momentum) * run_var[c] +
                             momentum * var * ((float)N / (float)(N - 1));
            }
        }
    }
}

/* eval mode: the running statistics normalise */
static __global__ void bn_eval_stats_kernel(const float *run_mean, const float *run_var,
                                            float *mean, float *rstd, int64_t C, float eps) {
    FOR_EACH(c, C) {
        mean[c] = run_mean[c];
        rstd[c] = 1.0f / sqrtf(run_var[c] + eps);
    }
}

static __global__ void bn_forward_kernel(const float *x, const float *w, const float *b,
                                         const float *mean, const float *rstd, float *y,
                                         int64_t N, int64_t C) {
    FOR_EACH(j, N * C) {
        int64_t c = j % C;
        float v = (x[j] - mean[c]) * rstd[c];
        if (w) v *= w[c];
        if (b) v += b[c];
        y[j] = v;
    }
}

/* block c: the sums over the batch of dy and of dy xhat into sums[c] and sums[C + c], and
 * added to db and dw (either may be NULL) */
static __global__ void bn_sums_kernel(const float *x, const float *dy, const float *mean,
                                      const float *rstd, float *sums, float *dw, float *db,
                                      int64_t N, int64_t C) {
    __shared__ float sh[32];
    for (int64_t c = blockIdx.x; c < C; c += gridDim.x) {
        float s1 = 0.0f, s2 = 0.0f;
        for (int64_t r = threadIdx.x; r < N; r += blockDim.x) {
            float d = dy[r * C + c];
            s1 += d;
            s2 += d * ((x[r * C + c] - mean[c]) * rstd[c]);
        }
        s1 = block_sum(s1, sh);
        s2 = block_sum(s2, sh);
        if (threadIdx.x == 0) {
            sums[c] = s1, sums[C + c] = s2;
            if (db) db[c] += s1;
            if (dw) dw[c] += s2;
        }
    }
}

/* dx += w rstd (dy - mean(dy) - xhat mean(dy xhat)) with batch statistics, else dy w rstd */
static __global__ void bn_dx_kernel(const float *x, const float *w, const float *dy,
                                   const float *mean, const float *rstd, const float *sums,
                                   float *dx, int64_t N, int64_t C, int batch_stats) {
    float inv = 1.0f / (float)N;
    FOR_EACH(j, N * C) {
        int64_t c = j % C;
        float wc = w ? w[c] : 1.0f;
        if (batch_stats) {
            float xh = (x[j] - mean[c]) * rstd[c];
            dx[j] += wc * rstd[c] * (dy[j] - sums[c] * inv - xh * sums[C + c] * inv);
        } else {
            dx[j] += dy[j] * wc * rstd[c];
        }
    }
}

#endif
