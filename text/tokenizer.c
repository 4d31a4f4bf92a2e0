/* tokenizer.c: the CLIP byte-level BPE tokenizer, as open_clip's SimpleTokenizer encodes.
 *
 * The pipeline, each stage a faithful port of the Python it replaces:
 *   UTF-8 bytes -> code points (invalid bytes become U+FFFD as bytes.decode(errors="replace"))
 *   -> ftfy.fix_text (HTML entities, mojibake detection and repair through the single-byte
 *      codecs ftfy tries, C1 controls, ligatures, full-width forms, curly quotes, line breaks,
 *      terminal escapes, control characters, NFC), line by line as ftfy does
 *   -> html.unescape twice -> strip -> " ".join(split()) -> str.lower() (with final sigma)
 *   -> the pattern <start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|
 *      [^\s\p{L}\p{N}]+ (IGNORECASE) -> each piece's UTF-8 bytes -> BPE over byte symbols,
 *      the last one marked "</w>", merging the lowest-ranked pair until none is in the file.
 * Character properties come from text/tokenizer_tables.h, which text/gen_tables.py generates
 * from the Python modules open_clip runs on.
 *
 * What it is not: a complete ftfy. ftfy's decode_inconsistent_utf8, restore_byte_a0 and lossy
 * sequence repair are here; its heuristics beyond fix_text's defaults are not. Nor is it a
 * regex engine: the one pattern is matched by hand.
 *
 * Speed: words go through a bounded cache (word bytes -> ids) that is cleared when full;
 * scratch buffers live on the tokenizer and only grow, so encoding does not call malloc once
 * the buffers have reached the size of the longest text.
 */
#include "text.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <uchar.h>
#include <unistd.h>
#include <zlib.h>

#include "tokenizer_tables.h"

/* Property bits of tk_props (text/gen_tables.py). */
enum {
    P_L = 1 << 0,     /* [\p{L}] under IGNORECASE */
    P_N = 1 << 1,     /* [\p{N}] */
    P_P = 1 << 2,     /* [^\s\p{L}\p{N}] */
    P_RS = 1 << 3,    /* the regex module's \s */
    P_PYS = 1 << 4,   /* str.isspace */
    P_W = 1 << 5,     /* re's \w */
    P_CASED = 1 << 6, /* cased and not case-ignorable (final sigma) */
    P_CIGN = 1 << 7,  /* case-ignorable (final sigma) */
};

/* ftfy category bits of tk_ftfy, in the generator's order. */
enum {
    FT_COMMON = 1 << 0, FT_C1 = 1 << 1, FT_BAD = 1 << 2, FT_LAW = 1 << 3,
    FT_CURRENCY = 1 << 4, FT_START = 1 << 5, FT_END = 1 << 6, FT_NUMERIC = 1 << 7,
    FT_KAOMOJI = 1 << 8, FT_UPPER_ACC = 1 << 9, FT_LOWER_ACC = 1 << 10,
    FT_UPPER_COMMON = 1 << 11, FT_LOWER_COMMON = 1 << 12, FT_BOX = 1 << 13,
    FT_F2 = 1 << 14, FT_F3 = 1 << 15, FT_F4 = 1 << 16, FT_CONT = 1 << 17,
    FT_CONT_STRICT = 1 << 18,
};

#define TK_MAX_MERGES (49152 - 256 - 2)
#define TK_CACHE_SLOTS (1u << 15)       /* words in the cache at most half of this */
#define TK_CACHE_BYTES (1u << 20)       /* word bytes kept */
#define TK_CACHE_IDS (1u << 18)         /* ids kept */

/* ---------------------------------------------------------------------------------------- */
/* Growable buffers. They only grow; running out of memory is fatal (encode never fails). */

typedef struct { uint32_t *p; size_t n, cap; } u32v;
typedef struct { uint8_t *p; size_t n, cap; } u8v;
typedef struct { int32_t *p; size_t n, cap; } i32v;

static void *grow(void *p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return p;
    size_t c = *cap ? *cap : 64;
    while (c < need) c *= 2;
    void *q = realloc(p, c * elem);
    TS_CHECK(q, "out of memory growing a tokenizer buffer to %zu bytes", c * elem);
    *cap = c;
    return q;
}
static void u32_need(u32v *v, size_t n) { v->p = grow(v->p, &v->cap, n, sizeof *v->p); }
static void u8_need(u8v *v, size_t n) { v->p = grow(v->p, &v->cap, n, 1); }
static void i32_need(i32v *v, size_t n) { v->p = grow(v->p, &v->cap, n, sizeof *v->p); }
static inline void u32_push(u32v *v, uint32_t c) {
    if (v->n == v->cap) u32_need(v, v->n + 1);
    v->p[v->n++] = c;
}
static inline void u8_push(u8v *v, uint8_t c) {
    if (v->n == v->cap) u8_need(v, v->n + 1);
    v->p[v->n++] = c;
}
static inline void i32_push(i32v *v, int32_t c) {
    if (v->n == v->cap) i32_need(v, v->n + 1);
    v->p[v->n++] = c;
}
static void u32_set(u32v *v, const uint32_t *s, size_t n) {
    u32_need(v, n);
    if (n) memmove(v->p, s, n * sizeof *s);
    v->n = n;
}
static void u32_swap(u32v *a, u32v *b) {
    u32v t = *a;
    *a = *b;
    *b = t;
}
static int u32_eq(const u32v *a, const u32v *b) {
    return a->n == b->n && (a->n == 0 || !memcmp(a->p, b->p, a->n * sizeof *a->p));
}

/* ---------------------------------------------------------------------------------------- */
/* UTF-8 */

/* Decode as Python's bytes.decode("utf-8", errors="replace"): each maximal invalid prefix of
 * a sequence becomes one U+FFFD. Appends to out. */
static void utf8_decode(const uint8_t *s, size_t n, u32v *out) {
    size_t i = 0;
    u32_need(out, out->n + n);
    while (i < n) {
        uint8_t c = s[i];
        if (c < 0x80) {
            out->p[out->n++] = c;
            i++;
            continue;
        }
        int need;
        uint32_t cp;
        uint8_t lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF) {
            need = 1, cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            need = 2, cp = c & 0x0F;
            if (c == 0xE0) lo = 0xA0;
            if (c == 0xED) hi = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3, cp = c & 0x07;
            if (c == 0xF0) lo = 0x90;
            if (c == 0xF4) hi = 0x8F;
        } else {
            out->p[out->n++] = 0xFFFD;
            i++;
            continue;
        }
        size_t j = i + 1;
        int k = 0;
        for (; k < need && j < n; k++, j++) {
            uint8_t d = s[j];
            if (d < lo || d > hi) break;
            lo = 0x80, hi = 0xBF;
            cp = (cp << 6) | (d & 0x3F);
        }
        out->p[out->n++] = k == need ? cp : 0xFFFD;
        i = j;
    }
}

/* Strict decode (ftfy's "utf-8" or, with variants, "utf-8-variants": C0 80 is U+0000 and
 * CESU-8 surrogate pairs are joined; a lone surrogate is an error as in ftfy). Returns 0 on
 * success, -1 where Python would raise. */
static int utf8_decode_strict(const uint8_t *s, size_t n, int variants, u32v *out) {
    out->n = 0;
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (variants && c == 0xC0 && i + 1 < n && s[i + 1] == 0x80) {
            u32_push(out, 0);
            i += 2;
            continue;
        }
        if (variants && c == 0xED && i + 5 < n && s[i + 1] >= 0xA0 && s[i + 1] <= 0xAF &&
            s[i + 2] >= 0x80 && s[i + 2] <= 0xBF && s[i + 3] == 0xED && s[i + 4] >= 0xB0 &&
            s[i + 4] <= 0xBF && s[i + 5] >= 0x80 && s[i + 5] <= 0xBF) {
            uint32_t hi = 0xD000 | ((uint32_t)(s[i + 1] & 0x3F) << 6) | (s[i + 2] & 0x3F);
            uint32_t lo = 0xD000 | ((uint32_t)(s[i + 4] & 0x3F) << 6) | (s[i + 5] & 0x3F);
            u32_push(out, 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00));
            i += 6;
            continue;
        }
        size_t before = out->n;
        /* Decode one sequence with the replacing decoder and check it was valid. */
        size_t len = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
        if (i + len > n) return -1;
        utf8_decode(s + i, len, out);
        if (out->n != before + 1 || (out->p[before] == 0xFFFD &&
                                     !(len == 3 && s[i] == 0xEF && s[i + 1] == 0xBF &&
                                       s[i + 2] == 0xBD)))
            return -1;
        i += len;
    }
    return 0;
}

static void utf8_put(u8v *o, uint32_t c) {
    u8_need(o, o->n + 4);
    uint8_t *p = o->p + o->n;
    if (c < 0x80) {
        p[0] = (uint8_t)c, o->n += 1;
    } else if (c < 0x800) {
        p[0] = (uint8_t)(0xC0 | (c >> 6)), p[1] = (uint8_t)(0x80 | (c & 0x3F)), o->n += 2;
    } else if (c < 0x10000) {
        p[0] = (uint8_t)(0xE0 | (c >> 12)), p[1] = (uint8_t)(0x80 | ((c >> 6) & 0x3F));
        p[2] = (uint8_t)(0x80 | (c & 0x3F)), o->n += 3;
    } else {
        p[0] = (uint8_t)(0xF0 | (c >> 18)), p[1] = (uint8_t)(0x80 | ((c >> 12) & 0x3F));
        p[2] = (uint8_t)(0x80 | ((c >> 6) & 0x3F)), p[3] = (uint8_t)(0x80 | (c & 0x3F));
        o->n += 4;
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Table look-ups */

static uint16_t prop(uint32_t c) {
    if (c < 256) return tk_props256[c];
    size_t lo = 0, hi = sizeof tk_props / sizeof tk_props[0];
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if (tk_props[mid].start <= c) lo = mid;
        else hi = mid;
    }
    return tk_props[lo].bits;
}

static uint32_t ftcat(uint32_t c) {
    if (c > 0xFFFF) return 0;
    size_t lo = 0, hi = sizeof tk_ftfy / sizeof tk_ftfy[0];
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (tk_ftfy[mid].cp < c) lo = mid + 1;
        else hi = mid;
    }
    return lo < sizeof tk_ftfy / sizeof tk_ftfy[0] && tk_ftfy[lo].cp == c ? tk_ftfy[lo].bits : 0;
}

/* Index of c in a sorted table of structs whose first member is the code point, or -1. */
#define TK_FIND(tab, c, out)                                                                 \
    do {                                                                                     \
        size_t lo_ = 0, hi_ = sizeof(tab) / sizeof((tab)[0]);                                \
        (out) = -1;                                                                          \
        while (lo_ < hi_) {                                                                  \
            size_t mid_ = (lo_ + hi_) / 2;                                                   \
            if ((tab)[mid_].cp < (c)) lo_ = mid_ + 1;                                        \
            else hi_ = mid_;                                                                 \
        }                                                                                    \
        if (lo_ < sizeof(tab) / sizeof((tab)[0]) && (tab)[lo_].cp == (c)) (out) = (long)lo_; \
    } while (0)

static int in_set(uint32_t c, const char32_t *set) {
    for (; *set; set++)
        if ((uint32_t)*set == c) return 1;
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* ftfy: is_bad (ftfy.badness.BADNESS_RE) */

static int is_alpha_ascii(uint32_t c) { return (c | 32) >= 'a' && (c | 32) <= 'z'; }

/* One position of BADNESS_RE: does any alternative match at i? */
static int bad_at(const uint32_t *t, size_t n, size_t i) {
    uint32_t c0 = t[i], c1 = i + 1 < n ? t[i + 1] : 0, c2 = i + 2 < n ? t[i + 2] : 0;
    int h1 = i + 1 < n, h2 = i + 2 < n, h3 = i + 3 < n;
    uint32_t a = ftcat(c0), b = h1 ? ftcat(c1) : 0, d = h2 ? ftcat(c2) : 0;
    const uint32_t ANY_ACC_ETC = FT_LOWER_ACC | FT_UPPER_ACC | FT_BOX | FT_START | FT_END |
                                 FT_CURRENCY | FT_NUMERIC | FT_LAW;
    if (a & FT_C1) return 1;
    if ((a & (FT_BAD | ANY_ACC_ETC)) && (b & FT_BAD)) return 1;
    if (is_alpha_ascii(c0) && (b & (FT_LOWER_COMMON | FT_UPPER_COMMON)) && (d & FT_BAD)) return 1;
    if ((a & FT_BAD) && (b & ANY_ACC_ETC)) return 1;
    if ((a & (FT_LOWER_ACC | FT_LOWER_COMMON | FT_BOX | FT_END | FT_CURRENCY | FT_NUMERIC)) &&
        (b & FT_UPPER_ACC))
        return 1;
    if ((a & (FT_BOX | FT_END | FT_CURRENCY | FT_NUMERIC)) && (b & FT_LOWER_ACC)) return 1;
    if ((a & (FT_LOWER_ACC | FT_BOX | FT_END)) && (b & FT_CURRENCY)) return 1;
    if (c0 < 0x110000 && (prop(c0) & P_PYS) && (b & FT_UPPER_ACC) && (d & FT_CURRENCY)) return 1;
    if ((a & (FT_UPPER_ACC | FT_BOX)) && (b & (FT_NUMERIC | FT_LAW))) return 1;
    if ((a & (FT_LOWER_ACC | FT_UPPER_ACC | FT_BOX | FT_CURRENCY | FT_END)) && (b & FT_START) &&
        (d & FT_NUMERIC))
        return 1;
    if ((a & (FT_LOWER_ACC | FT_UPPER_ACC | FT_CURRENCY | FT_NUMERIC | FT_BOX | FT_LAW)) &&
        (b & FT_END) && (d & FT_START))
        return 1;
    if ((a & (FT_CURRENCY | FT_NUMERIC | FT_BOX)) && (b & FT_START)) return 1;
    if (c0 >= 'a' && c0 <= 'z' && (b & FT_UPPER_ACC) && (d & (FT_START | FT_CURRENCY))) return 1;
    if ((a & FT_BOX) && (b & FT_KAOMOJI)) return 1;
    if ((a & (FT_LOWER_ACC | FT_UPPER_ACC | FT_CURRENCY | FT_NUMERIC | FT_START | FT_END |
              FT_LAW)) &&
        (b & FT_BOX))
        return 1;
    if ((a & FT_BOX) && (b & FT_END)) return 1;
    if ((a & (FT_LOWER_ACC | FT_UPPER_ACC)) && (b & (FT_START | FT_END)) && h2 &&
        (prop(c2) & P_W))
        return 1;
    if ((c0 == 0x152 || c0 == 0x153) && h1 && !is_alpha_ascii(c1)) return 1;
    if ((a & FT_UPPER_ACC) && c1 == 0xB0) return 1;
    if (in_set(c0, U"ÂÃÎÐ") && h1 &&
        (in_set(c1, U"€œŠš¢£Ÿž\u00a0\u00ad®©°·»–—´") || (b & (FT_START | FT_END))))
        return 1;
    if (c0 == 0xD7 && (c1 == 0xB2 || c1 == 0xB3)) return 1;
    if (in_set(c0, U"ØÙ") && h3) {
        const uint32_t X = FT_COMMON | FT_CURRENCY | FT_BAD | FT_NUMERIC | FT_START;
        uint32_t c3 = t[i + 3];
        if (((b & X) || in_set(c1, U"ŸŠ®°µ»")) && in_set(c2, U"ØÙ") &&
            ((ftcat(c3) & X) || in_set(c3, U"ŸŠ®°µ»")))
            return 1;
    }
    if (c0 == 0xE0 && in_set(c1, U"²µ¹¼½¾")) return 1;
    if (c0 == 0x221A && in_set(c1, U"±∂†≠®™´≤≥¥µø")) return 1;
    if (c0 == 0x2248 && (c1 == 0xB0 || c1 == 0xA2)) return 1;
    if (c0 == 0x201A && c1 == 0xC4 && in_set(c2, U"ìîïòôúùû†°¢π")) return 1;
    if (c0 == 0x201A && (c1 == 0xE2 || c1 == 0xF3) && in_set(c2, U"àä°ê")) return 1;
    if (c0 == 0x432 && c1 == 0x402) return 1;
    if (in_set(c0, U"ВГРС") && h2 &&
        ((b & (FT_C1 | FT_BAD | FT_START | FT_END | FT_CURRENCY)) || c1 == 0xB0 || c1 == 0xB5) &&
        in_set(c2, U"ВГРС"))
        return 1;
    if (c0 == 0x413 && c1 == 0x45E && c2 == 0x412 && i + 5 < n && t[i + 3] == 0x402 &&
        t[i + 4] == 0x412 && t[i + 5] != '\n' && i + 6 < n &&
        (is_alpha_ascii(t[i + 6]) || t[i + 6] == ' '))
        return 1;
    if (c0 == 0xC3 && (c1 == 0xA0 || c1 == 0xA1)) return 1;
    if (c0 >= 'a' && c0 <= 'z') {
        if (h2 && (prop(c1) & P_PYS) && (c2 == 0xC3 || c2 == 0xC2) && h3 && t[i + 3] == ' ')
            return 1;
        if ((c1 == 0xC3 || c1 == 0xC2) && h2 && c2 == ' ') return 1;
    }
    if (i == 0 && (c0 == 0xC3 || c0 == 0xC2) && c1 == ' ' && h1) return 1;
    if (((c0 >= 'a' && c0 <= 'z') || in_set(c0, U".,?!") || (a & FT_END)) && c1 == 0xC2 && h2 &&
        (c2 == ' ' || (d & (FT_START | FT_END))))
        return 1;
    if (c0 == 0x3B2 && c1 == 0x20AC && h2 && in_set(c2, U"™\u00a0Ά\u00ad®°")) return 1;
    if (in_set(c0, U"ΒΓΞΟ") && h2 &&
        ((b & (FT_C1 | FT_BAD | FT_START | FT_END | FT_CURRENCY)) || c1 == 0xB0) &&
        in_set(c2, U"ΒΓΞΟ"))
        return 1;
    if (c0 == 0x101 && c1 == 0x20AC) return 1;
    return 0;
}

static int is_bad(const uint32_t *t, size_t n) {
    /* Every alternative has a non-ASCII character among its first three. */
    for (size_t i = 0; i < n; i++)
        if ((t[i] >= 0x80 || (i + 1 < n && t[i + 1] >= 0x80) || (i + 2 < n && t[i + 2] >= 0x80)) &&
            bad_at(t, n, i))
            return 1;
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* ftfy: fix_encoding */

/* Scratch for the text passes: three code-point buffers and two byte buffers. */
typedef struct tk_text {
    u32v a, b, c, d, e; /* a: the text; the rest scratch */
    u32v whole, result; /* ftfy_fix_text's lines */
    u8v x, y;
    i32v ends; /* pre-token boundaries: start, end pairs */
} tk_text;

static void tk_text_free(tk_text *s) {
    free(s->a.p), free(s->b.p), free(s->c.p), free(s->d.p), free(s->e.p);
    free(s->whole.p), free(s->result.p);
    free(s->x.p), free(s->y.p), free(s->ends.p);
}

static int possible_encoding(const uint32_t *t, size_t n, int enc) {
    for (size_t i = 0; i < n; i++) {
        uint32_t c = t[i];
        if (c < 0x80 && c != 0x1A) continue;
        int ok = tk_charmap[enc][0x1A] == c;
        for (int b = 0x80; b < 0x100 && !ok; b++) ok = tk_charmap[enc][b] == c;
        if (!ok) return 0;
    }
    return 1;
}

static void charmap_encode(const uint32_t *t, size_t n, int enc, u8v *o) {
    o->n = 0;
    u8_need(o, n);
    for (size_t i = 0; i < n; i++) {
        uint32_t c = t[i];
        int byte = -1;
        if (c < 0x80 && c != 0x1A) byte = (int)c;
        else if (tk_charmap[enc][0x1A] == c) byte = 0x1A;
        else
            for (int b = 0x80; b < 0x100; b++)
                if (tk_charmap[enc][b] == c) {
                    byte = b;
                    break;
                }
        TS_CHECK(byte >= 0, "charmap_encode after possible_encoding failed");
        o->p[o->n++] = (uint8_t)byte;
    }
}

static int cont(uint8_t b) { return b >= 0x80 && b <= 0xBF; }
static int cont_a0(uint8_t b) { return (b >= 0x80 && b <= 0x84) || (b >= 0x86 && b <= 0x9F) || (b >= 0xA1 && b <= 0xBF); }

/* Length of ALTERED_UTF8_RE's match at i, or 0. */
static size_t altered_at(const uint8_t *s, size_t n, size_t i) {
    uint8_t c = s[i];
    if (i + 1 < n && s[i + 1] == ' ' &&
        (c == 0xC2 || c == 0xC3 || c == 0xC5 || c == 0xCE || c == 0xD0 || c == 0xD9))
        return 2;
    if (i + 2 < n && (c == 0xE2 || c == 0xE3) && s[i + 1] == ' ' && cont_a0(s[i + 2])) return 3;
    if (i + 2 < n && c >= 0xE0 && c <= 0xE3 && cont_a0(s[i + 1]) && s[i + 2] == ' ') return 3;
    if (i + 3 < n && c == 0xF0) {
        const uint8_t *p = s + i + 1;
        if (p[0] == ' ' && cont(p[1]) && cont(p[2])) return 4;
        if (cont(p[0]) && p[1] == ' ' && cont(p[2])) return 4;
        if (cont(p[0]) && cont(p[1]) && p[2] == ' ') return 4;
    }
    return 0;
}

static int starts_with(const uint8_t *s, size_t n, const char *lit) {
    size_t k = strlen(lit);
    return n >= k && !memcmp(s, lit, k);
}

/* fixes.restore_byte_a0 on x (result in x, y is scratch). */
static void restore_byte_a0(u8v *x, u8v *y) {
    y->n = 0;
    for (size_t i = 0; i < x->n; i++) {
        const uint8_t *s = x->p + i;
        size_t rest = x->n - i;
        if (s[0] == 0xC3 && rest >= 2 && s[1] == ' ' &&
            !(starts_with(s + 2, rest - 2, " ") || starts_with(s + 2, rest - 2, "quele") ||
              starts_with(s + 2, rest - 2, "quela") || starts_with(s + 2, rest - 2, "quilo") ||
              starts_with(s + 2, rest - 2, "s "))) {
            u8_push(y, 0xC3), u8_push(y, 0xA0), u8_push(y, ' ');
            i++;
        } else {
            u8_push(y, s[0]);
        }
    }
    x->n = 0;
    for (size_t i = 0; i < y->n;) {
        size_t m = altered_at(y->p, y->n, i);
        if (m) {
            for (size_t k = 0; k < m; k++) u8_push(x, y->p[i + k] == ' ' ? 0xA0 : y->p[i + k]);
            i += m;
        } else {
            u8_push(x, y->p[i++]);
        }
    }
}

static int q1a(uint8_t b) { return b == 0x1A || b == '?'; }
static int c1a(uint8_t b) { return b == 0x1A || cont(b); }
static int qc1a(uint8_t b) { return b == 0x1A || b == '?' || cont(b); }

/* Length of LOSSY_UTF8_RE's match at i, or 0. */
static size_t lossy_at(const uint8_t *s, size_t n, size_t i) {
    uint8_t c = s[i];
    size_t r = n - i;
    const uint8_t *p = s + i;
    if (r >= 2 && c >= 0xC2 && c <= 0xDF && p[1] == 0x1A) return 2;
    if (r >= 2 && (c == 0xC2 || c == 0xC3) && p[1] == '?') return 2;
    if (r >= 6 && c == 0xED && p[1] >= 0xA0 && p[1] <= 0xAF && q1a(p[2]) && p[3] == 0xED &&
        p[4] >= 0xB0 && p[4] <= 0xBF && qc1a(p[5]))
        return 6;
    if (r >= 6 && c == 0xED && p[1] >= 0xA0 && p[1] <= 0xAF && qc1a(p[2]) && p[3] == 0xED &&
        p[4] >= 0xB0 && p[4] <= 0xBF && q1a(p[5]))
        return 6;
    if (r >= 3 && c >= 0xE0 && c <= 0xEF && q1a(p[1]) && c1a(p[2])) return 3;
    if (r >= 3 && c >= 0xE0 && c <= 0xEF && c1a(p[1]) && q1a(p[2])) return 3;
    if (r >= 4 && c >= 0xF0 && c <= 0xF4) {
        if (q1a(p[1]) && c1a(p[2]) && c1a(p[3])) return 4;
        if (c1a(p[1]) && q1a(p[2]) && c1a(p[3])) return 4;
        if (c1a(p[1]) && c1a(p[2]) && q1a(p[3])) return 4;
    }
    if (c == 0x1A) return 1;
    return 0;
}

static void replace_lossy(u8v *x, u8v *y) {
    y->n = 0;
    for (size_t i = 0; i < x->n;) {
        size_t m = lossy_at(x->p, x->n, i);
        if (m) {
            u8_push(y, 0xEF), u8_push(y, 0xBF), u8_push(y, 0xBD);
            i += m;
        } else {
            u8_push(y, x->p[i++]);
        }
    }
    u8v t = *x;
    *x = *y;
    *y = t;
}

static void fix_encoding(const uint32_t *t, size_t n, u32v *out);

/* Length of UTF8_DETECTOR_RE's match at i (its look-behind included), or 0. */
static size_t detector_at(const uint32_t *t, size_t n, size_t i) {
    if (i > 0 && (ftcat(t[i - 1]) & FT_CONT_STRICT)) return 0;
    size_t j = i;
    for (;;) {
        uint32_t a = j < n ? ftcat(t[j]) : 0;
        size_t k = 0;
        if ((a & FT_F2) && j + 1 < n && (ftcat(t[j + 1]) & FT_CONT)) k = 2;
        else if ((a & FT_F3) && j + 2 < n && (ftcat(t[j + 1]) & FT_CONT) &&
                 (ftcat(t[j + 2]) & FT_CONT))
            k = 3;
        else if ((a & FT_F4) && j + 3 < n && (ftcat(t[j + 1]) & FT_CONT) &&
                 (ftcat(t[j + 2]) & FT_CONT) && (ftcat(t[j + 3]) & FT_CONT))
            k = 4;
        if (!k) break;
        j += k;
    }
    return j - i;
}

/* fixes.decode_inconsistent_utf8: returns 1 and fills out when the text changed. */
static int decode_inconsistent(const uint32_t *t, size_t n, u32v *out) {
    out->n = 0;
    int any = 0;
    for (size_t i = 0; i < n;) {
        size_t m = t[i] >= 0x80 ? detector_at(t, n, i) : 0;
        if (!m) {
            u32_push(out, t[i++]);
            continue;
        }
        any = 1;
        if (m < n && is_bad(t + i, m)) {
            u32v fixed = { 0 };
            fix_encoding(t + i, m, &fixed);
            for (size_t k = 0; k < fixed.n; k++) u32_push(out, fixed.p[k]);
            free(fixed.p);
        } else {
            for (size_t k = 0; k < m; k++) u32_push(out, t[i + k]);
        }
        i += m;
    }
    if (!any) return 0;
    return !(out->n == n && !memcmp(out->p, t, n * sizeof *t));
}

static void fix_c1(const uint32_t *t, size_t n, u32v *out) {
    u32_need(out, n);
    for (size_t i = 0; i < n; i++)
        out->p[i] = t[i] >= 0x80 && t[i] <= 0x9F ? tk_charmap[1][t[i]] : t[i];
    out->n = n;
}

/* One step of ftfy's fix_encoding: out gets the text, fixed or not. Returns 1 if changed. */
static int fix_encoding_try(const uint32_t *t, size_t n, u32v *out, tk_text *s) {
    u32_set(out, t, n);
    if (n == 0) return 0;
    int ascii = 1;
    for (size_t i = 0; i < n && ascii; i++) ascii = t[i] < 0x80;
    if (ascii || !is_bad(t, n)) return 0;
    int latin1 = 0;
    int nenc = (int)(sizeof tk_charmap / sizeof tk_charmap[0]);
    for (int e = 0; e < nenc; e++) {
        if (!possible_encoding(t, n, e)) continue;
        if (e == 0) latin1 = 1;
        charmap_encode(t, n, e, &s->x);
        int found = 0;
        if (strcmp(tk_charmap_names[e], "macroman") != 0)
            for (size_t i = 0; i < s->x.n && !found; i++) found = altered_at(s->x.p, s->x.n, i) > 0;
        if (found) restore_byte_a0(&s->x, &s->y);
        if (!strncmp(tk_charmap_names[e], "sloppy", 6)) replace_lossy(&s->x, &s->y);
        int variants = 0;
        for (size_t i = 0; i < s->x.n; i++) variants |= s->x.p[i] == 0xED || s->x.p[i] == 0xC0;
        if (utf8_decode_strict(s->x.p, s->x.n, variants, out) == 0) return 1;
        u32_set(out, t, n);
    }
    int detect = 0;
    for (size_t i = 0; i < n && !detect; i++) detect = t[i] >= 0x80 && detector_at(t, n, i) > 0;
    if (detect && decode_inconsistent(t, n, out)) return 1;
    u32_set(out, t, n);
    if (latin1) {
        /* text.encode("latin-1").decode("windows-1252"), strict. */
        int ok = 1;
        for (size_t i = 0; i < n && ok; i++) {
            uint32_t c = t[i];
            if (c >= 0x80 && c <= 0x9F) {
                ok = !(c == 0x81 || c == 0x8D || c == 0x8F || c == 0x90 || c == 0x9D);
                out->p[i] = tk_charmap[1][c];
            }
        }
        if (ok && !u32_eq(out, &(u32v){ (uint32_t *)t, n, n })) return 1;
        u32_set(out, t, n);
    }
    for (size_t i = 0; i < n; i++)
        if (t[i] >= 0x80 && t[i] <= 0x9F) {
            fix_c1(t, n, out);
            return 1;
        }
    return 0;
}

static int fix_encoding_step(const uint32_t *t, size_t n, u32v *out, tk_text *s) {
    if (!fix_encoding_try(t, n, out, s)) return 0;
    return !(out->n == n && (n == 0 || !memcmp(out->p, t, n * sizeof *t)));
}

static void fix_encoding(const uint32_t *t, size_t n, u32v *out) {
    tk_text s = { 0 };
    u32_set(&s.a, t, n);
    while (fix_encoding_step(s.a.p, s.a.n, &s.b, &s)) u32_swap(&s.a, &s.b);
    u32_set(out, s.a.p, s.a.n);
    tk_text_free(&s);
}

/* ---------------------------------------------------------------------------------------- */
/* HTML: Python's html.unescape and ftfy's unescape_html */

static int html5_find(const uint8_t *name, size_t len) {
    size_t lo = 0, hi = sizeof tk_html5 / sizeof tk_html5[0];
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        const char *k = tk_html5[mid].name;
        size_t kl = strlen(k);
        int c = memcmp(k, name, kl < len ? kl : len);
        if (c == 0) c = kl < len ? -1 : kl > len ? 1 : 0;
        if (c == 0) return (int)mid;
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return -1;
}

static void push_html5(u32v *out, int k) {
    u32_push(out, tk_html5[k].cp[0]);
    if (tk_html5[k].cp[1]) u32_push(out, tk_html5[k].cp[1]);
}

/* The replacement of a numeric reference (html._replace_charref). */
static void push_charref(u32v *out, uint32_t num, int overflow) {
    if (!overflow)
        for (size_t k = 0; k < sizeof tk_html_badref / sizeof tk_html_badref[0]; k++)
            if (tk_html_badref[k][0] == num) {
                if (tk_html_badref[k][1]) u32_push(out, tk_html_badref[k][1]);
                return;
            }
    if (overflow || num > 0x10FFFF || (num >= 0xD800 && num <= 0xDFFF)) {
        u32_push(out, 0xFFFD);
        return;
    }
    for (size_t k = 0; k < sizeof tk_html_badcp / sizeof tk_html_badcp[0]; k++)
        if (tk_html_badcp[k] == num) return;
    u32_push(out, num);
}

static int hexval(uint32_t c) {
    if (c >= '0' && c <= '9') return (int)(c - '0');
    if ((c | 32) >= 'a' && (c | 32) <= 'f') return (int)((c | 32) - 'a' + 10);
    return -1;
}

/* Match Python's _charref at t[i] == '&': returns the match length (0: none) and appends the
 * replacement to out. */
static size_t charref_at(const uint32_t *t, size_t n, size_t i, u32v *out, u8v *name) {
    size_t j = i + 1;
    if (j < n && t[j] == '#') {
        j++;
        int hex = j < n && (t[j] == 'x' || t[j] == 'X');
        if (hex) j++;
        size_t d0 = j;
        uint32_t num = 0;
        int overflow = 0;
        while (j < n && (hex ? hexval(t[j]) >= 0 : (t[j] >= '0' && t[j] <= '9'))) {
            uint64_t v = (uint64_t)num * (hex ? 16 : 10) + (uint64_t)(hex ? hexval(t[j]) : (int)(t[j] - '0'));
            if (v > 0x7FFFFFFF) overflow = 1, v = 0x7FFFFFFF;
            num = (uint32_t)v;
            j++;
        }
        if (j == d0) return 0;
        if (j < n && t[j] == ';') j++;
        push_charref(out, num, overflow);
        return j - i;
    }
    /* Named: [^\t\n\f <&#;]{1,32};? */
    while (j < n && j - (i + 1) < 32) {
        uint32_t c = t[j];
        if (c == '\t' || c == '\n' || c == '\f' || c == ' ' || c == '<' || c == '&' || c == '#' ||
            c == ';')
            break;
        j++;
    }
    if (j == i + 1) return 0;
    if (j < n && t[j] == ';') j++;
    name->n = 0;
    for (size_t k = i + 1; k < j; k++) utf8_put(name, t[k]);
    int e = html5_find(name->p, name->n);
    if (e >= 0) {
        push_html5(out, e);
        return j - i;
    }
    /* The longest prefix of at least 2 characters that is an entity, then the rest as it is. */
    size_t nch = j - (i + 1);
    for (size_t x = nch - 1; x > 1; x--) {
        name->n = 0;
        int ascii = 1;
        for (size_t k = 0; k < x; k++) {
            utf8_put(name, t[i + 1 + k]);
            ascii &= t[i + 1 + k] < 0x80;
        }
        if (!ascii) continue; /* entity names are ASCII */
        e = html5_find(name->p, name->n);
        if (e >= 0) {
            push_html5(out, e);
            for (size_t k = i + 1 + x; k < j; k++) u32_push(out, t[k]);
            return j - i;
        }
    }
    u32_push(out, '&');
    for (size_t k = i + 1; k < j; k++) u32_push(out, t[k]);
    return j - i;
}

/* html.unescape: out gets the text with references replaced. */
static void html_unescape(const uint32_t *t, size_t n, u32v *out, u8v *name) {
    out->n = 0;
    u32_need(out, n);
    for (size_t i = 0; i < n;) {
        if (t[i] == '&') {
            size_t m = charref_at(t, n, i, out, name);
            if (m) {
                i += m;
                continue;
            }
        }
        u32_push(out, t[i++]);
    }
}

static int is_alnum_ascii(uint32_t c) { return (c >= '0' && c <= '9') || is_alpha_ascii(c); }

/* ftfy.fixes.unescape_html: each match of &#?[0-9A-Za-z]{1,24}; is replaced when it is one of
 * ftfy's entity names, or when it is a numeric reference html.unescape resolves. */
static void ftfy_unescape(const uint32_t *t, size_t n, u32v *out, tk_text *s) {
    out->n = 0;
    for (size_t i = 0; i < n;) {
        size_t end = 0;
        if (t[i] == '&') {
            size_t k0 = i + 1 + (i + 1 < n && t[i + 1] == '#'), k = k0;
            while (k < n && k - k0 < 24 && is_alnum_ascii(t[k])) k++;
            if (k > k0 && k < n && t[k] == ';') end = k + 1;
        }
        if (!end) {
            u32_push(out, t[i++]);
            continue;
        }
        if (t[i + 1] == '#') {
            /* html.unescape of the match; kept as it is if a ';' survives. */
            html_unescape(t + i, end - i, &s->d, &s->y);
            int semi = 0;
            for (size_t k = 0; k < s->d.n; k++) semi |= s->d.p[k] == ';';
            if (semi)
                for (size_t k = i; k < end; k++) u32_push(out, t[k]);
            else
                for (size_t k = 0; k < s->d.n; k++) u32_push(out, s->d.p[k]);
        } else {
            s->x.n = 0;
            for (size_t k = i + 1; k < end; k++) u8_push(&s->x, (uint8_t)t[k]);
            int e = html5_find(s->x.p, s->x.n), found = 0;
            if (e >= 0) {
                push_html5(out, e);
                found = 1;
            }
            for (int k = 0; k < tk_ftfy_ent_n && !found; k++)
                if (strlen(tk_ftfy_ent[k].name) == s->x.n &&
                    !memcmp(tk_ftfy_ent[k].name, s->x.p, s->x.n)) {
                    for (int q = 0; q < 3 && tk_ftfy_ent[k].cp[q]; q++)
                        u32_push(out, tk_ftfy_ent[k].cp[q]);
                    found = 1;
                }
            if (!found)
                for (size_t k = i; k < end; k++) u32_push(out, t[k]);
        }
        i = end;
    }
}

/* ---------------------------------------------------------------------------------------- */
/* NFC (unicodedata.normalize("NFC")) */

enum { SBASE = 0xAC00, LBASE = 0x1100, VBASE = 0x1161, TBASE = 0x11A7, LCOUNT = 19,
       VCOUNT = 21, TCOUNT = 28, NCOUNT = VCOUNT * TCOUNT, SCOUNT = LCOUNT * NCOUNT };

static int ccc_of(uint32_t c) {
    if (c < 0x300) return 0;
    long k;
    TK_FIND(tk_ccc, c, k);
    return k < 0 ? 0 : tk_ccc[k].ccc;
}

static uint32_t compose(uint32_t a, uint32_t b) {
    if (a >= LBASE && a < LBASE + LCOUNT && b >= VBASE && b < VBASE + VCOUNT)
        return SBASE + ((a - LBASE) * VCOUNT + (b - VBASE)) * TCOUNT;
    if (a >= SBASE && a < SBASE + SCOUNT && (a - SBASE) % TCOUNT == 0 && b > TBASE &&
        b < TBASE + TCOUNT)
        return a + (b - TBASE);
    size_t lo = 0, hi = sizeof tk_comp / sizeof tk_comp[0];
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (tk_comp[mid][0] < a || (tk_comp[mid][0] == a && tk_comp[mid][1] < b)) lo = mid + 1;
        else hi = mid;
    }
    if (lo < sizeof tk_comp / sizeof tk_comp[0] && tk_comp[lo][0] == a && tk_comp[lo][1] == b)
        return tk_comp[lo][2];
    return 0;
}

/* NFC of t into out; returns 0 and leaves out untouched when the text is already NFC because
 * every character is below U+0300 (nothing there decomposes or combines). */
static int nfc(const uint32_t *t, size_t n, u32v *out, u32v *tmp) {
    size_t i = 0;
    while (i < n && t[i] < 0x300) i++;
    if (i == n) return 0;
    /* Full canonical decomposition. */
    tmp->n = 0;
    for (size_t k = 0; k < n; k++) {
        uint32_t c = t[k];
        if (c < 0xC0) {
            u32_push(tmp, c);
            continue;
        }
        if (c >= SBASE && c < SBASE + SCOUNT) {
            uint32_t si = c - SBASE;
            u32_push(tmp, LBASE + si / NCOUNT);
            u32_push(tmp, VBASE + (si % NCOUNT) / TCOUNT);
            if (si % TCOUNT) u32_push(tmp, TBASE + si % TCOUNT);
            continue;
        }
        long d;
        TK_FIND(tk_decomp, c, d);
        if (d < 0) {
            u32_push(tmp, c);
        } else {
            for (int q = 0; q < tk_decomp[d].n; q++)
                u32_push(tmp, tk_decomp_pool[tk_decomp[d].off + q]);
        }
    }
    /* Canonical ordering: a stable sort of each run of non-starters by combining class. */
    for (size_t k = 1; k < tmp->n; k++) {
        int ck = ccc_of(tmp->p[k]);
        if (!ck) continue;
        size_t j = k;
        uint32_t c = tmp->p[k];
        while (j > 0) {
            int cj = ccc_of(tmp->p[j - 1]);
            if (cj <= ck || cj == 0) break;
            tmp->p[j] = tmp->p[j - 1];
            j--;
        }
        tmp->p[j] = c;
    }
    /* Canonical composition. */
    out->n = 0;
    if (!tmp->n) return 1;
    u32_need(out, tmp->n);
    size_t starter = 0;
    out->p[out->n++] = tmp->p[0];
    int last = ccc_of(tmp->p[0]) ? 256 : 0;
    for (size_t k = 1; k < tmp->n; k++) {
        uint32_t c = tmp->p[k];
        int cc = ccc_of(c);
        uint32_t comp = compose(out->p[starter], c);
        if (comp && (last < cc || last == 0)) {
            out->p[starter] = comp;
            continue;
        }
        if (cc == 0) starter = out->n;
        last = cc;
        out->p[out->n++] = c;
    }
    return 1;
}

/* ---------------------------------------------------------------------------------------- */
/* ftfy.fix_text */

/* One round of fix_and_explain's fixers after fix_encoding, from in to out (s->c scratch). */
static void ftfy_fixers(const uint32_t *t, size_t n, u32v *out, tk_text *s) {
    u32v *o = &s->c;
    o->n = 0;
    u32_need(o, n);
    for (size_t i = 0; i < n; i++) {
        uint32_t c = t[i];
        if (c >= 0x80 && c <= 0x9F) c = tk_charmap[1][c]; /* fix_c1_controls */
        if (c >= 0x132) {                                   /* ligatures, width */
            long k;
            TK_FIND(tk_ftfy_tr, c, k);
            if (k >= 0) {
                for (int q = 0; q < tk_ftfy_tr[k].n; q++) {
                    uint32_t d = tk_ftfy_tr[k].to[q];
                    if (d >= 0x201C && d <= 0x201F) d = '"';
                    else if (d == 0x2BC || (d >= 0x2018 && d <= 0x201B)) d = '\'';
                    u32_push(o, d);
                }
                continue;
            }
        }
        if (c >= 0x201C && c <= 0x201F) c = '"'; /* uncurl_quotes */
        else if (c == 0x2BC || (c >= 0x2018 && c <= 0x201B)) c = '\'';
        u32_push(o, c);
    }
    /* fix_line_breaks, remove_terminal_escapes, remove_control_chars. */
    out->n = 0;
    u32_need(out, o->n);
    for (size_t i = 0; i < o->n; i++) {
        uint32_t c = o->p[i];
        if (c == '\r') {
            if (i + 1 < o->n && o->p[i + 1] == '\n') i++;
            c = '\n';
        } else if (c == 0x2028 || c == 0x2029 || c == 0x85) {
            c = '\n';
        }
        out->p[out->n++] = c;
    }
    o->n = 0;
    for (size_t i = 0; i < out->n; i++) {
        uint32_t c = out->p[i];
        if (c == 0x1B && i + 1 < out->n && out->p[i + 1] == '[') {
            size_t j = i + 2;
            while (j < out->n && ((out->p[j] >= '0' && out->p[j] <= '9') || out->p[j] == ';')) j++;
            if (j < out->n && is_alpha_ascii(out->p[j])) {
                i = j;
                continue;
            }
        }
        if (c <= 0x08 || c == 0x0B || (c >= 0x0E && c <= 0x1F) || c == 0x7F ||
            (c >= 0x206A && c <= 0x206F) || c == 0xFEFF || (c >= 0xFFF9 && c <= 0xFFFC))
            continue;
        u32_push(o, c);
    }
    if (!nfc(o->p, o->n, out, &s->d)) u32_set(out, o->p, o->n);
}

/* fix_and_explain on one segment (a line), in s->a -> s->a. */
static void ftfy_segment(tk_text *s, int unescape) {
    for (int round = 0; round < 64; round++) {
        u32_set(&s->b, s->a.p, s->a.n); /* origtext */
        if (unescape) {
            ftfy_unescape(s->a.p, s->a.n, &s->c, s);
            u32_swap(&s->a, &s->c);
        }
        /* fix_encoding: one step at a time until nothing changes. */
        for (int k = 0; k < 64; k++) {
            if (!fix_encoding_step(s->a.p, s->a.n, &s->c, s)) break;
            u32_swap(&s->a, &s->c);
        }
        ftfy_fixers(s->a.p, s->a.n, &s->e, s);
        u32_swap(&s->a, &s->e);
        if (u32_eq(&s->a, &s->b)) return;
    }
}

/* Is this text left unchanged by every ftfy fixer and by html.unescape? True for plain ASCII
 * text without '&', ESC, CR or other control characters. */
static int plain_ascii(const uint32_t *t, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint32_t c = t[i];
        if (c >= 0x7F || c == '&' || (c < 0x20 && c != '\n' && c != '\t' && c != '\f'))
            return 0;
    }
    return 1;
}

/* ftfy.fix_text(s->a) -> s->a, line by line. */
static void ftfy_fix_text(tk_text *s) {
    if (plain_ascii(s->a.p, s->a.n)) return;
    u32v *whole = &s->whole, *result = &s->result;
    u32_set(whole, s->a.p, s->a.n);
    result->n = 0;
    int unescape = 1;
    for (size_t pos = 0; pos < whole->n;) {
        size_t end = pos;
        while (end < whole->n && whole->p[end] != '\n') end++;
        if (end < whole->n) end++;
        for (size_t k = pos; k < end && unescape; k++) unescape = whole->p[k] != '<';
        u32_set(&s->a, whole->p + pos, end - pos);
        ftfy_segment(s, unescape);
        for (size_t k = 0; k < s->a.n; k++) u32_push(result, s->a.p[k]);
        pos = end;
    }
    u32_set(&s->a, result->p, result->n);
}

/* ---------------------------------------------------------------------------------------- */
/* The whole cleaning: ftfy, html.unescape twice, strip, split/join, lower. s->a -> s->a. */

static void lower_into(const uint32_t *t, size_t n, u32v *out) {
    out->n = 0;
    u32_need(out, n);
    for (size_t i = 0; i < n; i++) {
        uint32_t c = t[i];
        if (c < 0x80) {
            u32_push(out, c >= 'A' && c <= 'Z' ? c + 32 : c);
            continue;
        }
        if (c == 0x3A3) { /* capital sigma: final form at the end of a word */
            size_t j = i;
            int before = 0, after = 0;
            while (j > 0) {
                uint16_t p = prop(t[j - 1]);
                if (!(p & P_CIGN)) {
                    before = (p & P_CASED) != 0;
                    break;
                }
                j--;
            }
            for (j = i + 1; j < n; j++) {
                uint16_t p = prop(t[j]);
                if (!(p & P_CIGN)) {
                    after = (p & P_CASED) != 0;
                    break;
                }
            }
            u32_push(out, before && !after ? 0x3C2 : 0x3C3);
            continue;
        }
        long k;
        TK_FIND(tk_lower, c, k);
        if (k < 0) {
            u32_push(out, c);
        } else {
            for (int q = 0; q < tk_lower[k].n; q++) u32_push(out, tk_lower[k].to[q]);
        }
    }
}

static void clean_text(tk_text *s) {
    ftfy_fix_text(s);
    for (int k = 0; k < 2; k++) {
        int amp = 0;
        for (size_t i = 0; i < s->a.n && !amp; i++) amp = s->a.p[i] == '&';
        if (!amp) break;
        html_unescape(s->a.p, s->a.n, &s->b, &s->y);
        u32_swap(&s->a, &s->b);
    }
    /* strip, " ".join(split()), strip: runs of str.isspace become one space. */
    s->b.n = 0;
    u32_need(&s->b, s->a.n);
    int pending = 0;
    for (size_t i = 0; i < s->a.n; i++) {
        uint32_t c = s->a.p[i];
        if (prop(c) & P_PYS) {
            pending = s->b.n > 0;
            continue;
        }
        if (pending) s->b.p[s->b.n++] = ' ';
        pending = 0;
        s->b.p[s->b.n++] = c;
    }
    lower_into(s->b.p, s->b.n, &s->a);
}

/* ---------------------------------------------------------------------------------------- */
/* Pre-tokenisation: the CLIP pattern, matched by hand. */

static int fold_eq(uint32_t c, char lit) {
    if ((uint32_t)(unsigned char)lit == c) return 1;
    if (lit < 'a' || lit > 'z') return 0;
    for (int k = 0; k < 4; k++)
        if (tk_fold[lit - 'a'][k] == c) return 1;
    return 0;
}

static size_t lit_at(const uint32_t *t, size_t n, size_t i, const char *lit) {
    size_t k = 0;
    for (; lit[k]; k++)
        if (i + k >= n || !fold_eq(t[i + k], lit[k])) return 0;
    return k;
}

/* The pieces of t as end offsets into s->ends (a piece starts where the previous ended, or
 * after skipped whitespace: starts are in the odd entries). */
static void pretokenize(const uint32_t *t, size_t n, i32v *pieces) {
    static const char *const lits[] = { "<start_of_text>", "<end_of_text>", "'s", "'t", "'re",
                                        "'ve", "'m", "'ll", "'d" };
    pieces->n = 0;
    for (size_t i = 0; i < n;) {
        size_t m = 0;
        uint32_t c = t[i];
        if (c == '<' || c == '\'')
            for (size_t k = 0; k < sizeof lits / sizeof lits[0] && !m; k++) m = lit_at(t, n, i, lits[k]);
        if (!m) {
            uint16_t p = prop(c);
            if (p & P_L) {
                m = 1;
                while (i + m < n && (prop(t[i + m]) & P_L)) m++;
            } else if (p & P_N) {
                m = 1;
            } else if (p & P_P) {
                m = 1;
                while (i + m < n && (prop(t[i + m]) & P_P)) m++;
            }
        }
        if (!m) {
            i++;
            continue;
        }
        i32_push(pieces, (int32_t)i);
        i32_push(pieces, (int32_t)(i + m));
        i += m;
    }
}

/* ---------------------------------------------------------------------------------------- */
/* The tokenizer */

typedef struct {
    uint64_t key; /* (first << 32) | second */
    int32_t rank, merged;
} pair_slot;

typedef struct {
    uint32_t hash, key_off, key_len, ids_off, n_ids;
} cache_slot;

struct ts_tokenizer {
    int vocab_size;
    int32_t sot, eot;
    int32_t byte_id[256], byte_end_id[256]; /* the symbol of each byte, and with "</w>" */
    pair_slot *pairs;
    uint32_t pair_mask;
    /* Decoding: the raw bytes of each token (byte_decoder applied), -1 length: undecodable. */
    uint8_t *dec_pool;
    uint32_t *dec_off;
    int32_t *dec_len;
    /* The word cache. */
    cache_slot *cache;
    uint32_t cache_used;
    u8v cache_keys;
    i32v cache_ids;
    /* Scratch. */
    tk_text s;
    i32v word, word2, out;
};

/* bytes_to_unicode: the byte each code point stands for (the inverse map), -1 if none. */
static void bytes_to_unicode(uint32_t fwd[256]) {
    int n = 0;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        fwd[b] = printable ? (uint32_t)b : (uint32_t)(256 + n++);
    }
}

/* The vocabulary order of bytes_to_unicode().values(): printable bytes first, then the rest. */
static void byte_order(int order[256]) {
    int k = 0;
    for (int b = 0; b < 256; b++)
        if ((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)) order[k++] = b;
    for (int b = 0; b < 256; b++)
        if (!((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF))) order[k++] = b;
}

static uint32_t fnv(const uint8_t *p, size_t n) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 16777619u;
    return h;
}

static uint64_t mix64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return x;
}

static const pair_slot *pair_find(const ts_tokenizer *t, int32_t a, int32_t b) {
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    for (uint32_t h = (uint32_t)mix64(key) & t->pair_mask;; h = (h + 1) & t->pair_mask) {
        const pair_slot *p = &t->pairs[h];
        if (p->rank < 0) return NULL;
        if (p->key == key) return p;
    }
}

/* A string -> id map used while loading and training: open addressing over (offset, length)
 * into a byte pool. */
typedef struct {
    uint32_t *slot; /* id + 1, 0 empty */
    uint32_t mask;
    const u8v *pool;
    const uint32_t *off, *len;
} str_map;

static int32_t smap_get(const str_map *m, const uint8_t *s, size_t n) {
    for (uint32_t h = fnv(s, n) & m->mask;; h = (h + 1) & m->mask) {
        uint32_t v = m->slot[h];
        if (!v) return -1;
        if (m->len[v - 1] == n && !memcmp(m->pool->p + m->off[v - 1], s, n)) return (int32_t)(v - 1);
    }
}

/* Insert or overwrite (a later id wins, as dict(zip(vocab, range)) does). */
static void smap_put(str_map *m, int32_t id) {
    const uint8_t *s = m->pool->p + m->off[id];
    size_t n = m->len[id];
    for (uint32_t h = fnv(s, n) & m->mask;; h = (h + 1) & m->mask) {
        uint32_t v = m->slot[h];
        if (!v || (m->len[v - 1] == n && !memcmp(m->pool->p + m->off[v - 1], s, n))) {
            m->slot[h] = (uint32_t)id + 1;
            return;
        }
    }
}

static ts_status read_gz(const char *path, u8v *out, ts_err *err) {
    FILE *probe = fopen(path, "rb");
    if (!probe)
        return ts_fail(err, TS_ERR_IO, "%s: cannot open BPE merges file: %s", path, strerror(errno));
    fclose(probe);
    gzFile f = gzopen(path, "rb");
    if (!f) return ts_fail(err, TS_ERR_IO, "%s: cannot open BPE merges file", path);
    out->n = 0;
    for (;;) {
        u8_need(out, out->n + 65536);
        int got = gzread(f, out->p + out->n, 65536);
        if (got < 0) {
            int code;
            const char *msg = gzerror(f, &code);
            ts_status st = ts_fail(err, TS_ERR_FORMAT, "%s: corrupt gzip data in BPE merges file (%s)",
                                   path, msg);
            gzclose(f);
            return st;
        }
        out->n += (size_t)got;
        if (got == 0) break;
    }
    int code = Z_OK;
    const char *msg = gzerror(f, &code);
    if (code != Z_OK && code != Z_STREAM_END) {
        ts_status st = ts_fail(err, TS_ERR_FORMAT, "%s: truncated or corrupt gzip data (%s)", path, msg);
        gzclose(f);
        return st;
    }
    if (gzclose(f) != Z_OK)
        return ts_fail(err, TS_ERR_FORMAT, "%s: truncated or corrupt gzip data (bad trailer)", path);
    return TS_OK;
}

static int valid_utf8(const uint8_t *p, size_t n) {
    u32v tmp = { 0 };
    int bad = 0;
    size_t i = 0;
    while (i < n && !bad) {
        size_t len = p[i] < 0x80 ? 1 : p[i] < 0xE0 ? 2 : p[i] < 0xF0 ? 3 : 4;
        if (i + len > n) {
            bad = 1;
            break;
        }
        tmp.n = 0;
        utf8_decode(p + i, len, &tmp);
        bad = tmp.n != 1 || (tmp.p[0] == 0xFFFD && !(len == 3 && p[i] == 0xEF && p[i + 1] == 0xBF && p[i + 2] == 0xBD));
        i += len;
    }
    free(tmp.p);
    return !bad;
}

ts_status ts_tokenizer_load(const char *path, ts_tokenizer **out, ts_err *err) {
    *out = NULL;
    u8v file = { 0 }, pool = { 0 };
    uint32_t *off = NULL, *len = NULL;
    str_map map = { 0 };
    ts_tokenizer *t = NULL;
    ts_status st = read_gz(path, &file, err);
    if (st) goto fail;
    if (!valid_utf8(file.p, file.n)) {
        st = ts_fail(err, TS_ERR_FORMAT, "%s: BPE merges file is not valid UTF-8", path);
        goto fail;
    }
    /* Lines, as Python's split('\n'): the first is the header. */
    size_t nl = 0;
    for (size_t i = 0; i < file.n; i++) nl += file.p[i] == '\n';
    size_t hdr_end = 0;
    while (hdr_end < file.n && file.p[hdr_end] != '\n') hdr_end++;
    if (!memmem(file.p, hdr_end, "#version", 8)) {
        st = ts_fail(err, TS_ERR_FORMAT,
                     "%s: not a BPE merges file (the first line should be a \"#version: ...\" "
                     "header)", path);
        goto fail;
    }
    size_t nmerge = nl; /* lines after the header */
    if (nmerge > TK_MAX_MERGES) nmerge = TK_MAX_MERGES;
    size_t vocab = 512 + nmerge + 2;
    off = calloc(vocab, sizeof *off);
    len = calloc(vocab, sizeof *len);
    t = calloc(1, sizeof *t);
    TS_CHECK(off && len && t, "out of memory loading %s", path);
    /* Base symbols. */
    uint32_t fwd[256];
    int order[256];
    bytes_to_unicode(fwd);
    byte_order(order);
    u8v tmp = { 0 };
    for (int k = 0; k < 512; k++) {
        off[k] = (uint32_t)pool.n;
        tmp.n = 0;
        utf8_put(&tmp, fwd[order[k % 256]]);
        for (size_t q = 0; q < tmp.n; q++) u8_push(&pool, tmp.p[q]);
        if (k >= 256)
            for (const char *w = "</w>"; *w; w++) u8_push(&pool, (uint8_t)*w);
        len[k] = (uint32_t)(pool.n - off[k]);
    }
    free(tmp.p);
    /* Merges: each line split on whitespace; the vocabulary entry is the parts joined. */
    size_t pos = hdr_end < file.n ? hdr_end + 1 : file.n;
    size_t nm = 0;
    uint32_t *pa = calloc(nmerge + 1, sizeof *pa), *pl = calloc(nmerge + 1, sizeof *pl);
    TS_CHECK(pa && pl, "out of memory");
    for (; nm < nmerge; nm++) {
        size_t e = pos;
        while (e < file.n && file.p[e] != '\n') e++;
        size_t p0 = pos, p1, q0, q1;
        while (p0 < e && (file.p[p0] == ' ' || file.p[p0] == '\t' || file.p[p0] == '\r')) p0++;
        p1 = p0;
        while (p1 < e && !(file.p[p1] == ' ' || file.p[p1] == '\t' || file.p[p1] == '\r')) p1++;
        q0 = p1;
        while (q0 < e && (file.p[q0] == ' ' || file.p[q0] == '\t' || file.p[q0] == '\r')) q0++;
        q1 = q0;
        while (q1 < e && !(file.p[q1] == ' ' || file.p[q1] == '\t' || file.p[q1] == '\r')) q1++;
        size_t rest = q1;
        while (rest < e && (file.p[rest] == ' ' || file.p[rest] == '\t' || file.p[rest] == '\r')) rest++;
        int last_empty = e == file.n && p0 == e; /* the text after a final newline */
        if (!last_empty && (p0 == p1 || q0 == q1 || rest != e)) {
            st = ts_fail(err, TS_ERR_FORMAT,
                         "%s: line %zu is not a merge of two symbols (\"%.*s\")", path, nm + 2,
                         (int)(e - pos > 60 ? 60 : e - pos), (const char *)file.p + pos);
            free(pa), free(pl);
            goto fail;
        }
        size_t id = 512 + nm;
        off[id] = (uint32_t)pool.n;
        for (size_t q = p0; q < p1; q++) u8_push(&pool, file.p[q]);
        pa[nm] = (uint32_t)(pool.n - off[id]);
        for (size_t q = q0; q < q1; q++) u8_push(&pool, file.p[q]);
        len[id] = (uint32_t)(pool.n - off[id]);
        pl[nm] = last_empty ? 0 : 1;
        pos = e < file.n ? e + 1 : file.n;
    }
    if (nm == 0 || (nm == 1 && !pl[0])) {
        st = ts_fail(err, TS_ERR_FORMAT, "%s: BPE merges file has no merges (truncated?)", path);
        free(pa), free(pl);
        goto fail;
    }
    const char *specials[2] = { "<start_of_text>", "<end_of_text>" };
    for (int k = 0; k < 2; k++) {
        size_t id = 512 + nm + (size_t)k;
        off[id] = (uint32_t)pool.n;
        for (const char *w = specials[k]; *w; w++) u8_push(&pool, (uint8_t)*w);
        len[id] = (uint32_t)(pool.n - off[id]);
    }
    vocab = 512 + nm + 2;
    t->vocab_size = (int)vocab;
    t->sot = (int32_t)(512 + nm);
    t->eot = (int32_t)(512 + nm + 1);
    /* The encoder: string -> id, later ids winning. */
    uint32_t cap = 1;
    while (cap < vocab * 2) cap <<= 1;
    map.slot = calloc(cap, sizeof *map.slot);
    TS_CHECK(map.slot, "out of memory");
    map.mask = cap - 1, map.pool = &pool, map.off = off, map.len = len;
    for (size_t id = 0; id < vocab; id++) smap_put(&map, (int32_t)id);
    for (int b = 0; b < 256; b++) {
        uint8_t u[8];
        u8v v = { u, 0, sizeof u };
        utf8_put(&v, fwd[b]);
        t->byte_id[b] = smap_get(&map, u, v.n);
        memcpy(u + v.n, "</w>", 4);
        t->byte_end_id[b] = smap_get(&map, u, v.n + 4);
    }
    /* Pair ranks: later duplicates win, as dict(zip(merges, range)). */
    cap = 1;
    while (cap < nm * 2 + 2) cap <<= 1;
    t->pairs = malloc(cap * sizeof *t->pairs);
    TS_CHECK(t->pairs, "out of memory");
    for (uint32_t k = 0; k < cap; k++) t->pairs[k].rank = -1;
    t->pair_mask = cap - 1;
    for (size_t r = 0; r < nm; r++) {
        if (!pl[r]) continue;
        size_t id = 512 + r;
        const uint8_t *s = pool.p + off[id];
        int32_t a = smap_get(&map, s, pa[r]);
        int32_t b = smap_get(&map, s + pa[r], len[id] - pa[r]);
        int32_t m = smap_get(&map, s, len[id]);
        if (a < 0 || b < 0) continue; /* a merge of symbols no word can hold */
        uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
        for (uint32_t h = (uint32_t)mix64(key) & t->pair_mask;; h = (h + 1) & t->pair_mask) {
            pair_slot *p = &t->pairs[h];
            if (p->rank < 0 || p->key == key) {
                p->key = key, p->rank = (int32_t)r, p->merged = m;
                break;
            }
        }
    }
    free(pa), free(pl);
    /* Decoding table: the byte of each character of each token. */
    int32_t inv[512];
    for (int k = 0; k < 512; k++) inv[k] = -1;
    for (int b = 0; b < 256; b++) inv[fwd[b]] = b;
    t->dec_off = malloc(vocab * sizeof *t->dec_off);
    t->dec_len = malloc(vocab * sizeof *t->dec_len);
    t->dec_pool = malloc(pool.n + 1);
    TS_CHECK(t->dec_off && t->dec_len && t->dec_pool, "out of memory");
    size_t dp = 0;
    u32v cps = { 0 };
    for (size_t id = 0; id < vocab; id++) {
        cps.n = 0;
        utf8_decode(pool.p + off[id], len[id], &cps);
        t->dec_off[id] = (uint32_t)dp;
        int ok = 1;
        for (size_t q = 0; q < cps.n && ok; q++) {
            if (cps.p[q] >= 512 || inv[cps.p[q]] < 0) ok = 0;
            else t->dec_pool[dp++] = (uint8_t)inv[cps.p[q]];
        }
        t->dec_len[id] = ok ? (int32_t)(dp - t->dec_off[id]) : -1;
        if (!ok) dp = t->dec_off[id];
    }
    free(cps.p);
    t->cache = calloc(TK_CACHE_SLOTS, sizeof *t->cache);
    TS_CHECK(t->cache, "out of memory");
    free(map.slot);
    free(file.p), free(pool.p), free(off), free(len);
    *out = t;
    return TS_OK;
fail:
    free(map.slot);
    free(file.p), free(pool.p), free(off), free(len);
    ts_tokenizer_free(t);
    return st;
}

void ts_tokenizer_free(ts_tokenizer *t) {
    if (!t) return;
    free(t->pairs);
    free(t->dec_pool), free(t->dec_off), free(t->dec_len);
    free(t->cache), free(t->cache_keys.p), free(t->cache_ids.p);
    tk_text_free(&t->s);
    free(t->word.p), free(t->word2.p), free(t->out.p);
    free(t);
}

int ts_tokenizer_vocab_size(const ts_tokenizer *t) { return t->vocab_size; }
int32_t ts_tokenizer_sot(const ts_tokenizer *t) { return t->sot; }
int32_t ts_tokenizer_eot(const ts_tokenizer *t) { return t->eot; }

/* BPE of one word's bytes: appends its ids to t->out. */
static void bpe_word(ts_tokenizer *t, const uint8_t *b, size_t n) {
    i32v *w = &t->word, *w2 = &t->word2;
    w->n = 0;
    i32_need(w, n);
    i32_need(w2, n);
    for (size_t i = 0; i < n; i++) w->p[w->n++] = i + 1 < n ? t->byte_id[b[i]] : t->byte_end_id[b[i]];
    while (w->n > 1) {
        const pair_slot *best = NULL;
        for (size_t i = 0; i + 1 < w->n; i++) {
            const pair_slot *p = pair_find(t, w->p[i], w->p[i + 1]);
            if (p && (!best || p->rank < best->rank)) best = p;
        }
        if (!best) break;
        int32_t first = (int32_t)(best->key >> 32), second = (int32_t)(uint32_t)best->key;
        w2->n = 0;
        for (size_t i = 0; i < w->n;) {
            if (i + 1 < w->n && w->p[i] == first && w->p[i + 1] == second) {
                w2->p[w2->n++] = best->merged;
                i += 2;
            } else {
                w2->p[w2->n++] = w->p[i++];
            }
        }
        i32v tmp = *w;
        *w = *w2;
        *w2 = tmp;
    }
    for (size_t i = 0; i < w->n; i++) i32_push(&t->out, w->p[i]);
}

/* The ids of one word through the cache. */
static void encode_word(ts_tokenizer *t, const uint8_t *b, size_t n) {
    if (n == 15 && !memcmp(b, "<start_of_text>", 15)) {
        i32_push(&t->out, t->sot);
        return;
    }
    if (n == 13 && !memcmp(b, "<end_of_text>", 13)) {
        i32_push(&t->out, t->eot);
        return;
    }
    uint32_t h = fnv(b, n);
    uint32_t mask = TK_CACHE_SLOTS - 1, i = h & mask;
    for (;; i = (i + 1) & mask) {
        cache_slot *c = &t->cache[i];
        if (!c->key_len) break;
        if (c->hash == h && c->key_len == n && !memcmp(t->cache_keys.p + c->key_off, b, n)) {
            for (uint32_t k = 0; k < c->n_ids; k++) i32_push(&t->out, t->cache_ids.p[c->ids_off + k]);
            return;
        }
    }
    size_t before = t->out.n;
    bpe_word(t, b, n);
    size_t nids = t->out.n - before;
    /* Remember the word; when the cache is full, start it afresh. */
    if (n > 256) return;
    if (t->cache_used >= TK_CACHE_SLOTS / 2 || t->cache_keys.n + n > TK_CACHE_BYTES ||
        t->cache_ids.n + nids > TK_CACHE_IDS) {
        memset(t->cache, 0, TK_CACHE_SLOTS * sizeof *t->cache);
        t->cache_used = 0, t->cache_keys.n = 0, t->cache_ids.n = 0;
        for (i = h & mask; t->cache[i].key_len; i = (i + 1) & mask) {}
    }
    cache_slot *c = &t->cache[i];
    c->hash = h, c->key_off = (uint32_t)t->cache_keys.n, c->key_len = (uint32_t)n;
    c->ids_off = (uint32_t)t->cache_ids.n, c->n_ids = (uint32_t)nids;
    u8_need(&t->cache_keys, t->cache_keys.n + n);
    memcpy(t->cache_keys.p + t->cache_keys.n, b, n);
    t->cache_keys.n += n;
    for (size_t k = 0; k < nids; k++) i32_push(&t->cache_ids, t->out.p[before + k]);
    t->cache_used++;
}

/* Encode into t->out. */
static void encode_all(ts_tokenizer *t, const char *text, size_t len) {
    tk_text *s = &t->s;
    s->a.n = 0;
    utf8_decode((const uint8_t *)text, len, &s->a);
    clean_text(s);
    pretokenize(s->a.p, s->a.n, &s->ends);
    t->out.n = 0;
    for (size_t k = 0; k + 1 < s->ends.n; k += 2) {
        s->x.n = 0;
        for (int32_t i = s->ends.p[k]; i < s->ends.p[k + 1]; i++) utf8_put(&s->x, s->a.p[i]);
        encode_word(t, s->x.p, s->x.n);
    }
}

int64_t ts_tokenizer_encode(ts_tokenizer *t, const char *text, size_t len, int32_t *ids, int64_t cap) {
    encode_all(t, text, len);
    int64_t n = (int64_t)t->out.n;
    if (ids && cap > 0) memcpy(ids, t->out.p, (size_t)(n < cap ? n : cap) * sizeof *ids);
    return n;
}

int ts_tokenizer_encode_context(ts_tokenizer *t, const char *text, size_t len, int32_t *row, int ctx) {
    TS_CHECK(ctx >= 2, "context length %d is too short for the start and end tokens", ctx);
    encode_all(t, text, len);
    int n = 0;
    row[n++] = t->sot;
    for (size_t i = 0; i < t->out.n && n < ctx; i++) row[n++] = t->out.p[i];
    if (n < ctx) row[n++] = t->eot;
    else row[ctx - 1] = t->eot; /* truncated: the end token replaces the last one */
    for (int i = n; i < ctx; i++) row[i] = 0;
    return n;
}

char *ts_tokenizer_clean(ts_tokenizer *t, const char *text, size_t len, size_t *out_len) {
    tk_text *s = &t->s;
    s->a.n = 0;
    utf8_decode((const uint8_t *)text, len, &s->a);
    clean_text(s);
    s->x.n = 0;
    for (size_t i = 0; i < s->a.n; i++) utf8_put(&s->x, s->a.p[i]);
    char *r = malloc(s->x.n + 1);
    if (!r) return NULL;
    memcpy(r, s->x.p, s->x.n);
    r[s->x.n] = 0;
    if (out_len) *out_len = s->x.n;
    return r;
}

ts_status ts_tokenizer_decode(const ts_tokenizer *t, const int32_t *ids, int64_t n, char **out, ts_err *err) {
    *out = NULL;
    u8v raw = { 0 }, res = { 0 };
    u32v cps = { 0 };
    for (int64_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= t->vocab_size || t->dec_len[id] < 0) {
            free(raw.p);
            return ts_fail(err, TS_ERR_DATA, "token id %d (position %lld) is not in the vocabulary (0..%d)",
                           id, (long long)i, t->vocab_size - 1);
        }
        u8_need(&raw, raw.n + (size_t)t->dec_len[id]);
        memcpy(raw.p + raw.n, t->dec_pool + t->dec_off[id], (size_t)t->dec_len[id]);
        raw.n += (size_t)t->dec_len[id];
    }
    utf8_decode(raw.p, raw.n, &cps);
    for (size_t i = 0; i < cps.n; i++) {
        if (cps.p[i] == '<' && i + 3 < cps.n && cps.p[i + 1] == '/' && cps.p[i + 2] == 'w' && cps.p[i + 3] == '>') {
            u8_push(&res, ' ');
            i += 3;
            continue;
        }
        utf8_put(&res, cps.p[i]);
    }
    u8_push(&res, 0);
    free(raw.p), free(cps.p);
    *out = (char *)res.p;
    return TS_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* The BPE trainer.
 *
 * Words are the pre-tokenised pieces of the cleaned corpus lines, counted once each. A word is
 * a sequence of symbol ids (the byte symbols, the last with "</w>"); a step finds the most
 * frequent adjacent pair over all words (weighted by the word counts), writes it as a merge,
 * and replaces it in every word that holds it, updating the pair counts of those words only. */

typedef struct {
    uint64_t key; /* (a << 32) | b, or UINT64_MAX when empty */
    int64_t count;
} tr_pair;

typedef struct {
    tr_pair *slot;
    uint32_t mask, used;
} tr_pairs;

static tr_pair *tr_find(tr_pairs *p, uint64_t key, int insert) {
    if (insert && (p->used + 1) * 2 > p->mask + 1) {
        /* Grow: reinsert every live pair. */
        uint32_t cap = (p->mask + 1) * 2;
        tr_pair *old = p->slot;
        uint32_t oldcap = p->mask + 1;
        p->slot = malloc(cap * sizeof *p->slot);
        TS_CHECK(p->slot, "out of memory");
        for (uint32_t k = 0; k < cap; k++) p->slot[k].key = UINT64_MAX, p->slot[k].count = 0;
        p->mask = cap - 1, p->used = 0;
        for (uint32_t k = 0; k < oldcap; k++)
            if (old[k].key != UINT64_MAX && old[k].count > 0) *tr_find(p, old[k].key, 1) = old[k];
        free(old);
    }
    for (uint32_t h = (uint32_t)mix64(key) & p->mask;; h = (h + 1) & p->mask) {
        tr_pair *s = &p->slot[h];
        if (s->key == key) return s;
        if (s->key == UINT64_MAX) {
            if (!insert) return NULL;
            s->key = key, s->count = 0;
            p->used++;
            return s;
        }
    }
}

static void tr_add(tr_pairs *p, int32_t a, int32_t b, int64_t c) {
    tr_pair *s = tr_find(p, ((uint64_t)(uint32_t)a << 32) | (uint32_t)b, 1);
    s->count += c;
}

typedef struct {
    u8v pool;         /* symbol strings (byte-level unicode, UTF-8) */
    u32v off, len;    /* per symbol id */
} tr_syms;

static int tr_cmp_sym(const tr_syms *s, int32_t a, int32_t b) {
    uint32_t la = s->len.p[a], lb = s->len.p[b];
    int c = memcmp(s->pool.p + s->off.p[a], s->pool.p + s->off.p[b], la < lb ? la : lb);
    return c ? c : (la < lb ? -1 : la > lb ? 1 : 0);
}

static void tr_add_sym(tr_syms *s, const uint8_t *p, size_t n) {
    u32_push(&s->off, (uint32_t)s->pool.n);
    u32_push(&s->len, (uint32_t)n);
    u8_need(&s->pool, s->pool.n + n);
    memcpy(s->pool.p + s->pool.n, p, n);
    s->pool.n += n;
}

ts_status ts_bpe_train(const char *const *corpus_paths, int n_paths, int vocab_size,
                       const char *out_path, int *n_merges, ts_err *err) {
    if (n_paths <= 0) return ts_fail(err, TS_ERR_USAGE, "BPE training needs at least one corpus file");
    if (vocab_size < 515 || vocab_size > 512 + TK_MAX_MERGES + 2)
        return ts_fail(err, TS_ERR_USAGE,
                       "vocabulary size %d is out of range: 515 (one merge) to %d (CLIP's size)",
                       vocab_size, 512 + TK_MAX_MERGES + 2);
    int want = vocab_size - 514;
    ts_status st = TS_OK;
    tk_text s = { 0 };
    tr_syms sy = { 0 };
    /* Words: a map from the word's bytes to its index; counts and symbol sequences. */
    u8v wbytes = { 0 };
    u32v woff = { 0 }, wlen = { 0 };
    i32v wsym = { 0 };      /* all words' symbols, each word at its own offset */
    u32v wsoff = { 0 }, wslen = { 0 };
    int64_t *wcount = NULL;
    size_t wcap_count = 0;
    uint32_t wmask = (1u << 16) - 1, wused = 0;
    uint32_t *wslot = calloc(wmask + 1, sizeof *wslot);
    tr_pairs pairs = { 0 };
    char *line = NULL;
    size_t line_cap = 0;
    gzFile gz = NULL;
    char *tmp_path = NULL;
    TS_CHECK(wslot, "out of memory");

    uint32_t fwd[256];
    int order[256];
    bytes_to_unicode(fwd);
    byte_order(order);
    int32_t sym_of[256], sym_end_of[256];
    for (int k = 0; k < 512; k++) {
        uint8_t u[8];
        u8v v = { u, 0, sizeof u };
        utf8_put(&v, fwd[order[k % 256]]);
        if (k >= 256) memcpy(u + v.n, "</w>", 4), v.n += 4;
        tr_add_sym(&sy, u, v.n);
        if (k < 256) sym_of[order[k]] = k;
        else sym_end_of[order[k - 256]] = k;
    }

    for (int f = 0; f < n_paths; f++) {
        FILE *in = fopen(corpus_paths[f], "rb");
        if (!in) {
            st = ts_fail(err, TS_ERR_IO, "%s: cannot open corpus file: %s", corpus_paths[f], strerror(errno));
            goto done;
        }
        ssize_t got;
        while ((got = getline(&line, &line_cap, in)) >= 0) {
            s.a.n = 0;
            utf8_decode((const uint8_t *)line, (size_t)got, &s.a);
            clean_text(&s);
            pretokenize(s.a.p, s.a.n, &s.ends);
            for (size_t k = 0; k + 1 < s.ends.n; k += 2) {
                s.x.n = 0;
                for (int32_t i = s.ends.p[k]; i < s.ends.p[k + 1]; i++) utf8_put(&s.x, s.a.p[i]);
                if ((s.x.n == 15 && !memcmp(s.x.p, "<start_of_text>", 15)) ||
                    (s.x.n == 13 && !memcmp(s.x.p, "<end_of_text>", 13)))
                    continue; /* special tokens are never split */
                uint32_t h = fnv(s.x.p, s.x.n);
                uint32_t i = h & wmask;
                for (;; i = (i + 1) & wmask) {
                    uint32_t v = wslot[i];
                    if (!v) break;
                    if (wlen.p[v - 1] == s.x.n && !memcmp(wbytes.p + woff.p[v - 1], s.x.p, s.x.n)) break;
                }
                if (wslot[i]) {
                    wcount[wslot[i] - 1]++;
                    continue;
                }
                /* A new word. */
                uint32_t id = (uint32_t)woff.n;
                u32_push(&woff, (uint32_t)wbytes.n);
                u32_push(&wlen, (uint32_t)s.x.n);
                u8_need(&wbytes, wbytes.n + s.x.n);
                memcpy(wbytes.p + wbytes.n, s.x.p, s.x.n);
                wbytes.n += s.x.n;
                wcount = grow(wcount, &wcap_count, id + 1, sizeof *wcount);
                wcount[id] = 1;
                u32_push(&wsoff, (uint32_t)wsym.n);
                u32_push(&wslen, (uint32_t)s.x.n);
                for (size_t q = 0; q < s.x.n; q++)
                    i32_push(&wsym, q + 1 < s.x.n ? sym_of[s.x.p[q]] : sym_end_of[s.x.p[q]]);
                wslot[i] = id + 1;
                if (++wused * 2 > wmask + 1) {
                    uint32_t cap = (wmask + 1) * 2;
                    free(wslot);
                    wslot = calloc(cap, sizeof *wslot);
                    TS_CHECK(wslot, "out of memory");
                    wmask = cap - 1;
                    for (uint32_t w = 0; w < woff.n; w++) {
                        uint32_t j = fnv(wbytes.p + woff.p[w], wlen.p[w]) & wmask;
                        while (wslot[j]) j = (j + 1) & wmask;
                        wslot[j] = w + 1;
                    }
                }
            }
        }
        int rerr = ferror(in);
        fclose(in);
        if (rerr) {
            st = ts_fail(err, TS_ERR_IO, "%s: read error", corpus_paths[f]);
            goto done;
        }
    }
    if (woff.n == 0) {
        st = ts_fail(err, TS_ERR_DATA, "the corpus (%s%s) has no text to train on", corpus_paths[0],
                     n_paths > 1 ? ", ..." : "");
        goto done;
    }

    /* Pair counts over all words. */
    pairs.slot = malloc(1024 * sizeof *pairs.slot);
    TS_CHECK(pairs.slot, "out of memory");
    for (int k = 0; k < 1024; k++) pairs.slot[k].key = UINT64_MAX, pairs.slot[k].count = 0;
    pairs.mask = 1023;
    for (size_t w = 0; w < woff.n; w++) {
        const int32_t *p = wsym.p + wsoff.p[w];
        for (uint32_t i = 0; i + 1 < wslen.p[w]; i++) tr_add(&pairs, p[i], p[i + 1], wcount[w]);
    }

    tmp_path = malloc(strlen(out_path) + 5);
    TS_CHECK(tmp_path, "out of memory");
    sprintf(tmp_path, "%s.tmp", out_path);
    gz = gzopen(tmp_path, "wb9");
    if (!gz) {
        st = ts_fail(err, TS_ERR_IO, "%s: cannot write: %s", tmp_path, strerror(errno));
        goto done;
    }
    gzputs(gz, "#version: 0.2");
    int made = 0;
    for (; made < want; made++) {
        /* The most frequent pair; ties to the smaller (first, second) in byte order. */
        tr_pair *best = NULL;
        for (uint32_t k = 0; k <= pairs.mask; k++) {
            tr_pair *c = &pairs.slot[k];
            if (c->key == UINT64_MAX || c->count < 2) continue;
            if (!best || c->count > best->count) {
                best = c;
                continue;
            }
            if (c->count < best->count) continue;
            int32_t ca = (int32_t)(c->key >> 32), cb = (int32_t)(uint32_t)c->key;
            int32_t ba = (int32_t)(best->key >> 32), bb = (int32_t)(uint32_t)best->key;
            int o = tr_cmp_sym(&sy, ca, ba);
            if (o < 0 || (o == 0 && tr_cmp_sym(&sy, cb, bb) < 0)) best = c;
        }
        if (!best) break;
        int32_t a = (int32_t)(best->key >> 32), b = (int32_t)(uint32_t)best->key;
        int32_t m = (int32_t)sy.off.n;
        /* The new symbol and the merge line. */
        s.x.n = 0;
        u8_need(&s.x, sy.len.p[a] + sy.len.p[b] + 2);
        memcpy(s.x.p, sy.pool.p + sy.off.p[a], sy.len.p[a]);
        memcpy(s.x.p + sy.len.p[a], sy.pool.p + sy.off.p[b], sy.len.p[b]);
        tr_add_sym(&sy, s.x.p, sy.len.p[a] + sy.len.p[b]);
        gzputc(gz, '\n');
        gzwrite(gz, sy.pool.p + sy.off.p[a], sy.len.p[a]);
        gzputc(gz, ' ');
        gzwrite(gz, sy.pool.p + sy.off.p[b], sy.len.p[b]);
        /* Replace the pair in every word that holds it. */
        for (size_t w = 0; w < woff.n; w++) {
            int32_t *p = wsym.p + wsoff.p[w];
            uint32_t n = wslen.p[w];
            int has = 0;
            for (uint32_t i = 0; i + 1 < n && !has; i++) has = p[i] == a && p[i + 1] == b;
            if (!has) continue;
            int64_t c = wcount[w];
            for (uint32_t i = 0; i + 1 < n; i++) tr_add(&pairs, p[i], p[i + 1], -c);
            uint32_t j = 0;
            for (uint32_t i = 0; i < n;) {
                if (i + 1 < n && p[i] == a && p[i + 1] == b) {
                    p[j++] = m;
                    i += 2;
                } else {
                    p[j++] = p[i++];
                }
            }
            wslen.p[w] = j;
            for (uint32_t i = 0; i + 1 < j; i++) tr_add(&pairs, p[i], p[i + 1], c);
        }
    }
    if (gzclose(gz) != Z_OK) {
        gz = NULL;
        st = ts_fail(err, TS_ERR_IO, "%s: write failed", tmp_path);
        goto done;
    }
    gz = NULL;
    if (made == 0) {
        st = ts_fail(err, TS_ERR_DATA, "the corpus (%s) has no pair of symbols that occurs twice",
                     corpus_paths[0]);
        goto done;
    }
    {
        /* Make the bytes durable before the rename, so a crash never leaves half a file. */
        FILE *sync = fopen(tmp_path, "rb");
        if (sync) {
            fsync(fileno(sync));
            fclose(sync);
        }
    }
    if (rename(tmp_path, out_path) != 0) {
        st = ts_fail(err, TS_ERR_IO, "%s: cannot rename to %s: %s", tmp_path, out_path, strerror(errno));
        goto done;
    }
    if (made < want)
        ts_log(TS_LOG_WARN, "BPE training stopped at %d merges (vocabulary %d, asked %d): no pair "
               "occurs twice any more", made, made + 514, vocab_size);
    if (n_merges) *n_merges = made;
done:
    if (gz) gzclose(gz);
    if (st && tmp_path) remove(tmp_path);
    free(tmp_path);
    free(line);
    free(pairs.slot);
    free(wslot), free(wcount);
    free(wbytes.p), free(woff.p), free(wlen.p), free(wsym.p), free(wsoff.p), free(wslen.p);
    free(sy.pool.p), free(sy.off.p), free(sy.len.p);
    tk_text_free(&s);
    return st;
}
