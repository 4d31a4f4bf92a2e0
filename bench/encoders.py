#!/usr/bin/env python3
"""encoders.py: forward + backward images/s of ViT-S/16 and CSWin-T at 224, tessera beside
PyTorch with the same weights, in one run.

For each model a PyTorch worker (the current PyPI torch in BUILD/bench-venv, as
transformer_block.py installs it; timm 1.0.31 and torchvision are added there with --no-deps on
first use)
builds the model, writes its state_dict as safetensors, and the C program bench/encoders loads
those weights by name. PyTorch's ViT is timm's vit_small_patch16_224; its CSWin-T is the plain
torch.nn model of tests/parity/cases_cswin.py (the official code rewritten, checked by the
parity test). Both sides then serve "run N" over pipes and the driver interleaves their rounds
(tessera, PyTorch, tessera, ...), so that the machine's drift hits both alike, and prints the
median images/s, the ratio, and GFLOP/s from the products' FLOPs (matmuls and convolutions of
forward and backward, counted once by torch's FlopCounterMode on the PyTorch model and used for
both). With --profile it also prints tessera's per-op time of one step for each model, which is
how the CSWin-ViT gap is explained.

PyTorch runs tuned: torch.set_num_threads(THREADS), and on AMD CPUs the MKL shim that
transformer_block.py builds (MKL's AVX-512 path), when present.
What it deliberately is not: a test. Nothing is asserted.
Usage: python3 bench/encoders.py [--build build] [--venv DIR] [--rounds 7] [--steps 2]
       [--batch 16] [--threads 2] [--models vit,cswin] [--profile]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

from served import Served

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TIMM = "timm==1.0.31"


# ---------------------------------------------------------------------------------------------
# The PyTorch side (runs inside the venv's python with --worker)

def worker(a):
    import numpy as np
    import torch
    sys.path.insert(0, os.path.join(ROOT, "tests", "parity"))
    from reference import write_safetensors

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    if a.worker == "vit":
        import timm
        m = timm.create_model("vit_small_patch16_224", pretrained=False)
    else:
        import cases_cswin
        m = cases_cswin.CSWinTransformer()  # CSWin-T at 224: the defaults are the official ones
    m.train()
    sd = {k: v.detach().float().numpy().astype(np.float32) for k, v in m.state_dict().items()}
    write_safetensors(a.weights, sd, {"format": "pt"})
    x = torch.rand(a.batch, 3, 224, 224) * 2 - 1
    r = torch.rand(a.batch, 1000) * 2 - 1

    def step():
        m.zero_grad(set_to_none=True)
        m(x).backward(r)

    from torch.utils.flop_counter import FlopCounterMode
    fc = FlopCounterMode(display=False)
    with fc:
        step()
    print(json.dumps({"kind": "ready", "version": torch.__version__,
                      "threads": torch.get_num_threads(), "flops": fc.get_total_flops(),
                      "params": sum(p.numel() for p in m.parameters())}), flush=True)
    import time
    for line in sys.stdin:
        if line.startswith("run"):
            n = int(line.split()[1])
            t0 = time.perf_counter()
            for _ in range(n):
                step()
            print(json.dumps({"kind": "round", "steps": n, "s": time.perf_counter() - t0}),
                  flush=True)
        elif line.startswith("quit"):
            break


# ---------------------------------------------------------------------------------------------
# The driver

def ensure_timm(py, log):
    if subprocess.run([py, "-c", "import timm"], capture_output=True).returncode == 0:
        return
    # timm imports torchvision (which needs pillow); torchvision's wheel pins an exact torch, so
    # it goes in without dependencies beside the torch that is there.
    log(f"installing {TIMM} and torchvision (--no-deps), pillow into the bench venv")
    pip = [py, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run(pip + ["pillow"], check=True)
    subprocess.run(pip + ["--no-deps", TIMM, "torchvision"], check=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--venv", default=None, help="PyTorch venv (default BUILD/bench-venv)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps", type=int, default=2, help="steps per round")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--models", default="vit,cswin")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--weights", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        return worker(a)

    def log(msg):
        print(f"[encoders] {msg}", file=sys.stderr, flush=True)

    venv = a.venv or os.path.join(a.build, "bench-venv")
    py = os.path.join(venv, "bin", "python")
    if not os.path.exists(py):
        raise SystemExit(f"encoders.py: no venv at {venv}; run bench/transformer_block.sh once "
                         f"to create it, or pass --venv")
    ensure_timm(py, log)
    exe = os.path.join(a.build, "bench", "encoders")
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), MKL_NUM_THREADS=str(a.threads))
    env.pop("OPENBLAS_CORETYPE", None)
    shim = os.path.join(venv, "libmkl_intel_cpu_shim.so")
    torch_env = dict(env)
    with open("/proc/cpuinfo") as f:
        amd = "AuthenticAMD" in f.read()
    if amd and os.path.exists(shim):
        torch_env["LD_PRELOAD"] = shim
    names = {"vit": "ViT-S/16 (timm vit_small_patch16_224)", "cswin": "CSWin-T (official, 224)"}
    rows, profiles = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for model in a.models.split(","):
            weights = os.path.join(tmp, f"{model}.safetensors")
            log(f"{model}: PyTorch builds the model and writes {weights}")
            pt = Served([py, os.path.abspath(__file__), "--worker", model, "--weights", weights,
                         "--batch", str(a.batch), "--threads", str(a.threads)], torch_env)
            ts = Served([exe, "--model", model, "--weights", weights, "--batch", str(a.batch),
                         "--threads", str(a.threads)], env)
            ts.ask("run 1")  # warm-up: the arena grows and the primitives are made
            pt.ask("run 1")
            t_ts, t_pt = [], []
            for i in range(a.rounds):
                o = ts.ask(f"run {a.steps}")[-1]
                t_ts.append(o["s"] / o["steps"])
                o = pt.ask(f"run {a.steps}")[-1]
                t_pt.append(o["s"] / o["steps"])
                log(f"{model} round {i + 1}/{a.rounds}: tessera {1e3 * t_ts[-1]:.0f} ms, "
                    f"PyTorch {1e3 * t_pt[-1]:.0f} ms")
            if a.profile:
                profiles[model] = ts.ask("profile", until="profile_total")
            ts.close()
            pt.close()
            rows.append((model, pt.ready, statistics.median(t_ts), statistics.median(t_pt),
                         min(t_ts), max(t_ts), min(t_pt), max(t_pt), ts.ready["params"]))

    print(f"\nforward + backward, batch {a.batch}, 224x224, {a.threads} threads, median of "
          f"{a.rounds} interleaved rounds of {a.steps} steps; PyTorch {rows[0][1]['version']} "
          f"({rows[0][1]['threads']} threads{', MKL AVX-512 shim' if 'LD_PRELOAD' in torch_env else ''})")
    print(f"{'model':40s} {'params':>10s} {'GFLOP/step':>10s} {'tessera img/s':>14s} "
          f"{'PyTorch img/s':>14s} {'ratio':>6s} {'tessera GFLOP/s':>16s} {'PyTorch GFLOP/s':>16s}")
    for model, ready, ts_s, pt_s, tmin, tmax, pmin, pmax, params in rows:
        fl = ready["flops"]
        print(f"{names[model]:40s} {params:10d} {fl / 1e9:10.1f} {a.batch / ts_s:14.2f} "
              f"{a.batch / pt_s:14.2f} {pt_s / ts_s:6.2f} {fl / ts_s / 1e9:16.1f} "
              f"{fl / pt_s / 1e9:16.1f}")
        print(f"{'':40s} {'':10s} {'':10s} {'spread ms':>14s} "
              f"{1e3 * tmin:6.0f}-{1e3 * tmax:<7.0f} {1e3 * pmin:6.0f}-{1e3 * pmax:.0f}")
    print("ratio = PyTorch time / tessera time (above 1: tessera faster). Goal: 1.3.")
    for model, prof in profiles.items():
        total = prof[-1]["ms"]
        print(f"\ntessera per-op time of one {model} step (profiled, {total:.0f} ms in all):")
        ops = sorted((o for o in prof if o["kind"] == "profile"), key=lambda o: -o["ms"])
        for o in ops:
            if o["ms"] < 0.005 * total:
                continue
            print(f"  {o['op']:32s} {o['ms']:9.1f} ms {100 * o['ms'] / total:5.1f}%  "
                  f"{o['calls']:5d} calls")


if __name__ == "__main__":
    main()
