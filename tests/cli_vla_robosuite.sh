#!/usr/bin/env bash
# Real data: a policy trains for 400 steps on the five real robosuite demonstrations (door, lift,
# nut assembly, pick-place, stack; one Panda demo each, robosuite's raw layout) and is scored
# on the last fifth of every demo, which it never saw. The observation is the robot's own part
# of the simulator state: states[1:10], the 7 arm joint angles and 2 finger positions (column 0
# is the simulation time, and the objects' coordinates that follow differ per task); the
# actions are 7-d OSC_POSE commands, one policy for all five tasks (data.mix). Its held-out
# action error must come out well below that of always predicting each task's mean training
# action. Usage: cli_vla_robosuite.sh TESSERA SRC DATA (DATA = ../shared/data).
source "$(dirname "$0")/clilib.sh"
PY=/usr/bin/python3
D="$3/hdf5"
# Under the sanitizers (TS_SANITIZED=1) the run is 100 steps, which only have to lower the
# held-out error: a memory error or undefined behaviour shows in any step, and the release
# build's 400 steps hold the bar.
if [ -n "${TS_SANITIZED:-}" ]; then STEPS=100; else STEPS=400; fi

mix=""
for t in door lift nut-assembly pick-place stack; do
  [ -f "$D/robosuite_${t}_panda_demo.hdf5" ] || fail "no $D/robosuite_${t}_panda_demo.hdf5"
  mix+="    ${t}: {path: $D/robosuite_${t}_panda_demo.hdf5, weight: 1.0}"$'\n'
done
sed -e '/^  train: /d' -e '/^  lowdim: /d' "$SRC/recipes/vla-robosuite-states.yaml" > rs.yaml
$PY - rs.yaml "$mix" <<'PYX'
import sys
path, mix = sys.argv[1], sys.argv[2]
text = open(path).read().replace("data:\n", 'data:\n  lowdim: "states[1:10]"\n  mix:\n' + mix, 1)
open(path, "w").write(text)
PYX
"$TS" train rs.yaml --set train.threads=2 --set train.out_dir="$WORK/run" \
  --set train.steps=$STEPS --set train.eval_every=$((STEPS / 2)) 2> rs.log \
  || { tail -30 rs.log; fail "training on the robosuite demonstrations"; }
grep -E "vla: .*windows|eval step" rs.log
read -r v0 v1 base <<< "$($PY -c "
import json; ev=[r for r in map(json.loads, open('$WORK/run/metrics.jsonl')) if r['kind']=='eval']
print(ev[0]['val_action_mse'], ev[-1]['val_action_mse'], ev[-1]['val_mean_action_mse'])")"
echo "held-out action MSE: untrained $v0, after $STEPS steps $v1, mean training action $base"
if [ -z "${TS_SANITIZED:-}" ]; then
  $PY -c "import sys; sys.exit(0 if $v1 < 0.7 * $base else 1)" \
    || fail "held-out action error $v1 is not well below the mean action's $base"
else
  $PY -c "import sys; sys.exit(0 if $v1 < 0.8 * $v0 else 1)" \
    || fail "held-out action error $v1 is not below the untrained policy's $v0"
fi

# A column range the dataset does not have is an error that names the file and the key.
sed 's/"states\[1:10\]"/"states[1:99]"/' rs.yaml > bad.yaml
set +e
"$TS" train bad.yaml --set train.steps=1 --set train.out_dir="$WORK/bad" > bad.txt 2>&1; rc=$?
set -e
[ $rc -ne 0 ] && grep -q "robosuite_door_panda_demo.hdf5: data/demo_1/states: columns \[1:99\]" bad.txt \
  || { cat bad.txt; fail "columns out of range"; }
pass "vla on real robosuite demonstrations"
