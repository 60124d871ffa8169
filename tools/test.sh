#!/usr/bin/env bash
# Builds gnomon and runs the whole test suite: unit, engine and end-to-end
# tests (the loop-device ones need root and skip elsewhere, saying why), then
# the unit and engine suites again under AddressSanitizer + UBSan, then every
# fuzz target for a few seconds (tools/fuzz.sh).
# Usage: tools/test.sh            (from anywhere; installs missing packages as root)
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install-deps.sh
jobs=$(nproc)

cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$jobs"
(cd build && ctest -j "$jobs" --output-on-failure)

if [ "${GNOMON_SKIP_SANITIZERS:-0}" != 1 ]; then
  cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DGNOMON_SANITIZE=ON \
        -DGNOMON_BUILD_BENCH=OFF >/dev/null
  cmake --build build-asan -j "$jobs"
  # Fewer random kills and every tenth injected fault only (they are there
  # to find memory errors; the first pass ran them all), and not the package tests or the
  # boot tests (no code of ours runs there that the first pass and DiskTest do not run).
  (cd build-asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
     GNOMON_PRUNE_KILL_RUNS=10 GNOMON_KILL_RUNS=4 GNOMON_FAULT_STRIDE=10 \
     ctest -j "$jobs" --output-on-failure -E '^(PackageTest|SystemdUnitsTest|DiskBootTest\..*)$')
fi

# A bounded fuzzing run of every parser (tools/fuzz.sh runs as long as asked).
if [ "${GNOMON_SKIP_FUZZ:-0}" != 1 ]; then
  bash tools/fuzz.sh "${GNOMON_FUZZ_SECONDS:-5}"
fi
