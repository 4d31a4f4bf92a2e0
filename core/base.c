/* base.c: status codes, error records, the log sink, dtypes and the RNG.
 *
 * The only globals of tessera live here: the log sink and the log level. Everything else that
 * looks like state (device, RNG, threads) belongs to a ts_ctx.
 */
#include "tessera-impl.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

static const char *const status_msgs[] = {
#define TS__STATUS_MSG(name, msg) msg,
    TS_STATUS_LIST(TS__STATUS_MSG)
#undef TS__STATUS_MSG
};
_Static_assert(sizeof(status_msgs) / sizeof(status_msgs[0]) == TS_STATUS_COUNT,
               "every status code has a message");

const char *ts_status_str(ts_status s) {
    return (s >= 0 && s < TS_STATUS_COUNT) ? status_msgs[s] : "unknown status";
}

ts_status ts_fail(ts_err *e, ts_status code, const char *fmt, ...) {
    if (e) {
        /* formatted aside first: a caller may wrap the error's own message (e->msg) */
        char msg[sizeof e->msg];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        memcpy(e->msg, msg, sizeof msg);
        e->code = code;
    }
    return code;
}

void ts__check_failed(const char *file, int line, const char *cond, const char *fmt, ...) {
    fprintf(stderr, "tessera: internal error at %s:%d: check (%s) failed: ", file, line, cond);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
    abort();
}

/* ---- log ---- */

static ts_log_sink log_sink;
static void *log_user;
static ts_log_level log_min = TS_LOG_INFO;

void ts_log_set_sink(ts_log_sink sink, void *user) {
    log_sink = sink;
    log_user = user;
}

void ts_log_set_level(ts_log_level min_level) { log_min = min_level; }

void ts_log(ts_log_level level, const char *fmt, ...) {
    if (level < log_min) return;
    char buf[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (log_sink) {
        log_sink(level, buf, log_user);
        return;
    }
    static const char *const tags[] = { "debug", "info", "warning", "error" };
    fprintf(stderr, "[tessera %s] %s\n", tags[level], buf);
}

/* ---- dtypes ---- */

static const struct { const char *name; size_t size; } dtypes[] = {
    [TS_F32] = { "F32", 4 }, [TS_BF16] = { "BF16", 2 }, [TS_F16] = { "F16", 2 },
    [TS_I32] = { "I32", 4 }, [TS_I64] = { "I64", 8 },   [TS_U8] = { "U8", 1 },
};
_Static_assert(sizeof(dtypes) / sizeof(dtypes[0]) == TS_DTYPE_COUNT, "every dtype has a row");

size_t ts_dtype_size(ts_dtype t) { return dtypes[t].size; }
const char *ts_dtype_name(ts_dtype t) { return dtypes[t].name; }

int ts_dtype_from_name(const char *name, ts_dtype *out) {
    for (int i = 0; i < TS_DTYPE_COUNT; i++)
        if (strcmp(name, dtypes[i].name) == 0) {
            *out = (ts_dtype)i;
            return 0;
        }
    return -1;
}

/* ---- RNG: xoshiro256** seeded through splitmix64 ---- */

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void ts_rng_seed(ts_rng *r, uint64_t seed) {
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&seed);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t ts_rng_next(ts_rng *r) {
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

float ts_rng_uniform(ts_rng *r) { return (float)(ts_rng_next(r) >> 40) * (1.0f / 16777216.0f); }

float ts_rng_normal(ts_rng *r) {
    double u1 = ((double)(ts_rng_next(r) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
    double u2 = (double)(ts_rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}
