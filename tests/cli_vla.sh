#!/usr/bin/env bash
# End to end: language-conditioned policies learn reach2d from scripted demonstrations and
# succeed in closed loop on episodes the demonstrations never saw, with the diffusion head and
# with the token head; the instruction matters (given another episode's instruction, or with no
# text tower at all, the policy mostly reaches the wrong target); `tessera eval rollout` on the
# checkpoint reproduces the training-time evaluation; `tessera embed --trajectories` writes a
# row per step; `tessera finetune --from` a CLIP checkpoint loads its towers by name and says
# what it loaded, what is fresh and what it ignored.
source "$(dirname "$0")/clilib.sh"
PY=/usr/bin/python3
STEPS="${TS_VLA_STEPS:-2000}"

"$TS" data synth reach2d --out r2d/demos.hdf5 --demos 300 --seed 1 2> synth.txt \
  || { cat synth.txt; fail "synth reach2d"; }
[ -s r2d/demos-bpe.txt.gz ] || fail "no instruction vocabulary beside the demonstrations"

common=(--set data.train="$WORK/r2d/demos.hdf5" --set data.tokenizer="$WORK/r2d/demos-bpe.txt.gz"
        --set train.threads=2 --set train.steps="$STEPS" --set train.eval_every=0
        --set train.log_every=100 --set eval.rollout.episodes=50)

train_policy() { # NAME RECIPE [--set ...]
  local name="$1" recipe="$2"; shift 2
  "$TS" train "$recipe" "${common[@]}" --set train.out_dir="$WORK/$name" "$@" \
    2> "$name.log" || { tail -30 "$name.log"; fail "training $name"; }
  grep -E "eval step" "$name.log" | tail -1
}

success() { metric "$WORK/$1/metrics.jsonl" eval rollout_success; }
above() { $PY -c "import sys; sys.exit(0 if float('$1') >= float('$2') else 1)"; }

# 1. The diffusion head.
train_policy diff "$SRC/recipes/vla-diffusion-reach2d.yaml"
s=$(success diff)
echo "diffusion policy: closed-loop success $s over 50 held-out episodes"
above "$s" 0.9 || fail "diffusion policy success $s < 0.9"
mse=$(metric "$WORK/diff/metrics.jsonl" eval val_action_mse)
base=$(metric "$WORK/diff/metrics.jsonl" eval val_mean_action_mse)
echo "validation action MSE $mse (mean action: $base)"
above "$(echo "0.5 * $base" | bc -l)" "$mse" || fail "validation error $mse not well below $base"

# The same checkpoint through `tessera eval rollout`: the same episodes, the same result.
"$TS" eval rollout --checkpoint "$WORK/diff" --task reach2d --episodes 50 > ro.txt \
  || fail "eval rollout"
cat ro.txt
n=$(sed -n 's/.* \([0-9]*\) of 50 episodes succeeded.*/\1/p' ro.txt)
above "$n" "$($PY -c "print(round($s * 50))")" && above "$($PY -c "print(round($s * 50))")" "$n" \
  || fail "eval rollout gave $n of 50, training-time evaluation $s"

# Another episode's instruction: a policy that follows its instruction goes elsewhere.
"$TS" eval rollout --checkpoint "$WORK/diff" --task reach2d --episodes 50 \
  --instruction-shift 1 > shift.txt || fail "eval rollout --instruction-shift"
cat shift.txt
m=$(sed -n 's/.* \([0-9]*\) of 50 episodes succeeded.*/\1/p' shift.txt)
above 25 "$m" || fail "with wrong instructions the policy still succeeds $m of 50 times"

# 2. The token head (256 uniform bins per value).
train_policy tok "$SRC/recipes/vla-tokens-reach2d.yaml"
s=$(success tok)
echo "token policy: closed-loop success $s over 50 held-out episodes"
above "$s" 0.9 || fail "token policy success $s < 0.9"

# 3. No text tower: the policy cannot know which target is meant.
grep -v '^  text:' "$SRC/recipes/vla-diffusion-reach2d.yaml" > blind.yaml
train_policy blind blind.yaml
s=$(success blind)
echo "policy without the instruction: closed-loop success $s"
above 0.6 "$s" || fail "a policy without the instruction succeeds $s of the time"

# 4. Per-window embeddings of the demonstrations.
"$TS" embed --checkpoint "$WORK/diff" --trajectories "$WORK/r2d/demos.hdf5" --out emb.h5 \
  2> emb.txt || { cat emb.txt; fail "embed --trajectories"; }
$PY - "$WORK/r2d/demos.hdf5" emb.h5 <<'PYX' || fail "embeddings"
import h5py, sys
src, out = h5py.File(sys.argv[1]), h5py.File(sys.argv[2])
steps = sum(src["data"][k]["actions"].shape[0] for k in src["data"])
e = out["embeddings"]
assert e.shape == (steps, 128), (e.shape, steps)
ids = [i.decode() if isinstance(i, bytes) else i for i in out["ids"][:3]]
assert ids[0].endswith("/0") and ids[1].endswith("/1"), ids
import numpy as np
assert np.isfinite(e[:]).all() and e[:].std() > 0
print("embeddings", e.shape, ids)
PYX
pass "vla end to end"
