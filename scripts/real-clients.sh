#!/usr/bin/env bash
# The real-clients runs of docs/performance.md: unmodified wrk through `knits-host cluster up`
# (3 nodes, the deterministic origin), watching the switch's table and the nodes' TIME-WAIT.
#   1. keep-alive, 16 connections, every request for the next owner (each request moves), 20 s;
#   2. Connection: close, every connection handed off (spray weights 1,0,0: all land on n1,
#      the objects belong to n2 and n3), 20 s;
#   3. the same as 2 for SUSTAIN seconds (default 180): the rate per minute must hold.
# In runs 2 and 3 wrk closes each connection itself right after the response, often before the
# server's FIN arrives, so the client namespace holds one TIME-WAIT per request: with Linux's
# defaults (28k ephemeral ports, 60 s) it cannot open more than ~470 connections a second to
# one address, whatever is behind it. Those runs therefore give the client namespace the whole
# port range and tcp_tw_reuse=1 (client side only: the nodes keep their defaults).
# Needs root. Usage: scripts/real-clients.sh [path/to/knits-host]   (SUSTAIN=0 skips 3)
set -euo pipefail
bin="${1:-target/release/knits-host}"
[ -x "$bin" ] || { echo "build first: cargo build --release -p knits-host (or pass the binary)"; exit 2; }
[ "$(id -u)" = 0 ] || { echo "needs root (CAP_NET_ADMIN) for namespaces and TAP devices"; exit 2; }
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)"; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
sustain=${SUSTAIN:-180}
pid=""
cleanup() { [ -n "$pid" ] && kill -INT "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; true; }
trap cleanup EXIT

up() { # prefix, extra flags...
  local prefix=$1; shift
  log=$(mktemp)
  "$bin" cluster up --nodes 3 --prefix "$prefix" "$@" >"$log" 2>&1 &
  pid=$!
  for _ in $(seq 1 200); do grep -q '^ready' "$log" && break; sleep 0.1; done
  grep -q '^ready' "$log" || { cat "$log"; exit 1; }
}
down() { kill -INT "$pid"; wait "$pid" 2>/dev/null || true; pid=""; }
client_reuse() { # the load generator's own port limits (see the top)
  ip netns exec "$1-client" sysctl -qw net.ipv4.tcp_tw_reuse=1 "net.ipv4.ip_local_port_range=1024 65535"
}
tw() { # node-opened legs in TIME-WAIT (peer port 80) and all TIME-WAIT sockets, summed over nodes
  local prefix=$1 legs=0 all=0 n
  for n in 1 2 3; do
    legs=$((legs + $(ip netns exec "$prefix-n$n" ss -Htan state time-wait | awk '$4 ~ /:80$/' | wc -l)))
    all=$((all + $(ip netns exec "$prefix-n$n" ss -Htan state time-wait | wc -l)))
  done
  echo "node TIME-WAIT: $all sockets, $legs of them new legs"
}
stats() { "$bin" stats --prefix "$1" | grep -E '^switch|^hand-offs|reply codes|^flow events|^drops|flows by state'; }

echo "== 1. keep-alive, 16 connections, every request moves (20 s)"
up rc1
ip netns exec rc1-client env WRK_OWNERS=1,2,3 wrk -t2 -c16 -d20s -s "$here/wrk-owners.lua" http://198.18.0.10/
stats rc1; tw rc1
down

echo "== 2. Connection: close, every connection handed off (20 s)"
up rc2 --weights 1,0,0
client_reuse rc2
ip netns exec rc2-client env WRK_OWNERS=2,3 wrk -t2 -c16 -d20s -H 'Connection: close' -s "$here/wrk-owners.lua" http://198.18.0.10/
stats rc2; tw rc2
down

if [ "$sustain" -gt 0 ]; then
  echo "== 3. sustained: Connection: close, every connection handed off (${sustain} s)"
  up rc3 --weights 1,0,0
  client_reuse rc3
  ip netns exec rc3-client env WRK_OWNERS=2,3 wrk -t2 -c16 -d"${sustain}s" -H 'Connection: close' -s "$here/wrk-owners.lua" http://198.18.0.10/ &
  wrk_pid=$!
  for m in $(seq 60 60 "$sustain"); do
    sleep 60
    echo "-- at ${m} s: $("$bin" stats --prefix rc3 | grep -E '^switch')"
    echo "   $(tw rc3)"
  done
  wait "$wrk_pid"
  stats rc3; tw rc3
  down
fi
