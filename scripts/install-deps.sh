#!/usr/bin/env bash
# Install what a fresh Debian 12 / Ubuntu machine is missing to build and test tessera.
# Idempotent: packages already present are left alone, and apt is not touched when none is missing.
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config      # the build
  libdnnl-dev                           # oneDNN: matrix products and convolutions
  libyaml-dev libcjson-dev              # recipes, checkpoint headers and train state
  zlib1g-dev                            # gzip'ed BPE merges files
  libcmocka-dev                         # unit tests
  python3 python3-torch python3-numpy   # the PyTorch reference of the parity tests
  libturbojpeg0-dev libspng-dev         # image decoders of loaders/: JPEG (TurboJPEG API) and PNG
  libjpeg62-turbo-dev                   #   and libjpeg-turbo's libjpeg API, which decodes a crop
  python3-pil python3-torchvision       # the PIL and torchvision references of the image tests
  clang libclang-rt-dev                 # libFuzzer (fuzz/run.sh); the runtime is only a Recommends
  python3-venv                          # a venv for open_clip, the ViT parity reference
  libavformat-dev libavcodec-dev        # video decoding of loaders/ (FFmpeg; libdav1d decodes AV1)
  libswscale-dev libavutil-dev          #   and its scaling to RGB at the target size
  libhdf5-dev                           # robot trajectories (robomimic/LIBERO/robosuite HDF5)
  libarchive-dev                        # WebDataset tar shards of loaders/
  python3-h5py                          # writes the robomimic-layout file of tests/cli_data.sh
  ffmpeg                                # encodes the short clips of tests/cli_data.sh
  libopenmpi-dev openmpi-bin            # data-parallel training over MPI (mpirun; tests/cli_mpi.sh)
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "install-deps: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
