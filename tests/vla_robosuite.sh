#!/usr/bin/env bash
# Real data: a Diffusion Policy on the real robosuite demonstrations (teleoperated Panda, the
# simulator state as the observation, 7-d OSC_POSE actions, the last fifth of each demo held
# out) brings the held-out action error well below that of always predicting the mean training
# action, within a few hundred steps. Usage: cli_vla_robosuite.sh TESSERA SRC HDF5_DIR
source "$(dirname "$0")/clilib.sh"
DATA="$3"
for task in lift stack; do
  f="$DATA/robosuite_${task}_panda_demo.hdf5"
  [ -r "$f" ] || fail "missing $f"
  "$TS" train "$SRC/recipes/vla-robosuite-states.yaml" --set data.train="$f" \
    --set train.out_dir="$WORK/$task" --set train.threads=2 --set train.steps=400 \
    --set train.eval_every=0 2> "$task.log" || { tail -20 "$task.log"; fail "training on $f"; }
  grep -E "vla: data:|eval step" "$task.log"
  mse=$(metric "$WORK/$task/metrics.jsonl" eval val_action_mse)
  base=$(metric "$WORK/$task/metrics.jsonl" eval val_mean_action_mse)
  echo "$task: held-out action MSE $mse, mean training action $base"
  /usr/bin/python3 -c "import sys; sys.exit(0 if $mse < 0.5 * $base else 1)" \
    || fail "$task: held-out error $mse is not well below the mean-action baseline $base"
done
pass "robosuite demonstrations"
