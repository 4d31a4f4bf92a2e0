/* attn_mma_kernels.h: the kernels of attn_mma.cu (see there), in a header of their own so that
 * tests/emu_attn_mma.cpp can run the same source on the CPU under a host emulation of the CUDA
 * features they use (TS_CU_EMULATE: threads, shared memory, warp shuffles and mma.sync with
 * the PTX ISA's fragment layout), against float64. Included by attn_mma.cu alone.
 */
#ifndef TS_ATTN_MMA_KERNELS_H
#define TS_ATTN_MMA_KERNELS_H

#define AD 64             /* head size */
#define AR 64             /* rows of a tile: queries (forward) or keys (backward) */
#define AP 72             /* a staged row's pitch (bf16 elements): 144 bytes */
#define AW 4              /* warps a block, 16 rows each */
#define LOG2E 1.4426950408889634f

#ifndef TS_CU_EMULATE /* the emulation brings its own mma16816, pack2 and ldsm_x4 */
/* d (16 x 8, float32) += a (16 x 16, bf16, row) b (16 x 8, bf16, col). Lane l holds of a:
 * a[0] = rows l/4, columns 2(l%4) + {0,1}; a[1] the same 8 rows down; a[2], a[3] the same 8
 * columns right; of b: b0 = rows (k) 2(l%4) + {0,1} of column l/4, b1 the same 8 rows down; of
 * d: d[0], d[1] = row l/4, columns 2(l%4) + {0,1}, d[2], d[3] the same 8 rows down. */
static __device__ __forceinline__ void mma16816(float *d, const uint32_t *a, uint32_t b0,
                                                uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                 "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}


/* two floats as bf16, lo in the low half */
static __device__ __forceinline__ uint32_t pack2(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t *>(&v);
}

/* Four 8 x 8 bf16 matrices out of shared memory (ldmatrix): lanes 8i .. 8i + 7 give the
 * addresses of matrix i's rows (16 bytes each, 16-byte aligned), and lane l receives in f[i]
 * matrix i's row l/4, columns 2(l%4) and 2(l%4) + 1; with .trans, its column l/4, rows 2(l%4)
 * and 2(l%4) + 1 (the transpose's fragment). */
static __device__ __forceinline__ void ldsm_x4(uint32_t f[4], const uint16_t *row) {
    uint32_t a = (uint32_t)__cvta_generic_to_shared(row);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(f[0]), "=r"(f[1]), "=r"(f[2]), "=r"(f[3])
                 : "r"(a));
}
static __device__ __forceinline__ void ldsm_x4_trans(uint32_t f[4], const uint16_t *row) {
    uint32_t a = (uint32_t)__cvta_generic_to_shared(row);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(f[0]), "=r"(f[1]), "=r"(f[2]), "=r"(f[3])
                 : "r"(a));
}
#endif

/* rows [r0, r0 + AR) of 64 bf16 columns, rows ld apart in src, into dst (pitch AP), zeros
 * past `rows` */
static __device__ void load_rows(uint16_t *dst, const uint16_t *src, int64_t ld, int64_t r0,
                                 int64_t rows) {
    for (int e = threadIdx.x; e < AR * 8; e += blockDim.x) {
        int r = e >> 3, c = e & 7;
        uint4 v = make_uint4(0, 0, 0, 0);
        if (r0 + r < rows) v = *reinterpret_cast<const uint4 *>(src + (r0 + r) * ld + c * 8);
        *reinterpret_cast<uint4 *>(dst + r * AP + c * 8) = v;
    }
}

/* the A fragments of 16 rows (from `rows`, pitch AP) over the 64 columns: 4 steps of 16, one
 * ldmatrix each (matrices: rows 0-7 and 8-15 of columns 0-7, then of columns 8-15) */
static __device__ __forceinline__ void a_frags(uint32_t f[4][4], const uint16_t *rows,
                                               int lane) {
    const uint16_t *p = rows + ((lane >> 3 & 1) * 8 + (lane & 7)) * AP + (lane >> 4) * 8;
#pragma unroll
    for (int kk = 0; kk < 4; kk++) ldsm_x4(f[kk], p + kk * 16);
}

/* the B fragments of column tiles 0-7 (8 columns each) over k rows kk*16 .. kk*16 + 15 of
 * row-major staged rows (k down, columns across): read transposed, two tiles an ldmatrix */
static __device__ __forceinline__ void b_frags_trans(uint32_t b[8][2], const uint16_t *rows,
                                                     int kk, int lane) {
    const uint16_t *p = rows + (kk * 16 + (lane >> 3 & 1) * 8 + (lane & 7)) * AP +
                        (lane >> 4) * 8;
#pragma unroll
    for (int np = 0; np < 4; np++) {
        uint32_t f[4];
        ldsm_x4_trans(f, p + np * 16);
        b[2 * np][0] = f[0], b[2 * np][1] = f[1];
        b[2 * np + 1][0] = f[2], b[2 * np + 1][1] = f[3];
    }
}

/* acc[n] (16 x 8 n-th column tile) += A (16 x 64, fragments f) B^T where B's rows are the
 * staged rows n * 8 + (0..7): products against rows of another matrix (q k^T and the like);
 * a row tile's 64 columns in two ldmatrix */
static __device__ __forceinline__ void mma_rows(float acc[8][4], const uint32_t f[4][4],
                                                const uint16_t *rows, int lane) {
#pragma unroll
    for (int n = 0; n < 8; n++) {
        const uint16_t *p = rows + (n * 8 + (lane & 7)) * AP + (lane >> 3) * 8;
        uint32_t b[8];
        ldsm_x4(b, p);
        ldsm_x4(b + 4, p + 32);
#pragma unroll
        for (int kk = 0; kk < 4; kk++) mma16816(acc[n], f[kk], b[2 * kk], b[2 * kk + 1]);
    }
}

/* acc[n] += P (16 x 64: accumulators s of 8 tiles, rounded to bf16) V, V's 64 staged rows
 * (the k dimension) and column tile n */
static __device__ __forceinline__ void mma_acc_rows(float acc[8][4], const float s[8][4],
                                                    const uint16_t *rows, int lane) {
#pragma unroll
    for (int kk = 0; kk < 4; kk++) {
        uint32_t a[4] = { pack2(s[2 * kk][0], s[2 * kk][1]), pack2(s[2 * kk][2], s[2 * kk][3]),
                          pack2(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                          pack2(s[2 * kk + 1][2], s[2 * kk + 1][3]) };
        uint32_t b[8][2];
        b_frags_trans(b, rows, kk, lane);
#pragma unroll
        for (int n = 0; n < 8; n++) mma16816(acc[n], a, b[n][0], b[n][1]);
    }
}

static __global__ void __launch_bounds__(32 * AW, 4) /* 4 blocks an SM: 128 registers */
attn_fwd_kernel(const uint16_t *qkv, uint16_t *y, float *lse, int64_t T, int64_t H, int causal,
                float sl2) {
    __shared__ __align__(16) uint16_t Qs[AR * AP], Ks[AR * AP], Vs[AR * AP];
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, r = lane >> 2, c = (lane & 3) * 2;
    int64_t W = H * AD, ld = 3 * W, bh = blockIdx.y, b = bh / H, h = bh % H;
    int64_t q0 = (int64_t)blockIdx.x * AR;
    const uint16_t *base = qkv + b * T * ld + h * AD;
    load_rows(Qs, base, ld, q0, T);
    __syncthreads();
    uint32_t qa[4][4];
    a_frags(qa, Qs + warp * 16 * AP, lane);
    float o[8][4], m[2] = { -INFINITY, -INFINITY }, l[2] = { 0.0f, 0.0f };
#pragma unroll
    for (int n = 0; n < 8; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    int64_t qi[2] = { q0 + warp * 16 + r, q0 + warp * 16 + r + 8 };
    int64_t kend = causal && q0 + AR < T ? q0 + AR : T;
    for (int64_t k0 = 0; k0 < kend; k0 += AR) {
        __syncthreads(); /* the previous tile is no longer read */
        load_rows(Ks, base + W, ld, k0, T);
        load_rows(Vs, base + 2 * W, ld, k0, T);
        __syncthreads();
        float s[8][4];
#pragma unroll
        for (int n = 0; n < 8; n++) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
        mma_rows(s, qa, Ks, lane);
        float mx[2] = { -INFINITY, -INFINITY };
#pragma unroll
        for (int n = 0; n < 8; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int64_t key = k0 + n * 8 + c + (e & 1);
                float v = s[n][e] * sl2;
                if (key >= T || (causal && key > qi[e >> 1])) v = -INFINITY;
                s[n][e] = v;
                mx[e >> 1] = fmaxf(mx[e >> 1], v);
            }
        float alpha[2], off[2], rs[2] = { 0.0f, 0.0f };
#pragma unroll
        for (int i = 0; i < 2; i++) {
            mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 1));
            mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 2));
            float mn = fmaxf(m[i], mx[i]);
            off[i] = mn == -INFINITY ? 0.0f : mn; /* a row with no key seen yet */
            alpha[i] = exp2f(m[i] - off[i]);
            m[i] = mn;
        }
#pragma unroll
        for (int n = 0; n < 8; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                float p = exp2f(s[n][e] - off[e >> 1]);
                s[n][e] = p;
                rs[e >> 1] += p;
            }
#pragma unroll
        for (int n = 0; n < 8; n++) {
            o[n][0] *= alpha[0], o[n][1] *= alpha[0];
            o[n][2] *= alpha[1], o[n][3] *= alpha[1];
        }
        l[0] = l[0] * alpha[0] + rs[0];
        l[1] = l[1] * alpha[1] + rs[1];
        mma_acc_rows(o, s, Vs, lane);
    }
#pragma unroll
    for (int i = 0; i < 2; i++) {
        l[i] += __shfl_xor_sync(0xffffffffu, l[i], 1);
        l[i] += __shfl_xor_sync(0xffffffffu, l[i], 2);
        if (qi[i] >= T) continue;
        float inv = l[i] > 0.0f ? 1.0f / l[i] : 0.0f;
        uint16_t *yr = y + (b * T + qi[i]) * W + h * AD + c;
#pragma unroll
        for (int n = 0; n < 8; n++)
            *reinterpret_cast<uint32_t *>(yr + n * 8) = pack2(o[n][2 * i] * inv,
                                                              o[n][2 * i + 1] * inv);
        if ((lane & 3) == 0)
            lse[bh * T + qi[i]] = l[i] > 0.0f ? m[i] / LOG2E + logf(l[i]) : 0.0f;
    }
}

/* delta[(b, h, t)] = sum over the head's 64 columns of dy y: a warp a (row, head) */
static __global__ void attn_delta_kernel(const uint16_t *y, const uint16_t *dy, float *delta,
                                         int64_t B, int64_t T, int64_t H) {
    int64_t idx = (int64_t)blockIdx.x * 8 + (threadIdx.x >> 5); /* (b T + t) H + h */
    int lane = threadIdx.x & 31;
    if (idx >= B * T * H) return;
    int64_t bt = idx / H, h = idx % H, at = bt * H * AD + h * AD + 2 * lane;
    float s = get(&y[at]) * get(&dy[at]) + get(&y[at + 1]) * get(&dy[at + 1]);
    s = warp_sum(s);
    if (lane == 0) delta[((bt / T) * H + h) * T + bt % T] = s;
}

static __global__ void __launch_bounds__(32 * AW)
attn_bwd_kernel(const uint16_t *qkv, const uint16_t *dy, const float *lse, const float *delta,
                uint16_t *dqkv, float *dq_acc, int64_t T, int64_t H, int causal, float scale,
                float sl2) {
    __shared__ __align__(16) uint16_t Ks[AR * AP], Vs[AR * AP], Qs[AR * AP], dOs[AR * AP];
    __shared__ __align__(16) uint16_t dSs[AR * AP];
    __shared__ float lse_s[AR], delta_s[AR];
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, r = lane >> 2, c = (lane & 3) * 2;
    int64_t W = H * AD, ld = 3 * W, bh = blockIdx.y, b = bh / H, h = bh % H;
    int64_t k0 = (int64_t)blockIdx.x * AR;
    const uint16_t *base = qkv + b * T * ld + h * AD, *dyb = dy + b * T * W + h * AD;
    load_rows(Ks, base + W, ld, k0, T);
    load_rows(Vs, base + 2 * W, ld, k0, T);
    float dk[8][4], dv[8][4];
#pragma unroll
    for (int n = 0; n < 8; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) dk[n][e] = dv[n][e] = 0.0f;
    int64_t kj[2] = { k0 + warp * 16 + r, k0 + warp * 16 + r + 8 };
    for (int64_t q0 = causal ? k0 : 0; q0 < T; q0 += AR) {
        __syncthreads(); /* the previous query tile and dS^T are no longer read */
        load_rows(Qs, base, ld, q0, T);
        load_rows(dOs, dyb, W, q0, T);
        if (threadIdx.x < AR) {
            int64_t qi = q0 + threadIdx.x;
            lse_s[threadIdx.x] = qi < T ? lse[bh * T + qi] * LOG2E : 0.0f;
            delta_s[threadIdx.x] = qi < T ? delta[bh * T + qi] : 0.0f;
        }
        __syncthreads();
        float pt[8][4], dp[8][4];
#pragma unroll
        for (int n = 0; n < 8; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) pt[n][e] = dp[n][e] = 0.0f;
        {
            uint32_t f[4][4];
            a_frags(f, Ks + warp * 16 * AP, lane);
            mma_rows(pt, f, Qs, lane); /* S^T = K Q^T: keys x queries */
            a_frags(f, Vs + warp * 16 * AP, lane);
            mma_rows(dp, f, dOs, lane); /* dP^T = V dO^T */
        }
#pragma unroll
        for (int n = 0; n < 8; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int ql = n * 8 + c + (e & 1);
                int64_t qi = q0 + ql, key = kj[e >> 1];
                float p = qi >= T || key >= T || (causal && key > qi)
                              ? 0.0f
                              : exp2f(pt[n][e] * sl2 - lse_s[ql]);
                pt[n][e] = p;
                dp[n][e] = scale * p * (dp[n][e] - delta_s[ql]);
            }
        mma_acc_rows(dv, pt, dOs, lane); /* dV += P^T dO */
        mma_acc_rows(dk, dp, Qs, lane);  /* dK += dS^T Q */
#pragma unroll
        for (int n = 0; n < 8; n++) {
            uint16_t *sp = dSs + (warp * 16 + r) * AP + n * 8 + c;
            *reinterpret_cast<uint32_t *>(sp) = pack2(dp[n][0], dp[n][1]);
            *reinterpret_cast<uint32_t *>(sp + 8 * AP) = pack2(dp[n][2], dp[n][3]);
        }
        __syncthreads();
        /* dQ for this warp's 16 queries over the block's 64 keys: A = dS (rows: queries) read
         * transposed from dS^T, B = K */
        float dq[8][4];
#pragma unroll
        for (int n = 0; n < 8; n++) dq[n][0] = dq[n][1] = dq[n][2] = dq[n][3] = 0.0f;
        /* A's matrices, transposed out of dS^T (keys down): keys kk*16 + 0-7 of queries
         * 0-7 and 8-15 of the warp's, then keys kk*16 + 8-15 of the same */
        const uint16_t *sp = dSs + ((lane >> 4) * 8 + (lane & 7)) * AP + warp * 16 +
                             (lane >> 3 & 1) * 8;
#pragma unroll
        for (int kk = 0; kk < 4; kk++) {
            uint32_t a[4], bk[8][2];
            ldsm_x4_trans(a, sp + kk * 16 * AP);
            b_frags_trans(bk, Ks, kk, lane);
#pragma unroll
            for (int n = 0; n < 8; n++) mma16816(dq[n], a, bk[n][0], bk[n][1]);
        }
#pragma unroll
        for (int i = 0; i < 2; i++) {
            int64_t qi = q0 + warp * 16 + r + 8 * i;
            if (qi >= T) continue;
            float *dst = dq_acc + (b * T + qi) * W + h * AD + c;
#pragma unroll
            for (int n = 0; n < 8; n++) {
                atomicAdd(dst + n * 8, dq[n][2 * i]);
                atomicAdd(dst + n * 8 + 1, dq[n][2 * i + 1]);
            }
        }
    }
#pragma unroll
    for (int i = 0; i < 2; i++) {
        if (kj[i] >= T) continue;
        uint16_t *dkr = dqkv + (b * T + kj[i]) * ld + W + h * AD + c, *dvr = dkr + W;
#pragma unroll
        for (int n = 0; n < 8; n++) {
            *reinterpret_cast<uint32_t *>(dkr + n * 8) = pack2(dk[n][2 * i], dk[n][2 * i + 1]);
            *reinterpret_cast<uint32_t *>(dvr + n * 8) = pack2(dv[n][2 * i], dv[n][2 * i + 1]);
        }
    }
}

/* dqkv's q columns = dq_acc (B T, W) rounded to bf16 */
static __global__ void attn_dq_kernel(const float *acc, uint16_t *dqkv, int64_t rows,
                                      int64_t W) {
    FOR_EACH(i, rows * W) put(&dqkv[i / W * 3 * W + i % W], acc[i]);
}

#endif
