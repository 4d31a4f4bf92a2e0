/* unit_hdf5.c: robot trajectories in HDF5 (loaders/hdf5.c).
 *
 * Without arguments the test writes its own robomimic-layout files with the HDF5 C API (two
 * demos with actions, float64 and float32 low-dimensional observations, uint8 images, rewards,
 * dones, num_samples and masks; and broken variants) and checks: demo listing in numeric order
 * and through masks, every window against a literal port of Diffusion Policy's
 * SequenceSampler (create_indices and sample_sequence), float64 to float32 conversion, and the
 * errors for a missing key, a length mismatch, a wrong num_samples and an unknown mask, each
 * naming the file, the demo and the key; skip_bad drops and counts the bad demo.
 *
 * With a folder argument (ctest's unit_hdf5_samples, registered when ../shared/data exists) it
 * reads the real robosuite demonstrations there and compares every value with a plain HDF5
 * read, and prints windows/s. What it is not: a benchmark with a pass mark.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <dirent.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <hdf5.h>

#include "loaders.h"
#include "tessera.h"

static const char *g_data; /* the sample folder, NULL when run without one */
static char g_tmp[512];    /* scratch folder under the build tree */

/* ---------------------------------------------------------------------------------------- */
/* Writing robomimic-layout files                                                           */

/* The values of the generated datasets, distinct for every demo, step and element. */
static double act_val(int d, int t, int j) { return 1000.0 * d + 10.0 * t + j + 0.1234567891; }
static double eef_val(int d, int t, int j) { return -1000.0 * d - 10.0 * t - j - 0.5; }
static float grip_val(int d, int t) { return (float)(d * 0.5 + t * 0.25); }
static uint8_t img_val(int d, int t, size_t i) { return (uint8_t)(d * 50 + t * 7 + i * 3); }
enum { IH = 4, IW = 6, IC = 3 };

static void write_ds(hid_t g, const char *name, hid_t type, int rank, const hsize_t *dims,
                     const void *buf) {
    hid_t sp = H5Screate_simple(rank, dims, NULL);
    hid_t ds = H5Dcreate2(g, name, type, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(ds >= 0);
    assert_true(H5Dwrite(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) >= 0);
    H5Dclose(ds);
    H5Sclose(sp);
}

static void write_attr_i64(hid_t o, const char *name, long long v) {
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(o, name, H5T_NATIVE_LLONG, sp, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, H5T_NATIVE_LLONG, &v);
    H5Aclose(a);
    H5Sclose(sp);
}

/* What to break in a demo when writing it. */
enum { OK_DEMO, NO_EEF, SHORT_REWARDS, BAD_NUM_SAMPLES };

/* data/demo_<num> of length L with demo index d for the values. */
static void write_demo(hid_t data, int num, int d, int L, int broken) {
    char name[32];
    snprintf(name, sizeof name, "demo_%d", num);
    hid_t g = H5Gcreate2(data, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    write_attr_i64(g, "num_samples", broken == BAD_NUM_SAMPLES ? L + 1 : L);
    double *a = malloc(sizeof(double) * (size_t)L * 7);
    for (int t = 0; t < L; t++)
        for (int j = 0; j < 7; j++) a[t * 7 + j] = act_val(d, t, j);
    write_ds(g, "actions", H5T_NATIVE_DOUBLE, 2, (hsize_t[]){ (hsize_t)L, 7 }, a);
    hid_t obs = H5Gcreate2(g, "obs", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (broken != NO_EEF) {
        for (int t = 0; t < L; t++)
            for (int j = 0; j < 3; j++) a[t * 3 + j] = eef_val(d, t, j);
        write_ds(obs, "eef_pos", H5T_NATIVE_DOUBLE, 2, (hsize_t[]){ (hsize_t)L, 3 }, a);
    }
    float *gr = malloc(sizeof(float) * (size_t)L);
    for (int t = 0; t < L; t++) gr[t] = grip_val(d, t);
    write_ds(obs, "gripper", H5T_NATIVE_FLOAT, 1, (hsize_t[]){ (hsize_t)L }, gr);
    size_t isz = (size_t)IH * IW * IC;
    uint8_t *im = malloc(isz * (size_t)L);
    for (int t = 0; t < L; t++)
        for (size_t i = 0; i < isz; i++) im[t * isz + i] = img_val(d, t, i);
    write_ds(obs, "agentview_image", H5T_NATIVE_UINT8, 4,
             (hsize_t[]){ (hsize_t)L, IH, IW, IC }, im);
    H5Gclose(obs);
    int nr = broken == SHORT_REWARDS ? L - 1 : L;
    for (int t = 0; t < L; t++) a[t] = t == L - 1;
    write_ds(g, "rewards", H5T_NATIVE_DOUBLE, 1, (hsize_t[]){ (hsize_t)nr }, a);
    long long *dn = malloc(sizeof(long long) * (size_t)L);
    for (int t = 0; t < L; t++) dn[t] = t == L - 1;
    write_ds(g, "dones", H5T_NATIVE_LLONG, 1, (hsize_t[]){ (hsize_t)L }, dn);
    free(dn);
    free(im);
    free(gr);
    free(a);
    H5Gclose(g);
}

/* mask/<name> as fixed-length strings, as robomimic's h5py code writes them. */
static void write_mask(hid_t file, const char *name, const char *const *demos, int n) {
    hid_t m = H5Lexists(file, "mask", H5P_DEFAULT) > 0
                  ? H5Gopen2(file, "mask", H5P_DEFAULT)
                  : H5Gcreate2(file, "mask", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    char buf[8][8];
    memset(buf, 0, sizeof buf);
    for (int i = 0; i < n; i++) {
        size_t l = strlen(demos[i]);
        memcpy(buf[i], demos[i], l < 8 ? l : 8);
    }
    hid_t ty = H5Tcopy(H5T_C_S1);
    H5Tset_size(ty, 8);
    H5Tset_strpad(ty, H5T_STR_NULLPAD);
    write_ds(m, name, ty, 1, (hsize_t[]){ (hsize_t)n }, buf);
    H5Tclose(ty);
    H5Gclose(m);
}

/* A robomimic file: demos numbered nums[i] with lengths lens[i]; demo broken_at gets broken. */
static void write_file(const char *path, const int *nums, const int *lens, int n, int broken_at,
                       int broken) {
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(f >= 0);
    hid_t data = H5Gcreate2(f, "data", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    long long total = 0;
    for (int i = 0; i < n; i++) {
        write_demo(data, nums[i], nums[i], lens[i], i == broken_at ? broken : OK_DEMO);
        total += lens[i];
    }
    write_attr_i64(data, "total", total);
    H5Gclose(data);
    write_mask(f, "train", (const char *[]){ "demo_1" }, 1);
    write_mask(f, "valid", (const char *[]){ "demo_0" }, 1);
    H5Fclose(f);
}

static void tmp_path(char *buf, size_t n, const char *name) {
    snprintf(buf, n, "%s/%s", g_tmp, name);
}

static ts_traj_spec robomimic_spec(void) {
    ts_traj_spec s;
    memset(&s, 0, sizeof s);
    s.actions = "actions";
    s.lowdim[0] = "obs/eef_pos";
    s.lowdim[1] = "obs/gripper";
    s.lowdim[2] = "rewards";
    s.n_lowdim = 3;
    s.images[0] = "obs/agentview_image";
    s.n_images = 1;
    s.horizon = 4;
    s.pad_before = 1;
    s.pad_after = 2;
    return s;
}

/* ---------------------------------------------------------------------------------------- */
/* Diffusion Policy's SequenceSampler, ported line by line as the reference                */

typedef struct dp_index {
    int64_t buffer_start, buffer_end, sample_start, sample_end;
} dp_index;

/* diffusion_policy/common/sampler.py create_indices: episode_ends are cumulative lengths. */
static int dp_create_indices(const int64_t *episode_ends, int n, int seq_len, int pad_before,
                             int pad_after, dp_index *out) {
    int k = 0;
    for (int i = 0; i < n; i++) {
        int64_t start_idx = i > 0 ? episode_ends[i - 1] : 0, end_idx = episode_ends[i];
        int64_t episode_length = end_idx - start_idx;
        int64_t min_start = -pad_before, max_start = episode_length - seq_len + pad_after;
        for (int64_t idx = min_start; idx <= max_start; idx++) {
            int64_t buffer_start_idx = (idx > 0 ? idx : 0) + start_idx;
            int64_t e = idx + seq_len < episode_length ? idx + seq_len : episode_length;
            int64_t buffer_end_idx = e + start_idx;
            int64_t start_offset = buffer_start_idx - (idx + start_idx);
            int64_t end_offset = (idx + seq_len + start_idx) - buffer_end_idx;
            out[k++] = (dp_index){ buffer_start_idx, buffer_end_idx, start_offset,
                                   seq_len - end_offset };
        }
    }
    return k;
}

/* sample_sequence for one key of row width w over the concatenated buffer `all`. */
static void dp_sample(const float *all, int w, dp_index ix, int seq_len, float *out) {
    int64_t n = ix.buffer_end - ix.buffer_start;
    memcpy(out + ix.sample_start * w, all + ix.buffer_start * w, sizeof(float) * (size_t)(n * w));
    for (int64_t t = 0; t < ix.sample_start; t++)
        memcpy(out + t * w, out + ix.sample_start * w, sizeof(float) * (size_t)w);
    for (int64_t t = ix.sample_end; t < seq_len; t++)
        memcpy(out + t * w, out + (ix.sample_end - 1) * w, sizeof(float) * (size_t)w);
}

/* ---------------------------------------------------------------------------------------- */
/* Generated files                                                                          */

static void lists_demos_in_order_and_by_mask(void **state) {
    (void)state;
    char path[600];
    tmp_path(path, sizeof path, "order.hdf5");
    /* Created out of order; HDF5 lists names alphabetically (demo_1, demo_10, demo_2). */
    write_file(path, (int[]){ 10, 2, 1, 0 }, (int[]){ 3, 4, 5, 6 }, 4, -1, OK_DEMO);
    ts_traj_spec s = robomimic_spec();
    ts_traj *t;
    ts_err err;
    if (ts_traj_open(&t, path, &s, &err)) fail_msg("%s", err.msg);
    assert_int_equal(ts_traj_num_demos(t), 4);
    const char *want[] = { "demo_0", "demo_1", "demo_2", "demo_10" };
    for (int d = 0; d < 4; d++) assert_string_equal(ts_traj_demo_name(t, d), want[d]);
    assert_int_equal(ts_traj_demo_len(t, 3), 3);
    assert_int_equal(ts_traj_action_dim(t), 7);
    assert_int_equal(ts_traj_lowdim_dim(t, 0), 3);
    assert_int_equal(ts_traj_lowdim_dim(t, 1), 1);
    assert_int_equal(ts_traj_lowdim_total(t), 5);
    int h, w, c;
    ts_traj_image_shape(t, 0, &h, &w, &c);
    assert_true(h == IH && w == IW && c == IC);
    ts_traj_close(t);

    s.filter = "train";
    if (ts_traj_open(&t, path, &s, &err)) fail_msg("%s", err.msg);
    assert_int_equal(ts_traj_num_demos(t), 1);
    assert_string_equal(ts_traj_demo_name(t, 0), "demo_1");
    ts_traj_close(t);
    s.filter = "test";
    assert_int_equal(ts_traj_open(&t, path, &s, &err), TS_ERR_DATA);
    assert_non_null(strstr(err.msg, "order.hdf5"));
    assert_non_null(strstr(err.msg, "'test'"));
    assert_non_null(strstr(err.msg, "train, valid"));
    printf("  unknown mask: %s\n", err.msg);
}

/* Every window of a two-demo file against the port of Diffusion Policy's sampler. */
static void windows_match_diffusion_policy(void **state) {
    (void)state;
    char path[600];
    tmp_path(path, sizeof path, "two_demos.hdf5");
    const int lens[2] = { 5, 7 };
    write_file(path, (int[]){ 0, 1 }, lens, 2, -1, OK_DEMO);
    for (int cfg = 0; cfg < 4; cfg++) {
        static const int T_[4] = { 4, 1, 5, 9 }, pb_[4] = { 1, 0, 3, 2 }, pa_[4] = { 2, 0, 4, 3 };
        ts_traj_spec s = robomimic_spec();
        s.horizon = T_[cfg];
        s.pad_before = pb_[cfg];
        s.pad_after = pa_[cfg];
        int T = s.horizon;
        ts_traj *t;
        ts_err err;
        if (ts_traj_open(&t, path, &s, &err)) fail_msg("%s", err.msg);

        /* The reference: both demos concatenated as a replay buffer, per key. */
        int64_t ends[2] = { lens[0], lens[0] + lens[1] };
        size_t isz = (size_t)IH * IW * IC;
        float *act = malloc(sizeof(float) * 12 * 7), *low = malloc(sizeof(float) * 12 * 5);
        float *img = malloc(sizeof(float) * 12 * isz);
        for (int d = 0, row = 0; d < 2; d++)
            for (int st = 0; st < lens[d]; st++, row++) {
                for (int j = 0; j < 7; j++) act[row * 7 + j] = (float)act_val(d, st, j);
                for (int j = 0; j < 3; j++) low[row * 5 + j] = (float)eef_val(d, st, j);
                low[row * 5 + 3] = grip_val(d, st);
                low[row * 5 + 4] = st == lens[d] - 1;
                for (size_t i = 0; i < isz; i++) img[row * isz + i] = img_val(d, st, i);
            }
        dp_index ix[64];
        int n = dp_create_indices(ends, 2, T, s.pad_before, s.pad_after, ix);
        assert_int_equal(ts_traj_num_windows(t), n);

        size_t fT = sizeof(float) * (size_t)T;
        float *ra = malloc(fT * 7), *rl = malloc(fT * 5), *ri = malloc(fT * isz);
        float *ga = malloc(fT * 7), *gl = malloc(fT * 5);
        uint8_t *gi = malloc((size_t)T * isz);
        for (int i = 0; i < n; i++) {
            if (ts_traj_read_window(t, i, ga, gl, (uint8_t *[]){ gi }, &err))
                fail_msg("%s", err.msg);
            dp_sample(act, 7, ix[i], T, ra);
            dp_sample(low, 5, ix[i], T, rl);
            dp_sample(img, (int)isz, ix[i], T, ri);
            assert_memory_equal(ga, ra, sizeof(float) * (size_t)T * 7);
            assert_memory_equal(gl, rl, sizeof(float) * (size_t)T * 5);
            for (size_t k = 0; k < (size_t)T * isz; k++) assert_int_equal(gi[k], (int)ri[k]);
        }
        /* A window of demo 1 starting at -1: step 0 repeated once, then 0, 1, ... */
        int d;
        int64_t st;
        ts_traj_window(t, ts_traj_num_windows(t) - 1, &d, &st);
        assert_int_equal(d, 1);
        assert_int_equal(st, lens[1] - T + s.pad_after);
        printf("  T=%d pad_before=%d pad_after=%d: %d windows equal to Diffusion Policy's\n", T,
               s.pad_before, s.pad_after, n);
        free(ra), free(rl), free(ri), free(ga), free(gl), free(gi);
        free(act), free(low), free(img);
        ts_traj_close(t);
    }
}

/* Parts may be skipped (NULL), and float64 rounds to the nearest float32. */
static void read_parts_and_conversion(void **state) {
    (void)state;
    char path[600];
    tmp_path(path, sizeof path, "two_demos.hdf5");
    write_file(path, (int[]){ 0, 1 }, (int[]){ 5, 7 }, 2, -1, OK_DEMO);
    ts_traj_spec s = robomimic_spec();
    s.n_lowdim = 0;
    s.n_images = 0;
    s.lowdim[0] = NULL;
    ts_traj *t;
    ts_err err;
    if (ts_traj_open(&t, path, &s, &err)) fail_msg("%s", err.msg);
    float a[3 * 7];
    if (ts_traj_read(t, 1, 5, 3, a, NULL, NULL, &err)) fail_msg("%s", err.msg);
    for (int i = 0; i < 3; i++) {
        int step = 5 + i < 7 ? 5 + i : 6;
        for (int j = 0; j < 7; j++) assert_true(a[i * 7 + j] == (float)act_val(1, step, j));
    }
    ts_traj_close(t);
}

/* A low-dimensional key with a column range reads those columns of every step (padding at the
 * ends included), beside another key; malformed or out-of-range ranges are errors. */
static void column_ranges(void **state) {
    (void)state;
    char path[600];
    tmp_path(path, sizeof path, "two_demos.hdf5");
    write_file(path, (int[]){ 0, 1 }, (int[]){ 5, 7 }, 2, -1, OK_DEMO);
    ts_traj_spec s = robomimic_spec();
    s.lowdim[0] = "actions[2:5]";
    s.lowdim[1] = "obs/gripper";
    s.n_lowdim = 2;
    s.n_images = 0;
    ts_traj *t;
    ts_err err;
    if (ts_traj_open(&t, path, &s, &err)) fail_msg("%s", err.msg);
    assert_int_equal(ts_traj_lowdim_dim(t, 0), 3);
    assert_int_equal(ts_traj_lowdim_total(t), 4);
    float low[4 * 4];
    if (ts_traj_read(t, 1, 5, 4, NULL, low, NULL, &err)) fail_msg("%s", err.msg);
    for (int i = 0; i < 4; i++) {
        int step = 5 + i < 7 ? 5 + i : 6;
        for (int j = 0; j < 3; j++) assert_true(low[i * 4 + j] == (float)act_val(1, step, 2 + j));
        assert_true(low[i * 4 + 3] == grip_val(1, step));
    }
    ts_traj_close(t);
    s.lowdim[0] = "actions[4:]"; /* to the end */
    s.n_lowdim = 1;
    if (ts_traj_open(&t, path, &s, &err)) fail_msg("%s", err.msg);
    assert_int_equal(ts_traj_lowdim_total(t), 3);
    ts_traj_close(t);
    static const char *const bad[] = { "actions[5:3]", "actions[2:9]", "actions[x:3]",
                                       "actions[1:2", "[1:2]", "obs/gripper[0:1]" };
    for (int i = 0; i < 6; i++) {
        s.lowdim[0] = bad[i];
        t = NULL;
        assert_int_not_equal(ts_traj_open(&t, path, &s, &err), TS_OK);
        assert_null(t);
        printf("  %s: %s\n", bad[i], err.msg);
        assert_non_null(strstr(err.msg, "two_demos.hdf5"));
    }
}

static void expect_open_error(const char *file, int broken, int skip, const char *key,
                              const char *what) {
    char path[600];
    tmp_path(path, sizeof path, file);
    write_file(path, (int[]){ 0, 1, 2 }, (int[]){ 5, 7, 6 }, 3, 2, broken);
    ts_traj_spec s = robomimic_spec();
    s.skip_bad = skip;
    ts_traj *t = NULL;
    ts_err err = { 0 };
    ts_status st = ts_traj_open(&t, path, &s, &err);
    if (skip) {
        if (st) fail_msg("%s", err.msg);
        assert_int_equal(ts_traj_num_demos(t), 2);
        assert_int_equal(ts_traj_num_skipped(t), 1);
        ts_traj_close(t);
        return;
    }
    assert_int_equal(st, TS_ERR_DATA);
    assert_null(t);
    printf("  %s: %s\n", what, err.msg);
    assert_non_null(strstr(err.msg, file));
    assert_non_null(strstr(err.msg, "demo_2"));
    if (key) assert_non_null(strstr(err.msg, key));
}

static void errors_name_file_demo_and_key(void **state) {
    (void)state;
    expect_open_error("missing_key.hdf5", NO_EEF, 0, "obs/eef_pos", "missing key");
    expect_open_error("missing_key.hdf5", NO_EEF, 1, NULL, "missing key, skipped");
    expect_open_error("short_rewards.hdf5", SHORT_REWARDS, 0, "rewards", "length mismatch");
    expect_open_error("num_samples.hdf5", BAD_NUM_SAMPLES, 0, "num_samples", "num_samples");

    ts_traj_spec s = robomimic_spec();
    ts_traj *t;
    ts_err err;
    assert_int_equal(ts_traj_open(&t, "/nonexistent/x.hdf5", &s, &err), TS_ERR_IO);
    assert_non_null(strstr(err.msg, "/nonexistent/x.hdf5"));
    char path[600];
    tmp_path(path, sizeof path, "not_hdf5.hdf5");
    FILE *f = fopen(path, "wb");
    fputs("this is not an HDF5 file", f);
    fclose(f);
    assert_int_equal(ts_traj_open(&t, path, &s, &err), TS_ERR_FORMAT);
    printf("  not HDF5: %s\n", err.msg);
    assert_non_null(strstr(err.msg, "not_hdf5.hdf5"));

    /* A file cut short: the open or the read fails with the file's name, never a crash. */
    tmp_path(path, sizeof path, "two_demos.hdf5");
    write_file(path, (int[]){ 0, 1 }, (int[]){ 5, 7 }, 2, -1, OK_DEMO);
    char cut[600];
    tmp_path(cut, sizeof cut, "cut.hdf5");
    FILE *in = fopen(path, "rb");
    fseek(in, 0, SEEK_END);
    long n = ftell(in);
    fseek(in, 0, SEEK_SET);
    char *buf = malloc((size_t)n);
    assert_int_equal(fread(buf, 1, (size_t)n, in), (size_t)n);
    fclose(in);
    f = fopen(cut, "wb");
    fwrite(buf, 1, (size_t)n * 2 / 3, f);
    fclose(f);
    free(buf);
    assert_int_not_equal(ts_traj_open(&t, cut, &s, &err), TS_OK);
    printf("  truncated: %s\n", err.msg);
    assert_non_null(strstr(err.msg, "cut.hdf5"));
}

static void summary_of_generated_file(void **state) {
    (void)state;
    char path[600], out[600];
    tmp_path(path, sizeof path, "two_demos.hdf5");
    write_file(path, (int[]){ 0, 1 }, (int[]){ 5, 7 }, 2, -1, OK_DEMO);
    tmp_path(out, sizeof out, "summary.txt");
    FILE *f = fopen(out, "w+");
    ts_err err;
    if (ts_hdf5_summary(f, path, &err)) fail_msg("%s", err.msg);
    rewind(f);
    char text[8192];
    size_t n = fread(text, 1, sizeof text - 1, f);
    text[n] = 0;
    fclose(f);
    assert_non_null(strstr(text, "actions  (5, 7) float64"));
    assert_non_null(strstr(text, "agentview_image  (7, 4, 6, 3) uint8"));
    assert_non_null(strstr(text, "@num_samples = 7"));
    assert_non_null(strstr(text, "demos: 2 (demo_0 .. demo_1)"));
    assert_non_null(strstr(text, "steps: 12 (per demo: min 5, mean 6.0, max 7)"));
    assert_non_null(strstr(text, "masks: train (1 demos) valid (1 demos)"));
}

/* ---------------------------------------------------------------------------------------- */
/* The real robosuite files                                                                 */

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The whole of data/demo_1/<key> as float64, read with plain HDF5 calls. */
static double *read_all(const char *path, const char *key, int64_t *rows, int64_t *cols) {
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    char p[128];
    snprintf(p, sizeof p, "data/demo_1/%s", key);
    hid_t ds = H5Dopen2(f, p, H5P_DEFAULT), sp = H5Dget_space(ds);
    hsize_t dims[2];
    assert_int_equal(H5Sget_simple_extent_dims(sp, dims, NULL), 2);
    double *v = malloc(sizeof(double) * dims[0] * dims[1]);
    assert_true(H5Dread(ds, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, v) >= 0);
    *rows = (int64_t)dims[0];
    *cols = (int64_t)dims[1];
    H5Sclose(sp);
    H5Dclose(ds);
    H5Fclose(f);
    return v;
}

static void samples_robosuite(void **state) {
    (void)state;
    DIR *dir = opendir(g_data);
    assert_non_null(dir);
    struct dirent *e;
    int files = 0;
    while ((e = readdir(dir))) {
        size_t l = strlen(e->d_name);
        if (l < 5 || strcmp(e->d_name + l - 5, ".hdf5")) continue;
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", g_data, e->d_name);
        ts_traj_spec s;
        memset(&s, 0, sizeof s);
        s.actions = "actions";
        s.lowdim[0] = "states";
        s.n_lowdim = 1;
        s.horizon = 16;
        s.pad_before = 1;
        s.pad_after = 7;
        ts_traj *t;
        ts_err err;
        if (ts_traj_open(&t, path, &s, &err)) fail_msg("%s", err.msg);
        assert_int_equal(ts_traj_num_demos(t), 1);
        assert_string_equal(ts_traj_demo_name(t, 0), "demo_1");
        int64_t L = ts_traj_demo_len(t, 0), ar, ac, sr, sc;
        double *act = read_all(path, "actions", &ar, &ac);
        double *sts = read_all(path, "states", &sr, &sc);
        assert_int_equal(L, ar);
        assert_int_equal(ts_traj_action_dim(t), 7);
        assert_int_equal(ts_traj_lowdim_total(t), sc);
        assert_int_equal(ts_traj_num_windows(t), L - 16 + 1 + 7 + 1);
        /* Every window: each value is the float32 rounding of the stored float64. */
        float *a = malloc(sizeof(float) * 16 * 7), *o = malloc(sizeof(float) * 16 * (size_t)sc);
        int64_t nw = ts_traj_num_windows(t);
        for (int64_t i = 0; i < nw; i++) {
            if (ts_traj_read_window(t, i, a, o, NULL, &err)) fail_msg("%s", err.msg);
            int d;
            int64_t st;
            ts_traj_window(t, i, &d, &st);
            for (int k = 0; k < 16; k++) {
                int64_t r = st + k < 0 ? 0 : st + k >= L ? L - 1 : st + k;
                for (int j = 0; j < 7; j++) assert_true(a[k * 7 + j] == (float)act[r * 7 + j]);
                for (int j = 0; j < sc; j++) assert_true(o[k * sc + j] == (float)sts[r * sc + j]);
            }
        }
        double t0 = now();
        int reps = 0;
        while (now() - t0 < 0.2) {
            for (int64_t i = 0; i < nw; i++)
                if (ts_traj_read_window(t, i, a, o, NULL, &err)) fail_msg("%s", err.msg);
            reps++;
        }
        double wps = (double)reps * (double)nw / (now() - t0);
        printf("  %s: demo_1 %" PRId64 " steps, actions (%" PRId64 ", 7), states (%" PRId64
               ", %" PRId64 "); %" PRId64 " windows of 16 equal to HDF5's values; %.0f windows/s\n",
               e->d_name, L, L, L, sc, nw, wps);
        free(a), free(o), free(act), free(sts);
        ts_traj_close(t);

        /* A robomimic key that the raw layout lacks: named with file, demo and key. */
        s.lowdim[0] = "obs/robot0_eef_pos";
        assert_int_equal(ts_traj_open(&t, path, &s, &err), TS_ERR_DATA);
        assert_non_null(strstr(err.msg, e->d_name));
        assert_non_null(strstr(err.msg, "demo_1"));
        assert_non_null(strstr(err.msg, "obs/robot0_eef_pos"));
        files++;
    }
    closedir(dir);
    assert_int_equal(files, 5);
}

int main(int argc, char **argv) {
    snprintf(g_tmp, sizeof g_tmp, "%s/unit_hdf5_tmp", TS_BINARY_DIR);
    mkdir(g_tmp, 0755);
    if (argc > 1) {
        g_data = argv[1];
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(samples_robosuite),
        };
        return cmocka_run_group_tests_name("unit_hdf5_samples", tests, NULL, NULL);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(lists_demos_in_order_and_by_mask),
        cmocka_unit_test(windows_match_diffusion_policy),
        cmocka_unit_test(read_parts_and_conversion),
        cmocka_unit_test(column_ranges),
        cmocka_unit_test(errors_name_file_demo_and_key),
        cmocka_unit_test(summary_of_generated_file),
    };
    return cmocka_run_group_tests_name("unit_hdf5", tests, NULL, NULL);
}
