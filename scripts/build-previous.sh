#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Builds the previous release's brokerha-server, for the mixed-version cluster test
# (scripts/mixed-version.py, the `mixed` stage of scripts/test.sh). The commit is the one
# scripts/previous-release names. Its sources are extracted with `git archive` into
# build/prev-src (re-extracted only when the pinned commit changes, so a second run is an
# incremental build), configured as a Release build in build/prev with tests, examples,
# benchmarks, fuzzers and install rules off, and only the brokerha-server target is built: the
# one build tree the CI budget allows beyond ci, asan, tsan and fuzz.
#
# Usage: scripts/build-previous.sh        prints the server's path on its last line
# Needs the repository's history up to that commit: in a shallow clone, fetch it first
# (git fetch --unshallow, or git fetch origin <commit>).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

pin_file=scripts/previous-release
ref=$(grep -v -e '^[[:space:]]*#' -e '^[[:space:]]*$' "$pin_file" | head -n 1 | tr -d '[:space:]' \
  || true)
if [ -z "$ref" ]; then
  echo "build-previous: $pin_file names no commit (one line: a full commit hash or a tag)" >&2
  exit 2
fi
if ! commit=$(git rev-parse --verify --quiet "${ref}^{commit}"); then
  echo "build-previous: the previous release $ref ($pin_file) is not in this clone. A shallow" \
       "clone lacks it: run 'git fetch --unshallow' (or 'git fetch origin $ref', or" \
       "'git fetch --tags' for a tag) and try again." >&2
  exit 1
fi

src=build/prev-src
bin=build/prev
stamp=$src/.brokerha-commit
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$commit" ]; then
  echo "build-previous: extracting $commit into $src"
  rm -rf "$src" "$bin"
  mkdir -p "$src"
  git archive --format=tar "$commit" | tar -x -C "$src"
  echo "$commit" >"$stamp"
fi

generator=()
command -v ninja >/dev/null 2>&1 && generator=(-G Ninja)
cmake -S "$src" -B "$bin" "${generator[@]}" \
  -DCMAKE_BUILD_TYPE=Release \
  -DBROKERHA_BUILD_SERVER=ON \
  -DBROKERHA_WITH_HTTP_API=ON \
  -DBROKERHA_BUILD_TESTS=OFF \
  -DBROKERHA_BUILD_EXAMPLES=OFF \
  -DBROKERHA_BUILD_BENCH=OFF \
  -DBROKERHA_BUILD_FUZZERS=OFF \
  -DBROKERHA_INSTALL=OFF >/dev/null
cmake --build "$bin" --target brokerha-server

server=$bin/brokerha-server/brokerha-server
[ -x "$server" ] || { echo "build-previous: $server was not built" >&2; exit 1; }
echo "$server"
