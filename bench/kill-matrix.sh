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
grep -o '<testcase name="[A-Za-z]*"[^>]*' "$xml" | while read -r line; do
  name=$(sed 's/.*name="\([A-Za-z]*\)".*/\1/' <<<"$line")
  killed=$(grep -A3 "name=\"$name\"" "$xml" | grep -o 'killed" value="[0-9]*' | grep -o '[0-9]*$' || echo 0)
  status=$(grep -c "<failure" <<<"$(sed -n "/name=\"$name\"/,/<\/testcase>/p" "$xml")" || true)
  echo "| $name | $runs | $killed | $((runs - killed)) | $([ "$status" = 0 ] && echo ok || echo FAILED) |"
done
echo "in $(( $(date +%s) - start )) s"
