/* gpu_clip_step.c: tessera's CLIP training step on the GPU (core/cuda/clip_model.cu), for
 * bench/gpu_clip_step.py, which writes open_clip's weights and the reference.
 *
 *   --check DIR   loads DIR/weights.bin (+ .idx: "name numel" lines, float32 in file order; the
 *                 batch as _batch.images and _batch.text), runs one forward and backward and
 *                 writes the loss and every gradient to DIR/tessera.bin (+ .idx) for the
 *                 driver to compare with PyTorch's float64 ones (float32 products; --bf16 for
 *                 bf16 operands, written to DIR/tessera_bf16.*)
 *   --time        loads the weights (--weights DIR), draws a batch of --batch random images
 *                 and captions, and times --steps training steps (forward, backward, AdamW as
 *                 open_clip's main.py sets it, the logit-scale clamp) after --warmup, each
 *                 between two waits for the device; prints one JSON line
 * Needs only CUDA (bench/gpu_check.sh builds it with nvcc).
 * --attention flash: the mma.sync tensor-core kernels (core/cuda/attn_mma.cu) where they apply
 * (bf16 products, heads of 64); batched (the default): per-head cuBLASLt products around a
 * row softmax.
 * Usage: gpu_clip_step --model vit-b-16|tiny (--check DIR [--bf16] | --time --weights DIR
 *        [--batch 256] [--steps 20] [--warmup 5]) [--attention flash|batched] [--arena-gib N]
 */
#include "../core/cuda/ts_cuda.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* the numbers of bench/gpu_clip_step.py's MODELS */
static const struct {
    const char *name;
    ts_cuda_clip_config c;
} MODELS[] = {
    { "vit-b-16", { 224, 16, 768, 12, 12, 77, 49408, 512, 12, 8, 512, 0 } },
    { "tiny", { 32, 8, 64, 2, 4, 16, 300, 64, 2, 4, 64, 0 } },
};

typedef struct {
    char **names;
    int64_t *n, *off;
    int count;
    float *data;
} blob;

static void die(const char *what, ts_status st, const ts_err *err) {
    if (st) {
        fprintf(stderr, "gpu_clip_step: %s: %s\n", what, err->msg);
        exit(1);
    }
}

static int read_blob(const char *prefix, blob *b) {
    char path[4200];
    memset(b, 0, sizeof *b);
    snprintf(path, sizeof path, "%s.idx", prefix);
    FILE *f = fopen(path, "r");
    if (!f) {
        perror(path);
        return -1;
    }
    char name[512];
    long long n;
    int64_t total = 0;
    while (fscanf(f, "%511s %lld", name, &n) == 2) {
        b->names = realloc(b->names, (size_t)(b->count + 1) * sizeof *b->names);
        b->n = realloc(b->n, (size_t)(b->count + 1) * sizeof *b->n);
        b->off = realloc(b->off, (size_t)(b->count + 1) * sizeof *b->off);
        b->names[b->count] = strdup(name);
        b->n[b->count] = n;
        b->off[b->count] = total;
        total += n;
        b->count++;
    }
    fclose(f);
    snprintf(path, sizeof path, "%s.bin", prefix);
    f = fopen(path, "rb");
    if (!f) {
        perror(path);
        return -1;
    }
    b->data = malloc((size_t)(total ? total : 1) * sizeof(float));
    size_t got = fread(b->data, sizeof(float), (size_t)total, f);
    int extra = fgetc(f) != EOF;
    fclose(f);
    if (got != (size_t)total || extra) {
        fprintf(stderr, "gpu_clip_step: %s holds %s than its index's %lld floats\n", path,
                got != (size_t)total ? "fewer" : "more", (long long)total);
        return -1;
    }
    return 0;
}

static const float *blob_get(const blob *b, const char *name, int64_t n) {
    for (int i = 0; i < b->count; i++)
        if (!strcmp(b->names[i], name)) {
            if (b->n[i] != n) {
                fprintf(stderr, "gpu_clip_step: %s has %lld values in the weights, the model "
                                "%lld\n", name, (long long)b->n[i], (long long)n);
                exit(1);
            }
            return b->data + b->off[i];
        }
    fprintf(stderr, "gpu_clip_step: %s is not in the weights\n", name);
    exit(1);
}

static void load(ts_cuda_clip *m, const blob *w) {
    ts_err err = { 0 };
    int64_t n;
    const char *name;
    for (int i = 0; (name = ts_cuda_clip_param(m, i, &n)); i++)
        die(name, ts_cuda_clip_set(m, name, blob_get(w, name, n), n, &err), &err);
    die("parameters", ts_cuda_clip_params_ready(m, &err), &err);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    const char *model = "vit-b-16", *check = NULL, *weights = NULL;
    int bf16 = 0, timing = 0, steps = 20, warmup = 5, flash = 0;
    long long batch = 256;
    double arena_gib = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--bf16")) bf16 = 1;
        else if (!strcmp(a, "--time")) timing = 1;
        else if (v && !strcmp(a, "--model")) model = v, i++;
        else if (v && !strcmp(a, "--check")) check = v, i++;
        else if (v && !strcmp(a, "--weights")) weights = v, i++;
        else if (v && !strcmp(a, "--batch")) batch = atoll(v), i++;
        else if (v && !strcmp(a, "--steps")) steps = atoi(v), i++;
        else if (v && !strcmp(a, "--warmup")) warmup = atoi(v), i++;
        else if (v && !strcmp(a, "--arena-gib")) arena_gib = atof(v), i++;
        else if (v && !strcmp(a, "--attention") && (!strcmp(v, "flash") || !strcmp(v, "batched")))
            flash = !strcmp(v, "flash"), i++;
        else {
            fprintf(stderr, "gpu_clip_step: unknown option %s\n", a);
            return 2;
        }
    }
    ts_cuda_clip_config cfg_copy, *cfg = NULL;
    for (size_t i = 0; i < sizeof MODELS / sizeof *MODELS; i++)
        if (!strcmp(MODELS[i].name, model)) cfg_copy = MODELS[i].c, cfg = &cfg_copy;
    if (cfg) cfg->flash_attention = flash;
    if (!cfg || (!check && !(timing && weights)) || steps < 1 || warmup < 0 || batch < 2) {
        fprintf(stderr, "usage: gpu_clip_step --model vit-b-16|tiny (--check DIR [--bf16] | "
                        "--time --weights DIR [--batch 256] [--steps 20] [--warmup 5]) "
                        "[--attention flash|batched] [--arena-gib N]\n");
        return 2;
    }
    char prefix[4096];
    snprintf(prefix, sizeof prefix, "%s/weights", check ? check : weights);
    blob w;
    if (read_blob(prefix, &w)) return 1;
    int64_t S = cfg->image_size, T = cfg->context;
    if (check) {
        int64_t n = 0;
        for (int i = 0; i < w.count; i++)
            if (!strcmp(w.names[i], "_batch.text")) n = w.n[i];
        batch = n / T;
        if (batch < 2) {
            fprintf(stderr, "gpu_clip_step: %s holds no batch (_batch.text)\n", prefix);
            return 1;
        }
    }
    if (arena_gib <= 0) arena_gib = timing ? 70 : 8;
    ts_err err = { 0 };
    ts_cuda *g;
    die("open", ts_cuda_open(&g, 0, (size_t)(arena_gib * (1u << 30)), &err), &err);
    ts_cuda_clip *m;
    die("model", ts_cuda_clip_new(g, cfg, batch, bf16 || timing ? TS_CUDA_BF16 : TS_CUDA_F32, &m,
                                  &err), &err);
    load(m, &w);
    float *d_img = ts_cuda_alloc(g, (size_t)(batch * 3 * S * S) * 4);
    int32_t *ids = malloc((size_t)(batch * T) * sizeof *ids);
    float *img = malloc((size_t)(batch * 3 * S * S) * sizeof *img);
    if (!d_img) {
        fprintf(stderr, "gpu_clip_step: the arena is full\n");
        return 1;
    }
    if (check) {
        memcpy(img, blob_get(&w, "_batch.images", batch * 3 * S * S),
               (size_t)(batch * 3 * S * S) * sizeof *img);
        const float *t = blob_get(&w, "_batch.text", batch * T);
        for (int64_t i = 0; i < batch * T; i++) ids[i] = (int32_t)t[i];
    } else { /* uniform images in [-1, 1), captions ending in the largest id, as the driver's */
        uint64_t r = 0x9e3779b97f4a7c15ull;
        for (int64_t i = 0; i < batch * 3 * S * S; i++) {
            r ^= r << 13, r ^= r >> 7, r ^= r << 17;
            img[i] = (float)((double)(r >> 11) / 9007199254740992.0 * 2 - 1);
        }
        for (int64_t b = 0; b < batch; b++) {
            r ^= r << 13, r ^= r >> 7, r ^= r << 17;
            int64_t end = 2 + (int64_t)(r % (uint64_t)(T - 2));
            for (int64_t j = 0; j < T; j++) {
                r ^= r << 13, r ^= r >> 7, r ^= r << 17;
                ids[b * T + j] = j == 0 ? (int32_t)(cfg->vocab - 2)
                               : j < end ? (int32_t)(r % (uint64_t)(cfg->vocab - 2))
                               : j == end ? (int32_t)(cfg->vocab - 1) : 0;
            }
        }
    }
    die("images", ts_cuda_upload(g, d_img, img, (size_t)(batch * 3 * S * S) * 4, &err), &err);
    die("images", ts_cuda_sync(g, &err), &err);

    if (check) {
        float loss;
        die("step", ts_cuda_clip_forward_backward(m, d_img, ids, &loss, &err), &err);
        char out[4096];
        snprintf(out, sizeof out, "%s/tessera%s%s", check, bf16 ? "_bf16" : "",
                 flash ? "_flash" : "");
        char path[4200];
        snprintf(path, sizeof path, "%s.bin", out);
        FILE *fb = fopen(path, "wb");
        snprintf(path, sizeof path, "%s.idx", out);
        FILE *fi = fopen(path, "w");
        if (!fb || !fi) {
            perror(out);
            return 1;
        }
        fwrite(&loss, sizeof loss, 1, fb);
        fprintf(fi, "loss 1\n");
        int64_t n;
        const char *name;
        for (int i = 0; (name = ts_cuda_clip_param(m, i, &n)); i++) {
            float *gr = malloc((size_t)n * sizeof *gr);
            die(name, ts_cuda_clip_get(m, name, 1, gr, n, &err), &err);
            fwrite(gr, sizeof *gr, (size_t)n, fb);
            fprintf(fi, "%s %lld\n", name, (long long)n);
            free(gr);
        }
        if (fclose(fb) || fclose(fi)) {
            perror(out);
            return 1;
        }
        printf("gpu_clip_step: %s, batch %lld, %s products: loss %.6f, %lld parameters, arena "
               "%.2f GiB; gradients in %s.bin\n", model, batch, bf16 ? "bf16" : "float32",
               (double)loss, (long long)ts_cuda_clip_param_total(m),
               (double)ts_cuda_arena_used(g) / (1u << 30), out);
    } else {
        double *t = malloc((size_t)steps * sizeof *t);
        float first = 0, last = 0;
        for (int s = -warmup; s < steps; s++) {
            die("sync", ts_cuda_sync(g, &err), &err);
            double t0 = now_s();
            die("step", ts_cuda_clip_forward_backward(m, d_img, ids, s == -warmup ? &first :
                                                      s == steps - 1 ? &last : NULL, &err),
                &err);
            die("adamw", ts_cuda_clip_adamw(m, s + warmup + 1, 1e-4f, 0.9f, 0.98f, 1e-6f, 0.2f,
                                            &err), &err);
            die("sync", ts_cuda_sync(g, &err), &err);
            if (s >= 0) t[s] = now_s() - t0;
        }
        /* TS_CLIP_PROFILE_STEPS=N: N more steps with the per-call breakdown, on stderr */
        const char *ps = getenv("TS_CLIP_PROFILE_STEPS");
        int psteps = ps ? atoi(ps) : 0;
        if (psteps > 0) {
            ts_cuda_clip_profile(m, 1);
            for (int s = 0; s < psteps; s++) {
                die("step", ts_cuda_clip_forward_backward(m, d_img, ids, NULL, &err), &err);
                die("adamw", ts_cuda_clip_adamw(m, warmup + steps + s + 1, 1e-4f, 0.9f, 0.98f,
                                                1e-6f, 0.2f, &err), &err);
            }
            ts_cuda_clip_profile(m, 0);
            fprintf(stderr, "tessera's step, %d steps with a wait after each call:\n", psteps);
            ts_cuda_clip_profile_print(m, stderr, psteps);
        }
        double *sorted = malloc((size_t)steps * sizeof *sorted);
        memcpy(sorted, t, (size_t)steps * sizeof *t);
        qsort(sorted, (size_t)steps, sizeof *sorted, cmp_double);
        printf("{\"s\": %.6f, \"min\": %.6f, \"max\": %.6f, \"loss\": %.6f, \"first_loss\": "
               "%.6f, \"mem_gib\": %.2f, \"device\": \"%s\"}\n", sorted[steps / 2], sorted[0],
               sorted[steps - 1], (double)last, (double)first,
               (double)ts_cuda_arena_used(g) / (1u << 30), ts_cuda_describe(g));
        free(t), free(sorted);
    }
    free(img), free(ids);
    ts_cuda_clip_free(m);
    ts_cuda_close(g);
    return 0;
}
