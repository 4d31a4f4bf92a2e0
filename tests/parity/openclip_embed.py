#!/usr/bin/env python3
"""A CLIP checkpoint trained by tessera, loaded into open_clip, gives the embeddings that
`tessera embed` wrote: the proof that our checkpoints are open_clip checkpoints.

The model is open_clip's own CLIP class, built by open_clip.create_model from a config dict
that matches the recipe (registered as a JSON model config) and the state dict is the
checkpoint's model.safetensors as it is, loaded with load_state_dict(strict=True). Images are
preprocessed as the eval transform does when the stored size is the model's (resize and center
crop are then the identity): ToTensor and CLIP's Normalize; texts are tokenized by open_clip's
SimpleTokenizer built on the run's merges file.

usage: openclip_embed.py MODEL.safetensors RECIPE.yaml IMAGES.h5 TEXTS.h5
With TS_OPEN_CLIP_VENV naming the venv of the parity_openclip_venv test (open_clip 3.3.0).
Prints the max abs differences; exit status 1 when one is 1e-4 or more.
"""
import collections
import glob
import json
import os
import struct
import sys
import tempfile

venv = os.environ.get("TS_OPEN_CLIP_VENV", "")
for site in sorted(glob.glob(os.path.join(venv, "lib", "python3*", "site-packages"))):
    if site not in sys.path:
        sys.path.append(site)

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
import open_clip  # noqa: E402
from open_clip.tokenizer import SimpleTokenizer  # noqa: E402
from PIL import Image  # noqa: E402

MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    header.pop("__metadata__", None)
    out = collections.OrderedDict()
    for name, e in header.items():
        assert e["dtype"] == "F32", (name, e["dtype"])
        b, en = e["data_offsets"]
        out[name] = torch.from_numpy(np.frombuffer(data[b:en], np.float32).reshape(e["shape"]).copy())
    return out


def main():
    model_path, recipe_path, img_h5, txt_h5 = sys.argv[1:5]
    r = yaml.safe_load(open(recipe_path))["model"]
    v, t = r["vision"], r["text"]
    sd = read_safetensors(model_path)
    assert v["type"] == "vit" and v.get("pool", "token") == "token"
    cfg = {
        "embed_dim": r["embed_dim"],
        "quick_gelu": False,
        "vision_cfg": {"image_size": v["image_size"], "patch_size": v["patch_size"],
                       "width": v["width"], "layers": v["layers"],
                       "head_width": v["width"] // v["heads"],
                       "mlp_ratio": v.get("mlp_ratio", 4.0)},
        "text_cfg": {"context_length": t["context_length"],
                     "vocab_size": sd["token_embedding.weight"].shape[0],
                     "width": t["width"], "heads": t["heads"], "layers": t["layers"]},
    }
    # open_clip's factory reads model configs from JSON files named after the model
    cfg_dir = tempfile.mkdtemp(prefix="ts-openclip-")
    with open(os.path.join(cfg_dir, "tessera-synthetic.json"), "w") as f:
        json.dump(cfg, f)
    open_clip.add_model_config(cfg_dir)
    model = open_clip.create_model("tessera-synthetic", pretrained=None)
    assert type(model) is open_clip.model.CLIP, type(model)
    print("open_clip.create_model: config", json.dumps(cfg))
    print("load_state_dict(strict=True):", model.load_state_dict(sd, strict=True))
    model.eval()

    with h5py.File(img_h5) as f:
        emb_i = f["embeddings"][:]
        ids_i = [x.decode() for x in f["ids"][:]]
        assert bool(f.attrs["normalized"])
    with h5py.File(txt_h5) as f:
        emb_t = f["embeddings"][:]
        texts = [x.decode() for x in f["ids"][:]]
    S = v["image_size"]
    ims = []
    for p in ids_i:
        a = np.asarray(Image.open(p).convert("RGB"), np.float32) / 255.0
        assert a.shape == (S, S, 3), (p, a.shape)
        ims.append(((a - MEAN) / STD).transpose(2, 0, 1))
    tok = SimpleTokenizer(bpe_path=r_tokenizer(recipe_path), context_length=t["context_length"])
    with torch.no_grad():
        ref_i = model.encode_image(torch.from_numpy(np.stack(ims)), normalize=True).numpy()
        ref_t = model.encode_text(tok(texts), normalize=True).numpy()
    di, dt = np.abs(ref_i - emb_i).max(), np.abs(ref_t - emb_t).max()
    print(f"images: {len(ids_i)} x {emb_i.shape[1]}, max abs diff {di:.3g}")
    print(f"texts:  {len(texts)} x {emb_t.shape[1]}, max abs diff {dt:.3g}")
    if not (di < 1e-4 and dt < 1e-4):
        print("FAIL: tessera embed and open_clip differ", file=sys.stderr)
        sys.exit(1)


def r_tokenizer(recipe_path):
    return yaml.safe_load(open(recipe_path))["data"]["tokenizer"]


if __name__ == "__main__":
    main()
