// emu_tensor.cpp: the kernels of core/cuda/tensor.cu (tensor_kernels.h) run on the CPU under
// the host emulation of CUDA in emu_cuda.h, against the CPU backend's ops, forward and
// backward, as tests/gpu_cpu_parity.c checks them on a GPU: ts_add, ts_sub and ts_mul (b a
// bias, a scalar, or a's size), ts_scale, ts_relu, ts_exp, ts_log_sigmoid, ts_sum and ts_mean,
// ts_permute, ts_slice and ts_concat, ts_index_select and ts_embedding, and ts_batchnorm1d
// (training, with and without running statistics, and eval); the device's dropout, whose mask
// is its own, against ts_dropout's function.
// Gradients start from seeded values, so that the kernels' += is checked too; grids are kept
// small so that the grid-stride loops wrap. Relative error under 1e-5; a NaN never passes.
// Exit status: the number of failed rows.
#include "emu_cuda.h"

#include <cmath>

#define TS_CU_EMULATE 1
#include "cuda/tensor_kernels.h"
#include "tessera.h"

// the CPU op's values (or gradient) t, plus base when given, against the emulated ones
static void against(const char *what, const std::vector<float> &emu, const float *ref_f,
                    int64_t n, const std::vector<float> *base) {
    std::vector<double> a(emu.begin(), emu.end()), ref((size_t)n);
    for (int64_t i = 0; i < n; i++) ref[(size_t)i] = ref_f[i] + (base ? (*base)[(size_t)i] : 0.0);
    report(what, a.size() == ref.size() ? rel(a, ref) : NAN, 1e-5);
}
static void against(const char *what, const std::vector<float> &emu, const ts_tensor *t,
                    const std::vector<float> *base) {
    against(what, emu, ts_f32(t), t->numel, base);
}

static ts_tensor *leaf(ts_ctx *c, const std::vector<float> &v, int ndim, const int64_t *shape) {
    ts_tensor *t = ts_from_f32(c, ndim, shape, v.data());
    t->requires_grad = 1;
    return t;
}

static int64_t numel(const std::vector<int64_t> &s) {
    int64_t n = 1;
    for (int64_t d : s) n *= d;
    return n;
}

// ts_add / ts_sub / ts_mul of a (R, C) and b of nb values (C, 1 or R C)
static void check_binary(int op, int64_t R, int64_t C, int64_t nb) {
    ts_ctx *c = ts_ctx_new(TS_CPU, 16u << 20, 1);
    int64_t na = R * C;
    std::vector<float> a = randv(na), b = randv(nb), dy = randv(na);
    std::vector<float> da0 = randv(na), db0 = randv(nb);
    ts_tensor *ta = leaf(c, a, 2, std::vector<int64_t>{ R, C }.data());
    ts_tensor *tb = nb == na ? leaf(c, b, 2, std::vector<int64_t>{ R, C }.data())
                             : leaf(c, b, 1, &nb);
    ts_tensor *y = op == EW_ADD ? ts_add(c, ta, tb) : op == EW_SUB ? ts_sub(c, ta, tb)
                                                    : ts_mul(c, ta, tb);
    ts_backward_with(c, y, ts_from_f32(c, 2, y->shape, dy.data()));
    std::vector<float> ey((size_t)na, NAN), eda = da0, edb = db0;
    launch(dim3(2), 64, [&]() { binary_kernel(op, a.data(), b.data(), ey.data(), na, nb); });
    if (nb == na)
        launch(dim3(2), 64,
               [&]() { binary_db_flat_kernel(op, a.data(), dy.data(), edb.data(), na); });
    else
        launch(dim3(3), 64,
               [&]() { binary_db_kernel(op, a.data(), dy.data(), edb.data(), na, nb); });
    launch(dim3(2), 64, [&]() { binary_da_kernel(op, b.data(), dy.data(), eda.data(), na, nb); });
    char what[96];
    snprintf(what, sizeof what, "%s (emulated) (%lld, %lld) by %lld",
             op == EW_ADD ? "add" : op == EW_SUB ? "sub" : "mul", (long long)R, (long long)C,
             (long long)nb);
    against(what, ey, y, NULL);
    against("  backward da (added)", eda, ta->grad, &da0);
    against("  backward db (added)", edb, tb->grad, &db0);
    ts_ctx_free(c);
}

static void check_unary(int op) {
    ts_ctx *c = ts_ctx_new(TS_CPU, 16u << 20, 1);
    const int64_t n = 1000;
    const float s = -1.7f;
    std::vector<float> x = randv(n), dy = randv(n), dx0 = randv(n);
    for (int64_t i = 0; i < n; i += 7) x[(size_t)i] *= 12.0f; // the tails of exp and log sigmoid
    x[3] = 0.0f;                                             // relu's kink
    ts_tensor *tx = leaf(c, x, 1, &n);
    ts_tensor *y = op == EW_SCALE ? ts_scale(c, tx, s) : op == EW_RELU ? ts_relu(c, tx)
                 : op == EW_EXP   ? ts_exp(c, tx)      : ts_log_sigmoid(c, tx);
    ts_backward_with(c, y, ts_from_f32(c, 1, &n, dy.data()));
    std::vector<float> ey((size_t)n, NAN), edx = dx0;
    launch(dim3(2), 64, [&]() { unary_kernel(op, x.data(), ey.data(), n, s); });
    launch(dim3(3), 64, [&]() {
        unary_backward_kernel(op, x.data(), ey.data(), dy.data(), edx.data(), n, s);
    });
    const char *names[4] = { "scale", "relu", "exp", "log_sigmoid" };
    char what[96];
    snprintf(what, sizeof what, "%s (emulated)", names[op]);
    against(what, ey, y, NULL);
    against("  backward (added)", edx, tx->grad, &dx0);
    ts_ctx_free(c);
}

// ts_sum / ts_mean over dim (TS_ALL: everything) of shape
static void check_reduce(std::vector<int64_t> shape, int dim, int mean) {
    ts_ctx *c = ts_ctx_new(TS_CPU, 16u << 20, 1);
    int nd = (int)shape.size();
    int64_t n = numel(shape), O = 1, R = n, I = 1;
    if (dim != TS_ALL) {
        int d = dim < 0 ? dim + nd : dim;
        O = 1, I = 1, R = shape[(size_t)d];
        for (int k = 0; k < d; k++) O *= shape[(size_t)k];
        for (int k = d + 1; k < nd; k++) I *= shape[(size_t)k];
    }
    std::vector<float> a = randv(n), dy = randv(O * I), da0 = randv(n);
    ts_tensor *ta = leaf(c, a, nd, shape.data());
    ts_tensor *y = mean ? ts_mean(c, ta, dim) : ts_sum(c, ta, dim);
    ts_backward_with(c, y, ts_from_f32(c, y->ndim, y->shape, dy.data()));
    float scale = mean ? 1.0f / (float)R : 1.0f;
    std::vector<float> ey((size_t)(O * I), NAN), eda = da0;
    if (I == 1)
        launch(dim3(2), 64, [&]() { reduce_rows_kernel(a.data(), ey.data(), O, R, scale); });
    else
        launch(dim3(2), 64,
               [&]() { reduce_cols_kernel(a.data(), ey.data(), O, R, I, scale); });
    launch(dim3(3), 64,
           [&]() { reduce_backward_kernel(dy.data(), eda.data(), O, R, I, scale); });
    char what[96];
    snprintf(what, sizeof what, "%s (emulated) (%lld, %lld, %lld)", mean ? "mean" : "sum",
             (long long)O, (long long)R, (long long)I);
    against(what, ey, y, NULL);
    against("  backward (added)", eda, ta->grad, &da0);
    ts_ctx_free(c);
}

static void check_permute(std::vector<int64_t> shape, std::vector<int> perm) {
    ts_ctx *c = ts_ctx_new(TS_CPU, 16u << 20, 1);
    int nd = (int)shape.size();
    int64_t n = numel(shape);
    std::vector<float> x = randv(n), dy = randv(n), dx0 = randv(n);
    ts_tensor *tx = leaf(c, x, nd, shape.data());
    ts_tensor *y = ts_permute(c, tx, perm.data());
    ts_backward_with(c, y, ts_from_f32(c, nd, y->shape, dy.data()));
    // as tensor.cu's launcher: y's dims and their strides in x; the backward by the inverse
    auto geom = [&](const std::vector<int64_t> &in, const std::vector<int> &pm) {
        perm_geom p;
        int64_t st[TS_CU_PERMUTE_DIMS], m = 1;
        for (int d = nd - 1; d >= 0; d--) st[d] = m, m *= in[(size_t)d];
        p.ndim = nd, p.n = m;
        for (int d = 0; d < nd; d++)
            p.shape[d] = in[(size_t)pm[(size_t)d]], p.stride[d] = st[pm[(size_t)d]];
        return p;
    };
    std::vector<int> inv((size_t)nd);
    std::vector<int64_t> yshape((size_t)nd);
    for (size_t d = 0; d < (size_t)nd; d++)
        inv[(size_t)perm[d]] = (int)d, yshape[d] = shape[(size_t)perm[d]];
    perm_geom pf = geom(shape, perm), pb = geom(yshape, inv);
    std::vector<float> ey((size_t)n, NAN), edx = dx0;
    launch(dim3(2), 64, [&]() { permute_kernel(x.data(), ey.data(), pf, 0); });
    launch(dim3(2), 64, [&]() { permute_kernel(dy.data(), edx.data(), pb, 1); });
    char what[96] = "permute (emulated)";
    for (int d = 0; d < nd; d++)
        snprintf(what + strlen(what), sizeof what - strlen(what), " %d", perm[(size_t)d]);
    against(what, ey, y, NULL);
    against("  backward (added)", edx, tx->grad, &dx0);
    ts_ctx_free(c);
}

// ts_concat of pieces of sizes ds along dim, then ts_slice [start, end) of the result
static void check_concat_slice(int64_t O, std::vector<int64_t> ds, int64_t I, int64_t start,
                               int64_t end) {
    ts_ctx *c = ts_ctx_new(TS_CPU, 16u << 20, 1);
    int64_t D = 0;
    for (int64_t d : ds) D += d;
    std::vector<std::vector<float>> xs, d0;
    std::vector<ts_tensor *> tx;
    for (int64_t d : ds) {
        xs.push_back(randv(O * d * I));
        d0.push_back(randv(O * d * I));
        tx.push_back(leaf(c, xs.back(), 3, std::vector<int64_t>{ O, d, I }.data()));
    }
    ts_tensor *cat = ts_concat(c, tx.data(), (int)tx.size(), 1);
    ts_tensor *y = ts_slice(c, cat, 1, start, end);
    std::vector<float> dy = randv(O * (end - start) * I);
    ts_backward_with(c, y, ts_from_f32(c, 3, y->shape, dy.data()));
    // forward: the pieces into the concatenation, then the slice out of it; backward: the
    // slice's gradient into a zero (O, D, I), then each piece's rows added to its gradient
    std::vector<float> ecat((size_t)(O * D * I), NAN), ey((size_t)(O * (end - start) * I), NAN);
    std::vector<float> dcat((size_t)(O * D * I), 0.0f);
    int64_t at = 0;
    for (size_t k = 0; k < ds.size(); k++) {
        launch(dim3(2), 64, [&]() {
            copy_rows_kernel(xs[k].data(), ds[k], 0, ecat.data(), D, at, O, ds[k], I, 0);
        });
        at += ds[k];
    }
    launch(dim3(2), 64, [&]() {
        copy_rows_kernel(ecat.data(), D, start, ey.data(), end - start, 0, O, end - start, I, 0);
    });
    launch(dim3(2), 64, [&]() {
        copy_rows_kernel(dy.data(), end - start, 0, dcat.data(), D, start, O, end - start, I, 1);
    });
    char what[96];
    snprintf(what, sizeof what, "concat of %zu, slice [%lld, %lld) (emulated)", ds.size(),
             (long long)start, (long long)end);
    against(what, ey, y, NULL);
    at = 0;
    for (size_t k = 0; k < ds.size(); k++) {
        std::vector<float> e = d0[k];
        launch(dim3(2), 64, [&]() {
            copy_rows_kernel(dcat.data(), D, at, e.data(), ds[k], 0, O, ds[k], I, 1);
        });
        snprintf(what, sizeof what, "  backward, piece %zu (added)", k);
        against(what, e, tx[k]->grad, &d0[k]);
        at += ds[k];
    }
    ts_ctx_free(c);
}

// ts_index_select along dim 1 of (O, L, I) (O = 1: ts_embedding of a (L, I) table), with
// repeated indices; an index out of range gives NaN rows on the device
static void check_index(int64_t O, int64_t L, int64_t I, std::vector<int32_t> idx, int embed) {
    ts_ctx *c = ts_ctx_new(TS_CPU, 16u << 20, 1);
    int64_t n = (int64_t)idx.size();
    std::vector<float> a = randv(O * L * I), dy = randv(O * n * I), da0 = randv(O * L * I);
    ts_tensor *ti = ts_new(c, TS_I32, 1, &n);
    memcpy(ti->data, idx.data(), (size_t)n * 4);
    ts_tensor *ta = embed ? leaf(c, a, 2, SH(L, I)) : leaf(c, a, 3, SH(O, L, I));
    ts_tensor *y = embed ? ts_embedding(c, ta, ti) : ts_index_select(c, ta, 1, ti);
    ts_backward_with(c, y, ts_from_f32(c, y->ndim, y->shape, dy.data()));
    std::vector<float> ey((size_t)(O * n * I), NAN), eda = da0;
    launch(dim3(2), 64,
           [&]() { index_rows_kernel(a.data(), idx.data(), ey.data(), O, L, n, I); });
    launch(dim3(2), 32, [&]() {
        index_rows_backward_kernel(dy.data(), idx.data(), eda.data(), O, L, n, I);
    });
    char what[96];
    snprintf(what, sizeof what, "%s (emulated) (%lld, %lld, %lld), %lld indices",
             embed ? "embedding" : "index_select", (long long)O, (long long)L, (long long)I,
             (long long)n);
    against(what, ey, y, NULL);
    against("  backward (added)", eda, ta->grad, &da0);
    ts_ctx_free(c);
    if (embed) return;
    idx[0] = (int32_t)L; // out of range: NaN rows, and no gradient anywhere
    std::vector<float> by((size_t)(O * n * I), 0.0f), bda = da0;
    launch(dim3(2), 64,
           [&]() { index_rows_kernel(a.data(), idx.data(), by.data(), O, L, n, I); });
    launch(dim3(2), 32, [&]() {
        index_rows_backward_kernel(dy.data(), idx.data(), bda.data(), O, L, n, I);
    });
    int64_t nan_rows = 0, bad = 0;
    for (int64_t o = 0; o < O; o++)
        for (int64_t i = 0; i < I; i++) nan_rows += std::isnan(by[(size_t)(o * n * I + i)]);
    for (int64_t e = 0; e < O * L * I; e++) bad += std::isnan(bda[(size_t)e]);
    report("  an index out of range: NaN values (count missing)", (double)(O * I - nan_rows),
           0.5);
    report("  ... and no NaN in the gradient (count)", (double)bad, 0.5);
}

// the device's dropout: its mask keeps 1 - p of the values (within 5 sigma), y = x m / (1 - p)
// and dx += dy m / (1 - p) exactly (ts_dropout's function), the same mask for the same seed
static void check_dropout(float p) {
    const int64_t n = 20000;
    std::vector<float> x = randv(n), dy = randv(n), dx0 = randv(n);
    std::vector<float> y((size_t)n, NAN), dx = dx0, y2((size_t)n, NAN);
    std::vector<uint8_t> m((size_t)n, 7), m2((size_t)n, 7), m3((size_t)n, 7);
    float scale = p < 1.0f ? 1.0f / (1.0f - p) : 0.0f;
    launch(dim3(3), 64, [&]() { dropout_kernel(x.data(), y.data(), m.data(), n, p, scale, 42); });
    launch(dim3(2), 64, [&]() { dropout_kernel(x.data(), y2.data(), m2.data(), n, p, scale, 42); });
    launch(dim3(2), 64, [&]() { dropout_kernel(x.data(), y2.data(), m3.data(), n, p, scale, 43); });
    launch(dim3(2), 64,
           [&]() { dropout_backward_kernel(dy.data(), m.data(), dx.data(), n, scale); });
    int64_t kept = 0, wrong = 0, same = 0, other = 0;
    for (int64_t i = 0; i < n; i++) {
        kept += m[(size_t)i];
        wrong += m[(size_t)i] > 1 || y[(size_t)i] != x[(size_t)i] * (scale * (float)m[(size_t)i]) ||
                 dx[(size_t)i] != dx0[(size_t)i] + dy[(size_t)i] * (scale * (float)m[(size_t)i]);
        same += m[(size_t)i] == m2[(size_t)i];
        other += m[(size_t)i] != m3[(size_t)i];
    }
    double want = (1.0 - p) * n, sd = sqrt(p * (1.0 - p) * n);
    char what[96];
    snprintf(what, sizeof what, "dropout (emulated) p %.2f: kept %lld of %lld", (double)p,
             (long long)kept, (long long)n);
    report(what, fabs((double)kept - want) / n, 5.0 * sd / n + 1e-12);
    report("  y and dx from the mask (count wrong)", (double)wrong, 0.5);
    report("  the same mask for the same seed (count differing)", (double)(n - same), 0.5);
    if (p > 0.0f && p < 1.0f)
        report("  another for another seed (share differing, of 2p(1-p))",
               fabs((double)other / n - 2.0 * p * (1.0 - p)), 0.02);
}

// mode 0: training with running statistics, 1: training without, 2: eval
static void check_batchnorm(int64_t N, int64_t C, int mode, int affine) {
    ts_ctx *c = ts_ctx_new(TS_CPU, 16u << 20, 1);
    c->training = mode < 2;
    const float momentum = 0.1f, eps = 1e-5f;
    std::vector<float> x = randv(N * C), w = randv(C), b = randv(C), dy = randv(N * C);
    std::vector<float> rm = randv(C), rv(C), dx0 = randv(N * C), dw0 = randv(C), db0 = randv(C);
    for (auto &v : rv) v = 0.5f + (float)fabs(gauss());
    for (auto &v : x) v = 3.0f + 2.0f * v; // a mean and a scale to take out
    ts_tensor *tx = leaf(c, x, 2, std::vector<int64_t>{ N, C }.data());
    ts_tensor *tw = affine ? leaf(c, w, 1, &C) : NULL, *tb = affine ? leaf(c, b, 1, &C) : NULL;
    ts_tensor *trm = mode == 1 ? NULL : ts_from_f32(c, 1, &C, rm.data());
    ts_tensor *trv = mode == 1 ? NULL : ts_from_f32(c, 1, &C, rv.data());
    ts_tensor *y = ts_batchnorm1d(c, tx, tw, tb, trm, trv, momentum, eps);
    ts_backward_with(c, y, ts_from_f32(c, 2, y->shape, dy.data()));
    // tensor.cu's sequence
    int batch_stats = mode < 2;
    std::vector<float> erm = rm, erv = rv, mean((size_t)C, NAN), rstd((size_t)C, NAN);
    std::vector<float> ey((size_t)(N * C), NAN), sums((size_t)(2 * C), NAN);
    std::vector<float> edx = dx0, edw = dw0, edb = db0;
    const float *wp = affine ? w.data() : NULL, *bp = affine ? b.data() : NULL;
    if (batch_stats)
        launch(dim3(3), 64, [&]() {
            bn_stats_kernel(x.data(), mean.data(), rstd.data(), mode ? NULL : erm.data(),
                            mode ? NULL : erv.data(), N, C, momentum, eps);
        });
    else
        launch(dim3(1), 64, [&]() {
            bn_eval_stats_kernel(rm.data(), rv.data(), mean.data(), rstd.data(), C, eps);
        });
    launch(dim3(2), 64, [&]() {
        bn_forward_kernel(x.data(), wp, bp, mean.data(), rstd.data(), ey.data(), N, C);
    });
    launch(dim3(3), 64, [&]() {
        bn_sums_kernel(x.data(), dy.data(), mean.data(), rstd.data(), sums.data(),
                       affine ? edw.data() : NULL, affine ? edb.data() : NULL, N, C);
    });
    launch(dim3(2), 64, [&]() {
        bn_dx_kernel(x.data(), wp, dy.data(), mean.data(), rstd.data(), sums.data(),
                     edx.data(), N, C, batch_stats);
    });
    const char *m = mode == 0 ? "training" : mode == 1 ? "training, no running stats" : "eval";
    char what[96];
    snprintf(what, sizeof what, "batchnorm1d (emulated) %lldx%lld %s%s", (long long)N,
             (long long)C, m, affine ? ", affine" : "");
    against(what, ey, y, NULL);
    against("  backward dx (added)", edx, tx->grad, &dx0);
    if (affine) {
        against("  backward dw (added)", edw, tw->grad, &dw0);
        against("  backward db (added)", edb, tb->grad, &db0);
    }
    if (mode == 0) {
        against("  running mean", erm, trm, NULL);
        against("  running var", erv, trv, NULL);
    }
    ts_ctx_free(c);
}

int main(void) {
    printf("emu_tensor: tensor_kernels.h under a host emulation of CUDA, against the CPU ops\n");
    for (int op = EW_ADD; op <= EW_MUL; op++) {
        check_binary(op, 37, 9, 9);   // b a bias over rows
        check_binary(op, 5, 600, 1);  // b a scalar
        check_binary(op, 4, 13, 52);  // b as large as a
    }
    for (int op = EW_SCALE; op <= EW_LOG_SIGMOID; op++) check_unary(op);
    check_reduce({ 5, 300 }, 1, 0);      // rows
    check_reduce({ 4, 37, 9 }, 1, 1);    // a strided dim
    check_reduce({ 6, 7, 11 }, 0, 0);    // the first dim
    check_reduce({ 3, 4, 5 }, TS_ALL, 1);
    check_permute({ 2, 3, 4, 5 }, { 0, 2, 1, 3 });
    check_permute({ 3, 5, 7 }, { 2, 0, 1 });
    check_permute({ 2, 3, 2, 3, 2 }, { 4, 3, 2, 1, 0 });
    check_concat_slice(3, { 2, 5, 1 }, 4, 1, 7);
    check_concat_slice(1, { 3, 3 }, 1, 0, 6);
    check_index(3, 10, 7, { 4, 0, 9, 4, 4, 2 }, 0);
    check_index(1, 50, 16, { 3, 49, 3, 0, 17, 3, 3, 12, 49 }, 1);
    check_dropout(0.3f);
    check_dropout(0.0f);
    check_dropout(1.0f);
    check_batchnorm(37, 11, 0, 1);
    check_batchnorm(64, 5, 1, 0);
    check_batchnorm(9, 70, 2, 1);
    printf("emu_tensor: %d failed\n", failures);
    return failures;
}
