# cli_clip.sh: CLIP pretraining end to end on the synthetic shapes shards (the quickstart's model
# and data, a third of its steps; a text context of 16 tokens, not 32, which still holds every
# caption and zero-shot prompt whole: at most 13 and 15 tokens with start and end):
# it learns (zero-shot colour and shape accuracy and retrieval recall@1 on held-out shards far
# above chance), resumes bit for bit from a checkpoint with its data position, and skips and
# counts a corrupt sample (or stops on it, naming it, with data.on_bad: fail).
source "$(dirname "$0")/clilib.sh"

"$TS" data synth shapes --out data --val-shards 1 2> synth.log || { cat synth.log; fail "data synth"; }

cat > clip.yaml <<YAML
model:
  type: clip
  embed_dim: 128
  vision: {type: vit, image_size: 64, patch_size: 8, width: 128, layers: 4, heads: 4}
  text: {type: text, context_length: 16, width: 128, layers: 4, heads: 4}
objective:
  clip: {weight: 1.0}
data:
  train: $WORK/data/train-{000000..000007}.tar
  val: $WORK/data/val-000000.tar
  tokenizer: $WORK/data/bpe.txt.gz
  batch_size: 128
  workers: 2
  shuffle_buffer: 1000
eval:
  zeroshot:
    colour: {classes: $WORK/data/colours.txt, templates: $WORK/data/colours-templates.txt}
    shape: {classes: $WORK/data/shapes.txt, templates: $WORK/data/shapes-templates.txt}
optim: {lr: 1.0e-3, warmup: 50, weight_decay: 0.1, beta2: 0.98, eps: 1.0e-6}
train: {steps: 500, log_every: 10, eval_every: 500, ckpt_every: 0, out_dir: $WORK/run, threads: 2}
YAML

# ---- it learns ----
"$TS" train clip.yaml 2> train.log || { tail -20 train.log; fail "training failed"; }
grep "eval step" train.log
metric() { # name, step -> value
  /usr/bin/python3 -c "
import json, sys
for l in open('run/metrics.jsonl'):
    o = json.loads(l)
    if o['kind'] == 'eval' and o['step'] == $2: print(o['$1'])"
}
above() { /usr/bin/python3 -c "import sys; sys.exit(0 if $1 > $2 else 1)"; }
c0=$(metric zeroshot_colour_top1 0); c1=$(metric zeroshot_colour_top1 500)
s0=$(metric zeroshot_shape_top1 0); s1=$(metric zeroshot_shape_top1 500)
r1=$(metric image_to_text_R@1 500); t1=$(metric text_to_image_R@1 500)
# chance: colour 1/7, shape 1/5, recall@1 about 1/500 (some captions repeat)
above "$c1" 0.8 || fail "zero-shot colour accuracy $c1 (chance 0.14, at step 0 $c0)"
above "$s1" 0.45 || fail "zero-shot shape accuracy $s1 (chance 0.2, at step 0 $s0)"
above "$r1" 0.1 || fail "image-to-text recall@1 $r1 (chance about 0.002)"
above "$t1" 0.1 || fail "text-to-image recall@1 $t1 (chance about 0.002)"
pass "learned: zero-shot colour $c1 (from $c0), shape $s1 (from $s0), recall@1 $r1 / $t1"

# ---- resume: the data stream continues where the checkpoint left it ----
# A smaller model and a short run: 40 steps with a checkpoint at 20, then the second half again
# from that checkpoint; the shards hold 4000 samples, so the stream crosses no epoch end here,
# and the shuffle buffer's state must come back from the saved position.
small=(--set model.vision.width=32 --set model.vision.layers=1 --set model.text.width=32
       --set model.text.layers=1 --set model.vision.heads=2 --set model.text.heads=2
       --set model.embed_dim=32 --set train.steps=40 --set train.ckpt_every=20
       --set train.eval_every=0 --set train.log_every=1 --set data.batch_size=32)
"$TS" train clip.yaml "${small[@]}" --set train.out_dir="$WORK/r1" 2> r1.log \
  || { tail r1.log; fail "the short run failed"; }
grep -q '"data_stream"' r1/checkpoints/step_00000020/state.json || fail "no data_stream saved"
mkdir r2 && cp -r r1/checkpoints r2/ && rm -rf r2/checkpoints/step_00000040
echo step_00000020 > r2/checkpoints/latest
"$TS" train clip.yaml "${small[@]}" --resume r2 --set train.out_dir="$WORK/r2" 2> resume.log \
  || { tail resume.log; fail "resume failed"; }
losses() { /usr/bin/python3 -c "
import json
for l in open('$1'):
    o = json.loads(l)
    if o['kind'] == 'train' and o['step'] > 20: print(o['step'], repr(o['loss']))"; }
losses r1/metrics.jsonl > a.txt
losses r2/metrics.jsonl > b.txt
[ -s a.txt ] && cmp a.txt b.txt || { paste a.txt b.txt; fail "resumed losses differ"; }
pass "resumed at step 20: $(wc -l < a.txt) logged losses identical to the uninterrupted run"

# ---- a corrupt sample in a shard: skipped and counted, or the run stops naming it ----
/usr/bin/python3 - "$WORK/data/train-000000.tar" "$WORK/bad.tar" <<'PY'
import io, sys, tarfile
src, dst = sys.argv[1:]
with tarfile.open(src) as t, tarfile.open(dst, "w") as out:
    for m in t.getmembers():
        data = t.extractfile(m).read()
        if m.name.endswith(".jpg") and not hasattr(sys, "done"):
            data, sys.done = data[: len(data) // 3], True   # a truncated JPEG
        m.size = len(data)
        out.addfile(m, io.BytesIO(data))
PY
"$TS" train clip.yaml --set data.train="$WORK/bad.tar" --set train.steps=5 --set train.log_every=1 \
  --set train.out_dir="$WORK/run3" --set train.ckpt_every=0 --set data.val="" 2> bad.log \
  || { tail bad.log; fail "a corrupt sample stopped a skip run"; }
grep -q "skipped 1 bad training samples so far (1 corrupt image)" bad.log \
  || { grep -i skip bad.log; fail "the skipped sample was not logged"; }
grep -q '"bad_samples": 1' run3/metrics.jsonl || fail "bad_samples not in the metrics"
pass "a truncated JPEG is skipped and counted"
"$TS" train clip.yaml --set data.train="$WORK/bad.tar" --set train.steps=5 --set data.on_bad=fail \
  --set train.out_dir="$WORK/run4" --set data.val="" 2> fail.log && fail "on_bad fail did not stop"
grep -q "bad.tar" fail.log || { cat fail.log; fail "the error does not name the shard"; }
pass "with data.on_bad: fail the run stops: $(grep error fail.log | head -1)"

# ---- train.device: cuda: what the device model is not is refused by name, before anything is
# written; without a GPU a build with CUDA says so (bench/gpu_check.sh trains there) ----
dev=(--set train.device=cuda --set train.out_dir="$WORK/dev" --set train.steps=5)
if "$TS" version | grep -q "cuda)"; then
  expect 1 "train.device: cuda: model.vision must have act gelu" -- \
    "$TS" train clip.yaml "${dev[@]}" --set model.vision.act=quick_gelu
  expect 1 "train.device: cuda: model.text must have act gelu, pooling argmax" -- \
    "$TS" train clip.yaml "${dev[@]}" --set model.text.pooling=eos
  expect 1 "train.device: cuda: the objective must be objective.clip alone" -- \
    "$TS" train clip.yaml "${dev[@]}" --set objective.clip.weight=0.5
  expect 1 "train.device: cuda: train.accum must be 1" -- \
    "$TS" train clip.yaml "${dev[@]}" --set train.accum=2
  # --check says the same without a device, and takes what the device model takes
  expect 1 "train.device: cuda: model.vision must have act gelu" -- \
    "$TS" train --check clip.yaml "${dev[@]}" --set model.vision.act=quick_gelu
  expect 1 "train.device: cuda: optim.clip_grad_norm must be 0" -- \
    "$TS" train --check clip.yaml "${dev[@]}" --set optim.clip_grad_norm=1
  expect 0 "the device model takes it (train.device: cuda)" -- \
    "$TS" train --check clip.yaml "${dev[@]}"
  if ! nvidia-smi -L > /dev/null 2>&1; then
    expect 1 "train.device: cuda: no usable GPU" -- "$TS" train clip.yaml "${dev[@]}"
  fi
  [ ! -e dev ] || fail "a refused device run wrote its run folder"
  pass "train.device: cuda refuses what its model is not, by name"
else
  expect 1 "train.device: cuda: this build has no CUDA backend" -- \
    "$TS" train clip.yaml "${dev[@]}"
  pass "train.device: cuda in a build without CUDA is refused"
fi
