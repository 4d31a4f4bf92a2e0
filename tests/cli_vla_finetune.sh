#!/usr/bin/env bash
# tessera finetune --from: a policy starts from a tessera CLIP checkpoint whose towers have the
# policy's sizes: the towers' tensors load by name (the same values in the policy's first
# checkpoint), the action head and observation projections start fresh, CLIP's logit scale is
# ignored, and the log lists all three. Frozen towers keep the CLIP weights through training.
# The data statistics never come from the checkpoint. Usage errors name what is missing.
source "$(dirname "$0")/clilib.sh"
PY=/usr/bin/python3

mkdir -p r2d
"$TS" data synth reach2d --out r2d/demos.hdf5 --demos 20 --seed 2 > /dev/null 2>&1 \
  || fail "synth reach2d"
# A CLIP model with the policy's towers, its initial weights written at step 0.
cat > clip.yaml <<YAML
model:
  type: clip
  embed_dim: 64
  vision: {type: vit, image_size: 64, patch_size: 8, width: 96, layers: 3, heads: 4}
  text: {type: text, context_length: 12, width: 64, layers: 2, heads: 2}
data:
  train: none-{000000..000001}.tar
  tokenizer: $WORK/r2d/demos-bpe.txt.gz
optim:
  lr: 1.0e-3
train:
  steps: 0
  out_dir: $WORK/clip
  seed: 7
YAML
"$TS" train clip.yaml 2> clip.log || { cat clip.log; fail "clip step 0"; }

common=(--set data.train="$WORK/r2d/demos.hdf5" --set data.tokenizer="$WORK/r2d/demos-bpe.txt.gz"
        --set train.threads=2 --set eval.rollout.task= --set eval.max_windows=16
        --set train.seed=11)
set +e
"$TS" finetune "$SRC/recipes/vla-diffusion-reach2d.yaml" "${common[@]}" > u.txt 2>&1; rc=$?
set -e
[ $rc -eq 2 ] && grep -q -- "--from CKPT is needed" u.txt || { cat u.txt; fail "missing --from"; }

"$TS" finetune "$SRC/recipes/vla-diffusion-reach2d.yaml" --from "$WORK/clip" "${common[@]}" \
  --set train.steps=0 --set train.out_dir="$WORK/ft0" 2> ft0.log || { cat ft0.log; fail "finetune"; }
grep -E "^finetune:|finetune: from" ft0.log | head -5
grep -q "finetune: from .*model.safetensors: [1-9][0-9]* tensors loaded" ft0.log || fail "no load line"
sed -n '/^finetune: loaded/,/^finetune: fresh/p' ft0.log | grep -x "visual.conv1.weight" > /dev/null \
  || fail "visual.conv1.weight not listed as loaded"
sed -n '/^finetune: fresh/,/^finetune: ignored/p' ft0.log | grep "^head\." > /dev/null \
  || fail "the head is not listed as fresh"
sed -n '/^finetune: ignored/,$p' ft0.log | grep -x "logit_scale" > /dev/null || fail "logit_scale not ignored"

$PY - "$WORK/clip" "$WORK/ft0" <<'PYX' || fail "weights"
import glob, json, struct, sys
def load(run):
    p = sorted(glob.glob(run + "/checkpoints/step_*/model.safetensors"))[-1]
    f = open(p, "rb"); n = struct.unpack("<Q", f.read(8))[0]; h = json.loads(f.read(n)); d = f.read()
    return {k: d[v["data_offsets"][0]:v["data_offsets"][1]] for k, v in h.items() if k != "__metadata__"}
a, b = load(sys.argv[1]), load(sys.argv[2])
shared = [k for k in a if k in b]
assert "visual.conv1.weight" in shared and "token_embedding.weight" in shared, shared[:5]
same = [k for k in shared if a[k] == b[k]]
print(f"{len(same)} of {len(shared)} shared tensors equal to the CLIP checkpoint's")
# every tower tensor of the same shape came from CLIP (the projections differ in width)
assert len(same) >= len(shared) - 2, [k for k in shared if a[k] != b[k]]
assert any(k.startswith("normalizer.") for k in b)
PYX

# Frozen towers: 30 steps later the image tower is still CLIP's, the head has moved.
"$TS" finetune "$SRC/recipes/vla-diffusion-reach2d.yaml" --from "$WORK/clip" "${common[@]}" \
  --set model.freeze_vision=true --set train.steps=30 --set train.out_dir="$WORK/ft30" \
  2> ft30.log || { tail ft30.log; fail "finetune frozen"; }
$PY - "$WORK/clip" "$WORK/ft0" "$WORK/ft30" <<'PYX' || fail "frozen"
import glob, json, struct, sys
def load(run):
    p = sorted(glob.glob(run + "/checkpoints/step_*/model.safetensors"))[-1]
    f = open(p, "rb"); n = struct.unpack("<Q", f.read(8))[0]; h = json.loads(f.read(n)); d = f.read()
    return {k: d[v["data_offsets"][0]:v["data_offsets"][1]] for k, v in h.items() if k != "__metadata__"}
clip, ft0, ft30 = (load(r) for r in sys.argv[1:])
vis = [k for k in ft30 if k.startswith("visual.") and k in clip and clip[k] == ft0[k]]
assert vis and all(ft30[k] == clip[k] for k in vis), "a frozen tower tensor changed"
moved = [k for k in ft30 if k.startswith("head.") and ft30[k] != ft0[k]]
assert moved, "the head did not train"
print(f"{len(vis)} frozen visual tensors unchanged, {len(moved)} head tensors trained")
PYX
pass "finetune"
