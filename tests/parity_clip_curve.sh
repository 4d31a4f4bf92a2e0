#!/usr/bin/env bash
# Loss-curve parity of the CLIP task with open_clip's own training loop (tests/parity/clip_curve.py):
# a tiny CLIP model (ViT 32 px patch 8 width 64, text context 16 width 64, 2 layers each), a
# shard of 1600 PNG image-caption pairs and a BPE trained on its captions, all made here. tessera
# writes its initial weights (train.steps=0), trains 50 steps from them with open_clip's AdamW
# settings (betas 0.9 / 0.98, eps 1e-6, weight decay 0.2, cosine with warmup) logging every step,
# and open_clip trains the same weights on the same batches; the losses must agree within 1e-3
# relative. A second, 8-step pair of runs starts logit_scale above ln 100, so the first step's
# clamp to [0, ln 100] is on the path of every later loss.
# usage: parity_clip_curve.sh TESSERA SOURCE_DIR VENV_PYTHON
source "$(dirname "$0")/clilib.sh"
PY="$3"
"$PY" -c 'import open_clip, open_clip_train' \
  || fail "open_clip is not importable from $PY (the parity_openclip_venv fixture installs it)"

/usr/bin/python3 "$SRC/tests/parity/clip_data.py" "$WORK" 1600 32
"$TS" tokenize train --corpus "$WORK/captions.txt" --vocab-size 600 --out "$WORK/bpe.txt.gz" \
  2> tok.log || { cat tok.log; fail "tokenize train"; }
cat > clip.yaml <<YAML
model:
  type: clip
  embed_dim: 64
  vision: {type: vit, image_size: 32, patch_size: 8, width: 64, layers: 2, heads: 2}
  text: {type: text, context_length: 16, width: 64, layers: 2, heads: 2}
objective:
  clip: {weight: 1.0}
data:
  train: $WORK/train-000000.tar
  tokenizer: $WORK/bpe.txt.gz
  batch_size: 32
  workers: 2
  shuffle_buffer: 0
  scale: [1.0, 1.0]
  hflip: 0.0
optim: {lr: 1.0e-3, warmup: 10, weight_decay: 0.2, beta1: 0.9, beta2: 0.98, eps: 1.0e-6}
train: {steps: 50, log_every: 1, threads: 2, seed: 0, out_dir: $WORK/run}
YAML

"$TS" train clip.yaml --set train.steps=0 --set train.out_dir="$WORK/init" 2> init.log \
  || { cat init.log; fail "train.steps=0 did not write the initial weights"; }
INIT="$WORK/init/checkpoints/step_00000000/model.safetensors"
test -f "$INIT" || fail "no step-0 checkpoint at $INIT"

"$TS" train clip.yaml --set model.init_from="$INIT" 2> train.log \
  || { cat train.log; fail "tessera training failed"; }
"$PY" "$SRC/tests/parity/clip_curve.py" --init "$INIT" --run "$WORK/run" --log train.log \
  --shard "$WORK/train-000000.tar" --bpe "$WORK/bpe.txt.gz" --steps 50 --rtol 1e-3 \
  || fail "the loss curves of tessera and open_clip differ (see above)"

# The clamp: the same weights with logit_scale 4.7 (> ln 100 = 4.6052), 8 steps.
/usr/bin/python3 - "$INIT" "$WORK/hot.safetensors" 4.7 <<'PY'
import json, struct, sys
src, dst, value = sys.argv[1], sys.argv[2], float(sys.argv[3])
raw = open(src, "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
e = json.loads(raw[8:8 + n])["logit_scale"]
assert e["dtype"] == "F32" and e["shape"] == [], e
at = 8 + n + e["data_offsets"][0]
open(dst, "wb").write(raw[:at] + struct.pack("<f", value) + raw[at + 4:])
PY
"$TS" train clip.yaml --set model.init_from="$WORK/hot.safetensors" --set train.steps=8 \
  --set optim.warmup=2 --set train.out_dir="$WORK/hot" 2> hot.log \
  || { cat hot.log; fail "tessera training from logit_scale 4.7 failed"; }
"$PY" "$SRC/tests/parity/clip_curve.py" --init "$WORK/hot.safetensors" --run "$WORK/hot" \
  --log hot.log --shard "$WORK/train-000000.tar" --bpe "$WORK/bpe.txt.gz" --steps 8 --rtol 1e-3 \
  || fail "the loss curves part when logit_scale starts above the clamp"
pass "tessera's CLIP loss curve is open_clip's (50 steps, and 8 through the logit_scale clamp)"
