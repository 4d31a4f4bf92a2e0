#!/usr/bin/env python3
"""loader.py: tessera's input pipeline beside PIL + torchvision's DataLoader, in one run.

Generates (once, into BUILD/bench-loader-data) N deterministic 500x375 JPEGs of photo-like
content at quality 90, as class folders, a CSV and 4 WebDataset tar shards (bench/loader gen).
Then, in interleaved rounds, times images/s for decode + RandomResizedCrop(224) (bilinear) +
RandomHorizontalFlip + ToTensor + Normalize(CLIP mean/std), batches of 32:
  - tessera's pipeline (bench/loader images) with 1 and 2 workers over the class folders and
    over the tar shards;
  - torch.utils.data.DataLoader(num_workers=1 and 2) over torchvision's ImageFolder on the same
    files, with PIL decoding (Debian's python3-pil + python3-torchvision, or --python PY).
Each figure is the median over --rounds; the ratio is tessera over torchvision at the same
number of workers. The first batch of every run (thread or process start) is not timed.
Then frames/s of video decoding (every frame to 224x224, and 8 uniform frames from 2-second
clips) on ../shared/data/video (else a clip encoded here with ffmpeg) and windows/s of 16 steps
on the robosuite HDF5 files of ../shared/data/hdf5. Not a test: nothing is asserted; the goal
(at least 3x torchvision per worker) is printed beside the ratio.

Usage: bench/loader.py [--build DIR] [--images N] [--count N] [--rounds R] [--python PY]
                       [--data ../shared/data]
"""
import argparse
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(ROOT), "shared", "data")

# Run in the Python that has torchvision: a DataLoader over ImageFolder, images/s as JSON.
TORCH_TIMER = r"""
import json, sys, time
import torch
from torch.utils.data import DataLoader
from torchvision import datasets, transforms
root, workers, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(1)
torch.manual_seed(1)
tf = transforms.Compose([
    transforms.RandomResizedCrop(224),
    transforms.RandomHorizontalFlip(),
    transforms.ToTensor(),
    transforms.Normalize((0.48145466, 0.4578275, 0.40821073),
                         (0.26862954, 0.26130258, 0.27577711)),
])
ds = datasets.ImageFolder(root, transform=tf)
dl = DataLoader(ds, batch_size=32, shuffle=True, num_workers=workers, drop_last=False,
                persistent_workers=True)
it = iter(dl)
def nxt():
    global it
    try:
        return next(it)
    except StopIteration:
        it = iter(dl)
        return next(it)
nxt()  # worker start, as the C side skips its first batch
t0 = time.perf_counter()
n = 0
while n < count:
    x, y = nxt()
    n += x.shape[0]
dt = time.perf_counter() - t0
print(json.dumps({"images": n, "seconds": dt, "images_per_s": n / dt}))
"""


def run_json(cmd, timeout=900):
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError("%s failed: %s" % (" ".join(cmd), out.stderr.strip()[-500:]))
    return json.loads(out.stdout.strip().splitlines()[-1])


def find_python(wanted):
    for py in [wanted, sys.executable, "/usr/bin/python3"]:
        if py and subprocess.run([py, "-c", "import torchvision, PIL"],
                                 capture_output=True).returncode == 0:
            return py
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--images", type=int, default=320, help="JPEGs generated")
    ap.add_argument("--count", type=int, default=640, help="images timed per run")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--python", default=None, help="a Python with torch and torchvision")
    ap.add_argument("--data", default=SHARED, help="the shared data (video/, hdf5/)")
    a = ap.parse_args()
    exe = os.path.join(a.build, "bench", "loader")
    if not os.path.exists(exe):
        sys.exit("bench/loader.py: %s is missing (cmake --build %s --target loader)" % (exe, a.build))
    data = os.path.join(os.path.abspath(a.build), "bench-loader-data")
    g = run_json([exe, "gen", data, str(a.images)])
    print("data: %d JPEGs 500x375 q90 in %s%s" % (a.images, data,
          " (generated, %.0f KiB each)" % g["mean_kib"] if g.get("generated") else ""))
    py = find_python(a.python)
    folder = os.path.join(data, "folder")
    shards = os.path.join(data, "shards", "shard-{000000..000003}.tar")
    rows = [("tessera, class folders", lambda w: [exe, "images", "folder:" + folder, str(w), str(a.count)]),
            ("tessera, tar shards", lambda w: [exe, "images", "wds:" + shards, str(w), str(a.count)])]
    if py:
        rows.append(("PIL + torchvision DataLoader", lambda w: [py, "-c", TORCH_TIMER, folder, str(w), str(a.count)]))
    res = {(name, w): [] for name, _ in rows for w in (1, 2)}
    for r in range(a.rounds):  # interleaved: every configuration once per round
        for name, cmd in rows:
            for w in (1, 2):
                res[(name, w)].append(run_json(cmd(w))["images_per_s"])
    med = {k: statistics.median(v) for k, v in res.items()}
    print("\nimages/s, decode + RandomResizedCrop(224) + flip + normalise, batch 32, median of %d "
          "interleaved rounds of %d images" % (a.rounds, a.count))
    print("%-30s %12s %12s %10s %10s" % ("", "1 worker", "2 workers", "x ref (1)", "x ref (2)"))
    ref = "PIL + torchvision DataLoader"
    for name, _ in rows:
        r1 = r2 = ""
        if py and name != ref:
            r1 = "%.2fx" % (med[(name, 1)] / med[(ref, 1)])
            r2 = "%.2fx" % (med[(name, 2)] / med[(ref, 2)])
        print("%-30s %12.1f %12.1f %10s %10s" % (name, med[(name, 1)], med[(name, 2)], r1, r2))
    if not py:
        print("(torchvision not found: pass --python PY with torch + torchvision)")
    print("goal: >= 3x torchvision per worker (reported, not asserted)")
    print("all rounds: " + json.dumps({"%s/%dw" % k: [round(x, 1) for x in v] for k, v in res.items()}))

    # Video: the real clips when present, else one encoded here.
    clips = sorted(glob.glob(os.path.join(a.data, "video", "*.mp4")) +
                   glob.glob(os.path.join(a.data, "video", "*.webm")))
    if not clips and shutil.which("ffmpeg"):
        clip = os.path.join(data, "clip.mp4")
        if not os.path.exists(clip):
            subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                            "testsrc2=size=640x360:rate=30", "-t", "10", "-c:v", "libx264",
                            "-pix_fmt", "yuv420p", clip], check=True)
        clips = [clip]
    print("\nvideo, frames/s on one thread, output 224x224 RGB (median of %d rounds)" % a.rounds)
    print("%-22s %-6s %10s %7s %14s %16s" % ("file", "codec", "size", "frames", "sequential", "8 from a clip"))
    for c in clips:
        rs = [run_json([exe, "video", c]) for _ in range(a.rounds)]
        print("%-22s %-6s %10s %7d %14.1f %16.1f" % (
            os.path.basename(c), rs[0]["codec"], "%dx%d" % (rs[0]["w"], rs[0]["h"]),
            rs[0]["frames"], statistics.median(x["seq_fps"] for x in rs),
            statistics.median(x["clip_fps"] for x in rs)))
    files = sorted(glob.glob(os.path.join(a.data, "hdf5", "*.hdf5")))
    if files:
        print("\nHDF5, windows/s of 16 steps (actions + states, float64 -> float32), shuffled "
              "order, one thread (median of %d rounds)" % a.rounds)
        print("%-42s %6s %8s %14s" % ("file", "demos", "windows", "windows/s"))
        for f in files:
            rs = [run_json([exe, "hdf5", f]) for _ in range(a.rounds)]
            print("%-42s %6d %8d %14.0f" % (os.path.basename(f), rs[0]["demos"], rs[0]["windows"],
                                            statistics.median(x["windows_per_s"] for x in rs)))
    print("\nnote: %d cores, load average %.1f at the end of the run; other jobs share the CPU, so "
          "compare the ratios of one run, not absolute figures across runs" %
          (os.cpu_count(), os.getloadavg()[0]))


if __name__ == "__main__":
    main()
