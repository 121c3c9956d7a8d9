#!/usr/bin/env bash
# wrk over HTTPS through the VIP, as the README's HTTPS section tells a user to run it
# (docs/benchmarks.md "HTTPS through the VIP"): `knits-host cluster up --service 443:tls
# --service 5201:l4` (3 nodes, round-robin spray, nginx with a per-node certificate on every
# node), the names resolved to the VIP in the client namespace's /etc/hosts
# (/etc/netns/<prefix>-client/hosts, which `ip netns exec` mounts), then for each size, REPS
# times, keep-alive and `Connection: close`, 32 connections for SECONDS each:
#   www    www.knits.test: on every node's certificate, no rule names it, served where the
#          connection lands (no hand-off: the proxy relays it to the local nginx);
#   n2     n2.knits.test: owned by node 2 (two of three connections are handed off);
#   mixed  n1, n2 and n3.knits.test at once (10, 11 and 11 connections).
# After each run it reads the switch's counters: hand-offs accepted and refused, drops, and the
# largest flow and splice-session occupancy seen (sampled every 0.5 s). At the end a summary:
# the median requests/s per (size, mode, names) and the switch's figures of every run.
# Needs root, wrk, nginx-light, python3.
# Usage: scripts/wrk-https.sh [path/to/knits-host]   (REPS=3 SECONDS_PER_RUN=8 SIZES="1024 65536")
set -euo pipefail
bin="${1:-target/release/knits-host}"
[ -x "$bin" ] || { echo "build first: cargo build --release -p knits-host (or pass the binary)"; exit 2; }
[ "$(id -u)" = 0 ] || { echo "needs root (CAP_NET_ADMIN) for namespaces and TAP devices"; exit 2; }
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)"; exit 2; }
reps=${REPS:-3}; secs=${SECONDS_PER_RUN:-8}; sizes=${SIZES:-"1024 65536"}
prefix=kwh; ns=$prefix-client
work=$(mktemp -d); out=$work/runs.txt
pid=""
cleanup() {
  [ -n "$pid" ] && kill -INT "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  rm -rf "/etc/netns/$ns" "$work/running"; true
}
trap cleanup EXIT

"$bin" cluster up --nodes 3 --prefix $prefix --service 443:tls --service 5201:l4 >"$work/cluster.log" 2>&1 &
pid=$!
for _ in $(seq 1 300); do grep -q '^ready' "$work/cluster.log" && break; sleep 0.1; done
grep -q '^ready' "$work/cluster.log" || { cat "$work/cluster.log"; exit 1; }
mkdir -p "/etc/netns/$ns"
printf '127.0.0.1 localhost\n198.18.0.10 n1.knits.test n2.knits.test n3.knits.test www.knits.test\n' \
  >"/etc/netns/$ns/hosts"
ip netns exec $ns sysctl -qw net.ipv4.tcp_tw_reuse=1 "net.ipv4.ip_local_port_range=1024 65535"

stat() { "$bin" stats --prefix $prefix; }
sample() { # the largest flow and session counts while $work/running exists
  local mf=0 ms=0 f s
  while [ -e "$work/running" ]; do
    read -r f s < <(stat | sed -n 1p | sed -E 's/.*flows ([0-9]+)\/.*sessions ([0-9]+)\/.*/\1 \2/')
    [ "$f" -gt "$mf" ] && mf=$f; [ "$s" -gt "$ms" ] && ms=$s
    sleep 0.5
  done
  echo "$mf $ms" >"$work/max"
}
one() { # name connections wrk-args...
  local name=$1 c=$2; shift 2
  ip netns exec $ns wrk -t1 -c"$c" -d"${secs}s" "$@" "https://$name/obj/x?size=$size"
}
for size in $sizes; do
  for rep in $(seq 1 "$reps"); do
    for mode in keepalive close; do
      extra=(); [ $mode = close ] && extra=(-H "Connection: close")
      for set in www n2 mixed; do
        before=$(stat | grep -E '^hand-offs|^services|^drops')
        touch "$work/running"; sample & sp=$!
        if [ $set = mixed ]; then
          one n1.knits.test 10 "${extra[@]}" >"$work/o1" & p1=$!
          one n2.knits.test 11 "${extra[@]}" >"$work/o2" & p2=$!
          one n3.knits.test 11 "${extra[@]}" >"$work/o3"
          wait $p1 $p2
          res=$(cat "$work/o1" "$work/o2" "$work/o3")
        else
          res=$(one $set.knits.test 32 "${extra[@]}")
        fi
        rm -f "$work/running"; wait $sp
        sleep 0.3 # the switch publishes its counters every 100 ms
        after=$(stat | grep -E '^hand-offs|^services|^drops')
        rps=$(echo "$res" | awk '/Requests\/sec/ {s+=$2} END {printf "%.0f", s}')
        err=$(echo "$res" | grep -E 'Socket errors|Non-2xx' | tr '\n' ';' || true)
        {
          echo "size=$size rep=$rep mode=$mode set=$set rps=$rps max_flows_sessions=$(cat "$work/max") errors=[$err]"
          echo "  before: $(echo "$before" | tr '\n' '|')"
          echo "  after:  $(echo "$after" | tr '\n' '|')"
        } | tee -a "$out"
      done
    done
  done
done
stat
python3 - "$out" <<'EOF'
import collections, re, statistics, sys
lines = open(sys.argv[1]).read().split("\n")
rows = collections.defaultdict(list)
def num(s, pat):
    m = re.search(pat, s)
    return int(m[1]) if m else 0
for i, l in enumerate(lines):
    m = re.match(r"size=(\d+) rep=\d+ mode=(\w+) set=(\w+) rps=(\d+) max_flows_sessions=(\d+) (\d+) errors=\[(.*)\]", l)
    if not m:
        continue
    b, a = lines[i + 1], lines[i + 2]
    d = lambda pat: num(a, pat) - num(b, pat)
    rows[(int(m[1]), m[2], m[3])].append(dict(
        rps=int(m[4]), flows=int(m[5]), sessions=int(m[6]), errors=m[7],
        handoffs=d(r"accepted (\d+)"), refused=d(r"refused (\d+)"),
        sprayed=d(r"443/tls sprayed (\d+)"), drops=d(r"drops \((\d+)\)")))
print("| size | mode | names | requests/s, median (runs) | hand-offs per sprayed connection | refused | drops | most flows | most sessions | wrk errors |")
print("|---|---|---|---|---|---|---|---|---|---|")
for (size, mode, names), v in sorted(rows.items()):
    rps = [x["rps"] for x in v]
    hpc = [round(x["handoffs"] / max(x["sprayed"], 1), 2) for x in v]
    print(f"| {size} | {mode} | {names} | {statistics.median(rps):.0f} ({', '.join(map(str, rps))}) "
          f"| {', '.join(map(str, hpc))} | {sum(x['refused'] for x in v)} | {sum(x['drops'] for x in v)} "
          f"| {max(x['flows'] for x in v)} | {max(x['sessions'] for x in v)} "
          f"| {sum(1 for x in v if x['errors'])} runs |")
EOF
