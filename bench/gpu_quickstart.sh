#!/usr/bin/env bash
# bench/gpu_quickstart.sh: the quickstart (recipes/quickstart-clip.yaml) through `tessera train`
# on the CPU and on the GPU (train.device: cuda), from the same initial weights and the same
# batches, and their loss curves side by side. bench/gpu_check.sh calls it.
#
# The GPU machine has no package registry and no tessera dependencies. The packages of
# bench/gpu_debs.sh (carried in .deb) are unpacked with dpkg-deb into a prefix under the build
# folder; tessera is built against it without FFmpeg, HDF5, MPI or the tests, which the
# quickstart does not need. The prefix's libraries are on LD_LIBRARY_PATH for tessera's runs
# only. Then:
#   1. tessera data synth shapes (the quickstart's shards);
#   2. STEPS steps on the CPU, float32;
#   3. STEPS steps on the GPU with float32 products (cuBLASLt without TF32): the same sums in
#      other orders, so the two curves should agree closely; then with bf16 products;
#   0. (before the runs) tests/gpu_cpu_parity: every CUDA kernel against the CPU backend's op,
#      forward and backward;
#      the float32 GPU run is also stopped halfway and resumed from its checkpoint: its losses
#      after the resume must follow the unbroken run's (the device stages the next batch a
#      step ahead, so this checks the stream position a checkpoint keeps);
#   4. the same model with heads of 64 (2 heads) on the CPU and on the GPU with bf16 products,
#      where the device runs the tensor-core attention (attn_mma.cu);
#   5. a table of the logged losses (every 10 steps), the largest difference between the
#      float32 curves (pass: below 0.05) and between the heads-of-64 curves (pass: below 0.3,
#      bf16), samples/s of each run, and the zero-shot accuracy each reaches on the held-out
#      shards.
# Usage: bash bench/gpu_quickstart.sh OUT_DIR [STEPS]   (STEPS default 150)
# Environment: TS_DEBS (default .deb), TS_QS_BUILD (default /tmp/tessera-qs-build),
#   TS_QS_CPU_ONLY=1: the GPU runs on the CPU too, with a build without CUDA. This checks the
#   script and the prefix build on a machine without a GPU (both curves are then identical).
set -uo pipefail
cd "$(dirname "$0")/.."
SRC="$PWD"
OUT="${1:?usage: gpu_quickstart.sh OUT_DIR [STEPS]}"
STEPS="${2:-150}"
DEBS="${TS_DEBS:-.deb}"
B="${TS_QS_BUILD:-/tmp/tessera-qs-build}"
CPU_ONLY="${TS_QS_CPU_ONLY:-0}"
mkdir -p "$OUT" "$B"
OUT="$(cd "$OUT" && pwd)" B="$(cd "$B" && pwd)" # the runs below work in another folder
rm -f "$OUT"/*.metrics.jsonl "$OUT"/*.log
log="$OUT/quickstart.log"
: > "$log"
fail() { echo "gpu_quickstart: $*" | tee -a "$log"; echo "RESULT quickstart FAILED: $*"; exit 1; }

# ---- the prefix ----
P="$B/prefix"
A="$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)"
L="$P/usr/lib/$A"
rm -rf "$P"
mkdir -p "$P"
n=0
for f in "$DEBS"/*.deb; do
  [ -e "$f" ] || break
  if command -v dpkg-deb > /dev/null; then
    dpkg-deb -x "$f" "$P" || fail "dpkg-deb -x $f"
  else # a .deb is an ar archive holding data.tar.*
    d="$(ar t "$f" | grep '^data\.tar')" || fail "$f: no data.tar inside"
    ar p "$f" "$d" | tar -x -a -f - -C "$P" 2>/dev/null || \
      ar p "$f" "$d" | tar -x --zstd -f - -C "$P" || fail "unpacking $f"
  fi
  n=$((n + 1))
done
echo "prefix: $n packages from $DEBS unpacked into $P" | tee -a "$log"
# pkg-config that sees only the prefix's .pc files, with its paths moved under the prefix
cat > "$B/pkg-config" <<SH
#!/bin/sh
export PKG_CONFIG_LIBDIR="$L/pkgconfig:$P/usr/share/pkgconfig"
export PKG_CONFIG_SYSROOT_DIR="$P" PKG_CONFIG_ALLOW_SYSTEM_CFLAGS=1 PKG_CONFIG_ALLOW_SYSTEM_LIBS=1
if [ -x "$P/usr/bin/pkgconf" ]; then LD_LIBRARY_PATH="$L" exec "$P/usr/bin/pkgconf" "\$@"; fi
exec pkg-config "\$@"
SH
chmod +x "$B/pkg-config"

# ---- the build ----
cuda=ON
[ "$CPU_ONLY" = 1 ] && cuda=OFF
[ $cuda = ON ] && export CUDACXX="${CUDACXX:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}"
cmake -S "$SRC" -B "$B/build" -DCMAKE_BUILD_TYPE=Release -DTESSERA_VIDEO=OFF -DTESSERA_HDF5=OFF \
  -DTESSERA_MPI=OFF -DTESSERA_TESTS=OFF -DTESSERA_CUDA=$cuda \
  -DPKG_CONFIG_EXECUTABLE="$B/pkg-config" -DCMAKE_PREFIX_PATH="$P/usr" \
  -DCMAKE_C_FLAGS="-I$P/usr/include -I$P/usr/include/$A" \
  -DCMAKE_EXE_LINKER_FLAGS="-L$L -Wl,-rpath-link,$L" >> "$log" 2>&1 || {
  tail -30 "$log"; fail "cmake configure (log: $log)"; }
cmake --build "$B/build" -j"$(nproc)" --target tessera_cli >> "$log" 2>&1 || {
  grep -E "error|Error" "$log" | head -20; fail "build (log: $log)"; }
TS="$B/build/tessera"
export LD_LIBRARY_PATH="$L${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
"$TS" version | tee -a "$log" || fail "the tessera binary does not run: $(ldd "$TS" | grep 'not found')"
ldd "$TS" >> "$log" # which libraries came from the prefix

# ---- the CUDA kernels against the CPU backend's ops (tests/gpu_cpu_parity.c) ----
if [ "$CPU_ONLY" != 1 ]; then
  if cmake --build "$B/build" -j"$(nproc)" --target gpu_cpu_parity >> "$log" 2>&1; then
    timeout 300 "$B/build/gpu_cpu_parity" 2>&1 | tee "$OUT/gpu_cpu_parity.txt"
    prc=${PIPESTATUS[0]}
    echo "RESULT gpu_cpu_parity: $(grep -c ' ok$' "$OUT/gpu_cpu_parity.txt") ok, $(grep -c \
      'FAIL' "$OUT/gpu_cpu_parity.txt") failed (exit $prc)"
  else
    echo "RESULT gpu_cpu_parity: build FAILED (log: $log)"
  fi
fi

# ---- the runs ----
W="$B/work"
rm -rf "$W"
mkdir -p "$W"
cd "$W"
"$TS" data synth shapes --out data/shapes >> "$log" 2>&1 || fail "data synth shapes"
common=(--set train.steps="$STEPS" --set train.log_every=10 --set train.eval_every=0
        --set train.ckpt_every=0)
gpu=(--set train.device=cuda)
[ "$CPU_ONLY" = 1 ] && gpu=()
run() { # name, extra args...
  local name="$1"
  shift
  local t0
  t0=$(date +%s.%N)
  "$TS" train "$SRC/recipes/quickstart-clip.yaml" "${common[@]}" --set train.out_dir="$W/$name" \
    "$@" > "$OUT/$name.log" 2>&1 || { tail -5 "$OUT/$name.log"; return 1; }
  echo "$name: $(python3 -c "print(round($(date +%s.%N) - $t0, 1))") s" | tee -a "$log"
  cp "$W/$name/metrics.jsonl" "$OUT/$name.metrics.jsonl"
}
run cpu || fail "the CPU run (log: $OUT/cpu.log)"
HALF=$((STEPS / 20 * 10)) # a logged step
[ "$HALF" -ge 10 ] || fail "STEPS must be at least 20 (the resumed run stops at a logged step)"
run gpu_f32 "${gpu[@]}" --set train.ckpt_every="$HALF" || \
  fail "the GPU run, float32 (log: $OUT/gpu_f32.log)"
# stopped at HALF and resumed: the device's pipeline runs a batch ahead of training (the next
# batch's copy overlaps the step), so the checkpoint must name the stream's place after the
# batch trained on; a batch skipped or repeated shows in the losses after HALF
rm -rf "$W/gpu_f32_resume"
cp -r "$W/gpu_f32" "$W/gpu_f32_resume"
printf 'step_%08d\n' "$HALF" > "$W/gpu_f32_resume/checkpoints/latest"
: > "$W/gpu_f32_resume/metrics.jsonl"
if "$TS" train "$SRC/recipes/quickstart-clip.yaml" "${common[@]}" "${gpu[@]}" \
    --set train.out_dir="$W/gpu_f32_resume" --set train.ckpt_every="$HALF" \
    --resume "$W/gpu_f32_resume" > "$OUT/gpu_f32_resume.log" 2>&1; then
  cp "$W/gpu_f32_resume/metrics.jsonl" "$OUT/gpu_f32_resume.metrics.jsonl"
else
  tail -5 "$OUT/gpu_f32_resume.log"
  echo "the resumed GPU run failed (log: $OUT/gpu_f32_resume.log)" | tee -a "$log"
fi
run gpu_bf16 "${gpu[@]}" --set train.precision=bf16 || \
  echo "the GPU run with bf16 products failed (log: $OUT/gpu_bf16.log)" | tee -a "$log"
# heads of 64 (width 128, 2 heads): the tensor-core attention, the device's default where it
# applies, with bf16 products, beside the CPU run of the same model
h64=(--set model.vision.heads=2 --set model.text.heads=2)
run cpu_h64 "${h64[@]}" || fail "the CPU run with heads of 64 (log: $OUT/cpu_h64.log)"
run gpu_bf16_h64 "${gpu[@]}" --set train.precision=bf16 "${h64[@]}" || \
  echo "the GPU run with heads of 64 failed (log: $OUT/gpu_bf16_h64.log)" | tee -a "$log"
grep -h "training on\|refuse\|error" "$OUT"/gpu_*.log | head -6
# the device runs must have trained there, not quietly on the CPU
[ "$CPU_ONLY" = 1 ] || grep -q "clip: training on" "$OUT/gpu_f32.log" || \
  fail "the float32 GPU run does not say it trained on the device (log: $OUT/gpu_f32.log)"

# ---- the curves ----
python3 - "$OUT" "$CPU_ONLY" "$HALF" <<'PY'
import json, os, sys
out, cpu_only, half = sys.argv[1], sys.argv[2] == "1", int(sys.argv[3])
def read(name):
    p = os.path.join(out, name + ".metrics.jsonl")
    if not os.path.exists(p):
        return None
    rows = [json.loads(l) for l in open(p)]
    train = {r["step"]: r for r in rows if r.get("kind") == "train"}
    ev = [r for r in rows if r.get("kind") == "eval"]
    return train, (ev[-1] if ev else {})
runs = {n: read(n) for n in ("cpu", "gpu_f32", "gpu_bf16", "cpu_h64", "gpu_bf16_h64",
                            "gpu_f32_resume")}
cpu, f32, bf = runs["cpu"], runs["gpu_f32"], runs["gpu_bf16"]
steps = sorted(cpu[0])
print("step   cpu loss   gpu f32    gpu bf16")
worst = 0.0
for s in steps:
    a = cpu[0][s]["loss"]
    b = f32[0].get(s, {}).get("loss", float("nan"))
    c = bf[0].get(s, {}).get("loss", float("nan")) if bf else float("nan")
    worst = max(worst, abs(a - b)) if b == b else float("inf")
    print(f"{s:5d}  {a:9.4f}  {b:9.4f}  {c:9.4f}")
def sps(r):
    v = [x.get("samples_per_s") for x in r[0].values() if x.get("samples_per_s")]
    return sorted(v)[len(v) // 2] if v else float("nan")
for n, r in runs.items():
    if r:
        e = r[1]
        print(f"{n:12s} {sps(r):8.0f} samples/s (median of the logged intervals), zero-shot "
              f"shape {e.get('zeroshot_shape_top1', float('nan')):.3f} colour "
              f"{e.get('zeroshot_colour_top1', float('nan')):.3f}")
ok = bool(steps) and worst < 0.05
print(f"RESULT quickstart {'ok' if ok else 'FAILED'}: largest |cpu - gpu f32| loss "
      f"difference {worst:.2e} over {len(steps)} logged steps (limit 5e-2)")
# heads of 64: bf16 products and the tensor-core attention against the CPU's float32; bf16
# curves wander by ~0.15 on this model, a broken attention by far more (or NaN)
hc, hg = runs["cpu_h64"], runs["gpu_bf16_h64"]
worst_h, n_h = float("inf"), 0
if hc and hg:
    print("step   cpu loss   gpu bf16 (heads of 64)")
    worst_h = 0.0
    for s in sorted(hc[0]):
        a = hc[0][s]["loss"]
        b = hg[0].get(s, {}).get("loss", float("nan"))
        worst_h = max(worst_h, abs(a - b)) if b == b else float("inf")
        n_h += 1
        print(f"{s:5d}  {a:9.4f}  {b:9.4f}")
log = os.path.join(out, "gpu_bf16_h64.log")
tc = cpu_only or (os.path.exists(log) and "attention on the tensor cores" in open(log).read())
ok_h = n_h > 0 and worst_h < 0.3 and tc
print(f"RESULT quickstart heads of 64 {'ok' if ok_h else 'FAILED'}: largest |cpu - gpu bf16| "
      f"loss difference {worst_h:.2e} over {n_h} logged steps (limit 0.3; bf16 products, the "
      f"tensor-core attention{'' if tc else ', which the run does not say it used'})")
# resumed at HALF: the losses after it, against the run that never stopped (the device's
# float32 sums are not repeatable to the bit, so not bit for bit; on the CPU a checkpoint one
# batch off moved the losses of steps 40-60 by 4e-3, 1.9e-2 and 1.7e-2)
rs, full = runs["gpu_f32_resume"], runs["gpu_f32"]
worst_r, n_r = float("inf"), 0
if rs and full:
    worst_r = 0.0
    for s in sorted(rs[0]):
        b = full[0].get(s, {}).get("loss", float("nan"))
        d = abs(rs[0][s]["loss"] - b)
        worst_r = max(worst_r, d) if d == d else float("inf")
        n_r += 1
    want = [s for s in sorted(full[0]) if s > half]
    if sorted(rs[0]) != want:
        print(f"the resumed run logged steps {sorted(rs[0])}, the unbroken one {want}")
        n_r = 0
ok_r = n_r > 0 and worst_r < 5e-3
print(f"RESULT quickstart resumed {'ok' if ok_r else 'FAILED'}: largest |resumed - unbroken| "
      f"gpu f32 loss difference {worst_r:.2e} over {n_r} logged steps (limit 5e-3)")
sys.exit(0 if ok and ok_h and ok_r else 1)
PY
