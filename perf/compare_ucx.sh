#!/usr/bin/env bash
# Runs ucx_perftest (ucp_am_bw) and stoker-perf at the same message sizes over
# the same transport, in the same run, and prints one line per point:
#
#   RESULT tls=<tcp|sm> size=<bytes> ucx_MBps=<x> stoker_MBps=<y> ratio=<y/x>
#
# and, for the fan-in check, the same line with senders=<n> before the sizes
# (stoker with n sender processes against ucx_perftest's single stream).
# stoker's figure is the server's: a batch counts once it has fully landed in
# a slot and the consumer has taken it. The clock runs from the first measured
# batch to the last; with several senders, the warm-up batches of one that
# started late land in that window and count too (warmup_in_window=). Each
# point runs the two tools alternately --reps times, each run moving about
# 12 GiB (3000 to 100000 messages; --iterations N fixes the count); the MB/s
# are the medians of each tool's runs, the ratio the median of the reps' own
# ratios, and each rep's figures go to stderr. MB/s are ucx_perftest's (2^20
# bytes per second).
# Each sender gets --credits landing slots. By default that is the
# receiver's own default of 8 (ReceiverOptions::credits_per_sender), raised
# for small batches to hold 8 MiB, up to 64: 8 x 64 KiB cannot keep a link
# busy, while at 1 and 4 MiB 64 credits moved less than 8 over TCP
# (docs/perf.md, "Credits by batch size"). --credits N fixes the count. Like
# ucx_perftest, each stoker sender sends every batch from one buffer
# (--reuse-buffer); --ring sends from a ring of credits buffers instead, as a
# real producer would (colder caches).
# --receiver-threads N gives the fan-in server N progress threads (the line
# then says receiver_threads=N); single-sender points always use one.
# --ucx-test T runs another ucx_perftest test as the reference (the line then
# starts ucx_test=T): ucp_put_bw is the one that matches stoker's put into a
# receiver's mapped pool over shared memory (docs/perf.md); the targets of
# issue 2 are against ucp_am_bw, the default.
# --max-bytes-in-flight sets each sender's SenderOptions::max_bytes_in_flight
# (0 by default: the receiver's share decides); --receiver-window sets the
# receiver's ReceiverOptions::max_bytes_in_flight, shared by its senders
# (16 MiB by default).
# --busy-poll-us N sets how long the receiver's progress thread polls after
# its last event before it sleeps (ReceiverOptions::busy_poll, 50 us by
# default; the line then says busy_poll_us=N), --sender-busy-poll-us N the
# same for the senders (SenderOptions::busy_poll). ucx_perftest polls
# without ever sleeping. Each rep's line on stderr gives the share of CPU
# time the hypervisor took from this VM while each tool ran (steal_pct,
# from /proc/stat): on a shared host a thread that sleeps may wait to be
# run again (docs/perf.md, "Busy polling and steal time").
#
# Both tools run pinned the same way (taskset), as ucx_perftest -c would:
# the server side on the first cores (one per receiver progress thread plus
# one for the consumer, but never more than leaves a core for the senders),
# each sender on the next core after them, round robin. Unpinned, the
# scheduler moves the two sides between cores and a point swings by +-30% on
# a 2-core VM; --no-pin turns it off.
#
#   perf/compare_ucx.sh [--stoker-perf PATH] [--tls "tcp sm"] [--sizes "65536 1048576 4194304"]
#                       [--iterations N] [--reps N] [--credits N] [--ring] [--fanin N]
#                       [--fanin-size BYTES] [--mode am|put|auto] [--receiver-threads N]
#                       [--max-bytes-in-flight BYTES] [--receiver-window BYTES] [--no-pin]
#                       [--ucx-test ucp_am_bw|ucp_put_bw] [--busy-poll-us N]
#                       [--sender-busy-poll-us N]
set -euo pipefail

stoker_perf=${STOKER_PERF:-build/release/perf/stoker-perf}
tls_list="tcp sm"
sizes="65536 1048576 4194304"
iterations=auto  # per size: about 12 GiB a run, 3000 to 100000 messages
reps=3
credits=auto  # per size: 8, or enough for 8 MiB, up to 64
source=(--reuse-buffer)
fanin=4
fanin_size=1048576
receiver_threads=1
window=()           # the senders' default max_bytes_in_flight
receiver_window=()  # the receiver's default max_bytes_in_flight
busy_poll=()        # the receiver's default busy_poll
sender_busy_poll=() # the senders' default busy_poll
pin=1
ucx_test=ucp_am_bw
mode=auto  # stoker's push mode: put into the receiver's mapped pool over shared memory, else active messages
port=$((20000 + RANDOM % 20000))

while [[ $# -gt 0 ]]; do
  case $1 in
    --stoker-perf) stoker_perf=$2; shift 2 ;;
    --tls) tls_list=$2; shift 2 ;;
    --sizes) sizes=$2; shift 2 ;;
    --iterations) iterations=$2; shift 2 ;;
    --reps) reps=$2; shift 2 ;;
    --credits) credits=$2; shift 2 ;;
    --ring) source=(); shift ;;
    --fanin) fanin=$2; shift 2 ;;
    --fanin-size) fanin_size=$2; shift 2 ;;
    --mode) mode=$2; shift 2 ;;
    --receiver-threads) receiver_threads=$2; shift 2 ;;
    --max-bytes-in-flight) window=(--max-bytes-in-flight "$2"); shift 2 ;;
    --receiver-window) receiver_window=(--max-bytes-in-flight "$2"); shift 2 ;;
    --no-pin) pin=0; shift ;;
    --ucx-test) ucx_test=$2; shift 2 ;;
    --busy-poll-us) busy_poll=(--busy-poll-us "$2"); shift 2 ;;
    --sender-busy-poll-us) sender_busy_poll=(--busy-poll-us "$2"); shift 2 ;;
    *) echo "compare_ucx.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
command -v ucx_perftest >/dev/null || { echo "compare_ucx.sh: ucx_perftest not found (apt-get install ucx-utils)" >&2; exit 2; }
[[ -x $stoker_perf ]] || { echo "compare_ucx.sh: $stoker_perf is not built" >&2; exit 2; }

# Loopback TCP figures depend on the host's congestion control: BBR paces
# bursts that cubic sends at once (docs/perf.md, "BBR"). Each run says which
# one it had, beside its reps on stderr.
echo "host: $(nproc) cores, tcp_congestion_control=$(cat /proc/sys/net/ipv4/tcp_congestion_control 2>/dev/null || echo unknown)" >&2

work=$(mktemp -d)
trap 'pkill -P $$ 2>/dev/null || true; rm -rf "$work"' EXIT

# stoker's sockaddr handshake needs tcp in UCX_TLS; the data endpoint then
# picks shared memory when it is allowed (docs/protocol.md).
ucx_tls() { [[ $1 == sm ]] && echo sm || echo "$1"; }
stoker_tls() { [[ $1 == sm ]] && echo sm,tcp || echo "$1"; }

# CPU time of the whole VM so far, as "steal total" (jiffies, /proc/stat).
cpu_times() { awk '/^cpu / {print $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat; }
steal_pct() {  # "steal total" before, "steal total" after
  echo "$1 $2" | awk '{t = $4 - $2; printf "%.1f", (t > 0 ? 100 * ($3 - $1) / t : 0)}'
}

median() { sort -g | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }

# Receiver progress threads for a point with `senders` senders.
threads_for() { [[ $1 -gt 1 ]] && echo "$receiver_threads" || echo 1; }

cores=$(nproc)
[[ $cores -ge 2 ]] || pin=0
# How many cores the server side gets for `threads` progress threads.
server_core_count() {  # threads
  local n=$(($1 + 1))
  echo $((n > cores - 1 ? cores - 1 : n))
}
server_cores() { echo "0-$(($(server_core_count "$1") - 1))"; }  # threads
# The core of sender `s` (1-based): the cores after the server's, round robin.
sender_core() {  # threads s
  local first
  first=$(server_core_count "$1")
  echo $((first + ($2 - 1) % (cores - first)))
}
# Runs a command on those cores when pinning, as is otherwise.
on_cores() {  # cores command...
  local c=$1
  shift
  if [[ $pin == 1 ]]; then taskset -c "$c" "$@"; else "$@"; fi
}

# Credits (and slots) per sender at `size`: 8, or enough for 8 MiB of
# batches, up to 64.
credits_for() {  # size
  if [[ $credits != auto ]]; then echo "$credits"; return; fi
  local n=$(((8 << 20) / $1))
  echo $((n < 8 ? 8 : n > 64 ? 64 : n))
}

# Messages per run at `size`. Short runs swing by +-15% on a 2-core VM (3000
# batches of 1 MiB last 0.4 s over TCP, while its socket buffers still tune
# themselves); at about 12 GiB a run the same point settles within a few
# percent (docs/perf.md).
iterations_for() {  # size
  if [[ $iterations != auto ]]; then echo "$iterations"; return; fi
  local n=$(((12 << 30) / $1))
  echo $((n < 3000 ? 3000 : n > 100000 ? 100000 : n))
}

# Waits until a socket listens on TCP port $1 (read from /proc/net/tcp and
# tcp6: state 0A), for at most 10 s and while process $2 lives.
wait_for_listener() {  # port pid
  local suffix
  suffix=$(printf ':%04X' "$1")
  for _ in $(seq 200); do
    kill -0 "$2" 2>/dev/null || return 1
    awk -v p="$suffix" 'substr($2, length($2) - 4) == p && $4 == "0A" {found = 1} END {exit !found}' \
      /proc/net/tcp /proc/net/tcp6 2>/dev/null && return 0
    sleep 0.05
  done
  return 1
}

# ucx_perftest (ucp_am_bw, or --ucx-test): the client's "Final" line, overall
# bandwidth (MB/s). A run without that line fails the script with both logs:
# an empty figure would make a meaningless ratio.
run_ucx() {  # tls size
  port=$((port + 1))
  UCX_TLS=$(ucx_tls "$1") on_cores "$(server_cores 1)" \
    ucx_perftest -t "$ucx_test" -s "$2" -n "$(iterations_for "$2")" -p "$port" >"$work/ucx_server.log" 2>&1 &
  local server=$! client_status=0 figure
  if ! wait_for_listener "$port" "$server"; then
    kill "$server" 2>/dev/null || true
    cat "$work/ucx_server.log" >&2
    echo "compare_ucx.sh: ucx_perftest's server exited or never listened on port $port" >&2
    return 1
  fi
  UCX_TLS=$(ucx_tls "$1") on_cores "$(sender_core 1 1)" timeout 120 \
    ucx_perftest -t "$ucx_test" -s "$2" -n "$(iterations_for "$2")" -p "$port" 127.0.0.1 \
    >"$work/ucx_client.log" 2>&1 || client_status=$?
  wait "$server" || true
  figure=$(awk '/Final:/ {print $7}' "$work/ucx_client.log")
  if [[ $client_status -ne 0 || -z $figure ]]; then
    cat "$work/ucx_server.log" "$work/ucx_client.log" >&2
    echo "compare_ucx.sh: ucx_perftest's client (exit status $client_status) reported no figure" >&2
    return 1
  fi
  echo "$figure"
}

# stoker-perf: one server, `senders` client processes; the server's MBps.
run_stoker() {  # tls size senders
  local tls size=$2 senders=$3 portfile="$work/port" slots_each
  tls=$(stoker_tls "$1")
  slots_each=$(credits_for "$size")
  rm -f "$portfile"
  local threads
  threads=$(threads_for "$senders")
  UCX_TLS=$tls on_cores "$(server_cores "$threads")" \
    "$stoker_perf" server --listen 127.0.0.1:0 --port-file "$portfile" --senders "$senders" \
    --slot-bytes "$size" --slots $((slots_each * senders)) --credits "$slots_each" \
    --receiver-threads "$threads" "${receiver_window[@]}" "${busy_poll[@]}" \
    >"$work/stoker_server.log" 2>&1 &
  local server=$!
  for _ in $(seq 100); do [[ -s $portfile ]] && break; sleep 0.05; done
  local clients=()
  for s in $(seq "$senders"); do
    UCX_TLS=$tls on_cores "$(sender_core "$threads" "$s")" timeout 120 \
      "$stoker_perf" client --connect "127.0.0.1:$(cat "$portfile")" --size "$size" \
      --iterations "$(iterations_for "$size")" --warmup 200 --buffers "$slots_each" "${source[@]}" \
      "${window[@]}" "${sender_busy_poll[@]}" --mode "$mode" --name "perf-$s" \
      >"$work/stoker_client_$s.log" 2>&1 &
    clients+=($!)
  done
  for c in "${clients[@]}"; do wait "$c" || { cat "$work/stoker_client_"*.log >&2; return 1; }; done
  wait "$server" || { cat "$work/stoker_server.log" >&2; return 1; }
  grep '^RESULT role=server' "$work/stoker_server.log" | sed -E 's/.* MBps=([0-9.]+).*/\1/'
}

point() {  # tls size senders
  local ucx=() stoker=() ratios=() t0 t1 t2
  for _ in $(seq "$reps"); do
    t0=$(cpu_times)
    ucx+=("$(run_ucx "$1" "$2")")
    t1=$(cpu_times)
    stoker+=("$(run_stoker "$1" "$2" "$3")")
    t2=$(cpu_times)
    ratios+=("$(awk -v u="${ucx[-1]}" -v s="${stoker[-1]}" 'BEGIN {print s / u}')")
    echo "rep: tls=$1 size=$2 senders=$3 credits=$(credits_for "$2") ucx_MBps=${ucx[-1]} stoker_MBps=${stoker[-1]}" \
      "ucx_steal_pct=$(steal_pct "$t0" "$t1") stoker_steal_pct=$(steal_pct "$t1" "$t2")" >&2
  done
  local u s r
  u=$(printf '%s\n' "${ucx[@]}" | median)
  s=$(printf '%s\n' "${stoker[@]}" | median)
  # The median of each rep's own ratio: the two runs of a rep are seconds
  # apart, while the machine's speed drifts over the minutes of a whole run.
  r=$(printf '%s\n' "${ratios[@]}" | median)
  local extra=""
  [[ $ucx_test != ucp_am_bw ]] && extra="ucx_test=$ucx_test "
  [[ $3 -gt 1 ]] && extra="${extra}senders=$3 "
  [[ $(threads_for "$3") -gt 1 ]] && extra="${extra}receiver_threads=$(threads_for "$3") "
  [[ ${#busy_poll[@]} -gt 0 ]] && extra="${extra}busy_poll_us=${busy_poll[1]} "
  [[ ${#sender_busy_poll[@]} -gt 0 ]] && extra="${extra}sender_busy_poll_us=${sender_busy_poll[1]} "
  awk -v tls="$1" -v size="$2" -v u="$u" -v s="$s" -v r="$r" -v extra="$extra" \
    'BEGIN {printf "RESULT %stls=%s size=%s ucx_MBps=%.1f stoker_MBps=%.1f ratio=%.3f\n", extra, tls, size, u, s, r}'
}

for tls in $tls_list; do
  for size in $sizes; do point "$tls" "$size" 1; done
  if [[ $fanin -gt 1 ]]; then point "$tls" "$fanin_size" "$fanin"; fi
done
