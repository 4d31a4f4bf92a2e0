#!/usr/bin/env bash
# `tessera export hf`: a tiny CLIP model trained a few steps here, exported, and loaded by
# HuggingFace transformers' CLIPModel, whose embeddings must be open_clip's of the same
# checkpoint (tests/parity/clip_hf.py; names, shapes and the round trip only when the
# parity_hf_venv fixture could not install transformers). Then the verb's errors: usage (exit
# 2), a missing checkpoint, a model that is not CLIP and a CSWin image tower (exit 1, named).
# usage: parity_clip_hf.sh TESSERA SOURCE_DIR VENV_PYTHON [HF_SITE]
# HF_SITE: a folder with transformers (pip --target), put on the path of clip_hf.py only.
source "$(dirname "$0")/clilib.sh"
PY="$3"
HF_SITE="${4:-}"
"$PY" -c 'import open_clip' || fail "open_clip is not importable from $PY"

/usr/bin/python3 "$SRC/tests/parity/clip_data.py" "$WORK" 192 32
"$TS" tokenize train --corpus "$WORK/captions.txt" --vocab-size 600 --out "$WORK/bpe.txt.gz" \
  2> tok.log || { cat tok.log; fail "tokenize train"; }
cat > clip.yaml <<YAML
model:
  type: clip
  embed_dim: 48
  vision: {type: vit, image_size: 32, patch_size: 8, width: 64, layers: 2, heads: 4}
  text: {type: text, context_length: 16, width: 32, layers: 2, heads: 2}
data:
  train: $WORK/train-000000.tar
  tokenizer: $WORK/bpe.txt.gz
  batch_size: 32
  workers: 1
optim: {lr: 1.0e-3, warmup: 2}
train: {steps: 5, log_every: 5, threads: 2, out_dir: $WORK/run}
YAML
"$TS" train clip.yaml 2> train.log || { cat train.log; fail "training failed"; }

"$TS" export hf --checkpoint "$WORK/run" --out "$WORK/hf" > export.out 2> export.log \
  || { cat export.log; fail "export hf failed"; }
for f in model.safetensors config.json preprocessor_config.json; do
  test -f "$WORK/hf/$f" || fail "export hf wrote no $f"
done
PYTHONPATH="$HF_SITE" "$PY" "$SRC/tests/parity/clip_hf.py" --export "$WORK/hf" \
  --checkpoint "$WORK/run/checkpoints/step_00000005" --bpe "$WORK/bpe.txt.gz" \
  --shard "$WORK/train-000000.tar" --atol 1e-4 || fail "the export does not match (see above)"

# the verb's errors
expect() { # expect CODE PATTERN CMD...: the exit code and a pattern of stderr
  local code=$1 pat=$2 rc=0
  shift 2
  "$@" > out.txt 2> err.txt || rc=$?
  [ "$rc" = "$code" ] || { cat err.txt; fail "$* exited $rc, not $code"; }
  grep -q -- "$pat" err.txt || { cat err.txt; fail "$*: stderr lacks '$pat'"; }
}
"$TS" export --help | grep -q "export hf --checkpoint" || fail "export --help"
expect 2 "usage" "$TS" export
expect 2 "unknown format 'onnx'" "$TS" export onnx --checkpoint "$WORK/run" --out x
expect 2 "needs --checkpoint" "$TS" export hf --out "$WORK/x"
expect 2 "unknown option --bogus" "$TS" export hf --bogus
expect 1 "$WORK/nowhere" "$TS" export hf --checkpoint "$WORK/nowhere" --out "$WORK/x"
tiny_recipe seq.yaml
"$TS" train seq.yaml --set train.steps=0 --set train.out_dir="$WORK/seq" 2> seq.log \
  || { cat seq.log; fail "a step-0 seq_transformer run"; }
expect 1 "model.type is seq_transformer" "$TS" export hf --checkpoint "$WORK/seq" --out "$WORK/x"
"$TS" train clip.yaml --set train.steps=0 --set train.out_dir="$WORK/cswin" \
  --set 'model.vision={type: cswin, image_size: 32, embed_dim: 16, depth: [1, 1, 1, 1], num_heads: [2, 2, 2, 2], split_size: [1, 1, 1, 1]}' \
  2> cswin.log || { cat cswin.log; fail "a step-0 CLIP run with a CSWin tower"; }
expect 1 "the image tower is cswin" "$TS" export hf --checkpoint "$WORK/cswin" --out "$WORK/x"
grep -q "recipe.yaml" err.txt || fail "the CSWin error does not name the recipe file"
test ! -e "$WORK/x" || fail "a failed export left $WORK/x behind"
pass "export hf: transformers' CLIPModel gives open_clip's embeddings; errors named"
