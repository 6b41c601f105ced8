#!/usr/bin/env bash
# The transport demo (the main job until the end-to-end job exists): one
# receiver process and two sender processes move batches of 64 KiB, 1 MiB and
# 4 MiB over TCP and over shared memory, every payload byte checked; the
# receiver prints what landed as RESULT lines.
#   perf/transport_demo.sh [STOKER_PERF]
set -euo pipefail
stoker_perf=${1:-build/release/perf/stoker-perf}
work=$(mktemp -d)
trap 'pkill -P $$ 2>/dev/null || true; rm -rf "$work"' EXIT

for tls in tcp sm,tcp; do
  echo "== UCX_TLS=$tls: 1 receiver, 2 senders (auto push mode), payloads verified"
  export UCX_TLS=$tls
  "$stoker_perf" --log-level warn server --listen 127.0.0.1:0 --port-file "$work/port" \
    --senders 2 --verify >"$work/server.log" 2>&1 &
  server=$!
  for _ in $(seq 100); do [[ -s $work/port ]] && break; sleep 0.05; done
  clients=()
  for s in 1 2; do
    "$stoker_perf" --log-level warn client --connect "127.0.0.1:$(cat "$work/port")" \
      --size 64K 1M 4M --iterations 1000 --verify --name "sender-$s" >"$work/client-$s.log" 2>&1 &
    clients+=($!)
  done
  for c in "${clients[@]}"; do wait "$c" || { cat "$work"/client-*.log; exit 1; }; done
  wait "$server" || { cat "$work/server.log"; exit 1; }
  cat "$work/server.log"
  rm -f "$work/port"
done
