#!/usr/bin/env bash
# Where a fan-in run spends its CPU: one stoker-perf receiver and N sender
# processes move 1 MiB batches, and the busiest thread of the receiver and of
# the first sender is sampled from /proc/PID/task/*/stat over the middle
# SECONDS of the run (utime + stime, in % of one core). Prints
#
#   RESULT tls=<tls> senders=<n> receiver_threads=<t> MBps=<receiver's> receiver_busiest_pct=<x> sender_busiest_pct=<y>
#
# With --receiver-threads T the receiver has T progress threads (at most one
# per sender is used).
#
#   perf/receiver_threads.sh [--stoker-perf PATH] [--tls "tcp sm,tcp"] [--senders "1 4"] [--seconds S]
#                            [--receiver-threads T]
set -euo pipefail
stoker_perf=${STOKER_PERF:-build/release/perf/stoker-perf}
tls_list="tcp sm,tcp"
senders_list="4"
seconds=2
receiver_threads=1
while [[ $# -gt 0 ]]; do
  case $1 in
    --stoker-perf) stoker_perf=$2; shift 2 ;;
    --tls) tls_list=$2; shift 2 ;;
    --senders) senders_list=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --receiver-threads) receiver_threads=$2; shift 2 ;;
    *) echo "receiver_threads.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ -x $stoker_perf ]] || { echo "receiver_threads.sh: $stoker_perf is not built" >&2; exit 2; }
work=$(mktemp -d)
trap 'pkill -P $$ 2>/dev/null || true; rm -rf "$work"' EXIT
ticks=$(getconf CLK_TCK)

cpu_ticks() {  # pid -> "tid ticks" per thread
  for t in /proc/"$1"/task/*; do
    awk -v t="${t##*/}" '{print t, $14 + $15}' "$t/stat" 2>/dev/null || true
  done
}
busiest_pct() {  # before after -> % of a core of the busiest thread
  join <(sort "$1") <(sort "$2") |
    awk -v s="$seconds" -v hz="$ticks" '{d = ($3 - $2) / hz / s * 100; if (d > m) m = d} END {printf "%.0f", m}'
}

for tls in $tls_list; do
  for n in $senders_list; do
    export UCX_TLS=$tls
    rm -f "$work/port"
    threads=$((receiver_threads < n ? receiver_threads : n))
    "$stoker_perf" server --listen 127.0.0.1:0 --port-file "$work/port" --senders "$n" \
      --slot-bytes 1M --slots $((64 * n)) --credits 64 --receiver-threads "$threads" \
      >"$work/server.log" 2>&1 &
    server=$!
    for _ in $(seq 100); do [[ -s $work/port ]] && break; sleep 0.05; done
    clients=()
    # 60,000 batches (60 GiB) in all: several seconds even at 15 GB/s.
    for _ in $(seq "$n"); do
      "$stoker_perf" client --connect "127.0.0.1:$(cat "$work/port")" --size 1M \
        --iterations $((60000 / n)) --warmup 200 --buffers 64 --reuse-buffer \
        >"$work/client.log" 2>&1 &
      clients+=($!)
    done
    sleep 1
    cpu_ticks "$server" >"$work/s0"
    cpu_ticks "${clients[0]}" >"$work/c0"
    sleep "$seconds"
    cpu_ticks "$server" >"$work/s1"
    cpu_ticks "${clients[0]}" >"$work/c1"
    for c in "${clients[@]}"; do wait "$c"; done
    wait "$server"
    mbps=$(grep '^RESULT role=server' "$work/server.log" | sed -E 's/.* MBps=([0-9.]+).*/\1/')
    echo "RESULT tls=$tls senders=$n receiver_threads=$threads MBps=$mbps receiver_busiest_pct=$(busiest_pct "$work/s0" "$work/s1") sender_busiest_pct=$(busiest_pct "$work/c0" "$work/c1")"
  done
done
