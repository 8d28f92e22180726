#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# scripts/check-standalone.sh: the repository must stand alone. A user clones only this
# repository, so no tracked file may send the reader to documents that are not in it (a
# "shared" folder beside the clone, the project's internal specification, style or benchmark
# notes, the membership study) or to an internal tracker number. Say the thing in the
# project's own words, or link the doc in this repository that says it. And every source file
# says its licence: an "SPDX-License-Identifier: Apache-2.0" line in its first three lines.
#
# Usage: scripts/check-standalone.sh        (from anywhere inside the work tree)
# Exit status: 0 when every tracked file passes; 1 with one "file:line: text" line per match
# (or "file: no SPDX line"); 2 when it cannot run (not a git work tree). Needs only bash, git,
# grep and sed.
set -euo pipefail

if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
  sed -n '3,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
  exit 0
fi

root=$(git -C "$(dirname "${BASH_SOURCE[0]}")" rev-parse --show-toplevel 2>/dev/null) || {
  echo "check-standalone: not inside a git work tree" >&2
  exit 2
}
cd "$root"

# What no tracked file may contain (extended regular expression). The alternatives are
# written so that this file does not match itself (a bracketed space, escaped dots).
forbidden='\.\./shared|SPEC[ ]section|SPEC[ ]§|SPEC\.md|STYLE[ ]section|STYLE\.md|BENCHMARKS\.md|MEMBERSHIP\.md|[Ii]ssue [0-9]'

# Exceptions, kept short and explicit. Each entry is "path|rule"; `path` is a file (a bash
# glob such as 'tests/*.py' is allowed). Rules:
#   upstream    the line may name an upstream project's tracker entry as "<Project> issue N"
#               when it also quotes it as "<project>#N" (same name in any case, same number),
#               e.g. "Mosquitto issue N (mosquitto#N)"; nothing else forbidden may be on it.
#   guard:ERE   the line may name the shared folder (or a file in it) when it also matches
#               ERE: for a test or script that reads the folder only when it exists and passes
#               without it (the ERE is its existence check). None needs one today.
exceptions=(
  'CHANGELOG.md|upstream'
)

# TEXT without each "<name> issue N" whose "<name>#N" is on the same line.
strip_upstream() {
  local text=$1 out=$1 m name num
  while IFS= read -r m; do
    [ -n "$m" ] || continue
    name=${m%% *}
    num=${m##* }
    if grep -qiE -e "(^|[^A-Za-z0-9_.-])${name//./\\.}#${num}([^0-9]|\$)" <<<"$text"; then
      out=${out//"$m"/}
    fi
  done < <(grep -oE '[A-Za-z][A-Za-z0-9_.-]* [Ii]ssue [0-9]+' <<<"$text" || true)
  printf '%s\n' "$out"
}

excepted() {  # excepted FILE TEXT: 0 when an exception entry accepts this line
  local file=$1 text=$2 entry path rule rest
  for entry in "${exceptions[@]}"; do
    path=${entry%%|*}
    rule=${entry#*|}
    # shellcheck disable=SC2053  # the path is a glob on purpose
    [[ $file == $path ]] || continue
    case $rule in
      upstream) rest=$(strip_upstream "$text") ;;
      guard:*)
        grep -qE -e "${rule#guard:}" <<<"$text" || continue
        rest=$(sed -E 's#\.\./shared(/[A-Za-z0-9_./-]*)?##g' <<<"$text")
        ;;
      *) continue ;;
    esac
    grep -qE -e "$forbidden" <<<"$rest" || return 0
  done
  return 1
}

matches=$(git grep -n -I -E -e "$forbidden" || true)
found=0
while IFS= read -r hit; do
  [ -n "$hit" ] || continue
  file=${hit%%:*}
  rest=${hit#*:}
  line=${rest%%:*}
  text=${rest#*:}
  if excepted "$file" "$text"; then continue; fi
  printf '%s:%s: %s\n' "$file" "$line" "$text"
  found=$((found + 1))
done <<<"$matches"

if [ "$found" -ne 0 ]; then
  echo "check-standalone: FAIL: $found line(s) point outside the repository (above). Say it in" \
       "the project's own words or link the doc here that says it; see scripts/check-standalone.sh" >&2
  exit 1
fi

# The licence line of every source file: C++ sources and headers (and their .in templates),
# CMake files, shell and Python scripts, the Dockerfile.
spdx='SPDX-License-Identifier: Apache-2.0'
missing=0
while IFS= read -r file; do
  [ -f "$file" ] || continue
  case $file in
    *.cpp | *.hpp | *.cpp.in | *.hpp.in | *.cmake | *.cmake.in | */CMakeLists.txt | CMakeLists.txt | \
      *.sh | *.py | Dockerfile | bench/compare | .ci/run) ;;
    *) continue ;;
  esac
  if ! head -n 3 "$file" | grep -qF "$spdx"; then
    printf '%s: no "%s" line in its first three lines\n' "$file" "$spdx"
    missing=$((missing + 1))
  fi
done < <(git ls-files)
if [ "$missing" -ne 0 ]; then
  echo "check-standalone: FAIL: $missing source file(s) without the licence line (above)" >&2
  exit 1
fi
echo "check-standalone: no tracked file points outside the repository; every source file has its licence line"
