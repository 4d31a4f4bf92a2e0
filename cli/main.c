/* main.c: the `tessera` command and its verbs.
 *
 * The only file that calls exit codes into being: 0 ok, 1 runtime failure, 2 usage error.
 * Each verb parses its own options and has --help. Errors from the library arrive as a ts_status
 * with a message naming the file, key or sample; they are printed as they are.
 *
 * Under mpirun or srun, `tessera train` is one rank of a data-parallel job: it joins the job
 * (ts_dist_init) before reading the recipe, only rank 0 logs below warnings, and a rank that
 * fails ends the whole job with its error, so that no other rank waits for it.
 */
#include "cli.h"

#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TS_VERSION "0.1.0"

/* Ctrl-C (SIGINT) and SIGTERM. No handler runs on the threads that compute: oneDNN's JIT gemm
 * kernels (the 2.x builds Debian ships) point rsp into the heap while they run, so a signal
 * frame pushed onto such a thread lands on heap memory and corrupts it (oneDNN issue 4845; a
 * Ctrl-C during training aborted about one run in a hundred with "corrupted size vs.
 * prev_size"). main blocks both signals before any thread exists, every thread inherits that
 * mask, and one thread takes them with sigwait: during training the first asks the trainer to
 * save and stop (stop_requested) and a second ends the process at once; any other verb ends
 * at once with status 128 + the signal, as the default action would. */
static sigset_t stop_signals;
static volatile int stop_requested; /* read by the trainer between steps */
static volatile int stop_cleanly;   /* the running verb stops itself when asked */

static void *signal_watcher(void *arg) {
    (void)arg;
    for (;;) {
        int sig = 0;
        if (sigwait(&stop_signals, &sig) != 0) continue;
        if (!stop_cleanly || stop_requested) _exit(128 + sig);
        stop_requested = 1;
    }
    return NULL;
}

static void watch_signals(void) {
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_t t;
    if (pthread_sigmask(SIG_BLOCK, &stop_signals, NULL) != 0 ||
        pthread_create(&t, NULL, signal_watcher, NULL) != 0) {
        pthread_sigmask(SIG_UNBLOCK, &stop_signals, NULL); /* the default action, then */
        return;
    }
    pthread_detach(t);
}

static void usage(FILE *out) {
    fprintf(out,
            "tessera %s: multimodal pretraining from recipe files\n"
            "\n"
            "usage: tessera VERB [options]\n"
            "\n"
            "verbs:\n"
            "  train RECIPE    train the model a recipe describes\n"
            "  finetune RECIPE --from CKPT  train it starting from a checkpoint's matching weights\n"
            "  embed           write the embeddings of images or texts (HDF5 or .npy)\n"
            "  eval            zero-shot classification, retrieval, closed-loop rollouts\n"
            "  tokenize        encode, decode, or train a CLIP byte-level BPE tokenizer\n"
            "  data inspect    summarise a data file (HDF5 trajectories, video, image)\n"
            "  data synth      write the synthetic shapes image-caption dataset\n"
            "  export hf       write a CLIP checkpoint as HuggingFace transformers' CLIPModel\n"
            "  version         print the version\n"
            "\n"
            "Run `tessera VERB --help` for the options of a verb.\n",
            TS_VERSION);
}

static void train_usage(FILE *out, int finetune) {
    if (finetune)
        fprintf(out,
                "usage: tessera finetune RECIPE --from CKPT [--set KEY=VALUE]... [--resume DIR]\n"
                "\n"
                "Train the model that RECIPE describes, starting from the weights of CKPT (a run\n"
                "folder, a checkpoint folder or a safetensors file) that have the same name and\n"
                "shape in the model: e.g. the towers of a CLIP checkpoint in a policy. The log\n"
                "lists what was loaded, what starts fresh and what in CKPT was ignored.\n"
                "\n"
                "options:\n"
                "  --from CKPT      the checkpoint to start from\n");
    else
        fprintf(out,
                "usage: tessera train RECIPE [--set KEY=VALUE]... [--resume DIR]\n"
                "\n"
                "Train the model that RECIPE (a YAML file) describes.\n"
                "\n"
                "options:\n");
    fprintf(out,
            "  --set KEY=VALUE  override a recipe key, e.g. --set optim.lr=3e-4 (repeatable)\n"
            "  --resume DIR     continue a run from its latest checkpoint (DIR is the run\n"
            "                   folder or one checkpoint folder): same step, LR and data order\n"
            "  --check          read the recipe and build the model, print its size, and stop\n"
            "                   without training (a recipe's keys, files and sizes checked)\n"
            "  --quiet          log warnings and errors only\n"
            "  -h, --help       this help\n"
            "\n"
            "Ctrl-C saves a checkpoint and stops; a second Ctrl-C stops at once.\n"
            "Data parallel: mpirun -np N tessera train RECIPE splits each global batch\n"
            "(data.batch_size) across N ranks (docs/distributed.md).\n"
            "Exit status: 0 done (or stopped cleanly), 1 runtime failure, 2 usage error.\n");
}

static int fail(const ts_err *err) {
    fprintf(stderr, "tessera: error: %s\n", err->msg);
    return 1;
}

static int cmd_train(int argc, char **argv, int finetune) {
    const char *verb = finetune ? "finetune" : "train";
    const char *recipe_path = NULL, *resume = NULL, *from = NULL;
    const char *sets[256];
    int nsets = 0, check = 0, quiet = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            train_usage(stdout, finetune);
            return 0;
        } else if (!strcmp(a, "--set") || !strcmp(a, "--resume") ||
                   (finetune && !strcmp(a, "--from"))) {
            if (i + 1 >= argc) {
                fprintf(stderr, "tessera %s: %s needs a value\n", verb, a);
                return 2;
            }
            if (!strcmp(a, "--resume")) resume = argv[++i];
            else if (!strcmp(a, "--from")) from = argv[++i];
            else if (nsets < 256) sets[nsets++] = argv[++i];
        } else if (!strncmp(a, "--set=", 6)) {
            if (nsets < 256) sets[nsets++] = a + 6;
        } else if (!strncmp(a, "--resume=", 9)) {
            resume = a + 9;
        } else if (!strcmp(a, "--quiet")) {
            ts_log_set_level(TS_LOG_WARN);
            quiet = 1;
        } else if (!strcmp(a, "--check")) {
            check = 1;
        } else if (finetune && !strncmp(a, "--from=", 7)) {
            from = a + 7;
        } else if (a[0] == '-') {
            fprintf(stderr, "tessera %s: unknown option %s (see tessera %s --help)\n", verb, a,
                    verb);
            return 2;
        } else if (!recipe_path) {
            recipe_path = a;
        } else {
            fprintf(stderr, "tessera %s: one recipe only (got %s and %s)\n", verb, recipe_path,
                    a);
            return 2;
        }
    }
    if (!recipe_path || (finetune && !from)) {
        if (finetune && recipe_path) fprintf(stderr, "tessera finetune: --from CKPT is needed\n");
        train_usage(stderr, finetune);
        return 2;
    }
    ts_err err = { 0 };
    ts_recipe *r = NULL;
    ts_task *task = NULL;
    int rc = 1;
    ts_dist dist;
    if (ts_dist_init(&dist, NULL, NULL, &err)) {
        fail(&err);
        return 1;
    }
    if (dist.rank != 0) ts_log_set_level(TS_LOG_WARN);
    if (ts_recipe_load(recipe_path, &r, &err)) goto out;
    for (int i = 0; i < nsets; i++)
        if (ts_recipe_set(r, sets[i], &err)) {
            rc = err.code == TS_ERR_USAGE ? 2 : 1;
            goto out;
        }
    static const char *const sections[] = { "model", "objective", "data", "optim", "train", "eval",
                                            NULL };
    if (ts_recipe_only(r, NULL, sections, &err)) goto out;
    ts_train_cfg train;
    ts_optim_recipe optim;
    if (ts_train_parse(r, &train, &optim, &err)) goto out;
    if (ts_factory_task(r, (uint64_t)train.seed, &task, &err)) goto out;
    if (from) {
        /* the statistics of the data and a data-trained tokenizer belong to this run's data */
        static const char *const keep[] = { "normalizer.", "action_tokenizer.", NULL };
        ts_ckpt_match m;
        if (ts_ckpt_load_matching(task->params, from, keep, &m, &err)) goto out;
        ts_log(TS_LOG_INFO, "finetune: from %s: %d tensors loaded, %d initialised fresh, %d in "
               "the checkpoint ignored", m.file, m.loaded, m.fresh, m.ignored);
        if (dist.rank == 0 && !quiet) {
            fprintf(stderr, "finetune: loaded (%d):\n%s", m.loaded, m.loaded_names);
            fprintf(stderr, "finetune: fresh (%d):\n%s", m.fresh, m.fresh_names);
            fprintf(stderr, "finetune: ignored (%d):\n%s", m.ignored, m.ignored_names);
        }
        ts_ckpt_match_free(&m);
    }
    if (check) {
        if (train.device == 1 && ts_train_device_check(r, &train, &optim, task, dist.world, &err))
            goto out;
        printf("%s: %s model with %lld parameters (%.1f MiB with gradients and optimizer "
               "state); recipe OK%s\n", recipe_path, task->type,
               (long long)ts_params_numel(task->params, 1),
               (double)ts_params_bytes(task->params) / (1 << 20),
               train.device == 1 ? "; the device model takes it (train.device: cuda)" : "");
        rc = 0;
        goto out;
    }

    stop_cleanly = 1; /* from here on, Ctrl-C saves a checkpoint and stops */
    ts_train_opts opts = { resume, &stop_requested, isatty(2) && dist.rank == 0, &dist };
    ts_status st = ts_train(r, &train, &optim, task, &opts, &err);
    if (st == TS_ERR_INTERRUPTED) {
        fprintf(stderr, "tessera: %s\n", err.msg);
        rc = 0;
    } else {
        rc = st == TS_OK ? 0 : 1;
    }
out:
    /* a rank that fails takes the job down: the others would wait for it in a collective */
    if (rc != 0 && dist.world > 1) ts_dist_abort(&dist, rc, "%s", err.msg);
    if (rc == 1 || (rc == 2 && err.msg[0])) fail(&err);
    ts_task_free(task);
    ts_recipe_free(r);
    ts_dist_finalize(&dist);
    return rc;
}

int main(int argc, char **argv) {
    watch_signals();
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *verb = argv[1];
    if (!strcmp(verb, "-h") || !strcmp(verb, "--help") || !strcmp(verb, "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(verb, "version") || !strcmp(verb, "--version")) {
        printf("tessera %s (devices: cpu%s)\n", TS_VERSION, ts_have_cuda() ? ", cuda" : "");
        return 0;
    }
    if (!strcmp(verb, "train")) return cmd_train(argc - 2, argv + 2, 0);
    if (!strcmp(verb, "finetune")) return cmd_train(argc - 2, argv + 2, 1);
    if (!strcmp(verb, "tokenize")) return ts_cmd_tokenize(argc - 2, argv + 2);
    if (!strcmp(verb, "data")) return ts_cmd_data(argc - 2, argv + 2);
    if (!strcmp(verb, "embed")) return ts_cmd_embed(argc - 2, argv + 2);
    if (!strcmp(verb, "eval")) return ts_cmd_eval(argc - 2, argv + 2);
    if (!strcmp(verb, "export")) return ts_cmd_export(argc - 2, argv + 2);
    fprintf(stderr, "tessera: unknown verb '%s' (valid: train, finetune, embed, eval, export, tokenize, data, "
            "version; see "
            "tessera --help)\n", verb);
    return 2;
}
