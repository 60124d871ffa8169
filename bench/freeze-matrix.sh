#!/usr/bin/env bash
# The freeze matrix at full size: tests/freeze_matrix_test.cc with every
# (victim, signal, event) cell (the test suite runs one event per victim and
# signal), plus the two cells inside DoSnapshotSet's commit, where the
# filesystem itself is frozen (vss_system_test's RequesterKilledWhileFrozen*
# and RequesterStoppedWhileFrozen*). Prints a markdown table: per cell the
# backup's exit code and the milliseconds from the signal until each
# application went on (filesystem write, SQLite commit, PostgreSQL insert,
# socket writer out of its freeze); "after CONT" marks a stopped writer that
# held its application itself. Root, PostgreSQL and sqlite3 are needed.
#
# Usage: bench/freeze-matrix.sh [BUILD_DIR]
set -euo pipefail
build=${1:-$(cd "$(dirname "$0")/.." && pwd)/build}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
GNOMON_FREEZE_MATRIX=all GNOMON_FREEZE_MATRIX_OUT="$out/cells.tsv" \
  "$build/tests/freeze_matrix_test" > "$out/log" 2>&1 || { tail -40 "$out/log"; exit 1; }
"$build/tests/vss_system_test" --gtest_filter='*RequesterKilledWhileFrozenThawsAtOnce:*RequesterStoppedWhileFrozen*' \
  --gtest_output="xml:$out/commit.xml" > "$out/log2" 2>&1 || { tail -40 "$out/log2"; exit 1; }
echo "| victim | signal | event | backup exit | fs write | SQLite commit | PostgreSQL insert | socket writer thawed | slowest |"
echo "|---|---|---|---:|---:|---:|---:|---:|---:|"
awk -F'\t' '{
  cont = $5; worst = $10;
  mark = (cont >= 0 && worst > cont) ? " (after CONT)" : "";
  printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s%s |\n", $1, $2, $3, ($4 == 137 ? "killed" : $4), $6, $7, $8, $9, worst, mark
  if (worst > max) max = worst
  n++
} END { printf "\n%d cells, every application went on, slowest after %d ms\n", n, max }' "$out/cells.tsv"
killed_ms=$(grep -o 'thawed_after_ms" value="[0-9]*' "$out/commit.xml" | grep -o '[0-9]*$' || true)
echo "inside the commit (filesystem frozen): requester SIGKILL -> writable after ${killed_ms:-?} ms; SIGSTOP -> thawed when the 1 s window ended"
