#!/usr/bin/env bash
# End to end with the discrete action head (recipes/vla-tokens-reach2d.yaml): the chunk as 32
# ids of uniform bins, predicted autoregressively with cross-entropy and decoded greedily. It
# trains on 1000 reach2d demonstrations and must succeed in at least 90% of 50 closed-loop
# episodes the demonstrations never saw, with a validation action error far below the mean
# training action's; `tessera eval rollout` reproduces the result from the checkpoint.
source "$(dirname "$0")/clilib.sh"
PY=/usr/bin/python3
STEPS="${TS_VLA_STEPS:-700}"

mkdir -p r2d
"$TS" data synth reach2d --out r2d/demos.hdf5 --demos 1000 --seed 3 2> synth.txt \
  || { cat synth.txt; fail "synth reach2d"; }
"$TS" train "$SRC/recipes/vla-tokens-reach2d.yaml" \
  --set data.train="$WORK/r2d/demos.hdf5" --set data.tokenizer="$WORK/r2d/demos-bpe.txt.gz" \
  --set train.threads=2 --set train.steps="$STEPS" --set train.eval_every="$STEPS" \
  --set train.log_every=250 --set eval.rollout.episodes=50 --set train.out_dir="$WORK/tok" \
  2> tok.log || { tail -30 tok.log; fail "training the token policy"; }
grep -E "eval step|tokens head" tok.log

read -r v0 s0 v1 s1 base <<< "$(vla_evals "$WORK/tok")"
echo "validation action MSE: untrained $v0, trained $v1, mean training action $base"
echo "closed-loop success over 50 held-out episodes: untrained $s0, trained $s1"
$PY -c "import sys; sys.exit(0 if $v1 < 0.2 * $base and $v1 < 0.2 * $v0 else 1)" \
  || fail "validation error $v1 is not far below the baselines ($base, untrained $v0)"
$PY -c "import sys; sys.exit(0 if $s1 >= 0.9 else 1)" \
  || fail "closed-loop success $s1 is below 90% (untrained: $s0)"

"$TS" eval rollout --checkpoint "$WORK/tok" --task reach2d --episodes 50 > ro.txt \
  || fail "eval rollout"
cat ro.txt
n=$(sed -n 's/.* \([0-9]*\) of 50 episodes succeeded.*/\1/p' ro.txt)
[ "$n" = "$($PY -c "print(round($s1 * 50))")" ] \
  || fail "eval rollout gave $n of 50, the training-time evaluation $s1"
pass "vla token head end to end"
