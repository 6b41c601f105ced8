#!/usr/bin/env bash
# The issue's pipeline benchmark: JPEG decode + RandomResizedCrop 224 + random
# horizontal flip on synthetic ImageNet-like JPEGs (500x375, quality 90,
# ~100 KB), stoker's pipeline on 1 and 2 threads against the same pipeline in
# Python with Pillow on 1 process, same shards, same run.
#
#   perf/pipeline/pipeline_bench.sh [--build DIR] [--data DIR] [--count N] [--repeat N]
#
# --build   build directory holding pipeline/stoker-mkdata and
#           perf/pipeline/stoker-pipeline-bench (default: build/release)
# --data    where the shards are (made with stoker-mkdata when missing;
#           default: a temporary directory, removed at the end)
# --count   images (default 1000, in shards of 100)
# --repeat  timed passes per measurement; the best is kept (default 3)
#
# Prints, per thread count:
#   RESULT pipeline=imagenet threads=<n> stoker_ips=<x> pil_ips=<y> ratio=<x/y> ...
# where ips are images per second of wall-clock time; the extra keys give
# images per CPU-second (robust when other processes share the machine),
# Pillow with draft() (JPEG DCT scaling, as stoker uses) and, for 2 threads,
# the speedup over 1 thread. Goal: ratio >= 2 at 1 thread, speedup >= 1.8.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
build="$root/build/release"
data=""
count=1000
repeat=3
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build) build="$(cd "$2" && pwd)"; shift 2 ;;
    --data) data="$2"; shift 2 ;;
    --count) count="$2"; shift 2 ;;
    --repeat) repeat="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
mkdata="$build/pipeline/stoker-mkdata"
bench="$build/perf/pipeline/stoker-pipeline-bench"
python=/usr/bin/python3  # Debian's, with python3-pil and python3-numpy
for f in "$mkdata" "$bench"; do
  [[ -x "$f" ]] || { echo "missing $f: build the project first" >&2; exit 1; }
done

cleanup=""
if [[ -z "$data" ]]; then
  data="$(mktemp -d /tmp/stoker-pipeline-bench.XXXXXX)"
  cleanup="$data"
fi
trap '[[ -n "$cleanup" ]] && rm -rf "$cleanup"' EXIT
if ! compgen -G "$data/imagenet-like-*.tar" > /dev/null; then
  "$mkdata" imagenet-like --width 500 --height 375 --quality 90 --count "$count" \
    --records-per-shard 100 --format webdataset --output "$data" >&2
fi
shards=("$data"/imagenet-like-*.tar)
spec="{\"source\": {\"type\": \"webdataset\", \"files\": \"$data/imagenet-like-*.tar\",
         \"split_size\": 50, \"num_classes\": 1000},
       \"ops\": [{\"op\": \"random_resized_crop\", \"size\": 224}, {\"op\": \"random_flip\"}],
       \"batch\": {\"size\": 64}}"

value() {  # value KEY LINE
  sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<< "$2"
}

pil=$("$python" "$here/pil_pipeline.py" --repeat "$repeat" "${shards[@]}")
pil_draft=$("$python" "$here/pil_pipeline.py" --draft --repeat "$repeat" "${shards[@]}")
stoker=$("$bench" --name imagenet --threads 1 2 --repeat "$repeat" --spec "$spec")

pil_ips=$(value ips "$pil")
pil_cpu=$(value ips_per_cpu_second "$pil")
pil_draft_ips=$(value ips "$pil_draft")
one=""
while read -r line; do
  threads=$(value threads "$line")
  ips=$(value eps "$line")
  cpu=$(value eps_per_cpu_second "$line")
  [[ -z "$one" ]] && one="$ips"
  extra=""
  if [[ "$threads" != 1 ]]; then
    extra=" speedup_vs_1_thread=$(awk -v a="$ips" -v b="$one" 'BEGIN { printf "%.2f", a / b }')"
  fi
  awk -v t="$threads" -v x="$ips" -v y="$pil_ips" -v cx="$cpu" -v cy="$pil_cpu" \
      -v d="$pil_draft_ips" -v e="$extra" -v n="${#shards[@]}" -v c="$count" 'BEGIN {
    printf "RESULT pipeline=imagenet threads=%s stoker_ips=%.1f pil_ips=%.1f ratio=%.2f", t, x, y, x / y
    printf " stoker_ips_per_cpu_second=%.1f pil_ips_per_cpu_second=%.1f cpu_ratio=%.2f", cx, cy, cx / cy
    printf " pil_draft_ips=%.1f images=%s shards=%s%s\n", d, c, n, e
  }'
done <<< "$stoker"
