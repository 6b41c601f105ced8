#!/usr/bin/env bash
# Runs perf/compare_ucx.sh for real (ucx_perftest and stoker-perf over TCP
# loopback, a few hundred small messages) and checks what issue 2 fixes about
# its output: one line per point in exactly the documented form, a ratio that
# is stoker's figure over ucx_perftest's, the fan-in point labelled with its
# senders, the reference test named when it is not ucp_am_bw, and exit
# status 0 with and without a fan-in point; a reference run without a figure
# fails it.
#
#   compare_ucx_test.sh SOURCE_DIR STOKER_PERF
set -euo pipefail
source_dir=$1
stoker_perf=$2
command -v ucx_perftest >/dev/null || { echo "SKIP: ucx_perftest not installed"; exit 77; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

run() {  # name args...: runs the script, keeping stdout and stderr
  local name=$1 rc=0
  shift
  "$source_dir/perf/compare_ucx.sh" --stoker-perf "$stoker_perf" --tls tcp --sizes 65536 \
    --reps 1 --iterations 300 "$@" >"$work/$name.out" 2>"$work/$name.err" || rc=$?
  if [[ $rc -ne 0 ]]; then
    cat "$work/$name.err" >&2
    fail "compare_ucx.sh $* exited $rc"
  fi
}

# Checks one RESULT line: its exact form (with the given prefix), and that
# its ratio is stoker_MBps / ucx_MBps (one rep: its own ratio).
check_line() {  # line prefix
  local line=$1 prefix=$2
  [[ $line =~ ^RESULT\ ${prefix}tls=tcp\ size=65536\ ucx_MBps=([0-9]+\.[0-9])\ stoker_MBps=([0-9]+\.[0-9])\ ratio=([0-9]+\.[0-9]{3})$ ]] ||
    fail "not in the documented form: '$line'"
  local u=${BASH_REMATCH[1]} s=${BASH_REMATCH[2]} r=${BASH_REMATCH[3]}
  # Within what printing u and s to 0.1 and r to 0.001 can change.
  awk -v u="$u" -v s="$s" -v r="$r" 'BEGIN {
    d = s / u - r; if (d < 0) d = -d
    exit !(u > 0 && s > 0 && d <= (s / u) * (0.05 / u + 0.05 / s) + 0.0005)
  }' ||
    fail "ratio $r is not $s / $u in '$line'"
}

run fanin --fanin 2 --fanin-size 65536
mapfile -t lines <"$work/fanin.out"
[[ ${#lines[@]} -eq 2 ]] || fail "expected 2 lines (one point, one fan-in point), got: ${lines[*]}"
check_line "${lines[0]}" ""
check_line "${lines[1]}" "senders=2 "
grep -q '^host: [0-9]* cores, tcp_congestion_control=' "$work/fanin.err" ||
  fail "stderr does not say the host's congestion control"
[[ $(grep -c '^rep: ' "$work/fanin.err") -eq 2 ]] || fail "expected one rep line per point on stderr"

# No fan-in point: still one line and exit status 0.
run single --fanin 1
mapfile -t lines <"$work/single.out"
[[ ${#lines[@]} -eq 1 ]] || fail "expected 1 line with --fanin 1, got: ${lines[*]}"
check_line "${lines[0]}" ""

# Another ucx_perftest test as the reference: the line says which.
run put --fanin 1 --ucx-test ucp_put_bw
mapfile -t lines <"$work/put.out"
[[ ${#lines[@]} -eq 1 ]] || fail "expected 1 line with --ucx-test ucp_put_bw, got: ${lines[*]}"
check_line "${lines[0]}" "ucx_test=ucp_put_bw "
# A reference run that reports no figure fails the script, saying so,
# instead of printing a ratio against nothing.
rc=0
"$source_dir/perf/compare_ucx.sh" --stoker-perf "$stoker_perf" --tls tcp --sizes 65536 \
  --reps 1 --iterations 300 --fanin 1 --ucx-test no_such_test >"$work/bad.out" 2>"$work/bad.err" || rc=$?
[[ $rc -ne 0 ]] || fail "a failed ucx_perftest run exited 0"
[[ ! -s $work/bad.out ]] || fail "a failed ucx_perftest run printed: $(cat "$work/bad.out")"
grep -Eq "ucx_perftest's (server exited or never listened|client \(exit status [0-9]+\) reported no figure)" \
  "$work/bad.err" ||
  fail "a failed ucx_perftest run did not say so: $(tail -3 "$work/bad.err")"
echo "compare_ucx.sh: output as documented"
