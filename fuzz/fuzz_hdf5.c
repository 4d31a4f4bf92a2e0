/* fuzz_hdf5.c: a libFuzzer target for the robot-trajectory reader (loaders/hdf5.c).
 *
 * ts_traj_open takes a path, so every input is written to a file in /dev/shm (the temporary
 * folder when /dev/shm is missing), then summarised as `tessera data inspect` does and opened
 * twice: in the robomimic layout (actions, a low-dimensional and an image observation, padded
 * windows, bad demos skipped) and in robosuite's (actions and states through the "train" mask,
 * bad demos an error). Up to eight windows of each are read, so that demo listing, mask
 * parsing, the shape checks, the window arithmetic and the hyperslab reads see hostile files.
 * The reader must return windows or an error; a crash, a leak or undefined behaviour in
 * loaders/hdf5.c is a finding. libhdf5 itself is not instrumented, and it is not a test of
 * correctness: tests/unit_hdf5.c is.
 *
 * Seeds: with TS_FUZZ_SEEDS=DIR in the environment, LLVMFuzzerInitialize writes two small
 * files there through the HDF5 C API (fuzz/run.sh does this), one per layout, before libFuzzer
 * reads its corpus. A crash replays with build-fuzz/fuzz/fuzz_hdf5 CRASH_FILE.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <hdf5.h>
#include <sanitizer/lsan_interface.h>

#include "loaders.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
const char *__lsan_default_suppressions(void);
const char *__asan_default_options(void);

/* libhdf5 1.10 leaks the object header it was loading into its metadata cache when the header
 * turns out corrupt (H5Oopen -> H5O_protect -> H5C_protect, found by this target in its first
 * minute). That is inside the library, not in loaders/hdf5.c, so leaks allocated under the
 * cache's protect are not findings; every other leak still is, and so is an HDF5 object that
 * loaders/hdf5.c leaves open (checked after each input). */
const char *__lsan_default_suppressions(void) { return "leak:H5C_protect\n"; }
/* The suppression needs whole allocation stacks, which the fast unwinder does not give through
 * libhdf5 (built without frame pointers). A corrupt header can also make libhdf5 ask malloc for
 * terabytes; glibc answers NULL and the library reports an error, so the sanitizer must answer
 * the same way (allocator_may_return_null) rather than stop. */
const char *__asan_default_options(void) {
    return "fast_unwind_on_malloc=0:allocator_may_return_null=1";
}

static void quiet_log(ts_log_level level, const char *msg, void *user) {
    (void)level, (void)msg, (void)user;
}

/* One dataset of the given type and shape filled with a ramp; chunked and deflated when
 * deflate is set, so that the seeds carry a filter pipeline too. */
static void put(hid_t loc, const char *name, hid_t type, int rank, const hsize_t *dims,
                int deflate) {
    hsize_t n = 1;
    for (int i = 0; i < rank; i++) n *= dims[i];
    double *v = malloc(n * sizeof *v);
    for (hsize_t i = 0; i < n; i++) v[i] = (double)(i % 200) * 0.5;
    hid_t sp = H5Screate_simple(rank, dims, NULL);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    if (deflate) {
        H5Pset_chunk(dcpl, rank, dims);
        H5Pset_deflate(dcpl, 4);
    }
    hid_t d = H5Dcreate2(loc, name, type, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    H5Dwrite(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, v);
    H5Dclose(d);
    H5Pclose(dcpl);
    H5Sclose(sp);
    free(v);
}

/* A small robomimic-style file (demo_0 of 5 steps, demo_1 of 3, a "train" mask) when
 * robomimic is set, else a robosuite-style one (demo_1, demo_2: actions and states, float64). */
static void write_seed(const char *path, int robomimic) {
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (!robomimic) H5Pset_libver_bounds(fapl, H5F_LIBVER_LATEST, H5F_LIBVER_LATEST);
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    if (f < 0) return;
    hid_t data = H5Gcreate2(f, "data", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    const int lens[2] = { 5, 3 };
    for (int d = 0; d < 2; d++) {
        char name[32];
        snprintf(name, sizeof name, "demo_%d", robomimic ? d : d + 1);
        hid_t g = H5Gcreate2(data, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        hsize_t L = (hsize_t)lens[d];
        put(g, "actions", robomimic ? H5T_IEEE_F32LE : H5T_IEEE_F64LE, 2, (hsize_t[]){ L, 7 },
            !robomimic);
        if (robomimic) {
            hid_t o = H5Gcreate2(g, "obs", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
            put(o, "eef", H5T_IEEE_F64LE, 2, (hsize_t[]){ L, 3 }, 0);
            put(o, "img", H5T_STD_U8LE, 4, (hsize_t[]){ L, 4, 4, 3 }, 1);
            H5Gclose(o);
            put(g, "rewards", H5T_IEEE_F64LE, 1, &L, 0);
            hid_t as = H5Screate(H5S_SCALAR);
            hid_t a = H5Acreate2(g, "num_samples", H5T_STD_I64LE, as, H5P_DEFAULT, H5P_DEFAULT);
            int64_t ns = (int64_t)L;
            H5Awrite(a, H5T_NATIVE_INT64, &ns);
            H5Aclose(a);
            H5Sclose(as);
        } else {
            put(g, "states", H5T_IEEE_F64LE, 2, (hsize_t[]){ L, 9 }, 0);
        }
        H5Gclose(g);
    }
    H5Gclose(data);
    /* mask/train: fixed-length strings, as robomimic's h5py code writes them. */
    hid_t m = H5Gcreate2(f, "mask", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    hid_t st = H5Tcopy(H5T_C_S1);
    H5Tset_size(st, 6);
    hsize_t one = 1;
    hid_t sp = H5Screate_simple(1, &one, NULL);
    hid_t ds = H5Dcreate2(m, "train", st, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dwrite(ds, st, H5S_ALL, H5S_ALL, H5P_DEFAULT, robomimic ? "demo_1" : "demo_2");
    H5Dclose(ds);
    H5Sclose(sp);
    H5Tclose(st);
    H5Gclose(m);
    H5Fclose(f);
    H5Pclose(fapl);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    ts_log_set_sink(quiet_log, NULL);
    setenv("HDF5_USE_FILE_LOCKING", "FALSE", 0);
    const char *dir = getenv("TS_FUZZ_SEEDS");
    if (dir && dir[0]) {
        /* Writing keeps object headers in libhdf5's free lists past H5Fclose, which LSan would
         * report at the first leak check; the seeds are not under test. */
        __lsan_disable();
        char path[1024];
        snprintf(path, sizeof path, "%s/robomimic.hdf5", dir);
        write_seed(path, 1);
        snprintf(path, sizeof path, "%s/robosuite.hdf5", dir);
        write_seed(path, 0);
        __lsan_enable();
    }
    return 0;
}

/* Open path with spec and read up to eight windows (the first, the last, some between). */
static void read_windows(const char *path, const ts_traj_spec *spec) {
    ts_err err;
    ts_traj *t = NULL;
    if (ts_traj_open(&t, path, spec, &err) != TS_OK) return;
    int64_t T = spec->horizon, A = ts_traj_action_dim(t), D = ts_traj_lowdim_total(t);
    size_t img_bytes[TS_TRAJ_MAX_KEYS] = { 0 }, total = (size_t)(T * (A + D)) * sizeof(float);
    for (int k = 0; k < spec->n_images; k++) {
        int h, w, c;
        ts_traj_image_shape(t, k, &h, &w, &c);
        img_bytes[k] = (size_t)T * (size_t)h * (size_t)w * (size_t)c;
        total += img_bytes[k];
    }
    volatile size_t sum = 0;
    for (int d = 0; d < ts_traj_num_demos(t); d++)
        sum += strlen(ts_traj_demo_name(t, d)) + (size_t)ts_traj_demo_len(t, d);
    (void)sum;
    /* The shapes come from the file: skip reading when a window would be over 64 MiB. */
    if (A < 0 || D < 0 || total > ((size_t)64 << 20)) goto done;
    float *act = malloc((size_t)(T * A + 1) * sizeof(float));
    float *low = malloc((size_t)(T * D + 1) * sizeof(float));
    uint8_t *img[TS_TRAJ_MAX_KEYS] = { 0 };
    for (int k = 0; k < spec->n_images; k++) img[k] = malloc(img_bytes[k] + 1);
    int64_t nw = ts_traj_num_windows(t);
    for (int64_t j = 0; j < 8 && j < nw; j++) {
        int64_t i = j < 4 ? j : nw - 1 - (j - 4);
        if (ts_traj_read_window(t, i, act, low, img, &err) != TS_OK) break;
        int demo;
        int64_t start;
        ts_traj_window(t, i, &demo, &start);
    }
    free(act);
    free(low);
    for (int k = 0; k < spec->n_images; k++) free(img[k]);
done:
    ts_traj_close(t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static char path[256];
    const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(path, sizeof path, "%s/tessera-fuzz-%d.hdf5", dir, (int)getpid());
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    size_t w = size ? fwrite(data, 1, size, f) : 0;
    if (fclose(f) != 0 || w != size) return 0;

    ts_err err;
    FILE *null = fopen("/dev/null", "w");
    if (null) {
        ts_hdf5_summary(null, path, &err);
        fclose(null);
    }
    ts_traj_spec robomimic = { .actions = "actions",
                               .lowdim = { "obs/eef", "rewards" },
                               .n_lowdim = 2,
                               .images = { "obs/img" },
                               .n_images = 1,
                               .horizon = 2,
                               .pad_before = 1,
                               .pad_after = 1,
                               .skip_bad = 1 };
    read_windows(path, &robomimic);
    ts_traj_spec robosuite = { .actions = "actions",
                               .lowdim = { "states" },
                               .n_lowdim = 1,
                               .filter = "train",
                               .horizon = 3 };
    read_windows(path, &robosuite);
    /* Every file, group, dataset, type and space that loaders/hdf5.c opened is closed. */
    if (H5Fget_obj_count((hid_t)H5F_OBJ_ALL, H5F_OBJ_ALL) != 0) __builtin_trap();
    unlink(path);
    return 0;
}
