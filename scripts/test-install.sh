#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Checks that brokerha can be consumed the three ways an outside project would:
#   1. installed static library:  find_package(brokerha CONFIG) and pkg-config --static
#   2. installed shared library (BUILD_SHARED_LIBS=ON): find_package and pkg-config; the
#      consumer and the installed brokerha-server must run against the installed .so
#   3. add_subdirectory(<repo>) from tests/install/subdirectory (library only, no install rules)
# plus the build-tree package (brokerha_DIR=<build dir>) when --static-build-dir is given.
# Each installed public header must compile on its own. The consumer program
# (tests/install/consumer/main.cpp) uses Broker with auth/ACL/event hooks and a Bus, Membership
# and Discovery, all on loopback.
#
# Usage: scripts/test-install.sh [--static-build-dir DIR] [--keep]
#   --static-build-dir DIR  install this already-built static, non-sanitizer build tree
#                           (scripts/test.sh passes build/ci) instead of building another one
#   --keep                  keep the scratch directory (printed at the end)
# Environment: BROKERHA_JOBS (default 2).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
jobs=${BROKERHA_JOBS:-2}
static_build=""
keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --static-build-dir) static_build=$(cd "$2" && pwd); shift 2 ;;
    --keep) keep=1; shift ;;
    -h|--help) sed -n '3,16p' "$0"; exit 0 ;;
    *) echo "test-install: unknown argument: $1" >&2; exit 2 ;;
  esac
done

work=$(mktemp -d "${TMPDIR:-/tmp}/brokerha-install-test.XXXXXX")
cleanup() {
  if [ "$keep" -eq 1 ]; then echo "test-install: scratch directory kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

version=$(sed -n '/^project(brokerha/,/)/p' "$root/CMakeLists.txt" |
            grep -m 1 -oE 'VERSION [0-9]+(\.[0-9]+)*' | cut -d' ' -f2)
[ -n "$version" ] || { echo "test-install: cannot read the project version" >&2; exit 1; }
expected="brokerha $version"

log() { echo "test-install: $*"; }
fail() { echo "test-install: FAIL: $*" >&2; exit 1; }

check_output() {  # check_output <what> <command...>: the command must print "$expected"
  local what=$1; shift
  local out
  out=$("$@") || fail "$what exited with $?"
  [ "$out" = "$expected" ] || fail "$what printed '$out', expected '$expected'"
  log "  $what: $out"
}

# The builds here check packaging, not speed: unoptimised (-O0, no debug info), which compiles
# the library about three times faster than Release.
configure_build() {  # configure_build <src> <build> <cmake args...>
  local src=$1 build=$2; shift 2
  cmake -S "$src" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG=-O0 "$@" \
    >"$build.configure.log" 2>&1 ||
    { cat "$build.configure.log"; fail "configure of $src"; }
  cmake --build "$build" -j "$jobs" >"$build.build.log" 2>&1 ||
    { cat "$build.build.log"; fail "build of $src"; }
}

library_options=(-DBROKERHA_BUILD_TESTS=OFF -DBROKERHA_BUILD_EXAMPLES=OFF
                 -DBROKERHA_BUILD_SERVER=ON -DBROKERHA_INSTALL=ON -DCMAKE_INSTALL_LIBDIR=lib)

check_prefix() {  # check_prefix <prefix> <static|shared>
  local prefix=$1 mode=$2
  local f
  for f in include/brokerha/version.hpp include/brokerha/export.hpp \
           lib/cmake/brokerha/brokerha-config.cmake \
           lib/cmake/brokerha/brokerha-config-version.cmake \
           lib/cmake/brokerha/brokerha-targets.cmake lib/pkgconfig/brokerha.pc \
           bin/brokerha-server; do
    [ -e "$prefix/$f" ] || fail "$mode: $f is not installed"
  done
  if [ "$mode" = static ]; then
    [ -f "$prefix/lib/libbrokerha.a" ] || fail "static: lib/libbrokerha.a is not installed"
  else
    [ -f "$prefix/lib/libbrokerha.so" ] || fail "shared: lib/libbrokerha.so is not installed"
    local soname
    soname=$(readelf -d "$prefix/lib/libbrokerha.so" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
    [ -n "$soname" ] && [ -e "$prefix/lib/$soname" ] || fail "shared: bad SONAME '$soname'"
    log "  SONAME $soname"
    local leaked
    leaked=$(nm -DC --defined-only "$prefix/lib/libbrokerha.so" | grep -c -E ' (asio|httplib|YAML)::' || true)
    [ "$leaked" -eq 0 ] || log "  WARNING: $leaked dependency symbols exported from libbrokerha.so"
  fi
  # Every public header is installed (api.hpp with the HTTP API, which these builds have), and
  # each installed header compiles on its own against the installed tree alone (the `headers`
  # stage checks the same in the build tree).
  local h name
  for h in "$root"/libbrokerha/include/brokerha/*.hpp; do
    name=$(basename "$h")
    [ -f "$prefix/include/brokerha/$name" ] || fail "$mode: include/brokerha/$name is not installed"
  done
  local defines=()
  [ "$mode" = static ] && defines=(-DBROKERHA_STATIC_DEFINE)
  for h in "$prefix"/include/brokerha/*.hpp; do
    printf '#include <brokerha/%s>\n' "$(basename "$h")" |
      c++ -std=c++17 -fsyntax-only -Wall -Wextra -Werror "${defines[@]}" -I "$prefix/include" \
        -x c++ - || fail "$mode: installed header $(basename "$h") does not compile on its own"
  done
  log "  $(find "$prefix/include/brokerha" -name '*.hpp' | wc -l) installed headers compile on their own"
  # Internals must not be installed.
  if [ -n "$(find "$prefix" -name 'libbrokerha_core*' -o -name 'libbrokerha_objects*')" ]; then
    fail "$mode: internal libraries were installed"
  fi
  [ ! -d "$prefix/include/mqtt" ] && [ ! -d "$prefix/include/topic" ] ||
    fail "$mode: private headers were installed"
}

check_consumers() {  # check_consumers <prefix> <static|shared>
  local prefix=$1 mode=$2
  local pc_path="$prefix/lib/pkgconfig"

  log "$mode: find_package consumer"
  configure_build "$root/tests/install/consumer" "$work/consumer-$mode" \
    -DCMAKE_PREFIX_PATH="$prefix"
  if [ "$mode" = shared ]; then
    # Must run from its build RPATH alone, and load the installed library.
    local deps
    deps=$(ldd "$work/consumer-$mode/consumer")
    case "$deps" in
      *"$prefix/lib/libbrokerha.so"*) ;;
      *) echo "$deps"; fail "shared: consumer does not load $prefix/lib/libbrokerha.so" ;;
    esac
    check_output "consumer (RPATH)" env -u LD_LIBRARY_PATH "$work/consumer-$mode/consumer"
    check_output "brokerha-server (INSTALL_RPATH)" env -u LD_LIBRARY_PATH \
      sh -c "'$prefix/bin/brokerha-server' --version | sed 's/^brokerha-server/brokerha/'"
  else
    check_output "consumer" "$work/consumer-$mode/consumer"
    check_output "brokerha-server" \
      sh -c "'$prefix/bin/brokerha-server' --version | sed 's/^brokerha-server/brokerha/'"
  fi

  log "$mode: pkg-config"
  PKG_CONFIG_PATH="$pc_path" pkg-config --validate brokerha || fail "$mode: brokerha.pc is invalid"
  local pc_version
  pc_version=$(PKG_CONFIG_PATH="$pc_path" pkg-config --modversion brokerha)
  [ "$pc_version" = "$version" ] || fail "$mode: pkg-config version $pc_version != $version"
  local flags
  if [ "$mode" = static ]; then
    flags=$(PKG_CONFIG_PATH="$pc_path" pkg-config --cflags --libs --static brokerha)
  else
    flags=$(PKG_CONFIG_PATH="$pc_path" pkg-config --cflags --libs brokerha)
  fi
  log "  pkg-config: $flags"
  # shellcheck disable=SC2086 # word splitting of the flags is intended
  c++ -std=c++17 "$root/tests/install/consumer/main.cpp" -o "$work/pc-consumer-$mode" $flags ||
    fail "$mode: compiling with pkg-config flags"
  if [ "$mode" = shared ]; then
    check_output "pkg-config consumer" env LD_LIBRARY_PATH="$prefix/lib" "$work/pc-consumer-$mode"
  else
    check_output "pkg-config consumer" "$work/pc-consumer-$mode"
  fi
}

# --- 1. static -----------------------------------------------------------------------------------
static_prefix="$work/prefix-static"
if [ -n "$static_build" ]; then
  log "static: installing the existing build tree $static_build"
  grep -q '^BUILD_SHARED_LIBS:BOOL=ON' "$static_build/CMakeCache.txt" &&
    fail "$static_build is a shared build"
  cmake --install "$static_build" --prefix "$static_prefix" >"$work/install-static.log" ||
    { cat "$work/install-static.log"; fail "static: install"; }
else
  log "static: building the library"
  configure_build "$root" "$work/build-static" "${library_options[@]}" -DBUILD_SHARED_LIBS=OFF
  cmake --install "$work/build-static" --prefix "$static_prefix" >"$work/install-static.log"
fi
check_prefix "$static_prefix" static
check_consumers "$static_prefix" static

if [ -n "$static_build" ]; then
  log "static: build-tree package (brokerha_DIR=$static_build)"
  configure_build "$root/tests/install/consumer" "$work/consumer-buildtree" \
    -Dbrokerha_DIR="$static_build"
  check_output "consumer (build tree)" "$work/consumer-buildtree/consumer"
fi

# --- 2. shared -----------------------------------------------------------------------------------
shared_prefix="$work/prefix-shared"
log "shared: building the library (BUILD_SHARED_LIBS=ON)"
configure_build "$root" "$work/build-shared" "${library_options[@]}" -DBUILD_SHARED_LIBS=ON
cmake --install "$work/build-shared" --prefix "$shared_prefix" >"$work/install-shared.log"
check_prefix "$shared_prefix" shared
check_consumers "$shared_prefix" shared

# --- 3. add_subdirectory -------------------------------------------------------------------------
log "add_subdirectory consumer"
configure_build "$root/tests/install/subdirectory" "$work/subdirectory" \
  -DBROKERHA_SOURCE_DIR="$root"
check_output "consumer (add_subdirectory)" "$work/subdirectory/consumer"
# As a subproject brokerha must build only its library and add no install rules.
for t in brokerha-server brokerha-unit-tests brokerha-example-print_version; do
  if [ -n "$(find "$work/subdirectory" -name "$t" -type f)" ]; then
    fail "add_subdirectory built $t"
  fi
done
cmake --install "$work/subdirectory" --prefix "$work/subdirectory-prefix" >/dev/null
if [ -d "$work/subdirectory-prefix" ] && [ -n "$(find "$work/subdirectory-prefix" -type f)" ]; then
  fail "add_subdirectory: brokerha installed files into the parent project's prefix"
fi

log "all install checks passed"
