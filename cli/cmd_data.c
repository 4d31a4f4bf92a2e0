/* cmd_data.c: the `tessera data` verb; for now one command, `inspect`.
 *
 * `tessera data inspect PATH...` tells what a data file holds, through the same loaders the
 * training pipeline uses: for an HDF5 file the group tree with shapes and dtypes and the demos
 * and steps of a robomimic, LIBERO or robosuite file; for a video its container, codec, size,
 * fps, frame count and duration; for a JPEG or PNG its size and format; for a WebDataset tar
 * shard its samples, fields by extension, first keys and damaged members; for a CSV/TSV file its
 * rows, columns and missing image files. Files are told apart by their signatures (the
 * extension only for tar and CSV).
 * `tessera data synth shapes --out DIR` writes the bundled synthetic image-caption dataset
 * (loaders/synth.c) as WebDataset shards, with class and prompt-template files for zero-shot
 * evaluation, and trains a BPE tokenizer on its captions (text/).
 * `tessera data synth reach2d --out FILE.hdf5 --demos N` writes scripted-expert demonstrations
 * of the reach2d task (action/reach2d.c) in the robomimic HDF5 layout (loaders/hdf5.c's
 * writer), each demo with its language instruction.
 * Exit codes as every verb: 0 ok, 1 a file that cannot be read or is not understood, 2 usage.
 *
 * What it is not: a validator that decodes every frame or sample; reading a file whole is the
 * loaders' tests' job.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "tessera.h"
#include "loaders.h"
#include "text.h"
#include "action.h"
#include "cli.h"

static void data_usage(FILE *out) {
    fprintf(out,
            "usage: tessera data inspect PATH...\n"
            "       tessera data synth shapes --out DIR [options]\n"
            "       tessera data synth reach2d --out FILE.hdf5 --demos N [options]\n"
            "\n"
            "inspect: print a summary of each data file:\n"
            "  HDF5    the tree of groups and datasets (shapes, dtypes, short attributes);\n"
            "          for robomimic/LIBERO/robosuite files the demos, steps and masks\n"
            "  video   container, codec, size, fps, frame count (counted) and duration\n"
            "  image   JPEG or PNG: format and size\n"
            "  tar     a WebDataset shard (.tar, .tgz, .tar.gz): samples, fields by extension,\n"
            "          first keys, damaged members\n"
            "  CSV/TSV rows, columns, the image column (open_clip's 'filepath' or a column\n"
            "          named like a path) and its missing files (relative to the CSV's folder)\n"
            "\n"
            "synth shapes: write the synthetic image-caption dataset (one shape on a\n"
            "textured background; captions name its shape, colour, size and position, e.g.\n"
            "\"a small red triangle at the top left\") into DIR as WebDataset shards\n"
            "train-{000000..N-1}.tar and val-{000000..M-1}.tar of KEY.jpg, KEY.txt, KEY.json;\n"
            "zero-shot classes shapes.txt, colours.txt, sizes.txt, positions.txt with prompt\n"
            "templates shapes-templates.txt, ...; the training captions captions-train.txt;\n"
            "BPE merges trained on them, " TS_SYNTH_VOCAB_FILE "; manifest.json and README.txt.\n"
            "The same options give byte-identical files.\n"
            "  --out DIR           output folder (required; created when missing). A folder\n"
            "                      holding other files than synth's is refused without --force;\n"
            "                      synth's own files are overwritten\n"
            "  --seed N            seed (default 0)\n"
            "  --size S            image side in pixels, 16..1024 (default 64)\n"
            "  --train-shards N    training shards (default 8)\n"
            "  --val-shards N      validation shards, held-out draws (default 2)\n"
            "  --per-shard N       samples per shard (default 500)\n"
            "  --quality Q         JPEG quality 1..100 (default 90)\n"
            "  --vocab-size N      BPE vocabulary bound, 515..49408 (default 1024; merging stops\n"
            "                      earlier when every caption word is one token)\n"
            "  --force             write into a folder that holds other files\n"
            "\n"
            "synth reach2d: write demonstrations of the built-in reach2d task (a point mass\n"
            "on the unit square moves to the coloured target its instruction names, e.g.\n"
            "\"reach the red target\") by the scripted expert, in the robomimic HDF5 layout:\n"
            "data/demo_N/ with actions (L, 2) float32 (velocity commands in [-1, 1]),\n"
            "obs/agentview_image (L, S, S, 3) uint8, obs/agent_pos (L, 2) and obs/agent_vel\n"
            "(L, 2) float32, obs/proprio (L, 4) float32 (both side by side), rewards (1 at the success step), dones, @num_samples and\n"
            "@language_instruction; data@total, data@env_args (the task's settings as JSON);\n"
            "mask/train and mask/valid. Episodes the expert fails are left out and counted.\n"
            "The same options give a byte-identical file; it is written to FILE.tmp and\n"
            "renamed when complete.\n"
            "  --out FILE          output file (required; replaced when it exists)\n"
            "  --demos N           demonstrations, 1..1000000 (required)\n"
            "  --seed N            seed (default 0)\n"
            "  --size S            image side in pixels, 16..512 (default 64)\n"
            "  --targets K         targets per episode, 1..%d (default 3)\n"
            "  --valid-fraction F  share of the demos in mask/valid, 0 <= F < 1 (default 0.1)\n"
            "\n"
            "options:\n"
            "  -h, --help   this help\n"
            "\n"
            "Exit status: 0 ok, 1 a file that cannot be read or understood, 2 usage error.\n",
            ts_reach2d_palette_size());
}

/* `tessera data synth reach2d --out FILE --demos N ...`: expert episodes of reach2d, one demo
 * each, then the train/valid masks. Episode seeds come from one stream seeded with --seed;
 * the valid demos are a seeded random subset. */
static int cmd_synth_reach2d(int argc, char **argv) {
    ts_reach2d_cfg cfg = ts_reach2d_cfg_default();
    const char *out = NULL;
    unsigned long long seed = 0, demos = 0;
    double valid_frac = 0.1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            data_usage(stdout);
            return 0;
        }
        static const char *const valued[] = { "--out", "--demos", "--seed", "--size",
                                              "--targets", "--valid-fraction", NULL };
        int k = 0;
        while (valued[k] && strcmp(a, valued[k])) k++;
        if (!valued[k]) {
            fprintf(stderr, "tessera data synth: unknown option %s (see tessera data --help)\n", a);
            return 2;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "tessera data synth: %s needs a value\n", a);
            return 2;
        }
        const char *v = argv[++i];
        char *end;
        errno = 0;
        if (k == 0) {
            out = v;
        } else if (k == 5) {
            double f = strtod(v, &end);
            if (!*v || *end || errno || !(f >= 0 && f < 1)) {
                fprintf(stderr, "tessera data synth: --valid-fraction must be a number in "
                                "[0, 1) (got %s)\n", v);
                return 2;
            }
            valid_frac = f;
        } else {
            unsigned long long n = strtoull(v, &end, 10);
            static const long long lo[] = { 0, 1, 0, 16, 1 };
            long long hi[] = { 0, 1000000, 0, 512, ts_reach2d_palette_size() };
            if (!*v || *end || v[0] == '-' || errno ||
                (k != 2 && ((long long)n < lo[k] || (long long)n > hi[k]))) {
                if (k == 2)
                    fprintf(stderr, "tessera data synth: --seed must be a non-negative integer "
                                    "(got %s)\n", v);
                else
                    fprintf(stderr, "tessera data synth: %s must be an integer in %lld..%lld "
                                    "(got %s)\n", a, lo[k], hi[k], v);
                return 2;
            }
            if (k == 1) demos = n;
            else if (k == 2) seed = n;
            else if (k == 3) cfg.size = (int)n;
            else cfg.n_targets = (int)n;
        }
    }
    if (!out || !*out) {
        fprintf(stderr, "tessera data synth: --out FILE is required (see tessera data --help)\n");
        return 2;
    }
    if (!demos) {
        fprintf(stderr, "tessera data synth: --demos N is required (see tessera data --help)\n");
        return 2;
    }
    /* the instructions, one a line: the corpus of the instruction vocabulary */
    char corpus_path[4200], vocab_path[4200];
    {
        size_t n = strlen(out);
        size_t cut = n > 5 && !strcmp(out + n - 5, ".hdf5") ? n - 5
                     : n > 3 && !strcmp(out + n - 3, ".h5") ? n - 3 : n;
        snprintf(vocab_path, sizeof vocab_path, "%.*s-bpe.txt.gz", (int)cut, out);
        snprintf(corpus_path, sizeof corpus_path, "%.*s-instructions.tmp", (int)cut, out);
    }
    FILE *corpus = NULL;
    int S = cfg.size, M = cfg.max_steps, N = (int)demos;
    size_t frame = (size_t)S * S * 3;
    float *pos = malloc(sizeof(float) * 2 * M), *vel = malloc(sizeof(float) * 2 * M);
    float *actions = malloc(sizeof(float) * 2 * M), *proprio = malloc(sizeof(float) * 4 * M),
          *rewards = malloc(sizeof(float) * M);
    uint8_t *images = malloc(frame * M), *dones = malloc(M);
    int *perm = malloc(sizeof(int) * N);
    ts_reach2d *env = ts_reach2d_new(&cfg);
    ts_traj_writer *w = NULL;
    ts_err err = { 0 };
    ts_status st = TS_OK;
    int rc = 1;
    if (!actions || !proprio || !rewards || !images || !dones || !perm || !pos || !vel) {
        fprintf(stderr, "tessera: error: out of memory\n");
        goto done;
    }
    if ((st = ts_traj_writer_open(&w, out, &err))) goto fail;
    if (!(corpus = fopen(corpus_path, "w"))) {
        st = ts_fail(&err, TS_ERR_IO, "%s: cannot write: %s", corpus_path, strerror(errno));
        goto fail;
    }
    ts_rng seeds;
    ts_rng_seed(&seeds, seed);
    long long failed = 0, total = 0;
    int minlen = M, maxlen = 0;
    for (int d = 0; d < N;) {
        ts_reach2d_reset(env, ts_rng_next(&seeds));
        int L = 0, end;
        do {
            ts_reach2d_render(env, images + frame * L);
            ts_reach2d_proprio(env, proprio + 4 * L);
            ts_reach2d_expert(env, actions + 2 * L);
            end = ts_reach2d_step(env, actions + 2 * L);
            rewards[L] = (float)ts_reach2d_success(env);
            dones[L] = (uint8_t)end;
            L++;
        } while (!end);
        for (int k = 0; k < L; k++) {
            pos[2 * k] = proprio[4 * k];
            pos[2 * k + 1] = proprio[4 * k + 1];
            vel[2 * k] = proprio[4 * k + 2];
            vel[2 * k + 1] = proprio[4 * k + 3];
        }
        if (!ts_reach2d_success(env)) {
            if (++failed > 100 + (long long)N) {
                fprintf(stderr, "tessera: error: the reach2d expert failed %lld episodes\n",
                        failed);
                goto done;
            }
            continue;
        }
        ts_traj_demo_data dd = {
            .len = L, .actions = actions, .action_dim = 2,
            .n_lowdim = 3, .lowdim_keys = { "obs/agent_pos", "obs/agent_vel", "obs/proprio" },
            .lowdim = { pos, vel, proprio }, .lowdim_dim = { 2, 2, TS_REACH2D_PROPRIO },
            .n_images = 1, .image_keys = { "obs/agentview_image" }, .images = { images },
            .image_shape = { { S, S, 3 } },
            .rewards = rewards, .dones = dones, .instruction = ts_reach2d_instruction(env),
        };
        if ((st = ts_traj_writer_demo(w, &dd, &err))) goto fail;
        fprintf(corpus, "%s\n", ts_reach2d_instruction(env));
        total += L;
        if (L < minlen) minlen = L;
        if (L > maxlen) maxlen = L;
        d++;
    }
    /* valid: the first n_valid of a seeded permutation, listed in order; train: the rest. */
    int n_valid = (int)(valid_frac * N + 0.5);
    if (n_valid >= N) n_valid = N - 1;
    ts_rng split;
    ts_rng_seed(&split, seed ^ 0x76616c6964ULL);
    for (int i = 0; i < N; i++) perm[i] = i;
    for (int i = N - 1; i > 0; i--) {
        int j = (int)(ts_rng_next(&split) % (uint64_t)(i + 1)), t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    char *in_valid = calloc((size_t)N, 1);
    if (!in_valid) {
        fprintf(stderr, "tessera: error: out of memory\n");
        goto done;
    }
    for (int i = 0; i < n_valid; i++) in_valid[perm[i]] = 1;
    int nt = 0, nv = 0;
    for (int i = 0; i < N; i++) /* perm reused: train indices, then valid indices */
        if (!in_valid[i]) perm[nt++] = i;
    for (int i = 0; i < N; i++)
        if (in_valid[i]) perm[nt + nv++] = i;
    free(in_valid);
    if ((st = ts_traj_writer_mask(w, "train", perm, nt, &err)) ||
        (st = ts_traj_writer_mask(w, "valid", perm + nt, nv, &err)))
        goto fail;
    char env_args[512];
    snprintf(env_args, sizeof env_args,
             "{\"env_name\": \"reach2d\", \"type\": \"tessera\", \"env_kwargs\": {\"size\": %d, "
             "\"n_targets\": %d, \"max_steps\": %d, \"success_radius\": %g, \"dt\": %g, "
             "\"max_speed\": %g, \"damping\": %g}, \"seed\": %llu}",
             cfg.size, cfg.n_targets, cfg.max_steps, cfg.success_radius, cfg.dt, cfg.max_speed,
             cfg.damping, seed);
    st = ts_traj_writer_close(w, env_args, &err);
    w = NULL;
    if (st) goto fail;
    /* a BPE vocabulary of the instructions (every word ends as one token), for the text tower */
    if (fclose(corpus) != 0) {
        corpus = NULL;
        st = ts_fail(&err, TS_ERR_IO, "%s: cannot write: %s", corpus_path, strerror(errno));
        goto fail;
    }
    corpus = NULL;
    {
        const char *paths[1] = { corpus_path };
        int merges = 0;
        ts_log_set_level(TS_LOG_ERROR);
        st = ts_bpe_train(paths, 1, 1024, vocab_path, &merges, &err);
        ts_log_set_level(TS_LOG_INFO);
        if (st) goto fail;
        fprintf(stderr, "tessera data synth: wrote %s (%d merges, vocabulary %d)\n", vocab_path,
                merges, merges + 514);
    }
    printf("%s: %d demos, %lld steps (per demo: min %d, mean %.1f, max %d), %d x %d pixels, "
           "%d targets (seed %llu); mask/train %d, mask/valid %d; expert failures left out: "
           "%lld\n", out, N, total, minlen, (double)total / N, maxlen, S, S, cfg.n_targets,
           seed, nt, nv, failed);
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "tessera: error: %s\n", err.msg);
    rc = st == TS_ERR_USAGE ? 2 : 1;
done:
    if (corpus) fclose(corpus);
    remove(corpus_path);
    ts_traj_writer_abort(w);
    ts_reach2d_free(env);
    free(actions);
    free(proprio);
    free(pos);
    free(vel);
    free(rewards);
    free(images);
    free(dones);
    free(perm);
    return rc;
}

static void synth_progress(void *user, const char *path, int64_t done, int64_t total) {
    (void)user;
    fprintf(stderr, "tessera data synth: wrote %s (%lld/%lld samples)\n", path, (long long)done,
            (long long)total);
}

/* `tessera data synth shapes --out DIR ...`: the shards, then the tokenizer trained on the
 * training captions, then the manifest that marks the folder finished. */
static int cmd_synth(int argc, char **argv) {
    if (argc < 1) {
        fprintf(stderr, "tessera data synth: name a dataset (valid: shapes, reach2d; see "
                        "tessera data --help)\n");
        return 2;
    }
    if (!strcmp(argv[0], "-h") || !strcmp(argv[0], "--help")) {
        data_usage(stdout);
        return 0;
    }
    if (!strcmp(argv[0], "reach2d")) return cmd_synth_reach2d(argc, argv);
    if (strcmp(argv[0], "shapes")) {
        fprintf(stderr, "tessera data synth: unknown dataset '%s' (valid: shapes, reach2d)\n",
                argv[0]);
        return 2;
    }
    ts_synth_cfg cfg = { .seed = 0, .size = 64, .train_shards = 8, .val_shards = 2,
                         .per_shard = 500, .quality = 90 };
    const char *out = NULL;
    int force = 0;
    long long vocab = 1024;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            data_usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--force")) {
            force = 1;
            continue;
        }
        static const char *const valued[] = { "--out", "--seed", "--size", "--train-shards",
                                              "--val-shards", "--per-shard", "--quality",
                                              "--vocab-size", NULL };
        int k = 0;
        while (valued[k] && strcmp(a, valued[k])) k++;
        if (!valued[k]) {
            fprintf(stderr, "tessera data synth: unknown option %s (see tessera data --help)\n", a);
            return 2;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "tessera data synth: %s needs a value\n", a);
            return 2;
        }
        const char *v = argv[++i];
        if (k == 0) {
            out = v;
            continue;
        }
        char *end;
        errno = 0;
        unsigned long long n = strtoull(v, &end, 10);
        static const long long lo[] = { 0, 0, 16, 1, 0, 1, 1, 515 };
        static const long long hi[] = { 0, 0, 1024, 999999, 999999, 1000000, 100, 49408 };
        if (!*v || *end || v[0] == '-' || errno ||
            (k > 1 && ((long long)n < lo[k] || (long long)n > hi[k]))) {
            if (k == 1)
                fprintf(stderr, "tessera data synth: --seed must be a non-negative integer "
                                "(got %s)\n", v);
            else
                fprintf(stderr, "tessera data synth: %s must be an integer in %lld..%lld (got "
                                "%s)\n", a, lo[k], hi[k], v);
            return 2;
        }
        switch (k) {
        case 1: cfg.seed = n; break;
        case 2: cfg.size = (int)n; break;
        case 3: cfg.train_shards = (int)n; break;
        case 4: cfg.val_shards = (int)n; break;
        case 5: cfg.per_shard = (int)n; break;
        case 6: cfg.quality = (int)n; break;
        default: vocab = (long long)n; break;
        }
    }
    if (!out || !*out) {
        fprintf(stderr, "tessera data synth: --out DIR is required (see tessera data --help)\n");
        return 2;
    }
    ts_err err = { 0 };
    ts_status st = ts_synth_shapes_write(out, &cfg, force, synth_progress, NULL, &err);
    if (st) {
        fprintf(stderr, "tessera: error: %s\n", err.msg);
        return st == TS_ERR_USAGE ? 2 : 1;
    }
    char captions[4200], merges_path[4200];
    snprintf(captions, sizeof captions, "%s/%s", out, TS_SYNTH_CAPTIONS_FILE);
    snprintf(merges_path, sizeof merges_path, "%s/%s", out, TS_SYNTH_VOCAB_FILE);
    const char *corpus[1] = { captions };
    int merges = 0;
    /* The trainer warns when merging stops before the asked size; here that is expected (every
     * caption word ends as one token), so only errors are logged. */
    ts_log_set_level(TS_LOG_ERROR);
    st = ts_bpe_train(corpus, 1, (int)vocab, merges_path, &merges, &err);
    ts_log_set_level(TS_LOG_INFO);
    if (st ||
        (st = ts_synth_shapes_manifest(out, &cfg, TS_SYNTH_VOCAB_FILE, merges + 514, &err))) {
        fprintf(stderr, "tessera: error: %s\n", err.msg);
        return 1;
    }
    fprintf(stderr, "tessera data synth: wrote %s (%d merges, vocabulary %d)\n", merges_path,
            merges, merges + 514);
    printf("%s: %lld train and %lld val samples of %d x %d pixels (seed %llu); see "
           "%s/README.txt\n", out, (long long)cfg.train_shards * cfg.per_shard,
           (long long)cfg.val_shards * cfg.per_shard, cfg.size, cfg.size,
           (unsigned long long)cfg.seed, out);
    return 0;
}

static int has_suffix(const char *s, const char *suf) {
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && !strcasecmp(s + n - m, suf);
}

/* HDF5's signature sits at 0 or, after a user block, at 512, 1024, 2048, ... */
static int is_hdf5(FILE *f) {
    static const unsigned char sig[8] = { 0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n' };
    for (long off = 0; off <= 1 << 20; off = off ? off * 2 : 512) {
        unsigned char b[8];
        if (fseek(f, off, SEEK_SET) || fread(b, 1, 8, f) != 8) return 0;
        if (!memcmp(b, sig, 8)) return 1;
    }
    return 0;
}

static int inspect_image(const char *path, ts_err *err) {
    ts_image_u8 im;
    ts_image_u8_init(&im);
    ts_image_info info;
    ts_status st = ts_image_load(&im, path, NULL, &info, err);
    if (!st) {
        printf("%s: image\n", path);
        printf("  format:      %s\n", info.format == TS_IMG_JPEG ? "JPEG" : "PNG");
        printf("  size:        %d x %d (as stored)\n", info.stored_w, info.stored_h);
        if (info.orientation != 1)
            printf("  orientation: EXIF %d, decodes to %d x %d\n", info.orientation, im.w, im.h);
    }
    ts_image_u8_free(&im);
    return st;
}

static int inspect_video(const char *path, ts_err *err) {
    ts_video *v;
    ts_status st = ts_video_open(&v, path, 1, err);
    if (st) return st;
    const ts_video_info *in = ts_video_get_info(v);
    printf("%s: video\n", path);
    printf("  container: %s\n", in->container);
    printf("  codec:     %s (%s)\n", in->codec, in->pix_fmt);
    printf("  size:      %d x %d\n", in->w, in->h);
    printf("  fps:       %.3f\n", in->fps);
    if (in->header_frames >= 0)
        printf("  frames:    %lld (header: %lld)\n", (long long)in->frames,
               (long long)in->header_frames);
    else
        printf("  frames:    %lld (the header does not say; counted)\n", (long long)in->frames);
    printf("  duration:  %.3f s\n", in->duration);
    ts_video_close(v);
    return TS_OK;
}

/* A WebDataset shard: read every member (nothing is decoded) and tell what it holds. Bad
 * samples are reported and counted; a shard that breaks off (a damaged header or a member cut
 * short) is an error after the summary. */
static int inspect_tar(const char *path) {
    ts_err err = { 0 };
    ts_wds_shard *sh;
    if (ts_wds_shard_open(&sh, path, &err)) {
        fprintf(stderr, "tessera: error: %s\n", err.msg);
        return 1;
    }
    enum { NEXT = 32, NKEYS = 5, NMSG = 5 };
    char ext[NEXT][24];
    int64_t ext_n[NEXT] = { 0 }, bad[TS_BAD_COUNT] = { 0 }, samples = 0, nbad = 0;
    int next = 0, other_ext = 0;
    char keys[NKEYS][64], msgs[NMSG][512];
    ts_sample sm;
    ts_sample_init(&sm);
    ts_status st;
    for (;;) {
        int got;
        st = ts_wds_shard_next(sh, &sm, &got, &err);
        if (st || !got) break;
        if (samples < NKEYS) snprintf(keys[samples], sizeof keys[0], "%.63s", sm.key);
        samples++;
        for (int f = 0; f < sm.nfields; f++) {
            int k = 0;
            while (k < next && strcmp(ext[k], sm.fields[f])) k++;
            if (k == next && next < NEXT) snprintf(ext[next++], sizeof ext[0], "%s", sm.fields[f]);
            if (k < next) ext_n[k]++;
            else other_ext = 1;
        }
        if (sm.bad) {
            if (nbad < NMSG) snprintf(msgs[nbad], sizeof msgs[0], "%.500s", sm.bad_msg);
            nbad++;
            bad[sm.bad]++;
        }
    }
    printf("%s: WebDataset shard\n", path);
    printf("  samples:    %lld (%lld members)\n", (long long)samples,
           (long long)ts_wds_shard_members(sh));
    printf("  fields:    ");
    for (int k = 0; k < next; k++) printf(" %s %lld%s", ext[k], (long long)ext_n[k], k + 1 < next ? "," : "");
    printf("%s\n", next ? (other_ext ? " (and more)" : "") : " none");
    printf("  first keys:");
    for (int k = 0; k < NKEYS && k < samples; k++) printf(" %s", keys[k]);
    printf("\n");
    printf("  bad:        %lld sample%s", (long long)nbad, nbad == 1 ? "" : "s");
    for (int r = 1; r < TS_BAD_COUNT; r++)
        if (bad[r]) printf(" (%s %lld)", ts_bad_reason_str(r), (long long)bad[r]);
    printf("\n");
    for (int k = 0; k < nbad && k < NMSG; k++) printf("    %s\n", msgs[k]);
    ts_sample_free(&sm);
    ts_wds_shard_close(sh);
    fflush(stdout);
    if (st) {
        fprintf(stderr, "tessera: error: %s\n", err.msg);
        return 1;
    }
    if (bad[TS_BAD_TRUNCATED]) {
        fprintf(stderr, "tessera: error: %s: damaged shard: a member is cut short\n", path);
        return 1;
    }
    return 0;
}

/* Does a column name look like it holds image paths / captions? */
static int name_like(const char *name, const char *const *words) {
    char low[128];
    size_t i = 0;
    for (; name[i] && i + 1 < sizeof low; i++) low[i] = (char)tolower((unsigned char)name[i]);
    low[i] = 0;
    for (int k = 0; words[k]; k++)
        if (strstr(low, words[k])) return 1;
    return 0;
}

/* A CSV/TSV of image paths: rows, columns, and which image files are missing. */
static int inspect_csv(const char *path) {
    ts_err err = { 0 };
    ts_csv *c;
    ts_csv_spec spec = { path, "", "", 0 };
    if (ts_csv_open(&c, &spec, &err)) {
        fprintf(stderr, "tessera: error: %s\n", err.msg);
        return 1;
    }
    static const char *const img_words[] = { "path", "file", "image", "img", "jpg", "url", NULL };
    static const char *const cap_words[] = { "caption", "text", "txt", "title", NULL };
    int img = -1, cap = -1;
    for (int j = 0; j < ts_csv_cols(c); j++) {
        const char *n = ts_csv_col_name(c, j);
        if (!strcmp(n, "filepath")) img = j;
        if (!strcmp(n, "title")) cap = j;
    }
    for (int j = 0; j < ts_csv_cols(c) && img < 0; j++)
        if (name_like(ts_csv_col_name(c, j), img_words)) img = j;
    for (int j = 0; j < ts_csv_cols(c) && cap < 0; j++)
        if (j != img && name_like(ts_csv_col_name(c, j), cap_words)) cap = j;
    printf("%s: CSV\n", path);
    printf("  rows:       %lld\n", (long long)ts_csv_rows(c));
    printf("  columns:   ");
    for (int j = 0; j < ts_csv_cols(c); j++)
        printf(" %s%s", ts_csv_col_name(c, j), j + 1 < ts_csv_cols(c) ? "," : "");
    printf("\n");
    if (cap >= 0) {
        int64_t empty = 0;
        for (int64_t r = 0; r < ts_csv_rows(c); r++) empty += !ts_csv_cell(c, r, cap)[0];
        printf("  captions:   column '%s' (%lld empty)\n", ts_csv_col_name(c, cap), (long long)empty);
    }
    if (img < 0) {
        printf("  images:     no column named like a path (open_clip's --csv-img-key is "
               "'filepath' by default)\n");
        ts_csv_close(c);
        return 0;
    }
    int64_t missing = 0, urls = 0;
    char first[3][1200];
    for (int64_t r = 0; r < ts_csv_rows(c); r++) {
        const char *cell = ts_csv_cell(c, r, img);
        if (!strncmp(cell, "http://", 7) || !strncmp(cell, "https://", 8)) {
            urls++;
            continue;
        }
        char full[4096];
        struct stat stt;
        ts_csv_resolve(c, cell, full, sizeof full);
        if (!cell[0] || stat(full, &stt) != 0 || !S_ISREG(stt.st_mode)) {
            if (missing < 3)
                snprintf(first[missing], sizeof first[0], "row %lld (line %lld): %.1100s",
                         (long long)r + 1, (long long)ts_csv_line(c, r), cell[0] ? full : "(empty)");
            missing++;
        }
    }
    printf("  images:     column '%s'; %lld missing file%s", ts_csv_col_name(c, img),
           (long long)missing, missing == 1 ? "" : "s");
    if (urls) printf(", %lld URLs (not checked)", (long long)urls);
    printf("\n");
    for (int k = 0; k < missing && k < 3; k++) printf("    %s\n", first[k]);
    ts_csv_close(c);
    return 0;
}

/* One file: 0 ok, 1 failure (message printed). */
static int inspect(const char *path) {
    ts_err err = { 0 };
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "tessera: error: %s: cannot open\n", path);
        return 1;
    }
    unsigned char head[8] = { 0 };
    size_t n = fread(head, 1, sizeof head, f);
    int hdf5 = is_hdf5(f);
    fclose(f);
    if (has_suffix(path, ".tar") || has_suffix(path, ".tgz") || has_suffix(path, ".tar.gz"))
        return inspect_tar(path);
    if (has_suffix(path, ".csv") || has_suffix(path, ".tsv")) return inspect_csv(path);
    ts_status st;
    if (hdf5) {
        st = ts_hdf5_summary(stdout, path, &err);
    } else if ((n >= 3 && head[0] == 0xFF && head[1] == 0xD8 && head[2] == 0xFF) ||
               (n == 8 && !memcmp(head, "\x89PNG\r\n\x1a\n", 8))) {
        st = inspect_image(path, &err);
    } else {
        st = inspect_video(path, &err);
        static const char *const video_ext[] = { ".mp4", ".mkv", ".webm", ".mov", ".avi",
                                                 ".m4v", ".gif", NULL };
        int known = 0;
        for (int i = 0; video_ext[i]; i++) known |= has_suffix(path, video_ext[i]);
        if (st == TS_ERR_FORMAT && !known && strstr(err.msg, "cannot open as a video"))
            snprintf(err.msg + strlen(err.msg), sizeof err.msg - strlen(err.msg),
                     " (tessera data inspect knows HDF5, video, JPEG and PNG files)");
    }
    if (st) {
        fprintf(stderr, "tessera: error: %s\n", err.msg);
        return 1;
    }
    return 0;
}

int ts_cmd_data(int argc, char **argv) {
    if (argc < 1) {
        data_usage(stderr);
        return 2;
    }
    if (!strcmp(argv[0], "-h") || !strcmp(argv[0], "--help")) {
        data_usage(stdout);
        return 0;
    }
    if (!strcmp(argv[0], "synth")) return cmd_synth(argc - 1, argv + 1);
    if (strcmp(argv[0], "inspect")) {
        fprintf(stderr, "tessera data: unknown command '%s' (valid: inspect, synth; see tessera "
                "data --help)\n", argv[0]);
        return 2;
    }
    int npaths = 0, rc = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            data_usage(stdout);
            return 0;
        }
        if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "tessera data inspect: unknown option %s (see tessera data --help)\n",
                    argv[i]);
            return 2;
        }
    }
    for (int i = 1; i < argc; i++) {
        if (npaths++) printf("\n");
        fflush(stdout);
        if (inspect(argv[i])) rc = 1;
        fflush(stdout);
    }
    if (!npaths) {
        fprintf(stderr, "tessera data inspect: no PATH given\n");
        data_usage(stderr);
        return 2;
    }
    return rc;
}
