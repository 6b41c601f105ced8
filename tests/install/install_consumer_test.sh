#!/usr/bin/env bash
# Installs the stoker build tree BUILD_DIR (built from SOURCE_DIR; ctest runs
# this after the build, so nothing is compiled twice) into WORK_DIR/prefix,
# then builds and runs
# tests/install/consumer/ against it twice: as a CMake project
# (find_package(stoker)) and with g++ and `pkg-config --static`; then builds
# the example trainer against it and trains it on Fashion-MNIST with the
# installed coordinator and workers.
set -euo pipefail

if [[ $# -ne 3 ]]; then
  echo "usage: $0 SOURCE_DIR BUILD_DIR WORK_DIR" >&2
  exit 2
fi
source_dir=$(cd "$1" && pwd)
build_dir=$(cd "$2" && pwd)
mkdir -p "$3"
work_dir=$(cd "$3" && pwd)
prefix="$work_dir/prefix"
consumer_src="$source_dir/tests/install/consumer"

step="start"
report_failure() {
  local rc=$?
  if [[ $rc -ne 0 ]]; then
    echo "install_consumer_test: FAILED at: $step (exit $rc)" >&2
  fi
}
trap report_failure EXIT
run_step() {
  step="$1"
  shift
  echo "== $step"
  "$@"
}

rm -rf "$prefix" "$work_dir/consumer-cmake" "$work_dir/consumer-pkgconfig" \
  "$work_dir/example"
# Loopback only: keep UCX off shared memory and RDMA devices.
export UCX_TLS=tcp

run_step "install stoker" cmake --install "$build_dir" --prefix "$prefix"

run_step "configure consumer (find_package)" cmake -S "$consumer_src" \
  -B "$work_dir/consumer-cmake" -G Ninja -DCMAKE_PREFIX_PATH="$prefix"
run_step "build consumer (find_package)" cmake --build "$work_dir/consumer-cmake"
run_step "run consumer (find_package)" "$work_dir/consumer-cmake/install_consumer"

step="find the installed stoker.pc"
pc_file=$(find "$prefix" -name stoker.pc -print -quit)
[[ -n "$pc_file" ]]
PKG_CONFIG_PATH=$(dirname "$pc_file")
export PKG_CONFIG_PATH
step="pkg-config --static stoker"
pc_flags=$(pkg-config --cflags --static --libs stoker)
echo "pkg-config: $pc_flags"
mkdir -p "$work_dir/consumer-pkgconfig"
# shellcheck disable=SC2086  # pc_flags is a list of flags
run_step "build consumer (pkg-config)" g++ -std=c++20 "$consumer_src/main.cc" \
  -o "$work_dir/consumer-pkgconfig/install_consumer" $pc_flags
run_step "run consumer (pkg-config)" "$work_dir/consumer-pkgconfig/install_consumer"

# The example trainer, out of tree against the install, trained on
# Fashion-MNIST delivered by the installed coordinator and two workers.
run_step "configure example trainer" cmake -S "$source_dir/examples/fashion_mnist_trainer" \
  -B "$work_dir/example" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix"
run_step "build example trainer" cmake --build "$work_dir/example"
run_step "train on Fashion-MNIST to 80% test accuracy" \
  "$source_dir/examples/run_fashion_mnist.sh" "$prefix/bin" \
  "$work_dir/example/fashion-mnist-trainer" --epochs 2

echo "install_consumer_test: OK"
