#!/usr/bin/env python3
"""reference.py: PIL and torchvision references for tests/unit_image.c.

The C test runs this script live (Debian's python3-pil and python3-torchvision) and compares
its own decoders and transforms with what it writes. It is not a test by itself and keeps no
expected values on disk: every run recomputes them from the inputs it is given.

  reference.py check
      exit 0 when PIL and torchvision import (the C test skips its parity tests otherwise).
  reference.py decode white|drop OUT FILE...
      decode each FILE with PIL as the training code would (ImageOps.exif_transpose, then RGB;
      alpha composited on white with tessera's rounding, or dropped as convert("RGB") does).
  reference.py draft N OUT FILE...
      decode each JPEG FILE with PIL's draft mode at 1/N of its size (libjpeg's DCT scaling),
      then ImageOps.exif_transpose and RGB.
  reference.py transform IN OUT OP...
      apply each OP (below) to the image IN with torchvision.transforms.functional on a uint8
      tensor, antialias=True, and append each result to OUT.

Binary records, little-endian: int32 w, int32 h, then h*w*3 uint8 (HWC). A decode that PIL
refuses writes w = h = -1 and no pixels. The op "norm" writes int32 w, h and 3*h*w float32
(CHW). Ops: resize:INTERP:W:H, short:INTERP:S, center:H:W, crop:TOP:LEFT:H:W,
rcrop:TOP:LEFT:H:W:OUTW:OUTH:INTERP, hflip, norm. INTERP is bilinear or bicubic.
"""
import struct
import sys


def write_u8(f, arr):
    h, w = arr.shape[0], arr.shape[1]
    f.write(struct.pack("<ii", w, h))
    f.write(arr.astype("uint8").tobytes())


def pil_rgb(path, mode, draft=1):
    import numpy as np
    from PIL import Image, ImageOps
    im = Image.open(path)
    if draft > 1:
        im.draft("RGB", (im.size[0] // draft, im.size[1] // draft))
    im.load()
    im = ImageOps.exif_transpose(im)
    has_alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode in ("P", "L", "RGB", "1") and "transparency" in im.info)
    if mode == "white" and has_alpha:
        a = np.asarray(im.convert("RGBA")).astype(np.int64)
        rgb, al = a[..., :3], a[..., 3:4]
        return ((rgb * al + 255 * (255 - al) + 127) // 255).astype(np.uint8)
    return np.asarray(im.convert("RGB"))


def cmd_decode(mode, out, files, draft=1):
    with open(out, "wb") as f:
        for p in files:
            try:
                arr = pil_rgb(p, mode, draft)
            except Exception as e:  # a file PIL refuses: the C side must refuse it too
                sys.stderr.write("reference: %s: %s\n" % (p, e))
                f.write(struct.pack("<ii", -1, -1))
                continue
            write_u8(f, arr)


def interp(name):
    from torchvision.transforms import InterpolationMode
    return {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC}[name]


def cmd_transform(inp, out, ops):
    import numpy as np
    import torch
    import torchvision.transforms.functional as F
    data = open(inp, "rb").read()
    w, h = struct.unpack("<ii", data[:8])
    img = torch.from_numpy(np.frombuffer(data[8:], dtype=np.uint8).reshape(h, w, 3).copy())
    t = img.permute(2, 0, 1).contiguous()  # (3, H, W) uint8, as torchvision.io decodes
    mean, std = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
    with open(out, "wb") as f:
        for op in ops:
            a = op.split(":")
            if a[0] == "resize":
                r = F.resize(t, [int(a[3]), int(a[2])], interp(a[1]), antialias=True)
            elif a[0] == "short":
                r = F.resize(t, int(a[2]), interp(a[1]), antialias=True)
            elif a[0] == "center":
                r = F.center_crop(t, [int(a[1]), int(a[2])])
            elif a[0] == "crop":
                r = F.crop(t, int(a[1]), int(a[2]), int(a[3]), int(a[4]))
            elif a[0] == "rcrop":
                r = F.resized_crop(t, int(a[1]), int(a[2]), int(a[3]), int(a[4]),
                                   [int(a[6]), int(a[5])], interp(a[7]), antialias=True)
            elif a[0] == "hflip":
                r = F.hflip(t)
            elif a[0] == "norm":
                x = F.normalize(t.to(torch.float32).div(255), mean, std)
                f.write(struct.pack("<ii", w, h))
                f.write(x.contiguous().numpy().astype("<f4").tobytes())
                continue
            else:
                raise SystemExit("reference: unknown op " + op)
            write_u8(f, r.permute(1, 2, 0).contiguous().numpy())


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "check":
        import PIL  # noqa: F401
        import torchvision  # noqa: F401
        return
    if len(sys.argv) >= 4 and sys.argv[1] == "decode":
        return cmd_decode(sys.argv[2], sys.argv[3], sys.argv[4:])
    if len(sys.argv) >= 4 and sys.argv[1] == "draft":
        return cmd_decode("drop", sys.argv[3], sys.argv[4:], int(sys.argv[2]))
    if len(sys.argv) >= 4 and sys.argv[1] == "transform":
        return cmd_transform(sys.argv[2], sys.argv[3], sys.argv[4:])
    raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
