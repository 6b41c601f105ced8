#!/usr/bin/env bash
# Runs perf/sender_churn.sh for real (a stoker-perf server and a few short
# clients over shared memory and TCP) and checks its output: one RESULT line
# per transport in the documented form, exit status 0, and a refusal of a
# run too short to measure.
#
#   sender_churn_test.sh SOURCE_DIR STOKER_PERF
set -euo pipefail
source_dir=$1
stoker_perf=$2

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

"$source_dir/perf/sender_churn.sh" --stoker-perf "$stoker_perf" --senders 4 \
  >"$work/out" 2>"$work/err" || { rc=$?; cat "$work/err" >&2; fail "sender_churn.sh exited $rc"; }
mapfile -t lines <"$work/out"
[[ ${#lines[@]} -eq 2 ]] || fail "expected 2 lines (sm, tcp), got: ${lines[*]}"
number='[0-9]+\.[0-9]{2}'
for i in 0 1; do
  tls=$([[ $i -eq 0 ]] && echo sm || echo tcp)
  [[ ${lines[$i]} =~ ^RESULT\ test=sender_churn\ tls=$tls\ senders=2\ maps_per_sender=-?$number\ rss_kB_per_sender=-?$number\ shmem_kB_per_sender=-?$number\ fds_per_sender=-?$number$ ]] ||
    fail "not in the documented form: '${lines[$i]}'"
done

rc=0
"$source_dir/perf/sender_churn.sh" --stoker-perf "$stoker_perf" --senders 2 >/dev/null 2>"$work/err" || rc=$?
[[ $rc -eq 2 ]] || fail "--senders 2 (nothing to measure) exited $rc, not 2"
grep -q "must be 3 or more" "$work/err" || fail "--senders 2 did not say why: $(cat "$work/err")"
echo "sender_churn.sh: output as documented"
