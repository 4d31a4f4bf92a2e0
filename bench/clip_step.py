#!/usr/bin/env python3
"""clip_step.py: CLIP training samples/s, tessera beside open_clip on PyTorch, in one run.

Two models: the quickstart's tiny CLIP (recipes/quickstart-clip.yaml's model section) at the
quickstart's batch, and open_clip's ViT-B-16 at batch 8. For each, a PyTorch worker (the current
PyPI torch in BUILD/bench-venv, as transformer_block.py installs it; open_clip_torch 3.3.0 is
added there with --no-deps on first use) builds open_clip's CLIP model from the same numbers,
writes its state_dict and the batch as safetensors, and bench/clip_step (C) loads both by name
(the first-step losses printed side by side agree). A
step is the whole training step on a fixed random batch: both towers, open_clip's ClipLoss,
backward, AdamW as open_clip's main.py sets it (betas 0.9/0.98, eps 1e-6, weight decay 0.2
except gains, biases and logit_scale), the logit-scale clamp. Both sides serve "run N" over
pipes and the driver interleaves their rounds (tessera, PyTorch, tessera, ...) so that the
machine's drift hits both alike, then prints medians and the ratio.

PyTorch runs tuned: torch.set_num_threads(THREADS), and on AMD CPUs the MKL shim that
transformer_block.py builds (MKL's AVX-512 path), when present.
What it deliberately is not: a test (nothing is asserted) or a timing of data loading.
Usage: python3 bench/clip_step.py [--build build] [--venv DIR] [--rounds 5] [--steps 2]
       [--threads 2] [--models quickstart,vit-b-16]
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
OPEN_CLIP = ["open_clip_torch==3.3.0", "ftfy==6.3.1", "regex==2026.11.19", "tqdm==4.70.1",
             "wcwidth==0.9.4"]

# name: (batch, embed_dim, vision (image, patch, width, layers, heads), text (ctx, vocab, width,
# layers, heads)). The quickstart row must match recipes/quickstart-clip.yaml.
MODELS = {
    "quickstart": (128, 128, (64, 8, 128, 4, 4), (32, 600, 128, 4, 4)),
    "vit-b-16": (8, 512, (224, 16, 768, 12, 12), (77, 49408, 512, 12, 8)),
}


def recipe_text(m):
    _, E, (S, P, W, L, H), (T, V, TW, TL, TH) = m
    return (f"model:\n  type: clip\n  embed_dim: {E}\n"
            f"  vision: {{type: vit, image_size: {S}, patch_size: {P}, width: {W}, layers: {L}, "
            f"heads: {H}, out_dim: {E}}}\n"
            f"  text: {{type: text, context_length: {T}, vocab_size: {V}, width: {TW}, "
            f"layers: {TL}, heads: {TH}, out_dim: {E}, eos_id: {V - 1}}}\n")


def random_batch(B, S, T, V, torch):
    """B images uniform in [-1, 1) of S x S and B token rows of T from a vocabulary of V: the
    start id V - 2, random ids, the end id V - 1 (the largest: argmax pooling reads there),
    zeros after it; seeded, so every run draws the same batch."""
    g = torch.Generator().manual_seed(7)
    images = torch.rand(B, 3, S, S, generator=g) * 2 - 1
    text = torch.zeros(B, T, dtype=torch.long)
    for b in range(B):
        end = int(torch.randint(2, T, (1,), generator=g))
        text[b, 0] = V - 2
        text[b, 1:end] = torch.randint(0, V - 2, (end - 1,), generator=g)
        text[b, end] = V - 1
    return images, text


# ---------------------------------------------------------------------------------------------
# The PyTorch side (runs inside the venv's python with --worker)

def worker(a):
    import numpy as np
    import torch
    from open_clip.loss import ClipLoss
    from open_clip.model import CLIP
    sys.path.insert(0, os.path.join(ROOT, "tests", "parity"))
    from reference import write_safetensors

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    B, E, (S, P, W, L, H), (T, V, TW, TL, TH) = MODELS[a.worker]
    model = CLIP(E, dict(image_size=S, patch_size=P, width=W, layers=L, head_width=W // H),
                 dict(context_length=T, vocab_size=V, width=TW, layers=TL, heads=TH))
    model.train()

    def exclude(n, p):
        return p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n
    named = list(model.named_parameters())
    opt = torch.optim.AdamW([
        {"params": [p for n, p in named if exclude(n, p)], "weight_decay": 0.0},
        {"params": [p for n, p in named if not exclude(n, p)], "weight_decay": 0.2},
    ], lr=1e-4, betas=(0.9, 0.98), eps=1e-6)
    loss_fn = ClipLoss()
    images, text = random_batch(B, S, T, V, torch)
    # the weights and the batch go to tessera in one file (ids as floats: exact below 2^24)
    sd = {k: v.detach().float().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    sd["_batch.images"] = images.numpy().astype(np.float32)
    sd["_batch.text"] = text.numpy().astype(np.float32)
    write_safetensors(a.weights, sd, {"format": "pt"})

    def step():
        opt.zero_grad(set_to_none=True)
        img_f, txt_f, scale = model(images, text)[:3]
        loss = loss_fn(img_f, txt_f, scale)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, 4.6052)
        return float(loss)

    print(json.dumps({"kind": "ready", "version": torch.__version__,
                      "threads": torch.get_num_threads(),
                      "params": sum(p.numel() for p in model.parameters())}), flush=True)
    import time
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

def ensure_open_clip(py, log):
    if subprocess.run([py, "-c", "import open_clip"], capture_output=True).returncode == 0:
        return
    log("installing open_clip_torch 3.3.0 (--no-deps) into the bench venv")
    subprocess.run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    "--no-deps"] + OPEN_CLIP, check=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--venv", default=None, help="PyTorch venv (default BUILD/bench-venv)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=2, help="steps per round")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--models", default="quickstart,vit-b-16")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--weights", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        return worker(a)

    def log(msg):
        print(f"[clip_step] {msg}", file=sys.stderr, flush=True)

    venv = a.venv or os.path.join(a.build, "bench-venv")
    py = os.path.join(venv, "bin", "python")
    if not os.path.exists(py):
        raise SystemExit(f"clip_step.py: no venv at {venv}; run bench/transformer_block.sh once "
                         f"to create it, or pass --venv")
    ensure_open_clip(py, log)
    exe = os.path.join(a.build, "bench", "clip_step")
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), MKL_NUM_THREADS=str(a.threads))
    shim = os.path.join(venv, "libmkl_intel_cpu_shim.so")
    torch_env = dict(env)
    with open("/proc/cpuinfo") as f:
        amd = "AuthenticAMD" in f.read()
    if amd and os.path.exists(shim):
        torch_env["LD_PRELOAD"] = shim
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in a.models.split(","):
            m = MODELS[name]
            weights = os.path.join(tmp, f"{name}.safetensors")
            recipe = os.path.join(tmp, f"{name}.yaml")
            with open(recipe, "w") as f:
                f.write(recipe_text(m))
            log(f"{name}: open_clip builds the model and writes {weights}")
            pt = Served([py, os.path.abspath(__file__), "--worker", name, "--weights", weights,
                         "--threads", str(a.threads)], torch_env)
            ts = Served([exe, "--recipe", recipe, "--weights", weights, "--batch", str(m[0]),
                         "--threads", str(a.threads)], env)
            if ts.ready["params"] != pt.ready["params"]:
                raise SystemExit(f"{name}: tessera has {ts.ready['params']} parameters, "
                                 f"open_clip {pt.ready['params']}")
            o_ts, o_pt = ts.ask("run 1")[-1], pt.ask("run 1")[-1]  # warm-up; first losses agree
            log(f"{name}: first-step loss tessera {o_ts['loss']:.5f}, open_clip {o_pt['loss']:.5f}")
            t_ts, t_pt = [], []
            for i in range(a.rounds):
                o = ts.ask(f"run {a.steps}")[-1]
                t_ts.append(o["s"] / o["steps"])
                o = pt.ask(f"run {a.steps}")[-1]
                t_pt.append(o["s"] / o["steps"])
                log(f"{name} round {i + 1}/{a.rounds}: tessera {1e3 * t_ts[-1]:.0f} ms, "
                    f"PyTorch {1e3 * t_pt[-1]:.0f} ms")
            ts.close()
            pt.close()
            rows.append((name, m[0], pt.ready, statistics.median(t_ts), statistics.median(t_pt),
                         min(t_ts), max(t_ts), min(t_pt), max(t_pt)))

    r0 = rows[0][2]
    print(f"\nCLIP training step (both towers, ClipLoss, backward, AdamW), {a.threads} threads, "
          f"median of {a.rounds} interleaved rounds of {a.steps} steps; open_clip 3.3.0 on "
          f"PyTorch {r0['version']} ({r0['threads']} threads"
          f"{', MKL AVX-512 shim' if 'LD_PRELOAD' in torch_env else ''})")
    print(f"{'model':12s} {'batch':>5s} {'params':>11s} {'tessera samples/s':>18s} "
          f"{'PyTorch samples/s':>18s} {'ratio':>6s} {'tessera ms':>12s} {'PyTorch ms':>12s}")
    for name, B, ready, ts_s, pt_s, tmin, tmax, pmin, pmax in rows:
        print(f"{name:12s} {B:5d} {ready['params']:11d} {B / ts_s:18.1f} {B / pt_s:18.1f} "
              f"{pt_s / ts_s:6.2f} {1e3 * tmin:5.0f}-{1e3 * tmax:<6.0f} "
              f"{1e3 * pmin:5.0f}-{1e3 * pmax:<6.0f}")
    print("ratio = PyTorch time / tessera time (above 1: tessera faster). Goal: 1.5.")


if __name__ == "__main__":
    main()
