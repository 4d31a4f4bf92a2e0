#!/usr/bin/env bash
# transformer_block.sh: build and run the transformer-block benchmark (tessera against PyTorch).
#
# Configures and builds BUILD (default: build) with the benchmark target, then runs
# bench/transformer_block.py, which creates BUILD/bench-venv with the current PyPI torch the
# first time (several minutes), times tessera and PyTorch and prints the side-by-side table.
# Not a test: ctest never runs this. Extra arguments go to the Python driver (--help lists them).
# Usage: bench/transformer_block.sh [BUILD] [driver options...]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${1:-$root/build}"
[ $# -gt 0 ] && shift
cmake -S "$root" -B "$build" >/dev/null
cmake --build "$build" -j2 --target transformer_block >/dev/null
exec python3 "$root/bench/transformer_block.py" --build "$build" "$@"
