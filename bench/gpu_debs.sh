#!/usr/bin/env bash
# bench/gpu_debs.sh: download (here, on a Debian machine with apt) the packages that a reduced
# tessera build needs on the GPU machine, which reaches no package registry: oneDNN, libjpeg-
# turbo, libspng, libyaml, cJSON, libarchive with the libraries it loads, zlib's headers and
# pkgconf. The build there leaves out FFmpeg and HDF5 (TESSERA_VIDEO/HDF5=OFF), whose package
# trees would not fit a call. bench/gpu_quickstart.sh unpacks them with dpkg -x into a prefix
# of its own; nothing is installed into the machine's system folders.
# Usage: bash bench/gpu_debs.sh [DIR]   (default .deb, which .git/info/exclude should ignore;
#        the device call then names .deb in carry)
set -euo pipefail
cd "$(dirname "$0")/.."
DIR="${1:-.deb}"
mkdir -p "$DIR"
pkgs=(
  libdnnl2 libdnnl-dev
  libturbojpeg0 libturbojpeg0-dev libjpeg62-turbo libjpeg62-turbo-dev
  libspng0 libspng-dev
  libyaml-0-2 libyaml-dev
  libcjson1 libcjson-dev
  libarchive13 libarchive-dev libacl1 libb2-1 libbz2-1.0 liblz4-1 liblzma5 libzstd1
  libnettle8 libxml2 libicu72
  zlib1g zlib1g-dev
  pkgconf pkgconf-bin libpkgconf3
)
(cd "$DIR" && rm -f ./*.deb && apt-get download "${pkgs[@]}")
du -ch "$DIR"/*.deb | tail -1
