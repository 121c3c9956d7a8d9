#!/bin/bash
# Second pass of issue 13 (docs/benchmarks.md). Paths under /tmp/p13 as run; nginx-veth.conf is the configuration.
# wrk in a client namespace, across a veth (MSS 1448, as in knits-bench), to a server namespace
# holding nginx (:8081), proxy A (:81) and proxy B (:82); the proxies reach nginx on loopback.
# Per run: req/s, p50, p99, max latency, and the server namespace's TcpExtDelayedACKs.
# usage: stall.sh BIN_A BIN_B ROUNDS SECS PATH [WRKARGS]
set -u
A=$1; B=$2; R=${3:-5}; D=${4:-3}; P=${5:-/s65536}; W=${6:--t1 -c1}
S=kp13s; C=kp13c
ip netns add $S; ip netns add $C
ip link add kp13a type veth peer name kp13b
ip link set kp13a netns $C; ip link set kp13b netns $S
ip netns exec $C ip addr add 198.18.213.1/24 dev kp13a; ip netns exec $S ip addr add 198.18.213.2/24 dev kp13b
for n in $S $C; do ip netns exec $n ip link set lo up; done
ip netns exec $C ip link set kp13a up; ip netns exec $S ip link set kp13b up
ip netns exec $S /usr/sbin/nginx -c /tmp/p13/lo/nginx/nginx.conf & NG=$!
ip netns exec $S $A --log-level warn --threads 1 run --node-id n1 --listen 198.18.213.2:81 --upstream 127.0.0.1:8081 --policy local & PA=$!
ip netns exec $S $B --log-level warn --threads 1 run --node-id n1 --listen 198.18.213.2:82 --upstream 127.0.0.1:8081 --policy local & PB=$!
sleep 1
for round in $(seq 1 $R); do
  for port in 8081 81 82; do
    d0=$(ip netns exec $S nstat -az TcpExtDelayedACKs | awk '/TcpExtDelayedACKs/ {print $2}')
    out=$(ip netns exec $C wrk $W -d${D}s --latency http://198.18.213.2:$port$P)
    d1=$(ip netns exec $S nstat -az TcpExtDelayedACKs | awk '/TcpExtDelayedACKs/ {print $2}')
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    p50=$(echo "$out" | awk '$1=="50%" {print $2}')
    p99=$(echo "$out" | awk '$1=="99%" {print $2}')
    max=$(echo "$out" | awk '$1=="Latency" {print $4}')
    echo "port=$port round=$round rps=$rps p50=$p50 p99=$p99 max=$max delayedacks=$((d1-d0))"
  done
done
kill $PA $PB $NG; wait 2>/dev/null
ip netns del $S; ip netns del $C
