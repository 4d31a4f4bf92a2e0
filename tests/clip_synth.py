"""A tiny synthetic image-caption set for the CLIP command-line tests (cli_embed*.sh).

Coloured shapes on grey, SIZE x SIZE pixels, captioned "a <colour> <shape>", written as
WebDataset shards (key.jpg, key.txt, key.json with the shape and colour indices, key.cls with
the colour), the class and caption files the zero-shot evaluation reads, and, for the tests
that need images as files, class folders (by colour, JPEG) and a flat folder of PNGs (lossless,
so that PIL and tessera see the same pixels).

usage: clip_synth.py OUT_DIR [--size 32] [--train 2x160] [--val 96] [--folders]
Deterministic: the same arguments give the same files.
"""
import argparse
import io
import json
import os
import random
import tarfile

from PIL import Image, ImageDraw

SHAPES = ["circle", "square", "triangle"]
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220),
           "yellow": (230, 220, 30)}
NAMES = list(COLOURS)


def draw(r, size, colour=None):
    s, c = r.randrange(3), r.randrange(4)
    c = c if colour is None else colour
    im = Image.new("RGB", (size, size), (r.randrange(80, 140),) * 3)
    d = ImageDraw.Draw(im)
    R = r.randrange(size // 9, size // 5)
    x, y = r.randrange(R, size - R), r.randrange(R, size - R)
    col = COLOURS[NAMES[c]]
    if s == 0:
        d.ellipse([x - R, y - R, x + R, y + R], fill=col)
    elif s == 1:
        d.rectangle([x - R, y - R, x + R, y + R], fill=col)
    else:
        d.polygon([(x, y - R), (x - R, y + R), (x + R, y + R)], fill=col)
    return im, s, c


def encode(im, fmt):
    b = io.BytesIO()
    im.save(b, fmt, quality=90) if fmt == "JPEG" else im.save(b, fmt)
    return b.getvalue()


def shard(path, n, seed, size, caps):
    r = random.Random(seed)
    with tarfile.open(path, "w") as t:
        for i in range(n):
            im, s, c = draw(r, size)
            cap = f"a {NAMES[c]} {SHAPES[s]}"
            caps.append(cap)
            members = (("jpg", encode(im, "JPEG")), ("txt", cap.encode()),
                       ("json", json.dumps({"shape": s, "colour": c}).encode()),
                       ("cls", str(c).encode()))
            for ext, data in members:
                ti = tarfile.TarInfo(f"{seed:03d}{i:05d}.{ext}")
                ti.size = len(data)
                ti.mtime = 0
                t.addfile(ti, io.BytesIO(data))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--train", default="2x160", help="SHARDSxSAMPLES")
    ap.add_argument("--val", type=int, default=96)
    ap.add_argument("--folders", action="store_true")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    k, n = (int(v) for v in a.train.split("x"))
    caps = []
    for i in range(k):
        shard(os.path.join(a.out, f"train-{i:06d}.tar"), n, i, a.size, caps)
    val_caps = []
    shard(os.path.join(a.out, "val-000000.tar"), a.val, 99, a.size, val_caps)
    w = lambda name, lines: open(os.path.join(a.out, name), "w").write("\n".join(lines) + "\n")
    w("caps.txt", caps + val_caps)
    w("val_caps.txt", val_caps)
    w("shapes.txt", SHAPES)
    w("colours.txt", NAMES)
    w("tpl.txt", ["a {}.", "a picture of a {}."])
    if a.folders:
        r = random.Random(7)
        for i in range(24):  # class folders by colour, 6 JPEGs each
            im, s, c = draw(r, a.size, i % 4)
            d = os.path.join(a.out, "classes", NAMES[c])
            os.makedirs(d, exist_ok=True)
            im.save(os.path.join(d, f"{i:03d}.jpg"), quality=90)
        d = os.path.join(a.out, "png")
        os.makedirs(d, exist_ok=True)
        pcaps = []
        for i in range(12):
            im, s, c = draw(r, a.size)
            im.save(os.path.join(d, f"{i:03d}.png"))
            pcaps.append(f"a {NAMES[c]} {SHAPES[s]}")
        w("png_caps.txt", pcaps)


if __name__ == "__main__":
    main()
