# clilib.sh: helpers for the command-line tests (sourced, not run).
# Each test gets the tessera binary as $1 and the source folder as $2, and works in a fresh
# temporary folder that is removed at exit.
set -euo pipefail
TS="$1"
SRC="$2"
WORK="$(mktemp -d /tmp/tessera-cli-XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"

fail() { echo "FAIL: $*" >&2; exit 1; }
pass() { echo "ok: $*"; }
# Run a command that must fail with exit status STATUS and a message containing NEEDLE.
expect() { # expect STATUS NEEDLE -- command...
  local want="$1" needle="$2"; shift 3
  set +e; "$@" > out.txt 2>&1; local got=$?; set -e
  [ "$got" -eq "$want" ] || { cat out.txt; fail "exit $got (wanted $want): $*"; }
  grep -qF -- "$needle" out.txt || { cat out.txt; fail "message lacks '$needle': $*"; }
  echo "ok ($got): $(grep -F -- "$needle" out.txt | head -1)"
}

# A recipe small enough for tests: the quickstart's model, few steps.
tiny_recipe() {
  cat > "$1" <<YAML
model:
  type: seq_transformer
  width: 32
  layers: 2
  heads: 4
data:
  task: sort
  vocab: 8
  seq_len: 8
  batch_size: 32
  eval_batches: 2
optim:
  name: adamw
  lr: 3.0e-3
  warmup: 5
train:
  steps: 40
  log_every: 1
  eval_every: 0
  ckpt_every: 10
  threads: 2
  out_dir: $WORK/run
YAML
}

# Last value of "key" in the JSON lines of kind $2 of a metrics file $1.
metric() {
  /usr/bin/python3 - "$1" "$2" "$3" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
rows = [r for r in rows if r["kind"] == sys.argv[2]]
print(rows[-1][sys.argv[3]])
PY
}

# "step loss" lines of the train rows of a metrics file, for comparing runs.
losses() {
  /usr/bin/python3 - "$1" <<'PY'
import json, sys
for l in open(sys.argv[1]):
    r = json.loads(l)
    if r["kind"] == "train":
        print(r["step"], repr(r["loss"]))
PY
}

# A policy's run folder -> "mse success mse success mean_action_mse": the validation action
# error and closed-loop success of its first and last evaluations, and the mean action's error.
vla_evals() {
  /usr/bin/python3 -c "
import json; ev=[r for r in map(json.loads, open('$1/metrics.jsonl')) if r['kind']=='eval']
print(ev[0]['val_action_mse'], ev[0]['rollout_success'], ev[-1]['val_action_mse'],
      ev[-1]['rollout_success'], ev[-1]['val_mean_action_mse'])"
}
