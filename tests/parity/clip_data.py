#!/usr/bin/env python3
"""Write a small image-caption WebDataset shard for the CLIP parity tests.

Each sample is a coloured shape (circle, square or triangle in one of four colours) on a grey
background, saved as PNG so that tessera's decoder and PIL give the same pixels, with the
caption "a <colour> <shape>" and a .json of the two labels. Samples are in key order in one
shard; the captions also go to captions.txt, the corpus of the tokenizer.

usage: clip_data.py OUT_DIR SAMPLES IMAGE_SIZE [SEED]
writes OUT_DIR/train-000000.tar and OUT_DIR/captions.txt
"""
import io
import json
import random
import sys
import tarfile

from PIL import Image, ImageDraw

SHAPES = ["circle", "square", "triangle"]
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220),
           "yellow": (230, 220, 30)}


def sample(r, size):
    s = r.randrange(3)
    name = r.choice(sorted(COLOURS))
    im = Image.new("RGB", (size, size), (r.randrange(80, 140),) * 3)
    d = ImageDraw.Draw(im)
    R = r.randrange(size // 8, size // 4)
    x = r.randrange(R, size - R)
    y = r.randrange(R, size - R)
    col = COLOURS[name]
    if s == 0:
        d.ellipse([x - R, y - R, x + R, y + R], fill=col)
    elif s == 1:
        d.rectangle([x - R, y - R, x + R, y + R], fill=col)
    else:
        d.polygon([(x, y - R), (x - R, y + R), (x + R, y + R)], fill=col)
    b = io.BytesIO()
    im.save(b, "PNG")
    return b.getvalue(), f"a {name} {SHAPES[s]}", {"shape": s, "colour": sorted(COLOURS).index(name)}


def main():
    out, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    r = random.Random(int(sys.argv[4]) if len(sys.argv) > 4 else 0)
    caps = []
    with tarfile.open(f"{out}/train-000000.tar", "w") as t:
        for i in range(n):
            png, cap, js = sample(r, size)
            for ext, data in (("png", png), ("txt", cap.encode()), ("json", json.dumps(js).encode())):
                ti = tarfile.TarInfo(f"{i:06d}.{ext}")
                ti.size = len(data)
                t.addfile(ti, io.BytesIO(data))
            caps.append(cap)
    with open(f"{out}/captions.txt", "w") as f:
        f.write("\n".join(caps) + "\n")


if __name__ == "__main__":
    main()
