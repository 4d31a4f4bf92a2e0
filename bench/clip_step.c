/* clip_step.c: times one CLIP training step of tessera for bench/clip_step.py.
 *
 * Builds the image and text towers of a CLIP model from the model section of a recipe file
 * (the encoder registry of cli/, as `tessera train` does) and the CLIP objective, loads the
 * weights the driver wrote from open_clip's model (open_clip names, ts_ckpt_load_model), and
 * serves the driver over stdin/stdout so that tessera's and PyTorch's rounds interleave: "run N"
 * times N training steps and prints their seconds as one JSON line; "quit" ends. One step:
 * reset the step arena, zero the gradients, encode a fixed batch of images and token rows,
 * ClipLoss, backward, AdamW (open_clip's betas 0.9/0.98, eps 1e-6, weight decay 0.2), clamp of
 * the logit scale. The batch (random images, token rows ending in the largest id where argmax
 * pooling reads) comes from the weights file, as "_batch.images" and "_batch.text".
 *
 * What it deliberately is not: a test, or a timing of the data pipeline (the trainer's log shows
 * samples/s with the loaders). Usage:
 *   clip_step --recipe FILE --weights FILE [--batch 8] [--threads 2]
 */
#include "cli.h"
#include "tessera-impl.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv) {
    const char *recipe = NULL, *weights = NULL;
    int batch = 8, threads = 2;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--recipe")) recipe = argv[i + 1];
        else if (!strcmp(argv[i], "--weights")) weights = argv[i + 1];
        else if (!strcmp(argv[i], "--batch")) batch = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
        else {
            fprintf(stderr, "clip_step: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (!recipe || !weights || batch < 2 || threads < 1) {
        fprintf(stderr, "usage: clip_step --recipe FILE --weights FILE [--batch 8] "
                        "[--threads 2]\n");
        return 2;
    }
    omp_set_num_threads(threads);
    ts_log_set_level(TS_LOG_WARN);
    ts_err err = { 0 };
    ts_recipe *r = NULL;
    ts_params *p = ts_params_new();
    ts_encoder *vis = NULL, *txt = NULL;
    ts_enc_info vi, ti;
    ts_enc_spec vs = { 0, "visual.", 0 }, tspec = { 1, "", 0 };
    if (ts_recipe_load(recipe, &r, &err) ||
        ts_factory_encoder(r, "model.vision", p, &vs, &vis, &vi, &err) ||
        ts_factory_encoder(r, "model.text", p, &tspec, &txt, &ti, &err)) {
        fprintf(stderr, "clip_step: %s\n", err.msg);
        return 1;
    }
    ts_clip_cfg cc = ts_clip_cfg_default(0);
    ts_objective *obj = ts_objective_clip_new(p, &cc, 1.0f);
    if (ts_params_finalize(p, 1, &err) || ts_ckpt_load_model(p, weights, 1, &err)) {
        fprintf(stderr, "clip_step: %s\n", err.msg);
        return 1;
    }
    ts_optim opt;
    ts_optim_cfg oc = { TS_OPTIM_ADAMW, 1e-4f, 0.9f, 0.98f, 1e-6f, 0.2f, 0.0f };
    ts_optim_init(&opt, &oc);

    /* the fixed batch the driver wrote beside the weights, host-owned */
    int64_t B = batch, S = vi.image_size, L = ti.context_length;
    float *img = malloc((size_t)(B * 3 * S * S) * sizeof *img);
    float *idf = malloc((size_t)(B * L) * sizeof *idf);
    int32_t *ids = malloc((size_t)(B * L) * sizeof *ids);
    TS_CHECK(img && idf && ids, "out of memory");
    ts_st_file *f;
    if (ts_st_read(weights, &f, &err)) {
        fprintf(stderr, "clip_step: %s\n", err.msg);
        return 1;
    }
    const ts_st_entry *ei = ts_st_find(f, "_batch.images"), *et = ts_st_find(f, "_batch.text");
    if (!ei || !et || ei->ndim != 4 || ei->shape[0] != B || ei->shape[2] != S ||
        et->ndim != 2 || et->shape[0] != B || et->shape[1] != L) {
        fprintf(stderr, "clip_step: %s has no batch of %lld images %lldx%lld and %lld-long "
                "token rows\n", weights, (long long)B, (long long)S, (long long)S, (long long)L);
        return 1;
    }
    ts_st_entry_to_f32(ei, img);
    ts_st_entry_to_f32(et, idf);
    ts_st_close(f);
    for (int64_t i = 0; i < B * L; i++) ids[i] = (int32_t)idf[i];
    ts_ctx *c = ts_ctx_new(TS_CPU, 64u << 20, 1);
    printf("{\"kind\": \"ready\", \"params\": %lld, \"image_size\": %lld, \"context\": %lld}\n",
           (long long)ts_params_numel(p, 1), (long long)S, (long long)L);
    fflush(stdout);

    char line[256];
    while (fgets(line, sizeof line, stdin)) {
        if (!strncmp(line, "quit", 4)) break;
        if (strncmp(line, "run", 3)) continue;
        int n = atoi(line + 4);
        double t0 = now_s(), loss = 0;
        for (int k = 0; k < n; k++) {
            ts_ctx_reset(c);
            ts_params_zero_grad(p);
            ts_batch b = { .n = B };
            b.images = ts_from_f32(c, 4, TS_SHAPE(B, 3, S, S), img);
            b.text = ts_new(c, TS_I32, 2, TS_SHAPE(B, L));
            memcpy(ts_i32(b.text), ids, (size_t)(B * L) * sizeof *ids);
            ts_embeds e = { .batch = &b, .image = vis->forward(c, vis, &b, NULL),
                            .text = txt->forward(c, txt, &b, NULL) };
            ts_tensor *l = obj->loss(c, obj, &e, NULL);
            loss = ts_f32(l)[0];
            ts_backward(c, l);
            ts_optim_step(&opt, p, 1e-4f);
            obj->after_step(obj);
        }
        printf("{\"kind\": \"round\", \"steps\": %d, \"s\": %.6f, \"loss\": %.6f}\n", n,
               now_s() - t0, loss);
        fflush(stdout);
    }
    ts_ctx_free(c);
    free(img);
    free(idf);
    free(ids);
    ts_objective_free(obj);
    ts_encoder_free(vis);
    ts_encoder_free(txt);
    ts_params_free(p);
    ts_recipe_free(r);
    return 0;
}
