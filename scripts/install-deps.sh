#!/usr/bin/env bash
# Installs the Debian packages stoker builds and tests with, if any is
# missing (idempotent: nothing is fetched when all are present).
set -euo pipefail

packages=(
  cmake ninja-build g++ pkg-config           # toolchain
  libucx-dev ucx-utils libibverbs-dev        # transport; ucx_perftest is the reference
  libfmt-dev libspdlog-dev libcli11-dev      # logging, CLI
  libgtest-dev libgmock-dev clang-format     # tests, style check
  libprotobuf-dev protobuf-compiler          # control messages, journal records
  libssl-dev                                 # HMAC-SHA256 for the cluster secret
  nlohmann-json3-dev libcpp-httplib-dev      # pipeline specs, /metrics
  libturbojpeg0-dev libjpeg62-turbo-dev libpng-dev  # JPEG (region decode), PNG
  libarchive-dev zlib1g-dev                  # tar shards, gzip (IDX)
  clang libclang-rt-14-dev                   # libFuzzer targets
  dataset-fashion-mnist                      # the real dataset tests and the demo use
  python3-pil python3-numpy python3-torch    # independent references in tests
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
((${#missing[@]} == 0)) && exit 0

echo "install-deps: installing ${missing[*]}"
sudo=()
[[ $(id -u) -eq 0 ]] || sudo=(sudo)
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
