#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Installs the Debian 12 packages that building and testing brokerha need.
# Idempotent and non-interactive; run as root on a fresh Debian 12 machine.
# Skips apt entirely when every package is already installed.
set -euo pipefail

packages=(
  # toolchain
  build-essential cmake ninja-build pkg-config clang libclang-rt-14-dev llvm
  # libraries the build uses
  libasio-dev libcpp-httplib-dev rapidjson-dev libyaml-cpp-dev doctest-dev
  libc-ares-dev libssl-dev
  # brokerha-server's allocator (optional at build time: BROKERHA_WITH_MIMALLOC)
  libmimalloc-dev
  # real peers the tests talk to
  mosquitto mosquitto-clients python3 python3-paho-mqtt libpaho-mqtt-dev
  # scripts/check-kubernetes.py reads the rendered manifests (kubectl itself comes with the
  # machine image; Debian's kubernetes-client conflicts with it and must not replace it)
  python3-yaml
  # a real memberlist peer (memberlist 0.2.2 inside) for the membership wire tests
  serf
  # the listener tests make their CA and certificates with the openssl command
  openssl
  # tools the checks use
  clang-format curl
  # scripts/chaos.py: network namespaces, veth pairs and a bridge (ip), faults as nftables
  # rules (nft)
  iproute2 nftables
  # promtool (checks /metrics in the HTTP API tests)
  prometheus
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages: ${missing[*]}" >&2
  echo "install-deps: run as root (or install them with sudo apt-get install)" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
echo "install-deps: installing ${missing[*]}"
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The Debian mosquitto package starts a system broker on 1883; tests never rely on it
# and start their own on free ports, but stop it so it holds no port.
if command -v systemctl >/dev/null 2>&1; then systemctl stop mosquitto >/dev/null 2>&1 || true; fi
echo "install-deps: done"
