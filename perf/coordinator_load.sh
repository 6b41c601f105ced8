#!/usr/bin/env bash
# Starts a coordinator (fresh work dir, journal durability as given) and runs
# stoker-coordinator-load against it on this machine; prints its RESULT line.
#   perf/coordinator_load.sh [BUILD_DIR] [--durability sync|os] [load options...]
set -euo pipefail
build=${1:-build/release}
shift || true
durability=sync
if [[ ${1:-} == --durability ]]; then durability=$2; shift 2; fi
work=$(mktemp -d)
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$work"' EXIT
"$build/coordinator/stoker-coordinator" --host 127.0.0.1 --port 0 --work-dir "$work" \
  --durability "$durability" --heartbeat-ms 1000 --log-level warn >"$work/coordinator.log" 2>&1 &
pid=$!
for _ in $(seq 100); do
  address=$(grep -o 'listening on [0-9.:]*' "$work/coordinator.log" | awk '{print $3}') && [[ -n $address ]] && break
  sleep 0.1
done
echo "coordinator at $address (journal durability: $durability)" >&2
"$build/perf/stoker-coordinator-load" --coordinator "$address" "$@"
