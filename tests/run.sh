#!/usr/bin/env bash
# tests/run.sh — the one test runner (`make test` and `make test-full` call it).
#
#   bash tests/run.sh [--unit | --integration] [-k SUBSTRING] [-j N] [INTEGRATION-TEST ...]
#
# 1. Every unit test binary ${D11_TEST_BUILD:-build}/tests/test_* (one test each) runs from
#    the repo root with its own empty TMPDIR (= D11_TEST_TMP) and a time limit
#    (D11_UNIT_TIMEOUT, default 120 s); its output is shown when it fails. Exit 77 = skipped.
# 2. Every integration test: python3 tests/integration/run.py (each test in its own process,
#    own data dir, own port, own time limit; see that file and docs/testing.md).
# The last line is `N passed, N failed` (plus `, N skipped` when some were); the exit
# status is non-zero when anything failed.
#
#   --tsan: also run the unit tests of the build dir when integration tests are named.
# Env: D11_BIN (default $repo/bin/d11), D11_TEST_BUILD (default build), D11_TEST_JOBS,
# D11_TEST_TIMEOUT_SCALE (default 1; 3 for a sanitizer build dir), D11_KEEP_TMP=1.
set -uo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo" || exit 1
export D11_BIN=${D11_BIN:-$repo/bin/d11}
build=${D11_TEST_BUILD:-build}
if [ -z "${D11_TEST_TIMEOUT_SCALE:-}" ]; then
  case "$build" in *san*) export D11_TEST_TIMEOUT_SCALE=3 ;; *) export D11_TEST_TIMEOUT_SCALE=1 ;; esac
fi
unit_timeout=${D11_UNIT_TIMEOUT:-120}
unit_timeout=$(awk -v t="$unit_timeout" -v s="$D11_TEST_TIMEOUT_SCALE" 'BEGIN { printf "%d", t * s }')

do_unit=1 do_integ=1 pattern="" keep_unit=0
integ_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --unit) do_integ=0 ;;
    --integration) do_unit=0 ;;
    --tsan) keep_unit=1 ;;  # unit tests of the build dir AND the named integration tests
    -k) pattern=$2; integ_args+=("$1" "$2"); shift ;;
    -j) integ_args+=("$1" "$2"); shift ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) integ_args+=("$1"); do_unit=0 ;;
  esac
  shift
done
[ "$keep_unit" = 1 ] && do_unit=1

root=$(mktemp -d /tmp/d11t.XXXXXX) || exit 1
passed=0 failed=0 skipped=0
failures=()

if [ "$do_unit" = 1 ]; then
  n=0
  for t in "$build"/tests/test_*; do
    if [ ! -f "$t" ] || [ ! -x "$t" ]; then continue; fi
    case "$t" in *.d|*.o|*.c) continue ;; esac
    name="unit/$(basename "$t")"
    case "$name" in *"$pattern"*) ;; *) continue ;; esac
    n=$((n + 1))
    dir="$root/u$n"
    mkdir -p "$dir"
    start=$(date +%s.%N)
    TMPDIR="$dir" D11_TEST_TMP="$dir" timeout -k 5 "$unit_timeout" "$t" >"$dir/output.txt" 2>&1 </dev/null
    rc=$?
    left=$(python3 tests/integration/run.py --cleanup "$dir")  # by PID, marked with $dir
    secs=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    if [ "$rc" -eq 0 ]; then
      printf 'PASS %-58s %6ss\n' "$name" "$secs"
      passed=$((passed + 1))
      rm -rf "$dir"
    elif [ "$rc" -eq 77 ]; then
      printf 'SKIP %-58s %6ss\n' "$name" "$secs"
      skipped=$((skipped + 1))
      rm -rf "$dir"
    else
      why="exit $rc"
      [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ] && why="TIMEOUT after ${unit_timeout}s (exit $rc)"
      [ "$rc" -gt 128 ] && [ "$rc" -ne 137 ] && why="killed by signal $((rc - 128))"
      [ -z "$left" ] || why="$why; $left"
      printf 'FAIL %-58s %6ss  [%s]\n' "$name" "$secs" "$why"
      tail -n 200 "$dir/output.txt" | sed 's/^/    | /'
      failed=$((failed + 1))
      failures+=("$name")
    fi
  done
  [ "$n" -gt 0 ] || echo "unit: no test binary in $build/tests${pattern:+ matching $pattern} (make test-bins builds them)"
fi

if [ "$do_integ" = 1 ] || [ ${#integ_args[@]} -gt 0 ]; then
  counts="$root/integration.counts"
  python3 tests/integration/run.py --tmp "$root" --counts "$counts" "${integ_args[@]}"
  rc=$?
  if [ -s "$counts" ]; then
    read -r ip ifl isk <"$counts"
    passed=$((passed + ip)) failed=$((failed + ifl)) skipped=$((skipped + isk))
    [ "$rc" -eq 0 ] || [ "$ifl" -gt 0 ] || { failed=$((failed + 1)); failures+=("integration runner (exit $rc)"); }
  else
    echo "integration runner failed (exit $rc) without reporting counts"
    failed=$((failed + 1))
    failures+=("integration runner")
  fi
fi

if [ "$failed" -eq 0 ] && [ "${D11_KEEP_TMP:-0}" != 1 ]; then
  rm -rf "$root"
else
  [ ${#failures[@]} -eq 0 ] || echo "failed: ${failures[*]}"
  echo "test directories kept under $root"
fi
line="$passed passed, $failed failed"
[ "$skipped" -eq 0 ] || line="$line, $skipped skipped"
echo "$line"
[ "$failed" -eq 0 ]
