#!/usr/bin/env bash
# End to end: the quickstart job learns its task for real. Chance is 1/16 per token; after
# 300 steps the model must be far above it.
source "$(dirname "$0")/clilib.sh"

"$TS" train "$SRC/recipes/quickstart-seq.yaml" --set train.steps=300 --set train.eval_every=150 \
  --set train.ckpt_every=0 --set train.out_dir="$WORK/qs" --set train.threads=2 2> log.txt \
  || { cat log.txt; fail "quickstart training failed"; }
first=$(/usr/bin/python3 -c "
import json; rows=[json.loads(l) for l in open('$WORK/qs/metrics.jsonl')]
ev=[r for r in rows if r['kind']=='eval']; tr=[r for r in rows if r['kind']=='train']
print(ev[0]['step'], ev[0]['accuracy'], ev[-1]['step'], ev[-1]['accuracy'], tr[0]['loss'], tr[-1]['loss'])")
read -r s0 acc0 s1 acc1 loss0 loss1 <<< "$first"
echo "accuracy at step $s0: $acc0, at step $s1: $acc1; loss $loss0 -> $loss1"
/usr/bin/python3 -c "assert $s0 == 0 and $acc0 < 0.2, 'the first evaluation should be near chance'"
/usr/bin/python3 -c "assert $acc1 > 0.8, 'token accuracy after 300 steps is only $acc1 (chance 0.0625)'"
/usr/bin/python3 -c "assert $loss1 < 0.5 * $loss0, 'loss did not fall: $loss0 -> $loss1'"
test -f "$WORK/qs/checkpoints/step_00000300/model.safetensors" || fail "no final checkpoint"
test -f "$WORK/qs/recipe.yaml" || fail "no resolved recipe in the run folder"
grep -q "eval_batches: 8" "$WORK/qs/checkpoints/step_00000300/recipe.yaml" || fail "resolved recipe lacks defaults"

# the checkpoint loads into PyTorch modules named as open_clip names them, strictly
/usr/bin/python3 "$SRC/tests/parity/load_checkpoint.py" \
  "$WORK/qs/checkpoints/step_00000300/model.safetensors" 64 2 4 16 12 \
  || fail "PyTorch could not load the checkpoint"
pass "quickstart learned: token accuracy $acc0 -> $acc1"
