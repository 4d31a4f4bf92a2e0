// emu_attn_mma.cpp: the tensor-core attention kernels (core/cuda/attn_mma_kernels.h) run on the
// CPU under the host emulation of CUDA in emu_cuda.h (threads, barriers, warp shuffles, mma.sync
// in the PTX ISA's fragment layout), against float64: their index and fragment arithmetic,
// masks and tile edges are checked on every machine (CI has no GPU); speed and the hardware
// itself are bench/gpu_check.sh's. Exit status: the number of failed rows.
#include "emu_cuda.h"

#define TS_CU_EMULATE 1
#include "cuda/attn_mma_kernels.h"

static void check(int B, int H, int T, int causal, float scale) {
    const int64_t W = (int64_t)H * AD, W3 = 3 * W, N = (int64_t)B * T;
    std::vector<uint16_t> qkv(N * W3), dy(N * W), y(N * W, 0xffff), dqkv(N * W3, 0xffff);
    for (auto &v : qkv) v = float_to_bf16((float)gauss());
    for (auto &v : dy) v = float_to_bf16((float)gauss());
    std::vector<float> lse((size_t)B * H * T, NAN), acc(N * W, NAN), delta((size_t)B * H * T, NAN);
    float s = scale > 0 ? scale : 0.125f;
    launch(dim3((unsigned)((T + AR - 1) / AR), (unsigned)(B * H)), 32 * AW, [&]() {
        attn_fwd_kernel(qkv.data(), y.data(), lse.data(), T, H, causal, s * LOG2E);
    });
    std::vector<uint16_t> dk_first;
    for (int pass = 0; pass < 2; pass++) {
        std::fill(acc.begin(), acc.end(), 0.0f);
        std::fill(delta.begin(), delta.end(), pass ? 1e30f : NAN);
        std::fill(dqkv.begin(), dqkv.end(), 0xffff);
        launch(dim3((unsigned)((N * H + 7) / 8)), 256, [&]() {
            attn_delta_kernel(y.data(), dy.data(), delta.data(), B, T, H);
        });
        launch(dim3((unsigned)((T + AR - 1) / AR), (unsigned)(B * H)), 32 * AW, [&]() {
            attn_bwd_kernel(qkv.data(), dy.data(), lse.data(), delta.data(), dqkv.data(),
                            acc.data(), T, H, causal, s, s * LOG2E);
        });
        launch(dim3(4), 256, [&]() { attn_dq_kernel(acc.data(), dqkv.data(), N, W); });
        if (!pass) dk_first = dqkv;
    }
    // float64 reference from the bf16 inputs
    auto at = [&](const std::vector<uint16_t> &m, int64_t row, int64_t ld, int64_t col) {
        return (double)bf16_to_float(m[row * ld + col]);
    };
    std::vector<double> ry(N * W), rl((size_t)B * H * T), rdq(N * W), rdk(N * W), rdv(N * W);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            int64_t q0 = h * AD, k0 = W + h * AD, v0 = 2 * W + h * AD, o0 = h * AD;
            std::vector<double> P((size_t)T * T, 0.0), dS((size_t)T * T, 0.0);
            for (int i = 0; i < T; i++) {
                double m = -INFINITY, z = 0;
                std::vector<double> sc(T, -INFINITY);
                for (int j = 0; j < T && (!causal || j <= i); j++) {
                    double d = 0;
                    for (int e = 0; e < AD; e++)
                        d += at(qkv, b * T + i, W3, q0 + e) * at(qkv, b * T + j, W3, k0 + e);
                    sc[j] = s * d;
                    m = fmax(m, sc[j]);
                }
                for (int j = 0; j < T; j++) z += exp(sc[j] - m);
                rl[((size_t)b * H + h) * T + i] = m + log(z);
                for (int j = 0; j < T; j++) P[(size_t)i * T + j] = exp(sc[j] - m) / z;
                for (int e = 0; e < AD; e++) {
                    double o = 0;
                    for (int j = 0; j < T; j++)
                        o += P[(size_t)i * T + j] * at(qkv, b * T + j, W3, v0 + e);
                    ry[(b * T + i) * W + o0 + e] = o;
                }
            }
            for (int i = 0; i < T; i++) {
                double dl = 0;
                for (int e = 0; e < AD; e++)
                    dl += at(dy, b * T + i, W, o0 + e) * ry[(b * T + i) * W + o0 + e];
                for (int j = 0; j < T; j++) {
                    double d = 0;
                    for (int e = 0; e < AD; e++)
                        d += at(dy, b * T + i, W, o0 + e) * at(qkv, b * T + j, W3, v0 + e);
                    dS[(size_t)i * T + j] = P[(size_t)i * T + j] * (d - dl);
                }
            }
            for (int i = 0; i < T; i++)
                for (int e = 0; e < AD; e++) {
                    double q = 0, k = 0, v = 0;
                    for (int j = 0; j < T; j++) {
                        q += dS[(size_t)i * T + j] * at(qkv, b * T + j, W3, k0 + e);
                        k += dS[(size_t)j * T + i] * at(qkv, b * T + j, W3, q0 + e);
                        v += P[(size_t)j * T + i] * at(dy, b * T + j, W, o0 + e);
                    }
                    rdq[(b * T + i) * W + o0 + e] = s * q;
                    rdk[(b * T + i) * W + o0 + e] = s * k;
                    rdv[(b * T + i) * W + o0 + e] = v;
                }
        }
    std::vector<double> gy(N * W), gl(lse.begin(), lse.end()), gq(N * W), gk(N * W), gv(N * W);
    int64_t same = 0;
    for (int64_t r = 0; r < N; r++)
        for (int64_t c = 0; c < W; c++) {
            gy[r * W + c] = at(y, r, W, c);
            gq[r * W + c] = at(dqkv, r, W3, c);
            gk[r * W + c] = at(dqkv, r, W3, W + c);
            gv[r * W + c] = at(dqkv, r, W3, 2 * W + c);
            same += dqkv[r * W3 + W + c] == dk_first[r * W3 + W + c] &&
                    dqkv[r * W3 + 2 * W + c] == dk_first[r * W3 + 2 * W + c];
        }
    char what[96];
    snprintf(what, sizeof what, "attention (mma, emulated) %dx%dx%d%s, scale %g", B, H, T,
             causal ? " causal" : "", (double)s);
    report(what, rel(gy, ry), 1e-2);
    report("  lse", rel(gl, rl), 1e-5);
    report("  dq", rel(gq, rdq), 1e-2);
    report("  dk", rel(gk, rdk), 1e-2);
    report("  dv", rel(gv, rdv), 1e-2);
    report("  dk, dv the same in a second run (count differing)", (double)(N * W - same), 0.5);
}

int main(void) {
    printf("emu_attn_mma: attn_mma_kernels.h under a host emulation of CUDA, against float64\n");
    check(1, 1, 13, 1, 0.0f);
    check(1, 2, 77, 1, 0.11f);
    check(2, 1, 197, 0, 0.0f);
    check(1, 1, 130, 1, 0.0f);
    check(1, 2, 64, 0, 0.11f);
    printf("emu_attn_mma: %d failed\n", failures);
    return failures;
}
