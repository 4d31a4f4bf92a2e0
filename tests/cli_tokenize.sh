#!/usr/bin/env bash
# tessera tokenize: train a merges file from a small corpus, encode and decode with it, the
# usage and runtime errors with their exit codes; with CLIP's merges file from the shared data
# folder (when it is there), the ids open_clip gives for a caption.
source "$(dirname "$0")/clilib.sh"

for i in $(seq 1 40); do
  echo "A photo of a cat sitting on the table number $i."
  echo "Two dogs are playing fetch in the park; it's a sunny day!"
  echo "Café crème &amp; croissants — the breakfast of champions"
done > corpus.txt

expect 0 "usage: tessera tokenize" -- "$TS" tokenize --help
expect 2 "usage: tessera tokenize" -- "$TS" tokenize
expect 2 "unknown command 'frob'" -- "$TS" tokenize frob
expect 2 "are required" -- "$TS" tokenize train --corpus corpus.txt
expect 2 "out of range" -- "$TS" tokenize train --corpus corpus.txt --vocab-size 100 --out m.txt.gz
expect 1 "missing.txt: cannot open corpus file" -- "$TS" tokenize train --corpus missing.txt --vocab-size 580 --out m.txt.gz
expect 0 "wrote m.txt.gz: 66 merges, vocabulary 580" -- "$TS" tokenize train --corpus corpus.txt --vocab-size 580 --out m.txt.gz
"$TS" tokenize train --corpus corpus.txt --vocab-size 580 --out m2.txt.gz > /dev/null
cmp m.txt.gz m2.txt.gz || fail "two trainings on the same corpus differ"
pass "training is deterministic"
zcat m.txt.gz | head -1 | grep -qx "#version: 0.2" || fail "header line"
pass "merges file header"

ids="$("$TS" tokenize encode --merges m.txt.gz "A photo of a CAT.")"
text="$("$TS" tokenize decode --merges m.txt.gz $ids)"
[ "$text" = "a photo of a cat . " ] || fail "round trip gave '$text' (ids $ids)"
pass "encode/decode round trip: $ids"
row="$("$TS" tokenize encode --merges m.txt.gz --context 6 "A photo of a cat on the table")"
set -- $row
[ $# -eq 6 ] && [ "$1" -eq 578 ] && [ "$6" -eq 579 ] || fail "context row '$row'"
pass "context row keeps the end token: $row"
expect 1 "token id 580 (position 1) is not in the vocabulary" -- "$TS" tokenize decode --merges m.txt.gz 5 580
expect 2 "non-negative integers" -- "$TS" tokenize decode --merges m.txt.gz -- -3
expect 1 "nope.gz: cannot open BPE merges file" -- "$TS" tokenize encode --merges nope.gz hi
echo "garbage" > bad.gz
expect 1 "bad.gz: not a BPE merges file" -- "$TS" tokenize encode --merges bad.gz hi
TESSERA_BPE="$WORK/none.gz" expect 1 "Pass --merges FILE or set TESSERA_BPE" -- "$TS" tokenize encode hi

clip="$SRC/../shared/data/clip/bpe_simple_vocab_16e6.txt.gz"
if [ -f "$clip" ]; then
  got="$(TESSERA_BPE="$clip" "$TS" tokenize encode "A photo of a cat")"
  [ "$got" = "320 1125 539 320 2368" ] || fail "CLIP ids '$got'"
  pass "CLIP merges: 'A photo of a cat' -> $got"
else
  echo "note: $clip not found: the CLIP-merges check is skipped (unit_tokenizer covers it)"
fi
