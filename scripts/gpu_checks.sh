#!/usr/bin/env bash
# The checks that need a GPU, run on a lent GPU machine from the repository
# root with what scripts/gpu_bundle.sh packed:
#
#   scripts/gpu_checks.sh BUNDLE_DIR OUT_DIR [STEP...]
#
# Steps (default: all, in this order):
#   env      the machine: GPU, driver, what UCX finds
#   tests    every test program of the bundle, 6 at a time (GPU cases included)
#   torch    DLPack into PyTorch: legacy host tensors and a versioned CUDA one
#   bench    stoker-collate-bench: kernels against the device copy, landed-to-ready
#   trainer  the example trainer, batches collated on the GPU (--device)
#   perf     perf/compare_ucx.sh on this machine's cores
#   perf_sm_am     the same over shared memory with active messages (not by default)
#   perf_window16  the same with a window of 16 batches per sender (not by default)
#   perf_fanin     fan-in only, with 1, 2 and 4 receiver progress threads (not by default)
#   threads        perf/receiver_threads.sh: busiest receiver and sender threads (not by default)
# Each step writes OUT_DIR/<step>.log; OUT_DIR/summary.txt gets one line per
# step and every RESULT line. Exits non-zero if a step failed.
set -uo pipefail
packed=$(cd "$1" && pwd)
out=$2
shift 2
steps=${*:-env tests torch bench trainer perf}
mkdir -p "$out"
bundle=/tmp/stoker-gpu-bundle
rm -rf $bundle && mkdir -p $bundle && tar -C $bundle -xJf "$packed/bundle.tar.xz" || exit 1

# The bundle's libraries, and NCCL from the machine's own PyTorch install.
nccl=$(find /opt /usr/local /usr/lib -name 'libnccl.so.2' -print -quit 2>/dev/null || true)
export LD_LIBRARY_PATH="$bundle/lib${nccl:+:$(dirname "$nccl")}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export UCX_MODULE_DIR="$bundle/lib/ucx"
export PATH="$bundle/bin:$PATH"
for p in perf coordinator worker ctl read; do
  export "STOKER_${p^^}=$bundle/bin/stoker-$p"
done
# Where the pipelines and the trainer look for the dataset.
if [[ ! -d /usr/share/datasets/fashion-mnist ]]; then
  mkdir -p /usr/share/datasets && cp -r "$packed/fashion-mnist" /usr/share/datasets/
fi

failed=0
note() { echo "$*" | tee -a "$out/summary.txt"; }
run_step() {  # name, command...
  local name=$1 start=$SECONDS status=0
  shift
  "$@" >"$out/$name.log" 2>&1 || status=$?
  grep -h '^RESULT' "$out/$name.log" >>"$out/summary.txt" || true
  note "step $name: exit $status after $((SECONDS - start)) s"
  [[ $status -eq 0 ]] || failed=1
}

step_env() {
  date -u
  nvidia-smi
  ucx_info -v
  ucx_info -d | grep -E 'Transport|Memory domain|memory types' | sort | uniq -c
  nproc
}

step_tests() {
  local logs
  logs=$(mktemp -d)
  find "$bundle/bin" -name '*_test' | sort |
    xargs -P 6 -I{} sh -c 'timeout 600 {} --gtest_brief=1 >"$0/$(basename {}).log" 2>&1; \
      echo "$? $(basename {})" >>"$0/status"' "$logs"
  local status=0
  for f in "$logs"/*.log; do
    echo "===== $(basename "$f" .log)"
    cat "$f"
  done
  echo "===== summary (exit code, program)"
  sort -k2 "$logs/status"
  echo "skipped:"
  grep -h -A1 '\[  SKIPPED \]' "$logs"/*.log | grep -v '^--' | head -80
  awk '$1 != 0 {bad=1} END {exit bad}' "$logs/status" || status=1
  return $status
}

step_torch() {
  python3 tests/gpu/dlpack_torch_test.py "$bundle/lib/libstoker_dlpack_torch_export.so"
}

step_bench() {
  stoker-collate-bench --iterations 200
  # Working sets well beyond the 50 MB L2, where the copy reference is HBM-bound too.
  stoker-collate-bench --kernel image_f32_nchw --images 1024 --iterations 100
  stoker-collate-bench --kernel image_bf16_nchw --images 1024 --iterations 100
  stoker-collate-bench --kernel dense_concat --dense-rows 262144 --iterations 100
  stoker-collate-bench --kernel sequence_pad_mask --sequences 4096 --iterations 100
  stoker-collate-bench --kernel landed_to_ready --images 1024 --iterations 100
}

step_trainer() {
  examples/run_fashion_mnist.sh "$bundle/bin" "$bundle/bin/fashion-mnist-trainer" --device \
    --epochs 2
}

step_perf() {
  perf/compare_ucx.sh --stoker-perf "$bundle/bin/stoker-perf" --reps 3 --iterations 3000
}

# Shared memory with active messages instead of puts (the default there).
step_perf_sm_am() {
  perf/compare_ucx.sh --stoker-perf "$bundle/bin/stoker-perf" --tls sm --mode am --reps 3 \
    --iterations 3000
}

# A window of 16 batches per sender instead of 64.
step_perf_window16() {
  perf/compare_ucx.sh --stoker-perf "$bundle/bin/stoker-perf" --credits 16 --reps 3 \
    --iterations 3000
}

# Fan-in only (4 senders, 1 MiB), with 1, 2 and 4 receiver progress threads.
step_perf_fanin() {
  for threads in 1 2 4; do
    perf/compare_ucx.sh --stoker-perf "$bundle/bin/stoker-perf" --sizes "" --reps 3 \
      --iterations 3000 --receiver-threads "$threads"
  done
}

step_threads() {
  perf/receiver_threads.sh --stoker-perf "$bundle/bin/stoker-perf" --senders "1 4"
  perf/receiver_threads.sh --stoker-perf "$bundle/bin/stoker-perf" --senders 4 \
    --receiver-threads 4
}

for s in $steps; do
  run_step "$s" "step_$s"
done
exit $failed
