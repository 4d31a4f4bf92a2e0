/* unit_reach2d.c: the reach2d task (action/reach2d.c) and the robomimic writer
 * (loaders/hdf5.c's ts_traj_writer) that stores its demonstrations.
 *
 * The task: reset, render and step are functions of the episode seed; the dynamics follow the
 * documented update step by step (clipping, NaN, walls); the scripted expert succeeds in at
 * least 98 of 100 episodes within 20-40 steps on average; an agent that drives to another
 * target than the named one fails; the image shows each target's colour around its centre
 * (the centroid of its pixels within a pixel of it), the mass in black and a grey background;
 * the instruction names the goal's colour; the layout keeps targets apart and off the walls.
 *
 * The writer: a file written from expert episodes reads back through ts_traj_open with the
 * same actions, proprioception and images in every window, the instruction of every demo, the
 * train/valid masks, byte-identical bytes for the same demos, no temporary left behind; a
 * file without demo instructions falls back to LIBERO's problem_info; abort leaves nothing.
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

#include <hdf5.h>

#include "action.h"
#include "loaders.h"
#include "tessera.h"

static char g_tmp[512]; /* scratch folder under the build tree */

static void tmp_path(char *buf, size_t n, const char *name) {
    snprintf(buf, n, "%s/%s", g_tmp, name);
}

/* The pixel (column, row) that holds the point xy of the unit square. */
static const uint8_t *pixel_at(const uint8_t *rgb, int size, const float *xy) {
    int x = (int)(xy[0] * size), y = (int)(xy[1] * size);
    x = x < 0 ? 0 : x >= size ? size - 1 : x;
    y = y < 0 ? 0 : y >= size ? size - 1 : y;
    return rgb + ((size_t)y * size + x) * 3;
}

/* ---------------------------------------------------------------------------------------- */
/* The task                                                                                 */

static void reset_render_step_are_deterministic(void **state) {
    (void)state;
    ts_reach2d_cfg cfg = ts_reach2d_cfg_default();
    int S = cfg.size;
    ts_reach2d *a = ts_reach2d_new(&cfg), *b = ts_reach2d_new(&cfg);
    uint8_t *ia = malloc((size_t)S * S * 3), *ib = malloc((size_t)S * S * 3);
    int differ_from_seed0 = 0;
    uint8_t *i0 = malloc((size_t)S * S * 3);
    ts_reach2d_reset(a, 0);
    ts_reach2d_render(a, i0);
    for (uint64_t seed = 0; seed < 10; seed++) {
        ts_reach2d_reset(a, seed);
        ts_reach2d_reset(b, 12345); /* another episode in between must not matter */
        ts_reach2d_reset(b, seed);
        assert_string_equal(ts_reach2d_instruction(a), ts_reach2d_instruction(b));
        int end_a = 0, end_b = 0;
        while (!end_a) {
            ts_reach2d_render(a, ia);
            ts_reach2d_render(b, ib);
            assert_memory_equal(ia, ib, (size_t)S * S * 3);
            float pa[4], pb[4], aa[2], ab[2];
            ts_reach2d_proprio(a, pa);
            ts_reach2d_proprio(b, pb);
            assert_memory_equal(pa, pb, sizeof pa);
            ts_reach2d_expert(a, aa);
            ts_reach2d_expert(b, ab);
            assert_memory_equal(aa, ab, sizeof aa);
            end_a = ts_reach2d_step(a, aa);
            end_b = ts_reach2d_step(b, ab);
            assert_int_equal(end_a, end_b);
        }
        assert_int_equal(ts_reach2d_steps(a), ts_reach2d_steps(b));
        ts_reach2d_reset(a, seed);
        ts_reach2d_render(a, ia);
        if (seed && memcmp(ia, i0, (size_t)S * S * 3)) differ_from_seed0++;
    }
    assert_int_equal(differ_from_seed0, 9); /* other seeds, other layouts */
    free(ia);
    free(ib);
    free(i0);
    ts_reach2d_free(a);
    ts_reach2d_free(b);
}

static void dynamics_follow_the_update(void **state) {
    (void)state;
    ts_reach2d_cfg cfg = ts_reach2d_cfg_default();
    ts_reach2d *e = ts_reach2d_new(&cfg);
    ts_reach2d_reset(e, 5);
    float s[4];
    ts_reach2d_proprio(e, s);
    assert_float_equal(s[2], 0, 0);
    assert_float_equal(s[3], 0, 0);
    /* (3, NaN) acts as (1, 0); then (-0.5, 0.25) as given. */
    float acts[3][2] = { { 3.0f, NAN }, { -0.5f, 0.25f }, { -0.5f, 0.25f } };
    float want[3][2] = { { 1, 0 }, { -0.5f, 0.25f }, { -0.5f, 0.25f } };
    double p[2] = { s[0], s[1] }, v[2] = { 0, 0 };
    for (int t = 0; t < 3; t++) {
        ts_reach2d_step(e, acts[t]);
        for (int i = 0; i < 2; i++) {
            v[i] = cfg.damping * v[i] + (1 - cfg.damping) * cfg.max_speed * want[t][i];
            p[i] += cfg.dt * v[i];
        }
        ts_reach2d_proprio(e, s);
        for (int i = 0; i < 2; i++) {
            assert_float_equal(s[i], p[i], 1e-6);
            assert_float_equal(s[2 + i], v[i], 1e-6);
        }
        assert_int_equal(ts_reach2d_steps(e), t + 1);
    }
    /* Pushing left for max_steps: the mass stays on the square, stopped at the wall. */
    ts_reach2d_reset(e, 6);
    float left[2] = { -1, 0 };
    int end = 0, n = 0;
    while (!end) {
        end = ts_reach2d_step(e, left);
        n++;
        ts_reach2d_proprio(e, s);
        assert_true(s[0] >= 0 && s[0] <= 1 && s[1] >= 0 && s[1] <= 1);
    }
    if (!ts_reach2d_success(e)) {
        assert_int_equal(n, cfg.max_steps);
        assert_float_equal(s[0], 0, 0);
        assert_float_equal(s[2], 0, 0);
    }
    assert_int_equal(ts_reach2d_step(e, left), 1); /* an ended episode stays ended */
    assert_int_equal(ts_reach2d_steps(e), n);
    ts_reach2d_free(e);
}

static void expert_succeeds(void **state) {
    (void)state;
    ts_reach2d_cfg cfg = ts_reach2d_cfg_default();
    ts_reach2d *e = ts_reach2d_new(&cfg);
    int success = 0, steps = 0;
    for (uint64_t seed = 1000; seed < 1100; seed++) {
        ts_reach2d_reset(e, seed);
        float a[2];
        int end = 0;
        while (!end) {
            ts_reach2d_expert(e, a);
            assert_true(a[0] >= -1 && a[0] <= 1 && a[1] >= -1 && a[1] <= 1);
            end = ts_reach2d_step(e, a);
        }
        success += ts_reach2d_success(e);
        steps += ts_reach2d_steps(e);
        if (ts_reach2d_success(e)) { /* ends at success: within the radius of the goal */
            float p[4], g[2];
            ts_reach2d_proprio(e, p);
            ts_reach2d_target(e, ts_reach2d_goal(e), g, NULL, NULL);
            assert_true(hypotf(p[0] - g[0], p[1] - g[1]) < cfg.success_radius);
        }
    }
    printf("expert: %d/100 episodes succeed, %.1f steps on average\n", success, steps / 100.0);
    assert_true(success >= 98);
    assert_true(steps / 100.0 >= 20 && steps / 100.0 <= 40);
    ts_reach2d_free(e);
}

/* An agent that drives straight to another target than the named one fails, whenever its
 * straight path keeps clear of the goal. */
static void wrong_target_fails(void **state) {
    (void)state;
    ts_reach2d_cfg cfg = ts_reach2d_cfg_default();
    ts_reach2d *e = ts_reach2d_new(&cfg);
    int clear = 0;
    for (uint64_t seed = 0; seed < 100; seed++) {
        ts_reach2d_reset(e, seed);
        int goal = ts_reach2d_goal(e), k = (goal + 1 + (int)(seed % 2)) % cfg.n_targets;
        float w[2], g[2], p[4];
        ts_reach2d_target(e, k, w, NULL, NULL);
        ts_reach2d_target(e, goal, g, NULL, NULL);
        ts_reach2d_proprio(e, p);
        /* distance from g to the segment p -> w */
        float dx = w[0] - p[0], dy = w[1] - p[1];
        float u = ((g[0] - p[0]) * dx + (g[1] - p[1]) * dy) / (dx * dx + dy * dy);
        u = u < 0 ? 0 : u > 1 ? 1 : u;
        float gap = hypotf(p[0] + u * dx - g[0], p[1] + u * dy - g[1]);
        if (gap < cfg.success_radius + 0.03f) continue;
        clear++;
        int end = 0;
        while (!end) {
            ts_reach2d_proprio(e, p);
            float a[2] = { 10 * (w[0] - p[0]), 10 * (w[1] - p[1]) };
            float n = hypotf(a[0], a[1]);
            if (n > 1) a[0] /= n, a[1] /= n;
            end = ts_reach2d_step(e, a);
        }
        assert_false(ts_reach2d_success(e));
        assert_int_equal(ts_reach2d_steps(e), cfg.max_steps);
        ts_reach2d_proprio(e, p);
        assert_true(hypotf(p[0] - w[0], p[1] - w[1]) < 0.02f); /* it did get to its target */
    }
    printf("wrong target: %d episodes with a path clear of the goal, all failed\n", clear);
    assert_true(clear >= 60);
    ts_reach2d_free(e);
}

static void layout_instruction_and_image(void **state) {
    (void)state;
    const int n_targets[] = { 1, 3, 6 };
    const int sizes[] = { 64, 96, 48 };
    int phrasings_seen = 0;
    char first_phrase[64] = "";
    for (int c = 0; c < 3; c++) {
        ts_reach2d_cfg cfg = ts_reach2d_cfg_default();
        cfg.n_targets = n_targets[c];
        cfg.size = sizes[c];
        int S = cfg.size;
        ts_reach2d *e = ts_reach2d_new(&cfg);
        uint8_t *im = malloc((size_t)S * S * 3);
        for (uint64_t seed = 0; seed < 40; seed++) {
            ts_reach2d_reset(e, seed);
            ts_reach2d_render(e, im);
            float xy[8][2], p[4];
            const char *name[8];
            uint8_t rgb[8][3];
            ts_reach2d_proprio(e, p);
            for (int k = 0; k < cfg.n_targets; k++) {
                ts_reach2d_target(e, k, xy[k], &name[k], rgb[k]);
                /* off the walls and away from the start */
                assert_true(xy[k][0] >= 0.1f && xy[k][0] <= 0.9f);
                assert_true(xy[k][1] >= 0.1f && xy[k][1] <= 0.9f);
                assert_true(hypotf(p[0] - xy[k][0], p[1] - xy[k][1]) > 0.25f);
                for (int j = 0; j < k; j++) {
                    assert_string_not_equal(name[j], name[k]);
                    assert_true(memcmp(rgb[j], rgb[k], 3) != 0);
                    assert_true(hypotf(xy[j][0] - xy[k][0], xy[j][1] - xy[k][1]) > 0.15f);
                }
            }
            /* the instruction names the goal's colour */
            char want[64];
            snprintf(want, sizeof want, "%s target", name[ts_reach2d_goal(e)]);
            const char *ins = ts_reach2d_instruction(e);
            assert_non_null(strstr(ins, want));
            char phrase[64];
            snprintf(phrase, sizeof phrase, "%.*s", (int)(strstr(ins, want) - ins), ins);
            if (!first_phrase[0]) snprintf(first_phrase, sizeof first_phrase, "%s", phrase);
            else if (strcmp(phrase, first_phrase)) phrasings_seen = 1;
            /* each target's exact colour: its centre pixel, and the centroid of all the pixels
             * of that colour within a pixel of the centre */
            for (int k = 0; k < cfg.n_targets; k++) {
                assert_memory_equal(pixel_at(im, S, xy[k]), rgb[k], 3);
                double sx = 0, sy = 0;
                int n = 0;
                for (int y = 0; y < S; y++)
                    for (int x = 0; x < S; x++)
                        if (!memcmp(im + ((size_t)y * S + x) * 3, rgb[k], 3))
                            sx += x + 0.5, sy += y + 0.5, n++;
                assert_true(n >= 9);
                assert_true(fabs(sx / n / S - xy[k][0]) * S < 1.0);
                assert_true(fabs(sy / n / S - xy[k][1]) * S < 1.0);
            }
            /* the mass is black; the background light grey */
            const uint8_t black[3] = { 0, 0, 0 };
            assert_memory_equal(pixel_at(im, S, p), black, 3);
            int grey = 0;
            for (int i = 0; i < S * S; i++) {
                const uint8_t *q = im + 3 * i;
                grey += q[0] == q[1] && q[1] == q[2] && q[0] >= 180 && q[0] < 255;
            }
            assert_true(grey > S * S / 2);
        }
        free(im);
        ts_reach2d_free(e);
    }
    assert_true(phrasings_seen);
}

/* ---------------------------------------------------------------------------------------- */
/* The robomimic writer and the reader                                                      */

#define NDEMO 6
#define MAXL 80

typedef struct episode {
    int L;
    float actions[MAXL][2], proprio[MAXL][4], rewards[MAXL];
    uint8_t dones[MAXL];
    uint8_t *images; /* (L, S, S, 3) */
    char instruction[64];
} episode;

static void record(ts_reach2d *e, uint64_t seed, int S, episode *ep) {
    ts_reach2d_reset(e, seed);
    snprintf(ep->instruction, sizeof ep->instruction, "%s", ts_reach2d_instruction(e));
    ep->images = malloc((size_t)MAXL * S * S * 3);
    int end = 0;
    ep->L = 0;
    while (!end) {
        int t = ep->L++;
        ts_reach2d_render(e, ep->images + (size_t)t * S * S * 3);
        ts_reach2d_proprio(e, ep->proprio[t]);
        ts_reach2d_expert(e, ep->actions[t]);
        end = ts_reach2d_step(e, ep->actions[t]);
        ep->rewards[t] = (float)ts_reach2d_success(e);
        ep->dones[t] = (uint8_t)end;
    }
}

static void write_file(const char *path, episode *eps, int S, int with_instruction,
                       const int *valid, int nvalid, const int *train, int ntrain) {
    ts_err err = { 0 };
    ts_traj_writer *w;
    assert_int_equal(ts_traj_writer_open(&w, path, &err), TS_OK);
    for (int d = 0; d < NDEMO; d++) {
        ts_traj_demo_data dd = {
            .len = eps[d].L, .actions = &eps[d].actions[0][0], .action_dim = 2,
            .n_lowdim = 1, .lowdim_keys = { "obs/proprio" }, .lowdim = { &eps[d].proprio[0][0] },
            .lowdim_dim = { 4 }, .n_images = 1, .image_keys = { "obs/agentview_image" },
            .images = { eps[d].images }, .image_shape = { { S, S, 3 } },
            .rewards = eps[d].rewards, .dones = eps[d].dones,
            .instruction = with_instruction ? eps[d].instruction : NULL,
        };
        assert_int_equal(ts_traj_writer_demo(w, &dd, &err), TS_OK);
    }
    assert_int_equal(ts_traj_writer_mask(w, "train", train, ntrain, &err), TS_OK);
    assert_int_equal(ts_traj_writer_mask(w, "valid", valid, nvalid, &err), TS_OK);
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    struct stat sb;
    assert_int_equal(stat(tmp, &sb), 0);   /* the work happens in the temporary */
    assert_int_equal(ts_traj_writer_close(w, "{\"env_name\": \"reach2d\"}", &err), TS_OK);
    assert_int_not_equal(stat(tmp, &sb), 0); /* renamed away */
    assert_int_equal(stat(path, &sb), 0);
}

static char *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc(*n);
    assert_int_equal(fread(b, 1, *n, f), *n);
    fclose(f);
    return b;
}

static void writer_round_trip(void **state) {
    (void)state;
    ts_reach2d_cfg cfg = ts_reach2d_cfg_default();
    cfg.size = 32;
    int S = cfg.size;
    ts_reach2d *e = ts_reach2d_new(&cfg);
    episode eps[NDEMO];
    for (int d = 0; d < NDEMO; d++) record(e, 77 + (uint64_t)d, S, &eps[d]);
    char path[600], path2[600];
    tmp_path(path, sizeof path, "rt.hdf5");
    tmp_path(path2, sizeof path2, "rt2.hdf5");
    const int valid[] = { 1, 4 }, train[] = { 0, 2, 3, 5 };
    write_file(path, eps, S, 1, valid, 2, train, 4);
    write_file(path2, eps, S, 1, valid, 2, train, 4);
    size_t n1, n2;
    char *b1 = slurp(path, &n1), *b2 = slurp(path2, &n2);
    assert_int_equal(n1, n2);
    assert_memory_equal(b1, b2, n1); /* the same demos, the same bytes */
    free(b1);
    free(b2);

    const int T = 4, pb = 1, pa = 3;
    ts_traj_spec spec = { .actions = "actions", .lowdim = { "obs/proprio", "rewards", "dones" },
                          .n_lowdim = 3, .images = { "obs/agentview_image" }, .n_images = 1,
                          .horizon = T, .pad_before = pb, .pad_after = pa };
    ts_err err = { 0 };
    ts_traj *t;
    assert_int_equal(ts_traj_open(&t, path, &spec, &err), TS_OK);
    assert_int_equal(ts_traj_num_demos(t), NDEMO);
    assert_int_equal(ts_traj_action_dim(t), 2);
    assert_int_equal(ts_traj_lowdim_total(t), 6);
    int h, wd, c;
    ts_traj_image_shape(t, 0, &h, &wd, &c);
    assert_true(h == S && wd == S && c == 3);
    int64_t windows = 0;
    for (int d = 0; d < NDEMO; d++) {
        char name[32];
        snprintf(name, sizeof name, "demo_%d", d);
        assert_string_equal(ts_traj_demo_name(t, d), name);
        assert_int_equal(ts_traj_demo_len(t, d), eps[d].L);
        assert_string_equal(ts_traj_instruction(t, d), eps[d].instruction);
        windows += eps[d].L - T + pb + pa + 1;
    }
    assert_int_equal(ts_traj_num_windows(t), windows);
    /* every window against the recorded episode, with the edge steps repeated */
    float act[T * 2], low[T * 6];
    uint8_t *img = malloc((size_t)T * S * S * 3);
    uint8_t *imgs[1] = { img };
    for (int64_t i = 0; i < windows; i++) {
        int d;
        int64_t s;
        ts_traj_window(t, i, &d, &s);
        assert_int_equal(ts_traj_read_window(t, i, act, low, imgs, &err), TS_OK);
        for (int k = 0; k < T; k++) {
            int64_t r = s + k < 0 ? 0 : s + k >= eps[d].L ? eps[d].L - 1 : s + k;
            assert_memory_equal(&act[k * 2], eps[d].actions[r], 2 * sizeof(float));
            assert_memory_equal(&low[k * 6], eps[d].proprio[r], 4 * sizeof(float));
            assert_float_equal(low[k * 6 + 4], eps[d].rewards[r], 0);
            assert_float_equal(low[k * 6 + 5], eps[d].dones[r], 0);
            assert_memory_equal(img + (size_t)k * S * S * 3,
                                eps[d].images + (size_t)r * S * S * 3, (size_t)S * S * 3);
        }
    }
    free(img);
    ts_traj_close(t);

    /* the masks select the demos they list */
    spec.filter = "valid";
    assert_int_equal(ts_traj_open(&t, path, &spec, &err), TS_OK);
    assert_int_equal(ts_traj_num_demos(t), 2);
    assert_string_equal(ts_traj_demo_name(t, 0), "demo_1");
    assert_string_equal(ts_traj_demo_name(t, 1), "demo_4");
    assert_string_equal(ts_traj_instruction(t, 1), eps[4].instruction);
    ts_traj_close(t);
    spec.filter = "train";
    assert_int_equal(ts_traj_open(&t, path, &spec, &err), TS_OK);
    assert_int_equal(ts_traj_num_demos(t), 4);
    for (int i = 0; i < 4; i++) {
        char name[32];
        snprintf(name, sizeof name, "demo_%d", train[i]);
        assert_string_equal(ts_traj_demo_name(t, i), name);
    }
    ts_traj_close(t);

    /* the data group's attributes, read with the HDF5 API */
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(f >= 0);
    hid_t g = H5Gopen2(f, "data", H5P_DEFAULT);
    hid_t a = H5Aopen(g, "total", H5P_DEFAULT);
    long long total = 0, want = 0;
    H5Aread(a, H5T_NATIVE_LLONG, &total);
    for (int d = 0; d < NDEMO; d++) want += eps[d].L;
    assert_int_equal(total, want);
    H5Aclose(a);
    H5Gclose(g);
    H5Fclose(f);

    /* without demo instructions: NULL, then LIBERO's file-level problem_info */
    spec.filter = NULL;
    write_file(path2, eps, S, 0, valid, 2, train, 4);
    assert_int_equal(ts_traj_open(&t, path2, &spec, &err), TS_OK);
    assert_null(ts_traj_instruction(t, 0));
    ts_traj_close(t);
    f = H5Fopen(path2, H5F_ACC_RDWR, H5P_DEFAULT);
    g = H5Gopen2(f, "data", H5P_DEFAULT);
    hid_t ty = H5Tcopy(H5T_C_S1);
    H5Tset_size(ty, H5T_VARIABLE);
    H5Tset_cset(ty, H5T_CSET_UTF8);
    hid_t sp = H5Screate(H5S_SCALAR);
    a = H5Acreate2(g, "problem_info", ty, sp, H5P_DEFAULT, H5P_DEFAULT);
    const char *info = "{\"problem_name\": \"libero_tabletop_manipulation\", "
                       "\"domain_name\": \"robosuite\", "
                       "\"language_instruction\": \"put the bowl on the plate\"}";
    assert_true(H5Awrite(a, ty, &info) >= 0);
    H5Aclose(a);
    H5Sclose(sp);
    H5Tclose(ty);
    H5Gclose(g);
    H5Fclose(f);
    assert_int_equal(ts_traj_open(&t, path2, &spec, &err), TS_OK);
    for (int d = 0; d < NDEMO; d++)
        assert_string_equal(ts_traj_instruction(t, d), "put the bowl on the plate");
    ts_traj_close(t);

    /* abort leaves neither the file nor its temporary */
    char path3[600], tmp3[610];
    tmp_path(path3, sizeof path3, "aborted.hdf5");
    snprintf(tmp3, sizeof tmp3, "%s.tmp", path3);
    unlink(path3);
    ts_traj_writer *w;
    assert_int_equal(ts_traj_writer_open(&w, path3, &err), TS_OK);
    ts_traj_writer_abort(w);
    struct stat sb;
    assert_int_not_equal(stat(path3, &sb), 0);
    assert_int_not_equal(stat(tmp3, &sb), 0);
    /* a folder that does not exist: an error naming the file */
    char bad[600];
    tmp_path(bad, sizeof bad, "no/such/dir/x.hdf5");
    assert_int_equal(ts_traj_writer_open(&w, bad, &err), TS_ERR_IO);
    assert_non_null(strstr(err.msg, "no/such/dir/x.hdf5.tmp"));

    for (int d = 0; d < NDEMO; d++) free(eps[d].images);
    ts_reach2d_free(e);
}

int main(void) {
    snprintf(g_tmp, sizeof g_tmp, "%s/unit_reach2d_tmp", TS_BINARY_DIR);
    mkdir(g_tmp, 0755);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(reset_render_step_are_deterministic),
        cmocka_unit_test(dynamics_follow_the_update),
        cmocka_unit_test(expert_succeeds),
        cmocka_unit_test(wrong_target_fails),
        cmocka_unit_test(layout_instruction_and_image),
        cmocka_unit_test(writer_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
