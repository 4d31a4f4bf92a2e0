#!/usr/bin/env python3
"""Load a tessera checkpoint of the quickstart model into PyTorch modules laid out as open_clip
lays out its text tower (token_embedding, positional_embedding, transformer.resblocks.N with
ln_1, attn = nn.MultiheadAttention, ln_2, mlp.c_fc / mlp.c_proj, ln_final), with strict name and
shape checking: the proof that a PyTorch user can load our checkpoints as they are.

usage: load_checkpoint.py MODEL.safetensors WIDTH LAYERS HEADS VOCAB SEQ_LEN
"""
import collections
import json
import struct
import sys

import numpy as np
import torch
from torch import nn

NP = {"F32": np.float32, "BF16": None, "I32": np.int32, "I64": np.int64, "U8": np.uint8}


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    meta = header.pop("__metadata__", {})
    out = collections.OrderedDict()
    for name, e in header.items():
        b, en = e["data_offsets"]
        arr = np.frombuffer(data[b:en], dtype=NP[e["dtype"]]).reshape(e["shape"])
        out[name] = torch.from_numpy(arr.copy())
    return out, meta


class Block(nn.Module):
    def __init__(self, c, h):
        super().__init__()
        self.ln_1 = nn.LayerNorm(c)
        self.attn = nn.MultiheadAttention(c, h, batch_first=True)
        self.ln_2 = nn.LayerNorm(c)
        self.mlp = nn.Sequential(collections.OrderedDict(
            [("c_fc", nn.Linear(c, 4 * c)), ("gelu", nn.GELU()), ("c_proj", nn.Linear(4 * c, c))]))


class Transformer(nn.Module):
    def __init__(self, c, layers, h):
        super().__init__()
        self.resblocks = nn.ModuleList([Block(c, h) for _ in range(layers)])


class SeqModel(nn.Module):
    def __init__(self, c, layers, h, vocab, seq_len):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab, c)
        self.positional_embedding = nn.Parameter(torch.empty(seq_len, c))
        self.transformer = Transformer(c, layers, h)
        self.ln_final = nn.LayerNorm(c)
        self.head = nn.Linear(c, vocab)


def main():
    path, c, layers, h, vocab, seq_len = sys.argv[1], *map(int, sys.argv[2:7])
    tensors, meta = read_safetensors(path)
    assert meta.get("tessera.format") == "1", meta
    model = SeqModel(c, layers, h, vocab, seq_len)
    model.load_state_dict(tensors, strict=True)
    print(f"load_checkpoint.py: {len(tensors)} tensors loaded strictly into torch "
          f"{torch.__version__} modules; step {meta.get('tessera.step')}")


if __name__ == "__main__":
    main()
