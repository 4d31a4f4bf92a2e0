#!/usr/bin/env bash
# Bad input from outside: each is a clear error naming the file, key or tensor, exit status 1
# (2 for usage errors), and nothing is overwritten.
source "$(dirname "$0")/clilib.sh"
tiny_recipe r.yaml

# usage errors: exit 2
expect 2 "usage: tessera" -- "$TS"
expect 2 "unknown verb 'trian'" -- "$TS" trian r.yaml
expect 2 "unknown option --frobnicate" -- "$TS" train r.yaml --frobnicate
expect 2 "usage: tessera train" -- "$TS" train
expect 2 "expected key=value" -- "$TS" train r.yaml --set optim.lr
expect 0 "--resume DIR" -- "$TS" train --help

# recipes: unknown key, wrong type, missing key, bad choice, bad YAML, missing file
cp r.yaml bad.yaml; sed -i 's/  log_every: 1/  log_evry: 1/' bad.yaml
expect 1 "bad.yaml:18: unknown key train.log_evry" -- "$TS" train bad.yaml
expect 1 "did you mean 'log_every'" -- "$TS" train bad.yaml
cp r.yaml bad.yaml; sed -i 's/  steps: 40/  steps: forty/' bad.yaml
expect 1 "bad.yaml:17: train.steps: expected an integer, got 'forty'" -- "$TS" train bad.yaml
cp r.yaml bad.yaml; sed -i '/  lr: 3.0e-3/d' bad.yaml
expect 1 "missing required key optim.lr" -- "$TS" train bad.yaml
cp r.yaml bad.yaml; sed -i 's/  task: sort/  task: shuffle/' bad.yaml
expect 1 "data.task: 'shuffle' is not one of: reverse, sort, copy" -- "$TS" train bad.yaml
expect 1 "train.bucket_mib must be in (0, 4096], got 0" -- \
  "$TS" train r.yaml --set train.bucket_mib=0
cp r.yaml bad.yaml; sed -i 's/  type: seq_transformer/  type: vit_huge/' bad.yaml
expect 1 "model.type 'vit_huge' is not a model tessera knows (valid: seq_transformer, text_mlm, mae, clip, vla)" -- "$TS" train bad.yaml
printf 'train:\n  steps: [1, 2\n' > bad.yaml
expect 1 "bad.yaml:3" -- "$TS" train bad.yaml
printf 'trian:\n  steps: 3\n' > bad.yaml
expect 1 "unknown key trian" -- "$TS" train bad.yaml
expect 1 "--set train.steps: train.steps: expected an integer, got 'lots'" -- "$TS" train r.yaml --set train.steps=lots
expect 1 "nonexistent.yaml: cannot open" -- "$TS" train nonexistent.yaml
if "$TS" version | grep -q "cuda)"; then # a build with the CUDA backend: this task has no device model
  expect 1 "train.device: cuda: this task has no model on the device" -- \
    "$TS" train r.yaml --set train.device=cuda
else
  expect 1 "train.device: cuda: this build has no CUDA backend" -- \
    "$TS" train r.yaml --set train.device=cuda
fi
expect 1 "train.device: 'tpu' is not one of: cpu, cuda" -- "$TS" train r.yaml --set train.device=tpu

# an unwritable run folder (a path under a regular file): error before any training
touch plainfile
expect 1 "run folder $WORK/plainfile/run" -- "$TS" train r.yaml --set train.out_dir="$WORK/plainfile/run"

# checkpoints: a truncated model file, a model of another width; nothing overwritten
"$TS" train r.yaml --quiet --set train.steps=10 || fail "training for the checkpoint tests failed"
ck="$WORK/run/checkpoints/step_00000010"
sha_before=$(cd "$WORK/run" && find . -type f ! -name metrics.jsonl | sort | xargs sha256sum | sha256sum)
cp -r "$WORK/run" "$WORK/trunc"
truncate -s 5000 "$WORK/trunc/checkpoints/step_00000010/model.safetensors"
sha_trunc=$(cd "$WORK/trunc" && find . -type f ! -name metrics.jsonl | sort | xargs sha256sum | sha256sum)
expect 1 "trunc/checkpoints/step_00000010/model.safetensors: tensor" -- "$TS" train r.yaml --resume "$WORK/trunc" --set train.steps=20
[ "$sha_trunc" = "$(cd "$WORK/trunc" && find . -type f ! -name metrics.jsonl | sort | xargs sha256sum | sha256sum)" ] \
  || fail "a failed resume changed the run folder"
printf 'garbage' > "$WORK/trunc/checkpoints/step_00000010/model.safetensors"
expect 1 "not a safetensors file" -- "$TS" train r.yaml --resume "$WORK/trunc"
expect 1 "shape of token_embedding.weight is (8, 32) in the file, (8, 64) in the model" -- \
  "$TS" train r.yaml --resume "$WORK/run" --set model.width=64 --set train.steps=20
expect 1 "missing: transformer.resblocks.2.ln_1.weight" -- \
  "$TS" train r.yaml --resume "$WORK/run" --set model.layers=3 --set train.steps=20
[ "$sha_before" = "$(cd "$WORK/run" && find . -type f ! -name metrics.jsonl | sort | xargs sha256sum | sha256sum)" ] \
  || fail "a failed resume changed the checkpoint it read"
expect 1 "no checkpoint here" -- "$TS" train r.yaml --resume "$WORK"
pass "every bad input gave a named error"
