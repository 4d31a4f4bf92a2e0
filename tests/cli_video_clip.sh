# cli_video_clip.sh: CLIP on video clips paired with captions. WebDataset shards of KEY.mp4
# (H.264 made by the ffmpeg command line), KEY.txt and KEY.cls; the pipeline decodes 4 frames
# spread over each clip from memory, a ViT embeds every frame, a temporal embedding and mean
# pooling make one vector, and zero-shot colour classification of held-out clips rises far
# above chance. A clip that is not a video is skipped and counted.
source "$(dirname "$0")/clilib.sh"
command -v ffmpeg > /dev/null || fail "ffmpeg (the command line) is needed to make test clips"
colours=(red green blue yellow purple white)
printf '%s\n' "${colours[@]}" > colours.txt
printf 'a {} clip.\na video of something {}.\n' > templates.txt
make_shard() { # name first count
  mkdir -p "$1.d"
  for ((i = $2; i < $2 + $3; i++)); do
    local k c key
    k=$(( (i * 7 + i / 6) % 6 )); c=${colours[$k]}; key=$(printf '%06d' "$i")
    ffmpeg -v error -f lavfi -i "color=c=$c:s=32x32:d=0.5:r=8" \
      -vf "noise=alls=40:allf=t+u:all_seed=$i" -c:v libx264 -pix_fmt yuv420p -frames:v 4 \
      -y "$1.d/$key.mp4" || fail "ffmpeg"
    echo "a $c clip with noise" > "$1.d/$key.txt"
    echo "$k" > "$1.d/$key.cls"
  done
  (cd "$1.d" && tar cf "../$1.tar" --sort=name *)
}
make_shard train 0 96
make_shard val 1000 36
cat train.d/*.txt > captions.txt
"$TS" tokenize train --corpus captions.txt --vocab-size 540 --out bpe.txt.gz 2> /dev/null \
  || fail "tokenize train"

cat > video.yaml <<YAML
model:
  type: clip
  embed_dim: 32
  vision:
    type: video
    frames: 4
    pool: mean
    tower: {type: vit, image_size: 32, patch_size: 8, width: 32, layers: 1, heads: 2}
  text: {type: text, context_length: 12, width: 32, layers: 1, heads: 2}
data:
  train: $WORK/train.tar
  val: $WORK/val.tar
  tokenizer: $WORK/bpe.txt.gz
  batch_size: 24
  workers: 2
  shuffle_buffer: 48
eval:
  retrieval: false
  zeroshot:
    colour: {classes: $WORK/colours.txt, templates: $WORK/templates.txt, label: cls}
optim: {lr: 3.0e-3, warmup: 5, weight_decay: 0.0}
train: {steps: 100, log_every: 10, eval_every: 100, out_dir: $WORK/run, threads: 2}
YAML
"$TS" train video.yaml 2> train.log || { tail -20 train.log; fail "video CLIP training failed"; }
grep "eval step" train.log
grep -q "video clips of 4 frames, mean pooling" train.log || fail "the video tower is not described"
read -r acc0 acc < <(/usr/bin/python3 -c "
import json
ev = [json.loads(l) for l in open('run/metrics.jsonl') if '\"eval\"' in l]
print(ev[0]['zeroshot_colour_top1'], ev[-1]['zeroshot_colour_top1'])")
/usr/bin/python3 -c "import sys; sys.exit(0 if $acc > 0.65 and $acc >= $acc0 + 0.2 else 1)" \
  || fail "zero-shot colour of held-out clips $acc (at step 0 $acc0, chance 0.17)"
pass "video clips: held-out zero-shot colour accuracy $acc (at step 0 $acc0, chance 0.17)"

# a .mp4 that is not a video: skipped and counted
cp -r train.d bad.d && head -c 200 /dev/urandom > bad.d/000003.mp4
(cd bad.d && tar cf ../bad.tar --sort=name *)
"$TS" train video.yaml --set data.train="$WORK/bad.tar" --set train.steps=3 \
  --set train.out_dir="$WORK/bad" --set data.val="" 2> bad.log || { tail bad.log; fail "bad clip"; }
grep -q "skipped 1 bad training samples so far (1 corrupt image)" bad.log \
  || { grep -i "skip\|error" bad.log; fail "the broken clip was not skipped and counted"; }
pass "a broken clip is skipped and counted"
