/* recipe.c: YAML recipes read by libyaml into a tree, then into config structs by key tables.
 *
 * The file is parsed from libyaml events into our own tree of maps, sequences and scalars; every
 * node remembers where it came from (a file line, a --set assignment, or a default of a key
 * table) so that each message can point at it. Maps keep their key order, and duplicate keys are
 * errors. Sections are read by ts_key tables with strict types; each default that is applied is
 * logged and written into the tree, so ts_recipe_dump gives the resolved recipe.
 *
 * It is not a general YAML library: anchors and aliases, merge keys, several documents in one
 * file and keys that are not scalars are refused, and tags only mark a scalar as text.
 */
#include "tessera-impl.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <strings.h>
#include <yaml.h>

#define MAX_DEPTH 64 /* nesting limit, so a hostile file cannot exhaust the stack */
#define PATH_MAX_LEN 256

/* ---------------------------------------------------------------------------------------- */
/* The tree                                                                                 */

typedef enum { NODE_SCALAR, NODE_SEQ, NODE_MAP } node_kind;
typedef enum { FROM_FILE, FROM_SET, FROM_DEFAULT } node_origin;

typedef struct node node;
typedef struct entry {
    char *key;
    int line; /* line of the key in the file, 0 when it did not come from the file */
    node *val;
} entry;

struct node {
    node_kind kind;
    node_origin origin;
    int line;        /* 1-based line of the node in the file (FROM_FILE) */
    const char *set; /* FROM_SET: the dotted key of the assignment, owned by the recipe */
    int plain;       /* scalar: written without quotes or tag, so it may be a number or bool */
    char *text;      /* scalar */
    int n, cap;
    node **items;    /* sequence */
    entry *entries;  /* map, in the order of the file */
};

struct ts_recipe {
    char *name;  /* the file name used in messages */
    node *root;  /* always a map */
    node **dead; /* replaced values, kept so that strings handed out stay valid */
    int ndead, capdead;
    char **sets; /* the assignment keys that FROM_SET nodes point at */
    int nsets, capsets;
};

static ts_status nomem(ts_err *err) { return ts_fail(err, TS_ERR_NOMEM, "recipe: out of memory"); }

/* Grow an array of elements of size sz so that it holds at least need; 0 on success. */
static int grow(void **arr, int *cap, int need, size_t sz) {
    if (need <= *cap) return 0;
    int c = *cap ? *cap * 2 : 4;
    while (c < need) c *= 2;
    void *p = realloc(*arr, (size_t)c * sz);
    if (!p) return -1;
    *arr = p;
    *cap = c;
    return 0;
}

static node *node_new(node_kind kind, node_origin origin, int line, const char *set) {
    node *v = calloc(1, sizeof *v);
    if (!v) return NULL;
    v->kind = kind;
    v->origin = origin;
    v->line = line;
    v->set = set;
    return v;
}

static void node_free(node *v) {
    if (!v) return;
    free(v->text);
    for (int i = 0; v->kind == NODE_SEQ && i < v->n; i++) node_free(v->items[i]);
    for (int i = 0; v->kind == NODE_MAP && i < v->n; i++) {
        free(v->entries[i].key);
        node_free(v->entries[i].val);
    }
    free(v->items);
    free(v->entries);
    free(v);
}

static int seq_push(node *seq, node *item) {
    if (grow((void **)&seq->items, &seq->cap, seq->n + 1, sizeof *seq->items)) return -1;
    seq->items[seq->n++] = item;
    return 0;
}

/* Append key: val to a map; the map takes the key string and the value on success. */
static int map_push(node *map, char *key, int line, node *val) {
    if (grow((void **)&map->entries, &map->cap, map->n + 1, sizeof *map->entries)) return -1;
    map->entries[map->n++] = (entry){ key, line, val };
    return 0;
}

static entry *map_find_len(const node *map, const char *key, size_t len) {
    for (int i = 0; i < map->n; i++)
        if (strlen(map->entries[i].key) == len && memcmp(map->entries[i].key, key, len) == 0)
            return &map->entries[i];
    return NULL;
}

static entry *map_find(const node *map, const char *key) {
    return map_find_len(map, key, strlen(key));
}

/* Set the origin of v and everything below it. */
static void mark_origin(node *v, node_origin origin, const char *set) {
    v->origin = origin;
    v->set = set;
    if (origin != FROM_FILE) v->line = 0;
    for (int i = 0; v->kind == NODE_SEQ && i < v->n; i++) mark_origin(v->items[i], origin, set);
    for (int i = 0; v->kind == NODE_MAP && i < v->n; i++) {
        if (origin != FROM_FILE) v->entries[i].line = 0;
        mark_origin(v->entries[i].val, origin, set);
    }
}

/* Keep a replaced node alive until the recipe is freed. */
static int bury(ts_recipe *r, node *v) {
    if (grow((void **)&r->dead, &r->capdead, r->ndead + 1, sizeof *r->dead)) return -1;
    r->dead[r->ndead++] = v;
    return 0;
}

static int is_null_scalar(const node *v) {
    return v->kind == NODE_SCALAR && v->plain &&
           (!v->text[0] || !strcmp(v->text, "~") || !strcasecmp(v->text, "null"));
}

static const char *kind_name(const node *v) {
    return v->kind == NODE_MAP ? "a map" : v->kind == NODE_SEQ ? "a list" : "a scalar";
}

/* ---------------------------------------------------------------------------------------- */
/* Where things are, for messages                                                          */

/* "file:line", "--set a.b" or "file" for a node. */
static const char *node_where(const ts_recipe *r, const node *v, char *buf, size_t n) {
    if (v && v->origin == FROM_SET) snprintf(buf, n, "--set %s", v->set);
    else if (v && v->line > 0) snprintf(buf, n, "%s:%d", r->name, v->line);
    else snprintf(buf, n, "%s", r->name);
    return buf;
}

/* The same for a map entry: the line of its key. */
static const char *entry_where(const ts_recipe *r, const entry *e, char *buf, size_t n) {
    if (e->val->origin == FROM_SET) snprintf(buf, n, "--set %s", e->val->set);
    else if (e->line > 0) snprintf(buf, n, "%s:%d", r->name, e->line);
    else snprintf(buf, n, "%s", r->name);
    return buf;
}

/* "prefix.key", or "key" at the top level. */
static const char *join(char *buf, size_t n, const char *prefix, const char *key) {
    if (prefix && prefix[0]) snprintf(buf, n, "%s.%s", prefix, key);
    else snprintf(buf, n, "%s", key);
    return buf;
}

/* ---------------------------------------------------------------------------------------- */
/* Reading YAML events into the tree                                                        */

typedef struct reader {
    yaml_parser_t y;
    const char *name;   /* the file name, or the assignment key for --set values */
    node_origin origin; /* FROM_FILE, or FROM_SET / FROM_DEFAULT for single values */
    ts_status code;     /* TS_ERR_RECIPE for files, TS_ERR_USAGE for --set */
    const char *text;   /* the text being read, quoted in messages about single values */
    int depth;
    ts_err *err;
} reader;

/* A message at a mark of the text: file:line:col in a file; for a single value, the value. */
static ts_status read_fail(reader *rd, yaml_mark_t m, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static ts_status read_fail(reader *rd, yaml_mark_t m, const char *fmt, ...) {
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (rd->origin == FROM_FILE)
        return ts_fail(rd->err, rd->code, "%s:%zu:%zu: %s", rd->name, m.line + 1, m.column + 1,
                       msg);
    (void)m;
    return ts_fail(rd->err, rd->code, "%s: %s, in the value '%.200s'", rd->name, msg, rd->text);
}

static ts_status syntax_error(reader *rd) {
    const yaml_parser_t *y = &rd->y;
    if (y->error == YAML_MEMORY_ERROR) return nomem(rd->err);
    if (y->error == YAML_READER_ERROR)
        return ts_fail(rd->err, rd->code, "%s: invalid text at byte %zu: %s", rd->name,
                       y->problem_offset, y->problem ? y->problem : "unreadable");
    const char *problem = y->problem ? y->problem : "invalid YAML";
    if (y->context && rd->origin != FROM_FILE)
        return read_fail(rd, y->problem_mark, "%s (%s)", problem, y->context);
    if (y->context)
        return read_fail(rd, y->problem_mark, "%s (%s at line %zu)", problem, y->context,
                         y->context_mark.line + 1);
    return read_fail(rd, y->problem_mark, "%s", problem);
}

static ts_status next_event(reader *rd, yaml_event_t *ev) {
    if (!yaml_parser_parse(&rd->y, ev)) return syntax_error(rd);
    return TS_OK;
}

static ts_status parse_node(reader *rd, yaml_event_t *ev, const char *path, node **out);

/* A scalar keeps its text and whether it was plain: only plain text can be a number or a
 * bool, so "10" in quotes stays a string, as YAML says. */
static ts_status parse_scalar(reader *rd, yaml_event_t *ev, node **out) {
    const char *text = (const char *)ev->data.scalar.value;
    size_t len = ev->data.scalar.length;
    if (memchr(text, 0, len)) return read_fail(rd, ev->start_mark, "a value holds a NUL character");
    node *v = node_new(NODE_SCALAR, rd->origin, (int)ev->start_mark.line + 1, NULL);
    if (!v || !(v->text = strdup(text))) {
        free(v);
        return nomem(rd->err);
    }
    v->plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE && !ev->data.scalar.tag;
    *out = v;
    return TS_OK;
}

/* A sequence: any nodes until the end event; path names the items in messages (a.b[2]). */
static ts_status parse_seq(reader *rd, yaml_event_t *start, const char *path, node **out) {
    node *seq = node_new(NODE_SEQ, rd->origin, (int)start->start_mark.line + 1, NULL);
    if (!seq) return nomem(rd->err);
    ts_status s;
    for (;;) {
        yaml_event_t ev;
        if ((s = next_event(rd, &ev))) goto fail;
        if (ev.type == YAML_SEQUENCE_END_EVENT) {
            yaml_event_delete(&ev);
            break;
        }
        char sub[PATH_MAX_LEN];
        snprintf(sub, sizeof sub, "%s[%d]", path, seq->n);
        node *item = NULL;
        s = parse_node(rd, &ev, sub, &item);
        yaml_event_delete(&ev);
        if (s) goto fail;
        if (seq_push(seq, item)) {
            node_free(item);
            s = nomem(rd->err);
            goto fail;
        }
    }
    *out = seq;
    return TS_OK;
fail:
    node_free(seq);
    return s;
}

/* A map: pairs of a scalar key and any node until the end event. A key seen twice is an
 * error at the second one that names both lines. */
static ts_status parse_map(reader *rd, yaml_event_t *start, const char *path, node **out) {
    node *map = node_new(NODE_MAP, rd->origin, (int)start->start_mark.line + 1, NULL);
    if (!map) return nomem(rd->err);
    ts_status s;
    char *key = NULL;
    for (;;) {
        yaml_event_t ev;
        if ((s = next_event(rd, &ev))) goto fail;
        if (ev.type == YAML_MAPPING_END_EVENT) {
            yaml_event_delete(&ev);
            break;
        }
        if (ev.type != YAML_SCALAR_EVENT) {
            s = read_fail(rd, ev.start_mark, "a key in %s is not plain text",
                          path[0] ? path : "the top level");
            yaml_event_delete(&ev);
            goto fail;
        }
        int line = (int)ev.start_mark.line + 1;
        node *k = NULL;
        s = parse_scalar(rd, &ev, &k);
        if (!s) {
            key = k->text; /* the key keeps the text of its scalar */
            k->text = NULL;
            node_free(k);
        }
        char sub[PATH_MAX_LEN];
        join(sub, sizeof sub, path, key ? key : "");
        const entry *dup = key ? map_find(map, key) : NULL;
        if (!s && dup && rd->origin == FROM_FILE)
            s = read_fail(rd, ev.start_mark, "duplicate key %s (first at line %d, again at line %d)",
                          sub, dup->line, line);
        else if (!s && dup)
            s = read_fail(rd, ev.start_mark, "duplicate key %s", sub);
        yaml_event_delete(&ev);
        if (s) goto fail;

        node *val = NULL;
        if ((s = next_event(rd, &ev))) goto fail;
        s = parse_node(rd, &ev, sub, &val);
        yaml_event_delete(&ev);
        if (s) goto fail;
        if (map_push(map, key, rd->origin == FROM_FILE ? line : 0, val)) {
            node_free(val);
            s = nomem(rd->err);
            goto fail;
        }
        key = NULL;
    }
    *out = map;
    return TS_OK;
fail:
    free(key);
    node_free(map);
    return s;
}

/* Read the node that starts with ev (which the caller still owns and deletes). */
static ts_status parse_node(reader *rd, yaml_event_t *ev, const char *path, node **out) {
    if (rd->depth >= MAX_DEPTH)
        return read_fail(rd, ev->start_mark, "nested deeper than %d levels", MAX_DEPTH);
    ts_status s;
    rd->depth++;
    switch (ev->type) {
    case YAML_SCALAR_EVENT: s = parse_scalar(rd, ev, out); break;
    case YAML_SEQUENCE_START_EVENT: s = parse_seq(rd, ev, path, out); break;
    case YAML_MAPPING_START_EVENT: s = parse_map(rd, ev, path, out); break;
    case YAML_ALIAS_EVENT:
        s = read_fail(rd, ev->start_mark, "aliases (*%s) are not supported in recipes",
                      (const char *)ev->data.alias.anchor);
        break;
    default: s = read_fail(rd, ev->start_mark, "unexpected YAML event"); break;
    }
    rd->depth--;
    return s;
}

/* Read the whole stream: one document (*out is its node) or none (*out stays NULL). */
static ts_status parse_stream(reader *rd, const char *text, node **out) {
    *out = NULL;
    if (!yaml_parser_initialize(&rd->y)) return nomem(rd->err);
    yaml_parser_set_input_string(&rd->y, (const unsigned char *)text, strlen(text));
    node *doc = NULL;
    yaml_event_t ev;
    ts_status s = next_event(rd, &ev); /* stream start */
    if (s) goto fail;
    yaml_event_delete(&ev);
    for (int ndoc = 0;; ndoc++) {
        if ((s = next_event(rd, &ev))) goto fail;
        if (ev.type == YAML_STREAM_END_EVENT) {
            yaml_event_delete(&ev);
            break;
        }
        if (ndoc > 0) {
            s = read_fail(rd, ev.start_mark, "a recipe holds one YAML document, found a second");
            yaml_event_delete(&ev);
            goto fail;
        }
        yaml_event_delete(&ev); /* document start */
        if ((s = next_event(rd, &ev))) goto fail;
        s = parse_node(rd, &ev, "", &doc);
        yaml_event_delete(&ev);
        if (s) goto fail;
        if ((s = next_event(rd, &ev))) goto fail; /* document end */
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&rd->y);
    *out = doc;
    return TS_OK;
fail:
    node_free(doc);
    yaml_parser_delete(&rd->y);
    return s;
}

/* Read one value (an override or a default) as YAML; empty text is an empty plain scalar. */
static ts_status parse_value(const char *text, const char *name, node_origin origin,
                             const char *set, ts_status code, node **out, ts_err *err) {
    reader rd = { .name = name, .origin = origin, .code = code, .text = text, .err = err };
    node *v = NULL;
    ts_status s = parse_stream(&rd, text, &v);
    if (s) return s;
    if (!v) {
        v = node_new(NODE_SCALAR, origin, 0, NULL);
        if (!v || !(v->text = strdup(""))) {
            free(v);
            return nomem(err);
        }
        v->plain = 1;
    }
    mark_origin(v, origin, set);
    *out = v;
    return TS_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* Loading                                                                                  */

ts_status ts_recipe_parse(const char *text, const char *name, ts_recipe **out, ts_err *err) {
    *out = NULL;
    if (!name) name = "<recipe>";
    ts_recipe *r = calloc(1, sizeof *r);
    if (!r || !(r->name = strdup(name))) {
        free(r);
        return nomem(err);
    }
    reader rd = { .name = r->name, .origin = FROM_FILE, .code = TS_ERR_RECIPE, .err = err };
    ts_status s = parse_stream(&rd, text, &r->root);
    if (s) goto fail;
    if (!r->root && !(r->root = node_new(NODE_MAP, FROM_FILE, 0, NULL))) {
        s = nomem(err);
        goto fail;
    }
    if (r->root->kind != NODE_MAP) {
        s = ts_fail(err, TS_ERR_RECIPE, "%s:%d: the top level of a recipe must be a map of "
                    "sections, got %s", r->name, r->root->line, kind_name(r->root));
        goto fail;
    }
    *out = r;
    return TS_OK;
fail:
    ts_recipe_free(r);
    return s;
}

ts_status ts_recipe_load(const char *path, ts_recipe **out, ts_err *err) {
    *out = NULL;
    FILE *fp = fopen(path, "rb");
    if (!fp) return ts_fail(err, TS_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    ts_status s = TS_OK;
    size_t n = 0, cap = 1 << 14;
    char *buf = malloc(cap);
    if (!buf) {
        s = nomem(err);
        goto done;
    }
    for (;;) {
        if (n + 1 >= cap) {
            char *p = realloc(buf, cap *= 2);
            if (!p) {
                s = nomem(err);
                goto done;
            }
            buf = p;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, fp);
        n += got;
        if (got == 0) break;
    }
    if (ferror(fp)) {
        s = ts_fail(err, TS_ERR_IO, "%s: cannot read: %s", path, strerror(errno));
        goto done;
    }
    buf[n] = 0;
    if (memchr(buf, 0, n)) {
        s = ts_fail(err, TS_ERR_RECIPE, "%s: not a text file (it holds NUL bytes)", path);
        goto done;
    }
    s = ts_recipe_parse(buf, path, out, err);
done:
    free(buf);
    fclose(fp);
    return s;
}

void ts_recipe_free(ts_recipe *r) {
    if (!r) return;
    node_free(r->root);
    for (int i = 0; i < r->ndead; i++) node_free(r->dead[i]);
    for (int i = 0; i < r->nsets; i++) free(r->sets[i]);
    free(r->dead);
    free(r->sets);
    free(r->name);
    free(r);
}

const char *ts_recipe_path(const ts_recipe *r) { return r->name; }

/* ---------------------------------------------------------------------------------------- */
/* Paths                                                                                    */

/* The entry at a dotted path, or NULL when absent (the top level has no entry). */
static entry *lookup(const ts_recipe *r, const char *path) {
    const node *map = r->root;
    entry *e = NULL;
    for (const char *p = path;;) {
        const char *dot = strchr(p, '.');
        size_t len = dot ? (size_t)(dot - p) : strlen(p);
        if (!map || map->kind != NODE_MAP || !(e = map_find_len(map, p, len))) return NULL;
        if (!dot) return e;
        map = e->val;
        p = dot + 1;
    }
}

/* Put an empty map in place of a missing or null value at key of map, or give the map that
 * is there. Anything else there is an error for the caller, who gets *out = NULL. */
static ts_status child_map(ts_recipe *r, node *map, const char *key, size_t len,
                           node_origin origin, const char *set, node **out, ts_err *err) {
    *out = NULL;
    entry *e = map_find_len(map, key, len);
    if (e && e->val->kind == NODE_MAP) {
        *out = e->val;
        return TS_OK;
    }
    if (e && !is_null_scalar(e->val)) return TS_OK;
    /* A null keeps where it came from; a new map gets the caller's origin. */
    node *m = e ? node_new(NODE_MAP, e->val->origin, e->val->line, e->val->set)
                : node_new(NODE_MAP, origin, 0, set);
    if (!m) return nomem(err);
    if (e) {
        if (bury(r, e->val)) goto oom;
        e->val = m;
    } else {
        char *k = strndup(key, len);
        if (!k || map_push(map, k, 0, m)) {
            free(k);
            goto oom;
        }
    }
    *out = m;
    return TS_OK;
oom:
    node_free(m);
    return nomem(err);
}

/* The map at a dotted section path (NULL or "" is the top level), made when absent when
 * create is set; *out = NULL when absent otherwise. A value on the way that is not a map is an
 * error naming where it is. */
static ts_status section_map(ts_recipe *r, const char *section, int create, node **out,
                             ts_err *err) {
    node *map = r->root;
    *out = NULL;
    for (const char *p = section; p && *p;) {
        const char *dot = strchr(p, '.');
        size_t len = dot ? (size_t)(dot - p) : strlen(p);
        entry *e = map_find_len(map, p, len);
        node *next = NULL;
        if (e && e->val->kind == NODE_MAP) {
            next = e->val;
        } else if (!e || is_null_scalar(e->val)) {
            if (!create) return TS_OK;
            ts_status s = child_map(r, map, p, len, FROM_DEFAULT, NULL, &next, err);
            if (s) return s;
        } else {
            char where[PATH_MAX_LEN + 64];
            return ts_fail(err, TS_ERR_RECIPE, "%s: %.*s must be a map of keys, got %s",
                           entry_where(r, e, where, sizeof where), (int)((size_t)(p - section) + len),
                           section, kind_name(e->val));
        }
        map = next;
        p = dot ? dot + 1 : NULL;
    }
    *out = map;
    return TS_OK;
}

int ts_recipe_keys(const ts_recipe *r, const char *section, const char **names, int max) {
    const node *map = r->root;
    if (section && *section) {
        const entry *e = lookup(r, section);
        map = e ? e->val : NULL;
    }
    if (!map || map->kind != NODE_MAP) return 0;
    int n = 0;
    for (int i = 0; i < map->n && n < max; i++) names[n++] = map->entries[i].key;
    return n;
}

int ts_recipe_has(const ts_recipe *r, const char *path) {
    return r && path && path[0] && lookup(r, path) != NULL;
}

const char *ts_recipe_str(const ts_recipe *r, const char *path) {
    const entry *e = (r && path && path[0]) ? lookup(r, path) : NULL;
    return (e && e->val->kind == NODE_SCALAR) ? e->val->text : NULL;
}

const char *ts_recipe_where(const ts_recipe *r, const char *path, char *buf, size_t n) {
    const entry *e = (path && path[0]) ? lookup(r, path) : NULL;
    if (e) return entry_where(r, e, buf, n);
    snprintf(buf, n, "%s", r->name);
    return buf;
}

/* ---------------------------------------------------------------------------------------- */
/* Overrides                                                                                */

static ts_status set_fail(ts_status code, ts_err *err, const char *assignment, const char *why) {
    return ts_fail(err, code, "--set %s: %s", assignment, why);
}

/* The key is split at the first '=', so the value may hold '=' itself. The value is read as
 * YAML by the same reader as files; every node of it remembers the key of the assignment, which
 * is how later messages say "--set optim.lr" instead of a file line. An existing value keeps
 * its place in its map, so the dump keeps the order of the file. */
ts_status ts_recipe_set(ts_recipe *r, const char *assignment, ts_err *err) {
    const char *eq = strchr(assignment, '=');
    if (!eq) return set_fail(TS_ERR_USAGE, err, assignment, "expected key=value");
    const char *k0 = assignment, *k1 = eq;
    while (k0 < k1 && (*k0 == ' ' || *k0 == '\t')) k0++;
    while (k1 > k0 && (k1[-1] == ' ' || k1[-1] == '\t')) k1--;
    if (k0 == k1) return set_fail(TS_ERR_USAGE, err, assignment, "expected key=value");
    char *key = strndup(k0, (size_t)(k1 - k0));
    if (!key) return nomem(err);
    if (key[0] == '.' || key[strlen(key) - 1] == '.' || strstr(key, "..")) {
        ts_status s = set_fail(TS_ERR_USAGE, err, assignment, "empty name in the dotted key");
        free(key);
        return s;
    }
    if (grow((void **)&r->sets, &r->capsets, r->nsets + 1, sizeof *r->sets)) {
        free(key);
        return nomem(err);
    }
    r->sets[r->nsets++] = key; /* the recipe owns it from here on */

    char name[PATH_MAX_LEN + 8];
    snprintf(name, sizeof name, "--set %s", key);
    node *val = NULL;
    ts_status s = parse_value(eq + 1, name, FROM_SET, key, TS_ERR_USAGE, &val, err);
    if (s) return s;
    const char *v0 = eq + 1;
    while (*v0 == ' ' || *v0 == '\t') v0++;
    if (val->kind == NODE_MAP && *v0 != '{') {
        node_free(val);
        return ts_fail(err, TS_ERR_USAGE, "--set %s: the value '%s' reads as a map; quote it "
                       "to pass text", key, eq + 1);
    }

    /* Walk to the map that holds the last name, making missing maps on the way. */
    node *map = r->root;
    const char *p = key;
    for (const char *dot; (dot = strchr(p, '.')); p = dot + 1) {
        node *next = NULL;
        s = child_map(r, map, p, (size_t)(dot - p), FROM_SET, key, &next, err);
        if (s) goto fail;
        if (!next) {
            char where[PATH_MAX_LEN + 64];
            const entry *e = map_find_len(map, p, (size_t)(dot - p));
            s = ts_fail(err, TS_ERR_USAGE, "--set %s: %.*s is not a map (%s, %s)", key,
                        (int)(dot - key), key, kind_name(e->val),
                        entry_where(r, e, where, sizeof where));
            goto fail;
        }
        map = next;
    }
    entry *e = map_find(map, p);
    if (e) {
        if (bury(r, e->val)) goto oom;
        e->val = val;
    } else {
        char *k = strdup(p);
        if (!k || map_push(map, k, 0, val)) {
            free(k);
            goto oom;
        }
    }
    return TS_OK;
oom:
    s = nomem(err);
fail:
    node_free(val);
    return s;
}

/* ---------------------------------------------------------------------------------------- */
/* Unknown keys                                                                             */

/* Edit distance with adjacent transpositions (optimal string alignment), capped at 9. */
static int edit_distance(const char *a, const char *b) {
    /* d[i][j] is the distance between the first i bytes of a and the first j bytes of b. */
    size_t na = strlen(a), nb = strlen(b);
    if (na > 62 || nb > 62) return 9;
    int d[64][64];
    for (size_t i = 0; i <= na; i++) d[i][0] = (int)i;
    for (size_t j = 0; j <= nb; j++) d[0][j] = (int)j;
    for (size_t i = 1; i <= na; i++)
        for (size_t j = 1; j <= nb; j++) {
            int cost = a[i - 1] != b[j - 1];
            int best = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < best) best = d[i][j - 1] + 1;
            if (d[i - 1][j - 1] + cost < best) best = d[i - 1][j - 1] + cost;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
                d[i - 2][j - 2] + 1 < best)
                best = d[i - 2][j - 2] + 1;
            d[i][j] = best;
        }
    return d[na][nb];
}

/* The valid name closest to word within distance 2 (and closer than the word is long). */
static const char *suggest(const char *word, const char *const *names, int n) {
    const char *best = NULL;
    int bestd = 3;
    for (int i = 0; i < n; i++) {
        int d = edit_distance(word, names[i]);
        if (d < bestd && d < (int)strlen(word)) {
            best = names[i];
            bestd = d;
        }
    }
    return best;
}

/* "a, b, c" into buf. */
static const char *name_list(const char *const *names, int n, char *buf, size_t size) {
    size_t at = 0;
    buf[0] = 0;
    for (int i = 0; i < n && at < size; i++)
        at += (size_t)snprintf(buf + at, size - at, "%s%s", i ? ", " : "", names[i]);
    return buf;
}

/* An error for each key of map that is not among names. */
static ts_status check_keys(const ts_recipe *r, const node *map, const char *section,
                            const char *const *names, int n, ts_err *err) {
    for (int i = 0; i < map->n; i++) {
        const entry *e = &map->entries[i];
        int known = 0;
        for (int j = 0; j < n && !known; j++) known = !strcmp(e->key, names[j]);
        if (known) continue;
        char where[PATH_MAX_LEN + 64], path[PATH_MAX_LEN], list[600], hint[PATH_MAX_LEN] = "";
        const char *close = suggest(e->key, names, n);
        if (close) snprintf(hint, sizeof hint, "; did you mean '%s'?", close);
        return ts_fail(err, TS_ERR_RECIPE, "%s: unknown key %s (valid keys: %s)%s",
                       entry_where(r, e, where, sizeof where),
                       join(path, sizeof path, section, e->key),
                       n ? name_list(names, n, list, sizeof list) : "none", hint);
    }
    return TS_OK;
}

ts_status ts_recipe_only(const ts_recipe *r, const char *section, const char *const *names,
                         ts_err *err) {
    node *map = NULL;
    /* Nothing is created when create is 0, so the cast only satisfies the signature. */
    ts_status s = section_map((ts_recipe *)r, section, 0, &map, err);
    if (s || !map) return s;
    int n = 0;
    while (names && names[n]) n++;
    return check_keys(r, map, section, names, n, err);
}

/* ---------------------------------------------------------------------------------------- */
/* Values                                                                                   */

/* Decimal integer text: optional sign and digits. 0 ok, -1 not an integer, -2 out of range. */
static int read_int(const char *s, int64_t *out) {
    const char *p = s + (*s == '+' || *s == '-');
    if (!*p) return -1;
    for (; *p; p++)
        if (*p < '0' || *p > '9') return -1;
    errno = 0;
    long long v = strtoll(s, NULL, 10);
    if (errno == ERANGE) return -2;
    *out = (int64_t)v;
    return 0;
}

/* Decimal number text (1, -2.5, .5, 3e-4); no inf or nan. 0 ok, -1 not a number, -2 range. */
static int read_float(const char *s, double *out) {
    const char *p = s + (*s == '+' || *s == '-');
    int digits = 0;
    while (*p >= '0' && *p <= '9') p++, digits++;
    if (*p == '.') {
        p++;
        while (*p >= '0' && *p <= '9') p++, digits++;
    }
    if (!digits) return -1;
    if (*p == 'e' || *p == 'E') {
        p++;
        p += (*p == '+' || *p == '-');
        if (*p < '0' || *p > '9') return -1;
        while (*p >= '0' && *p <= '9') p++;
    }
    if (*p) return -1;
    double v = strtod(s, NULL);
    if (!isfinite(v)) return -2;
    *out = v;
    return 0;
}

/* true/false, yes/no, on/off in any case. 0 ok, -1 not a bool. */
static int read_bool(const char *s, int *out) {
    static const char *const yes[] = { "true", "yes", "on" }, *const no[] = { "false", "no", "off" };
    for (int i = 0; i < 3; i++) {
        if (!strcasecmp(s, yes[i])) return *out = 1, 0;
        if (!strcasecmp(s, no[i])) return *out = 0, 0;
    }
    return -1;
}

/* What a scalar key expects, for messages. */
static const char *expected(ts_key_type t) {
    switch (t) {
    case TS_KEY_INT: case TS_KEY_INT_LIST: return "an integer";
    case TS_KEY_FLOAT: case TS_KEY_FLOAT_LIST: return "a number";
    case TS_KEY_BOOL: return "true or false (or yes/no, on/off)";
    default: return "a string";
    }
}

/* A message for a value of the wrong type: what was there, quoted or of which kind. */
static ts_status type_fail(const ts_recipe *r, const node *v, const char *path, ts_key_type t,
                           ts_err *err) {
    char where[PATH_MAX_LEN + 64];
    node_where(r, v, where, sizeof where);
    if (v->kind != NODE_SCALAR)
        return ts_fail(err, TS_ERR_RECIPE, "%s: %s: expected %s, got %s", where, path,
                       expected(t), kind_name(v));
    if (!v->plain)
        return ts_fail(err, TS_ERR_RECIPE, "%s: %s: expected %s, got the quoted string \"%.200s\"",
                       where, path, expected(t), v->text);
    return ts_fail(err, TS_ERR_RECIPE, "%s: %s: expected %s, got '%.200s'", where, path,
                   expected(t), v->text);
}

/* One scalar number of type t (INT or FLOAT) into *i or *f. */
static ts_status read_number(const ts_recipe *r, const node *v, const char *path, ts_key_type t,
                             int64_t *i, double *f, ts_err *err) {
    if (v->kind != NODE_SCALAR || !v->plain) return type_fail(r, v, path, t, err);
    int rc = (t == TS_KEY_INT || t == TS_KEY_INT_LIST) ? read_int(v->text, i)
                                                        : read_float(v->text, f);
    if (rc == -1) return type_fail(r, v, path, t, err);
    if (rc == -2) {
        char where[PATH_MAX_LEN + 64];
        return ts_fail(err, TS_ERR_RECIPE, "%s: %s: %.200s is out of range for %s",
                       node_where(r, v, where, sizeof where), path, v->text,
                       i ? "a 64-bit integer" : "a double");
    }
    return TS_OK;
}

/* A list of up to TS_LIST_MAX numbers; a single scalar is a list of one. */
static ts_status read_list(const ts_recipe *r, const node *v, const char *path, ts_key_type t,
                           void *dst, ts_err *err) {
    ts_int_list il = { 0 };
    ts_float_list fl = { 0 };
    int isint = t == TS_KEY_INT_LIST;
    int n = v->kind == NODE_SEQ ? v->n : 1;
    if (v->kind == NODE_MAP) {
        char where[PATH_MAX_LEN + 64];
        return ts_fail(err, TS_ERR_RECIPE, "%s: %s: expected a list of %s, got a map",
                       node_where(r, v, where, sizeof where), path,
                       isint ? "integers" : "numbers");
    }
    if (n > TS_LIST_MAX) {
        char where[PATH_MAX_LEN + 64];
        return ts_fail(err, TS_ERR_RECIPE, "%s: %s: expected at most %d values, got %d",
                       node_where(r, v, where, sizeof where), path, TS_LIST_MAX, n);
    }
    for (int k = 0; k < n; k++) {
        const node *item = v->kind == NODE_SEQ ? v->items[k] : v;
        char sub[PATH_MAX_LEN];
        if (v->kind == NODE_SEQ) snprintf(sub, sizeof sub, "%s[%d]", path, k);
        else snprintf(sub, sizeof sub, "%s", path);
        ts_status s = read_number(r, item, sub, t, isint ? &il.v[k] : NULL,
                                  isint ? NULL : &fl.v[k], err);
        if (s) return s;
    }
    il.n = fl.n = n;
    if (isint) memcpy(dst, &il, sizeof il);
    else memcpy(dst, &fl, sizeof fl);
    return TS_OK;
}

/* One of the choices of an enum key, stored as its index. */
static ts_status read_enum(const ts_recipe *r, const ts_key *k, const node *v, const char *path,
                           int *out, ts_err *err) {
    int n = 0;
    while (k->choices && k->choices[n]) n++;
    if (v->kind != NODE_SCALAR) {
        char where[PATH_MAX_LEN + 64], list[600];
        return ts_fail(err, TS_ERR_RECIPE, "%s: %s: expected one of: %s, got %s",
                       node_where(r, v, where, sizeof where), path,
                       name_list(k->choices, n, list, sizeof list), kind_name(v));
    }
    for (int i = 0; i < n; i++)
        if (!strcmp(v->text, k->choices[i])) return *out = i, TS_OK;
    char where[PATH_MAX_LEN + 64], list[600], hint[PATH_MAX_LEN] = "";
    const char *close = suggest(v->text, k->choices, n);
    if (close) snprintf(hint, sizeof hint, "; did you mean '%s'?", close);
    return ts_fail(err, TS_ERR_RECIPE, "%s: %s: '%.200s' is not one of: %s%s",
                   node_where(r, v, where, sizeof where), path, v->text,
                   name_list(k->choices, n, list, sizeof list), hint);
}

/* Convert the value v of key k and store it at dst (cfg + offset). Nothing is stored when the
 * value is wrong, and strings point into the tree, which the recipe owns. */
static ts_status read_key(const ts_recipe *r, const ts_key *k, const node *v, const char *path,
                          void *dst, ts_err *err) {
    int64_t i = 0;
    double f = 0;
    int b = 0;
    ts_status s = TS_OK;
    switch (k->type) {
    case TS_KEY_INT:
        if (!(s = read_number(r, v, path, k->type, &i, NULL, err))) memcpy(dst, &i, sizeof i);
        break;
    case TS_KEY_FLOAT:
        if (!(s = read_number(r, v, path, k->type, NULL, &f, err))) memcpy(dst, &f, sizeof f);
        break;
    case TS_KEY_BOOL:
        if (v->kind != NODE_SCALAR || !v->plain || read_bool(v->text, &b))
            return type_fail(r, v, path, k->type, err);
        memcpy(dst, &b, sizeof b);
        break;
    case TS_KEY_STRING: {
        if (v->kind != NODE_SCALAR) return type_fail(r, v, path, k->type, err);
        const char *t = v->text;
        memcpy(dst, &t, sizeof t);
        break;
    }
    case TS_KEY_ENUM:
        if (!(s = read_enum(r, k, v, path, &b, err))) memcpy(dst, &b, sizeof b);
        break;
    case TS_KEY_INT_LIST:
    case TS_KEY_FLOAT_LIST: s = read_list(r, v, path, k->type, dst, err); break;
    case TS_KEY_SECTION: break; /* never read here */
    }
    return s;
}

/* Parse the default of a missing key, store it and add it to the section map. */
static ts_status apply_default(ts_recipe *r, node *map, const ts_key *k, const char *path,
                               void *dst, ts_err *err) {
    char name[PATH_MAX_LEN + 32];
    snprintf(name, sizeof name, "default of %s", path);
    node *v = NULL;
    ts_status s = parse_value(k->def, name, FROM_DEFAULT, NULL, TS_ERR_RECIPE, &v, err);
    if (s) return s;
    /* A default that does not fit its own key is a bug in the key table. */
    if ((s = read_key(r, k, v, path, dst, err))) {
        char msg[sizeof err->msg];
        snprintf(msg, sizeof msg, "%s", err ? err->msg : "");
        node_free(v);
        return ts_fail(err, s, "key table: the default '%s' of %s does not fit: %s", k->def,
                       path, msg);
    }
    char *key = strdup(k->name);
    if (!key || map_push(map, key, 0, v)) {
        free(key);
        node_free(v);
        return nomem(err);
    }
    ts_log(TS_LOG_INFO, "recipe: %s = %s (default)", path, k->def);
    return TS_OK;
}

/* Unknown keys are checked first, so that a misspelt key is reported as such rather than as
 * the required key it was meant to be. Then the keys are read in table order; defaults are
 * appended to the section in the same order. */
ts_status ts_recipe_section(ts_recipe *r, const char *section, const ts_key *keys, int nkeys,
                            void *cfg, ts_err *err) {
    node *map = NULL;
    ts_status s = section_map(r, section, 1, &map, err);
    if (s) return s;

    const char *names[256] = { 0 };
    TS_CHECK(nkeys >= 0 && nkeys <= 256, "a key table has %d keys (at most 256)", nkeys);
    for (int i = 0; i < nkeys; i++) names[i] = keys[i].name;
    if ((s = check_keys(r, map, section, names, nkeys, err))) return s;

    for (int i = 0; i < nkeys; i++) {
        const ts_key *k = &keys[i];
        char path[PATH_MAX_LEN];
        join(path, sizeof path, section, k->name);
        void *dst = (char *)cfg + k->offset;
        const entry *e = map_find(map, k->name);
        if (k->type == TS_KEY_SECTION) { /* read by its own table; here only its kind */
            if (e && e->val->kind != NODE_MAP && !is_null_scalar(e->val)) {
                char where[PATH_MAX_LEN + 64];
                return ts_fail(err, TS_ERR_RECIPE, "%s: %s must be a map of keys, got %s",
                               entry_where(r, e, where, sizeof where), path, kind_name(e->val));
            }
            continue;
        }
        if (e) s = read_key(r, k, e->val, path, dst, err);
        else if (k->def) s = apply_default(r, map, k, path, dst, err);
        else
            s = ts_fail(err, TS_ERR_RECIPE, "%s: missing required key %s%s%s%s", r->name, path,
                        k->help ? " (" : "", k->help ? k->help : "", k->help ? ")" : "");
        if (s) return s;
    }
    return TS_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* Dump                                                                                     */

typedef struct strbuf {
    char *p;
    size_t n, cap;
    int oom;
} strbuf;

static void put(strbuf *b, const char *s, size_t len) {
    if (b->oom) return;
    if (b->n + len + 1 > b->cap) {
        size_t c = b->cap ? b->cap : 256;
        while (c < b->n + len + 1) c *= 2;
        char *p = realloc(b->p, c);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = c;
    }
    memcpy(b->p + b->n, s, len);
    b->n += len;
    b->p[b->n] = 0;
}

static void put_str(strbuf *b, const char *s) { put(b, s, strlen(s)); }

static void indent(strbuf *b, int n) {
    for (int i = 0; i < n; i++) put(b, " ", 1);
}

/* Text that a plain scalar would read as something other than a string. */
static int looks_typed(const char *s) {
    static const char *const words[] = { "~", "null", "true", "false", "yes", "no", "on", "off",
                                         "y", "n", ".inf", "-.inf", "+.inf", ".nan" };
    int64_t i;
    double f;
    for (size_t k = 0; k < sizeof words / sizeof words[0]; k++)
        if (!strcasecmp(s, words[k])) return 1;
    return read_int(s, &i) != -1 || read_float(s, &f) != -1 || (s[0] == '0' && s[1] == 'x');
}

/* Whether text cannot be written as a plain scalar and read back the same. A plain scalar of
 * the file is written plain again (a number stays a number); a quoted one is quoted again only
 * when plain text would read as a number, bool or null. Indicators at the start, ": " and '#'
 * anywhere, outer spaces and control characters always need quotes. */
static int needs_quotes(const char *s, int plain) {
    size_t n = strlen(s);
    if (!n) return 1;
    if (!plain && looks_typed(s)) return 1;
    if (s[0] == ' ' || s[n - 1] == ' ' || s[n - 1] == ':') return 1;
    if (strchr(",[]{}#&*!|>'\"%@`", s[0])) return 1;
    if (strchr("-?:", s[0]) && (s[1] == ' ' || s[1] == 0)) return 1;
    if (!strncmp(s, "---", 3) || !strncmp(s, "...", 3)) return 1;
    if (strstr(s, ": ") || strchr(s, '#')) return 1;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p < 0x20 || *p == 0x7f) return 1;
    return 0;
}

/* A scalar, in double quotes with escapes when it needs them. */
static void put_scalar(strbuf *b, const char *s, int plain) {
    if (!needs_quotes(s, plain)) {
        put_str(b, s);
        return;
    }
    put(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char esc[8];
        if (*p == '"' || *p == '\\') snprintf(esc, sizeof esc, "\\%c", *p);
        else if (*p == '\n') snprintf(esc, sizeof esc, "\\n");
        else if (*p == '\t') snprintf(esc, sizeof esc, "\\t");
        else if (*p < 0x20 || *p == 0x7f) snprintf(esc, sizeof esc, "\\x%02x", *p);
        else snprintf(esc, sizeof esc, "%c", *p);
        put_str(b, esc);
    }
    put(b, "\"", 1);
}

static void dump_node(strbuf *b, const node *v, int ind, int parent_default);

/* The rest of a line after "key:" or "-": an inline scalar or empty collection, or a newline
 * and the block below. Defaults whose parent is not a default are marked with a comment. */
static void dump_value(strbuf *b, const node *v, int ind, int parent_default) {
    const char *mark = (v->origin == FROM_DEFAULT && !parent_default) ? "  # default" : "";
    if (v->kind == NODE_SCALAR && v->plain && !v->text[0]) {
        put_str(b, mark); /* a null stays a null */
        put(b, "\n", 1);
        return;
    }
    if (v->kind == NODE_SCALAR || v->n == 0) {
        put(b, " ", 1);
        if (v->kind == NODE_SCALAR) put_scalar(b, v->text, v->plain);
        else put_str(b, v->kind == NODE_MAP ? "{}" : "[]");
        put_str(b, mark);
        put(b, "\n", 1);
        return;
    }
    put_str(b, mark);
    put(b, "\n", 1);
    dump_node(b, v, ind, v->origin == FROM_DEFAULT);
}

/* A non-empty map or sequence in block style at indent ind. */
static void dump_node(strbuf *b, const node *v, int ind, int parent_default) {
    for (int i = 0; i < v->n; i++) {
        indent(b, ind);
        if (v->kind == NODE_MAP) {
            put_scalar(b, v->entries[i].key, 1);
            put(b, ":", 1);
            dump_value(b, v->entries[i].val, ind + 2, parent_default);
        } else {
            put(b, "-", 1);
            dump_value(b, v->items[i], ind + 2, parent_default);
        }
    }
}

char *ts_recipe_dump(const ts_recipe *r) {
    if (!r) return NULL;
    strbuf b = { 0 };
    if (r->root->n == 0) put_str(&b, "{}\n");
    else dump_node(&b, r->root, 0, 0);
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    return b.p;
}
