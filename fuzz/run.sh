#!/usr/bin/env bash
# Build the libFuzzer targets (fuzz/fuzz_*.c) with clang into build-fuzz/ and run each for a
# bounded time: fuzz/run.sh [SECONDS] (default 4; CI uses the default, by hand run longer).
# Seeds are the small sample images of ../shared/data/images (and the small shards of
# ../shared/data/webdataset for fuzz_tar) when those folders exist; the
# corpus grows in build-fuzz/corpus_NAME. A crash stops the run with a non-zero status and
# leaves its input in build-fuzz/ (replay: build-fuzz/fuzz/fuzz_NAME FILE).
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-4}"

cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DTESSERA_FUZZ=ON -DCMAKE_BUILD_TYPE=Debug \
      -DTESSERA_CUDA=OFF >/dev/null
cmake --build build-fuzz -j"$(nproc)" --target fuzz_jpeg fuzz_png fuzz_tar >/dev/null

for name in jpeg png tar; do
  corpus="build-fuzz/corpus_$name"
  seeds="build-fuzz/seeds_$name"
  mkdir -p "$corpus" "$seeds"
  ext=$([ "$name" = jpeg ] && echo jpg || echo png)
  if [ "$name" = tar ]; then
    if [ -d ../shared/data/webdataset ]; then
      find ../shared/data/webdataset -name "*.t*" -size -128k -exec cp -f {} "$seeds/" \;
    fi
  elif [ -d ../shared/data/images ]; then
    find ../shared/data/images -name "*.$ext" -size -64k -exec cp -f {} "$seeds/" \;
  fi
  echo "fuzz/run.sh: fuzz_$name for ${secs}s"
  (cd build-fuzz && "./fuzz/fuzz_$name" -max_total_time="$secs" -max_len=65536 -timeout=10 \
      -rss_limit_mb=2048 -print_final_stats=1 "corpus_$name" "seeds_$name" 2>&1 |
     grep -E "stat::number_of_executed_units|stat::peak_rss|ERROR|SUMMARY|Test unit written" || true)
  # libFuzzer writes crash-*, leak-*, timeout-* and oom-* files next to where it runs.
  if ls build-fuzz/crash-* build-fuzz/leak-* build-fuzz/timeout-* build-fuzz/oom-* >/dev/null 2>&1; then
    echo "fuzz/run.sh: fuzz_$name found a problem: $(ls build-fuzz/crash-* build-fuzz/leak-* build-fuzz/timeout-* build-fuzz/oom-* 2>/dev/null)"
    exit 1
  fi
done
