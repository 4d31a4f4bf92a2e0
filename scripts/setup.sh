#!/usr/bin/env bash
# Set up tessera on a fresh Debian/Ubuntu machine: install what is missing, build, and run the
# main job (the quickstart recipe) on its bundled synthetic data.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$(nproc)"
build/tessera data synth shapes --out data/shapes
build/tessera train recipes/quickstart-clip.yaml
