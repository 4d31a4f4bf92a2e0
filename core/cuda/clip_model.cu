/* clip_model.cu: a CLIP model (open_clip's VisionTransformer image tower, its text transformer,
 * ClipLoss) trained on the device: forward, backward and AdamW for one batch, all on the
 * device's stream.
 *
 * The parameters live in one float32 buffer (weight-decayed ones first, then gains, biases,
 * class embedding and logit scale, as open_clip's main.py groups them), their gradients, AdamW
 * moments and, in bf16 mode, a bf16 copy of all of them refreshed after each step, in buffers of
 * the same layout. The products of the towers take bf16 (or float32) operands with float32
 * accumulation. A product whose result is next read as an operand (of products, or of the
 * bf16 attention and GELU kernels) writes it in the operand type (in_proj's q, k, v, the
 * attention output, the MLP's pre-activation, and their gradients); the
 * residual stream, layernorm, softmax rows and the loss are float32, and the products that end
 * a residual branch add the stream in their epilogue. Attention runs one cuBLASLt product per
 * head, batched over the batch, that reads q, k and v where in_proj wrote them and writes the
 * output (and the gradients of q, k, v) in packed rows, around a row softmax whose rows are
 * kept for the backward; or (flash_attention) by attn_mma.cu's tensor-core kernels, which read
 * and write the same packed rows and keep the scores in registers.
 *
 * Activations are kept per layer for the backward (the float32 residual stream, layernorm
 * statistics, the products' operands, the softmax rows or, with the tensor-core attention,
 * the rows' logsumexp, the MLP's pre-activation); temporaries
 * are shared between layers. Everything is bump-allocated from the device's arena once.
 */
#include "cuda_impl.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NAME_MAX_LEN 96

typedef struct {
    char name[NAME_MAX_LEN];
    int64_t n;
    int decay;
    int64_t off; /* in elements, into the flat buffers */
} param;

enum { LN1W, LN1B, QKVW, QKVB, OUTW, OUTB, LN2W, LN2B, FCW, FCB, PROJW, PROJB, NLAYERP };

typedef struct {
    float *xin, *mean1, *rstd1, *xmid, *mean2, *rstd2;
    float *pf;       /* batched attention: the softmax rows */
    float *lse;      /* tensor-core attention: the rows' logsumexp (B, H, T) */
    void *ln1, *qkv, *pop, *attn, *ln2, *h, *g; /* operands (h: the MLP's pre-activation) */
} layer_acts;

typedef struct {
    int64_t T, W, L, H, N; /* tokens, width, layers, heads, rows (B T) */
    int causal;
    int flash;             /* attention by attn_mma.cu's kernels (bf16, heads of 64) */
    int *lp;               /* L * NLAYERP parameter indices */
    layer_acts *a;         /* L */
    float *x_last;         /* the output of the last block (B, T, W) */
    float *pooled, *pmean, *prstd, *lnp, *feat, *fnorm, *featn;
    int32_t *pool_idx;     /* (B) */
} tower;

struct ts_cuda_clip {
    ts_cuda *g;
    ts_cuda_clip_config c;
    int64_t B;
    ts_cuda_dtype dt;
    param *p;
    int np, cap;
    int64_t total, decayed;
    float *P, *G, *M, *V; /* parameters, gradients, moments */
    uint16_t *Pb;         /* bf16 copy (bf16 mode) */
    tower vis, txt;
    int vcls, vpos, vconv, vlnpre_w, vlnpre_b, vlnpost_w, vlnpost_b, vproj;
    int tok, tpos, lnf_w, lnf_b, tproj, lscale;
    /* vision input */
    float *patches_f, *x0v, *premean, *prerstd;
    void *patches;
    int32_t *ids, *labels;
    /* loss */
    float *raw_i, *raw_t, *logit_i, *logit_t, *loss, *dhalf;
    /* shared temporaries */
    float *tA, *tB, *tC, *tD, *dres, *d1, *d2;
    void *o1, *o2, *o3, *odres; /* bf16 temporaries (bf16 mode) */
    size_t esz; /* bytes of an operand element */
    /* profiling (ts_cuda_clip_profile): a wait for the device after each call, its time
     * booked to the phase and the function called */
    int prof;
    const char *phase;
    double last;
    struct {
        char label[64];
        double s;
        long n;
    } pe[96];
    int npe;
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void prof_mark(ts_cuda_clip *m, const char *call) {
    cudaStreamSynchronize(m->g->stream);
    double t = now_s();
    char label[64];
    int n = 0;
    while (call[n] && call[n] != '(' && n < 40) n++;
    snprintf(label, sizeof label, "%s %.*s", m->phase ? m->phase : "", n, call);
    int i = 0;
    while (i < m->npe && strcmp(m->pe[i].label, label)) i++;
    if (i == m->npe && m->npe < 96) snprintf(m->pe[m->npe++].label, sizeof m->pe[0].label, "%s",
                                            label);
    if (i < m->npe) {
        m->pe[i].s += t - m->last;
        m->pe[i].n++;
    }
    m->last = t;
}

static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }
/* the row pitch of attention scores: 8 elements (16 bytes of bf16), as the tensor cores want */
static int64_t pitch(int64_t T) { return (T + 7) / 8 * 8; }

static int add_param(ts_cuda_clip *m, const char *name, int64_t n, int decay) {
    if (m->np == m->cap) {
        m->cap = m->cap ? 2 * m->cap : 256;
        m->p = (param *)realloc(m->p, (size_t)m->cap * sizeof *m->p);
    }
    param *q = &m->p[m->np];
    snprintf(q->name, sizeof q->name, "%s", name);
    q->n = n;
    q->decay = decay;
    q->off = 0;
    return m->np++;
}

static void add_tower_params(ts_cuda_clip *m, tower *t, const char *prefix) {
    char nm[NAME_MAX_LEN];
    int64_t W = t->W;
    static const char *names[NLAYERP] = {
        "ln_1.weight", "ln_1.bias", "attn.in_proj_weight", "attn.in_proj_bias",
        "attn.out_proj.weight", "attn.out_proj.bias", "ln_2.weight", "ln_2.bias",
        "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias" };
    const int64_t sizes[NLAYERP] = { W, W, 3 * W * W, 3 * W, W * W, W, W, W, 4 * W * W, 4 * W,
                                     4 * W * W, W };
    const int decay[NLAYERP] = { 0, 0, 1, 0, 1, 0, 0, 0, 1, 0, 1, 0 };
    t->lp = (int *)malloc((size_t)(t->L * NLAYERP) * sizeof(int));
    for (int64_t l = 0; l < t->L; l++)
        for (int k = 0; k < NLAYERP; k++) {
            snprintf(nm, sizeof nm, "%stransformer.resblocks.%lld.%s", prefix, (long long)l,
                     names[k]);
            t->lp[l * NLAYERP + k] = add_param(m, nm, sizes[k], decay[k]);
        }
}

static float *Wf(ts_cuda_clip *m, int i) { return m->P + m->p[i].off; }
static float *Gf(ts_cuda_clip *m, int i) { return m->G + m->p[i].off; }
/* a weight as a product operand */
static const void *Wo(ts_cuda_clip *m, int i) {
    return m->dt == TS_CUDA_BF16 ? (const void *)(m->Pb + m->p[i].off) : (const void *)Wf(m, i);
}

#define TRY(call)                                                                           \
    do {                                                                                   \
        ts_status s_ = (call);                                                             \
        if (s_) return s_;                                                                 \
    } while (0)
/* TRY, then book the call's time when profiling */
#define TRYP(call)                                                                          \
    do {                                                                                   \
        TRY(call);                                                                         \
        if (m->prof) prof_mark(m, #call);                                                  \
    } while (0)

static void *alloc_or_null(ts_cuda_clip *m, size_t bytes, int *full) {
    void *p = ts_cuda_alloc(m->g, bytes);
    if (!p) *full = 1;
    return p;
}
#define FA(n) ((float *)alloc_or_null(m, (size_t)(n) * sizeof(float), &full))
#define OA(n) (alloc_or_null(m, (size_t)(n) * m->esz, &full))

/* Write the operand of n floats at f into o (a bf16 copy; nothing in float32 mode, where the
 * caller wrote into o directly) */
static ts_status to_op(ts_cuda_clip *m, const float *f, void *o, int64_t n, ts_err *err) {
    if (m->dt == TS_CUDA_BF16) return ts_cuda_to_bf16(m->g, f, (uint16_t *)o, n, err);
    if ((const void *)f != o)
        TS_CU(cudaMemcpyAsync(o, f, (size_t)n * 4, cudaMemcpyDeviceToDevice, m->g->stream),
              "operand copy");
    return TS_OK;
}
/* where to write float32 values that become operand o: o itself in float32 mode */
static float *op_target(ts_cuda_clip *m, void *o, float *tmp) {
    return m->dt == TS_CUDA_BF16 ? tmp : (float *)o;
}
/* the operand of a temporary's values: a bf16 copy into scratch, or the values themselves */
static ts_status op_of(ts_cuda_clip *m, const float *f, void *scratch, int64_t n,
                       const void **o, ts_err *err) {
    if (m->dt == TS_CUDA_BF16) {
        TRY(ts_cuda_to_bf16(m->g, f, (uint16_t *)scratch, n, err));
        *o = scratch;
    } else {
        *o = f;
    }
    return TS_OK;
}

static ts_status alloc_tower(ts_cuda_clip *m, tower *t, ts_err *err) {
    int full = 0;
    int64_t N = t->N, W = t->W, S = m->B * t->H * t->T * pitch(t->T);
    t->a = (layer_acts *)calloc((size_t)t->L, sizeof *t->a);
    for (int64_t l = 0; l < t->L; l++) {
        layer_acts *a = &t->a[l];
        a->xin = FA(N * W);
        a->mean1 = FA(N), a->rstd1 = FA(N), a->mean2 = FA(N), a->rstd2 = FA(N);
        a->xmid = FA(N * W);
        a->h = OA(N * 4 * W);
        if (t->flash) {
            a->lse = FA(m->B * t->H * t->T);
        } else {
            a->pf = FA(S);
        }
        a->ln1 = OA(N * W);
        a->qkv = OA(3 * N * W);
        a->pop = t->flash ? NULL : m->dt == TS_CUDA_BF16 ? OA(S)
                                                         : (void *)a->pf;
        a->attn = OA(N * W);
        a->ln2 = OA(N * W);
        a->g = OA(4 * N * W);
    }
    int64_t E = m->c.embed;
    t->x_last = FA(N * W);
    t->pooled = FA(m->B * W), t->pmean = FA(m->B), t->prstd = FA(m->B), t->lnp = FA(m->B * W);
    t->feat = FA(m->B * E), t->fnorm = FA(m->B), t->featn = FA(m->B * E);
    t->pool_idx = (int32_t *)alloc_or_null(m, (size_t)m->B * 4, &full);
    if (full)
        return ts__cuda_fail(err, TS_ERR_NOMEM, "cuda clip: the arena (%zu MiB) is too small "
                             "for batch %lld", m->g->cap >> 20, (long long)m->B);
    return TS_OK;
}

ts_status ts_cuda_clip_new(ts_cuda *g, const ts_cuda_clip_config *c, int64_t batch,
                           ts_cuda_dtype dt, ts_cuda_clip **out, ts_err *err) {
    *out = NULL;
    if (batch < 1 || c->patch < 1 || c->heads < 1 || c->text_heads < 1 ||
        c->image_size % c->patch || c->width % c->heads ||
        c->text_width % c->text_heads || c->layers < 1 || c->text_layers < 1 || c->embed < 1)
        return ts__cuda_fail(err, TS_ERR_USAGE, "cuda clip: inconsistent configuration "
                             "(image %lld / patch %lld, width %lld / heads %lld, text width "
                             "%lld / heads %lld)", (long long)c->image_size,
                             (long long)c->patch, (long long)c->width, (long long)c->heads,
                             (long long)c->text_width, (long long)c->text_heads);
    ts_cuda_clip *m = (ts_cuda_clip *)calloc(1, sizeof *m);
    m->g = g;
    m->c = *c;
    m->B = batch;
    m->dt = dt;
    m->esz = dt == TS_CUDA_BF16 ? 2 : 4;
    int64_t gsz = c->image_size / c->patch, np = gsz * gsz, W = c->width, TW = c->text_width;
    int64_t E = c->embed, P = c->patch;
    /* m is zeroed: the rest of each tower is filled in below */
    tower *vt = &m->vis, *tt = &m->txt;
    vt->T = np + 1, vt->W = W, vt->L = c->layers, vt->H = c->heads, vt->N = batch * (np + 1);
    tt->T = c->context, tt->W = TW, tt->L = c->text_layers, tt->H = c->text_heads;
    tt->N = batch * c->context, tt->causal = 1;
    /* the tensor-core attention when asked for and where it applies (bf16, heads of 64) */
    vt->flash = dt == TS_CUDA_BF16 && W / c->heads == 64 && batch * c->heads <= 65535 &&
                c->flash_attention;
    tt->flash = dt == TS_CUDA_BF16 && TW / c->text_heads == 64 &&
                batch * c->text_heads <= 65535 && c->flash_attention;
    /* open_clip's names and its decay rule: no decay for ndim < 2, gains, biases, logit_scale */
    m->tpos = add_param(m, "positional_embedding", c->context * TW, 1);
    m->tproj = add_param(m, "text_projection", TW * E, 1);
    m->lscale = add_param(m, "logit_scale", 1, 0);
    m->vcls = add_param(m, "visual.class_embedding", W, 0);
    m->vpos = add_param(m, "visual.positional_embedding", (np + 1) * W, 1);
    m->vproj = add_param(m, "visual.proj", W * E, 1);
    m->vconv = add_param(m, "visual.conv1.weight", W * 3 * P * P, 1);
    m->vlnpre_w = add_param(m, "visual.ln_pre.weight", W, 0);
    m->vlnpre_b = add_param(m, "visual.ln_pre.bias", W, 0);
    add_tower_params(m, &m->vis, "visual.");
    m->vlnpost_w = add_param(m, "visual.ln_post.weight", W, 0);
    m->vlnpost_b = add_param(m, "visual.ln_post.bias", W, 0);
    add_tower_params(m, &m->txt, "");
    m->tok = add_param(m, "token_embedding.weight", c->vocab * TW, 1);
    m->lnf_w = add_param(m, "ln_final.weight", TW, 0);
    m->lnf_b = add_param(m, "ln_final.bias", TW, 0);
    /* the flat layout: decayed first, each tensor 128 elements aligned (256 bytes as bf16) */
    int64_t at = 0;
    for (int pass = 1; pass >= 0; pass--) {
        for (int i = 0; i < m->np; i++)
            if (m->p[i].decay == pass) {
                m->p[i].off = at;
                at += (m->p[i].n + 127) / 128 * 128;
            }
        if (pass == 1) m->decayed = at;
    }
    m->total = at;
    int full = 0;
    m->P = FA(at), m->G = FA(at), m->M = FA(at), m->V = FA(at);
    m->Pb = dt == TS_CUDA_BF16 ? (uint16_t *)alloc_or_null(m, (size_t)at * 2, &full) : NULL;
    if (full) {
        ts_cuda_clip_free(m);
        return ts__cuda_fail(err, TS_ERR_NOMEM, "cuda clip: the arena (%zu MiB) cannot hold "
                             "%lld parameters", g->cap >> 20, (long long)at);
    }
    ts_status st;
    if ((st = alloc_tower(m, &m->vis, err)) || (st = alloc_tower(m, &m->txt, err))) {
        ts_cuda_clip_free(m);
        return st;
    }
    int64_t Nv = m->vis.N, Nt = m->txt.N;
    int64_t Sv = batch * c->heads * m->vis.T * pitch(m->vis.T);
    int64_t St = batch * c->text_heads * c->context * pitch(c->context);
    int64_t NW = max64(Nv * W, Nt * TW), S = max64(Sv, St);
    int64_t prow = batch * np * 3 * P * P;
    m->patches_f = FA(prow);
    m->patches = dt == TS_CUDA_BF16 ? OA(prow) : (void *)m->patches_f;
    m->x0v = FA(Nv * W), m->premean = FA(Nv), m->prerstd = FA(Nv);
    m->ids = (int32_t *)alloc_or_null(m, (size_t)Nt * 4, &full);
    m->labels = (int32_t *)alloc_or_null(m, (size_t)batch * 4, &full);
    m->raw_i = FA(batch * batch), m->raw_t = FA(batch * batch);
    m->logit_i = FA(batch * batch), m->logit_t = FA(batch * batch);
    m->loss = FA(2), m->dhalf = FA(1);
    m->tA = FA(max64(max64(4 * NW, S), max64(prow, batch * np * W)));
    m->tB = FA(max64(4 * NW, S));
    m->tC = FA(NW);
    m->tD = FA(3 * NW);
    m->dres = FA(NW);
    m->d1 = FA(2 * batch * E);
    m->d2 = FA(batch * E + 2 * batch * max64(W, TW));
    m->o1 = dt == TS_CUDA_BF16 ? OA(4 * NW) : NULL;
    m->o2 = dt == TS_CUDA_BF16 ? OA(S) : NULL;
    m->o3 = dt == TS_CUDA_BF16 ? OA(NW) : NULL;
    m->odres = dt == TS_CUDA_BF16 ? OA(NW) : NULL;
    if (full) {
        ts_cuda_clip_free(m);
        return ts__cuda_fail(err, TS_ERR_NOMEM, "cuda clip: the arena (%zu MiB) is too small "
                             "for batch %lld", g->cap >> 20, (long long)batch);
    }
    int32_t *lab = (int32_t *)malloc((size_t)batch * 4);
    for (int64_t b = 0; b < batch; b++) lab[b] = (int32_t)b;
    st = ts_cuda_upload(g, m->labels, lab, (size_t)batch * 4, err);
    if (!st) st = ts_cuda_sync(g, err);
    free(lab);
    int32_t *zero = (int32_t *)calloc((size_t)batch, 4);
    if (!st) st = ts_cuda_upload(g, m->vis.pool_idx, zero, (size_t)batch * 4, err);
    if (!st) st = ts_cuda_sync(g, err);
    free(zero);
    if (!st) st = ts_cuda_fill(g, m->dhalf, 1, 0.5f, err);
    if (!st) st = ts_cuda_zero(g, m->P, (size_t)at * 4, err);
    if (!st) st = ts_cuda_zero(g, m->M, (size_t)at * 4, err);
    if (!st) st = ts_cuda_zero(g, m->V, (size_t)at * 4, err);
    if (st) {
        ts_cuda_clip_free(m);
        return st;
    }
    *out = m;
    return TS_OK;
}

void ts_cuda_clip_free(ts_cuda_clip *m) {
    if (!m) return;
    free(m->vis.lp), free(m->vis.a), free(m->txt.lp), free(m->txt.a);
    free(m->p);
    free(m);
}

int ts_cuda_clip_param_count(const ts_cuda_clip *m) { return m->np; }

const char *ts_cuda_clip_param(const ts_cuda_clip *m, int i, int64_t *numel) {
    if (i < 0 || i >= m->np) return NULL;
    if (numel) *numel = m->p[i].n;
    return m->p[i].name;
}

int64_t ts_cuda_clip_param_total(const ts_cuda_clip *m) {
    int64_t n = 0;
    for (int i = 0; i < m->np; i++) n += m->p[i].n;
    return n;
}

/* the index of parameter `name` holding n values, or -1 with err set */
static int lookup(const ts_cuda_clip *m, const char *name, int64_t n, ts_err *err) {
    for (int i = 0; i < m->np; i++)
        if (!strcmp(m->p[i].name, name)) {
            if (n == m->p[i].n) return i;
            ts__cuda_fail(err, TS_ERR_USAGE, "cuda clip: %s has %lld values, not %lld", name,
                          (long long)m->p[i].n, (long long)n);
            return -1;
        }
    ts__cuda_fail(err, TS_ERR_USAGE, "cuda clip: no parameter %s", name);
    return -1;
}

ts_status ts_cuda_clip_set(ts_cuda_clip *m, const char *name, const float *host, int64_t n,
                           ts_err *err) {
    int i = lookup(m, name, n, err);
    if (i < 0) return TS_ERR_USAGE;
    TRY(ts_cuda_upload(m->g, Wf(m, i), host, (size_t)n * 4, err));
    return ts_cuda_sync(m->g, err);
}

ts_status ts_cuda_clip_get(ts_cuda_clip *m, const char *name, int grad, float *host, int64_t n,
                           ts_err *err) {
    int i = lookup(m, name, n, err);
    if (i < 0) return TS_ERR_USAGE;
    return ts_cuda_download(m->g, host, grad ? Gf(m, i) : Wf(m, i), (size_t)n * 4, err);
}

ts_status ts_cuda_clip_set_moment(ts_cuda_clip *m, const char *name, int slot,
                                  const float *host, int64_t n, ts_err *err) {
    int i = lookup(m, name, n, err);
    if (i < 0) return TS_ERR_USAGE;
    if (slot != 0 && slot != 1)
        return ts__cuda_fail(err, TS_ERR_USAGE, "cuda clip: moment slot %d", slot);
    TRY(ts_cuda_upload(m->g, (slot ? m->V : m->M) + m->p[i].off, host, (size_t)n * 4, err));
    return ts_cuda_sync(m->g, err);
}

ts_status ts_cuda_clip_get_moment(ts_cuda_clip *m, const char *name, int slot, float *host,
                                  int64_t n, ts_err *err) {
    int i = lookup(m, name, n, err);
    if (i < 0) return TS_ERR_USAGE;
    if (slot != 0 && slot != 1)
        return ts__cuda_fail(err, TS_ERR_USAGE, "cuda clip: moment slot %d", slot);
    return ts_cuda_download(m->g, host, (slot ? m->V : m->M) + m->p[i].off, (size_t)n * 4, err);
}

int ts_cuda_clip_tensor_core_towers(const ts_cuda_clip *m) {
    return (m->vis.flash ? 1 : 0) | (m->txt.flash ? 2 : 0);
}

int ts_cuda_clip_param_decayed(const ts_cuda_clip *m, int i) {
    return i >= 0 && i < m->np ? m->p[i].decay : 0;
}

ts_status ts_cuda_clip_params_ready(ts_cuda_clip *m, ts_err *err) {
    if (m->dt == TS_CUDA_BF16) TRY(ts_cuda_to_bf16(m->g, m->P, m->Pb, m->total, err));
    return TS_OK;
}

/* y (M, N) = op(a) op(b) + bias, in the model's operand type */
static ts_status mm(ts_cuda_clip *m, const void *a, const void *b, const float *bias, float *y,
                    int64_t M, int64_t N, int64_t K, int flags, float beta, ts_err *err) {
    return ts_cuda_matmul(m->g, m->dt, a, b, bias, y, M, N, K, flags, beta, err);
}

/* float32 products (the small ones around the loss) */
static ts_status mm32(ts_cuda_clip *m, const float *a, const float *b, float *y, int64_t M,
                      int64_t N, int64_t K, int flags, float beta, ts_err *err) {
    return ts_cuda_matmul(m->g, TS_CUDA_F32, a, b, NULL, y, M, N, K, flags, beta, err);
}

/* layernorm, head layout and GELU writing a product operand (bf16, or float32) */
static ts_status ln_op(ts_cuda_clip *m, const float *x, int w, int b, void *y, float *mean,
                       float *rstd, int64_t R, int64_t C, ts_err *err) {
    if (m->dt == TS_CUDA_BF16)
        return ts_cuda_layernorm_bf16(m->g, x, Wf(m, w), Wf(m, b), (uint16_t *)y, mean, rstd, R,
                                      C, 1e-5f, err);
    return ts_cuda_layernorm(m->g, x, Wf(m, w), Wf(m, b), (float *)y, mean, rstd, R, C, 1e-5f,
                             err);
}

/* y = gelu(x), both in the operand type (the MLP's pre-activation is written by a product) */
static ts_status gelu_op(ts_cuda_clip *m, const void *x, void *y, int64_t n, ts_err *err) {
    if (m->dt == TS_CUDA_BF16)
        return ts_cuda_gelu_bf16io(m->g, (const uint16_t *)x, (uint16_t *)y, n, err);
    return ts_cuda_gelu(m->g, (const float *)x, (float *)y, n, err);
}

/* d = d gelu'(x) in place, both in the operand type */
static ts_status gelu_backward_op(ts_cuda_clip *m, const void *x, void *d, int64_t n,
                                  ts_err *err) {
    if (m->dt == TS_CUDA_BF16)
        return ts_cuda_gelu_backward_bf16io(m->g, (const uint16_t *)x, (const uint16_t *)d,
                                            (uint16_t *)d, n, err);
    return ts_cuda_gelu_backward_set(m->g, (const float *)x, (const float *)d, (float *)d, NULL,
                                     n, err);
}

/* the gradient of parameter `bias` += the column sums of dy (R, C) in the operand type */
static ts_status bias_grad_op(ts_cuda_clip *m, const void *dy, int bias, int64_t R, int64_t C,
                              ts_err *err) {
    if (m->dt == TS_CUDA_BF16)
        return ts_cuda_bias_grad_bf16(m->g, (const uint16_t *)dy, Gf(m, bias), R, C, err);
    return ts_cuda_bias_grad(m->g, (const float *)dy, Gf(m, bias), R, C, err);
}

/* y = op(a) op(b) (+ parameter `bias`; -1: none), written in the operand type: a product whose
 * result is next read as an operand */
static ts_status mm_to_op(ts_cuda_clip *m, const void *a, const void *b, int bias, void *y,
                          int64_t M, int64_t N, int64_t K, int flags, ts_err *err) {
    ts_cuda_mm o;
    memset(&o, 0, sizeof o);
    o.out = m->dt;
    o.bias = bias >= 0 ? Wo(m, bias) : NULL;
    return ts_cuda_matmul_ex(m->g, m->dt, a, b, y, M, N, K, flags, &o, err);
}

/* y (float32) = op(a) op(b) + parameter `bias` + c: a residual branch and its sum in one */
static ts_status mm_residual(ts_cuda_clip *m, const void *a, const void *b, int bias,
                             const float *c, float *y, int64_t M, int64_t N, int64_t K,
                             int flags, ts_err *err) {
    ts_cuda_mm o;
    memset(&o, 0, sizeof o);
    o.out = TS_CUDA_F32;
    o.bias = Wf(m, bias);
    o.c = c;
    o.beta = 1.0f;
    return ts_cuda_matmul_ex(m->g, m->dt, a, b, y, M, N, K, flags, &o, err);
}

/* Where one head's matrix of attention lies: from p (bytes), head h at element h * head, batch
 * row b at b * stride, rows ld apart. q, k and v are read in place from in_proj's packed
 * (B T, 3 W) rows, the output and its gradient are written into packed (B T, W) rows, and the
 * scores and probabilities are (B, H, T, Tp) blocks. */
typedef struct {
    const void *p;
    int64_t ld, stride, head;
} view;

/* op(a_h) op(b_h) for every head h, each one product batched over the B rows of the batch,
 * into y_h in type `out` (a and b are operands) */
static ts_status per_head(ts_cuda_clip *m, const tower *t, view a, view b, view y,
                          ts_cuda_dtype out, int64_t M, int64_t N, int64_t K, int flags,
                          ts_err *err) {
    size_t eo = out == TS_CUDA_BF16 ? 2 : 4;
    ts_cuda_mm o;
    memset(&o, 0, sizeof o);
    o.out = out;
    o.count = (int)m->B;
    o.stride_a = a.stride, o.stride_b = b.stride, o.stride_y = y.stride;
    o.ld_a = a.ld, o.ld_b = b.ld, o.ld_y = y.ld;
    for (int64_t h = 0; h < t->H; h++)
        TRY(ts_cuda_matmul_ex(m->g, m->dt, (const char *)a.p + (size_t)(h * a.head) * m->esz,
                              (const char *)b.p + (size_t)(h * b.head) * m->esz,
                              (char *)y.p + (size_t)(h * y.head) * eo, M, N, K, flags, &o,
                              err));
    return TS_OK;
}

/* the views of a tower's packed q, k, v (in_proj's rows, or their gradient's) and of a
 * (B, H, T, Tp) block of scores */
static view qkv_view(const ts_cuda_clip *m, const tower *t, const void *base, int part) {
    int64_t W = t->W;
    view v = { (const char *)base + (size_t)(part * W) * m->esz, 3 * W, t->T * 3 * W, W / t->H };
    return v;
}

static view score_view(const tower *t, const void *base) {
    int64_t Tp = pitch(t->T);
    view v = { base, Tp, t->H * t->T * Tp, t->T * Tp };
    return v;
}

static view rows_view(const tower *t, const void *base) {
    view v = { base, t->W, t->T * t->W, t->W / t->H };
    return v;
}

/* the blocks, from t->a[0].xin (written by the caller) to t->x_last */
static ts_status tower_forward(ts_cuda_clip *m, tower *t, ts_err *err) {
    ts_cuda *g = m->g;
    int64_t B = m->B, T = t->T, W = t->W, H = t->H, D = W / H, N = t->N;
    int64_t BH = B * H, Tp = pitch(T);
    float scale = 1.0f / sqrtf((float)D);
    m->phase = t->causal ? "text fwd" : "image fwd";
    for (int64_t l = 0; l < t->L; l++) {
        layer_acts *a = &t->a[l];
        const int *p = t->lp + l * NLAYERP;
        float *xout = l + 1 < t->L ? t->a[l + 1].xin : t->x_last;
        /* x + attn(ln_1(x)) */
        TRYP(ln_op(m, a->xin, p[LN1W], p[LN1B], a->ln1, a->mean1, a->rstd1, N, W, err));
        TRYP(mm_to_op(m, a->ln1, Wo(m, p[QKVW]), p[QKVB], a->qkv, N, 3 * W, W, TS_TRANS_B,
                      err));
        if (t->flash) {
            TRYP(ts_cuda_attention_packed(g, (const uint16_t *)a->qkv, (uint16_t *)a->attn,
                                          a->lse, B, T, H, t->causal, scale, err));
        } else {
            /* scores_h = q_h k_h^T, softmax, out_h = p_h v_h */
            TRYP(per_head(m, t, qkv_view(m, t, a->qkv, 0), qkv_view(m, t, a->qkv, 1),
                          score_view(t, m->tA), TS_CUDA_F32, T, T, D, TS_TRANS_B, err));
            if (m->dt == TS_CUDA_BF16)
                TRYP(ts_cuda_attn_softmax_bf16(g, m->tA, a->pf, (uint16_t *)a->pop, BH * T, T,
                                               Tp, scale, t->causal, err));
            else
                TRYP(ts_cuda_attn_softmax(g, m->tA, a->pf, BH * T, T, Tp, scale, t->causal,
                                          err));
            TRYP(per_head(m, t, score_view(t, a->pop), qkv_view(m, t, a->qkv, 2),
                          rows_view(t, a->attn), m->dt, T, D, T, 0, err));
        }
        TRYP(mm_residual(m, a->attn, Wo(m, p[OUTW]), p[OUTB], a->xin, a->xmid, N, W, W,
                         TS_TRANS_B, err));
        /* + mlp(ln_2(x)) */
        TRYP(ln_op(m, a->xmid, p[LN2W], p[LN2B], a->ln2, a->mean2, a->rstd2, N, W, err));
        TRYP(mm_to_op(m, a->ln2, Wo(m, p[FCW]), p[FCB], a->h, N, 4 * W, W, TS_TRANS_B, err));
        TRYP(gelu_op(m, a->h, a->g, N * 4 * W, err));
        TRYP(mm_residual(m, a->g, Wo(m, p[PROJW]), p[PROJB], a->xmid, xout, N, W, 4 * W,
                         TS_TRANS_B, err));
    }
    return TS_OK;
}

/* The backward of x -> layernorm (gain lnw, bias lnb) -> ln_out -> product with parameter w
 * (bias b) of `cols` outputs, from dy (the product's output gradient, an operand, N rows): the
 * bias and weight gradients, then the layernorm's, added to m->dres (and its bf16 copy odres) */
static ts_status ln_linear_backward(ts_cuda_clip *m, const void *dy, int w, int b,
                                    const void *ln_out, const float *x, int lnw, int lnb,
                                    const float *mean, const float *rstd, uint16_t *odres,
                                    int64_t N, int64_t W, int64_t cols, ts_err *err) {
    TRYP(bias_grad_op(m, dy, b, N, cols, err));
    TRYP(mm(m, dy, Wo(m, w), NULL, m->tC, N, W, cols, 0, 0.0f, err));
    TRYP(mm(m, dy, ln_out, NULL, Gf(m, w), cols, W, N, TS_TRANS_A, 1.0f, err));
    TRYP(ts_cuda_layernorm_backward_bf16(m->g, x, Wf(m, lnw), mean, rstd, m->tC, m->dres, odres,
                                         Gf(m, lnw), Gf(m, lnb), N, W, err));
    return TS_OK;
}

/* the backward of the blocks: m->dres holds d(output of the last block) and ends as
 * d(t->a[0].xin). In bf16 mode m->odres follows it as the bf16 operand of the products, written
 * by the layernorm backward that last added to it. */
static ts_status tower_backward(ts_cuda_clip *m, tower *t, ts_err *err) {
    ts_cuda *g = m->g;
    int64_t B = m->B, T = t->T, W = t->W, H = t->H, D = W / H, N = t->N;
    int64_t BH = B * H, Tp = pitch(T);
    float scale = 1.0f / sqrtf((float)D);
    int bf = m->dt == TS_CUDA_BF16;
    uint16_t *odres = bf ? (uint16_t *)m->odres : NULL;
    const void *dro = bf ? (const void *)m->odres : (const void *)m->dres;
    m->phase = t->causal ? "text bwd" : "image bwd";
    if (bf) TRYP(ts_cuda_to_bf16(g, m->dres, odres, N * W, err));
    for (int64_t l = t->L - 1; l >= 0; l--) {
        layer_acts *a = &t->a[l];
        const int *p = t->lp + l * NLAYERP;
        /* the MLP: dg = dres proj_w, then in place d(pre-activation) = dg gelu'(h) */
        void *dg = bf ? m->o1 : (void *)m->tA;
        TRYP(mm_to_op(m, dro, Wo(m, p[PROJW]), -1, dg, N, 4 * W, W, 0, err));
        TRYP(mm(m, dro, a->g, NULL, Gf(m, p[PROJW]), W, 4 * W, N, TS_TRANS_A, 1.0f, err));
        TRYP(ts_cuda_bias_grad(g, m->dres, Gf(m, p[PROJB]), N, W, err));
        TRYP(gelu_backward_op(m, a->h, dg, N * 4 * W, err));
        TRY(ln_linear_backward(m, dg, p[FCW], p[FCB], a->ln2, a->xmid, p[LN2W], p[LN2B],
                               a->mean2, a->rstd2, odres, N, W, 4 * W, err));
        /* attention */
        TRYP(mm(m, dro, a->attn, NULL, Gf(m, p[OUTW]), W, W, N, TS_TRANS_A, 1.0f, err));
        TRYP(ts_cuda_bias_grad(g, m->dres, Gf(m, p[OUTB]), N, W, err));
        /* d(out) packed, then d(in_proj's output) dx, an operand, where in_proj wrote it */
        void *dattn = bf ? m->o3 : (void *)m->tC;
        void *dx = bf ? m->o1 : (void *)m->tD;
        TRYP(mm_to_op(m, dro, Wo(m, p[OUTW]), -1, dattn, N, W, W, 0, err));
        if (t->flash) {
            /* (bf16 only) dq is summed in float32 in tD, delta goes to tB */
            TRYP(ts_cuda_attention_packed_backward(g, (const uint16_t *)a->qkv,
                                                   (const uint16_t *)a->attn, a->lse,
                                                   (const uint16_t *)dattn, (uint16_t *)dx,
                                                   m->tD, m->tB, B, T, H, t->causal, scale,
                                                   err));
        } else {
            /* per head: dp = dout v^T, dv = p^T dout, ds = softmax's backward (scaled),
             * dq = ds k, dk = ds^T q */
            TRYP(per_head(m, t, rows_view(t, dattn), qkv_view(m, t, a->qkv, 2),
                          score_view(t, m->tB), TS_CUDA_F32, T, T, D, TS_TRANS_B, err));
            TRYP(per_head(m, t, score_view(t, a->pop), rows_view(t, dattn),
                          qkv_view(m, t, dx, 2), m->dt, T, D, T, TS_TRANS_A, err));
            const void *ds = m->tB;
            if (bf) {
                TRYP(ts_cuda_attn_softmax_backward_bf16(g, a->pf, m->tB, (uint16_t *)m->o2,
                                                        BH * T, T, Tp, scale, err));
                ds = m->o2;
            } else {
                TRYP(ts_cuda_attn_softmax_backward(g, a->pf, m->tB, m->tB, BH * T, T, Tp,
                                                   scale, err));
            }
            TRYP(per_head(m, t, score_view(t, ds), qkv_view(m, t, a->qkv, 1),
                          qkv_view(m, t, dx, 0), m->dt, T, D, T, 0, err));
            TRYP(per_head(m, t, score_view(t, ds), qkv_view(m, t, a->qkv, 0),
                          qkv_view(m, t, dx, 1), m->dt, T, D, T, TS_TRANS_A, err));
        }
        TRY(ln_linear_backward(m, dx, p[QKVW], p[QKVB], a->ln1, a->xin, p[LN1W], p[LN1B],
                               a->mean1, a->rstd1, odres, N, W, 3 * W, err));
    }
    return TS_OK;
}

/* pooled row -> layernorm -> projection -> L2 normalised features */
static ts_status head_forward(ts_cuda_clip *m, tower *t, int lnw, int lnb, int proj,
                              ts_err *err) {
    int64_t B = m->B, W = t->W, E = m->c.embed;
    TRYP(ts_cuda_gather_rows(m->g, t->x_last, t->pool_idx, t->pooled, B, t->T, W, err));
    TRYP(ts_cuda_layernorm(m->g, t->pooled, Wf(m, lnw), Wf(m, lnb), t->lnp, t->pmean, t->prstd,
                          B, W, 1e-5f, err));
    TRYP(mm32(m, t->lnp, Wf(m, proj), t->feat, B, E, W, 0, 0.0f, err));
    return ts_cuda_l2_normalize(m->g, t->feat, t->featn, t->fnorm, B, E, err);
}

/* dfeatn (B, E) in m->d1 -> m->dres = d(output of the last block) */
static ts_status head_backward(ts_cuda_clip *m, tower *t, int lnw, int lnb, int proj,
                               const float *dfeatn, ts_err *err) {
    int64_t B = m->B, W = t->W, E = m->c.embed;
    float *dfeat = m->d2, *dlnp = m->d2 + B * E, *dpooled = dlnp + B * W;
    TRYP(ts_cuda_zero(m->g, dfeat, (size_t)(B * E) * 4, err));
    TRYP(ts_cuda_l2_normalize_backward(m->g, t->featn, t->fnorm, dfeatn, dfeat, B, E, err));
    TRYP(mm32(m, dfeat, Wf(m, proj), dlnp, B, W, E, TS_TRANS_B, 0.0f, err));
    TRYP(mm32(m, t->lnp, dfeat, Gf(m, proj), W, E, B, TS_TRANS_A, 1.0f, err));
    TRYP(ts_cuda_zero(m->g, dpooled, (size_t)(B * W) * 4, err));
    TRYP(ts_cuda_layernorm_backward(m->g, t->pooled, Wf(m, lnw), t->pmean, t->prstd, dlnp,
                                   dpooled, Gf(m, lnw), Gf(m, lnb), B, W, err));
    TRYP(ts_cuda_zero(m->g, m->dres, (size_t)(t->N * W) * 4, err));
    return ts_cuda_gather_rows_backward(m->g, dpooled, t->pool_idx, m->dres, B, t->T, W, err);
}

ts_status ts_cuda_clip_forward_backward(ts_cuda_clip *m, const float *images,
                                        const int32_t *ids, float *loss, ts_err *err) {
    ts_cuda *g = m->g;
    const ts_cuda_clip_config *c = &m->c;
    int64_t B = m->B, P = c->patch, S = c->image_size, np = (S / P) * (S / P);
    int64_t W = c->width, TW = c->text_width, T = c->context, E = c->embed;
    tower *vt = &m->vis, *tt = &m->txt;
    /* the text rows and where each one is pooled: its largest id (argmax, the first on ties) */
    int32_t *idx = (int32_t *)malloc((size_t)B * 4);
    for (int64_t b = 0; b < B; b++) {
        int64_t best = 0;
        for (int64_t j = 0; j < T; j++) {
            if (ids[b * T + j] < 0 || ids[b * T + j] >= c->vocab) {
                free(idx);
                return ts__cuda_fail(err, TS_ERR_USAGE, "cuda clip: token %d at row %lld, "
                                     "position %lld, is outside the vocabulary of %lld",
                                     ids[b * T + j], (long long)b, (long long)j,
                                     (long long)c->vocab);
            }
            if (ids[b * T + j] > ids[b * T + best]) best = j;
        }
        idx[b] = (int32_t)best;
    }
    ts_status st = ts_cuda_upload(g, m->ids, ids, (size_t)(B * T) * 4, err);
    if (!st) st = ts_cuda_upload(g, tt->pool_idx, idx, (size_t)B * 4, err);
    if (!st) st = ts_cuda_sync(g, err); /* the host buffers may go */
    free(idx);
    if (st) return st;
    if (m->prof) {
        cudaStreamSynchronize(g->stream);
        m->last = now_s();
    }
    m->phase = "rest";
    TRYP(ts_cuda_zero(g, m->G, (size_t)m->total * 4, err));

    /* image tower */
    float *pf = op_target(m, m->patches, m->patches_f);
    TRYP(ts_cuda_patchify(g, images, pf, B, S, P, err));
    TRYP(to_op(m, pf, m->patches, B * np * 3 * P * P, err));
    TRYP(mm(m, m->patches, Wo(m, m->vconv), NULL, m->tA, B * np, W, 3 * P * P, TS_TRANS_B, 0.0f,
           err));
    TRYP(ts_cuda_vit_tokens(g, m->tA, Wf(m, m->vcls), Wf(m, m->vpos), m->x0v, B, vt->T, W, err));
    TRYP(ts_cuda_layernorm(g, m->x0v, Wf(m, m->vlnpre_w), Wf(m, m->vlnpre_b), vt->a[0].xin,
                           m->premean, m->prerstd, vt->N, W, 1e-5f, err));
    TRYP(tower_forward(m, vt, err));
    m->phase = "rest";
    TRYP(head_forward(m, vt, m->vlnpost_w, m->vlnpost_b, m->vproj, err));
    /* text tower */
    TRYP(ts_cuda_embed(g, m->ids, Wf(m, m->tok), Wf(m, m->tpos), tt->a[0].xin, B, T, TW, err));
    TRYP(tower_forward(m, tt, err));
    m->phase = "rest";
    TRYP(head_forward(m, tt, m->lnf_w, m->lnf_b, m->tproj, err));

    m->phase = "loss";
    /* ClipLoss: the mean of the two directions' cross-entropies of exp(logit_scale) cosines */
    const float *ls = Wf(m, m->lscale);
    TRYP(mm32(m, vt->featn, tt->featn, m->raw_i, B, B, E, TS_TRANS_B, 0.0f, err));
    TRYP(mm32(m, tt->featn, vt->featn, m->raw_t, B, B, E, TS_TRANS_B, 0.0f, err));
    TRYP(ts_cuda_exp_scale(g, m->raw_i, ls, m->logit_i, B * B, err));
    TRYP(ts_cuda_exp_scale(g, m->raw_t, ls, m->logit_t, B * B, err));
    TRYP(ts_cuda_cross_entropy(g, m->logit_i, m->labels, m->loss, B, B, -100, 0.0f, err));
    TRYP(ts_cuda_cross_entropy(g, m->logit_t, m->labels, m->loss + 1, B, B, -100, 0.0f, err));

    /* backward of the loss, into d(normalised features): d1 = image's, d1 + B E = text's */
    float *dli = m->tA, *dlt = m->tA + B * B, *dri = m->tB, *drt = m->tB + B * B;
    float *dimg = m->d1, *dtxt = m->d1 + B * E;
    TRYP(ts_cuda_zero(g, m->tA, (size_t)(2 * B * B) * 4, err));
    TRYP(ts_cuda_zero(g, m->tB, (size_t)(2 * B * B) * 4, err));
    TRYP(ts_cuda_cross_entropy_backward(g, m->logit_i, m->labels, m->dhalf, dli, B, B, -100,
                                       0.0f, err));
    TRYP(ts_cuda_cross_entropy_backward(g, m->logit_t, m->labels, m->dhalf, dlt, B, B, -100,
                                       0.0f, err));
    float *dls = Gf(m, m->lscale);
    TRYP(ts_cuda_exp_scale_backward(g, m->raw_i, ls, dli, dri, dls, B * B, err));
    TRYP(ts_cuda_exp_scale_backward(g, m->raw_t, ls, dlt, drt, dls, B * B, err));
    /* raw_i = I T^T, raw_t = T I^T: dI = dri T + drt^T T, dT = drt I + dri^T I */
    TRYP(mm32(m, dri, tt->featn, dimg, B, E, B, 0, 0.0f, err));
    TRYP(mm32(m, drt, tt->featn, dimg, B, E, B, TS_TRANS_A, 1.0f, err));
    TRYP(mm32(m, drt, vt->featn, dtxt, B, E, B, 0, 0.0f, err));
    TRYP(mm32(m, dri, vt->featn, dtxt, B, E, B, TS_TRANS_A, 1.0f, err));

    m->phase = "rest";
    /* text tower backward */
    TRYP(head_backward(m, tt, m->lnf_w, m->lnf_b, m->tproj, dtxt, err));
    TRYP(tower_backward(m, tt, err));
    m->phase = "rest";
    TRYP(ts_cuda_embed_backward(g, m->ids, m->dres, Gf(m, m->tok), Gf(m, m->tpos), B, T, TW,
                               err));
    /* image tower backward */
    TRYP(head_backward(m, vt, m->vlnpost_w, m->vlnpost_b, m->vproj, dimg, err));
    TRYP(tower_backward(m, vt, err));
    m->phase = "rest";
    TRYP(ts_cuda_zero(g, m->tC, (size_t)(vt->N * W) * 4, err));
    TRYP(ts_cuda_layernorm_backward(g, m->x0v, Wf(m, m->vlnpre_w), m->premean, m->prerstd,
                                   m->dres, m->tC, Gf(m, m->vlnpre_w), Gf(m, m->vlnpre_b), vt->N,
                                   W, err));
    TRYP(ts_cuda_vit_tokens_backward(g, m->tC, m->tA, Gf(m, m->vcls), Gf(m, m->vpos), B, vt->T, W,
                                    err));
    const void *o;
    TRYP(op_of(m, m->tA, m->o1, B * np * W, &o, err));
    TRYP(mm(m, o, m->patches, NULL, Gf(m, m->vconv), W, 3 * P * P, B * np, TS_TRANS_A, 1.0f,
           err));
    if (loss) {
        float l2[2];
        TRYP(ts_cuda_download(g, l2, m->loss, sizeof l2, err));
        *loss = 0.5f * (l2[0] + l2[1]);
    }
    return TS_OK;
}

ts_status ts_cuda_clip_adamw(ts_cuda_clip *m, int64_t t, float lr, float beta1, float beta2,
                             float eps, float weight_decay, ts_err *err) {
    m->phase = "optimizer";
    TRYP(ts_cuda_adamw(m->g, m->P, m->G, m->M, m->V, m->decayed, t, lr, beta1, beta2, eps,
                      weight_decay, err));
    TRYP(ts_cuda_adamw(m->g, m->P + m->decayed, m->G + m->decayed, m->M + m->decayed,
                      m->V + m->decayed, m->total - m->decayed, t, lr, beta1, beta2, eps, 0.0f,
                      err));
    TRYP(ts_cuda_clamp(m->g, Wf(m, m->lscale), 1, 0.0f, 4.60517019f, err));
    TRYP(ts_cuda_clip_params_ready(m, err));
    return TS_OK;
}

void ts_cuda_clip_profile(ts_cuda_clip *m, int on) {
    m->prof = on;
    if (on) m->npe = 0;
}

void ts_cuda_clip_profile_print(const ts_cuda_clip *m, FILE *f, int steps) {
    double total = 0;
    for (int i = 0; i < m->npe; i++) total += m->pe[i].s;
    fprintf(f, "%-52s %9s %7s %6s\n", "phase and call (a wait after each)", "ms/step", "calls",
            "share");
    for (int i = 0; i < m->npe; i++)
        fprintf(f, "%-52s %9.3f %7.1f %5.1f%%\n", m->pe[i].label, 1e3 * m->pe[i].s / steps,
                (double)m->pe[i].n / steps, 100 * m->pe[i].s / (total > 0 ? total : 1));
    fprintf(f, "%-52s %9.3f\n", "total", 1e3 * total / steps);
}
