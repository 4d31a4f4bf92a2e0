#!/usr/bin/env python3
"""Loss-curve parity of tessera's CLIP task with open_clip's own training loop.

tessera trained a tiny CLIP model (cli/task_clip.c) from a step-0 checkpoint for some steps,
logging every step. This script takes the same initial weights, the same batches in the same
order and the same optimizer settings through open_clip itself, and asserts that the two loss
curves agree step by step (relative difference below --rtol) and that the learning rate of every
step is the same. Nothing here is a rewrite of open_clip's training: the model is
open_clip.model.CLIP, the loss open_clip.create_loss's ClipLoss, the step
open_clip_train.train.train_one_epoch (scheduler call, forward, backward, AdamW step, logit_scale
clamped to [0, ln 100]) and the schedule open_clip_train.scheduler.cosine_lr. Only two pieces of
open_clip_train/main.py are written out, because main() cannot be called on a made-up data set:
the AdamW parameter groups (its weight-decay rule, whose source line is checked against the
installed main.py) and the arguments.

The data: one WebDataset shard read in tar order, decoded with PIL as open_clip's "pilrgb"
decoder does, through open_clip's train transform (image_transform(is_train=True)) with
RandomResizedCrop scale (1, 1) on images already at the model's size. With the default aspect
ratio range (3/4, 4/3) every box that torchvision's get_params can draw at area 1 is the whole
image: a ratio r gives w = round(S sqrt r), h = round(S / sqrt r), and both fit only when they
round to S (a w of S with an h of S - 1 needs r above (S / (S - 0.5))^2 and below
((S + 0.5) / S)^2, which is empty); otherwise the ten tries fail and the fallback is the whole
square image. PIL's resize of an image to its own size is a copy. The script checks both facts
before training. Captions are tokenized by open_clip's SimpleTokenizer with the merges file
tessera trained. tessera reads the same shard with shuffle_buffer 0 and data.scale [1, 1].

usage: clip_curve.py --init MODEL.safetensors --run RUN_DIR --log TRAIN_LOG --shard TAR
                     --bpe MERGES.gz [--steps N] [--rtol R]
"""
import argparse
import collections
import importlib.util
import io
import json
import os
import re
import struct
import sys
import tarfile
import types

import numpy as np
import torch
import yaml
from PIL import Image

import open_clip
import open_clip.model
import open_clip.tokenizer
import open_clip.transform
from open_clip_train.scheduler import cosine_lr
from open_clip_train.train import train_one_epoch

NP = {"F32": np.float32, "I32": np.int32, "I64": np.int64, "U8": np.uint8}
# The rule of open_clip_train/main.py, as a line of its source (checked) and as code (used).
DECAY_RULE_SRC = ('exclude = lambda n, p: p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n '
                  "or 'logit_scale' in n")


def exclude(n, p):
    return p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n


def die(msg):
    print(f"clip_curve.py: FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    meta = header.pop("__metadata__", {})
    out = collections.OrderedDict()
    for name, e in header.items():
        if e["dtype"] not in NP:
            die(f"{path}: {name} has dtype {e['dtype']}")
        b, en = e["data_offsets"]
        arr = np.frombuffer(data[b:en], dtype=NP[e["dtype"]]).reshape(e["shape"])
        out[name] = torch.from_numpy(arr.copy())
    return out, meta


def build_model(recipe, vocab):
    """open_clip's CLIP with the sizes of tessera's resolved recipe; anything open_clip's
    defaults would not reproduce is an error."""
    m, v, t = recipe["model"], recipe["model"]["vision"], recipe["model"]["text"]
    checks = [(v["type"] == "vit", "model.vision.type is not vit"),
              (v.get("act", "gelu") == "gelu" and t.get("act", "gelu") == "gelu", "act is not gelu"),
              (v.get("pool", "token") == "token", "vision pool is not token"),
              (float(v.get("ln_eps", 1e-5)) == 1e-5 and float(t.get("ln_eps", 1e-5)) == 1e-5,
               "ln_eps is not 1e-5"),
              (t.get("causal", True) and t.get("pooling", "argmax") == "argmax",
               "text tower is not causal with argmax pooling"),
              (float(v.get("drop_path", 0)) == 0 and float(t.get("drop_path", 0)) == 0,
               "drop_path is on"),
              (float(v.get("mlp_ratio", 4)) == float(t.get("mlp_ratio", 4)) == 4.0,
               "mlp_ratio is not 4")]
    for ok, why in checks:
        if not ok:
            die(f"the recipe is outside what this test compares: {why}")
    vision_cfg = open_clip.model.CLIPVisionCfg(
        layers=v["layers"], width=v["width"], head_width=v["width"] // v["heads"],
        patch_size=v["patch_size"], image_size=v["image_size"], mlp_ratio=4.0)
    text_cfg = open_clip.model.CLIPTextCfg(
        context_length=t["context_length"], vocab_size=vocab, width=t["width"],
        heads=t["heads"], layers=t["layers"], mlp_ratio=4.0)
    return open_clip.model.CLIP(embed_dim=m["embed_dim"], vision_cfg=vision_cfg,
                                text_cfg=text_cfg, quick_gelu=False, output_dict=True)


def read_shard(path):
    """Samples in tar order, grouped by key (the name up to the first dot) as webdataset's
    group_by_keys does: [(key, {ext: bytes})]."""
    out = []
    with tarfile.open(path) as tf:
        for mem in tf:
            if not mem.isfile():
                continue
            base = os.path.basename(mem.name)
            key, ext = base.split(".", 1)
            data = tf.extractfile(mem).read()
            if not out or out[-1][0] != key:
                out.append((key, {}))
            out[-1][1][ext.lower()] = data
    return out


def check_identity_crop(size, transform, image):
    """The two facts the docstring argues: every RandomResizedCrop box at scale (1, 1) is the
    whole image, and the train transform is then ToTensor + Normalize."""
    import torchvision.transforms as T
    torch.manual_seed(0)
    for _ in range(2000):
        box = T.RandomResizedCrop.get_params(image, scale=(1.0, 1.0), ratio=(3 / 4, 4 / 3))
        if tuple(box) != (0, 0, size, size):
            die(f"RandomResizedCrop drew the box {box}, not the whole {size}x{size} image")
    plain = T.Compose([T.ToTensor(), T.Normalize(open_clip.OPENAI_DATASET_MEAN,
                                                  open_clip.OPENAI_DATASET_STD)])(image)
    got = transform(image)
    if not torch.equal(plain, got):
        die(f"open_clip's train transform is not the identity crop: max diff "
            f"{(plain - got).abs().max().item()}")


class Loader:
    """A stand-in for open_clip_train's DataInfo: the shard's samples in order, drop_last."""

    def __init__(self, samples, tokenizer, transform, batch, steps):
        self.samples, self.tok, self.xf, self.batch = samples, tokenizer, transform, batch
        self.num_batches, self.num_samples = steps, steps * batch
        self.dataloader = self

    def set_epoch(self, epoch):
        pass

    def __len__(self):
        return self.num_batches

    def __iter__(self):
        for b in range(self.num_batches):
            chunk = self.samples[b * self.batch:(b + 1) * self.batch]
            images, texts = [], []
            for key, parts in chunk:
                img = next((parts[e] for e in ("jpg", "png", "jpeg", "webp") if e in parts), None)
                if img is None or "txt" not in parts:
                    die(f"sample {key} has no image or no caption")
                images.append(self.xf(Image.open(io.BytesIO(img)).convert("RGB")))
                texts.append(self.tok(parts["txt"].decode("utf-8"))[0])
            yield torch.stack(images), torch.stack(texts)


class RecordingLoss(torch.nn.Module):
    """open_clip's loss, recording each step's value and the learning rate it was taken at."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.losses, self.lrs, self.optimizer = inner, [], [], None

    def forward(self, *a, **kw):
        out = self.inner(*a, **kw)
        total = sum(out.values()) if isinstance(out, dict) else out
        self.losses.append(float(total))
        self.lrs.append(self.optimizer.param_groups[0]["lr"])
        return out


def tessera_rows(run):
    rows = [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl")) if line.strip()]
    return {r["step"]: r for r in rows if r["kind"] == "train"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--init", required=True, help="tessera's step-0 model.safetensors")
    ap.add_argument("--run", required=True, help="tessera's run folder (metrics.jsonl)")
    ap.add_argument("--log", required=True, help="tessera's training log")
    ap.add_argument("--shard", required=True)
    ap.add_argument("--bpe", required=True)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--rtol", type=float, default=1e-3)
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)

    # open_clip_train/main.py's weight-decay rule is still the one written out here
    spec = importlib.util.find_spec("open_clip_train.main")
    if spec is None or DECAY_RULE_SRC not in open(spec.origin).read():
        die("open_clip_train/main.py no longer has the weight-decay rule this test copies: "
            + DECAY_RULE_SRC)

    recipe = yaml.safe_load(open(os.path.join(a.run, "recipe.yaml")))
    d, o, tr = recipe["data"], recipe["optim"], recipe["train"]
    for key, want in (("shuffle_buffer", 0), ("hflip", 0.0), ("scale", [1.0, 1.0]),
                      ("interpolation", "bicubic")):
        if d.get(key) != want:
            die(f"tessera's recipe has data.{key} = {d.get(key)!r}; this test needs {want!r}")
    if o["name"] != "adamw" or o["schedule"] != "cosine" or float(o["min_lr"]) != 0 \
            or float(o["clip_grad_norm"]) != 0 or int(tr["accum"]) != 1:
        die("tessera's recipe is not AdamW + cosine to 0 without clipping or accumulation")
    if tr["log_every"] != 1 or tr["precision"] != "f32":
        die("tessera must log every step in f32")

    tensors, meta = read_safetensors(a.init)
    if meta.get("tessera.step") not in (None, "0"):
        die(f"{a.init} is not a step-0 checkpoint (step {meta.get('tessera.step')})")
    vocab = tensors["token_embedding.weight"].shape[0]
    tok = open_clip.tokenizer.SimpleTokenizer(a.bpe, context_length=recipe["model"]["text"]
                                              ["context_length"])
    if len(tok.encoder) != vocab:
        die(f"open_clip reads {len(tok.encoder)} tokens from {a.bpe}; the checkpoint has {vocab}")

    model = build_model(recipe, vocab)
    model.load_state_dict(tensors, strict=True)  # raises on any missing or unexpected name
    size = recipe["model"]["vision"]["image_size"]
    transform = open_clip.transform.image_transform(size, is_train=True,
                                                    aug_cfg={"scale": (1.0, 1.0)})

    batch, steps = d["batch_size"], a.steps
    samples = read_shard(a.shard)
    if len(samples) < batch * steps:
        die(f"{a.shard} has {len(samples)} samples; {steps} steps of {batch} need more")
    first = Image.open(io.BytesIO(samples[0][1]["png"])).convert("RGB")
    if first.size != (size, size):
        die(f"the images are {first.size}, not the model's {size}x{size}")
    check_identity_crop(size, transform, first)

    args = types.SimpleNamespace(
        device="cpu", precision="fp32", distill=False, accum_freq=1, skip_scheduler=False,
        grad_clip_norm=None, horovod=False, rank=0, local_rank=0, world_size=1,
        log_every_n_steps=10 ** 9, batch_size=batch, wandb=False, save_logs=False,
        lr=float(o["lr"]), beta1=float(o["beta1"]), beta2=float(o["beta2"]), eps=float(o["eps"]),
        wd=float(o["weight_decay"]), warmup=int(o["warmup"]), epochs=1, model="tiny-clip",
        siglip=False, local_loss=False, gather_with_grad=False, coca_caption_loss_weight=0,
        coca_contrastive_loss_weight=0, loss_dist_impl=None)
    loss = RecordingLoss(open_clip.create_loss(args))

    # main.py's AdamW parameter groups
    named = list(model.named_parameters())
    gain_or_bias = [p for n, p in named if exclude(n, p) and p.requires_grad]
    rest = [p for n, p in named if not exclude(n, p) and p.requires_grad]
    optimizer = torch.optim.AdamW([{"params": gain_or_bias, "weight_decay": 0.0},
                                   {"params": rest, "weight_decay": args.wd}],
                                  lr=args.lr, betas=(args.beta1, args.beta2), eps=args.eps)
    loss.optimizer = optimizer
    log = open(a.log).read()
    m = re.search(r"weight decay \(open_clip's rule\) on (\d+) tensors \((\d+) values\), none on "
                  r"(\d+)", log)
    want = (len(rest), sum(p.numel() for p in rest), len(gain_or_bias))
    if not m or tuple(map(int, m.groups())) != want:
        die(f"tessera's decay groups ({m.group(0) if m else 'no log line'}) are not open_clip's: "
            f"decay on {want[0]} tensors ({want[1]} values), none on {want[2]}")
    print(f"clip_curve.py: weight decay on {want[0]} tensors ({want[1]} values), none on "
          f"{want[2]}, in tessera and open_clip")
    print(f"clip_curve.py: open_clip {open_clip.__version__}, torch {torch.__version__}; "
          f"AdamW betas ({args.beta1}, {args.beta2}) eps {args.eps} wd {args.wd}, lr {args.lr}, "
          f"warmup {args.warmup}, {steps} steps of {batch}")

    data = {"train": Loader(samples, tok, transform, batch, steps)}
    scheduler = cosine_lr(optimizer, args.lr, args.warmup, steps)
    if steps != int(tr["steps"]):
        die(f"tessera ran {tr['steps']} steps and its schedule spans them; this run has {steps}")
    train_one_epoch(model, data, loss, 0, optimizer, None, scheduler, None, args)

    ours = tessera_rows(a.run)
    worst, worst_step = 0.0, 0
    print(" step       lr         tessera loss   open_clip loss   rel diff")
    for k in range(1, steps + 1):
        if k not in ours:
            die(f"tessera's metrics.jsonl has no train row for step {k}")
        r, ref, lr = ours[k], loss.losses[k - 1], loss.lrs[k - 1]
        if abs(r["lr"] - lr) > 1e-6 * lr:
            die(f"step {k}: tessera's learning rate {r['lr']!r}, open_clip's cosine_lr {lr!r}")
        rel = abs(r["loss"] - ref) / abs(ref)
        if rel > worst:
            worst, worst_step = rel, k
        if k <= 5 or k % 10 == 0 or rel > a.rtol:
            print(f"{k:5d}  {lr:.4e}  {r['loss']:14.8f}  {ref:14.8f}  {rel:10.3e}")
    # the weights after the last step, for the record
    end = os.path.join(a.run, "checkpoints", f"step_{steps:08d}", "model.safetensors")
    if os.path.exists(end):
        final, _ = read_safetensors(end)
        sd = model.state_dict()
        for n in final:  # the key bias: softmax ignores it, its gradient is rounding noise that
            if n.endswith("attn.in_proj_bias"):  # Adam scales up, so it is left out
                c = final[n].shape[0] // 3
                final[n][c:2 * c] = sd[n][c:2 * c]
        dw, dn = max((((final[n] - sd[n]).abs().max() / sd[n].abs().max().clamp_min(1e-12)).item(),
                      n) for n in final)
        print(f"clip_curve.py: after {steps} steps the weights differ by at most {dw:.3e} of the "
              f"tensor's largest value ({dn}; key biases left out); logit_scale {final['logit_scale'].item():.6f} vs "
              f"{sd['logit_scale'].item():.6f}")
    print(f"clip_curve.py: max relative loss difference over {steps} steps {worst:.3e} "
          f"(step {worst_step}); tolerance {a.rtol:g}")
    if worst > a.rtol:
        die(f"the loss curves part: relative difference {worst:.3e} at step {worst_step}")
    print(f"clip_curve.py: ok: tessera's CLIP loss curve is open_clip's over {steps} steps")


if __name__ == "__main__":
    main()
