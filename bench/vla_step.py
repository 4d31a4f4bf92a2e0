#!/usr/bin/env python3
"""vla_step.py: diffusion policy head training steps/s, tessera beside PyTorch, in one run.

The model is Diffusion Policy's transformer denoiser as action/heads.c builds it: pre-norm
decoder blocks (torch.nn.TransformerDecoderLayer, norm_first) over the noised chunk of H actions
with cross-attention to the observation tokens and a sinusoidal timestep token (Linear-Mish-
Linear), a final layernorm and a readout. The PyTorch side is tests/parity/heads_ref.py's
Head (the module the parity tests check tessera against), run in the current PyPI torch
of BUILD/bench-venv; it writes its state_dict and a fixed batch as safetensors, and
bench/vla_step (C) loads them by name. A step on either side: timesteps uniform in [0, 100),
Gaussian noise, x_t by the squaredcos_cap_v2 schedule, the denoiser, MSE on the noise,
backward, AdamW (lr 1e-4, betas 0.9/0.95, weight decay 1e-3 on the matrices only). Both sides
serve "run N" over pipes and the driver interleaves their rounds so that the machine's drift
hits both alike, then prints medians and the ratio.

PyTorch runs tuned: torch.set_num_threads(THREADS), and on AMD CPUs the MKL shim that
transformer_block.py builds (MKL's AVX-512 path), when present.
What it deliberately is not: a test (nothing is asserted) or a timing of an encoder.
Usage: python3 bench/vla_step.py [--build build] [--venv DIR] [--rounds 7] [--steps 3]
       [--threads 2] [--batch 64] [--width 256] [--depth 4] [--heads 4] [--horizon 16]
       [--action-dim 7] [--cond-tokens 10] [--cond-dim 256]
"""
import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time

from served import Served

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SIZE_KEYS = ["batch", "width", "depth", "heads", "horizon", "action_dim", "cond_tokens",
             "cond_dim"]


def alphas_cumprod(n):
    """diffusers' squaredcos_cap_v2 betas, cumprod of 1 - beta, in double."""
    def abar(s):
        return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2
    out, p = [], 1.0
    for i in range(n):
        p *= 1 - min(1 - abar((i + 1) / n) / abar(i / n), 0.999)
        out.append(p)
    return out


# ---------------------------------------------------------------------------------------------
# The PyTorch side (runs inside the venv's python with --worker)

def worker(a):
    import numpy as np
    import torch
    import torch.nn.functional as F
    sys.path.insert(0, os.path.join(ROOT, "tests", "parity"))
    from heads_ref import Head
    from reference import write_safetensors

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    B, H, A = a.batch, a.horizon, a.action_dim
    model = Head("diffusion", H=H, A=A, CD=a.cond_dim, W=a.width, DEPTH=a.depth,
                 HEADS=a.heads, RATIO=4.0)
    model.train()
    named = list(model.named_parameters())

    def no_decay(n, p):
        return p.ndim < 2 or "pos_embed" in n or "queries" in n
    opt = torch.optim.AdamW([
        {"params": [p for n, p in named if no_decay(n, p)], "weight_decay": 0.0},
        {"params": [p for n, p in named if not no_decay(n, p)], "weight_decay": 1e-3},
    ], lr=1e-4, betas=(0.9, 0.95), eps=1e-8)
    g = torch.Generator().manual_seed(7)
    cond = torch.randn(B, a.cond_tokens, a.cond_dim, generator=g)
    actions = torch.rand(B, H, A, generator=g) * 2 - 1
    sd = {"head." + k: v.detach().float().numpy().astype(np.float32)
          for k, v in model.state_dict().items()}
    sd["_batch.cond"] = cond.numpy().astype(np.float32)
    sd["_batch.actions"] = actions.numpy().astype(np.float32)
    write_safetensors(a.weights, sd, {"format": "pt"})
    abar = torch.tensor(alphas_cumprod(100), dtype=torch.float32)

    def step():
        opt.zero_grad(set_to_none=True)
        t = torch.randint(0, 100, (B,))
        eps = torch.randn(B, H, A)
        ab = abar[t][:, None, None]
        x_t = ab.sqrt() * actions + (1 - ab).sqrt() * eps
        loss = F.mse_loss(model(cond, x_t, t), eps)
        loss.backward()
        opt.step()
        return float(loss.detach())

    print(json.dumps({"kind": "ready", "version": torch.__version__,
                      "threads": torch.get_num_threads(),
                      "params": sum(p.numel() for p in model.parameters())}), flush=True)
    for line in sys.stdin:
        if line.startswith("run"):
            n = int(line.split()[1])
            t0 = time.perf_counter()
            for _ in range(n):
                loss = step()
            print(json.dumps({"kind": "round", "steps": n, "s": time.perf_counter() - t0,
                              "loss": loss}), flush=True)
        elif line.startswith("quit"):
            break


# ---------------------------------------------------------------------------------------------
# The driver

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--venv", default=None, help="PyTorch venv (default BUILD/bench-venv)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps", type=int, default=3, help="steps per round")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--horizon", type=int, default=16)
    ap.add_argument("--action-dim", type=int, default=7)
    ap.add_argument("--cond-tokens", type=int, default=10)
    ap.add_argument("--cond-dim", type=int, default=256)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--weights", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        return worker(a)

    def log(msg):
        print(f"[vla_step] {msg}", file=sys.stderr, flush=True)

    venv = a.venv or os.path.join(a.build, "bench-venv")
    py = os.path.join(venv, "bin", "python")
    if not os.path.exists(py):
        raise SystemExit(f"vla_step.py: no venv at {venv}; run bench/transformer_block.sh once "
                         f"to create it, or pass --venv")
    exe = os.path.join(a.build, "bench", "vla_step")
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), MKL_NUM_THREADS=str(a.threads))
    shim = os.path.join(venv, "libmkl_intel_cpu_shim.so")
    torch_env = dict(env)
    with open("/proc/cpuinfo") as f:
        amd = "AuthenticAMD" in f.read()
    if amd and os.path.exists(shim):
        torch_env["LD_PRELOAD"] = shim
    sizes = []
    for k in SIZE_KEYS:
        sizes += ["--" + k.replace("_", "-"), str(getattr(a, k))]
    with tempfile.TemporaryDirectory() as tmp:
        weights = os.path.join(tmp, "head.safetensors")
        log(f"PyTorch builds the head and writes {weights}")
        pt = Served([py, os.path.abspath(__file__), "--worker", "--weights", weights,
                     "--threads", str(a.threads)] + sizes, torch_env)
        ts = Served([exe, "--weights", weights, "--threads", str(a.threads)] + sizes, env)
        if ts.ready["params"] != pt.ready["params"]:
            raise SystemExit(f"tessera has {ts.ready['params']} parameters, PyTorch "
                             f"{pt.ready['params']}")
        ts.ask("run 1"), pt.ask("run 1")  # warm-up
        t_ts, t_pt = [], []
        for i in range(a.rounds):
            o = ts.ask(f"run {a.steps}")[-1]
            t_ts.append(o["s"] / o["steps"])
            o = pt.ask(f"run {a.steps}")[-1]
            t_pt.append(o["s"] / o["steps"])
            log(f"round {i + 1}/{a.rounds}: tessera {1e3 * t_ts[-1]:.1f} ms, "
                f"PyTorch {1e3 * t_pt[-1]:.1f} ms")
        ts.close()
        pt.close()

    r = pt.ready
    ts_s, pt_s = statistics.median(t_ts), statistics.median(t_pt)
    print(f"\nDiffusion policy head training step (DDPM loss, backward, AdamW), {a.threads} "
          f"threads, median of {a.rounds} interleaved rounds of {a.steps} steps; PyTorch "
          f"{r['version']} ({r['threads']} threads"
          f"{', MKL AVX-512 shim' if 'LD_PRELOAD' in torch_env else ''})")
    print("model: " + ", ".join(f"{k} {getattr(a, k)}" for k in SIZE_KEYS) +
          f", {r['params']} parameters")
    print(f"{'tessera steps/s':>16s} {'PyTorch steps/s':>16s} {'ratio':>6s} "
          f"{'tessera ms':>12s} {'PyTorch ms':>12s}")
    print(f"{1 / ts_s:16.2f} {1 / pt_s:16.2f} {pt_s / ts_s:6.2f} "
          f"{1e3 * min(t_ts):5.1f}-{1e3 * max(t_ts):<6.1f} "
          f"{1e3 * min(t_pt):5.1f}-{1e3 * max(t_pt):<6.1f}")
    print("ratio = PyTorch time / tessera time (above 1: tessera faster). Goal: 1.5.")


if __name__ == "__main__":
    main()
