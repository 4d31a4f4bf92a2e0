# cli_recipes.sh: every recipe of recipes/ is read and its model built (`tessera train --check`;
# the policies on small stand-in files of their datasets' layouts),
# and the CLIP recipes have open_clip's parameter counts (ViT-B-32 151,277,313 and ViT-B-16
# 149,620,737, as open_clip's model table gives them). The CLIP vocabulary comes from the
# open_clip venv of the parity fixture; the quickstarts' data is generated first.
source "$(dirname "$0")/clilib.sh"

BPE=$(ls "$TS_OPEN_CLIP_VENV"/lib/python3*/site-packages/open_clip/bpe_simple_vocab_16e6.txt.gz \
      2>/dev/null | head -1 || true)
[ -n "$BPE" ] || fail "no open_clip venv at $TS_OPEN_CLIP_VENV (the parity_openclip fixture)"
export TESSERA_BPE="$BPE"

check() { # recipe, then --set overrides
  local r="$1"; shift
  "$TS" train "$SRC/recipes/$r.yaml" --check --quiet "$@" > out.txt 2> err.txt \
    || { cat err.txt >&2; fail "$r: --check failed"; }
  cat out.txt
}
count() { sed -n 's/.* model with \([0-9]*\) parameters.*/\1/p' out.txt; }

for r in "$SRC"/recipes/*.yaml; do
  name=$(basename "$r" .yaml)
  case "$name" in
    quickstart-clip|vla-*) continue ;; # below, with their data
  esac
  check "$name"
done

# The policies read their demonstrations when the model is built (sizes and statistics come from
# them): small files of each layout stand in for robomimic's and robosuite's.
mkdir -p vla
"$TS" data synth reach2d --out vla/reach2d.hdf5 --demos 12 --seed 3 > /dev/null 2>&1 \
  || fail "synth reach2d"
/usr/bin/python3 - vla <<'PY' || fail "writing the robomimic and robosuite stand-ins"
import h5py, numpy as np, sys
d = sys.argv[1]
rng = np.random.default_rng(0)
with h5py.File(f"{d}/robomimic.hdf5", "w") as f:
    for i in range(4):
        g = f.create_group(f"data/demo_{i}")
        L = 30 + i
        g.attrs["num_samples"] = L
        g["actions"] = rng.uniform(-1, 1, (L, 7))
        g["obs/agentview_image"] = rng.integers(0, 255, (L, 84, 84, 3), dtype=np.uint8)
        g["obs/robot0_eef_pos"] = rng.normal(size=(L, 3))
        g["obs/robot0_eef_quat"] = rng.normal(size=(L, 4))
        g["obs/robot0_gripper_qpos"] = rng.normal(size=(L, 2))
    f["mask/train"] = np.array([b"demo_0", b"demo_1", b"demo_2"])
    f["mask/valid"] = np.array([b"demo_3"])
with h5py.File(f"{d}/robosuite.hdf5", "w") as f:
    g = f.create_group("data/demo_1")
    g["actions"] = rng.uniform(-1, 1, (80, 7))
    g["states"] = rng.normal(size=(80, 32))
PY
R2D=(--set data.train="$WORK/vla/reach2d.hdf5" --set data.tokenizer="$WORK/vla/reach2d-bpe.txt.gz")
check vla-diffusion-reach2d "${R2D[@]}"
check vla-tokens-reach2d "${R2D[@]}"
check vla-diffusion-robomimic --set data.train="$WORK/vla/robomimic.hdf5"
check vla-tokens-robomimic --set data.train="$WORK/vla/robomimic.hdf5"
check vla-pretrain-mix --set data.mix.lift.path="$WORK/vla/robomimic.hdf5" \
  --set data.mix.can.path="$WORK/vla/robomimic.hdf5" \
  --set data.mix.reach2d.path="$WORK/vla/reach2d.hdf5"
check vla-robosuite-states --set data.train="$WORK/vla/robosuite.hdf5"
check clip-vit-b32 && [ "$(count)" = 151277313 ] || fail "clip-vit-b32: $(count) parameters"
check clip-vit-b16 && [ "$(count)" = 149620737 ] || fail "clip-vit-b16: $(count) parameters"
pass "every recipe builds; CLIP ViT-B/32 and B/16 have open_clip's parameter counts"

# a wrong key is refused by name
"$TS" train "$SRC/recipes/clip-vit-b32.yaml" --check --set model.vision.widht=3 2> err.txt \
  && fail "a misspelt key was accepted"
grep -q "widht" err.txt || fail "the error does not name the key: $(cat err.txt)"
pass "a misspelt key is refused by name"
