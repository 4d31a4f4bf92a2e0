/* cmd_tokenize.c: the `tessera tokenize` verb (encode, decode, train).
 *
 * A window onto text/: encode prints the ids open_clip would give, decode prints the text of
 * ids, train writes a BPE merges file from text files. Exit codes as every verb: 0 ok,
 * 1 runtime failure (a file that cannot be read, an id outside the vocabulary), 2 usage.
 *
 * What it is not: a batch tokenizer for data sets; loaders call the library directly.
 */
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tessera.h"
#include "text.h"
#include "cli.h"

#define BPE_NAME "bpe_simple_vocab_16e6.txt.gz"

static void tokenize_usage(FILE *out) {
    fprintf(out,
            "usage: tessera tokenize encode [--merges FILE] [--context N] [TEXT]...\n"
            "       tessera tokenize decode [--merges FILE] [ID]...\n"
            "       tessera tokenize train --corpus FILE... --vocab-size N --out FILE\n"
            "\n"
            "The CLIP byte-level BPE tokenizer, exactly as open_clip tokenizes.\n"
            "\n"
            "  encode    print the ids of each TEXT on one line (of each line of standard\n"
            "            input when no TEXT is given), as open_clip's tokenizer.encode; with\n"
            "            --context N, the N-long row of open_clip's tokenizer(): start token,\n"
            "            ids, end token kept last when cut, zero padding (CLIP uses 77)\n"
            "  decode    print the text of the IDs (separated by spaces, commas or brackets;\n"
            "            read from standard input when none is given)\n"
            "  train     learn BPE merges from text files (one caption a line) until the\n"
            "            vocabulary has N entries (515 to 49408), and write them as gzip in\n"
            "            the format of CLIP's " BPE_NAME "; deterministic\n"
            "\n"
            "options:\n"
            "  --merges FILE     the merges file. Default: $TESSERA_BPE, else CLIP's\n"
            "                    " BPE_NAME " where open_clip or CLIP is installed\n"
            "                    (python3 site-packages and dist-packages, ~/.cache/clip) or\n"
            "                    in the current folder\n"
            "  --context N       encode: print rows of N ids\n"
            "  --corpus FILE...  train: the text files (repeatable)\n"
            "  --vocab-size N    train: the vocabulary size, 514 + the number of merges\n"
            "  --out FILE        train: the merges file to write (gzip)\n"
            "  -h, --help        this help\n"
            "\n"
            "Exit status: 0 ok, 1 runtime failure, 2 usage error.\n");
}

static int load(const char *merges, ts_tokenizer **t) {
    char looked[4096];
    char *path = merges ? strdup(merges) : ts_find_clip_merges(looked, sizeof looked);
    if (!path) {
        fprintf(stderr,
                "tessera tokenize: no BPE merges file found (looked at %s).\n"
                "Pass --merges FILE or set TESSERA_BPE to CLIP's " BPE_NAME
                " (the open_clip_torch package carries it), or train one with "
                "`tessera tokenize train`.\n",
                looked);
        return 1;
    }
    ts_err err = { 0 };
    ts_status st = ts_tokenizer_load(path, t, &err);
    free(path);
    if (st) {
        fprintf(stderr, "tessera: error: %s\n", err.msg);
        return 1;
    }
    return 0;
}

static int encode_one(ts_tokenizer *t, const char *text, size_t len, int ctx, int32_t **buf,
                      int64_t *cap) {
    if (ctx > 0) {
        if (*cap < ctx) {
            *buf = realloc(*buf, sizeof **buf * (size_t)ctx);
            *cap = ctx;
        }
        ts_tokenizer_encode_context(t, text, len, *buf, ctx);
        for (int i = 0; i < ctx; i++) printf(i ? " %d" : "%d", (*buf)[i]);
    } else {
        int64_t n = ts_tokenizer_encode(t, text, len, *buf, *cap);
        if (n > *cap) {
            *buf = realloc(*buf, sizeof **buf * (size_t)n);
            *cap = n;
            ts_tokenizer_encode(t, text, len, *buf, *cap);
        }
        for (int64_t i = 0; i < n; i++) printf(i ? " %d" : "%d", (*buf)[i]);
    }
    printf("\n");
    return 0;
}

/* Append the ids written in s (any non-digit separates them) to ids. Returns -1 on a value
 * that is not a non-negative integer. */
static int parse_ids(const char *s, int32_t **ids, int64_t *n, int64_t *cap) {
    const char *p = s;
    while (*p) {
        if (*p == '-') return -1;
        if (*p < '0' || *p > '9') {
            p++;
            continue;
        }
        long long v = 0;
        while (*p >= '0' && *p <= '9') {
            v = v * 10 + (*p++ - '0');
            if (v > 0x7fffffff) return -1;
        }
        if (*n == *cap) {
            *cap = *cap ? *cap * 2 : 64;
            *ids = realloc(*ids, sizeof **ids * (size_t)*cap);
        }
        (*ids)[(*n)++] = (int32_t)v;
    }
    return 0;
}

static int cmd_encode_decode(int decode, int argc, char **argv) {
    const char *merges = NULL, *sub = decode ? "decode" : "encode";
    int ctx = 0;
    char **args = calloc((size_t)argc + 1, sizeof *args);
    int nargs = 0, rc = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            tokenize_usage(stdout);
            free(args);
            return 0;
        } else if (!strcmp(a, "--merges") || (!decode && !strcmp(a, "--context"))) {
            if (i + 1 >= argc) {
                fprintf(stderr, "tessera tokenize %s: %s needs a value\n", sub, a);
                free(args);
                return 2;
            }
            if (!strcmp(a, "--merges")) {
                merges = argv[++i];
            } else {
                char *end;
                long v = strtol(argv[++i], &end, 10);
                if (*end || v < 2 || v > 1 << 20) {
                    fprintf(stderr, "tessera tokenize encode: --context must be an integer of "
                                    "at least 2 (got %s)\n", argv[i]);
                    free(args);
                    return 2;
                }
                ctx = (int)v;
            }
        } else if (!strcmp(a, "--")) {
            while (++i < argc) args[nargs++] = argv[i];
        } else if (a[0] == '-' && a[1] == '-') {
            fprintf(stderr, "tessera tokenize %s: unknown option %s (see tessera tokenize --help)\n",
                    sub, a);
            free(args);
            return 2;
        } else {
            args[nargs++] = argv[i];
        }
    }
    ts_tokenizer *t = NULL;
    if (load(merges, &t)) {
        free(args);
        return 1;
    }
    int32_t *buf = NULL;
    int64_t cap = 0, n = 0;
    char *line = NULL;
    size_t line_cap = 0;
    if (!decode) {
        buf = malloc(sizeof *buf * 256);
        cap = 256;
        if (nargs)
            for (int i = 0; i < nargs; i++) encode_one(t, args[i], strlen(args[i]), ctx, &buf, &cap);
        else {
            ssize_t got;
            while ((got = getline(&line, &line_cap, stdin)) >= 0) {
                while (got > 0 && (line[got - 1] == '\n' || line[got - 1] == '\r')) got--;
                encode_one(t, line, (size_t)got, ctx, &buf, &cap);
            }
        }
    } else {
        int bad = 0;
        if (nargs) {
            for (int i = 0; i < nargs && !bad; i++) bad = parse_ids(args[i], &buf, &n, &cap);
        } else {
            while (!bad && getline(&line, &line_cap, stdin) >= 0) bad = parse_ids(line, &buf, &n, &cap);
        }
        if (bad) {
            fprintf(stderr, "tessera tokenize decode: ids are non-negative integers\n");
            rc = 2;
        } else {
            char *text = NULL;
            ts_err err = { 0 };
            if (ts_tokenizer_decode(t, buf, n, &text, &err)) {
                fprintf(stderr, "tessera: error: %s\n", err.msg);
                rc = 1;
            } else {
                printf("%s\n", text);
            }
            free(text);
        }
    }
    free(line);
    free(buf);
    free(args);
    ts_tokenizer_free(t);
    return rc;
}

static int cmd_train(int argc, char **argv) {
    const char **corpus = calloc((size_t)argc + 1, sizeof *corpus);
    const char *out = NULL;
    int ncorpus = 0, vocab = 0, rc = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            tokenize_usage(stdout);
            free(corpus);
            return 0;
        } else if (!strcmp(a, "--corpus")) {
            int before = ncorpus;
            while (i + 1 < argc && strncmp(argv[i + 1], "--", 2)) corpus[ncorpus++] = argv[++i];
            if (ncorpus == before) {
                fprintf(stderr, "tessera tokenize train: --corpus needs at least one file\n");
                free(corpus);
                return 2;
            }
        } else if (!strcmp(a, "--vocab-size") || !strcmp(a, "--out")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "tessera tokenize train: %s needs a value\n", a);
                free(corpus);
                return 2;
            }
            if (!strcmp(a, "--out")) {
                out = argv[++i];
            } else {
                char *end;
                long v = strtol(argv[++i], &end, 10);
                if (*end || v <= 0 || v > 1 << 24) {
                    fprintf(stderr, "tessera tokenize train: --vocab-size must be a positive "
                                    "integer (got %s)\n", argv[i]);
                    free(corpus);
                    return 2;
                }
                vocab = (int)v;
            }
        } else {
            fprintf(stderr, "tessera tokenize train: unexpected argument %s (see tessera "
                            "tokenize --help)\n", a);
            free(corpus);
            return 2;
        }
    }
    if (!ncorpus || !vocab || !out) {
        fprintf(stderr, "tessera tokenize train: --corpus, --vocab-size and --out are required "
                        "(see tessera tokenize --help)\n");
        free(corpus);
        return 2;
    }
    ts_err err = { 0 };
    int merges = 0;
    ts_status st = ts_bpe_train(corpus, ncorpus, vocab, out, &merges, &err);
    if (st) {
        fprintf(stderr, "tessera: error: %s\n", err.msg);
        rc = st == TS_ERR_USAGE ? 2 : 1;
    } else {
        printf("wrote %s: %d merges, vocabulary %d (<start_of_text> %d, <end_of_text> %d)\n", out,
               merges, merges + 514, merges + 512, merges + 513);
    }
    free(corpus);
    return rc;
}

int ts_cmd_tokenize(int argc, char **argv) {
    if (argc < 1) {
        tokenize_usage(stderr);
        return 2;
    }
    const char *sub = argv[0];
    if (!strcmp(sub, "-h") || !strcmp(sub, "--help")) {
        tokenize_usage(stdout);
        return 0;
    }
    if (!strcmp(sub, "encode")) return cmd_encode_decode(0, argc - 1, argv + 1);
    if (!strcmp(sub, "decode")) return cmd_encode_decode(1, argc - 1, argv + 1);
    if (!strcmp(sub, "train")) return cmd_train(argc - 1, argv + 1);
    fprintf(stderr, "tessera tokenize: unknown command '%s' (valid: encode, decode, train; see "
                    "tessera tokenize --help)\n", sub);
    return 2;
}
