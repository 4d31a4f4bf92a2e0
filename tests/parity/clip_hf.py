#!/usr/bin/env python3
"""Check `tessera export hf`: the export loads into HuggingFace transformers' CLIPModel and gives
open_clip's embeddings of the same weights.

Inputs: the export folder (model.safetensors, config.json, preprocessor_config.json), the
tessera checkpoint it came from (model.safetensors with open_clip's names, recipe.yaml beside
it), the BPE merges file and the shard the model was trained on.

1. Names and shapes: the export holds exactly the tensors that transformers' CLIPModel of
   config.json has. The expected list is written out below from modeling_clip's module tree
   (CLIPTextEmbeddings, CLIPVisionEmbeddings, CLIPEncoderLayer with q/k/v/out_proj, layer_norm1/2,
   mlp.fc1/fc2, pre_layrnorm, post_layernorm, final_layer_norm, the two bias-free projections and
   logit_scale); when transformers is importable the list is also checked against
   CLIPModel(config).state_dict().
2. Round trip: the export mapped back to open_clip's names (q, k, v stacked into in_proj, the
   projections transposed) loads strictly into open_clip's CLIP and equals the checkpoint
   bit for bit.
3. With transformers: CLIPModel.from_pretrained(export) with no missing, unexpected or
   mismatched weights; its image and text features, and logits_per_image, against open_clip's
   encode_image / encode_text of the checkpoint on the same inputs (random images, captions
   tokenized by open_clip's tokenizer, one cut to the context length), within --atol; and its
   CLIPImageProcessor against open_clip's eval transform on images of the shard.
Without transformers (the venv fixture could not install it) 1 and 2 run and the script says so.

usage: clip_hf.py --export DIR --checkpoint CKPT_DIR --bpe MERGES.gz --shard TAR [--atol A]
"""
import argparse
import io
import json
import os
import sys

import torch
import yaml
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from clip_curve import build_model, read_safetensors, read_shard  # noqa: E402

import open_clip  # noqa: E402
import open_clip.tokenizer  # noqa: E402
import open_clip.transform  # noqa: E402


def die(msg):
    print(f"clip_hf.py: FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def expected_names(cfg):
    """transformers' CLIPModel state_dict names and shapes for config.json (modeling_clip)."""
    t, v, E = cfg["text_config"], cfg["vision_config"], cfg["projection_dim"]
    out = {"logit_scale": ()}

    def layers(prefix, c, inter, n):
        for i in range(n):
            p = f"{prefix}.encoder.layers.{i}"
            for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
                out[f"{p}.self_attn.{proj}.weight"] = (c, c)
                out[f"{p}.self_attn.{proj}.bias"] = (c,)
            for ln in ("layer_norm1", "layer_norm2"):
                out[f"{p}.{ln}.weight"] = (c,)
                out[f"{p}.{ln}.bias"] = (c,)
            out[f"{p}.mlp.fc1.weight"] = (inter, c)
            out[f"{p}.mlp.fc1.bias"] = (inter,)
            out[f"{p}.mlp.fc2.weight"] = (c, inter)
            out[f"{p}.mlp.fc2.bias"] = (c,)

    c = t["hidden_size"]
    out["text_model.embeddings.token_embedding.weight"] = (t["vocab_size"], c)
    out["text_model.embeddings.position_embedding.weight"] = (t["max_position_embeddings"], c)
    layers("text_model", c, t["intermediate_size"], t["num_hidden_layers"])
    out["text_model.final_layer_norm.weight"] = (c,)
    out["text_model.final_layer_norm.bias"] = (c,)
    out["text_projection.weight"] = (E, c)
    c, P, S = v["hidden_size"], v["patch_size"], v["image_size"]
    out["vision_model.embeddings.class_embedding"] = (c,)
    out["vision_model.embeddings.patch_embedding.weight"] = (c, v.get("num_channels", 3), P, P)
    out["vision_model.embeddings.position_embedding.weight"] = ((S // P) ** 2 + 1, c)
    out["vision_model.pre_layrnorm.weight"] = (c,)
    out["vision_model.pre_layrnorm.bias"] = (c,)
    layers("vision_model", c, v["intermediate_size"], v["num_hidden_layers"])
    out["vision_model.post_layernorm.weight"] = (c,)
    out["vision_model.post_layernorm.bias"] = (c,)
    out["visual_projection.weight"] = (E, c)
    return out


def to_open_clip(hf, cfg):
    """The inverse of the export's map: transformers' names back to open_clip's."""
    oc = {"logit_scale": hf["logit_scale"]}
    towers = (("vision_model", "visual.", cfg["vision_config"]),
              ("text_model", "", cfg["text_config"]))
    for src, dst, c in towers:
        for i in range(c["num_hidden_layers"]):
            s, d = f"{src}.encoder.layers.{i}", f"{dst}transformer.resblocks.{i}"
            for kind in ("weight", "bias"):
                oc[f"{d}.attn.in_proj_{kind}"] = torch.cat(
                    [hf[f"{s}.self_attn.{q}_proj.{kind}"] for q in "qkv"])
                oc[f"{d}.attn.out_proj.{kind}"] = hf[f"{s}.self_attn.out_proj.{kind}"]
                oc[f"{d}.ln_1.{kind}"] = hf[f"{s}.layer_norm1.{kind}"]
                oc[f"{d}.ln_2.{kind}"] = hf[f"{s}.layer_norm2.{kind}"]
                oc[f"{d}.mlp.c_fc.{kind}"] = hf[f"{s}.mlp.fc1.{kind}"]
                oc[f"{d}.mlp.c_proj.{kind}"] = hf[f"{s}.mlp.fc2.{kind}"]
    oc["visual.conv1.weight"] = hf["vision_model.embeddings.patch_embedding.weight"]
    oc["visual.class_embedding"] = hf["vision_model.embeddings.class_embedding"]
    oc["visual.positional_embedding"] = hf["vision_model.embeddings.position_embedding.weight"]
    for kind in ("weight", "bias"):
        oc[f"visual.ln_pre.{kind}"] = hf[f"vision_model.pre_layrnorm.{kind}"]
        oc[f"visual.ln_post.{kind}"] = hf[f"vision_model.post_layernorm.{kind}"]
        oc[f"ln_final.{kind}"] = hf[f"text_model.final_layer_norm.{kind}"]
    oc["visual.proj"] = hf["visual_projection.weight"].t().contiguous()
    oc["token_embedding.weight"] = hf["text_model.embeddings.token_embedding.weight"]
    oc["positional_embedding"] = hf["text_model.embeddings.position_embedding.weight"]
    oc["text_projection"] = hf["text_projection.weight"].t().contiguous()
    return oc


def close(name, got, want, atol):
    d = (got - want).abs().max().item()
    scale = want.abs().max().item()
    print(f"clip_hf.py: {name}: max abs diff {d:.3e} (values up to {scale:.3g})")
    if not d <= atol * max(1.0, scale):
        die(f"{name} differ by {d:.3e} (> {atol:g} x max(1, {scale:.3g}))")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--export", required=True)
    ap.add_argument("--checkpoint", required=True, help="the tessera checkpoint folder")
    ap.add_argument("--bpe", required=True)
    ap.add_argument("--shard", required=True)
    ap.add_argument("--atol", type=float, default=1e-4)
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)

    cfg = json.load(open(os.path.join(a.export, "config.json")))
    exported, meta = read_safetensors(os.path.join(a.export, "model.safetensors"))
    if meta.get("format") != "pt":
        die(f"the export's safetensors metadata has format {meta.get('format')!r}, not 'pt'")
    ours, _ = read_safetensors(os.path.join(a.checkpoint, "model.safetensors"))
    recipe = yaml.safe_load(open(os.path.join(a.checkpoint, "recipe.yaml")))

    # 1. names and shapes
    want = expected_names(cfg)
    got = {n: tuple(t.shape) for n, t in exported.items()}
    if got != want:
        missing = sorted(set(want) - set(got))
        extra = sorted(set(got) - set(want))
        wrong = sorted(n for n in set(got) & set(want) if got[n] != want[n])
        die(f"the export's tensors are not CLIPModel's: missing {missing}, unexpected {extra}, "
            f"wrong shapes {[(n, got[n], want[n]) for n in wrong]}")
    print(f"clip_hf.py: {len(got)} tensors with transformers' CLIPModel names and shapes")
    V = cfg["text_config"]["vocab_size"]
    if cfg["text_config"]["eos_token_id"] != V - 1 or cfg["text_config"]["bos_token_id"] != V - 2:
        die(f"config.json has bos/eos {cfg['text_config']['bos_token_id']}/"
            f"{cfg['text_config']['eos_token_id']}; the tokenizer's are {V - 2}/{V - 1}")

    # 2. the round trip to open_clip's names
    back = to_open_clip(exported, cfg)
    if set(back) != set(ours):
        die(f"the round trip gives other names: {sorted(set(back) ^ set(ours))}")
    for n in ours:
        if not torch.equal(back[n], ours[n]):
            die(f"{n}: the export mapped back differs from the checkpoint")
    model = build_model(recipe, V)
    model.load_state_dict(back, strict=True)
    model.eval()
    print("clip_hf.py: the export maps back to the checkpoint's open_clip names bit for bit")

    # inputs
    S, L = cfg["vision_config"]["image_size"], cfg["text_config"]["max_position_embeddings"]
    tok = open_clip.tokenizer.SimpleTokenizer(a.bpe, context_length=L)
    captions = ["a red circle", "a blue square", "a yellow triangle", "a green circle",
                "a red square next to a blue triangle and a green circle on a grey ground, "
                "far longer than the context", "triangle"]
    ids = tok(captions)
    if ids[4, -1].item() != V - 1:
        die("the long caption was not cut with <end_of_text> last")
    images = torch.randn(len(captions), 3, S, S)
    with torch.no_grad():
        oc_img = model.encode_image(images)
        oc_txt = model.encode_text(ids)
        oc_logits = model.logit_scale.exp() * torch.nn.functional.normalize(oc_img, dim=-1) @ \
            torch.nn.functional.normalize(oc_txt, dim=-1).t()

    try:
        import transformers
        from transformers import CLIPImageProcessor, CLIPModel
    except Exception as e:  # the fixture could not install it
        print(f"clip_hf.py: warning: transformers is not importable ({type(e).__name__}: {e}); "
              f"checked names, shapes and the round trip only")
        print("clip_hf.py: ok (without transformers)")
        return

    # 1b. the list above is transformers' own
    ref = CLIPModel(transformers.CLIPConfig(**{k: v for k, v in cfg.items()
                                               if k not in ("architectures", "model_type")}))
    ref_names = {n: tuple(t.shape) for n, t in ref.state_dict().items()
                 if not n.endswith("position_ids")}
    if ref_names != want:
        die(f"transformers {transformers.__version__}'s CLIPModel has other tensors: "
            f"{sorted(set(ref_names) ^ set(want))}")

    # 3. transformers itself
    hf, info = CLIPModel.from_pretrained(a.export, output_loading_info=True)
    bad = {k: v for k, v in info.items() if v}
    if bad:
        die(f"CLIPModel.from_pretrained({a.export}) reports {bad}")
    hf.eval()
    print(f"clip_hf.py: CLIPModel.from_pretrained loaded every weight (transformers "
          f"{transformers.__version__}, torch {torch.__version__})")
    with torch.no_grad():
        hf_img = hf.get_image_features(pixel_values=images)
        hf_txt = hf.get_text_features(input_ids=ids)
        hf_logits = hf(input_ids=ids, pixel_values=images).logits_per_image
    close("image features", hf_img, oc_img, a.atol)
    close("text features", hf_txt, oc_txt, a.atol)
    close("logits_per_image", hf_logits, oc_logits, a.atol)

    proc = CLIPImageProcessor.from_pretrained(a.export)
    oc_eval = open_clip.transform.image_transform(S, is_train=False)
    pics = [Image.open(io.BytesIO(p["png"])).convert("RGB") for _, p in read_shard(a.shard)[:4]]
    px = proc(images=pics, return_tensors="pt")["pixel_values"]
    close("CLIPImageProcessor pixels", px, torch.stack([oc_eval(p) for p in pics]), 1e-5)
    print("clip_hf.py: ok: transformers' CLIPModel of the export gives open_clip's embeddings")


if __name__ == "__main__":
    main()
