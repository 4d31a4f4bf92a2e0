#!/usr/bin/env bash
# bench/scaling.sh: data-parallel scaling on this machine, 1 rank against N ranks over MPI.
#
# Trains the quickstart-seq model (width 64) and a wider one (width 256, 4 layers) for a fixed
# number of steps with the same global batch, once as one process using every core and as N
# ranks with cores/N threads each, and prints the samples/s of each run (median of the log
# intervals after the first), the gradient bytes all-reduced per step and the all-reduce time
# per step that the compute did not hide (the trainer's allreduce_ms metric: the time each step
# spends inside the gradients' MPI calls, the wait for the slowest rank included; one process
# has no all-reduce, "-"). The N-rank runs are:
#   overlap on   buckets of BUCKET_MIB MiB (default 1) all-reduced during backward (polled
#                MPI_Iallreduce, the default of train.overlap_allreduce);
#   overlap off  one all-reduce after backward, polled against the collective timeout;
#   blocking     the same with collective_timeout_s=0, which uses the blocking MPI_Allreduce.
#
# It is a measurement, not a test: numbers depend on the machine and on whatever else runs.
#
#   [BUCKET_MIB=1] bench/scaling.sh [build/tessera] [ranks, default 2] [steps, default 200]
set -euo pipefail
SRC="$(cd "$(dirname "$0")/.." && pwd)"
TS="$(realpath "${1:-$SRC/build/tessera}")"
N="${2:-2}"
STEPS="${3:-200}"
MPIEXEC="${MPIEXEC:-mpirun}"
# containers often forbid the cross-memory attach that OpenMPI's shared memory tries first
export OMPI_MCA_btl_vader_single_copy_mechanism="${OMPI_MCA_btl_vader_single_copy_mechanism:-none}"
CORES="$(nproc)"
FLAGS=()
if "$MPIEXEC" --version 2>&1 | grep -qE "Open MPI|OpenRTE"; then
  FLAGS=(--bind-to none)
  [ "$N" -gt "$CORES" ] && FLAGS+=(--oversubscribe)
  [ "$(id -u)" -eq 0 ] && FLAGS+=(--allow-run-as-root)
fi
WORK="$(mktemp -d /tmp/tessera-scaling-XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
THREADS_N=$(( CORES / N > 0 ? CORES / N : 1 ))
BUCKET_MIB="${BUCKET_MIB:-1}"

# summary METRICS PARAMS: "samples/s allreduce_ms" (medians over the intervals after the first)
summary() {
  /usr/bin/python3 - "$1" <<'PY'
import json, statistics, sys
rows = [r for r in map(json.loads, open(sys.argv[1])) if r["kind"] == "train"][1:]
sps = statistics.median(r["samples_per_s"] for r in rows)
ar = [r["allreduce_ms"] for r in rows if "allreduce_ms" in r]
print(f"{sps:.0f} {statistics.median(ar):.3f}" if ar else f"{sps:.0f} -")
PY
}

run() { # name ranks threads overlap timeout width layers
  local name="$1" n="$2" threads="$3" overlap="$4" timeout="$5" width="$6" layers="$7"
  local args=(train "$SRC/recipes/quickstart-seq.yaml" --quiet --set train.steps="$STEPS"
    --set train.log_every=20 --set train.eval_every=0 --set train.ckpt_every=0 --set train.keep=1
    --set train.threads="$threads" --set train.collective_timeout_s="$timeout"
    --set train.overlap_allreduce="$overlap" --set train.bucket_mib="$BUCKET_MIB"
    --set model.width="$width" --set model.layers="$layers" --set train.out_dir="$WORK/$name")
  if [ "$n" -eq 1 ]; then "$TS" "${args[@]}"
  else "$MPIEXEC" "${FLAGS[@]}" -np "$n" "$TS" "${args[@]}"; fi
  read -r sps ar <<< "$(summary "$WORK/$name/metrics.jsonl")"
  local mode="-"
  [ "$n" -gt 1 ] && mode=$([ "$overlap" = true ] && echo "overlap" || echo "after")
  [ "$n" -gt 1 ] && [ "$timeout" = 0 ] && mode="$mode,blocking"
  printf "%-8s %5s %5d %-16s %8s %12s %10s\n" "w$width" "$n" "$threads" "$mode" "$sps" "$ar" \
    "$(param_mib "$WORK/$name")"
}

# MiB of f32 gradients per step: the parameters of the final checkpoint.
param_mib() {
  /usr/bin/python3 - "$1"/checkpoints/*/model.safetensors <<'PY'
import json, struct, sys
with open(sys.argv[1], "rb") as f:
    head = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
head.pop("__metadata__", None)
n = sum(e["data_offsets"][1] - e["data_offsets"][0] for e in head.values())
print(f"{n / 2**20:.2f}")
PY
}

echo "tessera data-parallel scaling: $CORES cores, global batch 64, $STEPS steps, buckets of" \
  "$BUCKET_MIB MiB, $(date -u +%F)"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
printf "%-8s %5s %5s %-16s %8s %12s %10s\n" model ranks thr all-reduce samples/s allreduce_ms \
  grad_MiB
for shape in "64 2" "256 4"; do
  read -r width layers <<< "$shape"
  run "1r-$width" 1 "$CORES" true 300 "$width" "$layers"
  run "${N}ro-$width" "$N" "$THREADS_N" true 300 "$width" "$layers"
  run "${N}ra-$width" "$N" "$THREADS_N" false 300 "$width" "$layers"
  run "${N}rb-$width" "$N" "$THREADS_N" false 0 "$width" "$layers"
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
