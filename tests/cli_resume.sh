#!/usr/bin/env bash
# Resume: a run stopped halfway and resumed gives bitwise the losses of a run that never
# stopped (deterministic CPU mode), both when resuming from a periodic checkpoint and after
# Ctrl-C (SIGINT), which must save a checkpoint and exit 0.
source "$(dirname "$0")/clilib.sh"
tiny_recipe r.yaml

# 1. the uninterrupted run
"$TS" train r.yaml --quiet --set train.out_dir="$WORK/full" || fail "full run failed"
losses "$WORK/full/metrics.jsonl" > full.txt
[ "$(wc -l < full.txt)" -eq 40 ] || fail "expected 40 loss lines"

# 2. stop at step 20: keep only the checkpoint of step 20, resume to the end
cp -r "$WORK/full" "$WORK/half"
rm -rf "$WORK/half/checkpoints/step_00000030" "$WORK/half/checkpoints/step_00000040"
echo step_00000020 > "$WORK/half/checkpoints/latest"
: > "$WORK/half/metrics.jsonl"
"$TS" train r.yaml --quiet --resume "$WORK/half" 2> log.txt || { cat log.txt; fail "resume failed"; }
losses "$WORK/half/metrics.jsonl" > half.txt
[ "$(head -1 half.txt | cut -d' ' -f1)" = 21 ] || fail "resumed run did not start at step 21"
diff <(tail -n 20 full.txt) half.txt > /dev/null || { diff <(tail -n 20 full.txt) half.txt | head; fail "resumed losses differ"; }
pass "resume from step 20 gives the same 20 losses, bit for bit"

# 3. Ctrl-C mid-run: a checkpoint is saved, exit 0, and resuming finishes the same run
sed -i 's/steps: 40/steps: 600/; s/ckpt_every: 10/ckpt_every: 0/' r.yaml
"$TS" train r.yaml --quiet --set train.out_dir="$WORK/ref" || fail "reference run failed"
"$TS" train r.yaml --set train.out_dir="$WORK/long" 2> int.txt &
pid=$!
for i in $(seq 1 300); do
  [ -s "$WORK/long/metrics.jsonl" ] && [ "$(wc -l < "$WORK/long/metrics.jsonl")" -ge 15 ] && break
  sleep 0.05
done
kill -INT "$pid"
wait "$pid" || { cat int.txt; fail "Ctrl-C should exit 0"; }
grep -q "interrupted at step" int.txt || { cat int.txt; fail "no interruption message"; }
stopped=$(sed 's/step_0*//' "$WORK/long/checkpoints/latest")
[ "$stopped" -ge 15 ] && [ "$stopped" -lt 600 ] || fail "odd stop step $stopped"
"$TS" train r.yaml --quiet --resume "$WORK/long" 2> log.txt || { cat log.txt; fail "resume failed"; }
diff <(losses "$WORK/ref/metrics.jsonl") <(losses "$WORK/long/metrics.jsonl") > /dev/null \
  || fail "losses of the interrupted and resumed run differ from an uninterrupted run"
pass "Ctrl-C at step $stopped saved a checkpoint; the resumed run matches the uninterrupted one"
