#!/usr/bin/env bash
# Build the libFuzzer targets (fuzz/fuzz_*.c) with clang into build-fuzz/ and run each for a
# bounded time: fuzz/run.sh [SECONDS] (default 4; CI uses the default, by hand run longer).
# Seeds are the small sample images of ../shared/data/images (and the small shards of
# ../shared/data/webdataset for fuzz_tar) when those folders exist; fuzz_csv, fuzz_hdf5 and
# fuzz_video get small generated seeds (a few CSVs written here, two HDF5 files the target
# writes itself, tiny clips encoded by ffmpeg when it is installed) plus the small robosuite
# files of ../shared/data/hdf5 and clips of ../shared/data/video; the
# corpus grows in build-fuzz/corpus_NAME. A crash stops the run with a non-zero status and
# leaves its input in build-fuzz/ (replay: build-fuzz/fuzz/fuzz_NAME FILE).
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-4}"

cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DTESSERA_FUZZ=ON -DCMAKE_BUILD_TYPE=Debug \
      -DTESSERA_CUDA=OFF >/dev/null
cmake --build build-fuzz -j"$(nproc)" --target fuzz_jpeg fuzz_png fuzz_tar fuzz_csv fuzz_hdf5 \
      fuzz_video >/dev/null

for name in jpeg png tar csv hdf5 video; do
  corpus="build-fuzz/corpus_$name"
  seeds="build-fuzz/seeds_$name"
  mkdir -p "$corpus" "$seeds"
  ext=$([ "$name" = jpeg ] && echo jpg || echo png)
  if [ "$name" = tar ]; then
    if [ -d ../shared/data/webdataset ]; then
      find ../shared/data/webdataset -name "*.t*" -size -128k -exec cp -f {} "$seeds/" \;
    fi
  elif [ "$name" = csv ]; then
    printf 'filepath,title\na/1.jpg,"a cat, ""quoted"""\r\nb.png,"two\nlines"\n\n/abs/c.jpg,x\n' \
      >"$seeds/basic.csv"
    printf 'title\tfilepath\tid\ncap one\timg/0.jpg\t0\ncap two\timg/1.jpg\t1\n' >"$seeds/tabs.tsv"
    printf 'filepath,title\nx.jpg,"open quote\n' >"$seeds/unterminated.csv"
  elif [ "$name" = hdf5 ]; then
    if [ -d ../shared/data/hdf5 ]; then
      find ../shared/data/hdf5 -name "*.hdf5" -size -128k -exec cp -f {} "$seeds/" \;
    fi
  elif [ "$name" = video ]; then
    if command -v ffmpeg >/dev/null && [ ! -f "$seeds/h264.mp4" ]; then
      ffmpeg -loglevel error -y -f lavfi -i testsrc=size=32x24:rate=10 -frames:v 8 -g 3 \
        -c:v libx264 -pix_fmt yuv420p "$seeds/h264.mp4" || true
      ffmpeg -loglevel error -y -f lavfi -i testsrc=size=24x16:rate=5 -frames:v 5 -g 2 \
        -c:v mpeg4 "$seeds/mpeg4.mkv" || true
    fi
    if [ -d ../shared/data/video ]; then
      find ../shared/data/video -name "*.mp4" -size -128k -exec cp -f {} "$seeds/" \;
    fi
  elif [ -d ../shared/data/images ]; then
    find ../shared/data/images -name "*.$ext" -size -64k -exec cp -f {} "$seeds/" \;
  fi
  # Inputs that once found a bug (fuzz/regressions/NAME) are replayed first, as seeds. The
  # mutation seed is fixed (TS_FUZZ_SEED) so that a CI run explores the same inputs each time.
  regress=""
  if [ -d "fuzz/regressions/$name" ]; then regress="../fuzz/regressions/$name"; fi
  echo "fuzz/run.sh: fuzz_$name for ${secs}s"
  # The container files are larger than images: the real robosuite file and clip are ~90 KiB.
  maxlen=$(case "$name" in hdf5|video) echo 131072;; *) echo 65536;; esac)
  (cd build-fuzz && TS_FUZZ_SEEDS="seeds_$name" "./fuzz/fuzz_$name" -max_total_time="$secs" \
      -max_len="$maxlen" -timeout=10 -seed="${TS_FUZZ_SEED:-1}" \
      -rss_limit_mb=2048 -print_final_stats=1 "corpus_$name" "seeds_$name" $regress 2>&1 |
     grep -E "stat::number_of_executed_units|stat::peak_rss|ERROR|SUMMARY|Test unit written" || true)
  # libFuzzer writes crash-*, leak-*, timeout-* and oom-* files next to where it runs.
  # (ls fails when any one of the patterns matches nothing, so the files are counted instead.)
  if [ -n "$(ls build-fuzz/crash-* build-fuzz/leak-* build-fuzz/timeout-* build-fuzz/oom-* 2>/dev/null)" ]; then
    echo "fuzz/run.sh: fuzz_$name found a problem: $(ls build-fuzz/crash-* build-fuzz/leak-* build-fuzz/timeout-* build-fuzz/oom-* 2>/dev/null)"
    exit 1
  fi
done
