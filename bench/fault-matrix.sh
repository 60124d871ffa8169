#!/usr/bin/env bash
# The fault matrix in full: tests/fault_matrix_test.cc with every call of
# every operation failed in turn (the test suite fails every fifth read of
# prune, whose reads number about 1,900). Prints one line per operation.
#
# Usage: bench/fault-matrix.sh [BUILD_DIR]
set -euo pipefail
build=${1:-$(cd "$(dirname "$0")/.." && pwd)/build}
start=$(date +%s)
GNOMON_FAULT_ALL=1 "$build/tests/fault_matrix_test" | grep -E 'matrix|full disk|FAILED|PASSED'
echo "in $(( $(date +%s) - start )) s"
