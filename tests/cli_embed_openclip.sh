#!/usr/bin/env bash
# A CLIP checkpoint trained by tessera loads into open_clip (open_clip.create_model with the
# matching config, load_state_dict(strict=True)) and gives the embeddings `tessera embed` writes
# for the same images (PNG at the model's size: the eval transform is then ToTensor + CLIP's
# Normalize) and texts (open_clip's SimpleTokenizer on the run's merges file): max abs
# difference under 1e-4 on normalised embeddings. Needs open_clip from the parity_openclip_venv
# fixture (TS_OPEN_CLIP_VENV).
source "$(dirname "$0")/clilib.sh"
source "$SRC/tests/cliplib.sh"

clip_run run 32 30
M=run/checkpoints/step_00000030
"$TS" embed --checkpoint run --images data/png --out img.h5 --quiet
"$TS" embed --checkpoint run --texts data/png_caps.txt --out txt.h5 --quiet
/usr/bin/python3 "$SRC/tests/parity/openclip_embed.py" "$M/model.safetensors" "$M/recipe.yaml" \
  img.h5 txt.h5 2>&1 | grep -v "No pretrained weights loaded" \
  || fail "open_clip does not give tessera's embeddings"
pass "tessera checkpoint in open_clip: same embeddings"
