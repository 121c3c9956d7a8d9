#!/usr/bin/env bash
# Throughput of verified HTTP/1.1 transfers through the switch on TAP devices, the way the paper's
# Fig. 6 measures it (response bytes only), with and without offloads and with 0 or 1 hand-off
# per connection. Needs root. Prints one line per case; docs/performance.md quotes them.
#
#   scripts/throughput.sh [path/to/knits-host]
set -euo pipefail
bin="${1:-target/release/knits-host}"
[ -x "$bin" ] || { echo "build first: cargo build --release -p knits-host (or pass the binary)"; exit 2; }
[ "$(id -u)" = 0 ] || { echo "needs root (CAP_NET_ADMIN) for namespaces and TAP devices"; exit 2; }
size=16777216   # 16 MiB objects
run_case() { # name, nodes, offload flag, conns, max hand-offs (connection c plans c % (max+1))
  local name=$1 nodes=$2 off=$3 conns=$4 hops=$5 prefix="tp$RANDOM" log
  log=$(mktemp)
  "$bin" cluster up --nodes "$nodes" --prefix "$prefix" $off >"$log" 2>&1 &
  local pid=$!
  for _ in $(seq 1 100); do grep -q '^ready' "$log" && break; sleep 0.1; done
  grep -q '^ready' "$log" || { cat "$log"; kill "$pid"; exit 1; }
  local out
  out=$("$bin" load --prefix "$prefix" --nodes "$nodes" --conns "$conns" --concurrency "$conns" \
        --requests 4 --pipeline 1 --max-handoffs "$hops" --sizes "$size" 2>&1 | grep '^requests')
  kill -INT "$pid"; wait "$pid" 2>/dev/null || true
  rm -f "$log"
  printf '%-40s %s\n' "$name" "$out"
}
run_case "offloads on, 1 conn, no hand-off"  1 ""              1 0
run_case "offloads on, 8 conns, no hand-off" 1 ""              8 0
run_case "offloads on, 8 conns, half 1 hand-off" 2 ""              8 1
run_case "offloads off, 1 conn, no hand-off" 1 "--no-offloads" 1 0
run_case "offloads off, 8 conns, half 1 hand-off" 2 "--no-offloads" 8 1
