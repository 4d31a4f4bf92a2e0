#!/usr/bin/env python3
"""tokenizer.py: tessera's CLIP tokenizer beside open_clip's, tokens/s on one core.

Writes the caption corpus (the 1000 real captions stored in tests/text/tokenizer_expected.json,
which come from ../shared/data/captions; or --corpus FILE, one caption a line), runs the C
program bench/tokenizer on it, then open_clip's Python tokenizer on the same captions in this
same run, and prints both with the ratio. Both encode into 77-long rows; tokens are the ids
before padding, without the start and end tokens. "cold" passes start from a fresh tokenizer
(empty word cache), "warm" passes reuse one whose cache holds the corpus's words; each number
is the best of --passes passes. Not a test: nothing is asserted.

open_clip is looked for in this Python, then in the venv /tmp/ocvenv (or --python PY) that
tests/text/make_tokenizer_expected.py describes; when it is not installed the table says so
and shows tessera alone.

Usage: bench/tokenizer.py [--build DIR] [--merges FILE] [--corpus FILE] [--passes N] [--python PY]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_MERGES = os.path.join(os.path.dirname(ROOT), "shared", "data", "clip",
                              "bpe_simple_vocab_16e6.txt.gz")

# Run inside the Python that has open_clip: times its tokenizer on one core and prints JSON.
OPEN_CLIP_TIMER = r"""
import importlib.util, json, os, sys, time
os.environ.setdefault("OMP_NUM_THREADS", "1")
merges, corpus, passes = sys.argv[1], sys.argv[2], int(sys.argv[3])
path = None
for p in sys.path:
    cand = os.path.join(p, "open_clip", "tokenizer.py")
    if os.path.exists(cand):
        path = cand
        break
if path is None:
    print(json.dumps({"error": "open_clip is not installed"}))
    sys.exit(0)
try:
    import torch
    torch.set_num_threads(1)
    spec = importlib.util.spec_from_file_location("oc_tokenizer", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
except Exception as e:
    print(json.dumps({"error": "open_clip's tokenizer does not import: %s" % e}))
    sys.exit(0)
texts = [l.rstrip("\r\n") for l in open(corpus, encoding="utf-8", errors="replace")]
# Cold: a fresh tokenizer (empty cache) each pass; warm: one tokenizer after its first pass.
cold, warm = [], []
for p in range(passes):
    tok = mod.SimpleTokenizer(bpe_path=merges)
    s = time.perf_counter()
    rows = tok(texts)
    cold.append(time.perf_counter() - s)
for p in range(passes):
    s = time.perf_counter()
    rows = tok(texts)
    warm.append(time.perf_counter() - s)
# Ids before padding (id 0 is "!", so count them from encode, not from the zeros).
ctx = rows.shape[1]
tokens = sum(min(len(tok.encode(t)) + 2, ctx) - 2 for t in texts)
ver = "unknown"
try:
    from importlib.metadata import version
    ver = version("open_clip_torch")
except Exception:
    pass
print(json.dumps({"tokens": tokens, "first": min(cold), "warm": min(warm),
                  "version": ver, "python": sys.executable}))
"""


def write_corpus(path):
    with open(os.path.join(ROOT, "tests", "text", "tokenizer_expected.json"), encoding="utf-8") as f:
        doc = json.load(f)
    n = 0
    with open(path, "w", encoding="utf-8") as out:
        for c in doc["cases"]:
            if "decoded" in c:  # the inline strings; the real captions have no "decoded"
                continue
            text = c.get("text")
            if text is None:
                text = bytes.fromhex(c["hex"]).decode("utf-8", errors="replace")
            out.write(text.replace("\n", " ").replace("\r", " ") + "\n")
            n += 1
    return n


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--merges", default=os.environ.get("TESSERA_BPE", DEFAULT_MERGES))
    ap.add_argument("--corpus", help="one caption a line (default: the 1000 real captions)")
    ap.add_argument("--passes", type=int, default=5)
    ap.add_argument("--python", help="a Python with open_clip (default: this one, then /tmp/ocvenv)")
    args = ap.parse_args()

    exe = os.path.join(args.build, "bench", "tokenizer")
    if not os.path.exists(exe):
        sys.exit("%s not built: cmake --build %s --target tokenizer" % (exe, args.build))
    if not os.path.exists(args.merges):
        sys.exit("merges file %s not found (--merges FILE or TESSERA_BPE)" % args.merges)
    tmp = tempfile.TemporaryDirectory()
    corpus = args.corpus
    if corpus is None:
        corpus = os.path.join(tmp.name, "captions.txt")
        write_corpus(corpus)

    # tessera, pinned to one core.
    cmd = [exe, "--merges", args.merges, "--corpus", corpus, "--passes", str(args.passes)]
    if os.path.exists("/usr/bin/taskset"):
        cmd = ["taskset", "-c", "0"] + cmd
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    res = dict(kv.split("=") for kv in out.strip().splitlines()[-1].split()[1:])
    ts_first, ts_warm = float(res["first_tok_s"]), float(res["warm_tok_s"])
    ntok, ncap = int(res["tokens"]), int(res["captions"])

    # open_clip, on the same corpus in the same run.
    pythons = [args.python] if args.python else [sys.executable, "/tmp/ocvenv/bin/python"]
    oc = None
    for py in pythons:
        if not py or not os.path.exists(py):
            continue
        r = subprocess.run(["taskset", "-c", "0", py, "-c", OPEN_CLIP_TIMER, args.merges, corpus,
                            str(args.passes)] if os.path.exists("/usr/bin/taskset") else
                           [py, "-c", OPEN_CLIP_TIMER, args.merges, corpus, str(args.passes)],
                           capture_output=True, text=True)
        try:
            oc = json.loads(r.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError):
            oc = {"error": (r.stderr.strip().splitlines() or ["no output"])[-1]}
        if "error" not in oc:
            break

    print("CLIP tokenizer, %d captions, %d tokens a pass, one core (%d passes)" % (ncap, ntok, args.passes))
    print("%-34s %16s %16s" % ("", "cold tok/s", "warm tok/s"))
    print("%-34s %16.0f %16.0f" % ("tessera", ts_first, ts_warm))
    if oc and "error" not in oc:
        if oc["tokens"] != ntok:
            print("WARNING: open_clip counts %d tokens, tessera %d" % (oc["tokens"], ntok))
        of, ow = oc["tokens"] / oc["first"], oc["tokens"] / oc["warm"]
        print("%-34s %16.0f %16.0f" % ("open_clip %s (Python)" % oc["version"], of, ow))
        print("%-34s %15.1fx %15.1fx" % ("tessera / open_clip", ts_first / of, ts_warm / ow))
    else:
        why = oc["error"] if oc else "no Python with open_clip found"
        print("open_clip: not measured (%s). Install it as tests/text/make_tokenizer_expected.py "
              "describes, or pass --python." % why)


if __name__ == "__main__":
    main()
