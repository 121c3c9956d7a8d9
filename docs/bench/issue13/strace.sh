#!/bin/bash
# Second pass of issue 13 (docs/benchmarks.md). Paths under /tmp/p13 as run; nginx-veth.conf is the configuration.
# strace -c -f attached to one proxy (1 worker) while wrk runs PATH for D s
set -u
BIN=$1; P=$2; W=${3:--t1 -c1}; D=${4:-2}
S=kp13t
ip netns add $S; ip netns exec $S ip link set lo up
ip netns exec $S /usr/sbin/nginx -c /tmp/p13/lo/nginx/nginx-lo.conf & NG=$!
ip netns exec $S $BIN --log-level warn --threads 1 run --node-id n1 --listen 127.0.0.1:82 --upstream 127.0.0.1:8081 --policy local & PA=$!
sleep 1
ip netns exec $S wrk -t1 -c1 -d1s http://127.0.0.1:82$P >/dev/null
strace -c -f -o /tmp/p13/strace.out -p $(pgrep -P $PA || echo $PA) & ST=$!
sleep 0.5
ip netns exec $S wrk $W -d${D}s http://127.0.0.1:82$P | grep -E "requests in|Requests/sec|Non-2xx"
kill -INT $ST; wait $ST
kill $PA $NG; wait 2>/dev/null
ip netns del $S
