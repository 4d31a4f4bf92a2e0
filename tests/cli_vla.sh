#!/usr/bin/env bash
# End to end: a language-conditioned diffusion policy trains on reach2d demonstrations written
# by `tessera data synth reach2d` and is evaluated on held-out demonstrations and in closed
# loop on episodes the demonstrations never saw: its validation action error falls below that
# of the untrained policy and of the mean training action, and its closed-loop success rises
# above the untrained policy's. `tessera eval rollout` on the checkpoint reproduces the
# training-time closed-loop result exactly (DDIM sampling is deterministic for a seed);
# `tessera embed --trajectories` writes a row per step of every demonstration.
source "$(dirname "$0")/clilib.sh"
PY=/usr/bin/python3
STEPS="${TS_VLA_STEPS:-2000}"

mkdir -p r2d
"$TS" data synth reach2d --out r2d/demos.hdf5 --demos 300 --seed 1 2> synth.txt \
  || { cat synth.txt; fail "synth reach2d"; }
[ -s r2d/demos-bpe.txt.gz ] || fail "no instruction vocabulary beside the demonstrations"

"$TS" train "$SRC/recipes/vla-diffusion-reach2d.yaml" \
  --set data.train="$WORK/r2d/demos.hdf5" --set data.tokenizer="$WORK/r2d/demos-bpe.txt.gz" \
  --set train.threads=2 --set train.steps="$STEPS" --set train.eval_every="$STEPS" \
  --set train.log_every=250 --set eval.rollout.episodes=50 --set train.out_dir="$WORK/diff" \
  2> diff.log || { tail -30 diff.log; fail "training the diffusion policy"; }
grep -E "eval step" diff.log

read -r v0 s0 v1 s1 base <<< "$($PY -c "
import json; ev=[r for r in map(json.loads, open('$WORK/diff/metrics.jsonl')) if r['kind']=='eval']
print(ev[0]['val_action_mse'], ev[0]['rollout_success'], ev[-1]['val_action_mse'],
      ev[-1]['rollout_success'], ev[-1]['val_mean_action_mse'])")"
echo "validation action MSE: untrained $v0, trained $v1, mean training action $base"
echo "closed-loop success over 50 held-out episodes: untrained $s0, trained $s1"
$PY -c "import sys; sys.exit(0 if $v1 < 0.9 * $base and $v1 < 0.6 * $v0 else 1)" \
  || fail "validation error $v1 is not below the baselines ($base, untrained $v0)"
$PY -c "import sys; sys.exit(0 if $s1 >= $s0 + 0.06 else 1)" \
  || fail "closed-loop success $s1 did not rise above the untrained policy's $s0"

# The same checkpoint through `tessera eval rollout`: the same episodes, the same result.
"$TS" eval rollout --checkpoint "$WORK/diff" --task reach2d --episodes 50 > ro.txt \
  || fail "eval rollout"
cat ro.txt
n=$(sed -n 's/.* \([0-9]*\) of 50 episodes succeeded.*/\1/p' ro.txt)
[ "$n" = "$($PY -c "print(round($s1 * 50))")" ] \
  || fail "eval rollout gave $n of 50, the training-time evaluation $s1"
"$TS" eval rollout --checkpoint "$WORK/diff" --task reach2d --episodes 5 \
  --instruction-shift 1 > shift.txt || fail "eval rollout --instruction-shift"
grep -q "instructions shifted" shift.txt || fail "no ablation note"
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
