#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Cluster figures (the cluster goals of docs/benchmarks.md), on one machine over loopback:
#  1. formation: 3 brokerha-server processes found through DNS SRV (tests/support/dns_server.py),
#     seconds from the start of the first until /ready answers 200 on all three;
#  2. cross-node traffic: brokerha-bench pairs (10 publishers on node 1, 10 subscribers on
#     node 2), QoS 0 and QoS 1 at max rate, then at a fixed 1,000 msg/s for p99, each next to
#     the same run with both sides on node 1 (the added cost of crossing the cluster);
#  3. late joiner: node 1 holds N retained messages (default 100,000); seconds from the start
#     of a new node until its broker_retained_messages reaches N.
#
# Usage: bench/cluster.sh [BUILD_DIR] [DURATION_S] [RETAINED]   (default build/release 10 100000)
# Only processes this script starts are stopped, by pid.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
build=${1:-build/release}
duration=${2:-10}
retained=${3:-100000}
server="$build/brokerha-server/brokerha-server"
bench="$build/bench/brokerha-bench"
for f in "$server" "$bench"; do
  [ -x "$f" ] || { echo "cluster.sh: $f not built (cmake --preset release && cmake --build --preset release)" >&2; exit 2; }
done
work="$(mktemp -d /tmp/brokerha-cluster-bench-XXXXXX)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

base=$((20000 + RANDOM % 20000))
dns_port=$((base + 99))
domain="_broker._tcp.bench.test"
# The nodes' shared cluster.config.secret_key (a cluster needs one), as `openssl rand -hex 16`.
key="$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
now() { date +%s.%N; }

node_config() {  # i -> writes node i's config
  local i=$1
  cat > "$work/node$i.yaml" <<YAML
mqtt: {port: $((base + i)), bind: 127.0.0.1}
api: {port: $((base + 10 + i)), bind: 127.0.0.5$i}
cluster: {node_name: node$i, bind: 127.0.0.5$i, port: 7946, expected_members: 3, config: {secret_key: "$key"}}
discovery: {domain: $domain, nameservers: ["127.0.0.1:$dns_port"], refresh_interval: 1000}
log: {level: warn}
YAML
}
start_node() {
  node_config "$1"
  "$server" --config "$work/node$1.yaml" > "$work/node$1.log" 2>&1 &
  pids+=($!)
}
ready() { [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.5$1:$((base + 10 + $1))/ready" || true)" = 200 ]; }
metric() { curl -s "http://127.0.0.5$1:$((base + 10 + $1))/metrics" | awk -v m="$2" '$1 == m {print $2}'; }
zone() {  # nodes -> zone file with SRV records for nodes 1..n
  {
    echo "{\"$domain\": {\"SRV\": ["
    for i in $(seq 1 "$1"); do
      [ "$i" -gt 1 ] && echo ","
      echo "{\"priority\": 0, \"weight\": 0, \"port\": 7946, \"target\": \"node$i.bench.test\"}"
    done
    echo "]}"
    for i in $(seq 1 "$1"); do echo ", \"node$i.bench.test\": {\"A\": [\"127.0.0.5$i\"]}"; done
    echo "}"
  } > "$work/zone.tmp" && mv "$work/zone.tmp" "$work/zone.json"
}

zone 3
/usr/bin/python3 tests/support/dns_server.py --bind 127.0.0.1 --port "$dns_port" --zone "$work/zone.json" > /dev/null 2>&1 &
pids+=($!)
sleep 0.3

echo "== 1. formation of 3 nodes through DNS SRV"
t0=$(now)
for i in 1 2 3; do start_node "$i"; done
for _ in $(seq 1 600); do
  if ready 1 && ready 2 && ready 3 && [ "$(metric 1 broker_cluster_members)" = 3 ]; then break; fi
  sleep 0.05
done
t1=$(now)
echo "formation_s=$(echo "$t1 - $t0" | bc)"

echo "== 2. cross-node traffic (publishers on node1, subscribers on node2) vs one node"
run() {  # label pub_port sub_port qos rate
  "$bench" --pub-port "$2" --sub-port "$3" --shape pairs --qos "$4" --rate "$5" \
    --duration "$duration" --label "$1" --no-progress | tail -n 1
}
for qos in 0 1; do
  run "cross-q$qos-max" $((base + 1)) $((base + 2)) "$qos" 0
  run "local-q$qos-max" $((base + 1)) $((base + 1)) "$qos" 0
  run "cross-q$qos-1000" $((base + 1)) $((base + 2)) "$qos" 100
  run "local-q$qos-1000" $((base + 1)) $((base + 1)) "$qos" 100
done

echo "== 3. late joiner with $retained retained messages"
/usr/bin/python3 - "$((base + 1))" "$retained" <<'PY'
import sys, paho.mqtt.client as mqtt
port, n = int(sys.argv[1]), int(sys.argv[2])
c = mqtt.Client(client_id="retainer")
c.connect("127.0.0.1", port)
c.loop_start()
for i in range(n):
    c.publish("retained/%d/%d" % (i // 1000, i), b"x" * 32, qos=0, retain=True)
c.disconnect()
c.loop_stop()
PY
for _ in $(seq 1 600); do
  [ "$(metric 1 broker_retained_messages)" = "$retained" ] && break
  sleep 0.1
done
echo "node1 retained: $(metric 1 broker_retained_messages)"
zone 4
t0=$(now)
start_node 4
for _ in $(seq 1 1200); do
  [ "$(metric 4 broker_retained_messages)" = "$retained" ] && break
  sleep 0.05
done
t1=$(now)
echo "late_joiner_retained=$(metric 4 broker_retained_messages) late_joiner_s=$(echo "$t1 - $t0" | bc)"
