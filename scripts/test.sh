#!/usr/bin/env bash
# Run the whole test suite: install what is missing, build, and run ctest twice, once on the
# release build and once on a build with AddressSanitizer and UndefinedBehaviorSanitizer.
# Extra arguments go to ctest (e.g. -R parity).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
jobs="$(nproc)"

cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$jobs"
(cd build && ctest --output-on-failure -j"$jobs" "$@")

# The sanitizer build (optimised, so the end-to-end training tests stay quick; new arena memory
# is poisoned with NaN): leaks, memory errors and undefined behaviour fail the tests.
cmake -S . -B build-sanitize -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTESSERA_SANITIZE=ON -DTESSERA_CUDA=OFF
cmake --build build-sanitize -j"$jobs"
(cd build-sanitize && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
   ctest --output-on-failure -j"$jobs" -LE no-sanitize "$@")

# Fuzz each image decoder for a few seconds with clang's libFuzzer, when no ctest arguments
# narrow the run (fuzz/run.sh 600 fuzzes longer by hand).
if [ $# -eq 0 ]; then fuzz/run.sh 4; fi
