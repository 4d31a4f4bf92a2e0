#!/usr/bin/env bash
# End to end: a language-conditioned diffusion policy (recipes/vla-diffusion-reach2d.yaml)
# trains on reach2d demonstrations written by `tessera data synth reach2d` and is evaluated on
# held-out demonstrations and in closed loop on 50 episodes the demonstrations never saw:
#  - its validation action error falls far below that of the mean training action, and it
#    succeeds in at least 90% of the episodes;
#  - the language matters: the same policy given other episodes' instructions fails, and the
#    same policy trained for as long without the instruction (model.text left out) cannot
#    reach 90%: with three targets it can only guess which one is meant;
#  - `tessera eval rollout` on the checkpoint reproduces the training-time closed-loop result
#    exactly (DDIM sampling is deterministic for a seed), without the demonstrations at hand;
#  - `tessera embed --trajectories` writes a row per step of every demonstration.
source "$(dirname "$0")/clilib.sh"
PY=/usr/bin/python3
STEPS="${TS_VLA_STEPS:-400}"

mkdir -p r2d
"$TS" data synth reach2d --out r2d/demos.hdf5 --demos 300 --seed 1 2> synth.txt \
  || { cat synth.txt; fail "synth reach2d"; }
[ -s r2d/demos-bpe.txt.gz ] || fail "no instruction vocabulary beside the demonstrations"

train_args=(--set data.train="$WORK/r2d/demos.hdf5" --set data.tokenizer="$WORK/r2d/demos-bpe.txt.gz"
  --set train.threads=2 --set train.steps="$STEPS" --set train.eval_every="$STEPS"
  --set train.log_every=250 --set eval.rollout.episodes=50)
"$TS" train "$SRC/recipes/vla-diffusion-reach2d.yaml" "${train_args[@]}" \
  --set train.out_dir="$WORK/diff" 2> diff.log || { tail -30 diff.log; fail "training the diffusion policy"; }
grep -E "eval step" diff.log

read -r v0 s0 v1 s1 base <<< "$(vla_evals "$WORK/diff")"
echo "validation action MSE: untrained $v0, trained $v1, mean training action $base"
echo "closed-loop success over 50 held-out episodes: untrained $s0, trained $s1"
$PY -c "import sys; sys.exit(0 if $v1 < 0.2 * $base and $v1 < 0.2 * $v0 else 1)" \
  || fail "validation error $v1 is not far below the baselines ($base, untrained $v0)"
$PY -c "import sys; sys.exit(0 if $s1 >= 0.9 else 1)" \
  || fail "closed-loop success $s1 is below 90% (untrained: $s0)"

# The same checkpoint through `tessera eval rollout`: the same episodes, the same result, with
# the demonstrations out of reach (the policy's sizes and statistics are in the checkpoint).
mv r2d/demos.hdf5 r2d/elsewhere.hdf5
"$TS" eval rollout --checkpoint "$WORK/diff" --task reach2d --episodes 50 > ro.txt \
  || fail "eval rollout"
mv r2d/elsewhere.hdf5 r2d/demos.hdf5
cat ro.txt
n=$(sed -n 's/.* \([0-9]*\) of 50 episodes succeeded.*/\1/p' ro.txt)
[ "$n" = "$($PY -c "print(round($s1 * 50))")" ] \
  || fail "eval rollout gave $n of 50, the training-time evaluation $s1"
# The language matters (1): the same policy, each episode given another episode's instruction
# (mostly a colour that is not in its picture, or another of its targets), fails.
"$TS" eval rollout --checkpoint "$WORK/diff" --task reach2d --episodes 50 \
  --instruction-shift 1 > shift.txt || fail "eval rollout --instruction-shift"
cat shift.txt
grep -q "instructions shifted" shift.txt || fail "no ablation note"
ns=$(sed -n 's/.* \([0-9]*\) of 50 episodes succeeded.*/\1/p' shift.txt)
$PY -c "import sys; sys.exit(0 if $ns / 50 <= 0.4 and $ns / 50 <= $s1 - 0.5 else 1)" \
  || fail "with other episodes' instructions the policy still succeeds in $ns of 50"

# The language matters (2): the same policy trained as long without the instruction (and so
# without the FiLM that the instruction drives).
sed '/^  text: /d' "$SRC/recipes/vla-diffusion-reach2d.yaml" > notext.yaml
grep -q "^  text: " notext.yaml && fail "the text tower is still in the recipe"
"$TS" train notext.yaml "${train_args[@]}" --set model.film=false \
  --set train.out_dir="$WORK/notext" 2> notext.log \
  || { tail -30 notext.log; fail "training the policy without the instruction"; }
read -r _ _ nv1 ns1 _ <<< "$(vla_evals "$WORK/notext")"
echo "without the instruction: validation action MSE $nv1, closed-loop success $ns1"
$PY -c "import sys; sys.exit(0 if $ns1 <= 0.6 and $ns1 <= $s1 - 0.3 else 1)" \
  || fail "without the instruction the policy succeeds in $ns1 of the episodes (with: $s1)"

set +e
"$TS" eval rollout --checkpoint "$WORK/diff" --task walk > bad.txt 2>&1; rc=$?
set -e
[ $rc -ne 0 ] && grep -q "unknown simulated task 'walk'" bad.txt || { cat bad.txt; fail "bad task"; }

# Per-window embeddings of the demonstrations.
"$TS" embed --checkpoint "$WORK/diff" --trajectories "$WORK/r2d/demos.hdf5" --out emb.h5 \
  2> emb.txt || { cat emb.txt; fail "embed --trajectories"; }
$PY - "$WORK/r2d/demos.hdf5" emb.h5 <<'PYX' || fail "embeddings"
import h5py, numpy as np, sys
src, out = h5py.File(sys.argv[1]), h5py.File(sys.argv[2])
steps = sum(src["data"][k]["actions"].shape[0] for k in src["data"])
e = out["embeddings"][:]
assert e.shape == (steps, 128), (e.shape, steps)
ids = [i.decode() if isinstance(i, bytes) else i for i in out["ids"][:3]]
assert ids[0].endswith("/0") and ids[1].endswith("/1"), ids
assert np.isfinite(e).all() and e.std() > 0
print("embeddings", e.shape, ids)
PYX
pass "vla end to end"
