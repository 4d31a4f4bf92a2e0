#!/usr/bin/env python3
"""make_tokenizer_expected.py: writes tests/text/tokenizer_expected.json with open_clip.

The expected outputs of tests/unit_tokenizer.c come from the real tokenizer of open_clip
(open_clip.tokenizer.SimpleTokenizer, with its default clean="lower"), run on
  - the inline strings below (captions, punctuation, numbers, contractions, accents, emoji,
    CJK, HTML entities, mojibake, whitespace, empty text, text longer than the context,
    invalid UTF-8 given as bytes and read as Python's bytes.decode("utf-8", "replace")), and
  - the 1000 real web captions of ../shared/data/captions/img2dataset_test_1000.parquet
    (column TEXT; img2dataset_sample_image.txt in the same folder is one URL, not captions).
For each it records the cleaned text, encode(text), the row of tokenizer([text]) (77 long,
stored without its trailing zeros) and, for the inline strings, decode(encode(text)).
The merges file is ../shared/data/clip/bpe_simple_vocab_16e6.txt.gz, byte for byte the one
inside the open_clip_torch wheel.

It is not run by the tests: CI needs neither open_clip nor pyarrow. To regenerate (Debian 12,
python3-torch installed, from the repository root):

    python3 -m venv --system-site-packages /tmp/ocvenv
    /tmp/ocvenv/bin/pip install --no-deps open_clip_torch ftfy regex wcwidth 'pyarrow<16'
    /tmp/ocvenv/bin/python tests/text/make_tokenizer_expected.py

open_clip/__init__.py imports torchvision, which Debian does not package; the script loads
open_clip/tokenizer.py on its own (it needs only ftfy, regex, numpy and torch).
The versions used are recorded at the top of the JSON file.
"""
import hashlib
import importlib.util
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SHARED = os.path.join(os.path.dirname(ROOT), "shared", "data")
MERGES = os.path.join(SHARED, "clip", "bpe_simple_vocab_16e6.txt.gz")
CAPTIONS = os.path.join(SHARED, "captions", "img2dataset_test_1000.parquet")
OUT = os.path.join(HERE, "tokenizer_expected.json")

LONG = ("A very long caption that keeps going well past the seventy seven tokens of the CLIP "
        "context, describing a sunny beach with palm trees, a red umbrella, two dogs playing "
        "fetch, children building sand castles, waves rolling in, seagulls overhead, a "
        "lighthouse in the distance, boats on the horizon, ice cream stands, volleyball nets, "
        "surfers waiting for waves, and a sunset painting the sky orange, pink and purple.")

# (name, text as str, or bytes for raw input that may be invalid UTF-8)
CASES = [
    ("caption", "A photo of a cat sitting on a wooden table."),
    ("caption_upper", "A DOG RUNNING IN THE PARK"),
    ("caption_mixed", "Two people Riding Bikes near the Eiffel Tower, Paris (2019)"),
    ("punct", "Hello, world!!! What?! ... --- ;;; (parens) [brackets] {braces}"),
    ("punct_runs", "wow!!!??? ...and then---nothing"),
    ("numbers", "3.14159 is pi; 1,000,000 dollars; 2024-01-15; 42nd street; 7x7"),
    ("numbers_unicode", "½ cup, x² + y³, ① ② ③, ٣ Arabic-Indic, ௫ Tamil five"),
    ("contractions", "it's I'm you're we've they'll he'd can't won't"),
    ("contractions_upper", "IT'S I'M YOU'RE WE'VE THEY'LL HE'D CAN'T"),
    ("contractions_odd", "'s 's' ''s rock'n'roll o'clock 'tis"),
    ("long_s", "it\u017f <\u017ftart_of_text> \u017f"),
    ("accents", "Café crème brûlée à la française, naïve façade, jalapeño piñata"),
    ("accents_upper", "ÉCOLE ÇA ÜBER STRAßE ØRESUND ÅLAND"),
    ("german", "Größe Maße Fußball Straße"),
    ("combining", "e\u0301cole cafe\u0301 A\u030angstro\u0308m n\u0303"),
    ("combining_order", "a\u0323\u0302 a\u0302\u0323 q\u0307\u0323"),
    ("hangul_jamo", "\u1100\u1161\u11a8 \u1112\u1161\u11ab\u1100\u1173\u11af"),
    ("greek", "ΟΔΥΣΣΕΥΣ Ἀθῆναι αλφάβητο ΣΑΣ. Σ ΑΣ'Σ"),
    ("cyrillic", "Привет, мир! Москва ЁЛКА"),
    ("turkish", "İstanbul ISPARTA ılık"),
    ("cjk", "山水双挖 (landscape) 東京タワー 北京"),
    ("japanese", "ひらがな カタカナ 漢字 ｶﾀｶﾅ"),
    ("korean", "안녕하세요 세계"),
    ("arabic", "مرحبا بالعالم"),
    ("hebrew", "שלום עולם"),
    ("thai", "ภูเก็ต สวัสดี"),
    ("devanagari", "नमस्ते दुनिया"),
    ("emoji", "I love pizza 🍕🍕 and tacos 🌮!"),
    ("emoji_zwj", "family 👨\u200d👩\u200d👧 shrug 🤷🏽\u200d♀️ flag 🇺🇸 ❤️"),
    ("symbols", "∑∫√∞ ≈ ≠ ± → ← ★ ☆ © ® ™ € £ ¥ ¢ °C"),
    ("html_basic", "Tom &amp; Jerry &lt;3 &quot;quoted&quot; &#39;single&#39;"),
    ("html_numeric", "it&#x2019;s &#8220;smart&#8221; &#169; &#0; &#128; &#x9f; &#1114112; &#xD800;"),
    ("html_double", "fish &amp;amp; chips &amp;lt;b&amp;gt;"),
    ("html_nosemi", "&ampersand &copy2024 &notit; &nbsp;space&nbsp; AT&T"),
    ("html_upper", "&AMP; &EACUTE; &Eacute; &eacute; &NBSP;"),
    ("html_with_tag", "<b>bold</b> &amp; &eacute; stays after ftfy"),
    ("html_hellip", "Broken text&hellip; it&#x2019;s ﬂubberiﬁc!"),
    ("mojibake_cafe", "cafÃ© au lait"),
    ("mojibake_quotes", "â€œquotedâ€\x9d and â€˜singleâ€™"),
    ("mojibake_check", "âœ” No problems"),
    ("mojibake_uber", "Ã¼ber GrÃ¶ÃŸe"),
    ("mojibake_a_grave", "voilÃ  la crème"),
    ("mojibake_cyrillic", "Ð¿Ñ€Ð¸Ð²ÐµÑ‚ Ð¼Ð¸Ñ€"),
    ("mojibake_shrug", "&macr;\\_(ã\x83\x84)_/&macr;"),
    ("mojibake_mixed", "Ã©tÃ© in Paris; the rest is fine: café"),
    ("c1_controls", "price \x80 5 \x93quoted\x94"),
    ("ligatures", "ﬁne ﬂow ﬀ ﬃ ﬄ ǅ ĳ"),
    ("fullwidth", "ＬＯＵＤ　ＮＯＩＳＥＳ １２３ ！"),
    ("curly", "\u2018single\u2019 \u201cdouble\u201d \u201alow\u201b modifier\u02bcs"),
    ("whitespace", "  many    spaces\t\ttabs\n\nnewlines\r\nand\u00a0nbsp\u2003em  "),
    ("whitespace_only", " \t\n \u3000 "),
    ("empty", ""),
    ("zero_width", "zero\u200bwidth\u200cjoin\u200dtext\ufeffbom"),
    ("controls", "bell\x07 null\x00 esc\x1b[31mred\x1b[0m del\x7f"),
    ("line_seps", "one\u2028two\u2029three\x85four\rfive"),
    ("specials", "<start_of_text> hello <end_of_text>"),
    ("specials_upper", "<START_OF_TEXT>hi<End_Of_Text>"),
    ("specials_glued", "!<start_of_text> x<end_of_text>y"),
    ("url", "#hashtag @user http://example.com/a?b=c&d=e_f-g.png"),
    ("code", "def f(x): return x**2 # comment; a[i] += 1"),
    ("ohm_kelvin", "Ω ohm \u2126 Kelvin \u212a angstrom \u212b"),
    ("long_word", "a" * 300),
    ("long_word_mixed", "supercalifragilisticexpialidocious" * 8),
    ("longer_than_context", LONG),
    ("exactly_75", " ".join(["cat"] * 75)),
    ("exactly_76", " ".join(["cat"] * 76)),
    ("many_numbers", " ".join(str(i) for i in range(60))),
    ("invalid_ff", b"\xff\xfe abc"),
    ("invalid_truncated", b"caf\xc3"),
    ("invalid_surrogate", b"\xed\xa0\x80 surrogate"),
    ("invalid_overlong", b"\xc0\x80 \xe0\x80\x80 overlong"),
    ("invalid_too_big", b"\xf4\x90\x80\x80 big"),
    ("invalid_cont", b"ok \x80\x80 ok \xbf"),
    ("invalid_mixed", b"a\xe2\x82 b\xf0\x9f\x98 c\xe2\x82\xac"),
]

# Rows with another context length (truncation keeps the end token).
SHORT_CONTEXT = 10



def find_tokenizer_py():
    for p in sys.path:
        cand = os.path.join(p, "open_clip", "tokenizer.py")
        if os.path.exists(cand):
            return cand
    sys.exit("open_clip_torch is not installed in this Python (see the docstring)")


def main():
    spec = importlib.util.spec_from_file_location("oc_tokenizer", find_tokenizer_py())
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    tok = mod.SimpleTokenizer(bpe_path=MERGES)
    import ftfy
    import pyarrow.parquet as pq
    import regex

    try:
        from importlib.metadata import version
        oc_version = version("open_clip_torch")
    except Exception:
        oc_version = "unknown"

    captions = pq.read_table(CAPTIONS).to_pydict()["TEXT"]
    assert len(captions) == 1000

    def case(name, raw, inline):
        if isinstance(raw, bytes) or "\x00" in raw:
            if not isinstance(raw, bytes):
                raw = raw.encode("utf-8")
            text = raw.decode("utf-8", errors="replace")
            entry = {"name": name, "hex": raw.hex()}
        else:
            text = raw
            entry = {"name": name, "text": text}
        ids = tok.encode(text)
        row = tok([text])[0].tolist()
        while row and row[-1] == 0:
            row.pop()
        entry["clean"] = mod._clean_lower(text)
        entry["ids"] = ids
        entry["ctx"] = row
        if inline:
            entry["decoded"] = tok.decode(ids)
            short = tok([text], context_length=SHORT_CONTEXT)[0].tolist()
            while short and short[-1] == 0:
                short.pop()
            entry["ctx_short"] = short
        return entry

    cases = [case(n, t, True) for n, t in CASES]
    cases += [case("real_%03d" % i, t, False) for i, t in enumerate(captions)]
    with open(MERGES, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    doc = {
        "generator": "tests/text/make_tokenizer_expected.py",
        "open_clip_torch": oc_version,
        "ftfy": ftfy.__version__,
        "regex": regex.__version__,
        "merges_sha256": sha,
        "context_length": 77,
        "short_context_length": SHORT_CONTEXT,
        "vocab_size": len(tok.encoder),
        "cases": cases,
    }
    with open(OUT, "w", encoding="utf-8") as f:
        f.write("{\n")
        keys = [k for k in doc if k != "cases"]
        for k in keys:
            f.write("%s: %s,\n" % (json.dumps(k), json.dumps(doc[k])))
        f.write('"cases": [\n')
        for i, c in enumerate(cases):
            f.write(json.dumps(c, ensure_ascii=True, separators=(",", ":")))
            f.write(",\n" if i + 1 < len(cases) else "\n")
        f.write("]\n}\n")
    print("wrote %s: %d cases" % (OUT, len(cases)))


if __name__ == "__main__":
    main()
