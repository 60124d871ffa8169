#!/usr/bin/env bash
# The prune crash matrix at length: prune_test's SurvivesSigkillAtRandomPoints
# with RUNS kills (default 500; the test suite runs 50). Each run copies a
# repository that needs deleting and repacking, SIGKILLs a prune at a random
# moment within an uninterrupted prune's duration, then checks that verify
# --read-data passes, every remaining backup restores byte-identical, and
# the next prune completes and leaves no orphaned file.
#
# Usage: bench/prune-crash.sh [RUNS] [BUILD_DIR]
set -euo pipefail
runs=${1:-500}
build=${2:-$(cd "$(dirname "$0")/.." && pwd)/build}
start=$(date +%s)
GNOMON_PRUNE_KILL_RUNS=$runs "$build/tests/prune_test" \
  --gtest_filter=PruneTest.SurvivesSigkillAtRandomPoints --gtest_output="xml:${TMPDIR:-/tmp}/prune-crash.xml"
killed=$(grep -o 'killed" value="[0-9]*' "${TMPDIR:-/tmp}/prune-crash.xml" | grep -o '[0-9]*$')
echo "$runs runs, $killed prunes killed part way (the rest had finished), all recovered, in $(( $(date +%s) - start )) s"
