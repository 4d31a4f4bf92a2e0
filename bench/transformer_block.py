#!/usr/bin/env python3
"""transformer_block.py: the driver of the transformer-block benchmark, tessera against PyTorch.

Runs, in one go, the C program bench/transformer_block (tessera's timings, dnnl_sgemm on this
machine, the per-op profile) and the same block in PyTorch (open_clip's ResidualAttentionBlock:
ln_1 -> nn.MultiheadAttention with the packed in_proj -> residual, ln_2 -> c_fc, GELU, c_proj
-> residual), forward + backward from y with a fixed upstream gradient r (loss = sum(y * r)),
and prints one side-by-side table: ms/step (median and spread), the ratio, GFLOP/s counted
analytically, the fraction of the measured sgemm peak, and peak memory.

PyTorch is the one a user would pick today: the current wheel from PyPI, installed into a
virtual environment under the build tree (BUILD/bench-venv) the first time this runs (several
minutes, about 4 GB with the CUDA libraries the default Linux wheel pulls). When that fails, the
script falls back to Debian's python3-torch (/usr/bin/python3) and says so in the table.

PyTorch is run in four separate processes (so that memory is measured fresh in each):
  out of the box  the environment as it is, no thread setting, fp32 and bf16 autocast;
  tuned           torch.set_num_threads(THREADS), OMP_NUM_THREADS=MKL_NUM_THREADS=THREADS,
                  OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset (they only matter to an
                  OpenBLAS-backed torch such as Debian's), and for an MKL-backed torch on an AMD
                  CPU an LD_PRELOAD shim that makes MKL take its AVX-512 (Intel) code path,
                  which it refuses non-Intel CPUs by default (built from C here into the venv).

What it deliberately is not: a test. Nothing is asserted and nothing here runs under ctest.
Usage: python3 bench/transformer_block.py [--build build] [--reps 10] [--warmup 3] ...
(--help lists all). Needs the C program built: cmake --build BUILD --target transformer_block.
"""
import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

SHIM_C = "int mkl_serv_intel_cpu_true(void) { return 1; }\n"


# ---------------------------------------------------------------------------------------------
# The PyTorch side (runs inside the venv's python with --worker)

def read_status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return -1


def reset_peak_rss():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def worker(a):
    import torch
    import torch.nn as nn
    from collections import OrderedDict

    if a.set_threads:
        torch.set_num_threads(a.set_threads)
    torch.manual_seed(0)
    B, T, C, H = a.batch, a.tokens, a.width, a.heads
    F = int(C * a.mlp_ratio)

    class ResidualAttentionBlock(nn.Module):
        """open_clip.transformer.ResidualAttentionBlock without ls/drop-path (identity there)."""

        def __init__(self):
            super().__init__()
            self.ln_1 = nn.LayerNorm(C)
            self.attn = nn.MultiheadAttention(C, H, batch_first=True)
            self.ln_2 = nn.LayerNorm(C)
            self.mlp = nn.Sequential(OrderedDict([
                ("c_fc", nn.Linear(C, F)), ("gelu", nn.GELU()), ("c_proj", nn.Linear(F, C))]))

        def forward(self, x):
            q = self.ln_1(x)
            x = x + self.attn(q, q, q, need_weights=False)[0]
            return x + self.mlp(self.ln_2(x))

    m = ResidualAttentionBlock().train()
    x = torch.rand(B, T, C) * 2 - 1
    x.requires_grad_(True)
    r = torch.rand(B, T, C) * 2 - 1
    bf16 = a.prec == "bf16"

    def step():
        m.zero_grad(set_to_none=True)
        x.grad = None
        if bf16:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                y = m(x)
        else:
            y = m(x)
        y.backward(r.to(y.dtype))

    param_bytes = sum(p.numel() * p.element_size() for p in m.parameters())
    rss0 = read_status("VmRSS")
    ok = reset_peak_rss()
    step()  # the first step: its resident growth is the memory the step needs
    hwm = read_status("VmHWM")
    growth = hwm - rss0 if ok and rss0 >= 0 and hwm >= 0 else -1
    for _ in range(a.warmup):
        step()
    ts = []
    for _ in range(a.reps):
        t0 = time.perf_counter()
        step()
        ts.append(time.perf_counter() - t0)
    ts.sort()
    cfg = torch.__config__.show()
    blas = "MKL" if "BLAS_INFO=mkl" in cfg else ("OpenBLAS/other" if "BLAS_INFO" in cfg else "?")
    print(json.dumps({
        "kind": "torch", "version": torch.__version__, "prec": a.prec,
        "threads": torch.get_num_threads(), "blas": blas,
        "median_ms": 1e3 * statistics.median(ts), "min_ms": 1e3 * ts[0], "max_ms": 1e3 * ts[-1],
        "reps": a.reps, "rss_growth": growth, "param_bytes": param_bytes,
        "param_and_grad_bytes": 2 * param_bytes}))


# ---------------------------------------------------------------------------------------------
# The driver

def ensure_venv(venv, log):
    py = os.path.join(venv, "bin", "python")
    if os.path.exists(py):
        ok = subprocess.run([py, "-c", "import torch"], capture_output=True).returncode == 0
        if ok:
            return py
    log(f"creating {venv} and installing torch from PyPI (several minutes, once)")
    try:
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        subprocess.run([py, "-m", "pip", "install", "--progress-bar", "off", "torch", "numpy"],
                       check=True, stdout=sys.stderr)
        return py
    except (subprocess.CalledProcessError, OSError) as e:
        log(f"could not install torch into {venv}: {e}")
        return None


def build_shim(venv, log):
    """The LD_PRELOAD library that lets MKL use its Intel (AVX-512) kernels on AMD."""
    so = os.path.join(venv, "libmkl_intel_cpu_shim.so")
    if os.path.exists(so):
        return so
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        log("no C compiler: the tuned MKL run goes without the AVX-512 shim")
        return None
    src = so[:-3] + ".c"
    with open(src, "w") as f:
        f.write(SHIM_C)
    if subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", so, src]).returncode != 0:
        return None
    return so


def cpu_vendor():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return line.split(":")[1].strip()
    except OSError:
        pass
    return "?"


def run_json(cmd, env, log):
    log("running: " + " ".join(cmd))
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        log(p.stderr[-3000:])
        raise SystemExit(f"transformer_block.py: command failed ({p.returncode}): {' '.join(cmd)}")
    out = []
    for line in p.stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def fmt_mb(b):
    return f"{b / 2**20:7.0f}" if b is not None and b >= 0 else "      ?"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"),
                    help="CMake build folder holding bench/transformer_block (default: build)")
    ap.add_argument("--venv", help="virtual environment with PyPI torch (default BUILD/bench-venv;"
                    " created when missing)")
    ap.add_argument("--torch-python", help="use this python's torch instead of the venv")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=197)
    ap.add_argument("--width", type=int, default=384)
    ap.add_argument("--heads", type=int, default=6)
    ap.add_argument("--mlp-ratio", type=float, default=4.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=2,
                    help="run every configuration this many times, interleaved, and keep each "
                    "one's fastest round (default 2)")
    ap.add_argument("--no-profile", action="store_true", help="skip tessera's per-op profile")
    ap.add_argument("--show-profile", action="store_true", help="print the per-op profile too")
    ap.add_argument("--json", help="also write every raw record to this file")
    # worker mode (internal)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--prec", default="f32", help=argparse.SUPPRESS)
    ap.add_argument("--set-threads", type=int, default=0, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        worker(a)
        return

    def log(msg):
        print(f"[transformer_block] {msg}", file=sys.stderr, flush=True)

    exe = os.path.join(a.build, "bench", "transformer_block")
    if not os.path.exists(exe):
        raise SystemExit(f"transformer_block.py: {exe} not found; build it first: "
                         f"cmake --build {a.build} --target transformer_block")
    shape = ["--batch", str(a.batch), "--tokens", str(a.tokens), "--width", str(a.width),
             "--heads", str(a.heads), "--mlp-ratio", str(a.mlp_ratio)]
    reps = ["--warmup", str(a.warmup), "--reps", str(a.reps)]

    # PyTorch first located, so that a failed install is known before the long runs.
    fallback = None
    if a.torch_python:
        tpy = a.torch_python
    else:
        tpy = ensure_venv(a.venv or os.path.join(a.build, "bench-venv"), log)
        if tpy is None:
            tpy = "/usr/bin/python3"
            fallback = "PyPI torch could not be installed: Debian's python3-torch instead"
    venv_dir = os.path.dirname(os.path.dirname(tpy))

    # tessera and PyTorch, interleaved over rounds: on a shared machine a burst of other work
    # only ever adds time, so each configuration keeps its round with the lowest median.
    cmd = [exe, "--threads", str(a.threads), "--prec", "both"] + shape + reps
    if not a.no_profile:
        cmd.append("--profile")
    wcmd = [tpy, os.path.abspath(__file__), "--worker"] + shape + reps
    box_env = dict(os.environ)
    tuned_env = dict(os.environ)
    for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        tuned_env.pop(k, None)
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        tuned_env[k] = str(a.threads)
    tuned_notes = [f"torch.set_num_threads({a.threads})",
                   f"OMP_NUM_THREADS=MKL_NUM_THREADS={a.threads}",
                   "OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE unset"]
    probe = subprocess.run([tpy, "-c", "import torch; print(torch.__config__.show())"],
                           capture_output=True, text=True, env=box_env).stdout
    if "BLAS_INFO=mkl" in probe and cpu_vendor() != "GenuineIntel":
        shim = build_shim(venv_dir if os.access(venv_dir, os.W_OK) else a.build, log)
        if shim:
            tuned_env["LD_PRELOAD"] = (shim + " " + tuned_env.get("LD_PRELOAD", "")).strip()
            tuned_notes.append("LD_PRELOAD shim mkl_serv_intel_cpu_true()=1 so MKL runs its "
                               "AVX-512 kernels on this AMD CPU")
    best_tes, best_tor = {}, {}
    for _ in range(max(1, a.rounds)):
        run = run_json(cmd, dict(os.environ), log)
        for r in run:
            if r["kind"] == "tessera":
                old = best_tes.get(r["prec"])
                if old is None or r["median_ms"] < old[0]["median_ms"]:
                    best_tes[r["prec"]] = (r, [x for x in run if x.get("prec") == r["prec"]
                                               and x["kind"] != "tessera"])
            elif r["kind"] in ("sgemm_peak", "sgemm_block", "config", "sgemm_shape"):
                key = (r["kind"], r.get("layer"), r.get("pass"))
                old = best_tes.get(key)
                if old is None or r.get("ms", 0) < old[0].get("ms", 0):
                    best_tes[key] = (r, [])
        for label, e, extra in (("box", box_env, []), ("tuned", tuned_env,
                                                        ["--set-threads", str(a.threads)])):
            for prec in ("f32", "bf16"):
                for r in run_json(wcmd + extra + ["--prec", prec], e, log):
                    r["setup"] = label
                    old = best_tor.get((label, prec))
                    if old is None or r["median_ms"] < old["median_ms"]:
                        best_tor[(label, prec)] = r
    recs = []
    for r, extra in best_tes.values():
        recs.append(r)
        recs.extend(extra)
    recs.extend(best_tor.values())

    if a.json:
        with open(a.json, "w") as f:
            for r in recs:
                f.write(json.dumps(r) + "\n")
    print_table(a, recs, tuned_notes, fallback)


def print_table(a, recs, tuned_notes, fallback):
    get = lambda kind: [r for r in recs if r["kind"] == kind]
    cfg = get("config")[0]
    peak = get("sgemm_peak")
    blockg = get("sgemm_block")
    peak_g = peak[0]["gflops"] if peak else None
    tes = {r["prec"]: r for r in get("tessera")}
    tor = {(r["setup"], r["prec"]): r for r in get("torch")}
    any_t = next(iter(tes.values()))
    fl_lin, fl_att = any_t["flops_linear"], any_t["flops_attention"]
    flops = fl_lin + fl_att
    tv = next(iter(tor.values()))
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":")[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass

    print()
    print(f"One pre-norm transformer block (open_clip ResidualAttentionBlock), forward + backward "
          f"incl. parameter grads")
    print(f"B={a.batch} T={a.tokens} C={a.width} H={a.heads} MLP {a.mlp_ratio:g}x, "
          f"{a.threads} threads, median of {a.reps} steps after {a.warmup} warmup "
          f"(best of {a.rounds} interleaved rounds); "
          f"CPU: {cpu}, {os.cpu_count()} cores")
    print(f"tessera: oneDNN {cfg['onednn']} (dnnl_sgemm); PyTorch {tv['version']} "
          f"({tv['blas']} BLAS)" + (f"  [NOTE: {fallback}]" if fallback else ""))
    print(f"FLOPs/step (analytic, 2MNK fwd, 2x that bwd): {fl_lin / 1e9:.1f} G linear + "
          f"{fl_att / 1e9:.1f} G attention = {flops / 1e9:.1f} G")
    if peak_g:
        line = f"dnnl_sgemm peak (2048^3, {a.threads} threads): {peak_g:.0f} GFLOP/s"
        if blockg:
            line += (f"; at the block's 12 linear-layer shapes: {blockg[0]['gflops']:.0f} GFLOP/s "
                     f"({blockg[0]['ms']:.0f} ms for one step's linear products)")
        print(line)
    print()
    hdr = (f"{'row':58s} {'ms/step':>8s} {'min-max':>15s} {'GFLOP/s':>8s} {'%peak':>6s} "
           f"{'peak MB':>8s} {'tessera x':>9s}")
    print(hdr)
    print("-" * len(hdr))

    def row(name, r, mem, ref=None):
        ms = r["median_ms"]
        g = flops / (ms * 1e-3) / 1e9
        pct = f"{100 * g / peak_g:5.0f}%" if peak_g else "     ?"
        spread = f"{r['min_ms']:.0f}-{r['max_ms']:.0f}"
        ratio = f"{ms / ref:8.2f}x" if ref else f"{'':9s}"
        print(f"{name:58s} {ms:8.1f} {spread:>15s} {g:8.1f} {pct:>6s} {fmt_mb(mem):>8s} {ratio}")

    def tmem(r):
        return r["arena_high_water"] + r["param_arena"]

    def pmem(r):
        return r["rss_growth"] + r["param_bytes"] if r["rss_growth"] >= 0 else -1

    ver = tv["version"]
    for prec in ("f32", "bf16"):
        t = tes.get(prec)
        if t:
            row(f"tessera {prec}" + (" (ctx TS_PREC_BF16)" if prec == "bf16" else ""), t,
                tmem(t))
        for setup, desc in (("box", "out of the box"), ("tuned", "tuned")):
            p = tor.get((setup, prec))
            if p:
                name = f"PyTorch {ver} {prec}" + (" autocast" if prec == "bf16" else "") + \
                    f" {desc} ({p['threads']} thr)"
                row(name, p, pmem(p), t["median_ms"] if t else None)
    print()
    print("tessera x = PyTorch ms / tessera ms (throughput ratio, > 1 means tessera is faster).")
    print("%peak = all FLOPs of the step / time, over the dnnl_sgemm 2048^3 (float32) peak; bf16 "
          "rows are measured against the same float32 peak, so they can pass 100%.")
    print("peak MB: tessera = step-arena high-water + parameter arena (params, grads and two "
          "AdamW moment slots);")
    print("         PyTorch = resident-set growth (VmHWM after clear_refs) over the first step "
          "+ parameter bytes;")
    for prec in ("f32", "bf16"):
        t = tes.get(prec)
        if t and t["rss_growth"] >= 0:
            print(f"         tessera {prec} resident-set growth over its first step, same method: "
                  f"{t['rss_growth'] / 2**20:.0f} MB")
    print("tuned PyTorch: " + "; ".join(tuned_notes) + ".")
    print("out of the box: the environment as given (" + ", ".join(
        f"{k}={os.environ[k]}" for k in ("OPENBLAS_CORETYPE", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
        if k in os.environ) + "), torch's default threads.")

    prof = [r for r in recs if r["kind"] == "profile" and r["prec"] == "f32"]
    if prof:
        tot = next(r["ms"] for r in recs if r["kind"] == "profile_total" and r["prec"] == "f32")
        lin_ms = sum(r["ms"] for r in prof if " linear " in r["op"] or " matmul " in r["op"])
        att_ms = sum(r["ms"] for r in prof if " attention " in r["op"])
        lin_g = fl_lin / (lin_ms * 1e-3) / 1e9
        att_g = fl_att / (att_ms * 1e-3) / 1e9
        print()
        print(f"tessera f32 profile (one profiled step {tot:.0f} ms):")
        print(f"  linear-layer products fwd+bwd: {lin_ms:6.1f} ms = {lin_g:5.0f} GFLOP/s = "
              f"{100 * lin_g / peak_g:3.0f}% of sgemm peak" +
              (f", {100 * lin_g / blockg[0]['gflops']:3.0f}% of sgemm at these shapes"
               if blockg else ""))
        print(f"  attention (fused) fwd+bwd:     {att_ms:6.1f} ms = {att_g:5.0f} GFLOP/s = "
              f"{100 * att_g / peak_g:3.0f}% of sgemm peak")
        print(f"  everything else:               {tot - lin_ms - att_ms:6.1f} ms")
        if a.show_profile:
            for r in sorted(prof, key=lambda r: -r["ms"]):
                print(f"    {r['ms']:7.2f} ms  {r['calls']:4.1f}x  {r['op']}")

    print()
    print("goals (reported, not asserted):")
    t, p = tes.get("f32"), tor.get(("tuned", "f32"))
    if t and p:
        x = p["median_ms"] / t["median_ms"]
        print(f"  f32 throughput >= 1.3x tuned PyTorch:     {x:.2f}x  "
              f"{'met' if x >= 1.3 else 'NOT met'}")
    if prof and peak_g:
        pc = 100 * lin_g / peak_g
        print(f"  matmul part >= 70% of sgemm peak:         {pc:.0f}%  "
              f"{'met' if pc >= 70 else 'NOT met'}")
    tb = tes.get("bf16")
    pb = [tor.get((s, "bf16")) for s in ("box", "tuned") if tor.get((s, "bf16"))]
    if tb and pb:
        best = min(r["median_ms"] for r in pb)
        print(f"  bf16 ahead of PyTorch bf16 autocast:      {best / tb['median_ms']:.2f}x  "
              f"{'met' if best > tb['median_ms'] else 'NOT met'}")
    if t and p and pmem(p) > 0:
        print(f"  f32 peak memory <= PyTorch's:             {fmt_mb(tmem(t)).strip()} MB vs "
              f"{fmt_mb(pmem(p)).strip()} MB  {'met' if tmem(t) <= pmem(p) else 'NOT met'}")


if __name__ == "__main__":
    main()
