#!/usr/bin/env bash
# tessera data synth shapes: the files it writes, byte-identical output for the same options
# (another seed gives other files), the shards readable by `tessera data inspect`, a tokenizer
# that holds each caption word as one token, reruns into its own folder, refusal of a foreign
# folder, and usage errors with their exit codes.
source "$(dirname "$0")/clilib.sh"

small=(--train-shards 2 --val-shards 1 --per-shard 25 --size 48)

expect 0 "tessera data synth shapes --out DIR" -- "$TS" data --help
expect 2 "--out DIR is required" -- "$TS" data synth shapes
expect 2 "name a dataset" -- "$TS" data synth
expect 2 "unknown dataset 'circles'" -- "$TS" data synth circles --out x
expect 2 "unknown option --frob" -- "$TS" data synth shapes --out x --frob
expect 2 "--size must be an integer in 16..1024 (got 8)" -- "$TS" data synth shapes --out x --size 8
expect 2 "--seed must be a non-negative integer (got -1)" -- "$TS" data synth shapes --out x --seed -1
expect 2 "--per-shard needs a value" -- "$TS" data synth shapes --out x --per-shard
[ ! -e x ] || fail "a usage error created the output folder"

expect 0 "50 train and 25 val samples of 48 x 48 pixels (seed 3)" -- \
  "$TS" data synth shapes --out a "${small[@]}" --seed 3
grep -qF "wrote a/train-000001.tar (50/75 samples)" out.txt || fail "no progress per shard"
"$TS" data synth shapes --out b "${small[@]}" --seed 3 2> /dev/null > /dev/null
"$TS" data synth shapes --out c "${small[@]}" --seed 4 2> /dev/null > /dev/null

want="README.txt bpe.txt.gz captions-train.txt colours-templates.txt colours.txt manifest.json
positions-templates.txt positions.txt shapes-templates.txt shapes.txt sizes-templates.txt
sizes.txt train-000000.tar train-000001.tar val-000000.tar"
[ "$(cd a && ls | tr '\n' ' ')" = "$(echo $want) " ] || { ls a; fail "the files of the output"; }
(cd a && sha256sum *) > a.sum
(cd b && sha256sum *) > b.sum
(cd c && sha256sum *) > c.sum
cmp a.sum b.sum || { diff a.sum b.sum; fail "the same seed gave different files"; }
for f in train-000000.tar train-000001.tar val-000000.tar captions-train.txt; do
  [ "$(grep " $f\$" a.sum)" != "$(grep " $f\$" c.sum)" ] || fail "another seed gave the same $f"
done
pass "same seed: identical sha256 of all $(wc -l < a.sum) files; another seed: other shards"

expect 0 "samples:    25 (75 members)" -- "$TS" data inspect a/train-000001.tar
grep -qF "fields:     jpg 25, txt 25, json 25" out.txt || fail "fields of a shard"
grep -qF "first keys: train-0000025 train-0000026" out.txt || fail "keys continue across shards"
grep -qF "bad:        0 samples" out.txt || fail "bad samples in a shard"
tar tvf a/val-000000.tar > members.txt
grep -q "^-rw-r--r-- 0/0 .* 1970-01-01 00:00 val-0000000.jpg" members.txt ||
  { head -3 members.txt; fail "tar headers are not fixed (owner, time)"; }
grep -qF '"pattern": "train-{000000..000001}.tar"' a/manifest.json || fail "manifest pattern"
[ "$(cat a/shapes.txt | tr '\n' ,)" = "circle,square,triangle,star,cross," ] || fail "shapes.txt"
grep -qF "a photo of a small {}." a/shapes-templates.txt || fail "shape templates"
[ "$(wc -l < a/captions-train.txt)" -eq 50 ] || fail "captions-train.txt has one line a sample"

# Trained on enough captions (1000 here; 4000 by default), the merges hold every word of the
# captions as one token. No val shards is allowed.
expect 0 "1000 train and 0 val samples of 16 x 16 pixels" -- "$TS" data synth shapes --out e \
  --train-shards 1 --val-shards 0 --per-shard 1000 --size 16
grep -qF '"val": {"shards": 0, "per_shard": 1000, "samples": 0, "pattern": ""}' e/manifest.json ||
  fail "manifest of a set without val shards"
for caption in "a photo of a large purple star in the center" \
  "there is a small orange cross at the bottom right" \
  "a picture of a small triangle in white at the top left" \
  "a large red square at the bottom left" "a small green circle at the top right" \
  "a small yellow circle in blue"; do
  ids=$("$TS" tokenize encode --merges e/bpe.txt.gz "$caption")
  [ "$(echo $ids | wc -w)" -eq "$(echo $caption | wc -w)" ] ||
    fail "the words of '$caption' are split into pieces: $ids"
done
pass "tokenizer: one token a caption word"

# A rerun into its own folder overwrites it and drops the shards it no longer writes.
expect 0 "50 train and 50 val samples" -- "$TS" data synth shapes --out a --train-shards 1 \
  --val-shards 1 --per-shard 50 --size 48 --seed 3
[ ! -e a/train-000001.tar ] || fail "a stale shard was left"
ls a | grep -q '\.tmp$' && fail "a temporary file was left"
# Sample i does not depend on the shard layout: the captions are the same.
cmp a/captions-train.txt b/captions-train.txt || fail "captions changed with the shard layout"

# A folder holding other files is refused (exit 2, naming it) and left as it was; --force.
mkdir d && echo mine > d/notes.md
expect 2 "d is not empty and holds 1 file that synth does not write (e.g. 'notes.md')" -- \
  "$TS" data synth shapes --out d "${small[@]}"
[ "$(ls d)" = "notes.md" ] || fail "the refused folder was changed"
expect 0 "50 train and 25 val samples" -- "$TS" data synth shapes --out d "${small[@]}" --force
[ "$(cat d/notes.md)" = mine ] || fail "--force touched a foreign file"
expect 1 "cannot create d/notes.md" -- "$TS" data synth shapes --out d/notes.md/sub "${small[@]}"
