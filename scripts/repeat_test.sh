#!/usr/bin/env bash
# Runs one test program ROUNDS times, PARALLEL copies at a time (the load is
# what makes races show), counts the runs that failed and keeps their logs:
#
#   scripts/repeat_test.sh ROUNDS PARALLEL PROGRAM [GTEST_FILTER]
#
# Prints one line per failed run (its first error or crash line), then
#
#   RESULT program=<name> filter=<filter> runs=<n> failed=<n> logs=<dir>
#
# Programs that start stoker-perf need STOKER_PERF in the environment (ctest
# sets it); the others find their programs in the build tree.
set -uo pipefail
[[ $# -ge 3 ]] || { sed -n '2,12p' "$0"; exit 2; }
rounds=$1 parallel=$2 program=$3 filter=${4:-*}
logs=$(mktemp -d)
for round in $(seq "$rounds"); do
  for copy in $(seq "$parallel"); do
    log="$logs/$round-$copy.log"
    (timeout 300 "$program" --gtest_filter="$filter" >"$log" 2>&1 || touch "$log.failed") &
  done
  wait
done
failed=0
for marker in "$logs"/*.failed; do
  [[ -e $marker ]] || continue
  failed=$((failed + 1))
  log=${marker%.failed}
  echo "failed: $(basename "$log"): $(grep -m1 -E 'Assertion|Caught signal|ERROR: AddressSanitizer|: Failure$|timed out' "$log" | cut -c1-200)"
done
echo "RESULT program=$(basename "$program") filter=$filter runs=$((rounds * parallel)) failed=$failed logs=$logs"
