#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Checks the container image (Dockerfile) without a Docker engine:
#   1. the Dockerfile's shape: a Debian 12 build stage, a Debian 12 slim runtime stage running
#      as a non-root user, the config at /config/config.yaml, EXPOSE 1883/tcp 7946/tcp
#      7946/udp 8080/tcp, the build stage installing the libraries scripts/install-deps.sh does;
#   2. the Dockerfile's own `cmake --install` command, run into a scratch prefix (from the
#      build tree given with --build-dir, else a fresh build of the `container` preset);
#   3. every file the runtime stage copies exists there, and every shared library the server
#      needs directly comes from a package the runtime stage installs (or the base image);
#   4. the installed server runs `--version` and `--check-config` against the config file the
#      image ships, from the scratch prefix, with no build tree on its library path.
#
# Usage: scripts/test-container.sh [--build-dir DIR]
#   --build-dir DIR  install this already-built tree (scripts/test.sh passes build/ci, a static
#                    Release build with the server) instead of building the `container` preset
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=""
while [ $# -gt 0 ]; do
  case "$1" in
    --build-dir) build_dir=$(cd "$2" && pwd); shift 2 ;;
    -h|--help) sed -n '3,16p' "$0"; exit 0 ;;
    *) echo "test-container: unknown argument: $1" >&2; exit 2 ;;
  esac
done

dockerfile="$root/Dockerfile"
log() { echo "test-container: $*"; }
fail() { echo "test-container: FAIL: $*" >&2; exit 1; }

[ -f "$dockerfile" ] || fail "no Dockerfile at the repository root"
[ -f "$root/.dockerignore" ] || fail "no .dockerignore at the repository root"

# The Dockerfile with continuation lines joined, one instruction per line.
instructions=$(sed -e ':a' -e '/\\$/N; s/\\\n//; ta' "$dockerfile" | grep -v '^[[:space:]]*#' |
               sed -e 's/[[:space:]]\+/ /g' -e 's/^ //')
stage_of() {  # the instructions of stage <name>
  awk -v s="$1" 'tolower($1) == "from" { cur = ($NF == s) } cur' <<<"$instructions"
}
build_stage=$(stage_of build)
runtime_stage=$(stage_of runtime)
[ -n "$build_stage" ] || fail "no stage named 'build'"
[ -n "$runtime_stage" ] || fail "no stage named 'runtime'"

# --- 1. shape ------------------------------------------------------------------------------------
release=$(sed -n 's/^ARG DEBIAN_RELEASE=\(.*\)$/\1/p' <<<"$instructions")
[ "$release" = bookworm ] || fail "DEBIAN_RELEASE is '$release', not bookworm (Debian 12)"
grep -q '^FROM debian:${DEBIAN_RELEASE} AS build$' <<<"$build_stage" ||
  fail "the build stage is not FROM debian:\${DEBIAN_RELEASE}"
grep -q '^FROM debian:${DEBIAN_RELEASE}-slim AS runtime$' <<<"$runtime_stage" ||
  fail "the runtime stage is not FROM debian:\${DEBIAN_RELEASE}-slim"
[ "$(tail -n1 <<<"$(grep -E '^FROM ' <<<"$instructions")")" = 'FROM debian:${DEBIAN_RELEASE}-slim AS runtime' ] ||
  fail "the runtime stage must be the last one (the image docker build makes)"

user=$(grep '^USER ' <<<"$runtime_stage" | tail -n1 | cut -d' ' -f2)
uid=${user%%:*}
case "$uid" in
  ""|0|root) fail "the runtime stage runs as '${user:-root}', not as a non-root user" ;;
esac
grep -q -- "--uid $uid " <<<"$runtime_stage" || fail "user $uid is not created in the runtime stage"

exposed=$(grep '^EXPOSE ' <<<"$runtime_stage" | cut -d' ' -f2- | tr ' ' '\n' | sort | tr '\n' ' ')
[ "$exposed" = "1883/tcp 7946/tcp 7946/udp 8080/tcp " ] ||
  fail "EXPOSE is '$exposed', expected 1883/tcp 7946/tcp 7946/udp 8080/tcp"

config_src=$(sed -n 's|^COPY \([^ ]*\) /config/config.yaml$|\1|p' <<<"$runtime_stage")
[ -n "$config_src" ] || fail "the runtime stage does not COPY a config to /config/config.yaml"
[ -f "$root/$config_src" ] || fail "the image's config $config_src does not exist"

# The build stage installs the libraries the project builds against (scripts/install-deps.sh).
deps_line=$(sed -n '/# libraries the build uses/,/^[[:space:]]*#/{/^[[:space:]]*#/d; p}' \
              "$root/scripts/install-deps.sh" | tr '\n' ' ')
[ -n "${deps_line// /}" ] || fail "cannot read the library list of scripts/install-deps.sh"
for p in $deps_line; do
  case "$p" in doctest-dev) continue ;; esac  # tests only
  grep -q -- " $p\( \|$\)" <<<"$build_stage" || fail "the build stage does not install $p"
done
log "Dockerfile: Debian 12 build + slim runtime, user $user, EXPOSE $exposed, config from $config_src"

# --- 2. the install command ---------------------------------------------------------------------
install_cmd=$(grep -o 'cmake --install [^&]*' <<<"$build_stage" | sed 's/ *$//')
[ -n "$install_cmd" ] || fail "no 'cmake --install' in the build stage"
read -r -a words <<<"$install_cmd"
[ "${#words[@]}" -ge 5 ] && [ "${words[3]}" = --prefix ] || fail "unexpected install command: $install_cmd"
docker_build_dir=${words[2]}
docker_prefix=${words[4]}
grep -q "cmake --preset container" <<<"$build_stage" || fail "the build stage does not use the container preset"
[ "$docker_build_dir" = build/container ] || fail "the install command installs $docker_build_dir, not build/container"

work=$(mktemp -d "${TMPDIR:-/tmp}/brokerha-container-test.XXXXXX")
trap 'rm -rf "$work"' EXIT
prefix="$work/prefix"

if [ -z "$build_dir" ]; then
  log "building the container preset (no --build-dir given)"
  (cd "$root" && cmake --preset container >/dev/null && cmake --build --preset container -j 2 >/dev/null)
  build_dir="$root/build/container"
fi
grep -q '^BROKERHA_BUILD_SERVER:BOOL=ON' "$build_dir/CMakeCache.txt" ||
  fail "$build_dir does not build brokerha-server"
grep -q '^BROKERHA_WITH_HTTP_API:BOOL=ON' "$build_dir/CMakeCache.txt" ||
  fail "$build_dir does not build the HTTP API"
grep -q '^BROKERHA_SANITIZER:STRING=$' "$build_dir/CMakeCache.txt" ||
  fail "$build_dir is a sanitizer build"
run_cmd=("${words[@]}")
run_cmd[2]="$build_dir"
run_cmd[4]="$prefix"
log "running the Dockerfile's install command: ${run_cmd[*]}"
(cd "$root" && "${run_cmd[@]}" >"$work/install.log") || { cat "$work/install.log"; fail "install"; }

# --- 3. what the runtime stage copies, and its libraries ----------------------------------------
copied=$(sed -n "s|^COPY --from=build $docker_prefix/\\([^ ]*\\) \\(.*\\)$|\\1 \\2|p" <<<"$runtime_stage")
[ -n "$copied" ] || fail "the runtime stage copies nothing from $docker_prefix"
server=""
while read -r rel dest; do
  [ -e "$prefix/$rel" ] || fail "the runtime stage copies $docker_prefix/$rel, which the install does not produce"
  case "$dest" in */brokerha-server) server="$prefix/$rel" ;; esac
done <<<"$copied"
[ -n "$server" ] || fail "the runtime stage does not copy brokerha-server"
entry=$(sed -n 's/^ENTRYPOINT \["\([^"]*\)".*/\1/p' <<<"$runtime_stage")
grep -q " $entry\$" <<<"$copied" || fail "ENTRYPOINT $entry is not a file the runtime stage copies"

runtime_pkgs=" $(grep -o 'apt-get install [^&]*' <<<"$runtime_stage" |
                  awk '{ for (i = 3; i <= NF; i++) if ($i !~ /^-/) printf "%s ", $i }')"
# In debian:bookworm-slim already (Priority: required, and their dependencies).
base_pkgs=" libc6 libgcc-s1 libstdc++6 zlib1g "
while read -r needed; do
  # (no early exit in awk: with pipefail, ldconfig's SIGPIPE would fail the pipeline)
  path=$(ldconfig -p | awk -v l="$needed" '$1 == l && !found { print $NF; found = 1 }')
  [ -n "$path" ] || fail "brokerha-server needs $needed, which is not on this machine"
  # dpkg knows a file by the path its package ships (/lib or /usr/lib on merged-/usr).
  owner=$(dpkg -S "$path" 2>/dev/null || dpkg -S "$(readlink -f "$path")" 2>/dev/null || true)
  owner=${owner%%$'\n'*}
  pkg=${owner%%:*}
  [ -n "$pkg" ] || fail "no Debian package owns $path ($needed)"
  case "$runtime_pkgs$base_pkgs" in
    *" $pkg "*) log "  $needed <- $pkg" ;;
    *) fail "brokerha-server needs $needed from package $pkg, which the runtime stage does not install" ;;
  esac
done < <(readelf -d "$server" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')

# --- 4. run it ----------------------------------------------------------------------------------
version=$(sed -n '/^project(brokerha/,/)/p' "$root/CMakeLists.txt" |
            sed -n 's/^ *VERSION \([0-9][0-9.]*\).*/\1/p')
out=$(env -u LD_LIBRARY_PATH "$server" --version) || fail "--version exited with $?"
[ "$out" = "brokerha-server $version" ] || fail "--version printed '$out'"
log "  --version: $out"
mkdir -p "$work/config"
cp "$root/$config_src" "$work/config/config.yaml"
if ! (cd "$work" && env -u LD_LIBRARY_PATH "$server" --config "$work/config/config.yaml" \
        --check-config >"$work/check.out" 2>"$work/check.err"); then
  cat "$work/check.err"
  fail "--check-config rejected the image's config"
fi
[ ! -s "$work/check.err" ] || { cat "$work/check.err"; fail "--check-config warned about the image's config"; }
grep -q 'port: 1883' "$work/check.out" || { cat "$work/check.out"; fail "the effective config has no MQTT port 1883"; }
grep -q 'port: 8080' "$work/check.out" || { cat "$work/check.out"; fail "the effective config has no API port 8080"; }
log "  --check-config: the image's config is valid (MQTT 1883, API 8080)"
log "all container checks passed"
