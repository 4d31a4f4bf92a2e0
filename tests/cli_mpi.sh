#!/usr/bin/env bash
# Data parallelism over MPI: N ranks that split each global batch train the same model as one
# process with the whole batch; a rank that dies or hangs ends the job with an error naming a
# rank in bounded time; the last checkpoint then resumes, also with another number of ranks.
#
# 1. 2 and 3 ranks against one process over 20 steps of the quickstart task: the losses agree
#    within 1e-5 relative and every tensor of the final model.safetensors within 1e-5. The ranks
#    all-reduce their gradients in small buckets during backward (train.overlap_allreduce, with
#    train.bucket_mib small enough for nine buckets); with the overlap turned off, 2 ranks
#    give bitwise the same checkpoint.
# 2. The 2-rank run's checkpoint of step 10 resumed by 1 process gives the same last 10 losses.
# 3. kill -9 of rank 1 mid-run: mpirun ends the job, naming rank 1; 1 process resumes.
# 4. SIGSTOP of rank 1 (a hang): rank 0's collective times out after train.collective_timeout_s
#    and aborts the job with "rank 0: collective timed out"; 1 process resumes.
# 5. CLIP over the global batch: 2 ranks that each read one shard and gather both embeddings
#    (ts_all_gather) train as one process reading both: the same losses and weights, with plain
#    SGD so that a wrongly scaled gradient would show (AdamW would hide the scale).
# 6. Batch-norm running statistics (tests/mpi_running.c): after a run of 1, 2 and 3 ranks every
#    rank, and rank 0's checkpoint, holds the ranks' statistics averaged, as computed from the
#    data, and not rank 0's own.
# Registered only when CMake found MPI; OpenMPI's launcher needs --allow-run-as-root as root and
# --oversubscribe for more ranks than cores.
source "$(dirname "$0")/clilib.sh"
MPIEXEC="${TS_MPIEXEC:-mpirun}"
MPI_FLAGS=()
if "$MPIEXEC" --version 2>&1 | grep -qE "Open MPI|OpenRTE"; then
  MPI_FLAGS=(--oversubscribe --bind-to none)
  [ "$(id -u)" -eq 0 ] && MPI_FLAGS+=(--allow-run-as-root)
  # containers often forbid the cross-memory attach that OpenMPI's shared memory tries first
  export OMPI_MCA_btl_vader_single_copy_mechanism=none
fi
mpi() { local n="$1"; shift; "$MPIEXEC" "${MPI_FLAGS[@]}" -np "$n" "$@"; }

# A background job and its ranks are killed on any exit, so a failed check leaves no strays.
JOB=""
kill_job() {
  [ -n "$JOB" ] || return 0
  local ranks
  ranks=$(pgrep -P "$JOB" || true)
  kill -9 $ranks "$JOB" 2>/dev/null || true
  JOB=""
}
trap 'kill_job; rm -rf "$WORK"' EXIT

tiny_recipe r.yaml
sed -i 's/steps: 40/steps: 20/; s/threads: 2/threads: 1/' r.yaml

# Compare the train losses of two metrics files (relative) and, when given, every tensor of two
# safetensors files (absolute, the weights are O(1)); prints the largest differences.
# One slice is left out: the key part of attention's in_proj_bias (rows C..2C). Adding a bias to
# every key adds q.b to all scores of a query, which softmax ignores, so its gradient is exactly
# zero and what the runs compute is rounding noise (~1e-10) in a different order; AdamW divides
# that noise by its own square root and moves the slice by up to lr per step in either run.
# It never changes an output; every other value agrees to ~1e-7.
compare() {
  /usr/bin/python3 - "$@" <<'PY'
import json, struct, sys
import numpy as np

def losses(path):
    return {r["step"]: r["loss"] for r in map(json.loads, open(path)) if r["kind"] == "train"}

def tensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        head = json.loads(f.read(n))
        data = f.read()
    head.pop("__metadata__", None)
    out = {}
    for name, e in head.items():
        assert e["dtype"] == "F32", (name, e["dtype"])
        a, b = e["data_offsets"]
        out[name] = np.frombuffer(data[a:b], dtype=np.float32).reshape(e["shape"])
    return out

la, lb = losses(sys.argv[1]), losses(sys.argv[2])
steps = sorted(lb)
assert steps and all(s in la for s in steps), f"steps differ: {sorted(la)} vs {steps}"
rel = max(abs(la[s] - lb[s]) / abs(la[s]) for s in steps)
print(f"losses of steps {steps[0]}..{steps[-1]}: max relative difference {rel:.2e}")
assert rel <= 1e-5, f"losses differ by {rel:.2e} relative"
if len(sys.argv) > 3:
    ta, tb = tensors(sys.argv[3]), tensors(sys.argv[4])
    assert sorted(ta) == sorted(tb), "the checkpoints name different tensors"
    def free_slice(k, d):
        if k.endswith("attn.in_proj_bias"):
            c = d.shape[0] // 3
            d = np.concatenate([d[:c], d[2 * c:]])
        return d
    worst = max((float(np.max(free_slice(k, np.abs(ta[k] - tb[k])))), k) for k in ta)
    print(f"{len(ta)} tensors: max difference {worst[0]:.2e} ({worst[1]}; key biases left out)")
    assert worst[0] <= 1e-5, f"weights differ by {worst[0]:.2e} in {worst[1]}"
PY
}

# 1. one process against 2 and 3 ranks (3 ranks split the batch of 32 unevenly: 10, 11, 11)
"$TS" train r.yaml --quiet --set train.out_dir="$WORK/one" 2> log.txt || { cat log.txt; fail "1 process failed"; }
final=checkpoints/step_00000020/model.safetensors
for n in 2 3; do
  mpi "$n" "$TS" train r.yaml --quiet --set train.out_dir="$WORK/np$n" \
    --set train.bucket_mib=0.002 > log.txt 2>&1 || { cat log.txt; fail "$n ranks failed"; }
  compare "$WORK/one/metrics.jsonl" "$WORK/np$n/metrics.jsonl" "$WORK/one/$final" "$WORK/np$n/$final" \
    || fail "$n ranks do not match one process"
  pass "$n ranks with the global batch split match one process over 20 steps"
done
grep -q '"allreduce_ms"' "$WORK/np2/metrics.jsonl" || fail "no all-reduce time in the metrics of 2 ranks"
mpi 2 "$TS" train r.yaml --set train.out_dir="$WORK/np2off" --set train.overlap_allreduce=false \
  > log.txt 2>&1 || { cat log.txt; fail "2 ranks without overlap failed"; }
grep -q "after backward" log.txt || { cat log.txt; fail "the overlap was not turned off"; }
cmp "$WORK/np2/$final" "$WORK/np2off/$final" || fail "overlapped and plain all-reduce differ"
pass "2 ranks: the all-reduce overlapped with backward gives bitwise the weights of the plain one"

# 2. the 2-rank run resumed from its step-10 checkpoint by one process
cp -r "$WORK/np2" "$WORK/re1"
rm -rf "$WORK/re1/checkpoints/step_00000020"
echo step_00000010 > "$WORK/re1/checkpoints/latest"
: > "$WORK/re1/metrics.jsonl"
"$TS" train r.yaml --quiet --resume "$WORK/re1" 2> log.txt || { cat log.txt; fail "resume with 1 rank failed"; }
compare "$WORK/np2/metrics.jsonl" "$WORK/re1/metrics.jsonl" "$WORK/np2/$final" "$WORK/re1/$final" \
  || fail "1 process resuming the 2-rank run differs"
pass "a 2-rank checkpoint resumed by 1 process continues the same run"

# The pid of rank $2 among the children of mpirun $1 (OpenMPI sets OMPI_COMM_WORLD_RANK).
rank_pid() {
  for p in $(pgrep -P "$1"); do
    tr '\0' '\n' < "/proc/$p/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$2" && echo "$p"
  done
  return 0
}

# Start a long 2-rank run into $1, wait for its first checkpoint, send signal $2 to rank 1 and
# require the job to end with an error within 60 s; its output is in $1.txt.
break_rank() {
  local dir="$1" sig="$2"
  "$MPIEXEC" "${MPI_FLAGS[@]}" -np 2 \
    "$TS" train r.yaml --quiet --set train.out_dir="$dir" --set train.steps=1000000 \
    --set train.ckpt_every=20 --set train.collective_timeout_s=10 --set train.log_every=10 \
    > "$dir.txt" 2>&1 &
  local job=$!
  JOB=$job
  for i in $(seq 1 600); do
    [ -f "$dir/checkpoints/latest" ] && break
    kill -0 "$job" 2>/dev/null || { cat "$dir.txt"; fail "the 2-rank job ended early"; }
    sleep 0.05
  done
  [ -f "$dir/checkpoints/latest" ] || fail "no checkpoint after 30 s"
  local victim
  victim=$(rank_pid "$job" 1)
  [ -n "$victim" ] || fail "rank 1 not found among the children of mpirun"
  local t0=$SECONDS
  kill "-$sig" "$victim"
  for i in $(seq 1 600); do
    kill -0 "$job" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$job" 2>/dev/null; then
    cat "$dir.txt"
    fail "the job still runs 60 s after SIG$sig to rank 1"
  fi
  kill -9 "$victim" 2>/dev/null || true # a stopped rank that the launcher left behind
  local rc=0
  wait "$job" || rc=$?
  JOB=""
  [ "$rc" -ne 0 ] || { cat "$dir.txt"; fail "the job exited 0 after SIG$sig to rank 1"; }
  echo "SIG$sig to rank 1: the job ended with status $rc after $((SECONDS - t0)) s:"
  grep -m2 -E "tessera: error|noticed" "$dir.txt" | sed 's/^/  /' || true
}

# Resume the broken run $1 with one process for 2 more steps.
resume_one() {
  local dir="$1" step
  step=$(sed 's/step_0*//' "$dir/checkpoints/latest")
  "$TS" train r.yaml --quiet --resume "$dir" --set train.steps=$((step + 2)) 2> log.txt \
    || { cat log.txt; fail "resuming $dir with 1 process failed"; }
  grep -q "\"step\": $((step + 2))," "$dir/metrics.jsonl" || fail "the resumed run did not reach step $((step + 2))"
  echo "resumed from step $step with 1 process"
}

# 3. a rank dies
break_rank "$WORK/dead" KILL
grep -q "rank 1" "$WORK/dead.txt" || { cat "$WORK/dead.txt"; fail "the error does not name rank 1"; }
resume_one "$WORK/dead"
pass "kill -9 of rank 1 ended the job with an error naming it; the last checkpoint resumes"

# 4. a rank hangs
break_rank "$WORK/hung" STOP
grep -q "rank 0: collective timed out after 10 s (a rank died or hangs)" "$WORK/hung.txt" \
  || { cat "$WORK/hung.txt"; fail "no collective timeout message"; }
resume_one "$WORK/hung"
pass "a hung rank 1 made rank 0 time out and abort the job; the last checkpoint resumes"

# 5. CLIP: one global batch is the two shards' 32 samples each; the augmentation is the identity
# (images at the model's size, crop scale 1, no flip) because its draws depend on the rank.
"$TS" data synth shapes --out "$WORK/shapes" --size 32 --train-shards 2 --val-shards 1 \
  --per-shard 32 2> /dev/null || fail "data synth"
cat > clip.yaml <<YAML
model:
  type: clip
  embed_dim: 32
  vision: {type: vit, image_size: 32, patch_size: 8, width: 32, layers: 2, heads: 2}
  text: {type: text, context_length: 24, width: 32, layers: 2, heads: 2}
data:
  train: $WORK/shapes/train-{000000..000001}.tar
  tokenizer: $WORK/shapes/bpe.txt.gz
  batch_size: 64
  workers: 1
  shuffle_buffer: 0
  scale: [1.0, 1.0]
optim: {name: sgd, lr: 0.5, momentum: 0.0}
train: {steps: 6, log_every: 1, eval_every: 0, ckpt_every: 0, threads: 1, out_dir: $WORK/clip1}
YAML
"$TS" train clip.yaml 2> clip1.txt || { tail clip1.txt; fail "clip, one process"; }
mpi 2 "$TS" train clip.yaml --set train.out_dir="$WORK/clip2" 2> clip2.txt \
  || { tail clip2.txt; fail "clip, 2 ranks"; }
compare "$WORK/clip1/metrics.jsonl" "$WORK/clip2/metrics.jsonl" \
  "$WORK/clip1/checkpoints/step_00000006/model.safetensors" \
  "$WORK/clip2/checkpoints/step_00000006/model.safetensors" || fail "clip: 2 ranks differ"
pass "CLIP with embeddings gathered over 2 ranks trains as one process with the global batch"

# ProtoCLIP over 2 ranks: each rank embeds its part of the episode, all ranks cluster all of it.
# (Not compared with one process: the heads' batch norm sees each rank's rows only.)
mpi 2 "$TS" train clip.yaml --set train.out_dir="$WORK/proto2" --set objective.clip.weight=1.0 \
  --set objective.protoclip.k=4 --set objective.protoclip.episode_size=64 \
  --set objective.protoclip.hidden_dim=32 --set objective.protoclip.proj_dim=16 \
  --set train.log_every=1 2> proto2.txt || { tail proto2.txt; fail "protoclip, 2 ranks"; }
grep -q "protoclip: episode 0: clustering 64 samples" proto2.txt \
  || { grep -i episode proto2.txt; fail "the episode did not gather both ranks' samples"; }
/usr/bin/python3 - "$WORK/proto2/metrics.jsonl" <<'PY' || fail "protoclip, 2 ranks: see above"
import json, math, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"train"' in l]
assert len(rows) == 6 and all(math.isfinite(r["loss"]) and "loss_proto" in r for r in rows), rows
PY
pass "ProtoCLIP over 2 ranks clusters the episode of both ranks"

# 6. batch-norm running statistics averaged over the ranks
RUNNING="${TS_MPI_RUNNING:-$(dirname "$TS")/tests/mpi_running}"
"$RUNNING" "$WORK/bn1" > bn.txt 2>&1 || { cat bn.txt; fail "running statistics, one process"; }
for n in 2 3; do
  mpi "$n" "$RUNNING" "$WORK/bn$n" > bn.txt 2>&1 \
    || { cat bn.txt; fail "running statistics, $n ranks"; }
  grep "^rank 0" bn.txt | sed 's/^/  /'
done
pass "batch-norm running statistics are the ranks' average on every rank and in the checkpoint"
