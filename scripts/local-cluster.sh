#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# A local 3-node brokerha cluster on one machine, found through DNS SRV like in Kubernetes:
# a small DNS server (tests/support/dns_server.py) answers SRV for _broker._tcp.local.test with
# three nodes on 127.0.0.11, 127.0.0.12 and 127.0.0.13.
#
#   scripts/local-cluster.sh            builds (release preset), starts, waits until the
#                                       cluster is ready, prints how to use it; Ctrl-C stops
#   scripts/local-cluster.sh --check    the same, then publishes on node 1 and receives on
#                                       nodes 2 and 3 (mosquitto clients), and stops: exit 0
#                                       when every step worked (run by the test suite)
#
# Environment: BROKERHA_SERVER (a brokerha-server binary: skips the build), BASE_PORT
# (default 18830: MQTT on 127.0.0.1:BASE_PORT+i; node i's HTTP API on 127.0.0.1i:BASE_PORT+10+i
# and its cluster port on 127.0.0.1i:7946, i = 1..3, so /proxy reaches every node at its
# member address; DNS on 127.0.0.1:BASE_PORT+20).
# Everything started here is stopped by its pid on exit; logs are in the work directory printed.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
check=0
[ "${1:-}" = "--check" ] && check=1

server="${BROKERHA_SERVER:-}"
if [ -z "$server" ]; then
  cd "$root"
  bash scripts/install-deps.sh >&2
  [ -f build/release/build.ninja ] || cmake --preset release >&2
  cmake --build --preset release --target brokerha-server >&2
  server="$root/build/release/brokerha-server/brokerha-server"
fi
base="${BASE_PORT:-18830}"
dns_port=$((base + 20))
domain="_broker._tcp.local.test"
# The nodes' shared cluster.config.secret_key (a cluster needs one), as `openssl rand -hex 16`.
key="$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
work="$(mktemp -d /tmp/brokerha-local-cluster-XXXXXX)"
pids=()

stop_all() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  pids=()
}
trap stop_all EXIT
trap 'exit 130' INT TERM

# The zone: one SRV record per node, and each target's address.
{
  echo "{\"$domain\": {\"SRV\": ["
  for i in 1 2 3; do
    [ "$i" -gt 1 ] && echo ","
    echo "{\"priority\": 0, \"weight\": 0, \"port\": 7946, \"target\": \"node$i.local.test\"}"
  done
  echo "]}"
  for i in 1 2 3; do echo ", \"node$i.local.test\": {\"A\": [\"127.0.0.1$i\"]}"; done
  echo "}"
} > "$work/zone.json"
/usr/bin/python3 "$root/tests/support/dns_server.py" --bind 127.0.0.1 --port "$dns_port" \
  --zone "$work/zone.json" > "$work/dns.log" 2>&1 &
pids+=($!)

for i in 1 2 3; do
  cat > "$work/node$i.yaml" <<YAML
mqtt:
  port: $((base + i))
  bind: 127.0.0.1
api:
  port: $((base + 10 + i))
  bind: 127.0.0.1$i
cluster:
  node_name: node$i
  bind: 127.0.0.1$i
  port: 7946
  expected_members: 3
  config:
    secret_key: "$key"
discovery:
  domain: $domain
  nameservers: ["127.0.0.1:$dns_port"]
  refresh_interval: 2000
YAML
  "$server" --config "$work/node$i.yaml" > "$work/node$i.log" 2>&1 &
  pids+=($!)
done

# Ready on every node: joined (or provably alone), as a Kubernetes readiness probe sees it.
ready=0
for _ in $(seq 1 120); do
  ready=0
  for i in 1 2 3; do
    code="$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1$i:$((base + 10 + i))/ready" || true)"
    [ "$code" = "200" ] && ready=$((ready + 1))
  done
  [ "$ready" = 3 ] && break
  sleep 0.5
done
if [ "$ready" != 3 ]; then
  echo "local cluster: only $ready of 3 nodes became ready; logs in $work" >&2
  tail -n 20 "$work"/node*.log >&2
  exit 1
fi
echo "local cluster: 3 nodes ready (logs in $work)"
for i in 1 2 3; do
  echo "  node$i: mqtt://127.0.0.1:$((base + i))  http://127.0.0.1$i:$((base + 10 + i))/proxy/api/mqtt/clients"
done

if [ "$check" = 1 ]; then
  # A subscriber on nodes 2 and 3, one publish on node 1: both receive it.
  for i in 2 3; do
    mosquitto_sub -h 127.0.0.1 -p $((base + i)) -t 'local/check' -q 1 -C 1 -W 15 \
      > "$work/sub$i.out" 2>&1 &
    pids+=($!)
  done
  # The subscriptions are in place once the nodes report them.
  for _ in $(seq 1 50); do
    subs=0
    for i in 2 3; do
      n="$(curl -s "http://127.0.0.1$i:$((base + 10 + i))/metrics" | awk '$1 == "broker_subscriptions" {print $2}')"
      [ "${n:-0}" -ge 1 ] && subs=$((subs + 1))
    done
    [ "$subs" = 2 ] && break
    sleep 0.2
  done
  sleep 0.5  # SUBACK implies the route is known cluster-wide; mosquitto_sub gives no signal
  mosquitto_pub -h 127.0.0.1 -p $((base + 1)) -t 'local/check' -q 1 -m 'hello cluster'
  ok=1
  for i in 2 3; do
    for _ in $(seq 1 75); do
      grep -q 'hello cluster' "$work/sub$i.out" && break
      sleep 0.2
    done
    if ! grep -q 'hello cluster' "$work/sub$i.out"; then
      echo "local cluster: node$i did not receive the message" >&2
      ok=0
    fi
  done
  if [ "$ok" = 1 ]; then
    echo "local cluster: a message published on node1 reached node2 and node3"
    stop_all
    rm -rf "$work"
    exit 0
  fi
  exit 1
fi

echo "Try: mosquitto_sub -p $((base + 2)) -t 'demo/#' -v   and   mosquitto_pub -p $((base + 1)) -t demo/1 -m hi"
echo "Ctrl-C stops the cluster."
wait "${pids[1]}"
