#!/usr/bin/env bash
# `tessera embed` and `tessera eval` on a tiny CLIP run trained here (synthetic shapes):
# usage errors exit 2; eval retrieval and zero-shot print the numbers of the training-time
# evaluation (one code path); embed writes HDF5 that h5py reads (shape, unit rows, ids in
# order, the same embeddings from shards, a folder, another batch size, and retrieval from them
# equal to the training-time recall), .npy with its ids; a folder with corrupt images finishes
# with exactly the good ones and lists the bad; a checkpoint of another width is refused by
# parameter name.
source "$(dirname "$0")/clilib.sh"
source "$SRC/tests/cliplib.sh"
PY=/usr/bin/python3

# usage: exit 2 (nothing is read)
expect 0 "usage: tessera embed" -- "$TS" embed --help
expect 0 "usage: tessera eval zeroshot" -- "$TS" eval --help
expect 0 "--per-class" -- "$TS" eval zeroshot --help
expect 2 "usage: tessera embed" -- "$TS" embed
expect 2 "--out is required" -- "$TS" embed --checkpoint run --texts t.txt
expect 2 "give one of --images, --texts and --trajectories" -- "$TS" embed --checkpoint run --out o.h5
expect 2 "give one of --images, --texts and --trajectories" -- "$TS" embed --checkpoint run --out o.h5 --images d --texts t
expect 2 "--format is h5 or npy, not 'csv'" -- "$TS" embed --checkpoint run --texts t --out o --format csv
expect 2 "--batch expects an integer" -- "$TS" embed --checkpoint run --texts t --out o --batch 0
expect 2 "unknown option --frob" -- "$TS" embed --checkpoint run --texts t --out o --frob
expect 2 "--checkpoint needs a value" -- "$TS" embed --texts t --out o --checkpoint
expect 2 "usage: tessera eval" -- "$TS" eval
expect 2 "unknown evaluation 'linear'" -- "$TS" eval linear --checkpoint run
expect 2 "--data is required" -- "$TS" eval zeroshot --checkpoint run
expect 2 "--classes FILE is required" -- "$TS" eval zeroshot --checkpoint run --data v.tar
expect 2 "unknown option --per-class" -- "$TS" eval retrieval --checkpoint run --data v.tar --per-class
expect 1 "nonexistent: no such checkpoint" -- "$TS" embed --checkpoint nonexistent --texts t --out o.h5

clip_run run 32 40
M=run/checkpoints/step_00000040
trained() { $PY -c "
import json; rows=[json.loads(l) for l in open('run/metrics.jsonl')]
print('%.6f' % [r for r in rows if r['kind']=='eval'][-1]['$1'])"; }

# eval: the numbers of the training-time evaluation at the last step
expect 1 "no such shard" -- "$TS" eval retrieval --checkpoint run --data 'data/nope-{000000..000001}.tar'
expect 2 "retrieval needs captions" -- "$TS" eval retrieval --checkpoint run --data data/classes
"$TS" eval retrieval --checkpoint run --data data/val-000000.tar --quiet > ret.txt
cat ret.txt
for k in image_to_text_R@1 image_to_text_R@5 text_to_image_R@1 text_to_image_R@10; do
  grep -qx "$k: $(trained "$k")" ret.txt || fail "eval retrieval $k differs from training's $(trained "$k")"
done
"$TS" eval zeroshot --checkpoint "$M" --data data/val-000000.tar --classes data/colours.txt \
  --templates data/tpl.txt --label colour --quiet > zs.txt
cat zs.txt
grep -qx "top1: $(trained zeroshot_colour_top1)" zs.txt || fail "zero-shot colour differs from training's"
"$TS" eval zeroshot --checkpoint run --data data/val-000000.tar --classes data/colours.txt \
  --templates data/tpl.txt --quiet > zs_cls.txt  # the .cls member is the colour too
grep -qx "top1: $(trained zeroshot_colour_top1)" zs_cls.txt || fail "zero-shot by .cls differs"
$PY -c "assert $(trained zeroshot_colour_top1) > 0.5, 'colour not learned (chance 0.25)'"
"$TS" eval zeroshot --checkpoint run --data data/classes --templates data/tpl.txt --per-class \
  --batch 5 --workers 1 --quiet > zsf.txt
cat zsf.txt
grep -q "^zeroshot: data/classes: 24 samples (24 labelled, 0 skipped), 4 classes, 2 templates" zsf.txt \
  || fail "zero-shot on class folders"
for c in blue green red yellow; do grep -q "^  $c: .* (6 samples)" zsf.txt || fail "per-class $c"; done
expect 1 "shapes.txt: 3 class names, but data/classes has 4 class folders" -- \
  "$TS" eval zeroshot --checkpoint run --data data/classes --classes data/shapes.txt
pass "eval prints the training-time numbers"

# embed: the same embeddings from shards, a folder of the same images and another batch size
mkdir -p flat && tar -xf data/val-000000.tar -C flat --wildcards '*.jpg'
"$TS" embed --checkpoint run --images data/val-000000.tar --out shards.h5 --quiet
"$TS" embed --checkpoint "$M" --images flat --out flat.h5 --batch 5 --workers 1 2> embed.log
grep -q "96 images embedded (96 x 32, normalised)" embed.log || { cat embed.log; fail "summary"; }
"$TS" embed --checkpoint "$M/model.safetensors" --images flat --out raw.h5 --raw --quiet
"$TS" embed --checkpoint run --texts data/val_caps.txt --out texts.h5 --quiet
"$TS" embed --checkpoint run --texts data/val_caps.txt --out texts.npy --batch 7 --quiet
$PY - "$M" <<'PY'
import sys, tarfile, h5py, numpy as np
ck = sys.argv[1]
s, f, raw, t = (h5py.File(n) for n in ("shards.h5", "flat.h5", "raw.h5", "texts.h5"))
keys = [m.name[:-4] for m in tarfile.open("data/val-000000.tar") if m.name.endswith(".jpg")]
E = s["embeddings"][:]
assert E.shape == (96, 32) and E.dtype == np.float32, E.shape
assert np.abs(np.linalg.norm(E, axis=1) - 1).max() < 1e-5
assert [x.decode() for x in s["ids"][:]] == ["data/val-000000.tar:" + k for k in keys]
assert [x.decode() for x in f["ids"][:]] == ["flat/%s.jpg" % k for k in sorted(keys)]
order = np.argsort(keys)
assert np.abs(f["embeddings"][:] - E[order]).max() < 1e-5, "folder and shards differ"
R = raw["embeddings"][:]
assert not bool(raw.attrs["normalized"]) and bool(s.attrs["normalized"])
assert np.abs(np.linalg.norm(R, axis=1) - 1).max() > 1e-3, "--raw rows are unit length"
assert np.abs(R / np.linalg.norm(R, axis=1, keepdims=True) - E[order]).max() < 1e-5
assert s.attrs["checkpoint"].endswith(ck + "/model.safetensors"), s.attrs["checkpoint"]
assert s.attrs["recipe"] == open(ck + "/recipe.yaml").read()
assert s.attrs["model"].startswith("clip, embed_dim 32; image tower ViT 32x32"), s.attrs["model"]
assert s.attrs["skipped_count"] == 0 and s["skipped"].shape == (0,)
caps = [l.strip() for l in open("data/val_caps.txt") if l.strip()]
T = t["embeddings"][:]
assert [x.decode() for x in t["ids"][:]] == caps and T.shape == (96, 32)
Tn = np.load("texts.npy")
assert Tn.shape == (96, 32) and np.abs(Tn - T).max() < 1e-5, "npy or batch 7 differs"
assert open("texts.ids.txt").read().splitlines() == caps
# recall@1 from the written embeddings is the training-time evaluation's. The captions repeat
# (12 distinct of 96), so a query meets exact ties, which the training-time embeddings (other
# batches, other rows of the products: rounding apart by ~1e-7) may break either way: training's
# recall must lie between the recall with every score within 1e-5 of the true pair's counted as
# beating it and the recall with none counted
def r1(q, k, ties_beat):
    d = q.astype(np.float64) @ k.astype(np.float64).T
    d -= np.diag(d)[:, None]             # each score less the true pair's
    np.fill_diagonal(d, -np.inf)
    beats = d > -1e-5 if ties_beat else d > 1e-5
    return np.mean(~beats.any(axis=1))
open("r1.txt", "w").write("%.6f %.6f %.6f %.6f\n" % (r1(E, T, 1), r1(E, T, 0), r1(T, E, 1),
                                                    r1(T, E, 0)))
print("embed: shards = folder = batch 5 (< 1e-5), unit rows, ids in order, raw, npy")
PY
read -r i2t_lo i2t_hi t2i_lo t2i_hi < r1.txt
$PY -c "
i2t, t2i = $(trained image_to_text_R@1), $(trained text_to_image_R@1)
assert $i2t_lo <= i2t <= $i2t_hi and $t2i_lo <= t2i <= $t2i_hi, (i2t, t2i)" \
  || fail "recall@1 of the embeddings (image to text $i2t_lo..$i2t_hi, text to image" \
          "$t2i_lo..$t2i_hi with ties either way) does not hold training's"
pass "embed: the training-time model's embeddings (recall@1 $(trained image_to_text_R@1) /" \
     "$(trained text_to_image_R@1) as in training, within $i2t_lo..$i2t_hi / $t2i_lo..$t2i_hi)"

# corrupt images in a folder: skipped, listed, the rest written
mkdir bad && cp flat/*.jpg bad/
first=$(ls flat | head -1)
head -c 400 "flat/$first" > "bad/$first"
printf 'not a png' > bad/zz-garbage.png
"$TS" embed --checkpoint run --images bad --out bad.h5 2> bad.log || { cat bad.log; fail "embed of bad/"; }
grep -q "skipped: listed in its dataset 'skipped'" bad.log || { cat bad.log; fail "no skip note"; }
$PY - "$first" <<'PY'
import sys, h5py, numpy as np
b, f = h5py.File("bad.h5"), h5py.File("flat.h5")
sk = b["skipped"][:]
ids = [x.decode() for x in sk["id"]]
assert ids == ["bad/" + sys.argv[1], "bad/zz-garbage.png"], ids
assert all(r.decode().startswith("corrupt image: ") for r in sk["reason"]), sk["reason"]
assert b.attrs["skipped_count"] == 2 and b["skipped"].attrs["count"] == 2
good = [x.decode() for x in b["ids"][:]]
want = [x.decode().replace("flat/", "bad/") for x in f["ids"][1:]]
assert good == want, (good[:3], want[:3])
assert np.abs(b["embeddings"][:] - f["embeddings"][1:]).max() < 1e-5
print("corrupt:", [(i, r.decode()) for i, r in zip(ids, sk["reason"])])
PY
pass "corrupt images skipped and listed; the 95 good ones written"

# a checkpoint of another model shape is refused, naming the parameters; nothing is written
clip_run run48 48 1
expect 1 "shape of visual.class_embedding is (48) in the file, (32) in the model" -- \
  "$TS" embed --checkpoint run48/checkpoints/step_00000001/model.safetensors \
  --recipe "$M/recipe.yaml" --images flat --out mis.h5
grep -q "a checkpoint of another model shape needs the recipe it was trained with" out.txt \
  || fail "no hint"
cp -r "$M" swapped && cp run48/checkpoints/step_00000001/model.safetensors swapped/
expect 1 "tensors do not match the model" -- "$TS" eval retrieval --checkpoint swapped --data data/val-000000.tar
test ! -e mis.h5 && ! ls mis.h5.tmp.* 2> /dev/null || fail "a refused embed left a file"
pass "embed and eval: mismatched checkpoint refused by name"
