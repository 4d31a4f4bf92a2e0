#!/usr/bin/env bash
# End to end: MAE trains a tiny ViT on the built-in images (recipes/quickstart-mae.yaml) and the
# reconstruction loss of the removed patches of held-out images falls well below the loss of
# predicting the mean patch (the best single patch), and below predicting each image's mean
# visible patch, which the evaluation logs beside it. The checkpoint has models_mae.py's names
# with the fixed sin-cos tables in it; a mask ratio that keeps no patch is an error naming it.
source "$(dirname "$0")/clilib.sh"

"$TS" train "$SRC/recipes/quickstart-mae.yaml" --set train.out_dir="$WORK/mae" \
  --set train.threads=2 2> log.txt || { cat log.txt; fail "mae training failed"; }
read -r s0 loss0 s1 loss1 base vis <<< "$(/usr/bin/python3 -c "
import json; rows=[json.loads(l) for l in open('$WORK/mae/metrics.jsonl')]
ev=[r for r in rows if r['kind']=='eval']
print(ev[0]['step'], ev[0]['loss'], ev[-1]['step'], ev[-1]['loss'], ev[-1]['mean_patch_loss'],
      ev[-1]['visible_mean_loss'])")"
echo "held-out reconstruction loss at step $s0: $loss0, at step $s1: $loss1" \
  "(mean patch $base, mean visible patch $vis)"
/usr/bin/python3 -c "assert $s0 == 0 and $loss0 > $base, \
  'the untrained model should be worse than the mean patch'"
/usr/bin/python3 -c "assert $loss1 < 0.6 * $base, \
  'held-out loss $loss1 is not well below the mean-patch baseline $base'"
/usr/bin/python3 -c "assert $loss1 < $vis, \
  'held-out loss $loss1 does not beat predicting the mean visible patch ($vis)'"

# The checkpoint: models_mae.py's names, the fixed tables saved (class row zero, sin-cos after).
/usr/bin/python3 - "$WORK/mae/checkpoints/step_00000500/model.safetensors" <<'PY' \
  || fail "checkpoint names"
import json, math, struct, sys
f = open(sys.argv[1], "rb")
n = struct.unpack("<Q", f.read(8))[0]
h = json.loads(f.read(n))
data = f.read()
for k in ("cls_token", "pos_embed", "mask_token", "decoder_pos_embed", "patch_embed.proj.weight",
          "patch_embed.proj.bias", "blocks.3.attn.qkv.weight", "blocks.0.mlp.fc2.bias",
          "norm.weight", "decoder_embed.weight", "decoder_blocks.1.norm2.bias",
          "decoder_norm.weight", "decoder_pred.weight", "decoder_pred.bias"):
    assert k in h, k
assert h["pos_embed"]["shape"] == [1, 65, 64], h["pos_embed"]
assert h["decoder_pred.weight"]["shape"] == [48, 64], h["decoder_pred.weight"]
a, b = h["pos_embed"]["data_offsets"]
v = struct.unpack("<%df" % ((b - a) // 4), data[a:b])
assert all(x == 0.0 for x in v[:64]), "the class row of pos_embed is not zero"
# Row 2 is patch (0, 1): its first half encodes column 1, [sin(1 w_k), cos(1 w_k)] with w_0 = 1.
assert abs(v[128] - math.sin(1.0)) < 1e-6 and abs(v[128 + 16] - math.cos(1.0)) < 1e-6, v[128:160]
PY

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
pass "mae learned: held-out loss $loss0 -> $loss1, mean patch $base, mean visible patch $vis"

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
