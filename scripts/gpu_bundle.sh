#!/usr/bin/env bash
# Packs what the checks on a lent GPU machine need (scripts/gpu_checks.sh runs
# them there): the CUDA build for Hopper (sm_90) with its programs and tests,
# the example trainer built against an install of it, ucx_perftest, the
# shared libraries the GPU machine lacks (../shared/tools/device-bundle.sh)
# and the Fashion-MNIST files. NCCL stays behind: the GPU machine has its own
# (PyTorch's), and ours would not fit the size limit of what travels (64 MiB:
# hence the programs and libraries go as one .tar.xz).
#
#   scripts/gpu_bundle.sh [OUT_DIR]      (default .gpu, which git ignores)
#
# OUT_DIR gets bundle.tar.xz and fashion-mnist/; on the GPU machine,
# `scripts/gpu_checks.sh OUT_DIR RESULTS_DIR` unpacks and runs them.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-.gpu}
jobs=${JOBS:-$(nproc)}
build=build/cuda
cmake -S . -B $build -G Ninja -DCMAKE_BUILD_TYPE=Release -DSTOKER_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES=90 -DSTOKER_WERROR=ON >/dev/null
cmake --build $build -j "$jobs"
cmake --install $build --prefix $build/install >/dev/null
cmake -S examples/fashion_mnist_trainer -B build/example-cuda -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$PWD/$build/install" >/dev/null
cmake --build build/example-cuda

programs=(
  $build/coordinator/stoker-coordinator $build/workers/stoker-worker $build/coordinator/stoker-ctl
  $build/client/stoker-read $build/perf/stoker-perf $build/perf/collate/stoker-collate-bench
  build/example-cuda/fashion-mnist-trainer "$(command -v ucx_perftest)"
)
# Every test program but those of pipeline/ (host code, tested in CI).
mapfile -t tests < <(find $build/tests -name '*_test' -type f -executable -not -path '*/pipeline/*')
staging=build/gpu-bundle
../shared/tools/device-bundle.sh $staging "${programs[@]}" "${tests[@]}"
cp -L $build/tests/gpu/libstoker_dlpack_torch_export.so $staging/lib/
rm -f $staging/lib/libnccl.so*
strip --strip-unneeded $staging/bin/* $staging/lib/*.so* 2>/dev/null || true
rm -rf "$out"
mkdir -p "$out/fashion-mnist"
tar -C $staging -cJf "$out/bundle.tar.xz" bin lib run.sh
cp /usr/share/datasets/fashion-mnist/*.gz "$out/fashion-mnist/"
exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
grep -qx "/$out/" "$exclude" 2>/dev/null || echo "/$out/" >>"$exclude"
du -sh "$out"
