#!/usr/bin/env bash
# What senders that come and go leave with the receiver they fed: one
# stoker-perf server, then N short stoker-perf clients, one after another,
# each pushing a few batches and leaving cleanly. Measured on the server's
# process once they have all gone, against the same figures after the first
# sender: its memory mappings, its resident memory, its open file
# descriptors, and the host's resident shared memory (Shmem in
# /proc/meminfo: segments stay resident while any process maps them, so run
# nothing else that allocates shared memory meanwhile).
#
# Over shared memory UCX 1.13 keeps each departed sender's segments mapped
# in the receiver until it stops (docs/protocol.md, section 12). A sender's
# own UCX context keeps its receive pool small for that reason; to see what
# UCX's default pool would cost, run with UCX_MM_RX_BUFS_GROW=512 (UCX's
# environment wins over stoker's choice).
#
#   perf/sender_churn.sh [--stoker-perf PATH] [--tls "sm tcp"] [--senders N]
#
# One line per transport, over the N-2 senders between the first (it sets up
# what the receiver keeps in any case) and the last (it ends the server):
#   RESULT test=sender_churn tls=<sm|tcp> senders=<N-2> maps_per_sender=<x>
#          rss_kB_per_sender=<x> shmem_kB_per_sender=<x> fds_per_sender=<x>
set -euo pipefail

stoker_perf=${STOKER_PERF:-build/release/perf/stoker-perf}
tls_list="sm tcp"
senders=200

while [[ $# -gt 0 ]]; do
  case $1 in
    --stoker-perf) stoker_perf=$2; shift 2 ;;
    --tls) tls_list=$2; shift 2 ;;
    --senders) senders=$2; shift 2 ;;
    *) echo "sender_churn.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ -x $stoker_perf ]] || { echo "sender_churn.sh: $stoker_perf is not built" >&2; exit 2; }
# N-2 senders are measured: at least one.
((senders >= 3)) || { echo "sender_churn.sh: --senders must be 3 or more" >&2; exit 2; }

work=$(mktemp -d)
trap 'pkill -P $$ 2>/dev/null || true; rm -rf "$work"' EXIT

shmem_kB() { awk '/^Shmem:/ {print $2}' /proc/meminfo; }
rss_kB() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
maps() { wc -l <"/proc/$1/maps"; }
fds() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 | wc -l; }
per_sender() { awk -v a="$1" -v b="$2" -v n="$3" 'BEGIN { printf "%.2f", (b - a) / n }'; }

for tls in $tls_list; do
  [[ $tls == sm ]] && ucx_tls=sm,tcp || ucx_tls=$tls
  rm -f "$work/port"
  UCX_TLS=$ucx_tls "$stoker_perf" server --listen 127.0.0.1:0 --senders "$senders" \
    --slot-bytes 64K --slots 16 --credits 4 --port-file "$work/port" \
    --idle-timeout-ms 60000 >"$work/server.out" 2>&1 &
  server=$!
  for _ in $(seq 100); do [[ -s $work/port ]] && break; sleep 0.05; done
  [[ -s $work/port ]] || { echo "sender_churn.sh: the server did not start" >&2; cat "$work/server.out" >&2; exit 1; }
  port=$(cat "$work/port")
  client() {
    UCX_TLS=$ucx_tls "$stoker_perf" client --connect "127.0.0.1:$port" --size 64K \
      --iterations 10 >>"$work/client.out" 2>&1
  }
  client
  sleep 0.5  # the receiver settles the first departure
  maps0=$(maps "$server") rss0=$(rss_kB "$server") fds0=$(fds "$server") shmem0=$(shmem_kB)
  for _ in $(seq 2 $((senders - 1))); do client; done
  sleep 0.5
  n=$((senders - 2))
  maps1=$(maps "$server") rss1=$(rss_kB "$server") fds1=$(fds "$server") shmem1=$(shmem_kB)
  client  # the last one lets the server finish
  wait "$server"
  grep -q "^RESULT role=server" "$work/server.out" || { echo "sender_churn.sh: the server failed" >&2; cat "$work/server.out" >&2; exit 1; }
  echo "RESULT test=sender_churn tls=$tls senders=$n" \
    "maps_per_sender=$(per_sender "$maps0" "$maps1" "$n")" \
    "rss_kB_per_sender=$(per_sender "$rss0" "$rss1" "$n")" \
    "shmem_kB_per_sender=$(per_sender "$shmem0" "$shmem1" "$n")" \
    "fds_per_sender=$(per_sender "$fds0" "$fds1" "$n")"
done
