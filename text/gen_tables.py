#!/usr/bin/env python3
"""gen_tables.py: writes text/tokenizer_tables.h, the Unicode and ftfy tables of the tokenizer.

The C tokenizer (text/tokenizer.c) reproduces what open_clip's SimpleTokenizer does in Python:
ftfy.fix_text, html.unescape, str.split/strip/lower, unicodedata NFC and the `regex` module's
pre-tokenisation pattern. Every character property those use is taken here from the very
modules open_clip runs on, so the C code matches them character for character:

  - the pattern classes [\\p{L}], [\\p{N}], [^\\s\\p{L}\\p{N}] and \\s from `regex`, compiled with
    IGNORECASE exactly as open_clip compiles its pattern, and the case variants of ASCII letters
    that IGNORECASE lets match the contractions and the special tokens;
  - str.isspace (split/strip), re's \\w, str.lower (full mappings) and the cased /
    case-ignorable properties Python uses for the final sigma, probed through str.lower;
  - NFC: canonical decompositions, combining classes and primary composites from unicodedata;
  - ftfy's mojibake categories (ftfy.badness), its UTF-8 clue sets, the single-byte codecs it
    tries (ftfy.bad_codecs' sloppy ones included), its ligature and width maps;
  - html.entities.html5, html's invalid character references, and ftfy's extra upper-case
    entity names.

What it is not: a general Unicode database. Only the properties the tokenizer asks are here.

Regenerate (a few seconds) with a Python that has ftfy and regex, e.g. the venv that
tests/text/make_tokenizer_expected.py describes:
    /tmp/ocvenv/bin/python text/gen_tables.py > text/tokenizer_tables.h
"""
import html
import html.entities
import re
import sys
import unicodedata

import ftfy
import ftfy.bad_codecs  # noqa: F401  (registers the sloppy-windows-* codecs)
import ftfy.badness
import ftfy.chardata
import regex

MAXCP = 0x110000

# Property bits; text/tokenizer.c defines the same names.
P_L, P_N, P_P, P_RS, P_PYS, P_W, P_CASED, P_CIGN = (1 << i for i in range(8))


def props():
    rl = regex.compile(r"[\p{L}]", regex.IGNORECASE)
    rn = regex.compile(r"[\p{N}]", regex.IGNORECASE)
    rp = regex.compile(r"[^\s\p{L}\p{N}]", regex.IGNORECASE)
    rs = regex.compile(r"\s", regex.IGNORECASE)
    rw = re.compile(r"\w")
    out = []
    for cp in range(MAXCP):
        c = chr(cp)
        m = 0
        if rl.match(c): m |= P_L
        if rn.match(c): m |= P_N
        if rp.match(c): m |= P_P
        if rs.match(c): m |= P_RS
        if c.isspace(): m |= P_PYS
        if rw.match(c): m |= P_W
        if 0xD800 <= cp <= 0xDFFF:
            pass
        else:
            t1 = ("A\u03a3" + c).lower()[1]
            t2 = ("A\u03a3" + c + "A").lower()[1]
            if t1 == "\u03c3": m |= P_CASED
            elif t2 == "\u03c3": m |= P_CIGN
        out.append(m)
    ranges = []
    prev = None
    for cp, m in enumerate(out):
        if m != prev:
            ranges.append((cp, m))
            prev = m
    return ranges


def fold_variants():
    """For each ASCII lower-case letter, the other code points that IGNORECASE matches to it."""
    res = {}
    for ch in "abcdefghijklmnopqrstuvwxyz":
        pat = regex.compile(ch, regex.IGNORECASE)
        res[ch] = [cp for cp in range(MAXCP) if chr(cp) != ch and not (0xD800 <= cp <= 0xDFFF)
                   and pat.fullmatch(chr(cp))]
    return res


def lower_map():
    rows = []
    for cp in range(MAXCP):
        if 0xD800 <= cp <= 0xDFFF: continue
        lo = chr(cp).lower()
        if lo != chr(cp):
            assert len(lo) <= 3
            rows.append((cp, [ord(x) for x in lo]))
    return rows


def nfc_tables():
    decomp, ccc, comp = [], [], []
    for cp in range(MAXCP):
        if 0xD800 <= cp <= 0xDFFF: continue
        c = chr(cp)
        k = unicodedata.combining(c)
        if k: ccc.append((cp, k))
        if 0xAC00 <= cp <= 0xD7A3: continue  # Hangul syllables: algorithmic
        d = unicodedata.normalize("NFD", c)
        if d != c:
            decomp.append((cp, [ord(x) for x in d]))
        raw = unicodedata.decomposition(c)
        if raw and not raw.startswith("<"):
            parts = [int(x, 16) for x in raw.split()]
            if len(parts) == 2 and unicodedata.normalize("NFC", chr(parts[0]) + chr(parts[1])) == c:
                comp.append((parts[0], parts[1], cp))
    comp.sort()
    return decomp, ccc, comp


FT_CATS = ["common", "c1", "bad", "law", "currency", "start_punctuation", "end_punctuation",
           "numeric", "kaomoji", "upper_accented", "lower_accented", "upper_common",
           "lower_common", "box"]
FT_CLUES = ["utf8_first_of_2", "utf8_first_of_3", "utf8_first_of_4", "utf8_continuation",
            "utf8_continuation_strict"]


def ftfy_masks():
    masks = {}
    names = [(n, ftfy.badness.MOJIBAKE_CATEGORIES[n]) for n in FT_CATS]
    names += [(n, ftfy.chardata.UTF8_CLUES[n]) for n in FT_CLUES]
    for bit, (name, chars) in enumerate(names):
        pat = re.compile("[" + chars + "]")
        for cp in range(0x10000):
            if pat.match(chr(cp)):
                masks[cp] = masks.get(cp, 0) | (1 << bit)
    return sorted(masks.items())


def charmaps():
    tabs = []
    for enc in ftfy.chardata.CHARMAP_ENCODINGS:
        t = []
        for b in range(256):
            try:
                ch = bytes([b]).decode(enc)
                assert len(ch) == 1 and ch.encode(enc) == bytes([b]), (enc, b)
                t.append(ord(ch))
            except UnicodeDecodeError:
                t.append(0xFFFFFFFF)
        tabs.append((enc, t))
    return tabs


def cstr(cps):
    return "{" + ", ".join("0x%X" % c for c in cps) + "}"


def main():
    w = sys.stdout.write
    w("/* tokenizer_tables.h: generated by text/gen_tables.py; do not edit.\n"
      " *\n"
      " * Unicode %s (Python %s), regex %s, ftfy %s. Included by text/tokenizer.c only.\n"
      " */\n" % (unicodedata.unidata_version, sys.version.split()[0], regex.__version__,
                  ftfy.__version__))
    w("#ifndef TS_TOKENIZER_TABLES_H\n#define TS_TOKENIZER_TABLES_H\n#include <stdint.h>\n\n")

    rng = props()
    w("/* Property ranges: from .start on, the bits are .bits (P_* in tokenizer.c). */\n")
    w("static const struct { uint32_t start; uint16_t bits; } tk_props[%d] = {\n" % len(rng))
    for cp, m in rng:
        w("    {0x%X, 0x%X},\n" % (cp, m))
    w("};\n")
    bits = [0] * 256
    for k, (cp, m) in enumerate(rng):
        end = rng[k + 1][0] if k + 1 < len(rng) else MAXCP
        for c in range(cp, min(end, 256)):
            bits[c] = m
    w("static const uint16_t tk_props256[256] = {\n")
    for i in range(0, 256, 16):
        w("    " + ", ".join("0x%X" % b for b in bits[i:i + 16]) + ",\n")
    w("};\n\n")

    fv = fold_variants()
    w("/* Other code points that IGNORECASE matches to each ASCII lower-case letter. */\n")
    w("static const uint32_t tk_fold[26][4] = {\n")
    for ch in "abcdefghijklmnopqrstuvwxyz":
        v = fv[ch]
        assert len(v) <= 4, (ch, v)
        w("    %s, /* %s */\n" % (cstr(v + [0] * (4 - len(v))), ch))
    w("};\n\n")

    lm = lower_map()
    w("/* str.lower: code point, length, mapping (sorted). */\n")
    w("static const struct { uint32_t cp; uint8_t n; uint32_t to[3]; } tk_lower[%d] = {\n" % len(lm))
    for cp, to in lm:
        w("    {0x%X, %d, %s},\n" % (cp, len(to), cstr(to + [0] * (3 - len(to)))))
    w("};\n\n")

    decomp, ccc, comp = nfc_tables()
    pool = []
    w("/* NFC: full canonical decompositions (offset, length into tk_decomp_pool). */\n")
    w("static const struct { uint32_t cp; uint16_t off; uint8_t n; } tk_decomp[%d] = {\n" % len(decomp))
    for cp, d in decomp:
        w("    {0x%X, %d, %d},\n" % (cp, len(pool), len(d)))
        pool.extend(d)
    w("};\n")
    w("static const uint32_t tk_decomp_pool[%d] = {\n" % len(pool))
    for i in range(0, len(pool), 10):
        w("    " + ", ".join("0x%X" % c for c in pool[i:i + 10]) + ",\n")
    w("};\n")
    w("static const struct { uint32_t cp; uint8_t ccc; } tk_ccc[%d] = {\n" % len(ccc))
    for cp, k in ccc:
        w("    {0x%X, %d},\n" % (cp, k))
    w("};\n")
    w("/* Primary composites: (first, second) -> composite, sorted by (first, second). */\n")
    w("static const uint32_t tk_comp[%d][3] = {\n" % len(comp))
    for a, b, c in comp:
        w("    {0x%X, 0x%X, 0x%X},\n" % (a, b, c))
    w("};\n\n")

    fm = ftfy_masks()
    w("/* ftfy's character categories (bit i = FT_* in tokenizer.c): %s */\n"
      % ", ".join(FT_CATS + FT_CLUES))
    w("static const struct { uint16_t cp; uint32_t bits; } tk_ftfy[%d] = {\n" % len(fm))
    for cp, m in fm:
        w("    {0x%X, 0x%X},\n" % (cp, m))
    w("};\n\n")

    cm = charmaps()
    w("/* ftfy.chardata.CHARMAP_ENCODINGS in order: byte -> code point (0xFFFFFFFF: undefined). */\n")
    w("static const char *const tk_charmap_names[%d] = {%s};\n"
      % (len(cm), ", ".join('"%s"' % n for n, _ in cm)))
    w("static const uint32_t tk_charmap[%d][256] = {\n" % len(cm))
    for _, t in cm:
        w("    {\n")
        for i in range(0, 256, 8):
            w("        " + ", ".join("0x%X" % c for c in t[i:i + 8]) + ",\n")
        w("    },\n")
    w("};\n\n")

    tr = dict(ftfy.chardata.LIGATURES)
    tr.update(ftfy.chardata.WIDTH_MAP)
    rows = sorted(tr.items())
    w("/* ftfy's ligature and character-width translations (sorted). */\n")
    w("static const struct { uint32_t cp; uint8_t n; uint32_t to[3]; } tk_ftfy_tr[%d] = {\n" % len(rows))
    for cp, s in rows:
        assert len(s) <= 3
        to = [ord(x) for x in s]
        w("    {0x%X, %d, %s},\n" % (cp, len(to), cstr(to + [0] * (3 - len(to)))))
    w("};\n\n")

    ents = sorted(html.entities.html5.items())
    w("/* html.entities.html5: name (with or without ';') -> one or two code points, sorted. */\n")
    w("static const struct { const char *name; uint32_t cp[2]; } tk_html5[%d] = {\n" % len(ents))
    for name, s in ents:
        assert len(s) <= 2
        to = [ord(x) for x in s] + [0] * (2 - len(s))
        w('    {"%s", {0x%X, 0x%X}},\n' % (name, to[0], to[1]))
    w("};\n\n")

    extra = sorted((k[1:], v) for k, v in ftfy.chardata.HTML_ENTITIES.items()
                   if k[1:] not in html.entities.html5 or html.entities.html5[k[1:]] != v)
    w("/* ftfy.chardata.HTML_ENTITIES beyond html5: upper-case names (without '&'), sorted. */\n")
    w("static const struct { const char *name; uint32_t cp[3]; } tk_ftfy_ent[%d] = {\n" % max(1, len(extra)))
    for name, s in extra:
        assert len(s) <= 3
        to = [ord(x) for x in s] + [0] * (3 - len(s))
        w('    {"%s", {0x%X, 0x%X, 0x%X}},\n' % (name, to[0], to[1], to[2]))
    if not extra:
        w('    {"", {0, 0, 0}},\n')
    w("};\n")
    w("static const int tk_ftfy_ent_n = %d;\n\n" % len(extra))

    inv = sorted(html._invalid_charrefs.items())
    w("/* html._invalid_charrefs: numeric reference -> replacement (0: the empty string). */\n")
    w("static const uint32_t tk_html_badref[%d][2] = {\n" % len(inv))
    for k, v in inv:
        w("    {0x%X, 0x%X},\n" % (k, ord(v) if v else 0))
    w("};\n")
    cps = sorted(html._invalid_codepoints)
    w("/* html._invalid_codepoints: references that unescape to nothing. */\n")
    w("static const uint32_t tk_html_badcp[%d] = {\n" % len(cps))
    for i in range(0, len(cps), 8):
        w("    " + ", ".join("0x%X" % c for c in cps[i:i + 8]) + ",\n")
    w("};\n\n#endif\n")


if __name__ == "__main__":
    main()
