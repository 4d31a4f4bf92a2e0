#!/usr/bin/env bash
# End to end: the masked-language objective trains a tiny bidirectional text encoder on the
# built-in corpus (recipes/quickstart-mlm.yaml, tokenizer trained at startup) and the
# masked-token accuracy rises far above the unigram baseline, which the evaluation logs beside
# it (the accuracy of always guessing the most frequent masked word). A vocabulary size that
# does not match the tokenizer is an error naming both numbers.
source "$(dirname "$0")/clilib.sh"
# Under the sanitizers (TS_SANITIZED=1) the run is 60 steps, which only have to lower the loss:
# a memory error or undefined behaviour shows in any step, and the release build's 400 steps
# hold the learning bar.
if [ -n "${TS_SANITIZED:-}" ]; then STEPS=60; else STEPS=400; fi

"$TS" train "$SRC/recipes/quickstart-mlm.yaml" --set train.steps=$STEPS \
  --set train.eval_every=$STEPS --set train.ckpt_every=0 --set train.out_dir="$WORK/mlm" \
  --set train.threads=2 2> log.txt \
  || { cat log.txt; fail "text_mlm training failed"; }
read -r s0 acc0 s1 acc1 base loss0 loss1 <<< "$(/usr/bin/python3 -c "
import json; rows=[json.loads(l) for l in open('$WORK/mlm/metrics.jsonl')]
ev=[r for r in rows if r['kind']=='eval']; tr=[r for r in rows if r['kind']=='train']
print(ev[0]['step'], ev[0]['masked_accuracy'], ev[-1]['step'], ev[-1]['masked_accuracy'],
      ev[-1]['unigram_baseline'], tr[0]['loss'], tr[-1]['loss'])")"
echo "masked-token accuracy at step $s0: $acc0, at step $s1: $acc1 (unigram baseline $base); loss $loss0 -> $loss1"
/usr/bin/python3 -c "assert $s0 == 0 and $acc0 < 0.05, 'the first evaluation should be near zero'"
/usr/bin/python3 -c "assert 0.03 < $base < 0.2, 'unigram baseline $base is not what the corpus gives'"
if [ -z "${TS_SANITIZED:-}" ]; then
  /usr/bin/python3 -c "assert $acc1 > 0.5 and $acc1 > 4 * $base, \
    'masked-token accuracy $acc1 is not far above the unigram baseline $base'"
  /usr/bin/python3 -c "assert $loss1 < 0.3 * $loss0, 'loss did not fall: $loss0 -> $loss1'"
else
  /usr/bin/python3 -c "assert $loss1 < 0.8 * $loss0, 'loss did not fall: $loss0 -> $loss1'"
fi
grep -q "BPE tokenizer trained" log.txt || fail "the tokenizer was not trained at startup"

# The checkpoint has open_clip's text names (no text_projection: out_dim 0) and the MLM head.
/usr/bin/python3 - "$WORK/mlm/checkpoints/$(printf step_%08d $STEPS)/model.safetensors" <<'PY' \
  || fail "checkpoint names"
import json, struct, sys
f = open(sys.argv[1], "rb")
names = set(json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))) - {"__metadata__"}
for n in ("token_embedding.weight", "positional_embedding", "ln_final.weight",
          "transformer.resblocks.1.attn.in_proj_weight", "transformer.resblocks.0.mlp.c_proj.bias",
          "mlm_head.dense.weight", "mlm_head.layer_norm.bias", "mlm_head.bias"):
    assert n in names, n
assert "text_projection" not in names and "mlm_head.decoder.weight" not in names, names
PY

# A vocabulary size that is not the tokenizer's (+1 <mask>): exit 1, both numbers named.
vocab=$(sed -n 's/.*vocabulary \([0-9]*\) (+1 <mask>).*/\1/p' log.txt)
test -n "$vocab" || fail "the log does not give the tokenizer's vocabulary"
if "$TS" train "$SRC/recipes/quickstart-mlm.yaml" --set model.text.vocab_size=1000 \
  --set train.out_dir="$WORK/bad" --set train.threads=2 2> bad.txt; then
  fail "a wrong vocab_size was accepted"
else
  rc=$?
fi
test "$rc" = 1 || fail "exit status $rc for a wrong vocab_size"
grep "vocab_size" bad.txt | grep -q "1000" || { cat bad.txt; fail "the error does not name 1000"; }
grep "vocab_size" bad.txt | grep -q "$((vocab + 1))" || { cat bad.txt; fail "the error does not name $((vocab + 1))"; }
test ! -e "$WORK/bad/checkpoints" || fail "a failed start wrote checkpoints"
# The exact number is accepted.
"$TS" train "$SRC/recipes/quickstart-mlm.yaml" --set model.text.vocab_size=$((vocab + 1)) \
  --set train.steps=2 --set train.eval_every=0 --set train.out_dir="$WORK/ok" \
  --set train.threads=2 2> ok.txt || { cat ok.txt; fail "the matching vocab_size was refused"; }
pass "text_mlm, $STEPS steps: masked-token accuracy $acc0 -> $acc1, unigram baseline $base"
