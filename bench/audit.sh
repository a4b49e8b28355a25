#!/usr/bin/env bash
# Benchmark (not a test): `latch audit` throughput and peak memory on a generated export.
#   bench/audit.sh [ITEMS]     default 1000000 items
# Builds the release binary, generates the export once under target/bench/ (reused while its
# item count matches), then times three reads of the whole export: table output to /dev/null,
# JSON lines to /dev/null, and the HTML report. Prints items/s, MB/s of gzip data and the
# peak resident memory (GNU time's "Maximum resident set size").
set -euo pipefail
cd "$(dirname "$0")/.."
items=${1:-1000000}
out="target/bench/audit-export-$items"
bin=target/release/latch

cargo build --release --quiet -p latch-cli
if [[ ! -x /usr/bin/time ]]; then
  echo "bench: installing GNU time" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time > /dev/null
fi
if [[ ! -f "$out/latch-generator-truth.json" ]]; then
  rm -rf "$out"
  /usr/bin/time -f "generate: %e s, peak RSS %M KiB" "$bin" audit generate --items "$items" --seed 1 --out "$out"
fi
gz_bytes=$(du -cb "$out"/AWSDynamoDB/*/data/*.json.gz | tail -1 | cut -f1)
files=$(find "$out"/AWSDynamoDB/*/data -name '*.json.gz' | wc -l)
echo "export: $items items, $((gz_bytes / 1024 / 1024)) MiB of gzip data in $files files"

run() {
  local name=$1; shift
  local log; log=$(mktemp)
  /usr/bin/time -f "%e %M" -o "$log" "$bin" audit "$out" "$@" > /dev/null 2> /dev/null
  read -r secs rss_kib < "$log"
  rm -f "$log"
  awk -v n="$name" -v s="$secs" -v r="$rss_kib" -v i="$items" -v b="$gz_bytes" 'BEGIN {
    printf "%-28s %7.2f s  %10.0f items/s  %6.1f MB/s gzip  peak RSS %6.1f MiB\n", n, s, i / s, b / s / 1e6, r / 1024 }'
}
run "table to /dev/null" --format table
run "jsonl to /dev/null" --format jsonl
run "html report" --report "target/bench/audit-report-$items.html"
run "filtered (one role, 7d)" --role app-deployer --since 7d --format jsonl
