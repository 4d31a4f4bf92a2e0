#!/usr/bin/env python3
"""gpu_clip_step.py: a CLIP ViT-B/16 training step on one GPU, tessera beside PyTorch eager.

Run by bench/gpu_check.sh on the GPU machine (its python3 has PyTorch; open_clip_torch 3.3.0
comes as a wheel when the image lacks it). The model is open_clip's CLIP with ViT-B-16's
numbers (vision 224/16, 768 wide, 12 layers, 12 heads; text 77 tokens, 49408 ids, 512 wide,
12 layers, 8 heads; embed 512). A step: both towers under bf16 autocast (float32 master
weights), open_clip's ClipLoss, backward, AdamW (betas 0.9/0.98, eps 1e-6, weight decay 0.2
except gains, biases and logit_scale), the logit-scale clamp; on a fixed random batch.

  --export DIR  writes the model's float32 weights and a batch for tessera's gpu_clip_step
                (DIR/weights.bin + DIR/weights.idx: "name numel" lines in file order, raw
                little-endian float32), and the float64 reference of the first step's loss and
                gradients (DIR/ref.bin + DIR/ref.idx) computed on the CPU in double
  --compare DIR compares DIR/tessera.bin (what gpu_clip_step --check wrote) with DIR/ref.bin
  --time       times PyTorch's step (and tessera's with --tessera BIN), CUDA events around each
               step, after warm-up; prints samples/s, TFLOP/s and MFU against the bf16 product
               rate measured here (8192^3, cuBLAS through torch)

FLOPs are counted from the shapes (products and the two attention products, full square
matrices for the causal text tower too, backward = 2x forward), the same count for both.
"""
import argparse
import math
import json
import os
import statistics
import subprocess
import sys

from clip_step import random_batch

# name: embed, vision (image, patch, width, layers, heads),
#       text (ctx, vocab, width, layers, heads)
MODELS = {
    "vit-b-16": (512, (224, 16, 768, 12, 12), (77, 49408, 512, 12, 8)),
    "tiny": (64, (32, 8, 64, 2, 4), (16, 300, 64, 2, 4)),
}


def train_flops(name, batch):
    E, (S, P, W, L, H), (T, V, TW, TL, TH) = MODELS[name]
    tv = (S // P) ** 2 + 1
    vis = tv * L * (24 * W * W + 4 * tv * W) + (tv - 1) * 2 * 3 * P * P * W + 2 * W * E
    txt = T * TL * (24 * TW * TW + 4 * T * TW) + 2 * TW * E
    fwd = batch * (vis + txt) + 2 * 2 * batch * batch * E
    return 3 * fwd


def build(name, torch):
    from open_clip.model import CLIP
    E, (S, P, W, L, H), (T, V, TW, TL, TH) = MODELS[name]
    torch.manual_seed(0)
    return CLIP(E, dict(image_size=S, patch_size=P, width=W, layers=L, head_width=W // H),
                dict(context_length=T, vocab_size=V, width=TW, layers=TL, heads=TH))


def batch_of(name, B, torch):
    E, (S, P, W, L, H), (T, V, TW, TL, TH) = MODELS[name]
    return random_batch(B, S, T, V, torch)


def optimizer(model, torch):
    def exclude(n, p):
        return p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n
    named = list(model.named_parameters())
    return torch.optim.AdamW([
        {"params": [p for n, p in named if exclude(n, p)], "weight_decay": 0.0},
        {"params": [p for n, p in named if not exclude(n, p)], "weight_decay": 0.2},
    ], lr=1e-4, betas=(0.9, 0.98), eps=1e-6)


def write_bin(path, items):
    import numpy as np
    with open(path + ".bin", "wb") as f, open(path + ".idx", "w") as idx:
        for k, v in items:
            a = np.ascontiguousarray(v, dtype=np.float32).ravel()
            f.write(a.tobytes())
            idx.write(f"{k} {a.size}\n")


def read_bin(path):
    import numpy as np
    raw = np.fromfile(path + ".bin", dtype=np.float32)
    out, at = {}, 0
    for line in open(path + ".idx"):
        k, n = line.split()
        out[k] = raw[at:at + int(n)].astype(np.float64)
        at += int(n)
    if at != raw.size:
        sys.exit(f"{path}.bin holds {raw.size} floats, its index {at}")
    return out


def export(a, torch):
    from open_clip.loss import ClipLoss
    model = build(a.model, torch)
    images, text = batch_of(a.model, a.check_batch, torch)
    os.makedirs(a.export, exist_ok=True)
    items = [(k, v.detach().numpy()) for k, v in model.state_dict().items()]
    items += [("_batch.images", images.numpy()), ("_batch.text", text.float().numpy())]
    write_bin(os.path.join(a.export, "weights"), items)
    # the float64 reference of one forward + backward, on the CPU
    m64 = model.double()
    img_f, txt_f, scale = m64(images.double(), text)[:3]
    loss = ClipLoss()(img_f, txt_f, scale)
    loss.backward()
    ref = [("loss", [float(loss.detach())])]
    ref += [(k, p.grad.numpy()) for k, p in m64.named_parameters()]
    write_bin(os.path.join(a.export, "ref"), ref)
    print(f"exported {a.model} weights ({sum(p.numel() for p in model.parameters())} "
          f"parameters) and the float64 reference at batch {a.check_batch} to {a.export}")


def compare(a):
    import numpy as np
    ref = read_bin(os.path.join(a.compare, "ref"))
    got = read_bin(os.path.join(a.compare, a.got))
    worst, fails = ("", 0.0), 0
    for k, r in ref.items():
        if k not in got:
            print(f"  {k}: missing from tessera's output")
            fails += 1
            continue
        g = got[k]
        e = float(np.linalg.norm(g - r) / max(np.linalg.norm(r), 1e-30))
        if not np.isfinite(g).all():
            e = float("nan")
        ok = e == e and e < a.tol
        fails += not ok
        if not (e <= worst[1]):
            worst = (k, e)
        if not ok or k == "loss" or a.verbose:
            print(f"  {k:60s} rel {e:.2e} {'ok' if ok else 'FAIL'}")
    print(f"gpu_clip_step check ({a.got}): {len(ref) - fails}/{len(ref)} within {a.tol:g} of "
          f"float64, worst {worst[0]} {worst[1]:.2e}")
    return fails


def bf16_rate(torch):
    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    ts = []
    for _ in range(10):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        a @ b
        e1.record()
        e1.synchronize()
        ts.append(e0.elapsed_time(e1) / 1e3)
    return 2 * n ** 3 / statistics.median(ts)


def time_torch(a, torch):
    from open_clip.loss import ClipLoss
    model = build(a.model, torch).cuda().train()
    opt = optimizer(model, torch)
    images, text = batch_of(a.model, a.batch, torch)
    images, text = images.cuda(), text.cuda()
    loss_fn = ClipLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            img_f, txt_f, scale = model(images, text)[:3]
            loss = loss_fn(img_f, txt_f, scale)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        return loss

    first = float(step().detach())
    for _ in range(a.warmup - 1):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    ts = []
    for _ in range(a.steps):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        loss = step()
        e1.record()
        e1.synchronize()
        ts.append(e0.elapsed_time(e1) / 1e3)
    return {"s": statistics.median(ts), "min": min(ts), "max": max(ts),
            "loss": float(loss.detach()), "first_loss": first,
            "mem_gib": torch.cuda.max_memory_allocated() / 2 ** 30}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="vit-b-16", choices=sorted(MODELS))
    ap.add_argument("--export")
    ap.add_argument("--check-batch", type=int, default=4)
    ap.add_argument("--compare")
    ap.add_argument("--got", default="tessera", help="what --compare reads (DIR/GOT.bin)")
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--time", action="store_true")
    ap.add_argument("--tessera", help="gpu_clip_step binary to time beside PyTorch")
    ap.add_argument("--attention", default="flash,batched",
                    help="tessera's attention kernels to time, one row each (the first one "
                         "gets the per-call breakdown of TS_CLIP_PROFILE_STEPS)")
    ap.add_argument("--weights", help="weights prefix for --tessera (from --export)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    a = ap.parse_args()
    import torch
    rc = 0
    if a.export:
        export(a, torch)
    if a.compare:
        rc |= compare(a) != 0
    if a.time:
        peak = bf16_rate(torch)
        flops = train_flops(a.model, a.batch)
        rows = []
        for att in (a.attention.split(",") if a.tessera else []):
            env = dict(os.environ)
            if att != a.attention.split(",")[0]:
                env.pop("TS_CLIP_PROFILE_STEPS", None)  # the breakdown of the first only
            p = subprocess.run([a.tessera, "--model", a.model, "--time", "--weights", a.weights,
                                "--batch", str(a.batch), "--steps", str(a.steps), "--warmup",
                                str(a.warmup), "--attention", att], capture_output=True,
                               text=True, env=env)
            sys.stderr.write(p.stderr)
            line = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
            if p.returncode or not line:
                print(f"tessera gpu_clip_step --attention {att} failed (exit {p.returncode})")
                rc = 1
            else:
                rows.append((f"tessera, {att} attention", json.loads(line[-1])))
        rows.append((f"PyTorch {torch.__version__} eager", time_torch(a, torch)))
        print(f"\nCLIP {a.model} training step, batch {a.batch}, bf16 products, "
              f"{torch.cuda.get_device_name()}: {flops / 1e12:.2f} TFLOP a step, "
              f"bf16 product rate {peak / 1e12:.0f} TFLOP/s (8192^3)")
        print(f"{'':32s} {'ms/step':>9s} {'samples/s':>10s} {'TFLOP/s':>8s} {'MFU':>6s} "
              f"{'mem GiB':>8s}  loss, first -> last step")
        for who, r in rows:
            print(f"{who:32s} {r['s'] * 1e3:9.1f} {a.batch / r['s']:10.0f} "
                  f"{flops / r['s'] / 1e12:8.1f} {100 * flops / r['s'] / peak:5.1f}% "
                  f"{r.get('mem_gib', float('nan')):8.1f}  {r['first_loss']:.4f} -> "
                  f"{r['loss']:.4f}")
        for who, r in rows[:-1]:
            print(f"{who} / PyTorch samples/s: {rows[-1][1]['s'] / r['s']:.2f}x")
    sys.exit(rc)


if __name__ == "__main__":
    main()
