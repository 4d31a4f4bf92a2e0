#!/usr/bin/env bash
# Kill -9 during a checkpoint write leaves the previous checkpoint intact: the job is killed
# while a temporary checkpoint folder is being written, then the latest checkpoint must be
# complete, load, and resume; the stale temporary folder is cleared by the next save.
source "$(dirname "$0")/clilib.sh"
tiny_recipe r.yaml
# a model of ~3M parameters so that a checkpoint (~38 MB with the optimizer) takes a while
sed -i 's/width: 32/width: 256/; s/layers: 2/layers: 4/; s/steps: 40/steps: 100000/; s/ckpt_every: 10/ckpt_every: 1/; s/batch_size: 32/batch_size: 4/' r.yaml

caught=0
for round in 1 2 3; do
  "$TS" train r.yaml --quiet ${resume:-} 2> log.txt &
  pid=$!
  found=""
  for i in $(seq 1 20000); do
    found=$(ls -d "$WORK"/run/checkpoints/step_*.tmp."$pid" 2>/dev/null | head -1 || true)
    [ -n "$found" ] && [ -f "$WORK/run/checkpoints/latest" ] && break
    found=""
    kill -0 "$pid" 2>/dev/null || { cat log.txt; fail "training exited early"; }
  done
  kill -9 "$pid"; wait "$pid" 2>/dev/null || true
  # it counts when the temporary folder was still there after the kill
  if [ -n "$found" ] && [ -d "$found" ]; then caught=$((caught + 1)); else found=""; fi
  latest=$(cat "$WORK/run/checkpoints/latest")
  ck="$WORK/run/checkpoints/$latest"
  for f in model.safetensors optim.safetensors state.json recipe.yaml; do
    [ -s "$ck/$f" ] || fail "round $round: $ck/$f missing or empty after kill -9"
  done
  echo "round $round: killed during ${found:-(no write seen)}; latest is $latest"
  resume="--resume $WORK/run"
done
[ "$caught" -ge 1 ] || fail "never caught a checkpoint write in progress"

# the latest checkpoint loads and training goes on from it
step=$(sed 's/step_0*//' "$WORK/run/checkpoints/latest")
"$TS" train r.yaml --quiet --resume "$WORK/run" --set train.steps=$((step + 2)) 2> log.txt \
  || { cat log.txt; fail "resume after kill -9 failed"; }
grep -q "\"step\": $((step + 2))," "$WORK/run/metrics.jsonl" || fail "resumed run did not reach step $((step + 2))"
if ls -d "$WORK"/run/checkpoints/step_*.tmp.* > /dev/null 2>&1; then
  fail "stale temporary checkpoint folders were not cleared"
fi
pass "kill -9 during $caught checkpoint writes left the previous checkpoint whole"
