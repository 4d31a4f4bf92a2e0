# cli_recipes.sh: every recipe of recipes/ is read and its model built (`tessera train --check`),
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
    quickstart-clip) continue ;; # below, with its data
  esac
  check "$name"
done
check clip-vit-b32 && [ "$(count)" = 151277313 ] || fail "clip-vit-b32: $(count) parameters"
check clip-vit-b16 && [ "$(count)" = 149620737 ] || fail "clip-vit-b16: $(count) parameters"
pass "every recipe builds; CLIP ViT-B/32 and B/16 have open_clip's parameter counts"

# a wrong key is refused by name
"$TS" train "$SRC/recipes/clip-vit-b32.yaml" --check --set model.vision.widht=3 2> err.txt \
  && fail "a misspelt key was accepted"
grep -q "widht" err.txt || fail "the error does not name the key: $(cat err.txt)"
pass "a misspelt key is refused by name"
