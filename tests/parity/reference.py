#!/usr/bin/env python3
"""PyTorch reference values for tests/test_parity.c.

For every case of the cases_*.py modules beside this file: seed, make the inputs, run the
PyTorch function in float32, pull a random upstream gradient dy back, and store the inputs
(NAME.in0, ...), NAME.dy, NAME.out and the gradients of the inputs that require grad
(NAME.grad0, ...) in one safetensors file. The writer is the format itself (8-byte header
length, JSON header, raw data), so no package beyond torch and numpy is needed.

usage: reference.py OUT.safetensors
"""
import glob
import importlib.util
import json
import os
import struct
import sys

import numpy as np
import torch

DTYPES = {np.float32: "F32", np.int32: "I32", np.int64: "I64", np.uint8: "U8"}


def write_safetensors(path, tensors, metadata):
    header, blobs, off = {"__metadata__": metadata}, [], 0
    for name, arr in tensors.items():
        arr = np.ascontiguousarray(arr).reshape(np.shape(arr))  # 0-d stays 0-d
        raw = arr.tobytes()
        header[name] = {"dtype": DTYPES[arr.dtype.type], "shape": list(arr.shape),
                        "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def run_case(name, make, fn, out):
    """make(g) -> list of tensors (float ones with requires_grad set as wanted);
    fn(*inputs) -> output tensor."""
    g = torch.Generator().manual_seed(1234)
    torch.manual_seed(1234)
    inputs = make(g)
    for i, x in enumerate(inputs):
        out[f"{name}.in{i}"] = x.detach().numpy().copy()
    y = fn(*inputs)
    out[f"{name}.out"] = y.detach().numpy().copy()
    dy = torch.randn(y.shape, generator=g, dtype=torch.float32)
    out[f"{name}.dy"] = dy.numpy().copy()
    if y.requires_grad:
        y.backward(dy)
    for i, x in enumerate(inputs):
        if x.is_floating_point() and x.requires_grad:
            gr = x.grad if x.grad is not None else torch.zeros_like(x)
            out[f"{name}.grad{i}"] = gr.numpy().copy()


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        sys.exit(2)
    torch.set_num_threads(1)
    here = os.path.dirname(os.path.abspath(__file__))
    out, count = {}, 0
    for path in sorted(glob.glob(os.path.join(here, "cases_*.py"))):
        spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        for name, make, fn in mod.CASES:
            run_case(name, make, fn, out)
            count += 1
    write_safetensors(sys.argv[1], out, {"torch_version": torch.__version__})
    print(f"reference.py: {count} cases from torch {torch.__version__} -> {sys.argv[1]}")


if __name__ == "__main__":
    main()
