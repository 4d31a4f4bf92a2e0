#!/usr/bin/env bash
# tessera data inspect: on files made here (a robomimic-layout HDF5 written with h5py, a short
# H.264/MPEG-4 clip encoded with the ffmpeg program, a PNG written by PIL), the summary lines,
# and the errors with their exit codes: a missing file, a truncated clip, usage errors; a
# WebDataset tar (fields, a member cut short) and CSV/TSV files (quoting, missing images). Parts whose writer is missing (h5py, ffmpeg, PIL) are skipped
# with a note.
source "$(dirname "$0")/clilib.sh"
PY=/usr/bin/python3

expect 0 "usage: tessera data inspect" -- "$TS" data --help
expect 2 "usage: tessera data inspect" -- "$TS" data
expect 2 "unknown command 'frob'" -- "$TS" data frob
expect 2 "no PATH given" -- "$TS" data inspect
expect 2 "unknown option --frob" -- "$TS" data inspect --frob x.hdf5
expect 1 "missing.hdf5: cannot open" -- "$TS" data inspect missing.hdf5
printf 'a,b\n1,2\n' > table.csv
expect 0 "no column named like a path" -- "$TS" data inspect table.csv
printf 'filepath,title\n"never closed\n' > broken.csv
expect 1 "broken.csv:2: a quoted field is never closed" -- "$TS" data inspect broken.csv
head -c 20000 /dev/urandom > 000.jpg; echo "a caption" > 000.txt; echo 3 > 001.cls
tar cf shard.tar 000.jpg 000.txt 001.cls table.csv
expect 0 "samples:    3 (4 members)" -- "$TS" data inspect shard.tar
grep -qF "fields:     jpg 1, txt 1, cls 1, csv 1" out.txt || fail "fields by extension"
head -c 5000 shard.tar > cut.tar
expect 1 "damaged shard" -- "$TS" data inspect cut.tar
grep -qF "cut.tar:000.jpg: member cut short" out.txt || fail "the cut member is not named"
printf 'filepath\ttitle\nshard.tar\tthe shard\n"gone.jpg"\t"a ""quoted"" caption"\n' > pairs.tsv
expect 0 "1 missing file" -- "$TS" data inspect pairs.tsv
grep -qF "row 2 (line 3)" out.txt || fail "the missing file's row is not named"
echo "plain text" > notes.txt
expect 1 "knows HDF5, video, JPEG and PNG" -- "$TS" data inspect notes.txt

if $PY -c "import h5py, numpy" 2>/dev/null; then
  $PY - <<'PY'
import h5py, numpy as np
with h5py.File("robomimic.hdf5", "w") as f:
    data = f.create_group("data")
    total = 0
    for i, L in enumerate([5, 7, 9]):
        g = data.create_group(f"demo_{i}")
        g.attrs["num_samples"] = L
        g["actions"] = np.zeros((L, 7))
        g["obs/robot0_eef_pos"] = np.zeros((L, 3))
        g["obs/agentview_image"] = np.zeros((L, 84, 84, 3), np.uint8)
        g["rewards"] = np.zeros(L)
        g["dones"] = np.zeros(L, np.int64)
        total += L
    data.attrs["total"] = total
    data.attrs["env_args"] = '{"env_name": "Lift", "type": 1}'
    f["mask/train"] = np.array([b"demo_0", b"demo_1"])
    f["mask/valid"] = np.array([b"demo_2"])
PY
  expect 0 "agentview_image  (9, 84, 84, 3) uint8" -- "$TS" data inspect robomimic.hdf5
  expect 0 "robot0_eef_pos  (5, 3) float64" -- "$TS" data inspect robomimic.hdf5
  expect 0 "@env_args = \"{\"env_name\": \"Lift\"" -- "$TS" data inspect robomimic.hdf5
  expect 0 "demos: 3 (demo_0 .. demo_2)" -- "$TS" data inspect robomimic.hdf5
  expect 0 "steps: 21 (per demo: min 5, mean 7.0, max 9)" -- "$TS" data inspect robomimic.hdf5
  expect 0 "masks: train (2 demos) valid (1 demos)" -- "$TS" data inspect robomimic.hdf5
  head -c 3000 robomimic.hdf5 > cut.hdf5
  expect 1 "cut.hdf5: not a readable HDF5 file" -- "$TS" data inspect cut.hdf5
else
  echo "note: h5py is not installed (python3-h5py); the HDF5 part is skipped"
fi

if command -v ffmpeg > /dev/null; then
  codec=mpeg4
  ffmpeg -hide_banner -encoders 2>/dev/null | grep -q libx264 && codec=libx264
  ffmpeg -v error -f lavfi -i testsrc=size=96x64:rate=25 -frames:v 40 -c:v $codec \
    -pix_fmt yuv420p clip.mp4
  ffmpeg -v error -i clip.mp4 -c copy clip.mkv
  expect 0 "size:      96 x 64" -- "$TS" data inspect clip.mp4
  expect 0 "frames:    40 (header: 40)" -- "$TS" data inspect clip.mp4
  expect 0 "fps:       25.000" -- "$TS" data inspect clip.mp4
  expect 0 "duration:  1.600 s" -- "$TS" data inspect clip.mp4
  expect 0 "frames:    40 (the header does not say; counted)" -- "$TS" data inspect clip.mkv
  expect 0 "container: matroska,webm" -- "$TS" data inspect clip.mkv
  head -c "$(( $(stat -c %s clip.mp4) / 2 ))" clip.mp4 > cut.mp4
  expect 1 "cut.mp4: cannot open as a video" -- "$TS" data inspect cut.mp4
  expect 1 "cut.mp4" -- "$TS" data inspect clip.mp4 cut.mp4
else
  echo "note: the ffmpeg program is not installed; the video part is skipped"
fi

if $PY -c "import PIL" 2>/dev/null; then
  $PY -c "from PIL import Image; Image.new('RGB', (33, 17)).save('tiny.png')"
  expect 0 "size:        33 x 17 (as stored)" -- "$TS" data inspect tiny.png
  expect 0 "format:      PNG" -- "$TS" data inspect tiny.png
fi
pass "tessera data inspect"
