#!/usr/bin/env bash
# The kill matrix at length: kill_matrix_test with RUNS SIGKILLs of each of
# backup, restore to a file (new and --overwrite) and restore to a loop
# device (root), default 200 each (the test suite runs 12). After each kill
# the test checks verify --read-data, that every earlier backup restores
# byte-identical, that the next run succeeds and leaves nothing behind, and
# that the restore target is whole, untouched or shows no filesystem.
# bench/prune-crash.sh does the same for prune.
#
# Usage: bench/kill-matrix.sh [RUNS] [BUILD_DIR]
set -euo pipefail
runs=${1:-200}
build=${2:-$(cd "$(dirname "$0")/.." && pwd)/build}
xml=$(mktemp)
trap 'rm -f "$xml"' EXIT
start=$(date +%s)
GNOMON_KILL_RUNS=$runs "$build/tests/kill_matrix_test" --gtest_output="xml:$xml"
echo "| operation | runs | killed part way | finished first | result |"
echo "|---|---:|---:|---:|---|"
awk -v runs="$runs" '
  /<testcase / { match($0, /name="[A-Za-z]*"/); name = substr($0, RSTART + 6, RLENGTH - 7); failed[name] = 0; order[++n] = name }
  /<failure/ { failed[name] = 1 }
  /name="killed"/ { match($0, /value="[0-9]*"/); killed[name] = substr($0, RSTART + 7, RLENGTH - 8) }
  END { for (i = 1; i <= n; i++) { k = order[i]; printf "| %s | %d | %d | %d | %s |\n", k, runs, killed[k], runs - killed[k], failed[k] ? "FAILED" : "ok" } }
' "$xml"
echo "in $(( $(date +%s) - start )) s"
