#!/usr/bin/env bash
# MAE through the command line, short runs (the sanitizer pass runs these; cli_mae.sh, the
# 500-step learning test, runs once without the sanitizers): a mask ratio that keeps no patch is
# an error naming it; images from WebDataset shards go through MAE's augmentation in the
# pipeline, the held-out loss falls, and the stream position is saved in the checkpoint.
source "$(dirname "$0")/clilib.sh"

# A mask ratio that keeps no patch: exit 1, the key named, nothing written.
if "$TS" train "$SRC/recipes/quickstart-mae.yaml" --set model.mask_ratio=0.999 \
  --set train.out_dir="$WORK/bad" --set train.threads=2 2> bad.txt; then
  fail "a mask ratio that keeps no patch was accepted"
else
  rc=$?
fi
test "$rc" = 1 || { cat bad.txt; fail "exit status $rc for mask_ratio 0.999"; }
grep -q "mask_ratio" bad.txt || { cat bad.txt; fail "the error does not name mask_ratio"; }
test ! -e "$WORK/bad/checkpoints" || fail "a failed start wrote checkpoints"

# Images from WebDataset shards (data.images: shards): MAE's augmentation through the pipeline,
# held-out evaluation on the val shards, the stream position in the checkpoint.
"$TS" data synth shapes --out shapes --size 32 --train-shards 2 --val-shards 1 --per-shard 128 \
  2> synth.txt || { cat synth.txt; fail "data synth"; }
"$TS" train "$SRC/recipes/quickstart-mae.yaml" --set data.images=shards \
  --set "data.train=$WORK/shapes/train-{000000..000001}.tar" --set "data.val=$WORK/shapes/val-000000.tar" \
  --set train.steps=40 --set train.eval_every=40 --set train.out_dir="$WORK/shards" \
  --set train.threads=2 2> shards.txt || { tail shards.txt; fail "mae on shards failed"; }
/usr/bin/python3 - "$WORK/shards" <<'PY' || fail "mae on shards: see above"
import json, sys
ev = [json.loads(l) for l in open(sys.argv[1] + "/metrics.jsonl") if '"eval"' in l]
assert [e["step"] for e in ev] == [0, 40], ev
assert ev[1]["removed_patches"] > 0 and ev[1]["loss"] < ev[0]["loss"], ev
state = json.load(open(sys.argv[1] + "/checkpoints/step_00000040/state.json"))
assert state["data_stream"][1] > 0, state
PY
pass "mae on shards: held-out loss falls, the stream position is saved"
