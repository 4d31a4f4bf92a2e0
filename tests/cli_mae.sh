#!/usr/bin/env bash
# End to end: MAE trains a tiny ViT on the built-in images (recipes/quickstart-mae.yaml) and the
# reconstruction loss of the removed patches of held-out images falls well below the loss of
# predicting the mean patch (the best single patch), and below predicting each image's mean
# visible patch, which the evaluation logs beside it. The checkpoint has models_mae.py's names
# with the fixed sin-cos tables in it. (cli_mae_shards.sh holds the short runs.)
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

pass "mae learned: held-out loss $loss0 -> $loss1, mean patch $base, mean visible patch $vis"
