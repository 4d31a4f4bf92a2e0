/* unit_recipe.c: recipes read into config structs, overridden, dumped and read again.
 *
 * One demo section holds a key of every type. The tests check the values that arrive in the
 * struct, the defaults that are written back into the tree (and logged), that a dump loads
 * back to the same struct, --set overrides, and the text of every kind of error: each must
 * name the file and line (or the --set key) and the dotted key. It does not test libyaml.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tessera.h"

typedef struct demo_cfg {
    int64_t steps;
    double lr;
    int amp;
    const char *out;
    int precision;
    ts_int_list sizes;
    ts_float_list betas;
    int64_t log_every;
    const char *tag;
} demo_cfg;

static const char *const precisions[] = { "fp32", "bf16", "fp16", NULL };
static const ts_key demo_keys[] = {
    TS_KEY(TS_KEY_INT, demo_cfg, steps, NULL, "number of optimizer steps"),
    TS_KEY(TS_KEY_FLOAT, demo_cfg, lr, "1e-3", "peak learning rate"),
    TS_KEY(TS_KEY_BOOL, demo_cfg, amp, "false", "mixed precision"),
    TS_KEY(TS_KEY_STRING, demo_cfg, out, "runs/demo", "output folder"),
    TS_KEY_CHOICE(demo_cfg, precision, "fp32", precisions, "compute precision"),
    TS_KEY(TS_KEY_INT_LIST, demo_cfg, sizes, "[1, 2]", "sizes"),
    TS_KEY(TS_KEY_FLOAT_LIST, demo_cfg, betas, "[0.9, 0.999]", "Adam betas"),
    TS_KEY(TS_KEY_INT, demo_cfg, log_every, "10", "steps between log lines"),
    TS_KEY(TS_KEY_STRING, demo_cfg, tag, "\"123\"", "a string that looks like a number"),
};
#define NKEYS ((int)(sizeof demo_keys / sizeof demo_keys[0]))

static const char *const full_text =
    "# a recipe with every key\n"
    "train:\n"
    "  steps: 100\n"
    "  lr: 3e-4\n"
    "  amp: yes\n"
    "  out: \"/tmp/run: one # two\"\n"
    "  precision: bf16\n"
    "  sizes: [16, -3, 9000000000]\n"
    "  betas:\n"
    "    - 0.5\n"
    "    - 2\n"
    "  log_every: 7\n"
    "  tag: abc\n"
    "optim:\n"
    "  name: adamw\n";

/* Log lines captured by the sink, one after the other. */
static char logged[8192];
static void capture(ts_log_level level, const char *msg, void *user) {
    (void)level;
    (void)user;
    size_t n = strlen(logged);
    snprintf(logged + n, sizeof logged - n, "%s\n", msg);
}

static ts_recipe *parse_ok(const char *text) {
    ts_recipe *r = NULL;
    ts_err err = { 0 };
    ts_status s = ts_recipe_parse(text, "demo.yaml", &r, &err);
    if (s) print_error("unexpected error: %s\n", err.msg);
    assert_int_equal(s, TS_OK);
    assert_non_null(r);
    return r;
}

/* Parse text and read the train section; return the status and leave the message in err. */
static ts_status section_of(const char *text, demo_cfg *cfg, ts_err *err) {
    ts_recipe *r = parse_ok(text);
    ts_status s = ts_recipe_section(r, "train", demo_keys, NKEYS, cfg, err);
    ts_recipe_free(r);
    return s;
}

/* Expect an error of code whose message holds every string of the NULL-terminated list. */
static void expect_error(ts_status s, ts_status code, const ts_err *err, ...) {
    if (s != code) print_error("status %d (%s), message: %s\n", s, ts_status_str(s), err->msg);
    assert_int_equal(s, code);
    va_list ap;
    va_start(ap, err);
    for (const char *want; (want = va_arg(ap, const char *));) {
        if (!strstr(err->msg, want)) print_error("'%s' not in: %s\n", want, err->msg);
        assert_non_null(strstr(err->msg, want));
    }
    va_end(ap);
}

static void check_full(const demo_cfg *c) {
    assert_int_equal(c->steps, 100);
    assert_true(c->lr == 3e-4);
    assert_int_equal(c->amp, 1);
    assert_string_equal(c->out, "/tmp/run: one # two");
    assert_int_equal(c->precision, 1);
    assert_int_equal(c->sizes.n, 3);
    assert_int_equal(c->sizes.v[0], 16);
    assert_int_equal(c->sizes.v[1], -3);
    assert_int_equal(c->sizes.v[2], 9000000000LL);
    assert_int_equal(c->betas.n, 2);
    assert_true(c->betas.v[0] == 0.5 && c->betas.v[1] == 2.0);
    assert_int_equal(c->log_every, 7);
    assert_string_equal(c->tag, "abc");
}

static void test_valid(void **state) {
    (void)state;
    ts_recipe *r = parse_ok(full_text);
    demo_cfg c = { 0 };
    ts_err err = { 0 };
    assert_int_equal(ts_recipe_section(r, "train", demo_keys, NKEYS, &c, &err), TS_OK);
    check_full(&c);
    assert_string_equal(ts_recipe_path(r), "demo.yaml");
    assert_true(ts_recipe_has(r, "optim.name"));
    assert_false(ts_recipe_has(r, "optim.lr"));
    assert_string_equal(ts_recipe_str(r, "optim.name"), "adamw");
    assert_string_equal(ts_recipe_str(r, "train.lr"), "3e-4");
    assert_null(ts_recipe_str(r, "train.sizes")); /* a list, not a scalar */
    assert_null(ts_recipe_str(r, "train.nothing"));
    char where[256];
    assert_string_equal(ts_recipe_where(r, "train.lr", where, sizeof where), "demo.yaml:4");
    assert_string_equal(ts_recipe_where(r, "optim", where, sizeof where), "demo.yaml:14");
    assert_string_equal(ts_recipe_where(r, "optim.lr", where, sizeof where), "demo.yaml");
    ts_recipe_free(r);
    ts_recipe_free(NULL);
}

static void test_defaults(void **state) {
    (void)state;
    ts_recipe *r = parse_ok("train:\n  steps: 5\n");
    demo_cfg c = { 0 };
    ts_err err = { 0 };
    logged[0] = 0;
    ts_log_set_sink(capture, NULL);
    ts_status s = ts_recipe_section(r, "train", demo_keys, NKEYS, &c, &err);
    ts_log_set_sink(NULL, NULL);
    assert_int_equal(s, TS_OK);
    assert_int_equal(c.steps, 5);
    assert_true(c.lr == 1e-3);
    assert_int_equal(c.amp, 0);
    assert_string_equal(c.out, "runs/demo");
    assert_int_equal(c.precision, 0);
    assert_int_equal(c.sizes.n, 2);
    assert_int_equal(c.sizes.v[1], 2);
    assert_true(c.betas.n == 2 && c.betas.v[1] == 0.999);
    assert_int_equal(c.log_every, 10);
    assert_string_equal(c.tag, "123");
    assert_non_null(strstr(logged, "recipe: train.log_every = 10 (default)\n"));
    assert_non_null(strstr(logged, "recipe: train.lr = 1e-3 (default)\n"));
    assert_null(strstr(logged, "train.steps"));

    /* A missing section is all defaults, and appears in the tree. */
    static const ts_key eval_keys[] = {
        TS_KEY(TS_KEY_INT, demo_cfg, log_every, "3", "every"),
    };
    assert_false(ts_recipe_has(r, "eval"));
    assert_int_equal(ts_recipe_section(r, "eval.inner", eval_keys, 1, &c, &err), TS_OK);
    assert_int_equal(c.log_every, 3);
    assert_true(ts_recipe_has(r, "eval.inner.log_every"));

    char *dump = ts_recipe_dump(r);
    assert_non_null(dump);
    assert_non_null(strstr(dump, "train:\n  steps: 5\n  lr: 1e-3  # default\n"));
    assert_non_null(strstr(dump, "  log_every: 10  # default\n"));
    assert_non_null(strstr(dump, "  tag: \"123\"  # default\n"));
    assert_non_null(strstr(dump, "  sizes:  # default\n    - 1\n    - 2\n"));
    assert_non_null(strstr(dump, "eval:  # default\n  inner:\n    log_every: 3\n"));
    free(dump);

    /* A second read finds the defaults in the tree and logs nothing. */
    logged[0] = 0;
    ts_log_set_sink(capture, NULL);
    assert_int_equal(ts_recipe_section(r, "train", demo_keys, NKEYS, &c, &err), TS_OK);
    ts_log_set_sink(NULL, NULL);
    assert_string_equal(logged, "");
    ts_recipe_free(r);
}

static void assert_same_cfg(const demo_cfg *a, const demo_cfg *b) {
    assert_int_equal(a->steps, b->steps);
    assert_true(a->lr == b->lr);
    assert_int_equal(a->amp, b->amp);
    assert_string_equal(a->out, b->out);
    assert_int_equal(a->precision, b->precision);
    assert_int_equal(a->sizes.n, b->sizes.n);
    assert_memory_equal(a->sizes.v, b->sizes.v, sizeof a->sizes.v[0] * (size_t)a->sizes.n);
    assert_int_equal(a->betas.n, b->betas.n);
    assert_memory_equal(a->betas.v, b->betas.v, sizeof a->betas.v[0] * (size_t)a->betas.n);
    assert_int_equal(a->log_every, b->log_every);
    assert_string_equal(a->tag, b->tag);
}

/* Dump a recipe, parse the dump, read the section again: the struct and the dump agree. */
static void round_trip(const char *text) {
    ts_recipe *r = parse_ok(text);
    demo_cfg a = { 0 }, b = { 0 };
    ts_err err = { 0 };
    assert_int_equal(ts_recipe_section(r, "train", demo_keys, NKEYS, &a, &err), TS_OK);
    char *dump = ts_recipe_dump(r);
    assert_non_null(dump);
    ts_recipe *r2 = parse_ok(dump);
    ts_status s = ts_recipe_section(r2, "train", demo_keys, NKEYS, &b, &err);
    if (s) print_error("%s\nin the dump:\n%s\n", err.msg, dump);
    assert_int_equal(s, TS_OK);
    assert_same_cfg(&a, &b);
    /* The second dump is the first without the marks of defaults, and a fixed point. */
    char *dump2 = ts_recipe_dump(r2);
    assert_non_null(dump2);
    for (char *m; (m = strstr(dump, "  # default"));) memmove(m, m + 11, strlen(m + 11) + 1);
    assert_string_equal(dump, dump2);
    ts_recipe *r3 = parse_ok(dump2);
    char *dump3 = ts_recipe_dump(r3);
    assert_string_equal(dump2, dump3);
    free(dump);
    free(dump2);
    free(dump3);
    ts_recipe_free(r);
    ts_recipe_free(r2);
    ts_recipe_free(r3);
}

static void test_round_trip(void **state) {
    (void)state;
    round_trip(full_text);
    round_trip("train:\n  steps: 1\n");
    /* Strings that would read as something else when written plainly. */
    static const char *const odd[] = {
        "'123'", "\"yes\"", "\"on\"", "\"~\"", "\"null\"", "\"3e-4\"", "\"a: b\"", "\"# hash\"",
        "\"x #y\"", "\"\"", "\"- dash\"", "\"two\\nlines\"", "\"tab\\there\"", "\" padded \"",
        "\"[1, 2]\"", "\"{a: 1}\"", "\"quote\\\" and \\\\ back\"", "\"ends:\"", "\"*star\"",
        "\"\\x01ctl\"", "\"héllo\"", "plain text, with comma", "-5", "\"-5\"", "\"---\"",
    };
    for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++) {
        char text[256];
        snprintf(text, sizeof text, "train:\n  steps: 1\n  out: %s\n  tag: %s\n", odd[i], odd[i]);
        ts_recipe *r = parse_ok(text);
        char *dump = ts_recipe_dump(r);
        ts_recipe *r2 = parse_ok(dump);
        const char *want = ts_recipe_str(r, "train.out");
        const char *got = ts_recipe_str(r2, "train.out");
        assert_non_null(want);
        assert_non_null(got);
        if (strcmp(want, got)) print_error("'%s' came back as '%s'; dump:\n%s", want, got, dump);
        assert_string_equal(want, got);
        free(dump);
        ts_recipe_free(r);
        ts_recipe_free(r2);
        round_trip(text);
    }
    /* Nested maps, lists of maps, empty collections and nulls. */
    static const char *const nested =
        "train:\n  steps: 2\n"
        "model:\n  layers:\n    - {type: vit, width: 64}\n    - [1, [2, 3]]\n    - []\n"
        "  empty: {}\n  none:\n  text:\n    vocab: 100\n";
    round_trip(nested);
    ts_recipe *r = parse_ok(nested);
    char *dump = ts_recipe_dump(r);
    ts_recipe *r2 = parse_ok(dump);
    assert_string_equal(ts_recipe_str(r2, "model.text.vocab"), "100");
    assert_string_equal(ts_recipe_str(r2, "model.none"), "");
    assert_true(ts_recipe_has(r2, "model.empty"));
    free(dump);
    ts_recipe_free(r);
    ts_recipe_free(r2);
    /* An empty recipe dumps as an empty map. */
    r = parse_ok("");
    dump = ts_recipe_dump(r);
    assert_string_equal(dump, "{}\n");
    free(dump);
    ts_recipe_free(r);
}

static void test_set(void **state) {
    (void)state;
    ts_recipe *r = parse_ok(full_text);
    ts_err err = { 0 };
    assert_int_equal(ts_recipe_set(r, "train.lr=3e-2", &err), TS_OK);
    assert_int_equal(ts_recipe_set(r, "train.sizes=[3, 4, 5]", &err), TS_OK);
    assert_int_equal(ts_recipe_set(r, " train.out = a=b ", &err), TS_OK);
    assert_int_equal(ts_recipe_set(r, "model.text.width=512", &err), TS_OK);
    assert_int_equal(ts_recipe_set(r, "train.betas=0.25", &err), TS_OK);
    demo_cfg c = { 0 };
    assert_int_equal(ts_recipe_section(r, "train", demo_keys, NKEYS, &c, &err), TS_OK);
    assert_true(c.lr == 3e-2);
    assert_int_equal(c.sizes.n, 3);
    assert_int_equal(c.sizes.v[2], 5);
    assert_string_equal(c.out, "a=b");
    assert_true(c.betas.n == 1 && c.betas.v[0] == 0.25);
    assert_string_equal(ts_recipe_str(r, "model.text.width"), "512");
    char where[256];
    assert_string_equal(ts_recipe_where(r, "train.lr", where, sizeof where), "--set train.lr");
    assert_string_equal(ts_recipe_where(r, "model", where, sizeof where),
                        "--set model.text.width");

    /* The replaced string stays valid until the recipe is freed. */
    const char *old = c.out;
    assert_int_equal(ts_recipe_set(r, "train.out=other", &err), TS_OK);
    assert_string_equal(old, "a=b");

    /* Overrides keep their place in the map; new keys go last. */
    char *dump = ts_recipe_dump(r);
    assert_non_null(strstr(dump, "train:\n  steps: 100\n  lr: 3e-2\n"));
    assert_non_null(strstr(dump, "  sizes:\n    - 3\n    - 4\n    - 5\n"));
    assert_non_null(strstr(dump, "model:\n  text:\n    width: 512\n"));
    free(dump);

    /* A key created by --set is checked when its section is read, and named by the --set. */
    assert_int_equal(ts_recipe_set(r, "train.stpes=3", &err), TS_OK);
    ts_status s = ts_recipe_section(r, "train", demo_keys, NKEYS, &c, &err);
    expect_error(s, TS_ERR_RECIPE, &err, "--set train.stpes: unknown key train.stpes",
                 "did you mean 'steps'", NULL);
    ts_recipe_free(r);

    r = parse_ok(full_text);
    assert_int_equal(ts_recipe_set(r, "train.steps=ten", &err), TS_OK);
    s = ts_recipe_section(r, "train", demo_keys, NKEYS, &c, &err);
    expect_error(s, TS_ERR_RECIPE, &err,
                 "--set train.steps: train.steps: expected an integer, got 'ten'", NULL);

    /* Malformed assignments are usage errors. */
    expect_error(ts_recipe_set(r, "train.steps", &err), TS_ERR_USAGE, &err,
                 "--set train.steps: expected key=value", NULL);
    expect_error(ts_recipe_set(r, "=3", &err), TS_ERR_USAGE, &err, "expected key=value", NULL);
    expect_error(ts_recipe_set(r, "train..steps=3", &err), TS_ERR_USAGE, &err, "empty name",
                 NULL);
    expect_error(ts_recipe_set(r, "train.sizes=[1, 2", &err), TS_ERR_USAGE, &err,
                 "--set train.sizes:", NULL);
    expect_error(ts_recipe_set(r, "train.steps.x=3", &err), TS_ERR_USAGE, &err,
                 "--set train.steps.x: train.steps is not a map (a scalar, --set train.steps)",
                 NULL);
    expect_error(ts_recipe_set(r, "train.out.x=3", &err), TS_ERR_USAGE, &err,
                 "train.out is not a map (a scalar, demo.yaml:6)", NULL);
    expect_error(ts_recipe_set(r, "train.out=a: b", &err), TS_ERR_USAGE, &err, "quote it",
                 NULL);
    ts_recipe_free(r);
}

static void test_unknown_key(void **state) {
    (void)state;
    demo_cfg c = { 0 };
    ts_err err = { 0 };
    ts_status s = section_of("train:\n  steps: 10\n  stesp: 5\n", &c, &err);
    expect_error(s, TS_ERR_RECIPE, &err,
                 "demo.yaml:3: unknown key train.stesp (valid keys: steps, lr, amp, out, "
                 "precision, sizes, betas, log_every, tag)",
                 "did you mean 'steps'?", NULL);
    /* No hint when nothing is close. */
    s = section_of("train:\n  steps: 10\n  colour: 5\n", &c, &err);
    expect_error(s, TS_ERR_RECIPE, &err, "demo.yaml:3: unknown key train.colour", NULL);
    assert_null(strstr(err.msg, "did you mean"));

    /* The top level through ts_recipe_only. */
    ts_recipe *r = parse_ok("train:\n  steps: 1\nmodle:\n  x: 1\n");
    static const char *const top[] = { "train", "model", "optim", NULL };
    s = ts_recipe_only(r, NULL, top, &err);
    expect_error(s, TS_ERR_RECIPE, &err, "demo.yaml:3: unknown key modle", "model, optim",
                 "did you mean 'model'?", NULL);
    static const char *const train_only[] = { "steps", NULL };
    assert_int_equal(ts_recipe_only(r, "train", train_only, &err), TS_OK);
    assert_int_equal(ts_recipe_only(r, "absent", train_only, &err), TS_OK);
    ts_recipe_free(r);
}

static void test_wrong_type(void **state) {
    (void)state;
    demo_cfg c = { 0 };
    ts_err err = { 0 };
    expect_error(section_of("train:\n  steps: ten\n", &c, &err), TS_ERR_RECIPE, &err,
                 "demo.yaml:2: train.steps: expected an integer, got 'ten'", NULL);
    expect_error(section_of("train:\n  steps: 1.5\n", &c, &err), TS_ERR_RECIPE, &err,
                 "expected an integer, got '1.5'", NULL);
    expect_error(section_of("train:\n  steps: \"10\"\n", &c, &err), TS_ERR_RECIPE, &err,
                 "expected an integer, got the quoted string \"10\"", NULL);
    expect_error(section_of("train:\n  steps: 99999999999999999999\n", &c, &err),
                 TS_ERR_RECIPE, &err, "out of range", NULL);
    expect_error(section_of("train:\n  steps: 1\n  lr: .inf\n", &c, &err), TS_ERR_RECIPE, &err,
                 "demo.yaml:3: train.lr: expected a number, got '.inf'", NULL);
    expect_error(section_of("train:\n  steps: 1\n  lr: 1e999\n", &c, &err), TS_ERR_RECIPE,
                 &err, "out of range", NULL);
    expect_error(section_of("train:\n  steps: 1\n  amp: maybe\n", &c, &err), TS_ERR_RECIPE,
                 &err, "train.amp: expected true or false", "got 'maybe'", NULL);
    expect_error(section_of("train:\n  steps: 1\n  out: [a]\n", &c, &err), TS_ERR_RECIPE,
                 &err, "train.out: expected a string, got a list", NULL);
    expect_error(section_of("train:\n  steps: 1\n  sizes:\n    - 1\n    - x\n", &c, &err),
                 TS_ERR_RECIPE, &err, "demo.yaml:5: train.sizes[1]: expected an integer", NULL);
    expect_error(section_of("train:\n  steps: 1\n  betas: {a: 1}\n", &c, &err), TS_ERR_RECIPE,
                 &err, "train.betas: expected a list of numbers, got a map", NULL);
    char text[512] = "train:\n  steps: 1\n  sizes: [";
    for (int i = 0; i <= TS_LIST_MAX; i++) strcat(text, i ? ", 1" : "1");
    strcat(text, "]\n");
    expect_error(section_of(text, &c, &err), TS_ERR_RECIPE, &err,
                 "train.sizes: expected at most 32 values, got 33", NULL);
    /* Accepted spellings. */
    assert_int_equal(section_of("train:\n  steps: -0\n  lr: 5\n  amp: Off\n", &c, &err), TS_OK);
    assert_true(c.lr == 5.0 && c.amp == 0);
    assert_int_equal(section_of("train:\n  steps: +3\n  lr: .5E+1\n  amp: ON\n", &c, &err),
                     TS_OK);
    assert_true(c.steps == 3 && c.lr == 5.0 && c.amp == 1);
}

static void test_missing_required(void **state) {
    (void)state;
    demo_cfg c = { 0 };
    ts_err err = { 0 };
    expect_error(section_of("train:\n  lr: 1\n", &c, &err), TS_ERR_RECIPE, &err,
                 "demo.yaml: missing required key train.steps (number of optimizer steps)",
                 NULL);
    expect_error(section_of("optim: {}\n", &c, &err), TS_ERR_RECIPE, &err,
                 "missing required key train.steps", NULL);
}

static void test_enum(void **state) {
    (void)state;
    demo_cfg c = { 0 };
    ts_err err = { 0 };
    expect_error(section_of("train:\n  steps: 1\n  precision: fp8\n", &c, &err), TS_ERR_RECIPE,
                 &err, "demo.yaml:3: train.precision: 'fp8' is not one of: fp32, bf16, fp16",
                 NULL);
    expect_error(section_of("train:\n  steps: 1\n  precision: bf61\n", &c, &err),
                 TS_ERR_RECIPE, &err, "did you mean 'bf16'?", NULL);
    assert_int_equal(section_of("train:\n  steps: 1\n  precision: fp16\n", &c, &err), TS_OK);
    assert_int_equal(c.precision, 2);
}

static void test_syntax_error(void **state) {
    (void)state;
    ts_recipe *r = NULL;
    ts_err err = { 0 };
    ts_status s = ts_recipe_parse("train:\n  steps: 1\n  lr: [1, 2\n", "demo.yaml", &r, &err);
    expect_error(s, TS_ERR_RECIPE, &err, "demo.yaml:", NULL);
    assert_null(r);
    int line = 0, col = 0;
    assert_int_equal(sscanf(err.msg, "demo.yaml:%d:%d:", &line, &col), 2);
    assert_true(line >= 3);
    s = ts_recipe_parse("train:\n  steps: 1\n   lr: 2\n", "demo.yaml", &r, &err);
    expect_error(s, TS_ERR_RECIPE, &err, "demo.yaml:3:", NULL);
    s = ts_recipe_parse("a: &x 1\nb: *x\n", "demo.yaml", &r, &err);
    expect_error(s, TS_ERR_RECIPE, &err, "demo.yaml:2:4: aliases", NULL);
    s = ts_recipe_parse("a: 1\n---\nb: 2\n", "demo.yaml", &r, &err);
    expect_error(s, TS_ERR_RECIPE, &err, "demo.yaml:2:", "one YAML document", NULL);
}

static void test_duplicate(void **state) {
    (void)state;
    ts_recipe *r = NULL;
    ts_err err = { 0 };
    ts_status s = ts_recipe_parse("train:\n  steps: 1\n  lr: 2\n  steps: 3\n", "demo.yaml", &r,
                                  &err);
    expect_error(s, TS_ERR_RECIPE, &err, "demo.yaml:4:3: duplicate key train.steps",
                 "line 2", "line 4", NULL);
    assert_null(r);
}

static void test_not_a_map(void **state) {
    (void)state;
    demo_cfg c = { 0 };
    ts_err err = { 0 };
    expect_error(section_of("optim: {}\ntrain: 5\n", &c, &err), TS_ERR_RECIPE, &err,
                 "demo.yaml:2: train must be a map of keys, got a scalar", NULL);
    ts_recipe *r = parse_ok("model:\n  - 1\n");
    expect_error(ts_recipe_section(r, "model.text", demo_keys, NKEYS, &c, &err), TS_ERR_RECIPE,
                 &err, "demo.yaml:1: model must be a map of keys, got a list", NULL);
    ts_recipe_free(r);
    /* An empty section (a null) reads as an empty map. */
    expect_error(section_of("train:\n  # nothing yet\n", &c, &err), TS_ERR_RECIPE, &err,
                 "missing required key train.steps", NULL);
    /* The top level must be a map. */
    r = NULL;
    expect_error(ts_recipe_parse("- a\n- b\n", "demo.yaml", &r, &err), TS_ERR_RECIPE, &err,
                 "demo.yaml:1: the top level of a recipe must be a map", NULL);
    assert_null(r);
}

static void test_load_file(void **state) {
    (void)state;
    char path[] = "/tmp/unit_recipe_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *fp = fdopen(fd, "w");
    assert_non_null(fp);
    fputs(full_text, fp);
    fclose(fp);

    ts_recipe *r = NULL;
    ts_err err = { 0 };
    assert_int_equal(ts_recipe_load(path, &r, &err), TS_OK);
    demo_cfg c = { 0 };
    assert_int_equal(ts_recipe_section(r, "train", demo_keys, NKEYS, &c, &err), TS_OK);
    check_full(&c);
    char where[512], want[512];
    snprintf(want, sizeof want, "%s:7", path);
    assert_string_equal(ts_recipe_where(r, "train.precision", where, sizeof where), want);
    assert_string_equal(ts_recipe_path(r), path);
    static const char *const top[] = { "train", NULL };
    snprintf(want, sizeof want, "%s:14: unknown key optim", path);
    expect_error(ts_recipe_only(r, "", top, &err), TS_ERR_RECIPE, &err, want, NULL);
    ts_recipe_free(r);
    unlink(path);

    r = NULL;
    expect_error(ts_recipe_load("/nonexistent/recipe.yaml", &r, &err), TS_ERR_IO, &err,
                 "/nonexistent/recipe.yaml", NULL);
    assert_null(r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid),           cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_round_trip),      cmocka_unit_test(test_set),
        cmocka_unit_test(test_unknown_key),     cmocka_unit_test(test_wrong_type),
        cmocka_unit_test(test_missing_required), cmocka_unit_test(test_enum),
        cmocka_unit_test(test_syntax_error),    cmocka_unit_test(test_duplicate),
        cmocka_unit_test(test_not_a_map),       cmocka_unit_test(test_load_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
