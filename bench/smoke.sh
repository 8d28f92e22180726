#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# CI smoke of the benchmark tools (no timing assertions; about 2 minutes):
#  1. every scenario of bench/compare for 2 s against a fresh brokerha only, failing on any
#     lost, duplicated, reordered or invalid message (compare --check);
#  2. a few extra brokerha-bench runs for what the scenarios do not cover (QoS 2, MQTT 5,
#     fan-in QoS 1, a rate-limited fan-out), 1.5 s each against one fresh brokerha, same checks;
#  3. bench/compare --duration 2 --rounds 1 on two quick scenarios against brokerha, Mosquitto
#     and a --peer (Mosquitto again, by its command line), end to end (every run must produce
#     a result);
#  4. bench/compare --cluster briefly: every cluster scenario once (3 brokerha-server nodes,
#     1 crash trial, 2,000 retained messages), zero loss, no timing asserted.
#
# Usage: bench/smoke.sh [BUILD_DIR]   (default build/release; needs brokerha-server and
#                                      bench/brokerha-bench built there, and /usr/sbin/mosquitto)
# Only processes this script starts are stopped, by pid.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
build=${1:-build/release}
bench="$build/bench/brokerha-bench"
server="$build/brokerha-server/brokerha-server"
for f in "$bench" "$server"; do
  if [ ! -x "$f" ]; then
    echo "smoke.sh: $f not built (cmake --preset release -DBROKERHA_BUILD_BENCH=ON &&" \
         "cmake --build --preset release)" >&2
    exit 2
  fi
done
t0=$SECONDS

echo "== smoke 1/4: every scenario, 2 s, brokerha only, zero loss/dup/reorder"
/usr/bin/python3 bench/compare --build-dir "$build" --brokers brokerha --duration 2 --rounds 1 \
  --idle-connections 2000 --check

echo
echo "== smoke 2/4: extra brokerha-bench runs (QoS 2, MQTT 5, fan-in QoS 1, rate-limited fan-out)"
workdir=$(mktemp -d)
broker_pid=""
cleanup() {
  if [ -n "$broker_pid" ]; then
    kill -TERM "$broker_pid" 2>/dev/null || true
    wait "$broker_pid" 2>/dev/null || true
    broker_pid=""
  fi
  rm -rf "$workdir"
}
trap cleanup EXIT

free_port() {
  /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

start_brokerha() {
  port=$(free_port)
  (cd "$workdir" && BROKER_MQTT_PORT=$port BROKER_MQTT_BIND=127.0.0.1 BROKER_API_PORT=0 \
     exec "$OLDPWD/$server" >"$workdir/broker.log" 2>&1) &
  broker_pid=$!
  local i
  for i in $(seq 1 150); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    if ! kill -0 "$broker_pid" 2>/dev/null; then break; fi
    sleep 0.1
  done
  echo "smoke.sh: brokerha did not start on port $port:" >&2
  cat "$workdir/broker.log" >&2
  exit 1
}

stop_brokerha() {
  kill -TERM "$broker_pid"
  local i
  for i in $(seq 1 100); do
    kill -0 "$broker_pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$broker_pid" 2>/dev/null || true
  wait "$broker_pid" 2>/dev/null || true
  broker_pid=""
}

run_extra() {  # run_extra <label> <bench args...>
  local label=$1
  shift
  local out rc=0
  out=$("$bench" --port "$port" --broker-pid "$broker_pid" --duration 1.5 --no-progress \
          --label "$label" "$@" 2>"$workdir/bench.err") || rc=$?
  if ! kill -0 "$broker_pid" 2>/dev/null; then
    echo "smoke.sh: brokerha died during $label:" >&2
    cat "$workdir/broker.log" >&2
    exit 1
  fi
  local result
  result=$(printf '%s\n' "$out" | grep '^RESULT ' || true)
  echo "$result"
  if [ "$rc" -ne 0 ] || [ -z "$result" ] || ! grep -q ' ok=1 ' <<<"$result"; then
    echo "smoke.sh: $label failed (exit $rc)" >&2
    printf '%s\n' "$out" >&2
    cat "$workdir/bench.err" >&2
    exit 1
  fi
  grep -q ' mode=idle ' <<<"$result" && return 0
  for key in lost duplicates reordered invalid rejected; do
    if ! grep -q " $key=0 " <<<"$result"; then
      echo "smoke.sh: $label: $key is not 0" >&2
      exit 1
    fi
  done
}

# One fresh brokerha for these (its SIGTERM stop takes a 2 s grace period; keep the smoke short).
start_brokerha
run_extra pairs-q2 --shape pairs --pubs 10 --qos 2 --inflight 16
run_extra pairs-q1-v5 --shape pairs --pubs 10 --qos 1 --mqtt 5
run_extra fanout-q0-v5 --shape fan-out --subs 20 --qos 0 --mqtt 5
run_extra fanin-q1 --shape fan-in --pubs 10 --qos 1
run_extra fanout-q2-rate --shape fan-out --subs 10 --qos 2 --rate 500
run_extra idle-v5 --idle 500 --mqtt 5 --settle 0.2
stop_brokerha

echo
echo "== smoke 3/4: bench/compare against brokerha, Mosquitto and a peer, end to end"
/usr/bin/python3 bench/compare --build-dir "$build" --duration 2 --rounds 1 \
  --scenarios fanin-q0,latency-q1 --peer mosquitto-p --peer-cmd '/usr/sbin/mosquitto -p {port}'

echo
echo "== smoke 4/4: bench/compare --cluster, briefly (1 round, 1 crash trial, 2,000 retained)"
/usr/bin/python3 bench/compare --build-dir "$build" --cluster --duration 2 --rounds 1 \
  --crash-trials 1 --retained 2000 --check

echo
echo "smoke.sh: PASS in $((SECONDS - t0)) s"
