#!/bin/bash
# 64 connections of 4 KiB and 1 connection of 64 KiB, wrk in one network namespace (loopback):
# nginx alone (:8081), the proxy before issue 13 (:81) and after (:82) in front of it,
# each proxy with one worker thread as knits-bench runs it. Alternated, 5 rounds of 3 s.
set -u
ip netns add k13 2>/dev/null; ip netns exec k13 ip link set lo up
ip netns exec k13 /usr/sbin/nginx -c /tmp/b13/lo/nginx/nginx.conf & NG=$!
ip netns exec k13 /work/target-helper2/knits-bench-before --threads 1 exec-proxy --node-id n1 --listen 127.0.0.1:81 --upstream 127.0.0.1:8081 --policy local & PB=$!
ip netns exec k13 /work/target-helper2/knits-bench-after16 --threads 1 exec-proxy --node-id n1 --listen 127.0.0.1:82 --upstream 127.0.0.1:8081 --policy local & PA=$!
sleep 1
for round in 1 2 3; do
  for port in 8081 81 82; do
    r=$(ip netns exec k13 wrk -t2 -c64 -d3s --latency http://127.0.0.1:$port/s4096 | awk '/Requests\/sec/ {print $2}')
    echo "c64-4k port=$port round=$round rps=$r"
    r=$(ip netns exec k13 wrk -t1 -c1 -d3s --latency http://127.0.0.1:$port/s65536 | awk '/Requests\/sec/ {print $2}')
    echo "c1-64k port=$port round=$round rps=$r"
  done
done
kill $PA $PB $NG; wait
ip netns del k13
