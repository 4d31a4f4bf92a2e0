/* unit_core.c: the step arena, the RNG, parameters, safetensors, checkpoints and schedules.
 *
 * Bad input is tested here at the library level (truncated and corrupt safetensors, a checkpoint
 * whose shapes do not match); the command-line tests repeat the important ones end to end.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tessera.h"

static char tmpdir[256];

static int setup_tmp(void **state) {
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/tessera-unit-core-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown_tmp(void **state) {
    (void)state;
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* ---- arena ---- */

static void arena_aligns_and_stops_allocating(void **state) {
    (void)state;
    ts_arena *a = ts_arena_new("test", 1 << 16);
    /* first "step": spills over several blocks */
    for (int i = 0; i < 100; i++) {
        void *p = ts_arena_alloc(a, 3000 + (size_t)i);
        assert_int_equal((uintptr_t)p % 64, 0);
        memset(p, 1, 3000);
    }
    size_t high = ts_arena_high_water(a);
    assert_true(high >= 300000);
    ts_arena_reset(a);
    assert_int_equal(ts_arena_used(a), 0);
    assert_true(ts_arena_capacity(a) >= high);
    size_t mallocs = ts_arena_mallocs(a);
    /* later steps of the same shape: no new blocks */
    for (int step = 0; step < 5; step++) {
        for (int i = 0; i < 100; i++) ts_arena_alloc(a, 3000 + (size_t)i);
        ts_arena_reset(a);
    }
    assert_int_equal(ts_arena_mallocs(a), mallocs);
    ts_arena_free(a);
    ts_arena_free(NULL);
}

static void rng_is_deterministic(void **state) {
    (void)state;
    ts_rng a, b;
    ts_rng_seed(&a, 7);
    ts_rng_seed(&b, 7);
    double sum = 0, sq = 0;
    for (int i = 0; i < 20000; i++) {
        float x = ts_rng_normal(&a);
        assert_true(x == ts_rng_normal(&b));
        sum += x;
        sq += (double)x * x;
    }
    assert_true(fabs(sum / 20000) < 0.05);
    assert_true(fabs(sq / 20000 - 1.0) < 0.05);
    for (int i = 0; i < 1000; i++) {
        float u = ts_rng_uniform(&a);
        assert_true(u >= 0.0f && u < 1.0f);
    }
}

/* ---- parameters ---- */

static ts_params *small_model(uint64_t seed, int64_t width) {
    ts_params *p = ts_params_new();
    ts_nn_linear l;
    ts_nn_layernorm ln;
    ts_nn_linear_init(&l, p, "proj", 4, (int)width, 1);
    ts_nn_layernorm_init(&ln, p, "ln", (int)width, 1e-5f);
    ts_param(p, "running", 1, TS_SHAPE(3), TS_INIT_1, TS_PARAM_BUFFER);
    assert_int_equal(ts_params_finalize(p, seed, NULL), TS_OK);
    return p;
}

static void params_are_laid_out_and_seeded(void **state) {
    (void)state;
    ts_params *a = small_model(3, 5), *b = small_model(3, 5), *c = small_model(4, 5);
    assert_int_equal(ts_params_count(a), 5);
    ts_tensor *w = ts_params_find(a, "proj.weight");
    assert_non_null(w);
    assert_int_equal(w->shape[0], 5);
    assert_int_equal(w->shape[1], 4);
    assert_int_equal((uintptr_t)w->data % 64, 0);
    assert_memory_equal(w->data, ts_params_find(b, "proj.weight")->data, 20 * sizeof(float));
    assert_memory_not_equal(w->data, ts_params_find(c, "proj.weight")->data, 20 * sizeof(float));
    assert_null(ts_params_find(a, "running")->grad);
    assert_int_equal(ts_params_numel(a, 0), 20 + 5 + 5 + 5 + 3);
    assert_int_equal(ts_params_numel(a, 1), 20 + 5 + 5 + 5);
    ts_params_free(a);
    ts_params_free(b);
    ts_params_free(c);
    ts_params_free(NULL);
}

/* A task may replace the modules' decay flags before finalize (the CLIP task applies open_clip's
 * rule); AdamW then decays exactly the tensors without TS_PARAM_NO_DECAY. */
static void param_flags_change_before_finalize(void **state) {
    (void)state;
    ts_params *p = ts_params_new();
    ts_nn_linear l;
    ts_nn_linear_init(&l, p, "proj", 4, 3, 1);
    assert_int_equal(ts_params_flags(p, 0), 0);
    assert_int_equal(ts_params_flags(p, 1), TS_PARAM_NO_DECAY);
    ts_param_set_flags(p, l.w, TS_PARAM_NO_DECAY);
    ts_param_set_flags(p, l.b, 0);
    assert_int_equal(ts_params_finalize(p, 1, NULL), TS_OK);
    assert_int_equal(ts_params_flags(p, 0), TS_PARAM_NO_DECAY);
    assert_int_equal(ts_params_flags(p, 1), 0);
    float w0[12], b0[3];
    memcpy(w0, l.w->data, sizeof w0);
    memcpy(b0, l.b->data, sizeof b0);
    ts_optim o;
    ts_optim_init(&o, &(ts_optim_cfg){ TS_OPTIM_ADAMW, 0.1f, 0.9f, 0.999f, 1e-8f, 0.5f, 0.0f });
    ts_params_zero_grad(p); /* zero gradients: only the decay moves a weight */
    ts_optim_step(&o, p, 0.1f);
    assert_memory_equal(l.w->data, w0, sizeof w0);
    for (int i = 0; i < 3; i++)
        assert_float_equal(ts_f32(l.b)[i], b0[i] * (1.0f - 0.1f * 0.5f), 1e-7);
    ts_params_free(p);
}

/* ---- safetensors ---- */

static void write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, n, f), n);
    fclose(f);
}

static void safetensors_round_trip(void **state) {
    (void)state;
    char path[512];
    snprintf(path, sizeof path, "%s/a.safetensors", tmpdir);
    float x[6] = { 1, 2, 3, 4, 5, 6 };
    int32_t ids[3] = { 7, 8, 9 };
    uint8_t bytes[3] = { 1, 2, 3 };
    ts_st_writer *w = ts_st_writer_new();
    ts_st_writer_add(w, "x", TS_F32, 2, TS_SHAPE(2, 3), x);
    ts_st_writer_add(w, "bytes", TS_U8, 1, TS_SHAPE(3), bytes);
    ts_st_writer_add(w, "ids", TS_I32, 1, TS_SHAPE(3), ids);
    ts_st_writer_meta(w, "what", "a test");
    ts_err err = { 0 };
    assert_int_equal(ts_st_write(w, path, &err), TS_OK);
    ts_st_writer_free(w);

    ts_st_file *f;
    assert_int_equal(ts_st_read(path, &f, &err), TS_OK);
    assert_int_equal(ts_st_count(f), 3);
    const ts_st_entry *e = ts_st_find(f, "x");
    assert_non_null(e);
    assert_int_equal(e->dtype, TS_F32);
    assert_int_equal(e->ndim, 2);
    assert_memory_equal(e->data, x, sizeof x);
    e = ts_st_find(f, "ids");
    assert_memory_equal(e->data, ids, sizeof ids);
    assert_string_equal(ts_st_meta(f, "what"), "a test");
    assert_null(ts_st_meta(f, "nothing"));
    ts_st_close(f);

    /* the header length is a multiple of 8 so the data starts aligned */
    FILE *fp = fopen(path, "rb");
    uint8_t h[8];
    assert_int_equal(fread(h, 1, 8, fp), 8);
    fclose(fp);
    assert_int_equal(h[0] % 8, 0);
}

static void expect_format_error(const char *path, const char *needle) {
    ts_st_file *f = NULL;
    ts_err err = { 0 };
    ts_status st = ts_st_read(path, &f, &err);
    assert_int_not_equal(st, TS_OK);
    assert_null(f);
    if (!strstr(err.msg, path) || !strstr(err.msg, needle)) {
        print_error("message '%s' should name %s and say '%s'\n", err.msg, path, needle);
        fail();
    }
}

static void safetensors_rejects_bad_files(void **state) {
    (void)state;
    char good[512], bad[512];
    snprintf(good, sizeof good, "%s/good.safetensors", tmpdir);
    snprintf(bad, sizeof bad, "%s/bad.safetensors", tmpdir);
    float x[16] = { 0 };
    ts_st_writer *w = ts_st_writer_new();
    ts_st_writer_add(w, "weight", TS_F32, 2, TS_SHAPE(4, 4), x);
    assert_int_equal(ts_st_write(w, good, NULL), TS_OK);
    ts_st_writer_free(w);
    FILE *fp = fopen(good, "rb");
    uint8_t buf[4096];
    size_t n = fread(buf, 1, sizeof buf, fp);
    fclose(fp);

    write_bytes(bad, buf, 5); /* shorter than the length field */
    expect_format_error(bad, "not a safetensors file");
    write_bytes(bad, buf, n - 10); /* data cut short */
    expect_format_error(bad, "weight");
    write_bytes(bad, buf, 8 + 10); /* header cut short */
    expect_format_error(bad, "header length");
    uint8_t junk[64];
    memcpy(junk, buf, 8);
    junk[0] = 40;
    for (int i = 1; i < 8; i++) junk[i] = 0;
    memset(junk + 8, 'z', 40);
    write_bytes(bad, junk, 48);
    expect_format_error(bad, "JSON");
    const char *lie = "{\"weight\":{\"dtype\":\"F32\",\"shape\":[5,4],\"data_offsets\":[0,64]}}";
    uint8_t doc[256] = { 0 };
    size_t L = strlen(lie);
    doc[0] = (uint8_t)L;
    memcpy(doc + 8, lie, L);
    write_bytes(bad, doc, 8 + L + 64);
    expect_format_error(bad, "weight");
    expect_format_error("/nonexistent/x.safetensors", "cannot open");
}

/* ---- checkpoints ---- */

static void checkpoint_round_trip_and_mismatch(void **state) {
    (void)state;
    char run[512], ck[600], model[700];
    snprintf(run, sizeof run, "%s/run", tmpdir);
    ts_params *p = small_model(1, 5);
    ts_optim_cfg oc = { TS_OPTIM_ADAMW, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.0f, 0.0f };
    ts_optim o;
    ts_optim_init(&o, &oc);
    for (int i = 0; i < ts_params_count(p); i++) {
        ts_tensor *t = ts_params_get(p, i);
        if (t->grad)
            for (int64_t j = 0; j < t->numel; j++) ts_f32(t->grad)[j] = 0.1f * (float)j;
    }
    ts_optim_step(&o, p, 1e-3f);
    ts_err err = { 0 };
    for (int step = 1; step <= 4; step++)
        assert_int_equal(ts_ckpt_save(run, step, p, &o, "{\"step\": 1}", "a: 1\n", NULL, 0, 2,
                                      &err), TS_OK);
    assert_int_equal(ts_ckpt_find(run, ck, sizeof ck, &err), TS_OK);
    assert_non_null(strstr(ck, "step_00000004"));
    /* keep = 2: the two oldest are gone */
    struct stat sb;
    char old[700];
    snprintf(old, sizeof old, "%s/checkpoints/step_00000002", run);
    assert_int_not_equal(stat(old, &sb), 0);
    snprintf(old, sizeof old, "%s/checkpoints/step_00000003", run);
    assert_int_equal(stat(old, &sb), 0);

    ts_params *q = small_model(99, 5);
    ts_optim o2;
    ts_optim_init(&o2, &oc);
    snprintf(model, sizeof model, "%s/model.safetensors", ck);
    assert_int_equal(ts_ckpt_load_model(q, model, 0, &err), TS_OK);
    snprintf(model, sizeof model, "%s/optim.safetensors", ck);
    assert_int_equal(ts_ckpt_load_optim(q, &o2, model, &err), TS_OK);
    assert_int_equal(o2.t, 1);
    for (int i = 0; i < ts_params_count(p); i++) {
        ts_tensor *a = ts_params_get(p, i), *b = ts_params_get(q, i);
        assert_memory_equal(a->data, b->data, (size_t)a->numel * sizeof(float));
        if (a->grad)
            assert_memory_equal(ts_params_state(p, i, 1), ts_params_state(q, i, 1),
                                (size_t)a->numel * sizeof(float));
    }

    /* a model of another width: every mismatch named, nothing changed */
    ts_params *r = small_model(5, 6);
    float before[24];
    memcpy(before, ts_params_find(r, "proj.weight")->data, sizeof before);
    snprintf(model, sizeof model, "%s/model.safetensors", ck);
    assert_int_equal(ts_ckpt_load_model(r, model, 0, &err), TS_ERR_MISMATCH);
    const char *names[] = { "proj.weight", "proj.bias", "ln.weight", "ln.bias" };
    for (int i = 0; i < 4; i++) {
        if (!strstr(err.msg, names[i])) {
            print_error("message does not name %s: %s\n", names[i], err.msg);
            fail();
        }
    }
    assert_non_null(strstr(err.msg, "(5, 4) in the file, (6, 4) in the model"));
    assert_memory_equal(before, ts_params_find(r, "proj.weight")->data, sizeof before);
    ts_params_free(p);
    ts_params_free(q);
    ts_params_free(r);
}

static void checkpoint_find_reports_missing(void **state) {
    (void)state;
    char out[512];
    ts_err err = { 0 };
    assert_int_equal(ts_ckpt_find("/nonexistent/run", out, sizeof out, &err), TS_ERR_IO);
    assert_non_null(strstr(err.msg, "/nonexistent/run"));
    assert_int_equal(ts_ckpt_find(tmpdir, out, sizeof out, &err), TS_ERR_IO);
    assert_non_null(strstr(err.msg, "no checkpoint"));
}

/* ---- schedules ---- */

static void schedules_follow_their_definitions(void **state) {
    (void)state;
    ts_sched s = { TS_SCHED_COSINE, 1.0f, 0.1f, 10, 110 };
    assert_float_equal(ts_sched_lr(&s, 0), 0.1f, 1e-6);   /* warmup: (0 + 1) / 10 */
    assert_float_equal(ts_sched_lr(&s, 9), 1.0f, 1e-6);
    assert_float_equal(ts_sched_lr(&s, 10), 1.0f, 1e-6);  /* cosine starts at the peak */
    assert_float_equal(ts_sched_lr(&s, 60), 0.55f, 1e-6); /* halfway: (peak + min) / 2 */
    assert_float_equal(ts_sched_lr(&s, 110), 0.1f, 1e-6);
    for (int64_t t = 11; t < 110; t++) assert_true(ts_sched_lr(&s, t) < ts_sched_lr(&s, t - 1));
    s.kind = TS_SCHED_LINEAR;
    assert_float_equal(ts_sched_lr(&s, 60), 0.55f, 1e-6);
    assert_float_equal(ts_sched_lr(&s, 35), 1.0f - 0.9f * 0.25f, 1e-6);
    s.kind = TS_SCHED_CONSTANT;
    assert_float_equal(ts_sched_lr(&s, 100), 1.0f, 1e-6);
}

static void clip_grad_norm_scales_to_the_limit(void **state) {
    (void)state;
    ts_params *p = small_model(1, 5);
    for (int i = 0; i < ts_params_count(p); i++) {
        ts_tensor *t = ts_params_get(p, i);
        if (t->grad)
            for (int64_t j = 0; j < t->numel; j++) ts_f32(t->grad)[j] = 1.0f;
    }
    float norm = ts_clip_grad_norm(p, 1.0f);
    assert_float_equal(norm, sqrtf(35.0f), 1e-5);
    assert_float_equal(ts_clip_grad_norm(p, 0.0f), 1.0f, 1e-5);
    ts_params_free(p);
}

static void status_strings_cover_every_code(void **state) {
    (void)state;
    for (int s = 0; s < TS_STATUS_COUNT; s++) {
        assert_non_null(ts_status_str((ts_status)s));
        assert_true(strlen(ts_status_str((ts_status)s)) > 0);
    }
    ts_err e;
    assert_int_equal(ts_fail(&e, TS_ERR_IO, "file %s", "x"), TS_ERR_IO);
    assert_string_equal(e.msg, "file x");
    assert_int_equal(ts_fail(NULL, TS_ERR_DATA, "ignored"), TS_ERR_DATA);
    /* wrapping the error's own message */
    assert_int_equal(ts_fail(&e, TS_ERR_USAGE, "outer: %s (%s)", e.msg, e.msg), TS_ERR_USAGE);
    assert_string_equal(e.msg, "outer: file x (file x)");
}

/* ---- folders ---- */

static void mkdirs_makes_parents_and_names_what_fails(void **state) {
    (void)state;
    char dir[512], file[512], under[600];
    snprintf(dir, sizeof dir, "%s/a/b/c/", tmpdir);
    ts_err e = { 0 };
    assert_int_equal(ts_mkdirs(dir, &e), TS_OK);
    struct stat sb;
    assert_int_equal(stat(dir, &sb), 0);
    assert_true(S_ISDIR(sb.st_mode));
    assert_int_equal(ts_mkdirs(dir, &e), TS_OK); /* there already */
    snprintf(file, sizeof file, "%s/a/f", tmpdir);
    write_bytes(file, "x", 1);
    /* a file of that name, and a path through it */
    assert_int_equal(ts_mkdirs(file, &e), TS_ERR_IO);
    assert_non_null(strstr(e.msg, "a file of that name exists"));
    snprintf(under, sizeof under, "%s/d/e", file);
    assert_int_equal(ts_mkdirs(under, &e), TS_ERR_IO);
    char want[600];
    snprintf(want, sizeof want, "cannot create %s/d: ", file);
    assert_non_null(strstr(e.msg, want));
    assert_int_equal(ts_mkdirs("", &e), TS_ERR_IO);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(arena_aligns_and_stops_allocating),
        cmocka_unit_test(rng_is_deterministic),
        cmocka_unit_test(params_are_laid_out_and_seeded),
        cmocka_unit_test(param_flags_change_before_finalize),
        cmocka_unit_test(safetensors_round_trip),
        cmocka_unit_test(safetensors_rejects_bad_files),
        cmocka_unit_test(checkpoint_round_trip_and_mismatch),
        cmocka_unit_test(checkpoint_find_reports_missing),
        cmocka_unit_test(schedules_follow_their_definitions),
        cmocka_unit_test(clip_grad_norm_scales_to_the_limit),
        cmocka_unit_test(status_strings_cover_every_code),
        cmocka_unit_test(mkdirs_makes_parents_and_names_what_fails),
    };
    return cmocka_run_group_tests(tests, setup_tmp, teardown_tmp);
}
