#!/usr/bin/env bash
# tessera data synth reach2d: usage errors with their exit codes, a small file that `tessera
# data inspect` reads, byte-identical output for the same seed (another seed gives another
# file), no temporary left behind, and the robomimic layout as h5py sees it (keys, shapes,
# dtypes, num_samples, total, env_args, masks, instructions, rewards and dones, the images
# showing the named target's colour).
source "$(dirname "$0")/clilib.sh"

expect 0 "tessera data synth reach2d --out FILE.hdf5 --demos N" -- "$TS" data --help
expect 2 "--out FILE is required" -- "$TS" data synth reach2d --demos 3
expect 2 "--demos N is required" -- "$TS" data synth reach2d --out x.hdf5
expect 2 "--targets must be an integer in 1..8 (got 9)" -- \
  "$TS" data synth reach2d --out x.hdf5 --demos 3 --targets 9
expect 2 "--valid-fraction must be a number in [0, 1) (got 1)" -- \
  "$TS" data synth reach2d --out x.hdf5 --demos 3 --valid-fraction 1
expect 2 "--size must be an integer in 16..512 (got 8)" -- \
  "$TS" data synth reach2d --out x.hdf5 --demos 3 --size 8
expect 2 "unknown option --frob" -- "$TS" data synth reach2d --out x.hdf5 --frob 1
expect 2 "valid: shapes, reach2d" -- "$TS" data synth circles --out x
[ ! -e x.hdf5 ] || fail "a usage error created the output file"
expect 1 "cannot create no/such/dir/d.hdf5.tmp" -- \
  "$TS" data synth reach2d --out no/such/dir/d.hdf5 --demos 2

expect 0 "a.hdf5: 20 demos" -- "$TS" data synth reach2d --out a.hdf5 --demos 20 --seed 3 \
  --size 48 --valid-fraction 0.2
grep -qF "mask/train 16, mask/valid 4" out.txt || fail "the split of 20 demos at 0.2"
"$TS" data synth reach2d --out b.hdf5 --demos 20 --seed 3 --size 48 --valid-fraction 0.2 > /dev/null
"$TS" data synth reach2d --out c.hdf5 --demos 20 --seed 4 --size 48 --valid-fraction 0.2 > /dev/null
cmp a.hdf5 b.hdf5 || fail "the same seed gave different files"
cmp -s a.hdf5 c.hdf5 && fail "another seed gave the same file"
ls | grep -q '\.tmp$' && fail "a temporary file was left"
pass "same seed: identical bytes ($(stat -c %s a.hdf5) bytes); another seed: another file"
# Rewriting over an existing file replaces it.
"$TS" data synth reach2d --out b.hdf5 --demos 20 --seed 3 --size 48 --valid-fraction 0.2 > /dev/null
cmp a.hdf5 b.hdf5 || fail "a rerun over the file changed its bytes"

expect 0 "demos: 20 (demo_0 .. demo_19)" -- "$TS" data inspect a.hdf5
grep -qF "masks: train (16 demos) valid (4 demos)" out.txt || fail "inspect: masks"
grep -qE "agentview_image  \([0-9]+, 48, 48, 3\) uint8" out.txt || fail "inspect: images"
grep -qE "proprio  \([0-9]+, 4\) float32" out.txt || fail "inspect: proprio"
grep -qE "@language_instruction = \"[a-z ]+ the [a-z]+ target\"" out.txt ||
  fail "inspect: instruction"

/usr/bin/python3 - a.hdf5 <<'PY'
import json, sys
import h5py
import numpy as np

f = h5py.File(sys.argv[1], "r")
assert sorted(f.keys()) == ["data", "mask"], list(f.keys())
data = f["data"]
demos = sorted(data.keys(), key=lambda k: int(k.split("_")[1]))
assert demos == ["demo_%d" % i for i in range(20)], demos
env = json.loads(data.attrs["env_args"])
assert env["env_name"] == "reach2d" and env["env_kwargs"]["size"] == 48, env
assert env["env_kwargs"]["n_targets"] == 3, env
total = 0
palette = {}
for name in demos:
    g = data[name]
    L = int(g.attrs["num_samples"])
    total += L
    assert sorted(g.keys()) == ["actions", "dones", "obs", "rewards"], list(g.keys())
    assert sorted(g["obs"].keys()) == ["agent_pos", "agent_vel", "agentview_image", "proprio"], \
        list(g["obs"].keys())
    assert (g["obs/agent_pos"][:] == g["obs/proprio"][:, :2]).all()
    assert (g["obs/agent_vel"][:] == g["obs/proprio"][:, 2:]).all()
    a, p, im = g["actions"], g["obs/proprio"], g["obs/agentview_image"]
    assert a.shape == (L, 2) and a.dtype == np.float32, (a.shape, a.dtype)
    assert p.shape == (L, 4) and p.dtype == np.float32, (p.shape, p.dtype)
    assert im.shape == (L, 48, 48, 3) and im.dtype == np.uint8, (im.shape, im.dtype)
    r, d = g["rewards"][:], g["dones"][:]
    assert r.shape == (L,) and d.shape == (L,)
    assert r[-1] == 1 and r[:-1].sum() == 0, r
    assert d[-1] == 1 and d[:-1].sum() == 0, d
    a = a[:]
    assert np.all(np.abs(a) <= 1), "actions outside [-1, 1]"
    p = p[:]
    assert np.all(p[0, 2:] == 0), "the episode starts at rest"
    assert np.all((p[:, :2] >= 0) & (p[:, :2] <= 1)), "position off the square"
    ins = g.attrs["language_instruction"]
    assert isinstance(ins, str) and ins.endswith(" target"), ins
    # the last frame: the mass (black) sits on the named target, whose colour surrounds it
    last = im[-1].astype(int)
    x, y = p[-1, 0], p[-1, 1]
    cx, cy = int(x * 48), int(y * 48)
    assert last[cy, cx].sum() == 0, ("the mass is not black", last[cy, cx])
    # the disc around it has the colour the instruction names: its most common saturated
    # pixel within 5 pixels of the mass, the same RGB for the same name in every demo
    colour = ins.split(" the ")[1].split(" target")[0]
    win = last[max(cy - 5, 0):cy + 6, max(cx - 5, 0):cx + 6].reshape(-1, 3)
    sat = [tuple(c) for c in win if c.max() - c.min() > 40]
    assert len(sat) >= 5, ("no colour around the mass at the goal", name, ins)
    rgb = max(set(sat), key=sat.count)
    palette.setdefault(colour, set()).add(rgb)
assert int(data.attrs["total"]) == total, (data.attrs["total"], total)
assert len(palette) >= 3, palette
for colour, rgbs in palette.items():
    assert len(rgbs) == 1, ("one colour name, several RGBs", colour, rgbs)
rgbs = [next(iter(v)) for v in palette.values()]
assert len(set(rgbs)) == len(rgbs), ("two colour names, one RGB", palette)
masks = f["mask"]
tr, va = masks["train"][:], masks["valid"][:]
assert tr.dtype.kind == "S" and va.dtype.kind == "S", (tr.dtype, va.dtype)
tr = [s.decode() for s in tr]
va = [s.decode() for s in va]
assert len(tr) == 16 and len(va) == 4, (tr, va)
assert sorted(tr + va, key=lambda k: int(k.split("_")[1])) == demos, (tr, va)
print("h5py: robomimic layout ok, %d demos, %d steps, colours %s" % (len(demos), total,
      ", ".join(sorted(palette))))
PY
pass "h5py reads the robomimic layout"
