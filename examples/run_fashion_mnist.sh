#!/usr/bin/env bash
# The end-to-end job: a coordinator and two workers on this host deliver
# Fashion-MNIST (the IDX files of the dataset-fashion-mnist package) to the
# example trainer, which trains a classifier and must reach 80% test accuracy.
#   examples/run_fashion_mnist.sh BIN_DIR TRAINER [trainer options...]
# BIN_DIR holds stoker-coordinator and stoker-worker (an install's bin/).
set -euo pipefail
bin=$1
trainer=$2
shift 2
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
export UCX_TLS=${UCX_TLS:-tcp}

"$bin/stoker-coordinator" --host 127.0.0.1 --port 0 --work-dir "$work/coordinator" \
  --heartbeat-ms 200 >"$work/coordinator.log" 2>&1 &
pids+=($!)
address=
for _ in $(seq 200); do
  address=$(grep -o 'listening on [0-9.:]*' "$work/coordinator.log" | awk '{print $3}' || true)
  [[ -n $address ]] && break
  sleep 0.05
done
[[ -n $address ]] || { cat "$work/coordinator.log"; exit 1; }
echo "coordinator at $address"
for w in 1 2; do
  "$bin/stoker-worker" --coordinator "$address" --threads 1 --memory-budget 64M \
    --name "worker-$w" >"$work/worker-$w.log" 2>&1 &
  pids+=($!)
done
status=0
"$trainer" --coordinator "$address" "$@" || status=$?
if [[ $status -ne 0 ]]; then
  for f in "$work"/*.log; do echo "===== $f"; tail -20 "$f"; done
fi
"$bin/stoker-ctl" --coordinator "$address" jobs || true
exit $status
