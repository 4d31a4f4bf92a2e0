# cliplib.sh: a tiny CLIP run for the command-line tests of embed and eval (sourced after
# clilib.sh, not run). clip_run DIR WIDTH STEPS writes the synthetic shards and class files
# (tests/clip_synth.py) into data/ once, a BPE merges file learned from their captions, a
# recipe DIR.yaml (32-pixel images, WIDTH-wide towers) and trains it into DIR.
clip_data() {
  [ -f data/bpe.txt.gz ] && return 0
  /usr/bin/python3 "$SRC/tests/clip_synth.py" data --folders || fail "clip_synth.py failed"
  "$TS" tokenize train --corpus data/caps.txt --vocab-size 600 --out data/bpe.txt.gz 2> /dev/null \
    || fail "tokenize train failed"
}

clip_run() {
  local dir="$1" width="$2" steps="$3"
  clip_data
  cat > "$dir.yaml" <<YAML
model:
  type: clip
  embed_dim: 32
  vision: {type: vit, image_size: 32, patch_size: 8, width: $width, layers: 2, heads: 2}
  text: {type: text, context_length: 12, width: $width, layers: 2, heads: 2}
data:
  train: $WORK/data/train-{000000..000001}.tar
  val: $WORK/data/val-000000.tar
  tokenizer: $WORK/data/bpe.txt.gz
  batch_size: 32
  workers: 2
  shuffle_buffer: 100
eval:
  zeroshot:
    colour: {classes: $WORK/data/colours.txt, templates: $WORK/data/tpl.txt}
    shape: {classes: $WORK/data/shapes.txt, templates: $WORK/data/tpl.txt}
optim: {lr: 2.0e-3, warmup: 5, weight_decay: 0.1}
train: {steps: $steps, log_every: 10, eval_every: 0, ckpt_every: 0, out_dir: $WORK/$dir, threads: 2}
YAML
  "$TS" train "$dir.yaml" --quiet 2> "$dir.log" || { cat "$dir.log"; fail "training $dir failed"; }
}
