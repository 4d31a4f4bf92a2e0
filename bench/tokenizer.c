/* tokenizer.c: how fast tessera's CLIP tokenizer encodes a caption corpus on one core.
 *
 * Reads a text file (one caption a line), loads a merges file, and encodes every caption into
 * a 77-long context row (open_clip's tokenizer(texts)). Cold passes each start from a freshly
 * loaded tokenizer, with an empty word cache; warm passes reuse one tokenizer whose cache holds
 * the corpus's words, as a loader's does after its first batches. Prints tokens/s (ids before
 * padding, start and end tokens excluded) and captions/s, the best of N passes each, then one
 * line "RESULT ..." that bench/tokenizer.py reads. Not a test: nothing here asserts a speed.
 *
 * Usage: tokenizer --merges FILE --corpus FILE [--passes N]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tessera.h"
#include "text.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv) {
    const char *merges = NULL, *corpus = NULL;
    int passes = 5;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--merges") && i + 1 < argc) merges = argv[++i];
        else if (!strcmp(argv[i], "--corpus") && i + 1 < argc) corpus = argv[++i];
        else if (!strcmp(argv[i], "--passes") && i + 1 < argc) passes = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: tokenizer --merges FILE --corpus FILE [--passes N]\n");
            return 2;
        }
    }
    if (!merges || !corpus || passes < 1) {
        fprintf(stderr, "usage: tokenizer --merges FILE --corpus FILE [--passes N]\n");
        return 2;
    }
    ts_err err = { 0 };
    ts_tokenizer *tok = NULL;
    double t0 = now();
    if (ts_tokenizer_load(merges, &tok, &err)) {
        fprintf(stderr, "tokenizer: %s\n", err.msg);
        return 1;
    }
    double load_s = now() - t0;

    /* The corpus, as lines in one buffer. */
    FILE *f = fopen(corpus, "rb");
    if (!f) {
        fprintf(stderr, "tokenizer: cannot open %s\n", corpus);
        return 1;
    }
    size_t cap = 0, nlines = 0, lcap = 0;
    char **lines = NULL;
    size_t *lens = NULL;
    char *line = NULL;
    ssize_t got;
    while ((got = getline(&line, &cap, f)) >= 0) {
        while (got > 0 && (line[got - 1] == '\n' || line[got - 1] == '\r')) got--;
        if (nlines == lcap) {
            lcap = lcap ? lcap * 2 : 1024;
            lines = realloc(lines, lcap * sizeof *lines);
            lens = realloc(lens, lcap * sizeof *lens);
        }
        lines[nlines] = malloc((size_t)got + 1);
        memcpy(lines[nlines], line, (size_t)got);
        lines[nlines][got] = 0;
        lens[nlines++] = (size_t)got;
    }
    free(line);
    fclose(f);

    int32_t row[TS_CLIP_CONTEXT];
    double first = 1e30, best = 1e30;
    int64_t tokens = 0;
    uint64_t check = 0;
    /* Cold: each pass on a freshly loaded tokenizer (loading not timed). Warm: one tokenizer,
     * the passes after its first. */
    for (int cold = 1; cold >= 0; cold--) {
        for (int p = 0; p < passes + !cold; p++) {
            if (cold || p == 0) {
                ts_tokenizer_free(tok);
                if (ts_tokenizer_load(merges, &tok, &err)) {
                    fprintf(stderr, "tokenizer: %s\n", err.msg);
                    return 1;
                }
            }
            int64_t toks = 0;
            double s = now();
            for (size_t i = 0; i < nlines; i++) {
                int n = ts_tokenizer_encode_context(tok, lines[i], lens[i], row, TS_CLIP_CONTEXT);
                toks += n - 2;
                check = check * 31 + (uint64_t)row[n / 2];
            }
            double dt = now() - s;
            if (cold && dt < first) first = dt;
            if (!cold && p > 0 && dt < best) best = dt;
            tokens = toks;
        }
    }
    printf("tessera tokenizer: %zu captions, %lld tokens a pass, merges loaded in %.1f ms\n",
           nlines, (long long)tokens, 1e3 * load_s);
    printf("  cold (empty word cache), best of %d: %10.0f tokens/s  %9.0f captions/s\n", passes,
           (double)tokens / first, (double)nlines / first);
    printf("  warm (words cached), best of %d:     %10.0f tokens/s  %9.0f captions/s\n", passes,
           (double)tokens / best, (double)nlines / best);
    printf("RESULT captions=%zu tokens=%lld first_tok_s=%.1f warm_tok_s=%.1f check=%llu\n", nlines,
           (long long)tokens, (double)tokens / first, (double)tokens / best,
           (unsigned long long)check);
    for (size_t i = 0; i < nlines; i++) free(lines[i]);
    free(lines);
    free(lens);
    ts_tokenizer_free(tok);
    return 0;
}
