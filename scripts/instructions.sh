#!/usr/bin/env bash
# Instructions per packet of knits-core's `Switch::process`, per packet class, counted with
# callgrind (deterministic: the same binary and input give the same count on any load).
# Prints a markdown table; docs/performance.md quotes it. Needs valgrind.
#   scripts/instructions.sh [N]      (N packets per class, default 20000)
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-20000}"
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)"; exit 2; }
cargo build --release -q -p knits-core --example per_packet
bin=target/release/examples/per_packet
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
echo "| class | instructions per packet (Switch::process, inclusive) |"
echo "|---|---|"
for class in ack data syn spliced arp malformed; do
  valgrind --tool=callgrind --callgrind-out-file="$out/$class" "$bin" "$n" "$class" >/dev/null 2>&1
  total=$(callgrind_annotate --inclusive=yes "$out/$class" 2>/dev/null \
    | awk '/knits_core::switch::Switch::process/ { gsub(",", "", $1); if ($1 + 0 > max) max = $1 + 0 } END { print max }')
  echo "| $class | $(( total / n )) |"
done
