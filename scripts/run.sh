#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Builds brokerha-server (`release` preset) and runs it with the given arguments; without
# arguments it starts on built-in defaults (MQTT on 0.0.0.0:1883). Installs the Debian packages
# first when run as root. Build output goes to stderr.
#   scripts/run.sh [--config PATH] ...
# Environment: BROKERHA_SERVER (a brokerha-server binary: skips the build; scripts/test-docs.py
# runs the documented command this way with the binary the `ci` stage built).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The Debian packages the build needs (installs them as root; otherwise only checks).
bash scripts/install-deps.sh >&2

if [ -n "${BROKERHA_SERVER:-}" ]; then
  exec "$BROKERHA_SERVER" "$@"
fi
if [ ! -f build/release/build.ninja ]; then
  cmake --preset release >&2
fi
cmake --build --preset release --target brokerha-server >&2
exec build/release/brokerha-server/brokerha-server "$@"
